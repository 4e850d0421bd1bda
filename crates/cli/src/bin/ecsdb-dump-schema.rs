//! `ecsdb-dump-schema`: the same as `ecsdb dump-schema`, under the deployment guide's name.

#[path = "../alias.rs"]
mod alias;

fn main() -> std::process::ExitCode {
    alias::run("dump-schema")
}
