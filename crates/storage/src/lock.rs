//! The data directory lock: one process at a time.
//!
//! An OS advisory lock (`flock`) on `<data_dir>/LOCK`, released by the kernel
//! when the process dies (so a kill -9 never leaves a stale lock). The file
//! holds the owner's pid for the error message.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Take the lock of `dir`, or fail naming the holder's pid.
pub fn lock_dir(dir: &Path) -> Result<DirLock, StorageError> {
    let path = dir.join("LOCK");
    let io = |e| StorageError::Io { path: path.clone(), source: e };
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim().to_string();
            if pid == std::process::id().to_string() {
                return Err(StorageError::LockedHere { path: dir.to_path_buf() });
            }
            return Err(StorageError::Locked {
                path: dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown".into() } else { pid },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: f, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let held = lock_dir(d.path()).unwrap();
        let e = lock_dir(d.path()).unwrap_err().to_string();
        assert!(e.contains("already open in this process"), "{e}");
        drop(held);
        lock_dir(d.path()).unwrap();
    }
}
