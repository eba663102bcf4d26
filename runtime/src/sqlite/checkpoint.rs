//! WAL checkpoints on their own thread.
//!
//! SQLite normally checkpoints inside the `COMMIT` that makes the log reach 1,000 pages, on the
//! committing connection: the writer thread would copy pages and wait for fsyncs while every
//! queued write waits behind it. Instead the writer's WAL hook signals this thread, which runs
//! passive checkpoints (they never block the writer) on a connection of its own.
//!
//! The thread is asked again each time the log has grown by another [`CHECKPOINT_PAGES`], not
//! after every commit past that size: a checkpoint syncs the log and the database file, and
//! running them back to back cost more CPU than the writes themselves (30 us of checkpointing
//! per three-step run, against 3 us when paced by growth).
//!
//! Under sustained writes a passive checkpoint never catches up with the last commit, and the
//! log only starts over once a checkpoint has caught up. So when the log grows past
//! [`WRITER_CHECKPOINT_PAGES`] the writer checkpoints itself, between two transactions: most
//! pages were already copied by this thread, the rest is quick, and the next transaction starts
//! the log over.

use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use super::Context;
use crate::store::StoreError;

/// Log growth (in pages) after which a commit asks for a checkpoint; SQLite's default size.
const CHECKPOINT_PAGES: c_int = 1000;

/// Log size (in pages, 64 MiB with 4 KiB pages) from which the writer checkpoints itself.
const WRITER_CHECKPOINT_PAGES: c_int = 16 * CHECKPOINT_PAGES;

/// The checkpoint thread. Stops when the writer's WAL hook is removed (see
/// [`Checkpointer::stop`]).
pub(super) struct Checkpointer {
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread and hands the writer connection `writer` a WAL hook that wakes it. This
    /// also turns off SQLite's automatic checkpoints on `writer`.
    pub(super) fn start(
        writer: &mut Connection,
        path: &Path,
        busy_timeout: Duration,
    ) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).context("opening the checkpoint connection")?;
        conn.busy_timeout(busy_timeout)
            .context("setting busy_timeout")?;
        // Until it has read the database, a connection does not know the file is in WAL mode,
        // and checkpoints do nothing.
        conn.query_row("PRAGMA journal_mode", [], |_| Ok(()))
            .context("reading the journal mode")?;
        // One pending request is enough: a checkpoint covers every commit before it.
        let (wake, requests) = mpsc::sync_channel::<()>(1);
        let mut pacer = Pacer::default();
        writer
            .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
                match pacer.after_commit(pages) {
                    Pace::Nothing => {}
                    Pace::AskThread => {
                        let _ = wake.try_send(());
                    }
                    Pace::CheckpointHere => match wal.checkpoint() {
                        // The checkpoint thread is at it; the next commit tries again.
                        Err(e)
                            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "checkpointing the write-ahead log failed")
                        }
                        Ok(()) => {}
                    },
                }
                Ok(())
            }))
            .context("installing the WAL hook")?;
        let thread = std::thread::Builder::new()
            .name("dj-sqlite-ckpt".into())
            .spawn(move || run(&conn, &requests))
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(Checkpointer { thread })
    }

    /// Removes the hook from `writer` (which ends the thread) and waits for the thread, so that
    /// `writer` is the last connection and checkpoints the whole log when it closes.
    pub(super) fn stop(self, writer: &mut Connection) {
        if let Err(e) = writer.wal_hook(None::<fn(&mut Wal, c_int) -> rusqlite::Result<()>>) {
            tracing::warn!(error = %e, "removing the WAL hook failed");
        }
        if self.thread.join().is_err() {
            tracing::error!("the sqlite checkpoint thread panicked");
        }
    }
}

/// What a commit that left the log at a given size should do about checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    Nothing,
    /// Ask the checkpoint thread for a passive checkpoint.
    AskThread,
    /// Checkpoint on the writer's connection now, so the log can start over.
    CheckpointHere,
}

/// Decides, commit by commit, when the log has grown enough to be worth a checkpoint.
#[derive(Debug, Default)]
struct Pacer {
    /// Log size at the last request to the thread (0 after the log started over).
    asked_at: c_int,
}

impl Pacer {
    fn after_commit(&mut self, pages: c_int) -> Pace {
        if pages < self.asked_at {
            // The log started over.
            self.asked_at = 0;
        }
        if pages >= WRITER_CHECKPOINT_PAGES {
            Pace::CheckpointHere
        } else if pages >= self.asked_at + CHECKPOINT_PAGES {
            self.asked_at = pages;
            Pace::AskThread
        } else {
            Pace::Nothing
        }
    }
}

fn run(conn: &Connection, requests: &mpsc::Receiver<()>) {
    while requests.recv().is_ok() {
        let started = Instant::now();
        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, done)) => tracing::debug!(
                log,
                done,
                micros = started.elapsed().as_micros() as u64,
                "checkpointed the write-ahead log"
            ),
            Err(e) => tracing::warn!(error = %e, "checkpointing the write-ahead log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Context;
    use super::{Pace, Pacer, CHECKPOINT_PAGES, WRITER_CHECKPOINT_PAGES};

    #[test]
    fn the_thread_is_asked_once_per_growth_of_the_log_not_after_every_commit() {
        let mut pacer = Pacer::default();
        let mut asked = Vec::new();
        // A log growing by 7 pages a commit, to just below the writer's own threshold.
        for pages in (7..WRITER_CHECKPOINT_PAGES).step_by(7) {
            match pacer.after_commit(pages) {
                Pace::AskThread => asked.push(pages),
                Pace::Nothing => {}
                Pace::CheckpointHere => panic!("checkpointed on the writer at {pages} pages"),
            }
        }
        assert_eq!(
            asked.len() as i32,
            (WRITER_CHECKPOINT_PAGES - 1) / CHECKPOINT_PAGES,
            "{asked:?}"
        );
        for pair in asked.windows(2) {
            assert!(pair[1] - pair[0] >= CHECKPOINT_PAGES, "{asked:?}");
            assert!(pair[1] - pair[0] < CHECKPOINT_PAGES + 7, "{asked:?}");
        }
        assert_eq!(
            pacer.after_commit(WRITER_CHECKPOINT_PAGES),
            Pace::CheckpointHere
        );

        // Once the log starts over, the count starts over too.
        assert_eq!(pacer.after_commit(12), Pace::Nothing);
        assert_eq!(pacer.after_commit(CHECKPOINT_PAGES - 1), Pace::Nothing);
        assert_eq!(pacer.after_commit(CHECKPOINT_PAGES), Pace::AskThread);
        assert_eq!(pacer.after_commit(CHECKPOINT_PAGES + 5), Pace::Nothing);
    }
    use crate::store::{Backend, InstanceRecord, Write};
    use crate::time::Timestamp;

    #[tokio::test]
    async fn the_log_is_checkpointed_while_writing_and_removed_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("jobs.db-wal");
        let store = file_store(&dir);
        // About 2,500 pages of log: enough to ask for checkpoints.
        for chunk in 0..50 {
            let batch = (0..50)
                .map(|i| {
                    let mut record =
                        InstanceRecord::new(key(&format!("{chunk}-{i}")), Timestamp::EPOCH);
                    record.state = Some("x".repeat(3000));
                    Write::Insert(record)
                })
                .collect();
            store.commit(batch).await.unwrap();
        }
        let pages: i64 = store
            .write(|conn| {
                conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                    .context("pragma")
            })
            .await
            .unwrap();
        assert_eq!(pages, 0, "automatic checkpoints are off on the writer");
        store.close().await.unwrap();
        assert!(
            !wal.exists(),
            "the last connection checkpoints and removes the log"
        );

        let store = file_store(&dir);
        assert!(store.load(&key("49-49")).await.unwrap().is_some());
    }
}
