//! `ecsdb replication status --url URL`: a node's role, epoch and last
//! commit (public), and with an admin credential its replicas and their lag
//! (a primary) or its primary and its own lag (a replica). `--field NAME`
//! prints one value, for scripts.

use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Role, epoch and position of a node; its replicas' lag with --api-key.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The node (`http://host:port`).
    #[arg(long)]
    pub url: String,
    /// An admin API key or token (default: `ECSDB_API_KEY`, if set) for the
    /// full report.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Print one top-level field only (`role`, `epoch`, `seq`, `primary`).
    #[arg(long)]
    pub field: Option<String>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Action) -> ExitCode {
    match a {
        Action::Status(s) => status(s),
    }
}

fn status(a: &StatusArgs) -> ExitCode {
    let url = a.url.trim_end_matches('/');
    if !ecsdb::config::is_base_url(url) {
        err!("error: --url `{url}` is not a URL like http://host:port");
        return ExitCode::from(2);
    }
    let key = a.api_key.clone().or_else(|| std::env::var("ECSDB_API_KEY").ok()).filter(|k| !k.is_empty());
    let v = match ecsdb_server::replication::replica::status_report(url, key.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            err!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(f) = &a.field {
        match &v[f.as_str()] {
            serde_json::Value::Null => {
                err!("error: the answer has no field `{f}`");
                return ExitCode::from(1);
            }
            serde_json::Value::String(s) => out!("{s}"),
            other => out!("{other}"),
        }
        return ExitCode::SUCCESS;
    }
    if a.json {
        out!("{v}");
        return ExitCode::SUCCESS;
    }
    out!("{url}: {} at epoch {}, commit {}", v["role"].as_str().unwrap_or("?"), v["epoch"], v["seq"]);
    if let Some(p) = v["primary"].as_str() {
        out!("primary: {p}");
    }
    if let Some(f) = v.get("follower") {
        out!(
            "following: {} (commit {} of {}, {} ms behind){}",
            if f["connected"] == true { "connected" } else { "NOT connected" },
            f["applied_seq"],
            f["primary_seq"],
            f["lag_ms"],
            f["last_error"].as_str().map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
    }
    if let Some(reps) = v["replicas"].as_array() {
        for r in reps {
            out!(
                "replica {}: {} acked {} lag {} commits / {:.1} ms (p99 {} ms){}",
                r["id"].as_str().unwrap_or("?"),
                if r["connected"] == true { "connected" } else { "disconnected" },
                r["acked_seq"],
                r["lag_ops"],
                r["lag_ms"].as_f64().unwrap_or(0.0),
                r["lag_p99_ms"].as_f64().map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                if r["released"] == true { " (log released: it bootstraps again)" } else { "" }
            );
        }
    }
    ExitCode::SUCCESS
}
