//! Syncs the write-ahead log after commits, off the writer's path ([`Synchronous::Full`]).
//!
//! With `PRAGMA synchronous = FULL`, SQLite syncs the log inside every `COMMIT`, and the writer
//! thread waits for the disk with every queued write behind it. Instead the write connection runs
//! with `NORMAL` (a commit is written to the log, not synced), and this thread syncs the log file
//! after the writer's commits and only then replies to their writes. While it waits for the
//! disk, the writer commits the next group; one sync serves every group committed before it
//! started.
//!
//! A write is acknowledged only once the log holding it is on disk, as with `FULL`. Readers may
//! see a commit a moment before it is synced; what a power loss can undo was never acknowledged.
//! The log is synced through a descriptor of its own: `fsync` makes a file's data durable
//! whichever descriptor wrote it.
//!
//! A failed sync is final. After it the kernel may have dropped the unsynced pages and a later
//! sync could succeed without them, so nothing written from then on can be vouched for: every
//! later write fails with the same error, without being run, until the store is reopened.
//!
//! [`Synchronous::Full`]: super::Synchronous::Full

use std::fs::File;
use std::path::Path;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;

use super::writer::WriteJob;
use crate::store::StoreError;

/// Writes committed by one group, waiting for the log to be synced.
pub(super) type Committed = Vec<Box<dyn WriteJob>>;

/// The sync thread. Stops, after replying to everything it was given, once stopped.
pub(super) struct Syncer {
    queue: mpsc::Sender<Committed>,
    thread: JoinHandle<()>,
    /// The error of the first failed sync, once there was one.
    failure: Arc<OnceLock<Arc<rusqlite::Error>>>,
    #[cfg(test)]
    pub(super) hold: Hold,
}

impl Syncer {
    /// Opens the log of the database at `db` (`<db>-wal`) and starts the thread.
    pub(super) fn start(db: &Path) -> Result<Syncer, StoreError> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        // The log exists once the migrations have written; `create` only spares a race with
        // nothing.
        let wal = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal)
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        let (queue, rx) = mpsc::channel::<Committed>();
        let hold = Hold::default();
        let held = hold.clone();
        let failure = Arc::new(OnceLock::new());
        let failed = Arc::clone(&failure);
        let thread = std::thread::Builder::new()
            .name("dj-sqlite-sync".into())
            .spawn(move || run(&wal, &rx, &held, &failed))
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        #[cfg(not(test))]
        let _ = hold;
        Ok(Syncer {
            queue,
            thread,
            failure,
            #[cfg(test)]
            hold,
        })
    }

    /// The error of the failed sync, once a sync failed: the writer then fails every write
    /// without running it.
    pub(super) fn failure(&self) -> Option<&Arc<rusqlite::Error>> {
        self.failure.get()
    }

    /// Replies to `committed` once the log is synced (or with the error if the sync failed).
    pub(super) fn sync_then_reply(&self, committed: Committed) {
        if let Err(mpsc::SendError(committed)) = self.queue.send(committed) {
            // The thread is gone (it panicked): nothing can vouch for these writes.
            let e = Arc::new(sync_error("the log sync thread stopped".to_owned()));
            for job in committed {
                job.finish(Some(&e));
            }
        }
    }

    /// Waits until every write handed over was replied to, then stops the thread.
    pub(super) fn stop(self) {
        drop(self.queue);
        if self.thread.join().is_err() {
            tracing::error!("the sqlite log sync thread panicked");
        }
    }
}

/// Lets a test hold syncs back (with a receiver installed, each sync first takes a message
/// from it) and make the next sync fail. Does nothing outside tests.
#[derive(Clone, Default)]
pub(super) struct Hold {
    #[cfg(test)]
    pub(super) permits: Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>,
    #[cfg(test)]
    pub(super) fail_next: Arc<std::sync::atomic::AtomicBool>,
}

impl Hold {
    fn wait(&self) {
        #[cfg(test)]
        if let Some(permits) = self
            .permits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = permits.recv();
        }
    }

    /// Syncs `wal`, or fails as told.
    fn sync(&self, wal: &File) -> std::io::Result<()> {
        #[cfg(test)]
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(std::io::Error::other("injected sync failure"));
        }
        wal.sync_data()
    }
}

fn run(
    wal: &File,
    queue: &mpsc::Receiver<Committed>,
    hold: &Hold,
    failure: &OnceLock<Arc<rusqlite::Error>>,
) {
    while let Ok(first) = queue.recv() {
        hold.wait();
        // Every group committed by now is in the log; one sync covers them all.
        let mut groups = vec![first];
        groups.extend(queue.try_iter());
        let failed = match failure.get() {
            // Groups the writer committed before it saw the failure: no later sync vouches
            // for them either.
            Some(e) => Some(e),
            None => match crate::metrics::log_sync(|| hold.sync(wal)) {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "syncing the write-ahead log failed; every later write will fail until the store is reopened"
                    );
                    let e = sync_error(format!("syncing the write-ahead log failed: {e}"));
                    Some(failure.get_or_init(|| Arc::new(e)))
                }
            },
        };
        for job in groups.into_iter().flatten() {
            job.finish(failed);
        }
    }
}

/// The error the writes of a group get when their commit could not be made durable.
fn sync_error(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some(message),
    )
}
