//! The writer thread: owns the write connection and commits queued writes in groups.
//!
//! The thread takes the first waiting write, then every other write already queued (up to
//! [`MAX_GROUP`]), and runs them in one `BEGIN IMMEDIATE` ... `COMMIT`. A write that fails gets
//! its own error and leaves nothing behind; the others commit. Replies are sent only after
//! `COMMIT` returned, so no caller sees a write that could still be rolled back. If the
//! transaction itself fails, every write of the group gets the error.
//!
//! With a [`Syncer`] (`Synchronous::Full`), a committed write is replied to once the log holding
//! it is synced, unless it was queued as *unsynced*: those are replied to at `COMMIT` (see
//! [`Writer::write`]).
//!
//! Writes run without savepoints first: a savepoint per write cost about a fifth of the writer's
//! time, and almost every write that fails does so before changing a row (a version check, an
//! insert that finds its key taken), which SQLite's own per-statement atomicity already covers.
//! A write that fails *after* changing rows is the rare case: the group is rolled back and run
//! again with a savepoint around each write, so that one write rolls back alone. Writes are
//! therefore `FnMut` and may run twice; they must only act on the connection.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::lock::DatabaseFile;
use super::syncer::Syncer;
use super::{database_error, shared_database_error};
use crate::store::StoreError;

/// Most writes committed in one transaction. Bounds the latency a group adds to its first write.
const MAX_GROUP: usize = 1024;

/// What the writer thread is asked to do.
enum Message {
    Write(Box<dyn WriteJob>),
    /// Only in memory, where the writer's connection is the only one.
    Read(Box<dyn ReadJob>),
    /// Finish the queued writes, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

/// A write with its reply channel, type-erased for the queue.
pub(super) trait WriteJob: Send {
    /// Runs the write and keeps its outcome; `true` if it succeeded. Runs again, replacing the
    /// outcome, when its group is replayed after a rollback.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Replies: the write's own outcome, or `group_error` if the group did not commit.
    fn finish(self: Box<Self>, group_error: Option<&Arc<rusqlite::Error>>);
    /// Whether the reply waits for the log sync, when there is a sync thread.
    fn synced(&self) -> bool;
}

trait ReadJob: Send {
    fn run(self: Box<Self>, conn: &Connection);
}

struct Job<T, F> {
    op: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Written<T, F>>,
    synced: bool,
}

/// A write's outcome, with the write itself: the caller's task drops what the write captured,
/// so memory goes back to the allocator of the thread that took it (a free from another thread
/// contends on that allocator's lock).
pub(super) struct Written<T, F> {
    pub(super) outcome: Result<T, StoreError>,
    /// Only dropped, by the receiver.
    _op: F,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = guarded(&mut self.op, conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn synced(&self) -> bool {
        self.synced
    }

    fn finish(self: Box<Self>, group_error: Option<&Arc<rusqlite::Error>>) {
        let Job {
            op, outcome, reply, ..
        } = *self;
        let outcome = match (outcome, group_error) {
            // A failed write was rolled back whatever happened to the group: its own error says
            // more.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(e)) => Err(shared_database_error(
                "committing a write group",
                Arc::clone(e),
            )),
            (None, None) => Err(database_error("a write was not run")),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = reply.send(Written { outcome, _op: op });
    }
}

/// A read queued to the writer thread (in memory only).
struct Read<T, F> {
    op: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> ReadJob for Read<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) {
        let _ = self.reply.send(guarded(self.op, conn));
    }
}

/// Runs `op`, turning a panic into an error so that one bad write cannot stop the thread.
fn guarded<T, F>(op: F, conn: &Connection) -> Result<T, StoreError>
where
    F: FnOnce(&Connection) -> Result<T, StoreError>,
{
    catch_unwind(AssertUnwindSafe(|| op(conn)))
        .unwrap_or_else(|_| Err(database_error("a store operation panicked")))
}

/// The handle of the writer thread.
pub(super) struct Writer {
    queue: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Groups committed or failed so far.
    #[cfg(test)]
    pub(super) groups: Arc<AtomicUsize>,
    /// Groups rolled back and run again with a savepoint per write.
    #[cfg(test)]
    pub(super) replays: Arc<AtomicUsize>,
    /// The syncer's hold, when there is a syncer.
    #[cfg(test)]
    sync_hold: Option<super::syncer::Hold>,
}

/// What the thread counts, for tests.
#[derive(Default)]
struct Counters {
    groups: Arc<AtomicUsize>,
    replays: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the thread that owns `conn` (and stops `checkpointer` before closing it). With a
    /// `syncer`, committed groups are replied to by it, once the log is synced. With the
    /// database `file`, a group is acknowledged only while the file is still at its path.
    pub(super) fn spawn(
        conn: Connection,
        checkpointer: Option<Checkpointer>,
        syncer: Option<Syncer>,
        file: Option<Arc<DatabaseFile>>,
    ) -> Result<Writer, StoreError> {
        let (queue, rx) = mpsc::channel();
        let counters = Counters::default();
        #[cfg(test)]
        let sync_hold = syncer.as_ref().map(|s| s.hold.clone());
        #[cfg(test)]
        let (groups, replays) = (Arc::clone(&counters.groups), Arc::clone(&counters.replays));
        let thread = std::thread::Builder::new()
            .name("dj-sqlite-write".into())
            .spawn(move || run(conn, checkpointer, syncer, file, rx, &counters))
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
            #[cfg(test)]
            groups,
            #[cfg(test)]
            replays,
            #[cfg(test)]
            sync_hold,
        })
    }

    /// The syncer's hold (with `Synchronous::Full` on a file).
    #[cfg(test)]
    pub(super) fn sync_hold(&self) -> &super::syncer::Hold {
        self.sync_hold.as_ref().expect("a store with a syncer")
    }

    /// Queues a write; `None` if the thread is gone. `op` may run twice (see the module docs).
    /// With a sync thread, the reply waits for the log sync if `synced`, and comes at `COMMIT`
    /// otherwise.
    pub(super) fn write<T, F>(
        &self,
        op: F,
        synced: bool,
    ) -> Option<oneshot::Receiver<Written<T, F>>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Job {
            op,
            outcome: None,
            reply,
            synced,
        });
        self.queue.send(Message::Write(job)).ok()?;
        Some(rx)
    }

    /// Queues a read, run between write groups; `None` if the thread is gone.
    pub(super) fn read<T, F>(&self, op: F) -> Option<oneshot::Receiver<Result<T, StoreError>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Read { op, reply });
        self.queue.send(Message::Read(job)).ok()?;
        Some(rx)
    }

    /// Asks the thread to finish the writes queued so far and stop. The receiver completes once
    /// the connection is closed; writes queued after this get [`StoreError::Closed`].
    pub(super) fn close(&self) -> Option<oneshot::Receiver<()>> {
        let (done, rx) = oneshot::channel();
        self.queue.send(Message::Close(done)).ok()?;
        Some(rx)
    }

    /// Waits for the thread to end (after [`close`](Self::close)). Blocks.
    pub(super) fn join(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the sqlite writer thread panicked");
            }
        }
    }
}

/// The thread's body: groups until asked to close or until every handle is gone.
fn run(
    mut conn: Connection,
    mut checkpointer: Option<Checkpointer>,
    syncer: Option<Syncer>,
    file: Option<Arc<DatabaseFile>>,
    queue: mpsc::Receiver<Message>,
    counters: &Counters,
) {
    let mut group: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_GROUP);
    let mut reads: Vec<Box<dyn ReadJob>> = Vec::new();
    let mut close_ack = None;
    if let Some(checkpointer) = &mut checkpointer {
        checkpointer.attach();
    }
    'serve: while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write(job) => group.push(job),
                Message::Read(job) => reads.push(job),
                Message::Close(ack) => {
                    close_ack = Some(ack);
                    break;
                }
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        let failed = syncer
            .as_ref()
            .and_then(Syncer::failure)
            .or_else(|| file.as_deref().and_then(DatabaseFile::lost))
            .cloned();
        if let Some(e) = failed {
            // The log could not be synced, or the file is gone: nothing written from now on
            // could be vouched for.
            for job in group.drain(..) {
                job.finish(Some(&e));
            }
        }
        if !group.is_empty() {
            commit_group(
                &conn,
                &mut group,
                syncer.as_ref(),
                file.as_deref(),
                counters,
            );
            counters.groups.fetch_add(1, Ordering::Relaxed);
        }
        // Outside any transaction, after the group: reads see committed data only.
        for read in reads.drain(..) {
            read.run(&conn);
        }
        if close_ack.is_some() {
            break 'serve;
        }
    }
    // Writes queued after the close request are dropped here; their callers get `Closed`.
    drop(queue);
    if let Some(syncer) = syncer {
        syncer.stop();
    }
    if let Some(checkpointer) = checkpointer {
        checkpointer.stop(&mut conn);
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the sqlite write connection failed");
    }
    if let Some(ack) = close_ack {
        let _ = ack.send(());
    }
}

/// Runs one group in one transaction and replies to every write in it, or has `syncer` reply
/// once the commit is synced. If the file is no longer at its path (see [`DatabaseFile`]), the
/// commit went to a file nobody will open again: every write of the group gets the error.
fn commit_group(
    conn: &Connection,
    group: &mut Vec<Box<dyn WriteJob>>,
    syncer: Option<&Syncer>,
    file: Option<&DatabaseFile>,
    counters: &Counters,
) {
    let started = Instant::now();
    let stopwatch = crate::metrics::Stopwatch::start();
    let outcome = match run_unguarded(conn, group) {
        Ok(Unguarded::Committed { failed }) => Ok(failed),
        Ok(Unguarded::RolledBack) => {
            counters.replays.fetch_add(1, Ordering::Relaxed);
            run_with_savepoints(conn, group)
        }
        Err(e) => Err(e),
    };
    let lost = match (&outcome, file) {
        (Ok(_), Some(file)) => file.check().err(),
        _ => None,
    };
    if let Some(e) = lost {
        for job in group.drain(..) {
            job.finish(Some(&e));
        }
        return;
    }
    match outcome {
        Ok(failed) => {
            tracing::debug!(
                size = group.len(),
                failed,
                micros = started.elapsed().as_micros() as u64,
                "committed a write group"
            );
            stopwatch.group_committed(group.len());
            match syncer {
                Some(syncer) => {
                    let (synced, unsynced): (Vec<_>, Vec<_>) =
                        group.drain(..).partition(|job| job.synced());
                    for job in unsynced {
                        job.finish(None);
                    }
                    if !synced.is_empty() {
                        syncer.sync_then_reply(synced);
                    }
                }
                None => {
                    for job in group.drain(..) {
                        job.finish(None);
                    }
                }
            }
        }
        Err(e) => {
            if !conn.is_autocommit() {
                if let Err(rollback) = exec(conn, "ROLLBACK") {
                    tracing::error!(error = %rollback, "rolling back a failed write group failed");
                }
            }
            tracing::warn!(size = group.len(), error = %e, "a write group failed to commit");
            let e = Arc::new(e);
            for job in group.drain(..) {
                job.finish(Some(&e));
            }
        }
    }
}

/// How a group run without savepoints ended.
enum Unguarded {
    /// Committed; `failed` writes failed without changing anything.
    Committed { failed: usize },
    /// A write failed after changing rows; the transaction was rolled back.
    RolledBack,
}

/// `BEGIN IMMEDIATE`, every write, `COMMIT`, with no savepoints. A write that fails without
/// having changed a row (SQLite's row-change count did not move: its statements that did run
/// changed nothing, and a failing statement undoes itself) is left out; one that fails after
/// changing rows rolls the group back. Writes are expected to change rows only, not the schema.
fn run_unguarded(
    conn: &Connection,
    group: &mut [Box<dyn WriteJob>],
) -> rusqlite::Result<Unguarded> {
    begin(conn)?;
    let mut failed = 0;
    for job in group.iter_mut() {
        let changes = conn.total_changes();
        let ok = job.run(conn);
        if conn.is_autocommit() {
            return Err(aborted("the group transaction ended inside a write"));
        }
        if !ok {
            if conn.total_changes() != changes {
                exec(conn, "ROLLBACK")?;
                return Ok(Unguarded::RolledBack);
            }
            failed += 1;
        }
    }
    exec(conn, "COMMIT")?;
    Ok(Unguarded::Committed { failed })
}

/// `BEGIN IMMEDIATE`, each write in a savepoint, `COMMIT`. Returns how many writes failed (and
/// were rolled back alone), or the error that stopped the whole group.
fn run_with_savepoints(
    conn: &Connection,
    group: &mut [Box<dyn WriteJob>],
) -> rusqlite::Result<usize> {
    begin(conn)?;
    let mut failed = 0;
    for job in group.iter_mut() {
        exec(conn, "SAVEPOINT write")?;
        let ok = job.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error), or the write
            // ended it: the earlier writes of the group are gone too.
            return Err(aborted("the group transaction ended inside a write"));
        }
        if !ok {
            failed += 1;
            exec(conn, "ROLLBACK TO write")?;
        }
        exec(conn, "RELEASE write")?;
    }
    exec(conn, "COMMIT")?;
    Ok(failed)
}

/// How many times a `BEGIN IMMEDIATE` refused with `SQLITE_BUSY` is tried again.
const BEGIN_ATTEMPTS: u32 = 12;

/// `BEGIN IMMEDIATE`, tried again with a growing pause while the database is busy. The busy
/// timeout already waits for another connection's write lock; with other processes on the file
/// (shared mode) `BEGIN` can still answer busy at once, when a connection finds the log being
/// reset or recovered by another process, and a group must not fail for that. The pauses sum
/// to about 1.5 s.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    let mut pause = std::time::Duration::from_millis(1);
    let mut attempt = 1;
    loop {
        match exec(conn, "BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < BEGIN_ATTEMPTS =>
            {
                tracing::debug!(attempt, "the database is busy; beginning the group again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs a statement without parameters or results, prepared once per connection.
fn exec(conn: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn aborted(message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(message.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Context, SqliteOptions, SqliteStore};
    use super::*;

    fn create_table(
        store: &SqliteStore,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> {
        store.write(|conn| {
            conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
                .context("create")
        })
    }

    /// Holds the writer thread inside a write until the returned sender is used.
    fn block_writer(
        store: &SqliteStore,
    ) -> (
        mpsc::Sender<()>,
        impl std::future::Future<Output = Result<(), StoreError>>,
    ) {
        let (release, wait) = mpsc::channel::<()>();
        // Waits on its first run only: a replay of its group runs it again.
        let mut wait = Some(wait);
        let blocked = store.write(move |_| {
            if let Some(wait) = wait.take() {
                let _ = wait.recv();
            }
            Ok(())
        });
        (release, blocked)
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Outcome {
        Commits,
        Refused,
        Panics,
    }

    fn outcome(n: i64) -> Outcome {
        match n {
            _ if n % 3 == 0 => Outcome::Refused,
            1 | 151 => Outcome::Panics,
            _ => Outcome::Commits,
        }
    }

    #[tokio::test]
    async fn a_failing_write_rolls_back_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        create_table(&store).await.unwrap();

        let (release, blocked) = block_writer(&store);
        let before = store.writer.groups.load(Ordering::Relaxed);
        // Queued while the writer is busy, so they commit as one group.
        let writes: Vec<_> = (0..300i64)
            .map(|n| {
                store.write(move |conn| {
                    conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
                        .context("insert")?;
                    match outcome(n) {
                        Outcome::Refused => Err(database_error(format!("write {n} refused"))),
                        Outcome::Panics => panic!("write {n} panicked"),
                        Outcome::Commits => Ok(n),
                    }
                })
            })
            .collect();
        release.send(()).unwrap();
        blocked.await.unwrap();
        for (n, write) in (0..300i64).zip(writes) {
            match (outcome(n), write.await) {
                (Outcome::Refused, Err(e)) => {
                    assert!(e.to_string().contains(&format!("write {n} refused")), "{e}")
                }
                (Outcome::Panics, Err(e)) => assert!(e.to_string().contains("panicked"), "{e}"),
                (Outcome::Commits, Ok(got)) => assert_eq!(got, n),
                (_, other) => panic!("write {n}: unexpected {other:?}"),
            }
        }
        // The blocker's group, then at most one more (the writer may have taken the blocker
        // after some writes were queued).
        assert!(store.writer.groups.load(Ordering::Relaxed) - before <= 2);
        // These writes fail after their insert: their group was replayed with savepoints.
        assert!(store.writer.replays.load(Ordering::Relaxed) >= 1);

        let stored: Vec<i64> = store
            .read(|conn| {
                let mut stmt = conn
                    .prepare("SELECT n FROM t ORDER BY n")
                    .context("prepare")?;
                let rows = stmt.query_map([], |r| r.get(0)).context("query")?;
                rows.collect::<rusqlite::Result<_>>().context("rows")
            })
            .await
            .unwrap();
        let expected: Vec<i64> = (0..300)
            .filter(|&n| outcome(n) == Outcome::Commits)
            .collect();
        assert_eq!(stored, expected);
    }

    /// A counter row and writes that add to it, so that a write applied twice shows.
    async fn counter_store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let store = file_store(dir);
        store
            .write(|conn| {
                conn.execute_batch(
                    "CREATE TABLE counter (n INTEGER NOT NULL);
                     INSERT INTO counter (n) VALUES (0);
                     CREATE TABLE t (n INTEGER PRIMARY KEY);",
                )
                .context("create")
            })
            .await
            .unwrap();
        store
    }

    async fn counter(store: &SqliteStore) -> i64 {
        store
            .read(|conn| {
                conn.query_row("SELECT n FROM counter", [], |r| r.get(0))
                    .context("count")
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn writes_that_fail_before_changing_a_row_are_left_out_without_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = counter_store(&dir).await;
        store
            .write(|conn| {
                conn.execute("INSERT INTO t (n) VALUES (7)", [])
                    .context("insert")
            })
            .await
            .unwrap();

        let (release, blocked) = block_writer(&store);
        let writes: Vec<_> = (0..100i64)
            .map(|i| {
                store.write(move |conn| {
                    if i % 4 == 0 {
                        // Finds its key taken and changes nothing, as the store's version and
                        // insert checks do.
                        let inserted = conn
                            .execute("INSERT INTO t (n) VALUES (7) ON CONFLICT DO NOTHING", [])
                            .context("insert")?;
                        if inserted == 0 {
                            return Err(database_error(format!("write {i}: key taken")));
                        }
                    }
                    if i % 4 == 1 {
                        // A failing statement undoes itself.
                        conn.execute("INSERT INTO t (n) VALUES (7)", [])
                            .context("insert")?;
                    }
                    conn.execute("UPDATE counter SET n = n + 1", [])
                        .context("count")
                })
            })
            .collect();
        release.send(()).unwrap();
        blocked.await.unwrap();
        let mut failed = 0;
        for (i, write) in (0..100i64).zip(writes) {
            match write.await {
                Ok(_) => assert!(i % 4 > 1, "write {i} should have failed"),
                Err(_) => {
                    assert!(i % 4 <= 1, "write {i} should have committed");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 50);
        assert_eq!(counter(&store).await, 50);
        assert_eq!(store.writer.replays.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_replayed_group_applies_each_committed_write_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = counter_store(&dir).await;
        let (release, blocked) = block_writer(&store);
        let writes: Vec<_> = (0..60i64)
            .map(|i| {
                store.write(move |conn| {
                    conn.execute("UPDATE counter SET n = n + 1", [])
                        .context("count")?;
                    if i == 20 || i == 41 {
                        return Err(database_error(format!(
                            "write {i} refused after its update"
                        )));
                    }
                    Ok(i)
                })
            })
            .collect();
        release.send(()).unwrap();
        blocked.await.unwrap();
        for (i, write) in (0..60i64).zip(writes) {
            match (i, write.await) {
                (20 | 41, Err(e)) => assert!(e.to_string().contains("refused"), "{e}"),
                (_, Ok(got)) => assert_eq!(got, i),
                (_, other) => panic!("write {i}: unexpected {other:?}"),
            }
        }
        assert_eq!(counter(&store).await, 58);
        assert!(store.writer.replays.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_write_of_the_group() {
        // In memory, reads run on the writer's connection outside any transaction, where the
        // foreign_keys pragma takes effect.
        let store = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        store
            .read(|conn| {
                conn.execute_batch("PRAGMA foreign_keys = ON")
                    .context("pragma")
            })
            .await
            .unwrap();
        store
            .write(|conn| {
                conn.execute_batch(
                    "CREATE TABLE parent (id INTEGER PRIMARY KEY);
                     CREATE TABLE child (id INTEGER PRIMARY KEY,
                        parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
                )
                .context("create")
            })
            .await
            .unwrap();

        let (release, blocked) = block_writer(&store);
        let fine = store.write(|conn| {
            conn.execute("INSERT INTO parent (id) VALUES (1)", [])
                .context("insert")
        });
        // Checked only at COMMIT, which it makes fail.
        let orphan = store.write(|conn| {
            conn.execute("INSERT INTO child (id, parent) VALUES (1, 42)", [])
                .context("insert")
        });
        release.send(()).unwrap();
        let _ = blocked.await;
        let fine = fine.await;
        let orphan = orphan.await;
        assert!(matches!(&fine, Err(StoreError::Database(_))), "{fine:?}");
        assert!(fine
            .unwrap_err()
            .to_string()
            .contains("committing a write group"));
        assert!(matches!(orphan, Err(StoreError::Database(_))));

        let parents: i64 = store
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM parent", [], |r| r.get(0))
                    .context("count")
            })
            .await
            .unwrap();
        assert_eq!(parents, 0);
        // The writer goes on.
        store
            .write(|conn| {
                conn.execute("INSERT INTO parent (id) VALUES (1)", [])
                    .context("insert")
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn in_memory_reads_never_see_uncommitted_group_data() {
        let store = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        create_table(&store).await.unwrap();
        let (release, blocked) = block_writer(&store);
        let write = store.write(|conn| {
            conn.execute("INSERT INTO t (n) VALUES (1)", [])
                .context("insert")
        });
        let read = store.read(|conn| {
            assert!(
                conn.is_autocommit(),
                "reads run outside the group transaction"
            );
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .context("count")
        });
        release.send(()).unwrap();
        blocked.await.unwrap();
        write.await.unwrap();
        assert_eq!(read.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn writes_apply_in_call_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE log (seq INTEGER PRIMARY KEY, n INTEGER)")
                    .context("create")
            })
            .await
            .unwrap();
        let writes: Vec<_> = (0..50i64)
            .map(|n| {
                store.write(move |conn| {
                    conn.execute("INSERT INTO log (n) VALUES (?1)", [n])
                        .context("insert")
                })
            })
            .collect();
        for w in writes {
            w.await.unwrap();
        }
        let order: Vec<i64> = store
            .read(|conn| {
                let mut stmt = conn
                    .prepare("SELECT n FROM log ORDER BY seq")
                    .context("prepare")?;
                let rows = stmt.query_map([], |r| r.get(0)).context("query")?;
                rows.collect::<rusqlite::Result<_>>().context("rows")
            })
            .await
            .unwrap();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }
}
