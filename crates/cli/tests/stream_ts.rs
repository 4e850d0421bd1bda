//! The TypeScript client (`clients/ts`) against the real binary: its test
//! script (`clients/ts/test/live.test.mjs`) runs under Node and checks its
//! caches against query results after commits, a dropped connection
//! (resumed) and a followed entity's moves, and that refusals are reported.
#![allow(clippy::unwrap_used)]

#[path = "support/live.rs"]
mod live;
#[path = "support/server.rs"]
mod support;

use std::process::Command;

#[test]
fn typescript_client_against_the_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/ts");
    assert!(root.join("dist/index.js").exists(), "clients/ts/dist is built and committed (npm run build)");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is needed to test the TypeScript client (.ci/run installs it)"
    );
    let s = live::server(None);
    let t = s.admin();
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg("--no-warnings")
        .arg("test/live.test.mjs")
        .current_dir(&root)
        .env("ECSDB_URL", &s.base)
        .env("ECSDB_TOKEN", &t)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the TypeScript client's test failed:\n{text}");
    assert!(text.contains("ok: ts client"), "{text}");
}
