//! The browser client in headless Chromium (Playwright): two players log
//! in through the page, each sees the other move, the HUD updates, logout
//! returns to the form. Screenshots go to `target/tmp/game-screenshots/`.
//!
//! Needs Node, `/usr/bin/chromium` and `npm ci` in `tests/browser/`
//! (`.ci/run` installs them and sets `GAME_BROWSER_TESTS=require`, under
//! which a missing piece fails the test instead of skipping it).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn two_browsers_see_each_other_move() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let required = std::env::var("GAME_BROWSER_TESTS").is_ok_and(|v| v == "require");
    let missing = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium"),
        (!dir.join("node_modules/playwright-core").exists()).then_some("tests/browser/node_modules (npm ci)"),
        Command::new("node").arg("--version").output().is_err().then_some("node"),
    ];
    if let Some(m) = missing.iter().flatten().next() {
        assert!(!required, "GAME_BROWSER_TESTS=require but {m} is missing");
        eprintln!("skipped: {m} is missing (set GAME_BROWSER_TESTS=require to fail instead)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = support::start(&tmp.path().join("data"), &[]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("game-screenshots");
    let out = Command::new("node")
        .arg(dir.join("two_players.mjs"))
        .arg(&g.base)
        .arg(&shots)
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""ok":true"#), "{stdout}");
    for f in ["alice.png", "bob.png", "bob_alone.png"] {
        let len = std::fs::metadata(shots.join(f)).unwrap().len();
        assert!(len > 10_000, "{f} is only {len} bytes");
    }
}
