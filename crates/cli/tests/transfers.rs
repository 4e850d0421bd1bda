//! Conditional and atomic writes through the real binary: many clients move
//! amounts between accounts with `check` + `add`; the total is conserved and
//! every acknowledged transfer is in the final balances — nothing lost,
//! nothing applied twice, nothing applied after a refusal.
#![allow(clippy::unwrap_used)]
#![allow(clippy::many_single_char_names)]

#[path = "support/server.rs"]
mod support;

use std::sync::{Arc, Mutex};

use serde_json::{Value as J, json};
use support::start;

const ACCOUNTS: usize = 6;
const CLIENTS: usize = 4;
const TRANSFERS: usize = 60;
const START: u64 = 100;

fn balances(s: &support::Server, t: &str, ids: &[u64]) -> Vec<u64> {
    ids.iter()
        .map(|id| {
            let r = s.call("GET", &format!("/v1/entities/{id}"), Some(t), None);
            r.body["components"]["player"]["experience"].as_u64().unwrap_or_else(|| panic!("{}", r.body))
        })
        .collect()
}

#[test]
fn concurrent_transfers_conserve_the_total_and_lose_nothing() {
    let s = Arc::new(start(&[("ECSDB_RATE_LIMIT_MAX", "100000")]));
    let t = s.admin();
    let ops: Vec<J> = (0..ACCOUNTS)
        .map(|i| json!({"op": "create", "components": {"player": {"name": format!("p{i}"), "experience": START}}}))
        .collect();
    let r = s.call("POST", "/v1/transactions", Some(&t), Some(&json!({"ops": ops})));
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<u64> = r.body["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();

    // (from, to, amount) of every acknowledged transfer.
    let done = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (s, t, ids, done, refused) = (s.clone(), t.clone(), ids.clone(), done.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
                for _ in 0..TRANSFERS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let from = ids[(x % ACCOUNTS as u64) as usize];
                    let to = ids[((x >> 8) % ACCOUNTS as u64) as usize];
                    let amount = 1 + (x >> 16) % 60;
                    if from == to {
                        continue;
                    }
                    let r = s.call(
                        "POST",
                        "/v1/transactions",
                        Some(&t),
                        Some(&json!({"ops": [
                            {"op": "check", "id": from, "filters": [{"field": "player.experience", "op": "ge", "value": amount}]},
                            {"op": "add", "id": from, "field": "player.experience", "value": -i64::try_from(amount).unwrap()},
                            {"op": "add", "id": to, "field": "player.experience", "value": amount},
                        ]})),
                    );
                    match r.status {
                        200 => done.lock().unwrap().push((from, to, amount)),
                        409 => {
                            assert_eq!(r.body["error"]["code"], "check_failed", "{}", r.body);
                            assert!(r.body["error"]["message"].as_str().unwrap().contains("ops[0] (check)"));
                            *refused.lock().unwrap() += 1;
                        }
                        other => panic!("transfer answered {other}: {}", r.body),
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let got = balances(&s, &t, &ids);
    assert_eq!(got.iter().sum::<u64>(), START * ACCOUNTS as u64, "the total moved: {got:?}");
    let mut expect: Vec<i64> = vec![i64::try_from(START).unwrap(); ACCOUNTS];
    for &(from, to, amount) in done.lock().unwrap().iter() {
        let a = i64::try_from(amount).unwrap();
        expect[ids.iter().position(|&i| i == from).unwrap()] -= a;
        expect[ids.iter().position(|&i| i == to).unwrap()] += a;
    }
    let got: Vec<i64> = got.into_iter().map(|g| i64::try_from(g).unwrap()).collect();
    assert_eq!(got, expect, "acknowledged transfers and balances disagree");
    assert!(!done.lock().unwrap().is_empty());
}

#[test]
fn a_refused_check_or_add_changes_nothing_and_says_why() {
    let s = start(&[]);
    let t = s.admin();
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [{"op": "create", "components": {"player": {"name": "a", "experience": 5, "level": 4}}}]})),
    );
    let id = r.body["ids"][0].as_u64().unwrap();
    let before = s.seq(&t);
    let cases = [
        (json!({"op": "add", "id": id, "field": "player.experience", "value": -6}), 409, "out_of_range"),
        (json!({"op": "add", "id": id, "field": "player.level", "value": "4294967292"}), 409, "out_of_range"),
        (json!({"op": "add", "id": id, "field": "player.name", "value": 1}), 400, "numeric"),
        (json!({"op": "add", "id": id, "field": "player.level", "value": 1.5}), 400, "not an integer"),
        (json!({"op": "add", "id": id, "field": "_users.name", "value": 1}), 400, "reserved"),
        // The check sees the transaction's own write (level 4 + 1).
        (json!({"op": "check", "id": id, "filters": [{"field": "player.level", "op": "gt", "value": 5}]}), 409, "is 5"),
        (
            json!({"op": "check", "id": id, "filters": [{"field": "health.hp", "op": "ge", "value": 1}]}),
            409,
            "no `health`",
        ),
        (json!({"op": "check", "id": 123_456, "filters": []}), 404, "does not exist"),
    ];
    for (op, status, needle) in cases {
        // Each refused op comes after a write that must be undone.
        let r = s.call(
            "POST",
            "/v1/transactions",
            Some(&t),
            Some(&json!({"ops": [{"op": "add", "id": id, "field": "player.level", "value": 1}, op]})),
        );
        assert_eq!(r.status, status, "{op}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle) || r.body["error"]["code"] == needle, "{op}: {msg}");
        assert!(msg.contains("ops[1]"), "{msg}");
    }
    // A repeated key is ambiguous (which value did the client mean?): refused.
    for body in [
        format!(r#"{{"ops": [{{"op": "add", "id": {id}, "field": "player.level", "value": 1, "value": 100}}]}}"#),
        format!(
            r#"{{"ops": [{{"op": "check", "id": {id}, "filters": [{{"field": "player.level", "op": "eq", "value": 0}}], "filters": []}}]}}"#
        ),
        format!(r#"{{"ops": [{{"op": "set", "id": {id}, "components": {{"player": {{"level": 5, "level": 6}}}}}}]}}"#),
    ] {
        let r = s.raw_post("/v1/transactions", &t, "application/json", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("duplicate key"), "{}", r.body);
    }
    // Amounts are numbers or exact decimal strings, nothing padded.
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [{"op": "add", "id": id, "field": "player.level", "value": " 5 "}]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(s.seq(&t), before, "a refused transaction changed the database");
    // The same ops succeed when their conditions hold, in one commit.
    let r = s.call(
        "POST",
        "/v1/transactions",
        Some(&t),
        Some(&json!({"ops": [
            {"op": "check", "id": id, "filters": [{"field": "player.level", "op": "eq", "value": 4}, {"field": "player.name", "op": "eq", "value": "a"}]},
            {"op": "add", "id": id, "field": "player.level", "value": 3},
            {"op": "check", "id": id, "filters": [{"field": "player.level", "op": "eq", "value": 7}]},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = s.call("GET", &format!("/v1/entities/{id}"), Some(&t), None);
    assert_eq!(got.body["components"]["player"]["level"], 7);
}
