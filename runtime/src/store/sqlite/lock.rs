//! The exclusive lock that makes one store the only user of a database file.
//!
//! SQLite's own locks let several processes share a file; the engine instead wants to know that
//! nobody else runs executions from it, so that leases left behind can be released at start-up.
//! The lock is an OS advisory lock on a sibling file, `<database>.lock`, held while the store is
//! open and released when the process ends, however it ends. The lock file itself stays.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::database_error;
use crate::store::StoreError;

/// Held for the lifetime of a store; dropping it releases the lock.
#[derive(Debug)]
pub(super) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock of the database at `db_path`, or fails at once if someone holds it.
    // `File::try_lock` is stable since Rust 1.89; the workspace's `rust-version` predates it.
    #[allow(clippy::incompatible_msrv)]
    pub(super) fn acquire(db_path: &Path) -> Result<FileLock, StoreError> {
        let path = lock_path(db_path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                database_error(format!("cannot open the lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(FileLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(database_error(format!(
                "database file {} is in use by another engine (its lock file {} is held)",
                db_path.display(),
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(database_error(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

/// `<database>.lock`, next to the database.
fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let first = FileLock::acquire(&db).unwrap();
        assert!(dir.path().join("jobs.db.lock").exists());
        let err = FileLock::acquire(&db).unwrap_err();
        assert!(
            err.to_string().contains("is in use by another engine"),
            "{err}"
        );
        drop(first);
        FileLock::acquire(&db).unwrap();
    }
}
