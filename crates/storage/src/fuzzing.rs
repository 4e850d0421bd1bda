//! Entry points for fuzzing the decoders (`fuzz/`), also run over the
//! committed corpus by the normal test suite. Each must never panic, whatever
//! the bytes; errors are fine.

use std::path::Path;
use std::sync::Arc;

pub use ecsdb_core::Schema;
use ecsdb_core::{ChangeSet, World};

/// A small schema with every kind of field, for decoding fuzzed states.
pub const FUZZ_SCHEMA: &str = r#"
[enums.kind]
variants = ["a", "b", "c"]
[tables.root]
[[tables.root.fields]]
name = "id"
type = "u64"
primary_key = true
[[tables.root.fields]]
name = "flag"
type = "bool"
[tables.body]
parent_table = "root"
[[tables.body.fields]]
name = "entity_id"
type = "u64"
foreign_key = "root.id"
[[tables.body.fields]]
name = "pos"
type = "[f32; 3]"
[[tables.body.fields]]
name = "name"
type = "[u8; 8]"
[[tables.body.fields]]
name = "kind"
type = "kind"
[[tables.body.fields]]
name = "note"
type = "string"
[[tables.body.fields]]
name = "owner"
type = "u64"
foreign_key = "root.id"
[relations.near]
[[relations.near.fields]]
name = "d"
type = "f32"
"#;

/// The fuzz schema, parsed.
pub fn fuzz_schema() -> Arc<Schema> {
    Arc::new(Schema::from_toml_str(FUZZ_SCHEMA).unwrap_or_else(|e| panic!("built-in fuzz schema: {e}")))
}

/// A world with a small memory ceiling, as a fuzzed input must not be able
/// to make the engine allocate without bound.
fn bounded_world(schema: &Arc<Schema>) -> World {
    let mut w = World::new(schema.clone());
    w.set_memory_limit(Some(16 << 20));
    w
}

/// Decode `data` as a change set and apply it to an empty world.
pub fn changeset(data: &[u8], schema: &Arc<Schema>) {
    if let Ok(cs) = ChangeSet::decode(data) {
        let mut w = bounded_world(schema);
        // Applied or refused, the world stays structurally sound (a failed
        // apply may leave part of the change set applied: replay treats
        // that as corruption and stops, but memory must stay consistent).
        let _ = w.apply(1, &cs);
        let broken = w.check_structure();
        assert!(broken.is_empty(), "{broken:?}");
    }
}

/// Scan `data` as a log segment and replay what decodes.
pub fn segment(data: &[u8], schema: &Arc<Schema>) {
    if let Ok(scan) = crate::wal::format::scan(data) {
        let mut w = bounded_world(schema);
        w.set_seq(scan.header.first_seq.saturating_sub(1));
        for r in &scan.records {
            let Some(payload) = data.get(r.payload.0..r.payload.1) else { break };
            let Ok(cs) = ChangeSet::decode(payload) else { break };
            if w.apply(r.seq, &cs).is_err() {
                break;
            }
        }
        let broken = w.check_structure();
        assert!(broken.is_empty(), "{broken:?}");
    }
}

/// Verify and load `data` as a snapshot.
pub fn snapshot(data: &[u8], schema: &Arc<Schema>) {
    let p = Path::new("fuzz.snap");
    let _ = crate::snapshot::verify(p, data);
    if let Ok(w) = crate::snapshot::load(p, data, schema) {
        assert!(w.check_integrity().is_empty(), "a loaded snapshot must be consistent");
    }
}

/// All three, dispatched on the first byte (one fuzz target covers them all).
pub fn all(data: &[u8], schema: &Arc<Schema>) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => changeset(rest, schema),
        1 => segment(rest, schema),
        _ => snapshot(rest, schema),
    }
}
