//! `ecsdb-dump-schema FILE`: the same as `ecsdb dump-schema FILE`, under the
//! tool name of the deployment guide.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    // Run the sibling `ecsdb` binary so both names share one implementation.
    let exe = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("ecsdb")));
    let Some(exe) = exe.filter(|p| p.exists()) else {
        eprintln!("error: the `ecsdb` binary was not found next to ecsdb-dump-schema");
        return ExitCode::from(1);
    };
    match Command::new(exe).arg("dump-schema").args(std::env::args_os().skip(1)).status() {
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: cannot run ecsdb: {e}");
            ExitCode::from(1)
        }
    }
}
