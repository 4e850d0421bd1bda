//! `ecsdb-server`: the same as `ecsdb serve`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("serve")
}
