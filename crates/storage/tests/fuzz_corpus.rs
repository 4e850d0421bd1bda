//! The fuzz target's corpus (`fuzz/corpus/decoders`), replayed by the normal
//! test suite: every input must decode or fail cleanly, never panic.
//! `cargo test -p ecsdb-storage --test fuzz_corpus -- --ignored` regenerates
//! the seed inputs from real data.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ecsdb_core::World;
use ecsdb_storage::fuzzing;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decoders")
}

#[test]
fn corpus_inputs_never_panic() {
    let schema = fuzzing::fuzz_schema();
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        fuzzing::all(&data, &schema);
        // Sixteen truncations and sixteen bit flips of every input, too.
        let step = (data.len() / 16).max(1);
        for cut in (0..data.len()).step_by(step) {
            fuzzing::all(&data[..cut], &schema);
        }
        for i in (1..data.len()).step_by(step) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            fuzzing::all(&d, &schema);
        }
        n += 1;
    }
    assert!(n >= 3, "the corpus is missing ({n} inputs)");
}

/// Build a small but complete state: entities, components of every kind,
/// an edge; return the world and its change set.
fn sample() -> (World, ecsdb_core::ChangeSet) {
    let schema = fuzzing::fuzz_schema();
    let mut w = World::new(schema.clone());
    w.begin().unwrap();
    let root = schema.table_id("root").unwrap();
    let body = schema.table_id("body").unwrap();
    let a = w.create_entity().unwrap();
    w.insert_json(a, root, &serde_json::json!({"flag": true})).unwrap();
    w.insert_json(
        a,
        body,
        &serde_json::json!({"pos": [1.0, 2.0, 3.0], "name": "ana", "kind": "b", "note": "hi", "owner": 0}),
    )
    .unwrap();
    let b = w.create_entity().unwrap();
    w.insert_json(b, root, &serde_json::json!({})).unwrap();
    w.link_json(0, a, b, Some(&serde_json::json!({"d": 1.5}))).unwrap();
    // A bulk spawn (SpawnMany) and an in-place write (SetRun).
    let mut batch = ecsdb_core::batch::BatchBuilder::new(&w, &[root, body]).unwrap();
    for i in 0..3u8 {
        use ecsdb_core::Value as V;
        let rv = [V::Bool(i % 2 == 0)];
        let pos = V::Array(vec![V::F32(f32::from(i)), V::F32(0.0), V::F32(0.0)]);
        let bv = [pos, V::Str("b".into()), V::Enum(2), V::Str("note".into()), V::U64(0)];
        batch.push_values(&w, &[(root, &rv[..]), (body, &bv[..])]).unwrap();
    }
    batch.spawn(&mut w).unwrap();
    let pos = schema.field_ref("body", "pos").unwrap();
    w.for_each_chunk_mut(&[body], |chunk| {
        for p in chunk.write::<[f32; 3]>(pos)? {
            p[1] += 1.0;
        }
        Ok(())
    })
    .unwrap();
    let c = w.commit().unwrap();
    (w, c.changes)
}

#[test]
#[ignore = "regenerates the committed seed corpus"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (world, cs) = sample();
    let mut v = vec![0u8];
    v.extend_from_slice(cs.as_bytes());
    std::fs::write(dir.join("seed-changeset"), v).unwrap();
    let mut seg = ecsdb_storage::wal::format::SegmentHeader { first_seq: 1, fingerprint: world.schema().fingerprint }
        .encode()
        .to_vec();
    ecsdb_storage::wal::format::encode_record(1, cs.as_bytes(), &mut seg);
    let mut v = vec![1u8];
    v.extend_from_slice(&seg);
    std::fs::write(dir.join("seed-segment"), v).unwrap();
    let image = ecsdb_storage::snapshot::capture(&world);
    let mut v = vec![2u8];
    v.extend_from_slice(&ecsdb_storage::snapshot::encode(&image, 1).unwrap());
    std::fs::write(dir.join("seed-snapshot"), v).unwrap();
}
