//! The Rust client (`ecsdb-client`) against the real binary, as a property:
//! under random commits (creates, writes, moves, deletes), random
//! disconnects and resumes, each subscription's local cache equals its
//! query's result at the sequence the client acknowledged — for a filter,
//! for an area around a point, and (within its hysteresis margin) for an
//! area following a moving entity. Change callbacks see every change.
#![allow(clippy::unwrap_used)]
#![allow(clippy::many_single_char_names)]

#[path = "support/live.rs"]
mod live;
#[path = "support/server.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ecsdb_client::{Change, Client, ClientConfig, Event, SubscribeOptions};
use serde_json::{Value as J, json};
use support::Server;

/// xorshift: the cases are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coord(&mut self) -> f32 {
        self.below(1000) as f32 / 10.0
    }
}

fn query_rows(s: &Server, t: &str, q: &J) -> BTreeMap<u64, J> {
    let r = s.call("POST", "/v1/query", Some(t), Some(q));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["rows"].as_array().unwrap().iter().map(|row| (row["id"].as_u64().unwrap(), row.clone())).collect()
}

/// Apply messages until a pong at or after `seq` (re-pinging after a
/// reconnect); the number of resumed deltas seen.
async fn sync(c: &mut Client, seq: u64) -> usize {
    c.ping().await.unwrap();
    let mut resumed = 0;
    loop {
        match c.next().await.unwrap() {
            Event::Other(v) if v["type"] == "pong" && v["seq"].as_u64().unwrap() >= seq => return resumed,
            Event::Delta { resumed: true, .. } => resumed += 1,
            Event::Reconnected => c.ping().await.unwrap(),
            Event::Failed { id, message } => panic!("{id} failed: {message}"),
            _ => {}
        }
    }
}

fn near_query(field_near: &J) -> J {
    json!({"with": ["unit"], "near": field_near})
}

#[tokio::test(flavor = "current_thread")]
async fn caches_equal_query_results_under_random_commits_disconnects_and_resumes() {
    let s = live::server(None);
    let t = s.admin();
    let create = |x: f32, y: f32, hp: u64| -> u64 {
        let r =
            s.call("POST", "/v1/entities", Some(&t), Some(&json!({"components": {"unit": {"pos": [x, y], "hp": hp}}})));
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_u64().unwrap()
    };
    let leader = create(50.0, 50.0, 100);
    for seed in [7u64, 1234, 99_991] {
        let mut rng = Rng(seed);
        let mut live: Vec<u64> = (0..30).map(|_| create(rng.coord(), rng.coord(), rng.below(100))).collect();
        let mut cfg = ClientConfig::new(&s.base, &t);
        cfg.compression = seed % 2 == 0;
        let mut c = Client::connect(cfg).await.unwrap();
        let changes = Arc::new(Mutex::new(0usize));
        let counter = changes.clone();
        c.on_change(move |ch| {
            if !matches!(ch, Change::Reset { .. }) {
                *counter.lock().unwrap() += 1;
            }
        });
        let hp_q = json!({"with": ["unit"], "filters": [{"field": "unit.hp", "op": "ge", "value": 50}]});
        let area = json!({"field": "unit.pos", "point": [50.0, 50.0], "radius": 30.0});
        let follow = json!({"field": "unit.pos", "entity": leader, "radius": 25.0});
        c.subscribe("hp", hp_q.clone()).await.unwrap();
        c.subscribe_with(
            "area",
            json!({"with": ["unit"]}),
            SubscribeOptions { near: Some(area.clone()), hysteresis: Some(0.0), ..SubscribeOptions::default() },
        )
        .await
        .unwrap();
        c.subscribe_with(
            "follow",
            json!({"with": ["unit"]}),
            SubscribeOptions { near: Some(follow.clone()), hysteresis: Some(0.2), ..SubscribeOptions::default() },
        )
        .await
        .unwrap();
        let mut last_seq = 0;
        let mut resumes = 0;
        for step in 0..60 {
            for _ in 0..=rng.below(4) {
                let r = match rng.below(6) {
                    0 => {
                        let (x, y, hp) = (rng.coord(), rng.coord(), rng.below(100));
                        live.push(create(x, y, hp));
                        continue;
                    }
                    1 if live.len() > 5 => {
                        let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                        s.call("DELETE", &format!("/v1/entities/{id}"), Some(&t), None)
                    }
                    2 => {
                        let body = json!({"components": {"unit": {"pos": [rng.coord(), rng.coord()]}}});
                        s.call("PATCH", &format!("/v1/entities/{leader}"), Some(&t), Some(&body))
                    }
                    _ => {
                        let id = live[rng.below(live.len() as u64) as usize];
                        let body = if rng.below(2) == 0 {
                            json!({"components": {"unit": {"hp": rng.below(100)}}})
                        } else {
                            json!({"components": {"unit": {"pos": [rng.coord(), rng.coord()]}}})
                        };
                        s.call("PATCH", &format!("/v1/entities/{id}"), Some(&t), Some(&body))
                    }
                };
                assert_eq!(r.status, 200, "{}", r.body);
            }
            if rng.below(5) == 0 {
                // Dropped without a goodbye: the next read reconnects and
                // resumes each subscription from its sequence.
                c.disconnect();
                // Commits while it is away.
                let id = live[rng.below(live.len() as u64) as usize];
                let body = json!({"components": {"unit": {"hp": rng.below(100)}}});
                assert_eq!(s.call("PATCH", &format!("/v1/entities/{id}"), Some(&t), Some(&body)).status, 200);
            }
            let seq = s.seq(&t);
            resumes += sync(&mut c, seq).await;
            c.ack().await.unwrap();
            assert!(seq >= last_seq);
            last_seq = seq;
            let ctx = format!("seed {seed} step {step} seq {seq}");
            assert_eq!(c.rows("hp").unwrap(), &query_rows(&s, &t, &hp_q), "hp, {ctx}");
            assert_eq!(c.rows("area").unwrap(), &query_rows(&s, &t, &near_query(&area)), "area, {ctx}");
            // Following with hysteresis: everything within the radius, nothing
            // past the margin, and every cached row current.
            let inner = query_rows(&s, &t, &near_query(&follow));
            let mut wide = follow.clone();
            wide["radius"] = json!(25.0 * 1.2 + 0.001);
            let outer = query_rows(&s, &t, &near_query(&wide));
            let cache = c.rows("follow").unwrap();
            for (id, row) in &inner {
                assert_eq!(cache.get(id), Some(row), "follow misses {id}, {ctx}");
            }
            for (id, row) in cache {
                assert_eq!(outer.get(id), Some(row), "follow holds {id} past the margin or stale, {ctx}");
            }
        }
        assert!(*changes.lock().unwrap() > 0, "callbacks were called");
        assert!(resumes > 0, "seed {seed}: subscriptions resumed with deltas, not only fresh rows");
        c.close().await;
    }
}
