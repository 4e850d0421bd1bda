//! `GET /health`: named checks, each healthy or not, rolled up into
//! healthy (200), degraded (200: serving, needs attention) or unhealthy
//! (503: a load balancer should stop sending traffic).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::Shared;

/// Free disk below this is degraded.
const DISK_LOW_BYTES: u64 = 1 << 30;

/// One check.
#[derive(Debug, Clone, Default)]
pub struct Check {
    pub name: &'static str,
    pub healthy: bool,
    /// Failing makes the server unhealthy (else only degraded).
    pub critical: bool,
    pub detail: String,
}

/// Replication: a replica connected and caught up within `max_lag_ms`; a
/// primary's connected replicas within it and enough of them for
/// `sync_replicas`; a fenced node is degraded (it refuses writes).
fn replication_check(st: &Shared) -> Option<Check> {
    use crate::replication::Role;
    let r = &st.replication;
    let s = r.snapshot_state();
    let max = r.config.max_lag_ms as f64;
    match s.role {
        Role::Fenced => Some(Check {
            name: "replication",
            healthy: false,
            critical: false,
            detail: format!(
                "fenced: a newer primary exists (epoch {}); this node refuses writes",
                s.fenced_by.unwrap_or(s.epoch)
            ),
        }),
        Role::Replica => {
            let f = r.follower.lock().clone();
            let lag_ms = f.lag_ms(crate::replication::now_ms());
            let healthy = f.connected && (lag_ms as f64) <= max;
            Some(Check {
                name: "replication",
                healthy,
                critical: false,
                detail: if f.connected {
                    format!(
                        "replica at commit {} of the primary's {} ({} ms behind; degraded above {} ms)",
                        f.applied_seq, f.primary_seq, lag_ms, r.config.max_lag_ms
                    )
                } else {
                    format!("replica not connected to its primary (at commit {})", f.applied_seq)
                },
            })
        }
        Role::Primary => {
            let reps = r.registry.report(st.db.version());
            let connected: Vec<_> = reps.iter().filter(|x| x.connected).collect();
            if reps.is_empty() && r.config.sync_replicas == 0 {
                return None;
            }
            let mut slow: Vec<_> = connected.iter().filter(|x| x.lag_ms > max).map(|x| x.id.clone()).collect();
            // A replica gone (not released) is degraded too: the log is
            // kept for it and it is not a copy any more.
            slow.extend(
                reps.iter().filter(|x| !x.connected && !x.released).map(|x| format!("{} (disconnected)", x.id)),
            );
            let short = connected.len() < r.config.sync_replicas as usize;
            Some(Check {
                name: "replication",
                healthy: slow.is_empty() && !short,
                critical: false,
                detail: if short {
                    format!(
                        "{} replica(s) connected; replication.sync_replicas requires {}: commits wait and then fail",
                        connected.len(),
                        r.config.sync_replicas
                    )
                } else if !slow.is_empty() {
                    format!("replica(s) lagging more than {} ms or gone: {}", r.config.max_lag_ms, slow.join(", "))
                } else {
                    format!("{} of {} known replica(s) connected, none lagging", connected.len(), reps.len())
                },
            })
        }
    }
}

pub fn checks(st: &Shared) -> Vec<Check> {
    let mut v = Vec::new();
    let dir = st.config.db.database.data_dir.clone();
    // Details are read by unauthenticated clients: no paths, no OS error
    // texts (those go to the server log).
    let failed = st.db.fail_stopped();
    if let Some(why) = &failed {
        tracing::error!(reason = %why, "health: writes are refused after a storage failure");
    }
    v.push(Check {
        name: "fail_stop",
        healthy: failed.is_none(),
        critical: true,
        detail: if failed.is_some() {
            "writes refused after a storage failure (see the server log); restart once the disk is fixed".into()
        } else {
            "writes accepted".into()
        },
    });
    let probe = dir.join(".health-probe");
    let writable = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = &writable {
        tracing::error!(dir = %dir.display(), error = %e, "health: the data directory is not writable");
    }
    v.push(Check {
        name: "storage_writable",
        healthy: writable.is_ok(),
        critical: true,
        detail: match &writable {
            Ok(()) => "the data directory is writable".into(),
            Err(e) => format!("the data directory is not writable ({:?}; see the server log)", e.kind()),
        },
    });
    match fs4::available_space(&dir) {
        Ok(free) => v.push(Check {
            name: "disk_free",
            healthy: free >= DISK_LOW_BYTES,
            critical: false,
            detail: format!("{} MiB free", free >> 20),
        }),
        Err(e) => v.push(Check {
            name: "disk_free",
            healthy: false,
            critical: false,
            detail: format!("free space unknown ({:?})", e.kind()),
        }),
    }
    if let Some(s) = st.db.storage_stats() {
        let max = st.config.db.persistence.max_wal_size_mb.saturating_mul(1 << 20);
        v.push(Check {
            name: "wal_size",
            // Checkpoints start at the maximum; twice it means they fall behind.
            healthy: s.wal_size_bytes <= max.saturating_mul(2),
            critical: false,
            detail: format!("{} of {} bytes", s.wal_size_bytes, max),
        });
    }
    if let Some(e) = st.backups.as_ref().and_then(|b| b.archive_start_error()) {
        tracing::warn!(error = %e, "health: log archiving could not start on this node");
        v.push(Check {
            name: "archive",
            healthy: false,
            critical: false,
            detail: "archiving could not start on this node (see the server log)".into(),
        });
    }
    if let Some(a) = st.backups.as_ref().and_then(|b| b.archive_status()) {
        // Errors name the target and object: fine for the server log, not
        // for unauthenticated readers.
        if let Some(e) = &a.last_error {
            tracing::warn!(error = %e, "health: log archiving is failing");
        }
        let behind = a.lag_seconds > a.rpo_seconds;
        v.push(Check {
            name: "archive",
            healthy: !behind && a.last_error.is_none(),
            critical: false,
            detail: if a.last_error.is_some() {
                format!(
                    "archiving is failing ({} commit(s) not on the target, oldest {:.1} s; see the server log)",
                    a.lag_commits, a.lag_seconds
                )
            } else if behind {
                format!(
                    "archiving is behind its {:.1} s recovery point objective: {} commit(s), oldest {:.1} s",
                    a.rpo_seconds, a.lag_commits, a.lag_seconds
                )
            } else {
                format!(
                    "{} commit(s) not yet archived, oldest {:.1} s (objective {:.1} s)",
                    a.lag_commits, a.lag_seconds, a.rpo_seconds
                )
            },
        });
    }
    if let Some(c) = replication_check(st) {
        v.push(c);
    }
    let m = st.db.metrics();
    if let Some(limit) = m.memory_limit_bytes {
        v.push(Check {
            name: "memory",
            healthy: m.memory_bytes.saturating_mul(10) <= limit.saturating_mul(9),
            critical: false,
            detail: format!("{} of {} bytes (degraded above 90%)", m.memory_bytes, limit),
        });
    }
    v
}

pub fn response(st: &Shared, checks: &[Check]) -> Response {
    let unhealthy = checks.iter().any(|c| !c.healthy && c.critical);
    let degraded = checks.iter().any(|c| !c.healthy);
    let status = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs_f64(),
        "stream_clients": st.stream_clients.load(std::sync::atomic::Ordering::Relaxed),
        "checks": checks.iter().map(|c| json!({"name": c.name, "healthy": c.healthy, "detail": c.detail})).collect::<Vec<_>>(),
    });
    let code = if unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}
