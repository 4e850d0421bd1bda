//! `ecsdb promote --url URL`: make a running replica the primary of a new
//! epoch (`POST /v1/admin/promote`), with an admin credential from
//! `--api-key` or `ECSDB_API_KEY`. The promoted node tells the nodes it
//! knows (the old primary among them, if reachable) to fence themselves.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The replica to promote (`http://host:port`).
    #[arg(long)]
    pub url: String,
    /// An admin API key or token (default: `ECSDB_API_KEY`).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Promote even if another replica holds more commits (they are lost).
    #[arg(long)]
    pub force: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> ExitCode {
    let url = a.url.trim_end_matches('/');
    if !ecsdb::config::is_base_url(url) {
        err!("error: --url `{url}` is not a URL like http://host:port");
        return ExitCode::from(2);
    }
    let Some(key) = a.api_key.clone().or_else(|| std::env::var("ECSDB_API_KEY").ok()).filter(|k| !k.is_empty()) else {
        err!("error: an admin credential is needed: --api-key KEY or ECSDB_API_KEY");
        return ExitCode::from(2);
    };
    match ecsdb_server::replication::replica::promote(url, &key, a.force) {
        Ok(v) => {
            if a.json {
                out!("{v}");
            } else {
                out!(
                    "{url} is now the primary at epoch {} (its history continues after commit {})",
                    v["epoch"],
                    v["after_seq"]
                );
                let told: Vec<String> = v["fenced"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if told.is_empty() {
                    out!(
                        "no other node could be told: a former primary that starts again fences itself when it hears of the new epoch from any node it knows"
                    );
                } else {
                    out!("told: {}", told.join(", "));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("error: {e}");
            ExitCode::from(1)
        }
    }
}
