//! Starting the real `ecsdb serve` binary on an ephemeral port with a temp
//! data directory, and talking to it over HTTP. Shared by the server's
//! integration suites.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value as J, json};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
pub const ADMIN_PW: &str = "admin-password-1";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub agent: ureq::Agent,
    pub metrics_base: Option<String>,
    /// `host:port` of the `[replication] bind` stream listener, if any.
    pub stream_addr: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(dir: tempfile::TempDir, env: &[(&str, &str)], config: Option<&str>) -> Server {
    spawn_logged(dir, env, config, Stdio::null())
}

pub fn spawn_logged(dir: tempfile::TempDir, env: &[(&str, &str)], config: Option<&str>, stderr: Stdio) -> Server {
    let data = dir.path().join("data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecsdb"));
    cmd.args(["serve", "--data-dir", data.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    if let Some(c) = config {
        let p = dir.path().join("config.toml");
        std::fs::write(&p, c).unwrap();
        cmd.args(["--config", p.to_str().unwrap()]);
    }
    cmd.env("ECSDB_ADMIN_PASSWORD", ADMIN_PW).env("ECSDB_JWT_SECRET", SECRET).env("ECSDB_LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    // Start-up lines end with `durability: ...`.
    let (mut base, mut metrics_base, mut stream_addr) = (None, None, None);
    loop {
        let line = lines.next().expect("the server exited before listening").unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            base = Some(addr.trim().to_string());
        }
        if let Some(a) = line.split("metrics on ").nth(1) {
            metrics_base = Some(a.trim().trim_end_matches("/metrics").to_string());
        }
        if let Some(a) = line.split("streams also on ws://").nth(1) {
            stream_addr = a.split('/').next().map(str::to_string);
        }
        if line.starts_with("durability:") {
            break;
        }
    }
    let base = base.expect("no listening line");
    std::thread::spawn(move || for _ in lines {});
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    Server { child, base, dir, agent, metrics_base, stream_addr }
}

pub fn start(env: &[(&str, &str)]) -> Server {
    spawn(tempfile::tempdir().unwrap(), env, None)
}

pub struct Resp {
    pub status: u16,
    pub body: J,
    pub headers: Vec<(String, String)>,
}

impl Server {
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&J>) -> Resp {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let res = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "POST" => self.agent.post(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => unreachable!(),
                };
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.send_json(b.cloned().unwrap_or_else(|| json!({})))
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

    pub fn raw_post(&self, path: &str, token: &str, content_type: &str, body: &str) -> Resp {
        let mut res = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .send(body)
            .unwrap();
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        Resp { status, body: serde_json::from_str(&text).unwrap_or(J::String(text)), headers: Vec::new() }
    }

    pub fn login(&self, user: &str, pw: &str) -> String {
        let r = self.call("POST", "/v1/auth/login", None, Some(&json!({"username": user, "password": pw})));
        assert_eq!(r.status, 200, "login {user}: {}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub fn admin(&self) -> String {
        self.login("admin", ADMIN_PW)
    }

    pub fn user(&self, admin: &str, name: &str, role: &str) -> String {
        let r = self.call(
            "POST",
            "/v1/admin/users",
            Some(admin),
            Some(&json!({"username": name, "password": "password-123", "role": role})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        self.login(name, "password-123")
    }

    pub fn seq(&self, token: &str) -> u64 {
        self.call("GET", "/v1/stats", Some(token), None).body["sequence"].as_u64().unwrap()
    }
}
