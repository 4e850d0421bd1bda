//! The guide's tool names (`ecsdb-verify`, `ecsdb-fsck`, ...) run the
//! matching `ecsdb` subcommand, so both spellings share one implementation.

use std::io::Write as _;
use std::process::{Command, ExitCode};

/// Run `ecsdb <sub> <args...>` from the binary next to this one.
pub fn run(sub: &str) -> ExitCode {
    let exe = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("ecsdb")));
    let Some(exe) = exe.filter(|p| p.exists()) else {
        let _ = writeln!(std::io::stderr(), "error: the `ecsdb` binary was not found next to this tool");
        return ExitCode::from(1);
    };
    match Command::new(exe).arg(sub).args(std::env::args_os().skip(1)).status() {
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot run ecsdb: {e}");
            ExitCode::from(1)
        }
    }
}
