//! `game-server bots`: N scripted players that log in (registering on
//! first use), connect over the WebSocket with `Authorization: Bearer`,
//! wander, and count what the server sends them. Used for load tests and
//! the benchmark; prints a summary (and `--json` one line of figures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(clap::Args, Debug)]
pub struct BotArgs {
    /// How many bots.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// The game server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The WebSocket address (default: the HTTP address's `/ws`).
    #[arg(long)]
    pub ws_url: Option<String>,
    /// Seconds to play after all bots connected (0: until interrupted).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Usernames are `<prefix>-<n>`.
    #[arg(long, default_value = "bot")]
    pub prefix: String,
    /// The bots' password (accounts are registered with it on first use).
    #[arg(long, default_value = "bot-password-123")]
    pub password: String,
    /// Inputs each bot sends per second.
    #[arg(long, default_value_t = 10.0)]
    pub input_rate: f64,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default, Debug)]
struct Totals {
    connected: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    deltas: AtomicU64,
    /// Highest server tick seen in any message.
    max_tick: AtomicU64,
    min_tick: AtomicU64,
}

fn login(base: &str, user: &str, password: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = json!({"username": user, "password": password});
    for attempt in 0..2 {
        let mut r = agent.post(&format!("{base}/login")).send_json(&body).map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        match status {
            200 => return v["token"].as_str().map(str::to_string).ok_or_else(|| "login reply has no token".into()),
            401 if attempt == 0 => {
                let mut r = agent.post(&format!("{base}/register")).send_json(&body).map_err(|e| e.to_string())?;
                let s = r.status().as_u16();
                if s != 201 && s != 409 {
                    let v: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
                    return Err(format!("register {user}: {s} {}", v["message"]));
                }
            }
            _ => return Err(format!("login {user}: {status} {}", v["message"])),
        }
    }
    Err(format!("login {user}: refused after registering"))
}

pub fn run(a: &BotArgs) -> Result<(), String> {
    if a.count == 0 || a.count > 100_000 {
        return Err("--count must be 1..=100000".into());
    }
    if !(a.input_rate > 0.0 && a.input_rate <= 60.0) {
        return Err("--input-rate must be in (0, 60]".into());
    }
    let base = a.url.trim_end_matches('/').to_string();
    let ws_url = a.ws_url.clone().unwrap_or_else(|| format!("{}/ws", base.replacen("http", "ws", 1)));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let totals = Arc::new(Totals { min_tick: AtomicU64::new(u64::MAX), ..Totals::default() });
    let started = Instant::now();
    // Log in on a few threads (the server hashes passwords at its own pace).
    let tokens: Vec<Result<String, String>> = {
        let names: Vec<String> = (0..a.count).map(|i| format!("{}-{i}", a.prefix)).collect();
        let chunks: Vec<Vec<(usize, String)>> =
            (0..4).map(|k| names.iter().cloned().enumerate().filter(|(i, _)| i % 4 == k).collect()).collect();
        let mut out: Vec<Option<Result<String, String>>> = (0..a.count).map(|_| None).collect();
        std::thread::scope(|s| {
            let hs: Vec<_> = chunks
                .into_iter()
                .map(|c| {
                    let base = base.clone();
                    let pw = a.password.clone();
                    s.spawn(move || c.into_iter().map(|(i, n)| (i, login(&base, &n, &pw))).collect::<Vec<_>>())
                })
                .collect();
            for h in hs {
                if let Ok(v) = h.join() {
                    for (i, r) in v {
                        out[i] = Some(r);
                    }
                }
            }
        });
        out.into_iter().map(|r| r.unwrap_or_else(|| Err("login thread failed".into()))).collect()
    };
    let login_secs = started.elapsed().as_secs_f64();
    let mut errors: Vec<String> = tokens.iter().filter_map(|t| t.as_ref().err().cloned()).collect();
    let duration = a.duration;
    let rate = a.input_rate;
    let play_start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, t) in tokens.into_iter().enumerate() {
            let Ok(token) = t else { continue };
            let totals = totals.clone();
            let url = ws_url.clone();
            tasks.push(tokio::spawn(async move { bot(i as u64, &url, &token, duration, rate, &totals).await }));
        }
        let stop = async {
            if duration == 0 {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                tokio::time::sleep(Duration::from_secs(duration + 10)).await;
            }
        };
        tokio::select! {
            () = stop => {},
            () = async { for t in tasks { if let Ok(Err(e)) = t.await { errors.push(e); } } } => {},
        }
    });
    let secs = play_start.elapsed().as_secs_f64().max(1e-3);
    let connected = totals.connected.load(Ordering::Relaxed);
    let bytes = totals.bytes.load(Ordering::Relaxed);
    let ticks = totals.max_tick.load(Ordering::Relaxed).saturating_sub(totals.min_tick.load(Ordering::Relaxed)).max(1);
    let per_bot_per_tick = if connected > 0 { bytes as f64 / connected as f64 / ticks as f64 } else { 0.0 };
    // Bots that never connected (login or upgrade refused), and bots that
    // connected but were dropped before the end.
    let not_connected = (a.count as u64).saturating_sub(connected);
    let dropped = (errors.len() as u64).saturating_sub(not_connected);
    let summary = json!({
        "bots": a.count,
        "connected": connected,
        "failed": not_connected,
        "dropped": dropped,
        "login_seconds": login_secs,
        "play_seconds": secs,
        "messages": totals.messages.load(Ordering::Relaxed),
        "world_deltas": totals.deltas.load(Ordering::Relaxed),
        "bytes": bytes,
        "bytes_per_bot_per_tick": per_bot_per_tick,
        "server_ticks_seen": ticks,
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "{} bots: {connected} connected, {not_connected} could not connect, {dropped} dropped; {:.0} B per bot per tick over {ticks} ticks ({:.1} s)",
            a.count, per_bot_per_tick, secs
        );
        for e in errors.iter().take(5) {
            println!("  error: {e}");
        }
    }
    if connected == 0 {
        return Err(errors.first().cloned().unwrap_or_else(|| "no bot connected".into()));
    }
    Ok(())
}

#[allow(clippy::many_single_char_names)]
async fn bot(i: u64, url: &str, token: &str, duration: u64, rate: f64, t: &Totals) -> Result<(), String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}").parse().map_err(|_| "token is not a header value".to_string())?;
    req.headers_mut().insert("authorization", auth);
    let (ws, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(x) => x,
        Err(e) => {
            return Err(format!("bot {i}: connect: {e}"));
        }
    };
    t.connected.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let mut rng = crate::model::Rng::new(i.wrapping_mul(0x9E37_79B9) ^ 0x5eed);
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let end = (duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(duration));
    let mut dir = (0.0f32, 0.0f32);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {
                if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ok(());
                }
                n += 1;
                if n % (rate as u64 * 2).max(1) == 1 {
                    let a = rng.unit() * std::f32::consts::TAU;
                    dir = if rng.unit() < 0.15 { (0.0, 0.0) } else { (a.cos(), a.sin()) };
                }
                let m = json!({"type": "input", "x": dir.0, "y": dir.1}).to_string();
                if tx.send(Message::Text(m.into())).await.is_err() {
                    return Err(format!("bot {i}: connection lost"));
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Text(s))) => {
                    t.messages.fetch_add(1, Ordering::Relaxed);
                    t.bytes.fetch_add(s.len() as u64, Ordering::Relaxed);
                    if s.starts_with(r#"{"type":"delta""#) {
                        t.deltas.fetch_add(1, Ordering::Relaxed);
                    } else if (s.contains(r#""type":"you""#) || s.contains(r#""type":"welcome""#))
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
                        && let Some(tick) = v["tick"].as_u64()
                    {
                        t.max_tick.fetch_max(tick, Ordering::Relaxed);
                        t.min_tick.fetch_min(tick, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(f))) => return Err(format!("bot {i}: closed by the server: {f:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("bot {i}: {e}")),
                None => return Err(format!("bot {i}: connection ended")),
            }
        }
    }
}
