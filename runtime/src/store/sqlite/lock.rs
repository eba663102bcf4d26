//! The lock that makes one store the only user of a database file, and the check that the file
//! it writes is still the one its path names.
//!
//! SQLite's own locks let several processes share a file; the engine instead wants to know that
//! nobody else runs executions from it, so that leases left behind can be released at start-up.
//! The lock is an OS lock (`flock`) on the database file itself, held while the store is open and
//! released when the process ends, however it ends. Being on the file, not on a name, it holds
//! whatever path reaches the file: a symbolic link, a hard link, a relative path or a bind mount
//! all find it taken, and no side file can be deleted to lift it. On Linux `flock` locks are
//! independent of the POSIX record locks SQLite takes on the same file, so neither disturbs the
//! other.
//!
//! A file deleted or replaced under a running store is still written (through the descriptors
//! open on it), but nothing written to it can be found again: the next open of the path finds
//! another file, or none. [`FileIdentity`] notices: it remembers the device and inode of the file
//! opened, and the writer compares them with what the path names before acknowledging each
//! group of writes, the readers before reading. Once they differ, every later call fails.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Instant;

use super::database_error;
use crate::store::StoreError;

/// Held for the lifetime of a store; dropping it releases the lock. It must be dropped only
/// after every SQLite connection to the file is closed: closing a descriptor of a file drops the
/// process's POSIX locks on it, SQLite's included.
#[derive(Debug)]
pub(super) struct FileLock {
    _file: File,
    #[cfg(unix)]
    id: (u64, u64),
}

/// The files locked by stores of this process, by device and inode. A second store of the same
/// file in this process is refused from this list, without opening the file: opening and then
/// closing a descriptor of it would silently drop the POSIX locks the first store's SQLite
/// connections hold on it.
#[cfg(unix)]
static LOCKED_HERE: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

impl FileLock {
    /// Opens (creating it if missing) and locks the database file at `db_path`, or fails at once
    /// if another store holds it. Returns the lock and the file's identity, whose path is the
    /// file's canonical path (symbolic links resolved), the one to open it by.
    // `File::try_lock` is stable since Rust 1.89, the workspace's `rust-version`.
    pub(super) fn acquire(db_path: &Path) -> Result<(FileLock, FileIdentity), StoreError> {
        let in_use = || {
            database_error(format!(
                "database file {} is in use by another engine (the file is locked)",
                db_path.display()
            ))
        };
        // Held from the look-up to the registration, so that two opens in this process do not
        // interleave.
        #[cfg(unix)]
        let mut locked_here = LOCKED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(db_path) {
            use std::os::unix::fs::MetadataExt;
            if locked_here.contains(&(meta.dev(), meta.ino())) {
                return Err(in_use());
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(db_path)
            .map_err(|e| {
                database_error(format!(
                    "cannot open the database file {}: {e}",
                    db_path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use()),
            Err(TryLockError::Error(e)) => {
                return Err(database_error(format!(
                    "cannot lock the database file {}: {e}",
                    db_path.display()
                )))
            }
        }
        let canonical = std::fs::canonicalize(db_path)
            .map_err(|e| database_error(format!("cannot resolve {}: {e}", db_path.display())))?;
        let identity = FileIdentity::of(&file, canonical, db_path)?;
        #[cfg(unix)]
        locked_here.push(identity.id);
        let lock = FileLock {
            _file: file,
            #[cfg(unix)]
            id: identity.id,
        };
        Ok((lock, identity))
    }
}

#[cfg(unix)]
impl Drop for FileLock {
    fn drop(&mut self) {
        let mut locked_here = LOCKED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
        locked_here.retain(|id| *id != self.id);
    }
}

/// How long a read trusts the last check of the file's identity. Writes check every group.
const READ_CHECK_INTERVAL_MS: u64 = 10;

/// The database file a store opened, to check that its path still names it.
#[derive(Debug)]
pub(super) struct FileIdentity {
    /// The canonical path.
    path: PathBuf,
    /// The path as the caller gave it, for messages.
    given: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
    /// Milliseconds since `epoch` of the last check that found the file in place.
    checked_at: AtomicU64,
    epoch: Instant,
    /// Why the file is lost, once it is: then every check fails.
    lost: OnceLock<Arc<rusqlite::Error>>,
}

impl FileIdentity {
    fn of(file: &File, path: PathBuf, given: &Path) -> Result<FileIdentity, StoreError> {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            let meta = file
                .metadata()
                .map_err(|e| database_error(format!("cannot stat {}: {e}", given.display())))?;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let _ = file;
        Ok(FileIdentity {
            path,
            given: given.to_owned(),
            #[cfg(unix)]
            id,
            checked_at: AtomicU64::new(0),
            epoch: Instant::now(),
            lost: OnceLock::new(),
        })
    }

    /// The canonical path of the file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Fails if the path no longer names the file the store opened (it was deleted, moved away
    /// or replaced), or ever failed to. One `stat` of the path.
    pub(super) fn check(&self) -> Result<(), Arc<rusqlite::Error>> {
        if let Some(lost) = self.lost.get() {
            return Err(Arc::clone(lost));
        }
        match self.still_there() {
            Ok(()) => {
                let now = self.epoch.elapsed().as_millis() as u64;
                self.checked_at.fetch_max(now.max(1), Ordering::Relaxed);
                Ok(())
            }
            Err(why) => Err(Arc::clone(self.lost.get_or_init(|| {
                tracing::error!(path = %self.given.display(), %why, "the database file is lost; every later write and read fails");
                Arc::new(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some(format!(
                        "the database file {} {why}; what would be written now could not be \
                         found again, so nothing more is: reopen the store on the file",
                        self.given.display()
                    )),
                ))
            }))),
        }
    }

    /// Why the file was found lost by an earlier check, if it was. No system call.
    pub(super) fn lost(&self) -> Option<&Arc<rusqlite::Error>> {
        self.lost.get()
    }

    /// As [`check`](Self::check), trusting a check made in the last few milliseconds: for
    /// reads, which need not each pay a `stat`.
    pub(super) fn check_recent(&self) -> Result<(), Arc<rusqlite::Error>> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.checked_at.load(Ordering::Relaxed);
        if self.lost.get().is_none()
            && last != 0
            && now.saturating_sub(last) < READ_CHECK_INTERVAL_MS
        {
            return Ok(());
        }
        self.check()
    }

    #[cfg(unix)]
    fn still_there(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => Ok(()),
            Ok(_) => Err("was replaced by another file".to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("was deleted (or moved away)".to_owned())
            }
            Err(e) => Err(format!("cannot be checked: {e}")),
        }
    }

    #[cfg(not(unix))]
    fn still_there(&self) -> Result<(), String> {
        match self.path.try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err("was deleted (or moved away)".to_owned()),
            Err(e) => Err(format!("cannot be checked: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_on_the_file_whatever_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let (first, identity) = FileLock::acquire(&db).unwrap();
        assert_eq!(identity.path(), std::fs::canonicalize(&db).unwrap());
        let taken = |path: &Path| {
            let err = FileLock::acquire(path).unwrap_err();
            assert!(
                err.to_string().contains("is in use by another engine"),
                "{err}"
            );
        };
        taken(&db);
        #[cfg(unix)]
        {
            let link = dir.path().join("link.db");
            std::os::unix::fs::symlink(&db, &link).unwrap();
            taken(&link);
            let hard = dir.path().join("hard.db");
            std::fs::hard_link(&db, &hard).unwrap();
            taken(&hard);
        }
        taken(&dir.path().join(".").join("jobs.db"));
        // No side file to delete.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), {
            #[cfg(unix)]
            {
                3
            }
            #[cfg(not(unix))]
            {
                1
            }
        });
        drop(first);
        FileLock::acquire(&db).unwrap();
    }

    #[test]
    fn a_deleted_or_replaced_file_fails_every_later_check() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let (_lock, identity) = FileLock::acquire(&db).unwrap();
        identity.check().unwrap();
        identity.check_recent().unwrap();
        std::fs::rename(&db, dir.path().join("moved.db")).unwrap();
        let err = identity.check().unwrap_err().to_string();
        assert!(err.contains("was deleted (or moved away)"), "{err}");
        // Even once a file is back at the path: it is another file.
        std::fs::write(&db, b"").unwrap();
        assert!(identity.check().is_err());
        assert!(identity.check_recent().is_err());

        let other = dir.path().join("other.db");
        let (_lock, identity) = FileLock::acquire(&other).unwrap();
        std::fs::write(dir.path().join("new.db"), b"").unwrap();
        std::fs::rename(dir.path().join("new.db"), &other).unwrap();
        let err = identity.check().unwrap_err().to_string();
        assert!(err.contains("was replaced by another file"), "{err}");
    }
}
