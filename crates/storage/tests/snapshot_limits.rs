//! Snapshots stay within what their reader accepts, whatever the state holds:
//! big rows and many edges are split into bounded blocks, and the result
//! loads back to the same state. The commit log refuses records its reader
//! would refuse.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use ecsdb_core::{Schema, World};
use ecsdb_storage::fs::{SimFs, Vfs};
use ecsdb_storage::{StorageError, Wal, WalOptions, snapshot};

const SCHEMA: &str = r#"
[tables.big]
[[tables.big.fields]]
name = "a"
type = "[u64; 65536]"
[[tables.big.fields]]
name = "note"
type = "string"

[relations.r]
[[relations.r.fields]]
name = "p"
type = "[u64; 65536]"
"#;

#[test]
fn big_rows_and_big_edges_are_split_into_bounded_blocks() {
    let schema = Arc::new(Schema::from_toml_str(SCHEMA).unwrap());
    let mut w = World::new(schema.clone());
    let t = schema.table_id("big").unwrap();
    w.begin().unwrap();
    let mut ids = Vec::new();
    for i in 0..80u64 {
        let id = w.create_entity().unwrap();
        let mut row = vec![0u8; 65_536 * 8];
        row[..8].copy_from_slice(&i.to_le_bytes());
        let note = format!("entity {i}");
        row.extend_from_slice(&(note.len() as u32).to_le_bytes());
        row.extend_from_slice(note.as_bytes());
        w.insert_row(id, t, &row).unwrap();
        ids.push(id);
    }
    for pair in ids.windows(2).take(60) {
        w.link_edge(0, pair[0], pair[1], &vec![7u8; 65_536 * 8]).unwrap();
    }
    w.commit().unwrap();
    let image = snapshot::capture(&w);
    let bytes = snapshot::encode(&image, 1).unwrap();
    let info = snapshot::verify(Path::new("s"), &bytes).unwrap();
    // 40 MiB of rows and 30 MiB of edges: several blocks of each.
    assert!(info.blocks >= 6, "only {} blocks", info.blocks);
    let loaded = snapshot::load(Path::new("s"), &bytes, &schema).unwrap();
    assert_eq!(loaded.canonical_state(), w.canonical_state());

    // Written through a file the same way.
    let fs: Arc<dyn Vfs> = Arc::new(SimFs::new());
    fs.create_dir_all(Path::new("/snaps")).unwrap();
    let (path, len) = snapshot::write(&fs, Path::new("/snaps"), &image, 1).unwrap();
    let on_disk = fs.read(&path).unwrap();
    assert_eq!(on_disk.len() as u64, len);
    assert_eq!(snapshot::load(&path, &on_disk, &schema).unwrap().canonical_state(), w.canonical_state());
}

#[test]
fn the_log_refuses_records_its_reader_would_refuse() {
    let fs: Arc<dyn Vfs> = Arc::new(SimFs::new());
    fs.create_dir_all(Path::new("/wal")).unwrap();
    let wal = Wal::create(
        fs,
        WalOptions { dir: "/wal".into(), fingerprint: 1, segment_bytes: 1 << 20, sync: ecsdb_storage::SyncMode::Sync },
        1,
    )
    .unwrap();
    let err = wal.append(1, &[]).unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { .. }), "{err}");
    // Refusing is not a failure of the log: the same sequence goes on.
    assert!(wal.failure().is_none());
    wal.append(1, &[1, 0, 0, 0, 0]).unwrap();
    wal.sync_to(1).unwrap();
}
