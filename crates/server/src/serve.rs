//! The accept loop: HTTP/1 connections served by hyper with a deadline for
//! each request's headers (slow or stalled clients are cut off instead of
//! holding a connection forever), a cap on the connections one client IP
//! may hold open, and graceful shutdown (stop accepting, let requests in
//! flight finish, then close).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tower::Service;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Headers of each request must arrive within this.
    pub header_timeout: Duration,
    /// Open connections per client IP.
    pub per_ip: usize,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

/// Open connections per IP; a slot is given back when its guard drops.
#[derive(Debug, Default, Clone)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot(PerIp, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

/// Serve `app` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnLimits, shutdown: impl Future<Output = ()>) {
    // Shutdown: `stop` tells every connection to finish its request in
    // flight and close; each holds a clone of `live` until it is done, so
    // the drain waits for them (upgraded connections — WebSocket streams —
    // are closed by the server's stream handler when the feed ends).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<()>(1);
    let per_ip = PerIp::default();
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small writes (stream deltas, replication frames and acknowledgements)
        // go out at once rather than waiting on the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let Some(slot) = per_ip.take(peer.ip(), limits.per_ip) else {
            tracing::warn!(client = %peer.ip(), max = limits.per_ip, "connection refused: too many open connections from this address");
            drop(stream);
            continue;
        };
        let Ok(svc) = make.call(peer).await;
        let mut conn = Box::pin(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                // WebSocket upgrades (`/v1/stream`) take the connection over.
                .with_upgrades(),
        );
        let mut stop = stop_rx.clone();
        let live = live_tx.clone();
        tokio::spawn(async move {
            let stopping = async move {
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    if stop.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
            drop(live);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(live_tx);
    tokio::select! {
        // Every connection's `live` sender dropped: all have finished.
        _ = live_rx.recv() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!(secs = limits.drain.as_secs(), "requests still running after the drain period; closing");
        }
    }
}
