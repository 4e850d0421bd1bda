//! What a restored state must equal: counts and a SHA-256 over the
//! canonical (order-independent) state, recorded at backup time and
//! compared by a deep verify.

use std::path::Path;

use sha2::{Digest, Sha256};

use ecsdb::World;

use crate::error::{BackupError, Result, io};
use crate::manifest::hex;

/// Counts and checksum of a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entities: u64,
    pub components: u64,
    pub relations: u64,
    pub checksum: String,
}

pub fn summarize(world: &World) -> Summary {
    let mut h = Sha256::new();
    h.update(b"ecsdb-state-v1");
    h.update(world.seq().to_le_bytes());
    let (entities, components, relations) = world.canonical_stream(&mut |b| h.update(b));
    Summary { entities, components, relations, checksum: hex(&h.finalize()) }
}

/// The file holding a data directory's identity.
pub const DATABASE_ID_FILE: &str = "database_id";

/// A data directory's identity (created on first use: 16 random bytes, hex).
pub fn database_id(data_dir: &Path) -> Result<[u8; 16]> {
    let p = data_dir.join(DATABASE_ID_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) => parse_id(s.trim()).ok_or_else(|| BackupError::Corrupt(format!("{}: not a database id", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_id()?;
            write_id(data_dir, &id)?;
            Ok(id)
        }
        Err(e) => Err(io(&p)(e)),
    }
}

pub fn new_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| BackupError::Config(format!("no randomness for a database id: {e}")))?;
    Ok(id)
}

/// Write `<dir>/database_id` durably (0600).
pub fn write_id(data_dir: &Path, id: &[u8; 16]) -> Result<()> {
    use std::io::Write;
    let p = data_dir.join(DATABASE_ID_FILE);
    let tmp = data_dir.join("database_id.tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp).map_err(io(&tmp))?;
    f.write_all(hex(id).as_bytes()).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))
}

pub fn parse_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecsdb::{Database, Value};

    const SCHEMA: &str = "[tables.a]\n[[tables.a.fields]]\nname = \"v\"\ntype = \"u32\"\n[tables.b]\n[[tables.b.fields]]\nname = \"s\"\ntype = \"string\"\n";

    fn world(order: &[usize], extra: u32) -> Summary {
        let db = Database::builder().schema_toml(SCHEMA).unwrap().build().unwrap();
        let mut t = db.transaction().unwrap();
        let ids: Vec<_> = (0..3).map(|_| t.create_entity().unwrap()).collect();
        for &i in order {
            t.insert(ids[i], "a", &[Value::U64(i as u64 + u64::from(extra))]).unwrap();
            t.insert(ids[i], "b", &[Value::Str(format!("e{i}"))]).unwrap();
        }
        t.commit().unwrap();
        summarize(&db.read())
    }

    #[test]
    fn the_checksum_ignores_row_order_and_sees_every_value() {
        let a = world(&[0, 1, 2], 0);
        assert_eq!(a, world(&[2, 0, 1], 0));
        assert_eq!((a.entities, a.components, a.relations), (3, 6, 0));
        assert_ne!(a.checksum, world(&[0, 1, 2], 1).checksum);
        assert_eq!(parse_id(&hex(&[0xab; 16])), Some([0xab; 16]));
        assert_eq!(parse_id("xyz"), None);
    }
}
