//! `ecsdb-rebuild-from-wal`: the same as `ecsdb rebuild-from-wal`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("rebuild-from-wal")
}
