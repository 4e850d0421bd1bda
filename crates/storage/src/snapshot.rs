//! Snapshots: a consistent image of the whole state at a sequence number.
//!
//! Byte layout (little-endian):
//!
//! ```text
//! snapshot := header block* end
//! header   := magic "ECSDBSNP" | version:u32 (=1) | seq:u64 | schema_fingerprint:u64
//!             | created_unix_ms:u64 | crc32c:u32            (CRC of the 36 bytes before it)
//! block    := kind:u8 | raw_len:u32 | comp_len:u32 | crc32c:u32 | zstd(raw)[comp_len]
//!             (CRC over kind, raw_len, comp_len and the compressed bytes)
//! kinds    := 1 SLOTS   count:u32 (generation:u32 alive:u8)[count]
//!           | 2 ARCH    ntables:u16 table:u16[ntables] rows:u32 id:u64[rows]
//!                       then each column in archetype order:
//!                       fixed: bytes[rows*size]   var: (len:u32 bytes)[rows]
//!           | 3 EDGES   count:u32 (rel:u16 from:u64 to:u64 len:u32 props[len])[count]
//!           | 4 SCHEMA  the schema's canonical TOML (first block when present)
//!           | 255 END   blocks:u32 (blocks before END)            (last block)
//! ```
//! Taking one happens in two steps: [`capture`] copies the state into raw
//! blocks while the caller holds the read lock (writers wait only for this
//! copy), then [`write`] compresses, checksums and publishes it atomically
//! (temp file, fsync, rename, fsync of the directory) with no lock held.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecsdb_core::load::ColumnBytes;
use ecsdb_core::{EdgeKey, EntityId, Schema, World};

use crate::error::StorageError;
use crate::fs::Vfs;
use crate::wal::format::le64;

pub const MAGIC: &[u8; 8] = b"ECSDBSNP";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 40;
const BLOCK_HEADER_LEN: usize = 13;
const KIND_SLOTS: u8 = 1;
const KIND_ARCH: u8 = 2;
const KIND_EDGES: u8 = 3;
const KIND_SCHEMA: u8 = 4;
const KIND_END: u8 = 255;
/// Rows per archetype block: bounds the memory one block needs to load.
const ROWS_PER_BLOCK: usize = 65_536;
/// Archetype and edge blocks are cut at about this many raw bytes, so one
/// block never comes near the reader's limit and loading needs little memory
/// beyond the state itself.
const TARGET_BLOCK_BYTES: usize = 16 << 20;
/// Largest raw block: the reader calls larger claims corruption, and the
/// writer refuses to write one (`raw_len` is a u32 on disk as well).
pub const MAX_RAW_BLOCK: usize = 1 << 31;

/// A captured, not yet written, snapshot.
#[derive(Debug)]
pub struct Image {
    pub seq: u64,
    pub fingerprint: u64,
    pub created_ms: u64,
    blocks: Vec<(u8, Vec<u8>)>,
}

impl Image {
    /// Uncompressed size of the captured state.
    pub fn raw_bytes(&self) -> usize {
        self.blocks.iter().map(|(_, b)| b.len()).sum()
    }

    /// The uncompressed blocks (for measuring compression on real state).
    pub fn raw_blocks(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.iter().map(|(_, b)| b.as_slice())
    }
}

/// File name of a snapshot at `seq`.
pub fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}.snap")
}

/// Sequence number from a snapshot file name.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let d = name.strip_suffix(".snap")?;
    (d.len() == 20).then(|| d.parse().ok())?
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Copy the world's state into raw blocks. Call with the read lock held.
pub fn capture(world: &World) -> Image {
    // The schema goes first: a snapshot taken before a migration still
    // loads after it (the log's migration record then rewrites the state).
    let mut blocks = vec![(KIND_SCHEMA, world.schema().to_toml_string().into_bytes())];
    let slots: Vec<(u32, bool)> = world.entities().slots().collect();
    let mut b = Vec::with_capacity(4 + slots.len() * 5);
    b.extend_from_slice(&(slots.len() as u32).to_le_bytes());
    for (g, alive) in slots {
        b.extend_from_slice(&g.to_le_bytes());
        b.push(u8::from(alive));
    }
    blocks.push((KIND_SLOTS, b));
    for arch in world.archetypes() {
        if arch.is_empty() {
            continue;
        }
        let fixed_row: usize = arch
            .columns
            .iter()
            .map(|c| match c {
                ecsdb_core::archetype::Column::Fixed(f) => f.elem_size(),
                ecsdb_core::archetype::Column::Var(_) => 4,
            })
            .sum::<usize>()
            + 8;
        let mut start = 0;
        while start < arch.len() {
            // Rows until the block holds about TARGET_BLOCK_BYTES (at least one).
            let mut end = start;
            let mut bytes = 0usize;
            while end < arch.len() && end - start < ROWS_PER_BLOCK && (end == start || bytes < TARGET_BLOCK_BYTES) {
                bytes += fixed_row;
                for c in &arch.columns {
                    if let ecsdb_core::archetype::Column::Var(v) = c {
                        bytes += v.get(end).len();
                    }
                }
                end += 1;
            }
            let rows = end - start;
            let mut b = Vec::new();
            b.extend_from_slice(&(arch.tables.len() as u16).to_le_bytes());
            for t in &arch.tables {
                b.extend_from_slice(&t.to_le_bytes());
            }
            b.extend_from_slice(&(rows as u32).to_le_bytes());
            for id in &arch.entities[start..end] {
                b.extend_from_slice(&id.0.to_le_bytes());
            }
            for c in &arch.columns {
                match c {
                    ecsdb_core::archetype::Column::Fixed(f) => {
                        let s = f.elem_size();
                        b.extend_from_slice(&f.bytes()[start * s..end * s]);
                    }
                    ecsdb_core::archetype::Column::Var(v) => {
                        for r in start..end {
                            let x = v.get(r);
                            b.extend_from_slice(&(x.len() as u32).to_le_bytes());
                            b.extend_from_slice(x);
                        }
                    }
                }
            }
            blocks.push((KIND_ARCH, b));
            start = end;
        }
    }
    // Edges in blocks of about TARGET_BLOCK_BYTES each (at least one block).
    let edge_block = |edges: &[(ecsdb_core::EdgeKey, &[u8])]| {
        let mut b = Vec::new();
        b.extend_from_slice(&(edges.len() as u32).to_le_bytes());
        for (k, p) in edges {
            b.extend_from_slice(&k.rel.to_le_bytes());
            b.extend_from_slice(&k.from.0.to_le_bytes());
            b.extend_from_slice(&k.to.0.to_le_bytes());
            b.extend_from_slice(&(p.len() as u32).to_le_bytes());
            b.extend_from_slice(p);
        }
        (KIND_EDGES, b)
    };
    let mut pending: Vec<(ecsdb_core::EdgeKey, &[u8])> = Vec::new();
    let mut pending_bytes = 0usize;
    for (k, p) in world.relations().iter() {
        pending_bytes += 22 + p.len();
        pending.push((*k, p));
        if pending_bytes >= TARGET_BLOCK_BYTES {
            blocks.push(edge_block(&pending));
            pending.clear();
            pending_bytes = 0;
        }
    }
    if !pending.is_empty() || !blocks.iter().any(|(k, _)| *k == KIND_EDGES) {
        blocks.push(edge_block(&pending));
    }
    Image { seq: world.seq(), fingerprint: world.schema().fingerprint, created_ms: now_ms(), blocks }
}

/// Encode an image into the snapshot byte format (zstd `level`).
pub fn encode(image: &Image, level: i32) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(image.raw_bytes() / 3 + 64);
    encode_to(image, level, &mut |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

/// Encode an image piece by piece into `emit` (a file, for a checkpoint:
/// only one compressed block is held at a time). Every block is checked
/// against the reader's limits first.
fn encode_to(
    image: &Image,
    level: i32,
    emit: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    if let Some((_, raw)) = image.blocks.iter().find(|(_, raw)| raw.len() > MAX_RAW_BLOCK) {
        return Err(StorageError::TooLarge { what: "a snapshot block", bytes: raw.len(), limit: MAX_RAW_BLOCK });
    }
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&image.seq.to_le_bytes());
    out.extend_from_slice(&image.fingerprint.to_le_bytes());
    out.extend_from_slice(&image.created_ms.to_le_bytes());
    let crc = crc32c::crc32c(&out[..36]);
    out.extend_from_slice(&crc.to_le_bytes());
    emit(&out)?;
    let mut push = |kind: u8, raw: &[u8]| -> Result<(), StorageError> {
        let comp = zstd::bulk::compress(raw, level).map_err(|e| StorageError::Corrupt {
            path: PathBuf::new(),
            offset: None,
            reason: format!("zstd: {e}"),
        })?;
        let mut h = Vec::with_capacity(BLOCK_HEADER_LEN);
        h.push(kind);
        h.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        h.extend_from_slice(&(comp.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h), &comp);
        h.extend_from_slice(&crc.to_le_bytes());
        emit(&h)?;
        emit(&comp)
    };
    for (kind, raw) in &image.blocks {
        push(*kind, raw)?;
    }
    push(KIND_END, &(image.blocks.len() as u32).to_le_bytes())
}

/// Write an image to `dir` atomically; returns its path and size.
pub fn write(fs: &Arc<dyn Vfs>, dir: &Path, image: &Image, level: i32) -> Result<(PathBuf, u64), StorageError> {
    let path = dir.join(snapshot_name(image.seq));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(image.seq)));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StorageError::Io { path: p, source: e }
    };
    let f = fs.create(&tmp).map_err(io(&tmp))?;
    let mut written = 0u64;
    let streamed = encode_to(image, level, &mut |chunk| {
        written += chunk.len() as u64;
        f.append(chunk).map_err(io(&tmp))
    })
    .and_then(|()| f.sync().map_err(io(&tmp)));
    drop(f);
    if let Err(e) = streamed {
        let _ = fs.remove(&tmp); // never visible; recovery deletes it too
        return Err(e);
    }
    fs.rename(&tmp, &path).map_err(io(&path))?;
    fs.sync_dir(dir).map_err(io(dir))?;
    Ok((path, written))
}

/// Header fields of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub fingerprint: u64,
    pub created_ms: u64,
    pub blocks: u32,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self.b.get(self.pos..self.pos + n).ok_or_else(|| format!("block ends early (needs {n} more bytes)"))?;
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(le64(self.take(8)?))
    }
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt { path: path.to_path_buf(), offset: Some(offset as u64), reason: reason.into() }
}

/// Read and check a snapshot's header.
pub fn read_header(path: &Path, b: &[u8]) -> Result<SnapshotInfo, StorageError> {
    if b.len() < HEADER_LEN {
        return Err(corrupt(path, 0, format!("file of {} bytes is shorter than a snapshot header", b.len())));
    }
    if &b[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a snapshot (bad magic number)"));
    }
    let crc = u32::from_le_bytes([b[36], b[37], b[38], b[39]]);
    if crc32c::crc32c(&b[..36]) != crc {
        return Err(corrupt(path, 36, "snapshot header checksum mismatch"));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != VERSION {
        return Err(corrupt(
            path,
            8,
            format!("snapshot format version {version} is not supported (this build reads {VERSION})"),
        ));
    }
    Ok(SnapshotInfo { seq: le64(&b[12..20]), fingerprint: le64(&b[20..28]), created_ms: le64(&b[28..36]), blocks: 0 })
}

/// Check every block of a snapshot (checksums, decompression, framing)
/// without building a world. Returns its header and block count.
pub fn verify(path: &Path, b: &[u8]) -> Result<SnapshotInfo, StorageError> {
    let mut info = read_header(path, b)?;
    info.blocks = for_each_block(path, b, |_, _, _| Ok(()))?;
    Ok(info)
}

/// Visit each decompressed block; returns the number of blocks before END.
fn for_each_block(
    path: &Path,
    b: &[u8],
    mut f: impl FnMut(u8, &[u8], usize) -> Result<(), StorageError>,
) -> Result<u32, StorageError> {
    let mut pos = HEADER_LEN;
    let mut count = 0u32;
    loop {
        let h = b
            .get(pos..pos + BLOCK_HEADER_LEN)
            .ok_or_else(|| corrupt(path, pos, "snapshot ends before its END block"))?;
        let kind = h[0];
        let raw_len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let comp_len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
        let crc = u32::from_le_bytes([h[9], h[10], h[11], h[12]]);
        let data = b
            .get(pos + BLOCK_HEADER_LEN..pos + BLOCK_HEADER_LEN + comp_len)
            .ok_or_else(|| corrupt(path, pos, format!("block of {comp_len} bytes is cut short")))?;
        if crc32c::crc32c_append(crc32c::crc32c(&h[..9]), data) != crc {
            return Err(corrupt(path, pos, "block checksum mismatch"));
        }
        if raw_len > MAX_RAW_BLOCK {
            return Err(corrupt(path, pos, format!("implausible block size {raw_len}")));
        }
        let raw = zstd::bulk::decompress(data, raw_len).map_err(|e| corrupt(path, pos, format!("zstd: {e}")))?;
        if raw.len() != raw_len {
            return Err(corrupt(path, pos, "block decompresses to the wrong size"));
        }
        if kind == KIND_END {
            let n = raw.get(..4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
            if n != Some(count) {
                return Err(corrupt(path, pos, format!("END block counts {n:?} blocks, found {count}")));
            }
            let end = pos + BLOCK_HEADER_LEN + comp_len;
            if end != b.len() {
                return Err(corrupt(path, end, format!("{} bytes after the END block", b.len() - end)));
            }
            return Ok(count);
        }
        f(kind, &raw, pos)?;
        count += 1;
        pos += BLOCK_HEADER_LEN + comp_len;
    }
}

/// The schema a snapshot embeds (its first block), if it has one.
pub fn embedded_schema(path: &Path, b: &[u8]) -> Result<Option<Schema>, StorageError> {
    let pos = HEADER_LEN;
    let Some(h) = b.get(pos..pos + BLOCK_HEADER_LEN) else { return Ok(None) };
    if h[0] != KIND_SCHEMA {
        return Ok(None);
    }
    let raw_len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let comp_len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
    let crc = u32::from_le_bytes([h[9], h[10], h[11], h[12]]);
    let data = b
        .get(pos + BLOCK_HEADER_LEN..pos + BLOCK_HEADER_LEN + comp_len)
        .ok_or_else(|| corrupt(path, pos, "schema block is cut short"))?;
    if crc32c::crc32c_append(crc32c::crc32c(&h[..9]), data) != crc {
        return Err(corrupt(path, pos, "block checksum mismatch"));
    }
    if raw_len > ecsdb_core::schema::MAX_SCHEMA_TEXT {
        return Err(corrupt(path, pos, format!("implausible schema block of {raw_len} bytes")));
    }
    let raw = zstd::bulk::decompress(data, raw_len).map_err(|e| corrupt(path, pos, format!("zstd: {e}")))?;
    let text = String::from_utf8(raw).map_err(|_| corrupt(path, pos, "schema block is not UTF-8"))?;
    Schema::from_stored_toml(&text).map(Some).map_err(|e| corrupt(path, pos, format!("embedded schema: {e}")))
}

/// Load a snapshot into a new world: for `schema` when the snapshot was
/// taken under it, else under the schema the snapshot embeds (one from
/// before a migration).
pub fn load(path: &Path, b: &[u8], schema: &Arc<Schema>) -> Result<World, StorageError> {
    let info = read_header(path, b)?;
    let schema = if info.fingerprint == schema.fingerprint {
        schema.clone()
    } else {
        match embedded_schema(path, b)? {
            Some(s) if s.fingerprint == info.fingerprint => Arc::new(s),
            _ => {
                return Err(StorageError::SchemaMismatch {
                    path: path.to_path_buf(),
                    found: info.fingerprint,
                    expected: schema.fingerprint,
                });
            }
        }
    };
    build_world(path, info.seq, &schema, &mut |f| for_each_block(path, b, f).map(|_| ()))
}

/// Build the world a captured image holds without encoding it (the state a
/// snapshot of the image would load to, through the same checks): for
/// checksums of a backup while its bytes are being compressed.
pub fn load_image(image: &Image, schema: &Arc<Schema>) -> Result<World, StorageError> {
    let path = Path::new("captured state");
    if image.fingerprint != schema.fingerprint {
        return Err(StorageError::SchemaMismatch {
            path: path.to_path_buf(),
            found: image.fingerprint,
            expected: schema.fingerprint,
        });
    }
    build_world(path, image.seq, schema, &mut |f| {
        for (i, (kind, raw)) in image.blocks.iter().enumerate() {
            if *kind != KIND_SCHEMA {
                f(*kind, raw, i)?;
            }
        }
        Ok(())
    })
}

type BlockFn<'a> = dyn FnMut(u8, &[u8], usize) -> Result<(), StorageError> + 'a;

/// A world from state blocks (`visit` hands each block to the function it
/// is given), checked for integrity.
fn build_world(
    path: &Path,
    seq: u64,
    schema: &Arc<Schema>,
    visit: &mut dyn FnMut(&mut BlockFn<'_>) -> Result<(), StorageError>,
) -> Result<World, StorageError> {
    let mut world = World::new(schema.clone());
    world.set_seq(seq);
    let mut edges_after: Vec<(EdgeKey, Vec<u8>)> = Vec::new();
    visit(&mut |kind, raw, pos| {
        let mut r = Reader { b: raw, pos: 0 };
        let fail = |e: String| corrupt(path, pos, e);
        match kind {
            KIND_SLOTS => {
                let n = r.u32().map_err(fail)? as usize;
                let mut slots = Vec::with_capacity(n.min(raw.len() / 5));
                for _ in 0..n {
                    let g = r.u32().map_err(fail)?;
                    let alive = r.take(1).map_err(fail)?[0] != 0;
                    slots.push((g, alive));
                }
                world.load_slot_generations(&slots).map_err(|e| fail(e.to_string()))
            }
            KIND_ARCH => {
                let nt = r.u16().map_err(fail)? as usize;
                let tables = (0..nt).map(|_| r.u16()).collect::<Result<Vec<_>, _>>().map_err(fail)?;
                let rows = r.u32().map_err(fail)? as usize;
                if rows > raw.len() / 8 {
                    return Err(fail(format!("block claims {rows} rows")));
                }
                let ids = (0..rows).map(|_| r.u64().map(EntityId)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
                let mut cols = Vec::new();
                for &t in &tables {
                    if t as usize >= schema.tables.len() {
                        return Err(fail(format!("unknown table #{t}")));
                    }
                    for s in &world.layout(t).slots.clone() {
                        if let Some((_, size)) = s.fixed {
                            cols.push(ColumnBytes::Fixed(r.take(size * rows).map_err(fail)?));
                        } else {
                            let mut v = Vec::with_capacity(rows);
                            for _ in 0..rows {
                                let len = r.u32().map_err(fail)? as usize;
                                v.push(r.take(len).map_err(fail)?);
                            }
                            cols.push(ColumnBytes::Var(v));
                        }
                    }
                }
                world.load_archetype(&tables, &ids, &cols).map_err(|e| fail(e.to_string()))
            }
            KIND_EDGES => {
                let n = r.u32().map_err(fail)? as usize;
                for _ in 0..n {
                    let rel = r.u16().map_err(fail)?;
                    let from = EntityId(r.u64().map_err(fail)?);
                    let to = EntityId(r.u64().map_err(fail)?);
                    let len = r.u32().map_err(fail)? as usize;
                    edges_after.push((EdgeKey { rel, from, to }, r.take(len).map_err(fail)?.to_vec()));
                }
                Ok(())
            }
            // Read before the state (see `embedded_schema`).
            KIND_SCHEMA if pos == HEADER_LEN => Ok(()),
            k => Err(fail(format!("unknown block kind {k}"))),
        }
    })?;
    for (k, p) in edges_after {
        world.load_edge(k, &p).map_err(|e| corrupt(path, 0, format!("edge: {e}")))?;
    }
    let problems = world.check_integrity();
    if !problems.is_empty() {
        return Err(corrupt(path, 0, format!("state fails integrity checks: {}", problems.join("; "))));
    }
    // What changed before the snapshot is not known: everything counts as
    // changed at its sequence number.
    world.reset_change_marks(seq);
    Ok(world)
}
