//! `ecsdb-fsck`: the same as `ecsdb fsck`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("fsck")
}
