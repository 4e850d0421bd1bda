//! Each fault as the two ends see it, on loopback.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use ecsdb_faultproxy::{Direction, Fault, Proxy};

/// An upstream that echoes and reports what it received.
fn echo() -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = tx.send(buf[..n].to_vec());
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn client(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

#[test]
fn heal_and_delay_pass_bytes_through() {
    let (up, rx) = echo();
    let p = Proxy::start("127.0.0.1:0", up).unwrap();
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"ping").unwrap(), b"ping");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"ping");
    p.set(Fault::Delay(Duration::from_millis(20)));
    assert_eq!(roundtrip(&mut c, b"slow").unwrap(), b"slow");
    assert_eq!(p.counters.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn blackhole_swallows_both_ways_and_heal_restores() {
    let (up, rx) = echo();
    let p = Proxy::start("127.0.0.1:0", up).unwrap();
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"a").unwrap(), b"a");
    let _ = rx.recv_timeout(Duration::from_secs(5));
    p.set(Fault::Blackhole);
    let e = roundtrip(&mut c, b"lost").unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e:?}");
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "the upstream got bytes through a blackhole");
    p.set(Fault::Heal);
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"back").unwrap(), b"back");
}

#[test]
fn drop_closes_and_reset_resets_open_and_new_connections() {
    let (up, _rx) = echo();
    let p = Proxy::start("127.0.0.1:0", up).unwrap();
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"x").unwrap(), b"x");
    p.set(Fault::Drop);
    let mut b = [0u8; 8];
    assert_eq!(c.read(&mut b).unwrap(), 0, "an open connection sees end of stream");
    let mut fresh = client(&p);
    assert_eq!(fresh.read(&mut b).unwrap_or(0), 0);

    p.set(Fault::Heal);
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"y").unwrap(), b"y");
    p.set(Fault::Reset);
    let e = c.read(&mut b);
    assert!(matches!(&e, Err(e) if e.kind() == ErrorKind::ConnectionReset) || matches!(e, Ok(0)), "{e:?}");
    let mut fresh = client(&p);
    let r = fresh.read(&mut b);
    assert!(matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset) || matches!(r, Ok(0)), "{r:?}");
}

#[test]
fn one_way_partitions_pass_one_direction_only() {
    let (up, rx) = echo();
    let p = Proxy::start("127.0.0.1:0", up).unwrap();
    let mut c = client(&p);
    assert_eq!(roundtrip(&mut c, b"1").unwrap(), b"1");
    let _ = rx.recv_timeout(Duration::from_secs(5));
    // Up only: the upstream hears, the client hears nothing back.
    p.set(Fault::OneWay(Direction::Up));
    assert!(roundtrip(&mut c, b"hello").is_err());
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"hello");
    // Down only: nothing reaches the upstream.
    p.set(Fault::OneWay(Direction::Down));
    assert!(roundtrip(&mut c, b"again").is_err());
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert!(p.counters.bytes_discarded.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[test]
fn commands_parse_and_bad_ones_are_named() {
    assert_eq!("delay 50".parse::<Fault>().unwrap(), Fault::Delay(Duration::from_millis(50)));
    assert_eq!("one-way down".parse::<Fault>().unwrap(), Fault::OneWay(Direction::Down));
    assert_eq!("heal".parse::<Fault>().unwrap(), Fault::Heal);
    assert!("delay soon".parse::<Fault>().unwrap_err().contains("soon"));
    assert!("explode".parse::<Fault>().is_err());
}

#[test]
fn corrupt_flips_one_byte_once_in_one_direction() {
    let (up, rx) = echo();
    let p = Proxy::start("127.0.0.1:0", up).unwrap();
    let mut c = client(&p);
    p.set(Fault::Corrupt(Direction::Down, 4));
    // Too short to be chosen.
    assert_eq!(roundtrip(&mut c, b"abc").unwrap(), b"abc");
    // Upstream receives it intact; the echo coming down is damaged.
    let got = roundtrip(&mut c, b"hello").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"abc");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"hello");
    assert_eq!(&got[..4], b"hell");
    assert_ne!(got[4], b'o');
    // Once only.
    assert_eq!(roundtrip(&mut c, b"again").unwrap(), b"again");
    assert_eq!(p.counters.corrupted.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!("corrupt down 100".parse::<Fault>().unwrap(), Fault::Corrupt(Direction::Down, 100));
    assert!("corrupt sideways 1".parse::<Fault>().is_err());
}
