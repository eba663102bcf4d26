//! The embedded SQLite backend.
//!
//! One file holds every instance, alarm, event id and outbox row. By default the store owns the
//! file: it takes an exclusive OS lock on the database file itself for its lifetime, so no other
//! engine can use the same database at the same time, whatever path it is reached by, and
//! leases left by a crashed process can be released at start-up ([`Backend::recover`]). In
//! [shared mode](SqliteOptions::shared) it takes a shared lock instead: several processes of one
//! host open the file together, each running the same jobs with durable leases, and none opens
//! it beside an exclusive store. If the file is deleted or replaced under the store, the next
//! write fails instead of being acknowledged (see the lock module).
//!
//! Writes go to one dedicated thread that owns the write connection. It takes every write
//! waiting in its queue and runs them in one transaction (group commit): one commit, and with
//! [`Synchronous::Full`] one fsync (made by a sync thread while the writer goes on), serves many
//! writes, and a write that fails rolls back alone (see the writer module for how, without a
//! savepoint per write). Reads run on a small pool of read-only connections and see committed
//! data only. WAL checkpoints run on a thread of their own, off the writer's path.

mod builder;
mod checkpoint;
mod instances;
mod lock;
pub(crate) mod migrations;
mod outbox;
mod readers;
pub(crate) mod runs;
// The step runtime's tests, on this store: they read and write its tables directly.
#[cfg(test)]
mod step_tests;
mod syncer;
mod writer;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::id::{InstanceKey, JobKind};
use crate::store::{
    AlarmScan, Backend, BoxFuture, Durability, InstanceCounts, InstanceQuery, InstanceRecord,
    OutboxEntry, Ownership, Store, StoreError, UnregisteredJob, WriteBatch,
};
use crate::time::Timestamp;

use checkpoint::Checkpointer;
use lock::DatabaseFile;
use readers::Readers;
use syncer::Syncer;
use writer::Writer;

/// How hard SQLite works to make a commit survive a power loss.
///
/// Either way a commit survives a crash of the process; the modes differ on a crash of the
/// machine.
///
/// # Examples
///
/// ```
/// use durable_jobs::sqlite::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::file("jobs.db").synchronous(Synchronous::Full);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: the log is synced at checkpoints, not at every commit. A
    /// power loss can undo the last commits, never corrupt the file. The default.
    #[default]
    Normal,
    /// Every write is acknowledged only after the log holding it is synced, as with `PRAGMA
    /// synchronous = FULL`. The sync runs on a thread of its own: while it waits for the disk,
    /// the writer commits the next group, and one sync serves every group committed before it
    /// started. Readers may see a commit a moment before it is synced; a power loss can undo
    /// only what was never acknowledged. A failed sync is final: that write and every later
    /// one fail with a storage error until the store is reopened. (The step worker's own
    /// claims of runs are answered at commit: a claim a power loss undoes leaves its run
    /// pending, to run after the restart.)
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Where the SQLite store keeps its data and how it opens it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::sqlite::{SqliteOptions, Synchronous};
///
/// let on_disk = SqliteOptions::file("/var/lib/my-service/jobs.db")
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(10));
/// assert!(on_disk.path().is_some());
///
/// let for_tests = SqliteOptions::in_memory();
/// assert!(for_tests.path().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    path: Option<PathBuf>,
    ownership: Ownership,
    synchronous: Synchronous,
    busy_timeout: Duration,
    readers: usize,
    poll_interval: Duration,
}

impl SqliteOptions {
    /// A database in the file at `path`, created if missing. Its directory must exist.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: Some(path.into()),
            ..Self::in_memory()
        }
    }

    /// A private database in memory, gone when the store closes. For tests and examples.
    pub fn in_memory() -> Self {
        SqliteOptions {
            path: None,
            ownership: Ownership::Exclusive,
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            poll_interval: crate::store::DEFAULT_POLL_INTERVAL,
        }
    }

    /// How commits are synced to disk (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The log file to sync off the writer's path, when [`Synchronous::Full`] is asked of a
    /// file: the writer then commits under `NORMAL` and the sync thread does the syncing.
    fn log_synced_off_thread(&self) -> Option<&Path> {
        match (&self.path, self.synchronous) {
            (Some(path), Synchronous::Full) => Some(path),
            _ => None,
        }
    }

    /// How long a connection waits for a lock held by another connection before failing
    /// (default 5 s). Checkpoints and readers can hold such locks briefly.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The most read-only connections open at once (default 4, at least 1). Unused with
    /// [`in_memory`](Self::in_memory), where the one connection serves reads too.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Opens the file in shared mode: several processes on this host may open it at once,
    /// each with its own engine running the same jobs (a pre-fork server, containers sharing a
    /// volume, a command-line tool beside a running service). The store takes a shared lock
    /// on the file, so it opens beside other shared stores and refuses (and is refused by) an
    /// exclusive one ([`StoreError::InUse`]), and answers [`Ownership::Shared`]: every
    /// execution claims its instance with a durable lease, renewed while it runs, that
    /// another process takes over once it lapses; nothing is cached; nothing is released at
    /// start. Work another process makes due is found within
    /// [`shared_poll_interval`](Self::shared_poll_interval). See `docs/shared-sqlite.md`.
    ///
    /// # Examples
    ///
    /// ```
    /// use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
    /// use durable_jobs::store::{Ownership, Store};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db")).shared())?;
    /// assert_eq!(store.ownership(), Ownership::Shared);
    /// # Ok::<(), durable_jobs::store::StoreError>(())
    /// ```
    pub fn shared(self) -> Self {
        self.ownership(Ownership::Shared)
    }

    /// With [`shared`](Self::shared): how often the engine looks for alarms and step runs that
    /// other processes made due, and for the ends of runs it waits for (default 100 ms). Each
    /// look is one indexed read (and a claim attempt for step runs). Its own writes wake the
    /// engine at once, as in exclusive mode. Unused by an exclusive store, which has no other
    /// writer.
    pub fn shared_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// What the store answers to [`Store::ownership`] (default [`Ownership::Exclusive`]; see
    /// [`shared`](Self::shared)).
    pub fn ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }
}

/// The embedded SQLite store: a [`Store`] in one file (or in memory).
///
/// Open it once per database and process. By default a second open of the same file, from this
/// process or another, fails until the first store is closed; in
/// [shared mode](SqliteOptions::shared) other processes' shared stores open beside it. Closing (explicitly, or by dropping the last handle)
/// finishes the queued writes and releases the file.
///
/// # Examples
///
/// ```
/// use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
/// use durable_jobs::store::Backend;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), durable_jobs::store::StoreError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db")))?;
/// assert!(store.outbox_peek(10).await?.is_empty());
///
/// // The file is ours until the store is closed.
/// assert!(SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).is_err());
/// store.close().await?;
/// assert!(SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).is_ok());
/// # Ok(())
/// # }
/// ```
pub struct SqliteStore {
    path: Option<PathBuf>,
    /// What [`Store::ownership`] answers.
    ownership: Ownership,
    writer: Writer,
    /// Read-only connections; `None` in memory, where reads go through the writer thread.
    readers: Option<Arc<Readers>>,
    /// Whether a sync thread syncs the log before writes are acknowledged.
    log_synced_before_reply: bool,
    /// How often a shared store's engine looks for other processes' work.
    poll_interval: Duration,
    closed: AtomicBool,
    /// The file, locked from open to close and checked to be still in place; `None` in memory.
    file: Option<Arc<DatabaseFile>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, takes the file lock, applies missing migrations
    /// and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::InUse`] when the file is held by another store that excludes this one
    /// (through this path or any other: a symbolic link, a hard link); [`StoreError::Database`]
    /// when it cannot be opened or
    /// switched to WAL mode, or was written by a newer version of this crate (its schema version
    /// is unknown here).
    pub fn open(options: SqliteOptions) -> Result<Arc<SqliteStore>, StoreError> {
        let file = match &options.path {
            Some(path) => Some(Arc::new(DatabaseFile::lock(path, options.ownership)?)),
            None => None,
        };
        // The file is opened by its canonical path, the one SQLite derives its log's name from.
        let canonical = file.as_ref().map(|f| f.path().to_owned());
        let mut conn = match &canonical {
            Some(path) => {
                Connection::open(path).context_with(|| format!("opening {}", path.display()))?
            }
            None => Connection::open_in_memory().context("opening an in-memory database")?,
        };
        migrations::check_ownership(&conn)?;
        configure_writer(&conn, &options)?;
        migrations::apply(&mut conn, migrations::MIGRATIONS, Timestamp::now_system())?;
        let checkpointer = match &canonical {
            Some(path) => Some(Checkpointer::start(&mut conn, path, options.busy_timeout)?),
            None => None,
        };
        let syncer = match (&canonical, options.log_synced_off_thread()) {
            (Some(path), Some(_)) => Some(Syncer::start(path)?),
            _ => None,
        };
        let log_synced_before_reply = syncer.is_some();
        let writer = Writer::spawn(conn, checkpointer, syncer, file.clone())?;
        let readers = match (canonical, &file) {
            (Some(path), Some(file)) => Some(Arc::new(Readers::new(
                path,
                options.busy_timeout,
                options.readers,
                Arc::clone(file),
            ))),
            _ => None,
        };
        Ok(Arc::new(SqliteStore {
            ownership: options.ownership,
            poll_interval: options.poll_interval,
            path: options.path,
            writer,
            readers,
            log_synced_before_reply,
            closed: AtomicBool::new(false),
            file,
        }))
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes the store without an async runtime, for `Drop` impls: stops accepting work,
    /// waits for the writer thread to finish the queued writes, closes the connections and
    /// releases the file lock. Blocks the calling thread meanwhile. Does nothing if the store
    /// is already closed.
    pub fn close_blocking(&self) {
        // Every step is idempotent, so this also finishes a `close` whose future was dropped.
        self.closed.store(true, Ordering::Release);
        if let Some(readers) = &self.readers {
            readers.close();
        }
        // The acknowledgement is not awaited: joining the thread waits for the same thing.
        drop(self.writer.close());
        self.writer.join();
        self.release_lock();
    }

    /// Runs `op` on the write connection, inside the transaction of a write group: if `op` fails
    /// (or panics), what it wrote is rolled back and the other writes of the group commit. The
    /// result is returned after the group committed; if the commit fails, the error is returned
    /// instead.
    ///
    /// `op` may run twice: when another write of its group fails after changing rows, the group
    /// is rolled back and run again (see the writer's module docs). It must act on the
    /// connection only, and change rows, not the schema.
    ///
    /// Writes are queued (and applied) in the order of the calls to `write`, when it is called,
    /// not when the future is first polled. Dropping the future does not cancel the write.
    pub(crate) fn write<T, F>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(op, true)
    }

    /// As [`write`](Self::write), but with [`Synchronous::Full`] the result comes once the group
    /// committed, without waiting for the log sync. For writes that a power loss may undo
    /// without undoing anything a caller was told: a step run's claim, whose run would then be
    /// pending again and claimed after the restart, as after any crash. Every later synced
    /// write (the run's first step, its completion) is acknowledged only after a sync that
    /// covers the claim too: the log is synced in order.
    pub(crate) fn write_unsynced<T, F>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(op, false)
    }

    fn write_with<T, F>(
        &self,
        op: F,
        synced: bool,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let queued = if self.closed.load(Ordering::Acquire) {
            None
        } else {
            self.writer.write(op, synced)
        };
        async move {
            match queued {
                Some(reply) => reply.await.map_or(Err(StoreError::Closed), |w| w.outcome),
                None => Err(StoreError::Closed),
            }
        }
    }

    /// Runs `op` on a read-only connection that sees committed data only. Each statement sees
    /// the latest commit; `op` opens a transaction itself if it needs one snapshot across
    /// statements. In memory, `op` runs on the writer thread between write groups.
    pub(crate) fn read<T, F>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        enum Route<T, F> {
            Pool(Arc<Readers>, F),
            Writer(tokio::sync::oneshot::Receiver<Result<T, StoreError>>),
            Closed,
        }
        let route = match &self.readers {
            _ if self.closed.load(Ordering::Acquire) => Route::Closed,
            Some(readers) => Route::Pool(Arc::clone(readers), op),
            None => self.writer.read(op).map_or(Route::Closed, Route::Writer),
        };
        async move {
            match route {
                Route::Pool(readers, op) => readers.run(op).await,
                Route::Writer(reply) => reply.await.unwrap_or(Err(StoreError::Closed)),
                Route::Closed => Err(StoreError::Closed),
            }
        }
    }

    /// Releases the file lock; only once every connection to the file is closed.
    fn release_lock(&self) {
        if let Some(file) = &self.file {
            file.release();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close_blocking();
    }
}

/// Pragmas of the write connection. WAL persists in the file, so readers inherit it.
fn configure_writer(conn: &Connection, options: &SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout)
        .context("setting busy_timeout")?;
    conn.set_prepared_statement_cache_capacity(128);
    if options.path.is_some() {
        let mode = switch_to_wal(conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(database_error(format!(
                "the database could not be switched to WAL mode (journal_mode is {mode})"
            )));
        }
    }
    let synchronous = match options.log_synced_off_thread() {
        Some(_) => Synchronous::Normal,
        None => options.synchronous,
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;",
        synchronous.pragma_value()
    ))
    .context("setting pragmas")?;
    Ok(())
}

/// Switches the file to WAL mode (a no-op once it is). Switching a new file needs it alone for a
/// moment, and SQLite answers busy at once, without waiting, when another process opening the
/// same file in shared mode holds it meanwhile: tried again with a growing pause, about 3 s in
/// all.
fn switch_to_wal(conn: &Connection) -> Result<String, StoreError> {
    let mut pause = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && waited < Duration::from_secs(3) =>
            {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other.context("switching to WAL mode"),
        }
    }
}

/// Opens a read-only connection to the file.
fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .context_with(|| format!("opening a reader of {}", path.display()))?;
    conn.busy_timeout(busy_timeout)
        .context("setting busy_timeout")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Backend for SqliteStore {
    fn verify(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match &self.file {
            Some(file) => file
                .check_recent()
                .map_err(|e| shared_database_error("checking the database file", e)),
            None => Ok(()),
        }
    }

    fn durability(&self) -> BoxFuture<'_, Result<Option<Durability>, StoreError>> {
        let log_synced_before_reply = self.log_synced_before_reply;
        // Through the writer: the pragmas of the connection that commits.
        Box::pin(self.write(move |conn| {
            let journal_mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .context("reading journal_mode")?;
            let level: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .context("reading synchronous")?;
            let connection_synchronous = match level {
                0 => "OFF".to_owned(),
                1 => "NORMAL".to_owned(),
                2 => "FULL".to_owned(),
                3 => "EXTRA".to_owned(),
                other => other.to_string(),
            };
            Ok(Some(Durability {
                journal_mode: journal_mode.to_ascii_lowercase(),
                connection_synchronous,
                log_synced_before_reply,
            }))
        }))
    }

    fn load<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        let key = key.clone();
        Box::pin(self.read(move |conn| instances::load(conn, &key)))
    }

    fn has_event_id<'a>(
        &'a self,
        key: &'a InstanceKey,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let key = key.clone();
        let event_id = event_id.to_owned();
        Box::pin(self.read(move |conn| instances::has_event_id(conn, &key, &event_id)))
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        if batch.is_empty() {
            let result = if self.closed.load(Ordering::Acquire) {
                Err(StoreError::Closed)
            } else {
                Ok(())
            };
            return Box::pin(std::future::ready(result));
        }
        Box::pin(self.write(move |conn| instances::apply_batch(conn, &batch)))
    }

    fn claim_alarm<'a>(
        &'a self,
        key: &'a InstanceKey,
        now: Timestamp,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        let key = key.clone();
        let owner = owner.to_owned();
        Box::pin(
            self.write(move |conn| instances::claim_alarm(conn, &key, now, &owner, lease_until)),
        )
    }

    fn claim_instance<'a>(
        &'a self,
        key: &'a InstanceKey,
        expected_version: u64,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        let key = key.clone();
        let owner = owner.to_owned();
        Box::pin(self.write(move |conn| {
            instances::claim_instance(conn, &key, expected_version, &owner, lease_until)
        }))
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.write(move |conn| instances::renew_leases(conn, &owner, lease_until)))
    }

    fn scan_alarms<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        jobs: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<AlarmScan, StoreError>> {
        let jobs = jobs.to_vec();
        Box::pin(self.read(move |conn| instances::scan_alarms(conn, now, limit, &jobs)))
    }

    fn load_broken<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InstanceRecord>, StoreError>> {
        let job = job.to_owned();
        Box::pin(self.read(move |conn| instances::load_broken(conn, kind, &job)))
    }

    fn unregistered_jobs<'a>(
        &'a self,
        registered: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<Vec<UnregisteredJob>, StoreError>> {
        let registered = registered.to_vec();
        Box::pin(self.read(move |conn| instances::unregistered_jobs(conn, &registered)))
    }

    fn pull_alarms_to<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let job = job.to_owned();
        Box::pin(self.write(move |conn| instances::pull_alarms_to(conn, kind, &job, at)))
    }

    fn list_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, Result<Vec<InstanceRecord>, StoreError>> {
        Box::pin(self.read(move |conn| instances::list_instances(conn, &query)))
    }

    fn instance_keys(
        &self,
        after: Option<InstanceKey>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<InstanceKey>, StoreError>> {
        Box::pin(self.read(move |conn| instances::instance_keys(conn, after.as_ref(), limit)))
    }

    fn count_instances(
        &self,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<InstanceCounts>, StoreError>> {
        Box::pin(self.read(move |conn| instances::count_instances(conn, now)))
    }

    fn recover(&self, owner: &str, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.write(move |conn| {
            let released = instances::release_all_leases(conn, now)?;
            if released > 0 {
                tracing::info!(
                    owner,
                    released,
                    "released the leases of interrupted executions; their alarms fire now"
                );
            }
            Ok(())
        }))
    }

    fn outbox_peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(self.read(move |conn| outbox::peek(conn, limit)))
    }

    fn outbox_ack(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| outbox::ack(conn, seq)))
    }

    fn prune_event_ids(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |conn| instances::prune_event_ids(conn, before, limit)))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Every step is idempotent: a second close (or one after a dropped close) finishes
            // the job and returns once the store is closed.
            self.closed.store(true, Ordering::Release);
            if let Some(readers) = &self.readers {
                readers.close_and_wait().await;
            }
            if let Some(done) = self.writer.close() {
                // Sent after the queued writes committed and the connection closed.
                let _ = done.await;
            }
            // The thread has nothing left to do but return.
            self.writer.join();
            self.release_lock();
            Ok(())
        })
    }
}

impl Store for SqliteStore {
    fn ownership(&self) -> Ownership {
        self.ownership
    }

    fn poll_interval(&self) -> Option<Duration> {
        // The WAL's own change counter (`PRAGMA data_version`) would tell a connection that
        // another wrote, but only when asked: it is itself a poll, and the indexed scan the
        // engine makes instead costs about as much.
        (self.ownership == Ownership::Shared).then_some(self.poll_interval)
    }

    fn close_blocking(&self) {
        SqliteStore::close_blocking(self);
    }
}

/// A database failure with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("sqlite: {context}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub(crate) struct SqliteError {
    context: Cow<'static, str>,
    #[source]
    source: Option<Arc<rusqlite::Error>>,
}

/// A [`StoreError::Database`] with a message and no underlying SQLite error.
pub(crate) fn database_error(message: impl Into<Cow<'static, str>>) -> StoreError {
    StoreError::Database(Box::new(SqliteError {
        context: message.into(),
        source: None,
    }))
}

/// A [`StoreError::Database`] for `source`, which several callers may share.
pub(crate) fn shared_database_error(
    context: impl Into<Cow<'static, str>>,
    source: Arc<rusqlite::Error>,
) -> StoreError {
    StoreError::Database(Box::new(SqliteError {
        context: context.into(),
        source: Some(source),
    }))
}

/// Adds what the store was doing to a rusqlite error.
pub(crate) trait Context<T> {
    /// Maps the error to [`StoreError::Database`] with `context`.
    fn context(self, context: &'static str) -> Result<T, StoreError>;
    /// As [`context`](Self::context), computing the message only on error.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| shared_database_error(context, Arc::new(e)))
    }

    fn context_with(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| shared_database_error(context(), Arc::new(e)))
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_millis()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Timestamp::from_millis)
    }
}

impl ToSql for JobKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        JobKind::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown job kind {name:?}").into()))
    }
}

/// Counters are `u64` in Rust and `INTEGER` (i64) in SQLite; no counter gets near the limit.
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`u64_to_sql`]; negative values (never written) read as 0.
pub(crate) fn u64_from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `usize` limits as SQL `LIMIT` values.
pub(crate) fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The store contract, on a file in each ownership.
#[cfg(test)]
mod conformance {
    use super::*;

    fn open(ownership: Ownership) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SqliteOptions::file(dir.path().join("jobs.db")).ownership(ownership);
        let store: Arc<dyn Store> = SqliteStore::open(options).expect("open");
        (dir, store)
    }

    mod exclusive {
        crate::store::conformance::conformance_tests!(super::open(
            crate::store::Ownership::Exclusive
        ));
    }

    mod shared {
        crate::store::conformance::conformance_tests!(super::open(crate::store::Ownership::Shared));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn key(id: &str) -> InstanceKey {
        InstanceKey::new(JobKind::Task, "job", id)
    }

    pub(crate) fn file_store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).expect("open")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::store::{Lease, Write};

    #[tokio::test]
    async fn data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = InstanceRecord::new(key("a"), Timestamp::from_millis(5));
        record.state = Some("{\"n\":1}".into());
        record.lease = Some(Lease {
            owner: "me".into(),
            until: Timestamp::from_millis(9),
        });

        let store = file_store(&dir);
        store
            .commit(vec![
                Write::Insert(record.clone()),
                Write::Outbox(vec!["{}".into()]),
            ])
            .await
            .unwrap();
        store.close().await.unwrap();

        let store = file_store(&dir);
        assert_eq!(store.load(&key("a")).await.unwrap(), Some(record));
        assert_eq!(store.outbox_peek(10).await.unwrap().len(), 1);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn durability_is_read_from_the_write_connection() {
        let dir = tempfile::tempdir().unwrap();
        let normal = file_store(&dir);
        let d = normal.durability().await.unwrap().unwrap();
        assert_eq!(
            (
                d.journal_mode.as_str(),
                d.synchronous(),
                d.log_synced_before_reply
            ),
            ("wal", "NORMAL", false)
        );
        normal.close().await.unwrap();

        // FULL on a file: the connection commits under NORMAL, the sync thread makes it FULL.
        let full = SqliteStore::open(
            SqliteOptions::file(dir.path().join("jobs.db")).synchronous(Synchronous::Full),
        )
        .unwrap();
        let d = full.durability().await.unwrap().unwrap();
        assert_eq!(d.connection_synchronous, "NORMAL");
        assert_eq!((d.journal_mode.as_str(), d.synchronous()), ("wal", "FULL"));
        full.close().await.unwrap();

        let memory =
            SqliteStore::open(SqliteOptions::in_memory().synchronous(Synchronous::Full)).unwrap();
        let d = memory.durability().await.unwrap().unwrap();
        assert_eq!(
            (d.journal_mode.as_str(), d.synchronous()),
            ("memory", "FULL")
        );
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_fails_until_the_first_store_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let first = file_store(&dir);
        let err = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).unwrap_err();
        assert!(matches!(
            err,
            StoreError::InUse {
                held_by: Some(Ownership::Exclusive),
                ..
            }
        ));
        assert!(
            err.to_string().contains("is in use by another engine"),
            "{err}"
        );

        first.close().await.unwrap();
        let second = file_store(&dir);
        second.close().await.unwrap();
    }

    #[test]
    fn close_blocking_releases_the_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = file_store(&dir);
        first.close_blocking();
        let second = file_store(&dir);
        drop(second); // dropping the last handle closes too
        let third = file_store(&dir);
        third.close_blocking();
        third.close_blocking();
    }

    #[tokio::test]
    async fn concurrent_and_interrupted_closes_still_release_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let (a, b) = tokio::join!(store.close(), store.close());
        a.unwrap();
        b.unwrap();
        let store = file_store(&dir);

        // A close polled once, then dropped, perhaps half-way.
        let _ = tokio::time::timeout(std::time::Duration::ZERO, store.close()).await;
        store.close_blocking();
        let store = file_store(&dir);
        store.close().await.unwrap();
    }

    /// On a file, the conformance suite checks this (`a_closed_store_refuses_everything`); an
    /// in-memory store, which has no reader connections, answers its reads on the writer
    /// thread, and refuses them all the same.
    #[tokio::test]
    async fn every_call_after_close_returns_closed_in_memory() {
        let store = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        store.close().await.unwrap();
        let k = key("a");
        let now = Timestamp::from_millis(1);
        assert!(matches!(store.load(&k).await, Err(StoreError::Closed)));
        assert!(matches!(
            store.has_event_id(&k, "e").await,
            Err(StoreError::Closed)
        ));
        let insert = vec![Write::Insert(InstanceRecord::new(k.clone(), now))];
        assert!(matches!(
            store.commit(insert).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.commit(Vec::new()).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.claim_alarm(&k, now, "me", now).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.renew_leases("me", now).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.scan_alarms(now, 10, &[]).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.recover("me", now).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.outbox_peek(1).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(store.outbox_ack(1).await, Err(StoreError::Closed)));
        assert!(matches!(
            store.prune_event_ids(now, 10).await,
            Err(StoreError::Closed)
        ));
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn close_finishes_the_queued_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let writes: Vec<_> = (0..100)
            .map(|i| {
                store.commit(vec![Write::Insert(InstanceRecord::new(
                    key(&i.to_string()),
                    Timestamp::EPOCH,
                ))])
            })
            .collect();
        store.close().await.unwrap();
        for w in writes {
            w.await.unwrap();
        }
        let store = file_store(&dir);
        for i in 0..100 {
            assert!(store.load(&key(&i.to_string())).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn in_memory_mode_reads_and_writes() {
        let store = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        assert_eq!(store.path(), None);
        let record = InstanceRecord::new(key("a"), Timestamp::from_millis(1));
        store
            .commit(vec![Write::Insert(record.clone())])
            .await
            .unwrap();
        assert_eq!(store.load(&key("a")).await.unwrap(), Some(record));
        // Two in-memory stores are independent.
        let other = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        assert_eq!(other.load(&key("a")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn with_synchronous_full_a_write_is_acknowledged_after_the_log_sync_and_commits_go_on_meanwhile(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = full_store_with_table(&dir.path().join("jobs.db")).await;
        // Syncs wait for a permit from now on.
        let (permit, permits) = std::sync::mpsc::channel::<()>();
        *store.writer.sync_hold().permits.lock().unwrap() = Some(permits);
        let insert = |n: i64| insert_into_table(&store, n);
        // Whether readers see `n`. Gives up (the test fails rather than hangs) if the writer
        // never commits it: a writer that waits for the held sync would never.
        let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let committed = |n: i64| {
            assert!(
                std::time::Instant::now() < bound,
                "{n} was never committed while a sync was held"
            );
            let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
            conn.query_row("SELECT count(*) FROM t WHERE n = ?1", [n], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                == 1
        };

        let mut first = std::pin::pin!(insert(1));
        while !committed(1) {
            // The write is committed (readers see it) but not acknowledged: its sync is held.
            assert!(futures_poll(first.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        assert!(futures_poll(first.as_mut()).is_pending());
        // The writer did not wait for that sync: the next group commits meanwhile.
        let mut second = std::pin::pin!(insert(2));
        while !committed(2) {
            tokio::task::yield_now().await;
        }
        assert!(futures_poll(first.as_mut()).is_pending());
        assert!(futures_poll(second.as_mut()).is_pending());

        permit.send(()).unwrap();
        permit.send(()).unwrap();
        first.await.unwrap();
        second.await.unwrap();
        // Without a hold (the sender gone), syncs go on by themselves.
        drop(permit);
        let mode: String = store
            .write(|conn| {
                conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .context("pragma")
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn with_synchronous_full_a_claim_is_answered_at_commit_and_other_writes_after_the_sync() {
        use crate::store::runs::{NewRun, RunStore};
        let dir = tempfile::tempdir().unwrap();
        let store = full_store_with_table(&dir.path().join("jobs.db")).await;
        let now = Timestamp::from_millis(1_000);
        let run = |id: &str| NewRun {
            id: id.into(),
            job_name: "job".into(),
            input: "null".into(),
            idempotency_key: None,
            concurrency_key: None,
            labels: Default::default(),
            coalesce: false,
        };
        RunStore::enqueue(&*store, vec![run("a")], now)
            .await
            .unwrap();
        // Syncs wait for a permit from now on.
        let (permit, permits) = std::sync::mpsc::channel::<()>();
        *store.writer.sync_hold().permits.lock().unwrap() = Some(permits);

        let mut trigger = std::pin::pin!(RunStore::enqueue(&*store, vec![run("b")], now));
        assert!(futures_poll(trigger.as_mut()).is_pending());
        // A claim waiting for the held sync would time out here.
        let claim = RunStore::claim(&*store, "me", now, now + Duration::from_secs(30), 10);
        let claimed = tokio::time::timeout(Duration::from_secs(10), claim)
            .await
            .expect("the claim was answered without the held sync")
            .unwrap();
        assert_eq!(claimed.runs[0].id, "a");
        // The trigger, committed before the claim, still waits for its sync.
        assert!(futures_poll(trigger.as_mut()).is_pending());
        drop(permit);
        trigger.await.unwrap();
    }

    #[tokio::test]
    async fn after_a_failed_log_sync_every_later_write_fails_without_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = full_store_with_table(&path).await;
        let insert = |n: i64| insert_into_table(&store, n);
        insert(1).await.unwrap();

        store
            .writer
            .sync_hold()
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = insert(2).await.unwrap_err();
        assert!(
            failed.to_string().contains("injected sync failure"),
            "{failed}"
        );
        // The next sync would succeed, but nothing after the failure is vouched for.
        let later = insert(3).await.unwrap_err();
        assert!(
            later.to_string().contains("injected sync failure"),
            "{later}"
        );
        let conn = Connection::open(&path).unwrap();
        let stored: Vec<i64> = conn
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !stored.contains(&3),
            "a write after the failure ran: {stored:?}"
        );
        assert!(stored.contains(&1));
    }

    /// A store with `Synchronous::Full` on `path`, holding a table `t (n)`.
    async fn full_store_with_table(path: &Path) -> Arc<SqliteStore> {
        let store =
            SqliteStore::open(SqliteOptions::file(path).synchronous(Synchronous::Full)).unwrap();
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
                    .context("create")
            })
            .await
            .unwrap();
        store
    }

    /// Queues an insert of `n` into the table of [`full_store_with_table`] at once (as
    /// `write` does, before the future is polled).
    fn insert_into_table(
        store: &SqliteStore,
        n: i64,
    ) -> impl Future<Output = Result<usize, StoreError>> {
        store.write(move |conn| {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
                .context("insert")
        })
    }

    /// Polls a future once, without waking anything.
    fn futures_poll<F: std::future::Future>(
        f: std::pin::Pin<&mut F>,
    ) -> std::task::Poll<F::Output> {
        f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let result = store
            .read(|conn| conn.execute("DELETE FROM outbox", []).context("delete"))
            .await;
        assert!(matches!(result, Err(StoreError::Database(_))));
    }

    #[test]
    fn open_fails_clearly_when_the_directory_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            SqliteStore::open(SqliteOptions::file(dir.path().join("missing/jobs.db"))).unwrap_err();
        assert!(matches!(err, StoreError::Database(_)));
    }
}
