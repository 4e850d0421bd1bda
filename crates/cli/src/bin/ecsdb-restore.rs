//! `ecsdb-restore`: the same as `ecsdb restore`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("restore")
}
