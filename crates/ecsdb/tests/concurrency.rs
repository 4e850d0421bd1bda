//! Single writer, concurrent readers: readers always see a consistent
//! committed state while writers commit.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use ecsdb::{Database, EntityId, Value};

const SCHEMA: &str = r#"
[tables.account]
[[tables.account.fields]]
name = "balance"
type = "i64"
"#;

#[test]
fn readers_see_consistent_totals_while_writers_transfer() {
    let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
    let accounts: Vec<EntityId> = db
        .write(|t| {
            (0..50)
                .map(|_| {
                    let e = t.create_entity()?;
                    t.insert(e, "account", &[Value::I64(1000)])?;
                    Ok(e)
                })
                .collect()
        })
        .unwrap()
        .0;
    let bal = db.schema().field_ref("account", "balance").unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for w in 0..2u64 {
            let (db, accounts) = (&db, &accounts);
            s.spawn(move || {
                let mut rng = w * 7919 + 1;
                for _ in 0..400 {
                    rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let from = accounts[(rng >> 33) as usize % accounts.len()];
                    let to = accounts[(rng >> 13) as usize % accounts.len()];
                    let amount = (rng % 50) as i64;
                    let mut txn = db.transaction().unwrap();
                    let Value::I64(from_balance) = txn.field_value(from, bal.table, 0).unwrap() else { unreachable!() };
                    txn.set_ref(from, bal, &Value::I64(from_balance - amount)).unwrap();
                    let Value::I64(to_balance) = txn.field_value(to, bal.table, 0).unwrap() else { unreachable!() };
                    txn.set_ref(to, bal, &Value::I64(to_balance + amount)).unwrap();
                    if rng % 5 == 0 {
                        txn.rollback();
                    } else {
                        txn.commit().unwrap();
                    }
                }
            });
        }
        for _ in 0..2 {
            let (db, accounts, stop) = (&db, &accounts, &stop);
            s.spawn(move || {
                let mut last_seq = 0;
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads < 10 {
                    let view = db.read();
                    let total: i64 = accounts
                        .iter()
                        .map(|&e| match view.field_value(e, bal.table, 0).unwrap() {
                            Value::I64(v) => v,
                            _ => 0,
                        })
                        .sum();
                    assert_eq!(total, 50_000, "a reader saw a half-applied transfer");
                    assert!(view.seq() >= last_seq, "sequence went backwards");
                    last_seq = view.seq();
                    reads += 1;
                }
            });
        }
        thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
    });
    let m = db.metrics();
    assert_eq!(m.transactions_committed + m.transactions_rolled_back, 801);
    assert_eq!(m.transactions_active, 0);
    assert!(m.transactions_rolled_back > 0);
}
