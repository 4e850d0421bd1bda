//! Shared by the backup tests: a small durable database and a local S3
//! server (moto) when one is installed.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecsdb::{Database, DatabaseConfig, Value};

pub const SCHEMA: &str = r#"
[database]
version = "1.0.0"
[tables.account]
[[tables.account.fields]]
name = "gold"
type = "u64"
[[tables.account.fields]]
name = "name"
type = "string"
[relations.friend]
"#;

pub fn open_db(dir: &Path) -> Database {
    let mut c = DatabaseConfig::default();
    c.database.data_dir = dir.to_path_buf();
    c.persistence.snapshot_interval_ops = 0;
    c.persistence.checkpoint_on_shutdown = false;
    Database::builder().config(c).schema_toml(SCHEMA).unwrap().enable_persistence().build().unwrap()
}

/// `n` commits, each creating an account and changing an older one.
pub fn commit_n(db: &Database, n: u64) {
    for i in 0..n {
        let mut t = db.transaction().unwrap();
        let e = t.create_entity().unwrap();
        t.insert(e, "account", &[Value::U64(i), Value::Str(format!("player {i}"))]).unwrap();
        t.commit().unwrap();
    }
}

/// A local S3 server on a free port, with `bucket` created.
#[derive(Debug)]
pub struct S3 {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http(port: u16, req: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// Start moto's S3 server, or `None` (with a note) when it is not installed
/// and `ECSDB_REQUIRE_S3` is not set.
pub fn s3(bucket: &str) -> Option<S3> {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("ECSDB_REQUIRE_S3").is_none(),
                "ECSDB_REQUIRE_S3 is set but moto_server does not start: {e}"
            );
            eprintln!("skipping the S3 part: moto_server is not installed (pip install 'moto[server]')");
            return None;
        }
    };
    let s3 = S3 { child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        if let Some(r) = http(port, &put)
            && r.starts_with("HTTP/1.1 200")
        {
            return Some(s3);
        }
        assert!(Instant::now() < deadline, "moto_server did not come up on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Storage settings for the local S3 server (dummy credentials).
pub fn s3_settings(s3: &S3) -> ecsdb_backup::StorageSettings {
    ecsdb_backup::StorageSettings {
        backend: "s3".into(),
        s3: ecsdb_backup::S3Settings {
            endpoint: Some(s3.endpoint.clone()),
            region: Some("us-east-1".into()),
            max_retries: Some(2),
            retry_timeout_secs: Some(10),
            credentials: Some(("test".into(), "test".into())),
            ..ecsdb_backup::S3Settings::default()
        },
    }
}
