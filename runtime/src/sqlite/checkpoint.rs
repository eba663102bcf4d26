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

use std::cell::RefCell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
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
    /// What the WAL hook needs, until [`Checkpointer::attach`] hands it to the writer thread.
    hook: Option<HookState>,
}

/// The WAL hook's state: when to ask for a checkpoint, and how.
struct HookState {
    pacer: Pacer,
    /// One pending request is enough: a checkpoint covers every commit before it.
    wake: mpsc::SyncSender<()>,
}

thread_local! {
    /// The hook state of the writer connection that commits on this thread. rusqlite's WAL hook
    /// (in the releases whose `libsqlite3-sys` sqlx also accepts) is a plain function pointer,
    /// so its state lives with the thread that commits: each store's writer connection commits
    /// on a thread of its own.
    static HOOK: RefCell<Option<HookState>> = const { RefCell::new(None) };
}

impl Checkpointer {
    /// Starts the thread and installs on the writer connection `writer` a WAL hook that wakes
    /// it once [`attach`](Self::attach)ed to the thread that commits. This also turns off
    /// SQLite's automatic checkpoints on `writer`.
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
        let (wake, requests) = mpsc::sync_channel::<()>(1);
        writer.wal_hook(Some(after_commit));
        let thread = std::thread::Builder::new()
            .name("dj-sqlite-ckpt".into())
            .spawn(move || run(&conn, &requests))
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(Checkpointer {
            thread,
            hook: Some(HookState {
                pacer: Pacer::default(),
                wake,
            }),
        })
    }

    /// Hands the hook its state on the calling thread: the writer connection commits on this
    /// thread from now on.
    pub(super) fn attach(&mut self) {
        if let Some(hook) = self.hook.take() {
            HOOK.with_borrow_mut(|state| *state = Some(hook));
        }
    }

    /// Removes the hook from `writer` (dropping its state ends the thread) and waits for the
    /// thread, so that `writer` is the last connection and checkpoints the whole log when it
    /// closes. Called on the thread the hook was attached to.
    pub(super) fn stop(mut self, writer: &mut Connection) {
        writer.wal_hook(None);
        HOOK.with_borrow_mut(Option::take);
        self.hook = None;
        if self.thread.join().is_err() {
            tracing::error!("the sqlite checkpoint thread panicked");
        }
    }
}

/// The writer's WAL hook, called on the committing thread after each commit with the log's
/// size in pages.
fn after_commit(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    let pace = HOOK.with_borrow_mut(|state| {
        let state = state.as_mut()?;
        let pace = state.pacer.after_commit(pages);
        if pace == Pace::AskThread {
            let _ = state.wake.try_send(());
        }
        Some(pace)
    });
    if pace == Some(Pace::CheckpointHere) {
        match wal.checkpoint() {
            // The checkpoint thread is at it; the next commit tries again.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing the write-ahead log failed"),
            Ok(()) => {}
        }
    }
    Ok(())
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
        // Passive: copies what it can without waiting for the writer or readers.
        let checkpointed = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match checkpointed {
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
    use super::{Checkpointer, Pace, Pacer, CHECKPOINT_PAGES, WRITER_CHECKPOINT_PAGES};

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

    #[test]
    fn commits_on_the_attached_thread_wake_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; CREATE TABLE t (v BLOB);",
        )
        .unwrap();
        let mut checkpointer =
            Checkpointer::start(&mut conn, &path, std::time::Duration::from_secs(5)).unwrap();
        checkpointer.attach();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // One page of log per commit: past the size that asks the thread for a checkpoint.
        for _ in 0..(CHECKPOINT_PAGES + 200) {
            conn.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .unwrap();
        }
        // Automatic checkpoints are off, so only the thread copies pages into the database
        // file; `stop` waits for it to finish the request.
        checkpointer.stop(&mut conn);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after >= before + (page_size * i64::from(CHECKPOINT_PAGES) / 2) as u64,
            "the database file grew from {before} to {after} bytes"
        );
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
