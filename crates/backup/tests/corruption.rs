//! The corruption table: each kind of damage to a stored backup is found
//! by `verify` with the file named, and restore refuses the backup.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

mod support;

use std::path::Path;
use std::sync::Arc;

use ecsdb_backup::manager::quiet;
use ecsdb_backup::{BackupSettings, Kind, Manager, Manifest, Point, Request, StorageSettings, Target};
use support::{commit_n, open_db};

struct Case {
    name: &'static str,
    /// Damage the target directory; returns the text verify must report.
    damage: fn(root: &Path, full: &Manifest, inc: &Manifest, other_inc: &Manifest, other_root: &Path) -> String,
}

fn reseal(root: &Path, id: &str, edit: impl FnOnce(&mut Manifest)) {
    let p = root.join(format!("backups/{id}/manifest.json"));
    let mut m: Manifest = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&p, m.seal().unwrap()).unwrap();
}

fn chunk_file(m: &Manifest) -> String {
    m.files.iter().find(|f| f.name.starts_with("log/")).unwrap().name.clone()
}

const CASES: &[Case] = &[
    Case {
        name: "missing snapshot",
        damage: |root, full, _, _, _| {
            std::fs::remove_file(root.join(format!("backups/{}/snapshot.snap", full.id))).unwrap();
            format!("backups/{}/snapshot.snap is missing", full.id)
        },
    },
    Case {
        name: "truncated log chunk",
        damage: |root, _, inc, _, _| {
            let p = root.join(format!("backups/{}/{}", inc.id, chunk_file(inc)));
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            format!("backups/{}/{}: ", inc.id, chunk_file(inc))
        },
    },
    Case {
        name: "flipped byte in the snapshot",
        damage: |root, full, _, _, _| {
            let p = root.join(format!("backups/{}/snapshot.snap", full.id));
            let mut b = std::fs::read(&p).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x01;
            std::fs::write(&p, b).unwrap();
            format!("backups/{}/snapshot.snap: SHA-256 mismatch", full.id)
        },
    },
    Case {
        name: "wrong manifest checksum",
        damage: |root, _, inc, _, _| {
            let p = root.join(format!("backups/{}/manifest.json", inc.id));
            let t = std::fs::read_to_string(&p).unwrap();
            let t = t.replacen("\"entity_count\": ", "\"entity_count\": 9", 1);
            std::fs::write(&p, t).unwrap();
            format!("backups/{}/manifest.json: manifest checksum mismatch", inc.id)
        },
    },
    Case {
        name: "manifest naming a missing segment",
        damage: |root, _, inc, _, _| {
            let name = "log/00000000000000000999-00000000000000001000.chunk".to_string();
            reseal(root, &inc.id, |m| {
                m.files.push(ecsdb_backup::manifest::FileEntry { name: name.clone(), bytes: 10, sha256: "00".into() });
            });
            format!("backups/{}/{name} is missing", inc.id)
        },
    },
    Case {
        name: "a segment from another database",
        damage: |root, _, inc, other, other_root| {
            // The other database's chunk for the same commits, with the
            // manifest updated to match its bytes: only its identity tells.
            let theirs = std::fs::read(other_root.join(format!("backups/{}/{}", other.id, chunk_file(other)))).unwrap();
            let name = chunk_file(inc);
            assert_eq!(name, chunk_file(other), "both incrementals cover the same commits");
            std::fs::write(root.join(format!("backups/{}/{name}", inc.id)), &theirs).unwrap();
            reseal(root, &inc.id, |m| {
                let f = m.files.iter_mut().find(|f| f.name == name).unwrap();
                f.bytes = theirs.len() as u64;
                f.sha256 = ecsdb_backup::manifest::sha256_hex(&theirs);
            });
            format!("backups/{}/{name}: belongs to database", inc.id)
        },
    },
    Case {
        name: "manifest missing (interrupted backup)",
        damage: |root, _, inc, _, _| {
            std::fs::remove_file(root.join(format!("backups/{}/manifest.json", inc.id))).unwrap();
            format!("backups/{}/manifest.json is missing", inc.id)
        },
    },
];

/// A full backup and an incremental on top (commits 10..=20) of one
/// database in `root`.
fn make(root: &Path, work: &Path) -> (Manifest, Manifest) {
    let target = Arc::new(Target::open(root.to_str().unwrap(), &StorageSettings::default()).unwrap());
    let m = Manager::new(target, BackupSettings { verify_after: false, ..BackupSettings::default() });
    let db = open_db(work);
    commit_n(&db, 10);
    let full = m.create(&db, Kind::Full, &quiet).unwrap();
    commit_n(&db, 10);
    let inc = m.create(&db, Kind::Incremental, &quiet).unwrap();
    db.close().unwrap();
    (full, inc)
}

#[test]
fn every_kind_of_damage_is_named_by_verify_and_refused_by_restore() {
    for case in CASES {
        let t = tempfile::tempdir().unwrap();
        let (root, other_root) = (t.path().join("target"), t.path().join("other"));
        let (full, inc) = make(&root, &t.path().join("db"));
        let (_, other_inc) = make(&other_root, &t.path().join("db2"));
        let target = Arc::new(Target::open(root.to_str().unwrap(), &StorageSettings::default()).unwrap());
        let m = Manager::new(target.clone(), BackupSettings::default());
        // Sound before the damage.
        for r in ecsdb_backup::verify::verify_all(&m, false, &quiet).unwrap() {
            assert!(r.ok, "{}: {r:?}", case.name);
        }
        let want = (case.damage)(&root, &full, &inc, &other_inc, &other_root);
        let reports = ecsdb_backup::verify::verify_all(&m, false, &quiet).unwrap();
        let problems: Vec<&String> = reports.iter().flat_map(|r| &r.problems).collect();
        assert!(
            problems.iter().any(|p| p.contains(&want)),
            "{}: expected a problem containing {want:?}, got {problems:?}",
            case.name
        );
        assert!(
            reports.iter().any(|r| r.id == inc.id && !r.ok),
            "{}: the incremental must fail: {reports:?}",
            case.name
        );
        // Restoring the damaged backup is refused and writes nothing.
        let out = t.path().join("restored");
        let r = Request { backup: Some(inc.id.clone()), point: Point::Latest, data_dir: out.clone(), force: false };
        let e = ecsdb_backup::restore::restore(&target, &r, &quiet);
        assert!(e.is_err(), "{}: restore must refuse", case.name);
        assert!(!out.exists(), "{}: restore wrote {}", case.name, out.display());
    }
}
