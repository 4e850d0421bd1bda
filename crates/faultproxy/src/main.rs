//! `ecsdb-faultproxy --listen ADDR --upstream ADDR`: a fault-injecting TCP
//! proxy. Prints `listening on ADDR`, then reads commands, one per line, on
//! standard input: `heal`, `delay <ms>`, `drop`, `reset`, `blackhole`,
//! `one-way up` (client to upstream only), `one-way down`.

use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let (Some(listen), Some(upstream)) = (get("--listen"), get("--upstream")) else {
        eprintln!("usage: ecsdb-faultproxy --listen ADDR --upstream ADDR");
        return ExitCode::from(2);
    };
    let upstream = match upstream.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --upstream {upstream}: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match ecsdb_faultproxy::Proxy::start(&listen, upstream) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --listen {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", proxy.addr());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match line.parse() {
            Ok(f) => {
                proxy.set(f);
                println!("ok: {f:?}");
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    ExitCode::SUCCESS
}
