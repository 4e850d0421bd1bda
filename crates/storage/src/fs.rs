//! The file-system seam: every byte the storage layer writes goes through
//! [`Vfs`], so tests can simulate power loss, full disks and failing syncs
//! without touching a real disk.
//!
//! [`OsFs`] is the real thing (data files 0600, directories 0700).
//! [`SimFs`] keeps, per file, the bytes written and the bytes made durable by
//! the last sync; [`SimFs::crash`] drops everything unsynced (optionally
//! keeping a torn prefix), and faults can be injected on writes and syncs.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// An open file, shared between the appending writer and the syncer.
pub trait VFile: Send + Sync + std::fmt::Debug {
    /// Append bytes at the end of the file.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Make everything appended so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Cut the file to `len` bytes and make the cut durable; later appends
    /// continue at the new end.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// File-system operations the storage layer uses.
pub trait Vfs: Send + Sync + std::fmt::Debug {
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// File names (not paths) in a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, p: &Path) -> bool;
    /// Create (truncating) a file for appending.
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>>;
    /// Open an existing file for appending.
    fn open_append(&self, p: &Path) -> io::Result<Arc<dyn VFile>>;
    fn read(&self, p: &Path) -> io::Result<Vec<u8>>;
    /// Size of a file.
    fn file_len(&self, p: &Path) -> io::Result<u64>;
    /// Atomically replace `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, p: &Path) -> io::Result<()>;
    /// Cut a file to `len` bytes (and make that durable).
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()>;
    /// Make a directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

// ------------------------------------------------------------------ OS

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile(std::fs::File);

impl VFile for OsFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        use std::io::Write;
        (&self.0).write_all(buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()?;
        // A file deleted while open (its directory removed under a running
        // server) still takes writes and syncs, but nothing of it survives:
        // acknowledging would be a lie.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if self.0.metadata()?.nlink() == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the file was deleted while open (was the data directory removed?)",
                ));
            }
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.0.set_len(len)?;
        (&self.0).seek(SeekFrom::Start(len))?;
        self.0.sync_all()
    }
}

fn open_opts() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

impl Vfs for OsFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(p)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        v.sort();
        Ok(v)
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = open_opts().create(true).truncate(true).write(true).read(true).open(p)?;
        Ok(Arc::new(OsFile(f)))
    }
    fn open_append(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = open_opts().append(true).read(true).open(p)?;
        Ok(Arc::new(OsFile(f)))
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(p)
    }
    fn file_len(&self, p: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(p)?.len())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()> {
        let f = open_opts().write(true).open(p)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

// ------------------------------------------------------------------ simulation

/// What to fail, for fault-injection tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Appends fail with "no space left" once this many more bytes were written.
    pub disk_full_after_bytes: Option<u64>,
    /// The next syncs fail with EIO (file syncs and directory syncs).
    pub fail_syncs: bool,
    /// The power goes out right after this many more successful syncs: from
    /// then on nothing reaches the disk (every operation fails), until
    /// [`SimFs::crash`] models what survived.
    pub power_cut_after_syncs: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    data: Vec<u8>,
    /// Length made durable by the last sync.
    synced: usize,
    /// Whether the directory entry is durable.
    entry_durable: bool,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Files removed or renamed away whose removal is not yet durable.
    ghosts: BTreeMap<PathBuf, SimFile>,
    dirs: Vec<PathBuf>,
    faults: Faults,
    written: u64,
    syncs: u64,
    syncs_at_faults: u64,
    dead: bool,
}

fn power_lost() -> io::Error {
    io::Error::other("the power is out (simulated)")
}

impl SimState {
    fn check_alive(&self) -> io::Result<()> {
        if self.dead { Err(power_lost()) } else { Ok(()) }
    }
    fn count_sync(&mut self) {
        self.syncs += 1;
        if let Some(n) = self.faults.power_cut_after_syncs
            && self.syncs - self.syncs_at_faults >= n
        {
            self.dead = true;
        }
    }
}

/// An in-memory file system that models what survives a power cut.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimHandle {
    fs: SimFs,
    path: PathBuf,
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", p.display()))
}

impl VFile for SimHandle {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.check_alive()?;
        if let Some(limit) = st.faults.disk_full_after_bytes
            && st.written + buf.len() as u64 > limit
        {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (simulated)"));
        }
        st.written += buf.len() as u64;
        let f = st.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        f.data.extend_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.check_alive()?;
        if st.faults.fail_syncs {
            return Err(io::Error::other("fdatasync: input/output error (simulated)"));
        }
        let f = st.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        f.synced = f.data.len();
        st.count_sync();
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let st = self.fs.state.lock();
        Ok(st.files.get(&self.path).ok_or_else(|| not_found(&self.path))?.data.len() as u64)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.check_alive()?;
        if st.faults.fail_syncs {
            return Err(io::Error::other("fsync: input/output error (simulated)"));
        }
        let f = st.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        f.data.truncate(len as usize);
        f.synced = f.synced.min(f.data.len());
        st.count_sync();
        Ok(())
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Set the faults to inject from now on.
    pub fn set_faults(&self, f: Faults) {
        let mut st = self.state.lock();
        st.faults = f;
        st.written = 0;
        st.syncs_at_faults = st.syncs;
    }

    /// Number of successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Simulate a power cut: every file keeps its synced bytes plus, when
    /// `torn` is `Some(k)`, the first `k` 512-byte sectors of what was written
    /// after the sync (a torn write). Files whose directory entry was never
    /// made durable vanish; removals that were not made durable are undone.
    pub fn crash(&self, torn: Option<usize>) {
        let mut st = self.state.lock();
        st.files.retain(|_, f| f.entry_durable);
        let ghosts = std::mem::take(&mut st.ghosts);
        for (p, g) in ghosts {
            if g.entry_durable {
                st.files.entry(p).or_insert(g);
            }
        }
        for f in st.files.values_mut() {
            let keep = match torn {
                Some(k) => (f.synced + k * 512).min(f.data.len()),
                None => f.synced,
            };
            f.data.truncate(keep);
            f.synced = keep;
        }
        st.faults = Faults::default();
        st.dead = false;
    }

    /// Bytes of a file as they are now (for corruption tests).
    pub fn bytes(&self, p: &Path) -> Option<Vec<u8>> {
        self.state.lock().files.get(p).map(|f| f.data.clone())
    }

    /// Replace a file's bytes, durably (for corruption tests).
    pub fn set_bytes(&self, p: &Path, data: Vec<u8>) {
        let mut st = self.state.lock();
        let n = data.len();
        st.files.insert(p.to_path_buf(), SimFile { data, synced: n, entry_durable: true });
    }

    fn parent_synced(dir: &Path, st: &mut SimState) {
        for (p, f) in &mut st.files {
            if p.parent() == Some(dir) {
                f.entry_durable = true;
            }
        }
        st.ghosts.retain(|p, _| p.parent() != Some(dir));
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.dirs.iter().any(|d| d == p) {
            st.dirs.push(p.to_path_buf());
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }
    fn exists(&self, p: &Path) -> bool {
        let st = self.state.lock();
        st.files.contains_key(p) || st.dirs.iter().any(|d| d == p)
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        let mut st = self.state.lock();
        st.check_alive()?;
        if let Some(old) = st.files.remove(p)
            && old.entry_durable
        {
            st.ghosts.insert(p.to_path_buf(), old);
        }
        st.files.insert(p.to_path_buf(), SimFile::default());
        Ok(Arc::new(SimHandle { fs: self.clone(), path: p.to_path_buf() }))
    }
    fn open_append(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        if !self.state.lock().files.contains_key(p) {
            return Err(not_found(p));
        }
        Ok(Arc::new(SimHandle { fs: self.clone(), path: p.to_path_buf() }))
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        self.state.lock().files.get(p).map(|f| f.data.clone()).ok_or_else(|| not_found(p))
    }
    fn file_len(&self, p: &Path) -> io::Result<u64> {
        self.state.lock().files.get(p).map(|f| f.data.len() as u64).ok_or_else(|| not_found(p))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive()?;
        let mut f = st.files.remove(from).ok_or_else(|| not_found(from))?;
        if f.entry_durable {
            st.ghosts.insert(from.to_path_buf(), f.clone());
        }
        if let Some(old) = st.files.remove(to)
            && old.entry_durable
        {
            st.ghosts.insert(to.to_path_buf(), old);
        }
        f.entry_durable = false;
        st.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive()?;
        let f = st.files.remove(p).ok_or_else(|| not_found(p))?;
        if f.entry_durable {
            st.ghosts.insert(p.to_path_buf(), f);
        }
        Ok(())
    }
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive()?;
        let f = st.files.get_mut(p).ok_or_else(|| not_found(p))?;
        f.data.truncate(len as usize);
        f.synced = f.data.len();
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive()?;
        if st.faults.fail_syncs {
            return Err(io::Error::other("fsync(dir): input/output error (simulated)"));
        }
        Self::parent_synced(dir, &mut st);
        st.count_sync();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_durable_entries() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        let a = fs.create(&d.join("a")).unwrap();
        a.append(b"hello").unwrap();
        fs.sync_dir(d).unwrap();
        a.sync().unwrap();
        a.append(b" world").unwrap();
        let b = fs.create(&d.join("b")).unwrap();
        b.append(b"x").unwrap();
        b.sync().unwrap(); // data synced, entry not
        fs.crash(None);
        assert_eq!(fs.read(&d.join("a")).unwrap(), b"hello");
        assert!(!fs.exists(&d.join("b")));
    }

    #[test]
    fn undurable_rename_is_undone() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        let f = fs.create(&d.join("old")).unwrap();
        f.append(b"1").unwrap();
        f.sync().unwrap();
        fs.sync_dir(d).unwrap();
        let t = fs.create(&d.join("tmp")).unwrap();
        t.append(b"2").unwrap();
        t.sync().unwrap();
        fs.rename(&d.join("tmp"), &d.join("old")).unwrap();
        fs.crash(None);
        assert_eq!(fs.read(&d.join("old")).unwrap(), b"1");
    }

    #[test]
    fn faults() {
        let fs = SimFs::new();
        let f = fs.create(Path::new("/f")).unwrap();
        fs.set_faults(Faults { disk_full_after_bytes: Some(4), fail_syncs: true, ..Faults::default() });
        f.append(b"abc").unwrap();
        assert_eq!(f.append(b"de").unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert!(f.sync().is_err());
    }

    #[test]
    fn os_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x");
        OsFs.create_dir_all(&sub).unwrap();
        let f = OsFs.create(&sub.join("f")).unwrap();
        f.append(b"1").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
            assert_eq!(std::fs::metadata(sub.join("f")).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
