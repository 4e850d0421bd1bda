//! What a replica's port answers while it bootstraps, before its database
//! opens: clients, load balancers and the other nodes get a clear answer at
//! once instead of a connection that hangs until the download is done.
//! `/health` is unhealthy (503) with a `replication` check saying so,
//! `/v1/replication/status` says `bootstrapping` (so no node takes it for
//! a primary or a more advanced replica), and every other request gets 503
//! `bootstrapping` with `Retry-After`. Every answer closes its connection,
//! so the real server takes over the port cleanly; the server's connection
//! limits (header timeout, connections per address) apply as they do later.

use std::net::TcpListener;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use crate::error::ApiError;

fn router(primary: String) -> axum::Router {
    let p_health = primary.clone();
    let p_status = primary;
    axum::Router::new()
        .route(
            "/health",
            get(move || async move {
                let body = json!({
                    "status": "unhealthy",
                    "version": env!("CARGO_PKG_VERSION"),
                    "checks": [{
                        "name": "replication",
                        "healthy": false,
                        "detail": format!("bootstrapping from {p_health}: the replica serves once its data is in place"),
                    }],
                });
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            }),
        )
        .route(
            "/v1/replication/status",
            get(move || async move {
                Json(json!({"role": "bootstrapping", "epoch": 0, "seq": 0, "primary": p_status}))
            }),
        )
        .fallback(|| async {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bootstrapping",
                "this replica is bootstrapping from its primary: try again shortly (or ask the primary)",
            );
            e.retry_after = Some(2);
            e
        })
        .layer(axum::middleware::map_response(|mut r: Response| async move {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }))
}

/// Answers on `listener` (a clone of the server's) until dropped.
#[derive(Debug)]
pub struct Answering {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Handle,
}

/// Start answering on a clone of `listener` on `rt`, within `limits`
/// (their drain is cut to two seconds: the answers are immediate).
pub fn answer(
    rt: &tokio::runtime::Runtime,
    listener: &TcpListener,
    primary: &str,
    mut limits: crate::serve::ConnLimits,
) -> Result<Answering, String> {
    let l = listener.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(primary.to_string());
    limits.drain = limits.drain.min(Duration::from_secs(2));
    let task = rt.spawn(async move {
        let Ok(l) = tokio::net::TcpListener::from_std(l) else { return };
        crate::serve::serve(l, app, limits, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(Answering { stop: Some(tx), task: Some(task), rt: rt.handle().clone() })
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            // Connections close after each answer; a client that keeps one
            // open without asking anything is not waited for long.
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), t).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::many_single_char_names)]
    fn every_request_gets_a_clear_answer_and_the_port_is_handed_back() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let limits = crate::serve::ConnLimits {
            header_timeout: Duration::from_millis(300),
            per_ip: 4,
            drain: Duration::from_secs(10),
        };
        let a = answer(&rt, &l, "http://primary:8080", limits).unwrap();
        // Half-sent requests are cut off at the header timeout, and one
        // address gets at most `per_ip` connections.
        let idle: Vec<std::net::TcpStream> = (0..6)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                std::io::Write::write_all(&mut c, b"GET /health HTTP/1.1\r\n").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        for mut c in idle {
            let mut buf = Vec::new();
            // Closed by the server: at the header timeout, or at once (over the limit).
            let r = std::io::Read::read_to_end(&mut c, &mut buf);
            assert!(
                r.as_ref().map_or_else(|e| e.kind() == std::io::ErrorKind::ConnectionReset, |_| true),
                "still open after the header timeout: {r:?}"
            );
        }
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut h = agent.get(&format!("{url}/health")).call().unwrap();
        assert_eq!(h.status(), 503);
        let body: serde_json::Value = h.body_mut().read_json().unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert!(body["checks"][0]["detail"].as_str().unwrap().contains("bootstrapping from http://primary:8080"));
        let mut s = agent.get(&format!("{url}/v1/replication/status")).call().unwrap();
        assert_eq!(s.status(), 200);
        assert_eq!(s.body_mut().read_json::<serde_json::Value>().unwrap()["role"], "bootstrapping");
        let mut w = agent.post(&format!("{url}/v1/entities")).send_json(json!({})).unwrap();
        assert_eq!(w.status(), 503);
        assert_eq!(w.headers().get("retry-after").unwrap(), "2");
        assert_eq!(w.body_mut().read_json::<serde_json::Value>().unwrap()["error"]["code"], "bootstrapping");
        drop(a);
        // The listener is free for the real server again: nothing answers
        // on it now (the connection waits in the backlog).
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 1];
        let mut c2 = &c;
        std::io::Write::write_all(&mut c2, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert!(std::io::Read::read(&mut c2, &mut buf).is_err(), "nothing answers once dropped");
    }
}
