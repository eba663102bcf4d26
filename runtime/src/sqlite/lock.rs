//! The lock that says who may use a database file, and the check that the file it writes is
//! still the one its path names.
//!
//! SQLite's own locks let several processes share a file. An [exclusive](Ownership::Exclusive)
//! store wants to know that nobody else runs executions from it, so that leases left behind can
//! be released at start-up: it takes an exclusive OS lock (`flock(LOCK_EX)`). A
//! [shared](Ownership::Shared) store takes a shared one (`LOCK_SH`): any number of shared stores,
//! in as many processes, hold the file together, and an exclusive store and a shared one refuse
//! each other ([`StoreError::InUse`], naming how the other holds it). The lock is on the
//! database file itself, held while the store is open and released when the process ends,
//! however it ends. Being on the file, not on a name, it holds
//! whatever path reaches the file: a symbolic link, a hard link, a relative path or a bind mount
//! all find it taken, and no side file can be deleted to lift it. On Linux `flock` locks are
//! independent of the POSIX record locks SQLite takes on the same file, so neither disturbs the
//! other.
//!
//! A file deleted or replaced under a running store is still written (through the descriptors
//! open on it), but nothing written to it can be found again: the next open of the path finds
//! another file, or none. [`DatabaseFile`] notices. The writer asks it before acknowledging each
//! group of writes: an `fstat` of the locked descriptor says whether the file still has a name
//! (a deleted file, or one replaced by a rename, has none), and at most every few milliseconds a
//! `stat` of the path says whether the path still names it. Reads ask at most that often. Once
//! the file is lost, every later call fails.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use super::database_error;
use crate::store::{Ownership, StoreError};

/// The files locked by stores of this process, by device and inode, with how each is held. A
/// second store of the same file in this process is refused from this list, without opening the
/// file: opening and then closing a descriptor of it would silently drop the POSIX locks the
/// first store's SQLite connections hold on it. (Two engines of one process share a file by
/// sharing one store.)
#[cfg(unix)]
static LOCKED_HERE: Mutex<Vec<((u64, u64), Ownership)>> = Mutex::new(Vec::new());

/// How long a `stat` of the path is trusted: by the writer between groups, by reads.
const PATH_CHECK_INTERVAL_MS: u64 = 10;

/// The database file a store holds: locked, and checked to be still where its path says.
///
/// The descriptor it keeps carries the lock. [`release`](Self::release) closes it, which must
/// happen only after every SQLite connection to the file is closed: closing a descriptor of a
/// file drops the process's POSIX locks on it, SQLite's included.
#[derive(Debug)]
pub(super) struct DatabaseFile {
    /// The locked descriptor, until released.
    file: Mutex<Option<File>>,
    /// The canonical path.
    path: PathBuf,
    /// The path as the caller gave it, for messages.
    given: PathBuf,
    /// Device and inode.
    #[cfg(unix)]
    id: (u64, u64),
    /// Milliseconds since `epoch`, plus one, of the last `stat` of the path that found the file
    /// there; 0 before the first.
    path_checked_at: AtomicU64,
    epoch: Instant,
    /// Why the file is lost, once it is: then every check fails.
    lost: OnceLock<Arc<rusqlite::Error>>,
}

impl DatabaseFile {
    /// Opens (creating it if missing) and locks the database file at `db_path` as `ownership`
    /// asks (exclusive or shared), or fails at once if another store holds it in a way that
    /// excludes this one. Its [`path`](Self::path) is the file's canonical path (symbolic links
    /// resolved), the one to open it by.
    pub(super) fn lock(db_path: &Path, ownership: Ownership) -> Result<DatabaseFile, StoreError> {
        let in_use = |held_by: Option<Ownership>| StoreError::InUse {
            path: db_path.to_owned(),
            held_by,
        };
        // Held from the look-up to the registration, so that two opens in this process do not
        // interleave.
        #[cfg(unix)]
        let mut locked_here = LOCKED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(db_path) {
            use std::os::unix::fs::MetadataExt;
            let id = (meta.dev(), meta.ino());
            if let Some((_, held)) = locked_here.iter().find(|(locked, _)| *locked == id) {
                return Err(in_use(Some(*held)));
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
        // `File::try_lock` and `try_lock_shared` are stable since Rust 1.89, the workspace's
        // `rust-version`.
        let locked = match ownership {
            Ownership::Exclusive => file.try_lock(),
            Ownership::Shared => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(holder(&file, ownership))),
            Err(TryLockError::Error(e)) => {
                return Err(database_error(format!(
                    "cannot lock the database file {}: {e}",
                    db_path.display()
                )))
            }
        }
        let path = std::fs::canonicalize(db_path)
            .map_err(|e| database_error(format!("cannot resolve {}: {e}", db_path.display())))?;
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            let meta = file
                .metadata()
                .map_err(|e| database_error(format!("cannot stat {}: {e}", db_path.display())))?;
            (meta.dev(), meta.ino())
        };
        #[cfg(unix)]
        locked_here.push((id, ownership));
        Ok(DatabaseFile {
            file: Mutex::new(Some(file)),
            path,
            given: db_path.to_owned(),
            #[cfg(unix)]
            id,
            path_checked_at: AtomicU64::new(0),
            epoch: Instant::now(),
            lost: OnceLock::new(),
        })
    }

    /// The canonical path of the file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the locked descriptor, releasing the lock; later checks pass (the store is
    /// closed). Call it once every connection to the file is closed.
    pub(super) fn release(&self) {
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(file) = file {
            // Unlocked explicitly, not only by closing the descriptor: a child process being
            // started at this moment holds a copy of every descriptor until it execs, and that
            // copy would keep a lock that is only dropped on close.
            let _ = file.unlock();
            self.unregister();
        }
    }

    #[cfg(unix)]
    fn unregister(&self) {
        let mut locked_here = LOCKED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
        locked_here.retain(|(id, _)| *id != self.id);
    }

    #[cfg(not(unix))]
    fn unregister(&self) {}

    /// Fails if the file was deleted or replaced (or ever was): an `fstat` of the descriptor,
    /// and a `stat` of the path when the last one is a few milliseconds old. For the writer,
    /// before it acknowledges a group.
    pub(super) fn check(&self) -> Result<(), Arc<rusqlite::Error>> {
        if let Some(lost) = self.lost.get() {
            return Err(Arc::clone(lost));
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.path_checked_at.load(Ordering::Relaxed);
        let path_due = last == 0 || now.saturating_sub(last) >= PATH_CHECK_INTERVAL_MS;
        let found = self.still_named().and_then(|()| {
            if path_due {
                self.still_at_its_path()?;
                self.path_checked_at.fetch_max(now, Ordering::Relaxed);
            }
            Ok(())
        });
        found.map_err(|why| self.lose(why))
    }

    /// As [`check`](Self::check), trusting one made in the last few milliseconds: for reads,
    /// which need not each make a system call.
    pub(super) fn check_recent(&self) -> Result<(), Arc<rusqlite::Error>> {
        if let Some(lost) = self.lost.get() {
            return Err(Arc::clone(lost));
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.path_checked_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < PATH_CHECK_INTERVAL_MS {
            return Ok(());
        }
        self.check()
    }

    /// Why a check found the file lost, if one did. No system call.
    pub(super) fn lost(&self) -> Option<&Arc<rusqlite::Error>> {
        self.lost.get()
    }

    fn lose(&self, why: String) -> Arc<rusqlite::Error> {
        Arc::clone(self.lost.get_or_init(|| {
            tracing::error!(path = %self.given.display(), %why, "the database file is lost; every later write and read fails");
            Arc::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some(format!(
                    "the database file {} {why}; what would be written now could not be found \
                     again, so nothing more is: reopen the store on the file",
                    self.given.display()
                )),
            ))
        }))
    }

    /// Whether the locked file still has a name (a link count above zero).
    #[cfg(unix)]
    fn still_named(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(file) = file.as_ref() else {
            return Ok(());
        };
        match file.metadata() {
            Ok(meta) if meta.nlink() > 0 => Ok(()),
            Ok(_) => Err("was deleted (or replaced)".to_owned()),
            Err(e) => Err(format!("cannot be checked: {e}")),
        }
    }

    #[cfg(not(unix))]
    fn still_named(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the path still names the locked file.
    #[cfg(unix)]
    fn still_at_its_path(&self) -> Result<(), String> {
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
    fn still_at_its_path(&self) -> Result<(), String> {
        match self.path.try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err("was deleted (or moved away)".to_owned()),
            Err(e) => Err(format!("cannot be checked: {e}")),
        }
    }
}

/// How another store holds the file, after `file` failed to take it as `wanted`: a shared lock
/// is refused only by an exclusive holder; an exclusive one by any holder, so a shared lock is
/// tried to tell which (and let go at once). `None` when the holders changed meanwhile.
fn holder(file: &File, wanted: Ownership) -> Option<Ownership> {
    match wanted {
        Ownership::Shared => Some(Ownership::Exclusive),
        Ownership::Exclusive => match file.try_lock_shared() {
            Ok(()) => {
                // The descriptor is closed right after; this only lets go sooner.
                let _ = file.unlock();
                Some(Ownership::Shared)
            }
            Err(TryLockError::WouldBlock) => Some(Ownership::Exclusive),
            Err(TryLockError::Error(_)) => None,
        },
    }
}

impl Drop for DatabaseFile {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_on_the_file_whatever_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let first = DatabaseFile::lock(&db, Ownership::Exclusive).unwrap();
        assert_eq!(first.path(), std::fs::canonicalize(&db).unwrap());
        let taken = |path: &Path| {
            let err = DatabaseFile::lock(path, Ownership::Exclusive).unwrap_err();
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
        first.release();
        first.release();
        DatabaseFile::lock(&db, Ownership::Exclusive).unwrap();
    }

    #[test]
    fn shared_locks_coexist_and_refuse_an_exclusive_one_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        // Another process's shared store, as far as `flock` can tell: a descriptor of its own
        // holding a shared lock (this process has no SQLite connection to the file).
        let other = File::create(&db).unwrap();
        other.try_lock_shared().unwrap();
        let shared = DatabaseFile::lock(&db, Ownership::Shared).unwrap();
        shared.release();
        match DatabaseFile::lock(&db, Ownership::Exclusive) {
            Err(StoreError::InUse { path, held_by }) => {
                assert_eq!(path, db);
                assert_eq!(held_by, Some(Ownership::Shared));
            }
            other => panic!("an exclusive lock beside a shared one: {other:?}"),
        }
        other.unlock().unwrap();
        other.try_lock().unwrap();
        match DatabaseFile::lock(&db, Ownership::Shared) {
            Err(e @ StoreError::InUse { .. }) => {
                assert!(matches!(
                    e,
                    StoreError::InUse {
                        held_by: Some(Ownership::Exclusive),
                        ..
                    }
                ));
                assert!(e.to_string().contains("held exclusively"), "{e}");
            }
            other => panic!("a shared lock beside an exclusive one: {other:?}"),
        }
        drop(other);
        // In this process a second store of the file is refused whatever its mode, with how
        // the first holds it.
        let first = DatabaseFile::lock(&db, Ownership::Shared).unwrap();
        assert!(matches!(
            DatabaseFile::lock(&db, Ownership::Shared),
            Err(StoreError::InUse {
                held_by: Some(Ownership::Shared),
                ..
            })
        ));
        first.release();
        DatabaseFile::lock(&db, Ownership::Exclusive).unwrap();
    }

    #[test]
    fn a_deleted_or_replaced_file_fails_every_later_check() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let file = DatabaseFile::lock(&db, Ownership::Exclusive).unwrap();
        file.check().unwrap();
        file.check_recent().unwrap();
        // Moved away: the file keeps its name elsewhere; the path check finds it gone.
        std::fs::rename(&db, dir.path().join("moved.db")).unwrap();
        file.path_checked_at.store(0, Ordering::Relaxed);
        let err = file.check().unwrap_err().to_string();
        assert!(err.contains("was deleted (or moved away)"), "{err}");
        // Even once a file is back at the path: it is another file.
        std::fs::write(&db, b"").unwrap();
        assert!(file.check().is_err());
        assert!(file.check_recent().is_err());

        // Deleted: the descriptor's link count says so at once, whatever the path check.
        let other = dir.path().join("other.db");
        let file = DatabaseFile::lock(&other, Ownership::Exclusive).unwrap();
        file.check().unwrap();
        std::fs::remove_file(&other).unwrap();
        let err = file.check().unwrap_err().to_string();
        assert!(err.contains("was deleted"), "{err}");

        // Replaced by a rename over it.
        let third = dir.path().join("third.db");
        let file = DatabaseFile::lock(&third, Ownership::Exclusive).unwrap();
        std::fs::write(dir.path().join("new.db"), b"").unwrap();
        std::fs::rename(dir.path().join("new.db"), &third).unwrap();
        assert!(file.check().is_err());
    }
}
