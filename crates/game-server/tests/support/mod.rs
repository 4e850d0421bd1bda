//! Starting the real `game-server` binary on ephemeral ports with a temp
//! data directory, and talking to it over HTTP and `WebSockets`.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

pub struct Game {
    pub child: Child,
    pub base: String,
    pub ws_base: Option<String>,
    pub data: PathBuf,
    pub agent: ureq::Agent,
}

impl Drop for Game {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `game-server serve` on `data` with `env` (over test defaults).
pub fn start(data: &Path, env: &[(&str, &str)]) -> Game {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_game-server"));
    cmd.args(["serve", "--data-dir", data.to_str().unwrap(), "--host", "127.0.0.1", "--port", "0"]);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SERVER_WS_PORT", "0")
        .env("LOG_LEVEL", "warn")
        .env("GAME_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("GAME_WORLD_SIZE", "400")
        .env("RATE_LIMIT_MAX", "10000")
        .current_dir(data.parent().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let line = lines.next().expect("the game server exited before listening").unwrap();
    let base =
        line.split("listening on ").nth(1).and_then(|s| s.split(' ').next()).expect("no listening line").to_string();
    let mut ws_base = None;
    if env.iter().any(|(k, v)| *k == "SERVER_WS_PORT" && *v != "0") {
        let l = lines.next().unwrap().unwrap();
        ws_base = l.split("websocket also on ").nth(1).map(|s| s.trim().trim_end_matches("/ws").to_string());
    }
    std::thread::spawn(move || for _ in lines {});
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    Game { child, base, ws_base, data: data.to_path_buf(), agent }
}

pub struct Resp {
    pub status: u16,
    pub body: J,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Game {
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&J>) -> Resp {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let res = if method == "GET" {
            let mut r = self.agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        } else {
            let mut r = self.agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            match body {
                Some(b) => r.send_json(b),
                None => r.send_empty(),
            }
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let headers =
            res.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(J::String(text));
        Resp { status, body, headers }
    }

    pub fn post(&self, path: &str, body: &J) -> Resp {
        self.call("POST", path, None, Some(body))
    }

    /// Register (if new) and log in; the token.
    pub fn login(&self, user: &str) -> String {
        let body = json!({"username": user, "password": "password-123"});
        let r = self.post("/register", &body);
        assert!(r.status == 201 || r.status == 409, "{}", r.body);
        let r = self.post("/login", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub fn health(&self) -> J {
        self.call("GET", "/health", None, None).body
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http", "ws", 1))
    }

    /// Kill -9.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.clone()
    }
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connect to `url` with `Authorization: Bearer token` (or none).
pub fn ws_connect(url: &str, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, _) = tungstenite::connect(req)?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    Ok(ws)
}

/// The HTTP status of a refused upgrade.
pub fn ws_refused(url: &str, token: Option<&str>) -> u16 {
    match ws_connect(url, token) {
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

/// The next JSON message, or the close frame as `{"close": code, "reason"}`,
/// waiting up to `wait`.
pub fn next(ws: &mut Ws, wait: Duration) -> Option<J> {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(f)) => {
                return Some(
                    json!({"close": f.as_ref().map(|f| u16::from(f.code)), "reason": f.map(|f| f.reason.to_string())}),
                );
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Some(json!({"close": null, "error": e.to_string()})),
        }
    }
    None
}

/// Messages until one satisfies `f` (returned), failing after `wait`.
pub fn until(ws: &mut Ws, wait: Duration, mut f: impl FnMut(&J) -> bool) -> J {
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for a message");
        if let Some(m) = next(ws, left) {
            if f(&m) {
                return m;
            }
            assert!(m.get("close").is_none(), "closed while waiting: {m}");
        }
    }
}

/// Whether a player's vitals (a `you` message or `/me`) show the drain:
/// hunger or thirst below `below`. One of them can stay full while the
/// player stands on berries or in water, never both (scenery is placed
/// apart). Below 99 takes at least two vitals steps (two seconds).
pub fn drained(m: &J, below: f64) -> bool {
    ["hunger", "thirst"].iter().any(|k| m[*k].as_f64().is_some_and(|v| v < below))
}

pub fn send(ws: &mut Ws, m: &J) {
    ws.send(Message::Text(m.to_string().into())).unwrap();
}

/// A client's copy of the world subscription: id -> row.
#[derive(Default, Debug)]
pub struct WorldCache {
    pub rows: std::collections::HashMap<u64, J>,
}

impl WorldCache {
    pub fn apply(&mut self, m: &J) {
        match m["type"].as_str() {
            Some("initial") => {
                self.rows.clear();
                for r in m["rows"].as_array().unwrap() {
                    self.rows.insert(r["id"].as_u64().unwrap(), r.clone());
                }
            }
            Some("delta") => {
                for r in m["entered"].as_array().unwrap() {
                    self.rows.insert(r["id"].as_u64().unwrap(), r.clone());
                }
                for r in m["changed"].as_array().unwrap() {
                    let id = r["id"].as_u64().unwrap();
                    let row = self.rows.get_mut(&id).unwrap_or_else(|| panic!("change for a row never entered: {r}"));
                    for (table, fields) in r.as_object().unwrap() {
                        if table == "id" {
                            continue;
                        }
                        for (f, v) in fields.as_object().unwrap() {
                            row[table][f] = v.clone();
                        }
                    }
                }
                for l in m["left"].as_array().unwrap() {
                    self.rows.remove(&l.as_u64().unwrap());
                }
            }
            _ => {}
        }
    }

    pub fn position(&self, id: u64) -> Option<(f64, f64)> {
        let p = &self.rows.get(&id)?["body"]["position"];
        Some((p[0].as_f64()?, p[1].as_f64()?))
    }
}
