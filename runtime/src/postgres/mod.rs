//! The PostgreSQL backend: several processes, on several machines, running the same jobs on
//! one database. The guide below is `docs/postgres.md`.
//!
#![doc = include_str!("../../../docs/postgres.md")]

mod announce;
#[cfg(feature = "bench-internals")]
pub(crate) mod bench;
mod builder;
mod codec;
mod completions;
pub(crate) mod inbox;
mod instances;
mod listen;
mod listing;
mod migrations;
mod options;
mod outbox;
mod runs;
mod schema;
#[cfg(test)]
mod tests;
pub(crate) mod tx;
mod wakeups;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Postgres;

use crate::id::{InstanceKey, JobKind};
use crate::store::{
    AlarmScan, Backend, BoxFuture, Change, ChangeFeed, InstanceCounts, InstanceQuery,
    InstanceRecord, OutboxEntry, Ownership, Store, StoreError, UnregisteredJob, WriteBatch,
};
use crate::time::Timestamp;

pub use crate::client::tx::{EventOutcome, Queued, TriggerOutcome};
use codec::{check_schema_name, Context, DbTime, Sql};
use options::Source;
pub use options::{PostgresOptions, DEFAULT_FALLBACK_POLL_INTERVAL, DEFAULT_SCHEMA};
use wakeups::Wakeups;
use writer::{WriteFn, Writer};

/// The PostgreSQL store: a [`Store`] in a schema of a PostgreSQL database, shared by every
/// engine that connects to it.
///
/// # Examples
///
/// ```no_run
/// use durable_jobs::postgres::{PostgresOptions, PostgresStore};
/// use durable_jobs::store::{Backend, Ownership, Store};
///
/// # async fn run() -> Result<(), durable_jobs::store::StoreError> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// assert_eq!(store.ownership(), Ownership::Shared);
/// assert!(store.outbox_peek(10).await?.is_empty());
/// store.close().await?;
///
/// // Beside the application's own tables, in a schema of its own, on the application's pool.
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/app").await.unwrap();
/// let store = PostgresStore::open(PostgresOptions::from_pool(pool).schema("jobs")).await?;
/// # Ok(())
/// # }
/// ```
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Sql>,
    /// Runs every write of the store, many callers' to a transaction.
    writer: Writer,
    /// Whether the pool is the store's own, to close with it (not the caller's).
    owns_pool: bool,
    /// How often engines look for other processes' writes: the fallback poll when the store
    /// listens, the poll interval when it does not.
    poll_interval: Duration,
    /// How far ahead an alarm a write sets may be and still be announced: the fallback poll of
    /// listening stores, which find a later one by polling before it falls due.
    announce_within: Duration,
    wakeups: Wakeups,
    closed: AtomicBool,
    /// When writes inside applications' transactions last announced work.
    announcements: tx::Announcements,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.sql.schema())
            .field("listening", &self.wakeups.feed().is_some())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a transaction of the store ends with.
pub(crate) enum Decision<T> {
    /// Commit, then return the value.
    Commit(T),
    /// Roll back (nothing of it may stay), then return the value.
    RollBack(T),
    /// Roll back and run the transaction again: it lost a race that a new snapshot resolves.
    Retry,
}

/// How many times a write is run when the server picks it as a deadlock's victim, or it
/// loses a race it can resolve by running again.
const ATTEMPTS: u32 = 8;

/// How many connections the writer commits on. One: the groups of two connections of one
/// process hold row locks for the whole group and deadlock on each other (a renewal of every
/// lease against a step write), which the server only detects after `deadlock_timeout` (1 s),
/// long enough for leases to lapse. While a group commits, the next one gathers in the queue.
const WRITER_CONNECTIONS: usize = 1;

impl PostgresStore {
    /// Connects to the database at `url` with the default options (schema `durable_jobs`),
    /// creating the schema and applying missing migrations. Short for
    /// `PostgresStore::open(PostgresOptions::new(url))`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::open(PostgresOptions::new(url)).await
    }

    /// Connects with `options`, creating the schema and applying missing migrations, and starts
    /// listening for other processes' writes (unless [`PostgresOptions::listen`] says not to).
    /// Must be called within a Tokio runtime: the store runs two tasks of its own there, one
    /// announcing its writes and one listening.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the URL is invalid, the server cannot be reached, the
    /// schema name is not a plain identifier, the schema holds another application's tables,
    /// or it was migrated by a newer version of this crate (its schema version is unknown here).
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        check_schema_name(&options.schema)?;
        let (pool, owns_pool) = match options.source {
            Source::Pool(pool) => (pool, false),
            Source::Url(url) => {
                let connect: PgConnectOptions =
                    url.parse().context("reading the connection URL")?;
                // Named in `pg_stat_activity`, unless the URL names it already.
                let connect = match connect.get_application_name() {
                    Some(_) => connect,
                    None => connect.application_name("durable-jobs"),
                };
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .context("connecting to the database")?;
                (pool, true)
            }
        };
        let sql = Arc::new(Sql::new(&options.schema));
        let migrated = migrations::apply(&pool, &sql, migrations::MIGRATIONS).await;
        if let Err(e) = migrated {
            if owns_pool {
                pool.close().await;
            }
            return Err(e);
        }
        // The channel is the schema's name: the stores of one schema hear each other, and
        // only them (channels are per database).
        let wakeups = Wakeups::start(&pool, sql.schema(), options.listen).await;
        let poll_interval = match wakeups.feed() {
            Some(_) => options.fallback_poll_interval,
            None => options.poll_interval,
        };
        let writer = Writer::start(&pool, &sql, WRITER_CONNECTIONS);
        Ok(PostgresStore {
            pool,
            sql,
            writer,
            owns_pool,
            poll_interval,
            announce_within: options.fallback_poll_interval,
            wakeups,
            closed: AtomicBool::new(false),
            announcements: tx::Announcements::new(),
        })
    }

    /// Whether the store hears other processes' writes through `LISTEN`: then engines on it
    /// wake as soon as another process writes, and poll only as a fallback.
    pub fn is_listening(&self) -> bool {
        self.wakeups.feed().is_some()
    }

    /// The pool the store runs on: its own, or the one it was opened with.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        self.sql.schema()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// A connection of the pool, for reads and single statements.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.check_open()?;
        self.pool
            .acquire()
            .await
            .context("taking a connection from the pool")
    }

    /// Runs `write` with `data` in the writer's next group transaction, which ends as the
    /// write's [`Decision`] says for its own part: a write that rolls back (or fails) leaves
    /// nothing behind and the others of its group commit. A write that lost a race, or was a
    /// deadlock's victim, is run again. The outcome comes once the group committed.
    pub(crate) async fn write<D, T>(&self, data: D, write: WriteFn<D, T>) -> Result<T, StoreError>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
    {
        self.check_open()?;
        self.writer.write(data, write).await
    }
}

impl Backend for PostgresStore {
    fn verify(&self) -> Result<(), StoreError> {
        self.check_open()
    }

    fn load<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::load(&mut conn, &self.sql, key).await
        })
    }

    fn has_event_id<'a>(
        &'a self,
        key: &'a InstanceKey,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::has_event_id(&mut conn, &self.sql, key, event_id).await
        })
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return self.check_open();
            }
            let announce = announce::sets_an_alarm_soon(&batch, self.announce_within);
            self.write(batch, |conn, sql, batch| {
                Box::pin(async move {
                    instances::apply_batch(conn, sql, batch)
                        .await
                        .map(Decision::Commit)
                })
            })
            .await?;
            if announce {
                self.wakeups.announce(Change::Alarms);
            }
            Ok(())
        })
    }

    fn claim_alarm<'a>(
        &'a self,
        key: &'a InstanceKey,
        now: Timestamp,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::claim_alarm(&mut conn, &self.sql, key, now, owner, lease_until).await
        })
    }

    fn claim_instance<'a>(
        &'a self,
        key: &'a InstanceKey,
        expected_version: u64,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::claim_instance(
                &mut conn,
                &self.sql,
                key,
                expected_version,
                owner,
                lease_until,
            )
            .await
        })
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.write(
            (owner.to_owned(), lease_until),
            |conn, sql, (owner, until)| {
                Box::pin(async move {
                    instances::renew_leases(conn, sql, owner, *until)
                        .await
                        .map(Decision::Commit)
                })
            },
        ))
    }

    fn scan_alarms<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        jobs: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<AlarmScan, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::scan_alarms(&mut conn, &self.sql, now, limit, jobs).await
        })
    }

    fn load_broken<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            listing::load_broken(&mut conn, &self.sql, kind, job).await
        })
    }

    fn unregistered_jobs<'a>(
        &'a self,
        registered: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<Vec<UnregisteredJob>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            listing::unregistered_jobs(&mut conn, &self.sql, registered).await
        })
    }

    fn pull_alarms_to<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let moved = self
                .write((kind, job.to_owned(), at), |conn, sql, (kind, job, at)| {
                    Box::pin(async move {
                        instances::pull_alarms_to(conn, sql, *kind, job, *at)
                            .await
                            .map(Decision::Commit)
                    })
                })
                .await?;
            if moved > 0 {
                self.wakeups.announce(Change::Alarms);
            }
            Ok(moved)
        })
    }

    fn recover(&self, owner: &str, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        let owner = owner.to_owned();
        Box::pin(async move {
            let released = self
                .write(now, |conn, sql, now| {
                    Box::pin(async move {
                        instances::release_all_leases(conn, sql, *now)
                            .await
                            .map(Decision::Commit)
                    })
                })
                .await?;
            if released > 0 {
                self.wakeups.announce(Change::Alarms);
                tracing::info!(
                    owner,
                    released,
                    "released the leases of interrupted executions; their alarms fire now"
                );
            }
            Ok(())
        })
    }

    fn outbox_peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::outbox_peek(&mut conn, &self.sql, limit).await
        })
    }

    fn outbox_ack(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::outbox_ack(&mut conn, &self.sql, seq).await
        })
    }

    fn outbox_claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            outbox::claim(&mut conn, &self.sql, owner, now, until, limit).await
        })
    }

    fn outbox_delivered<'a>(
        &'a self,
        batch: &'a [OutboxEntry],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let seqs: Vec<i64> = batch.iter().map(|entry| entry.seq).collect();
            let mut conn = self.connection().await?;
            outbox::delivered(&mut conn, &self.sql, &seqs).await
        })
    }

    fn outbox_release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            outbox::release(&mut conn, &self.sql, owner).await
        })
    }

    fn prune_event_ids(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            instances::prune_event_ids(&mut conn, &self.sql, before, limit).await
        })
    }

    fn list_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, Result<Vec<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            listing::list_instances(&mut conn, &self.sql, &query).await
        })
    }

    fn instance_keys(
        &self,
        after: Option<InstanceKey>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<InstanceKey>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            listing::instance_keys(&mut conn, &self.sql, after.as_ref(), limit).await
        })
    }

    fn count_instances(
        &self,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<InstanceCounts>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            listing::count_instances(&mut conn, &self.sql, now).await
        })
    }

    /// Refuses every later call, stops listening, announces what is left to announce, and
    /// closes the store's own pool (waiting for the connections in use to be returned). A pool
    /// the store was opened with stays open.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            self.writer.stop().await;
            self.wakeups.stop().await;
            if self.owns_pool {
                self.pool.close().await;
            }
            Ok(())
        })
    }
}

impl Store for PostgresStore {
    fn ownership(&self) -> Ownership {
        Ownership::Shared
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(self.poll_interval)
    }

    fn changes(&self) -> Option<ChangeFeed> {
        self.wakeups.feed()
    }

    /// The server's `clock_timestamp()`: the time it is read, where `now()` would be the
    /// start of its transaction.
    fn database_time(&self) -> Option<BoxFuture<'_, Result<Timestamp, StoreError>>> {
        Some(Box::pin(async move {
            let mut conn = self.connection().await?;
            let now: DbTime = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&mut *conn)
                .await
                .context("reading the database's clock")?;
            Ok(now.0)
        }))
    }

    fn close_blocking(&self) {
        // Refuses every later call at once. The pool's connections close when the last handle
        // of the pool is dropped, or, on a runtime, as soon as they are returned.
        self.closed.store(true, Ordering::Release);
        self.writer.stop_now();
        self.wakeups.stop_now();
        if self.owns_pool {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pool = self.pool.clone();
                runtime.spawn(async move { pool.close().await });
            }
        }
    }
}
