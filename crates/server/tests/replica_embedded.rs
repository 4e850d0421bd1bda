//! An embedded replica (`ecsdb_server::start_with`) follows its primary and
//! stops when asked, even with nobody listening on its stop signal (no
//! stream clients): its follower thread must see the stop.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value as J, json};

fn config(dir: &std::path::Path) -> ecsdb_server::ServerConfig {
    let mut c = ecsdb_server::ServerConfig::default();
    c.server.bind = "127.0.0.1:0".into();
    c.db.database.data_dir = dir.to_path_buf();
    c.logging.level = "error".into();
    c
}

#[test]
fn an_embedded_replica_follows_and_stops() {
    let work = tempfile::tempdir().unwrap();
    let primary = ecsdb_server::start(config(&work.path().join("p")), "primary-password-1").unwrap();
    let base = format!("http://{}", primary.addr);
    let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let login: J = a
        .post(&format!("{base}/v1/auth/login"))
        .send_json(json!({"username": "admin", "password": "primary-password-1"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let key: J = a
        .post(&format!("{base}/v1/admin/api-keys"))
        .header("authorization", &format!("Bearer {token}"))
        .send_json(json!({"name": "r", "permissions": ["replicate"]}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let mut rc = config(&work.path().join("r"));
    rc.db.replication.primary = Some(base);
    let replica = ecsdb_server::start_with(&rc, "unused-password-1", Some(key["key"].as_str().unwrap())).unwrap();
    let (_, info) = primary.db.write(|t| t.create_entity_json(&json!({"entities": {"entity_type": 1}}))).unwrap();
    while replica.db.version() < info.seq {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = replica.stop();
        let _ = done_tx.send(r);
    });
    // A bound on a hang, not a timing: stopping takes milliseconds.
    let stopped = done_rx.recv_timeout(Duration::from_mins(1)).expect("the embedded replica did not stop");
    stopped.unwrap();
    primary.stop().unwrap();
}
