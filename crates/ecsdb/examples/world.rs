//! A small live world on the embedded engine: spawn players, run ticks that
//! move them with in-place column access, query, and export.
//!
//! `cargo run --release --example world`

use std::time::Instant;

use ecsdb::{Database, Query, Value};
use serde_json::json;

fn main() -> ecsdb::Result<()> {
    let db = Database::example()?;
    let schema = db.schema().clone();
    println!(
        "schema {} v{} ({} tables, {} relations)",
        schema.name,
        schema.version,
        schema.tables.len(),
        schema.relations.len()
    );

    let (players, info) = db.write(|t| {
        let mut ids = Vec::new();
        for i in 0..10_000u32 {
            let id = t.create_entity_json(&json!({
                "entities": {"version": 1, "entity_type": 0},
                "player": {"name": format!("player{i}"), "level": i % 50},
                "transform": {"position": [f64::from(i), 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0], "scale": [1.0, 1.0, 1.0]},
                "physics": {"velocity": [1.0, 0.5, 0.0], "mass": 80.0},
                "health": {"hp": 100, "max_hp": 100},
            }))?;
            ids.push(id);
        }
        for pair in ids.windows(2).take(100) {
            t.link("follows", pair[0], pair[1], Some(&json!({"since_tick": 0})))?;
        }
        Ok(ids)
    })?;
    println!("spawned {} players in commit #{} ({} operations)", players.len(), info.seq, info.changes.len());

    let pos = schema.field_ref("transform", "position")?;
    let vel = schema.field_ref("physics", "velocity")?;
    let tables = [pos.table, vel.table];
    let start = Instant::now();
    for _tick in 0..60 {
        let mut txn = db.transaction()?;
        txn.for_each_chunk_mut(&tables, |chunk| {
            let (p, v) = chunk.write_read::<[f32; 3], [f32; 3]>(pos, vel)?;
            for (p, v) in p.iter_mut().zip(v) {
                for k in 0..3 {
                    p[k] += v[k] / 60.0;
                }
            }
            Ok(())
        })?;
        txn.commit()?;
    }
    println!("60 ticks over {} entities in {:.1} ms", players.len(), start.elapsed().as_secs_f64() * 1e3);

    db.write(|t| t.set(players[0], "health", "hp", &Value::U64(7)))?;
    let low: Query = serde_json::from_value(json!({
        "with": ["player"],
        "filters": [{"field": "health.hp", "op": "lt", "value": 50}],
        "select": ["player.name", "transform.position"]
    }))
    .map_err(|e| ecsdb::EngineError::Query(e.to_string()))?;
    let rows = db.query(&low)?;
    println!("low health: {}", db.read().rows_json(&rows));
    let m = db.metrics();
    println!(
        "entities {} | components {} | relations {} | commits {} | seq {} | memory {:.1} MiB",
        m.total_entities,
        m.total_components,
        m.total_relations,
        m.transactions_committed,
        m.sequence,
        m.memory_bytes as f64 / f64::from(1 << 20)
    );
    Ok(())
}
