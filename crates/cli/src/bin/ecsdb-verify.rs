//! `ecsdb-verify`: the same as `ecsdb verify`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("verify")
}
