//! A fault-injecting TCP proxy, for tests of anything that talks over the
//! network (replication streams, remote clients): traffic between a client
//! and an upstream server passes through it, and a test switches the fault
//! in force at any moment — it applies to open connections and new ones.
//!
//! | fault | what the two ends see |
//! |---|---|
//! | [`Fault::Heal`] | a transparent pipe |
//! | [`Fault::Delay`] | every chunk held back this long, in both directions |
//! | [`Fault::Drop`] | connections closed (FIN); new ones closed at once |
//! | [`Fault::Reset`] | connections reset (RST); new ones reset at once |
//! | [`Fault::Blackhole`] | bytes accepted and thrown away both ways, nothing answers (a dead peer or a silent network) |
//! | [`Fault::OneWay`] | bytes flow one way only (a one-way partition): the other direction is thrown away |
//! | [`Fault::Corrupt`] | one byte flipped, once, in the next large enough chunk going one way (a damaged packet the transport did not catch) |
//!
//! The proxy runs on a runtime of its own, so blocking tests can use it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// The fault in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Heal,
    Delay(Duration),
    Drop,
    Reset,
    Blackhole,
    /// Only this direction flows.
    OneWay(Direction),
    /// Bytes flow, but the last byte of the next chunk of at least this
    /// many bytes going this way is flipped (once; then the link is clean).
    Corrupt(Direction, usize),
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `heal`, `delay <ms>`, `drop`, `reset`, `blackhole`, `one-way up|down`.
    fn from_str(s: &str) -> Result<Fault, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["heal"] => Ok(Fault::Heal),
            ["delay", ms] => ms
                .parse::<u64>()
                .map(|ms| Fault::Delay(Duration::from_millis(ms)))
                .map_err(|_| format!("`{ms}` is not a number of milliseconds")),
            ["drop"] => Ok(Fault::Drop),
            ["reset"] => Ok(Fault::Reset),
            ["blackhole"] => Ok(Fault::Blackhole),
            ["one-way", "up"] => Ok(Fault::OneWay(Direction::Up)),
            ["one-way", "down"] => Ok(Fault::OneWay(Direction::Down)),
            ["corrupt", dir, min] => {
                let d = match *dir {
                    "up" => Direction::Up,
                    "down" => Direction::Down,
                    other => return Err(format!("`{other}`: expected up or down")),
                };
                min.parse::<usize>().map(|m| Fault::Corrupt(d, m)).map_err(|_| format!("`{min}` is not a byte count"))
            }
            _ => Err(format!(
                "`{s}`: expected heal, delay <ms>, drop, reset, blackhole, one-way up, one-way down, corrupt up|down <min bytes>"
            )),
        }
    }
}

/// Bytes and connections seen.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Bytes thrown away by a blackhole or a one-way partition.
    pub bytes_discarded: AtomicU64,
    /// Chunks corrupted.
    pub corrupted: AtomicU64,
    corrupt_armed: std::sync::atomic::AtomicBool,
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    pub counters: Arc<Counters>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Proxy {
    /// Listen on `listen` (e.g. `127.0.0.1:0`) and forward to `upstream`.
    pub fn start(listen: &str, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = rt.block_on(TcpListener::bind(listen))?;
        let addr = listener.local_addr()?;
        let (fault, rx) = watch::channel(Fault::Heal);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, upstream, rx.clone(), c.clone()));
            }
        });
        Ok(Proxy { addr, fault, counters, rt: Some(rt) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Put a fault in force (for open and new connections).
    pub fn set(&self, f: Fault) {
        if matches!(f, Fault::Corrupt(..)) {
            self.counters.corrupt_armed.store(true, Ordering::Release);
        }
        self.fault.send_replace(f);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

/// Close a stream with RST rather than FIN.
fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>, c: Arc<Counters>) {
    match *fault.borrow_and_update() {
        Fault::Drop => return,
        Fault::Reset => {
            reset(&client);
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, Direction::Up, fault.clone(), c.clone()));
    let down = tokio::spawn(pump(sr, cw, Direction::Down, fault.clone(), c.clone()));
    // A pump ends its half; either ending, or a Drop/Reset, ends both.
    let _ = tokio::join!(up, down);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Direction,
    mut fault: watch::Receiver<Fault>,
    c: Arc<Counters>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() {
                    break;
                }
                match *fault.borrow_and_update() {
                    Fault::Drop => break,
                    Fault::Reset => {
                        reset(to.as_ref());
                        return;
                    }
                    _ => continue,
                }
            }
        };
        let f = *fault.borrow();
        let pass = match f {
            Fault::Heal => true,
            Fault::Corrupt(d, min) => {
                if d == dir && n >= min.max(1) && c.corrupt_armed.swap(false, Ordering::AcqRel) {
                    buf[n - 1] ^= 0x5a;
                    c.corrupted.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                true
            }
            Fault::Blackhole => false,
            Fault::OneWay(only) => only == dir,
            Fault::Drop => break,
            Fault::Reset => {
                reset(to.as_ref());
                return;
            }
        };
        if !pass {
            c.bytes_discarded.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        match dir {
            Direction::Up => c.bytes_up.fetch_add(n as u64, Ordering::Relaxed),
            Direction::Down => c.bytes_down.fetch_add(n as u64, Ordering::Relaxed),
        };
    }
    let _ = to.shutdown().await;
}
