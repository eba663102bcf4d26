//! Writes made through the application's own transaction: step-job runs, continuous starts,
//! debounce adds and task events that exist if and only if that transaction commits.
//!
//! Each action runs under a savepoint of the caller's transaction (sqlx's nested `begin`), and
//! nothing it does can leave that transaction aborted: a conflict it can answer (an idempotency
//! key taken, a pending concurrency key, an event id seen) rolls back to the savepoint and comes
//! back as an outcome, and so does any error, which is then returned. Races with other
//! transactions are resolved as the store's own transactions resolve them, by running the
//! action again, here from the savepoint: under `READ COMMITTED`, the default, the next
//! statement sees the row that won. Under `REPEATABLE READ` or `SERIALIZABLE` the server
//! refuses such a race instead (a serialization failure), which is returned: the caller's whole
//! transaction has to run again.
//!
//! The only rows an action locks are the ones it writes: the instance row a debounce `add`
//! changes (`FOR UPDATE`), and the unique-index entries of what it inserts. They stay locked
//! until the caller's transaction ends, so an engine that wants one of them does without: its
//! alarm claim skips a locked row (`SKIP LOCKED`), and its step-run claim never sees an
//! uncommitted run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::codec::{database_error, Context, DbTime};
use super::instances;
use super::runs::enqueue::{self, Attempt};
use super::{PostgresStore, ATTEMPTS};
use crate::clock::Clock;
use crate::engine::store_error;
use crate::error::{Error, Operation, Result, ValidationTarget};
use crate::id::InstanceKey;
use crate::store::changes::Change;
use crate::store::runs::{EnqueueOutcome, Enqueued, NewRun};
use crate::store::{InstanceRecord, Store, StoreError, Write, WriteBatch};
use crate::time::Timestamp;

/// How often a process announces one kind of change at most. Each `NOTIFY` takes a lock that
/// serialises the commits of every transaction that sent one; the poll finds what goes
/// unannounced.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// The PostgreSQL store behind an engine's `dyn Store`, or a `Validation` error naming `job`
/// when the engine runs on another store.
pub(crate) fn postgres_store<'s>(store: &'s dyn Store, job: &str) -> Result<&'s PostgresStore> {
    let any: &dyn std::any::Any = store;
    any.downcast_ref::<PostgresStore>()
        .ok_or_else(|| not_on_postgres(job))
}

/// The error of an action inside an application's transaction on an engine whose store is not
/// PostgreSQL.
pub(crate) fn not_on_postgres(job: &str) -> Error {
    Error::validation(
        ValidationTarget::Config,
        Some(job),
        "actions inside an application's transaction need an engine on the PostgreSQL store \
         (`.postgres(url)` or `.postgres_options(..)`); this engine runs on another store",
    )
}

/// When this process last announced each kind of change, for [`ANNOUNCE_EVERY`].
#[derive(Debug)]
pub(crate) struct Announcements {
    started: Instant,
    /// Milliseconds since `started`, plus one (0: never), of the last announcement of alarms
    /// and of runs.
    alarms: AtomicU64,
    runs: AtomicU64,
}

impl Announcements {
    pub(crate) fn new() -> Self {
        Announcements {
            started: Instant::now(),
            alarms: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        }
    }

    /// Whether to announce `change` now; if so, it counts as announced.
    fn due(&self, change: Change) -> bool {
        let last = match change {
            Change::Runs => &self.runs,
            _ => &self.alarms,
        };
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let before = last.load(Ordering::Relaxed);
        let every = u64::try_from(ANNOUNCE_EVERY.as_millis()).unwrap_or(u64::MAX);
        if before != 0 && now.saturating_sub(before) < every {
            return false;
        }
        last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Announces `change` to the engines on the store when the caller's transaction commits (a
/// notification sent inside a transaction is delivered at its commit, and dropped with its
/// rollback), unless this process announced it a moment ago.
async fn announce(
    conn: &mut PgConnection,
    store: &PostgresStore,
    change: Change,
) -> std::result::Result<(), StoreError> {
    if !store.announcements.due(change) {
        return Ok(());
    }
    // The schema's channel and payloads, as the store's own announcements (`announce`).
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(store.sql.schema())
        .bind(super::announce::payload(change))
        .execute(conn)
        .await
        .context("announcing the write")?;
    Ok(())
}

/// Whether `batch` writes an alarm due at `now` or before: work for an engine as soon as the
/// caller's transaction commits. A later alarm needs no announcement, the engines' poll finds
/// it long before it is due.
fn due_now(batch: &WriteBatch, now: Timestamp) -> bool {
    batch.iter().any(|write| {
        let alarm = match write {
            Write::Insert(record) | Write::Update { record, .. } => record.alarm_at,
            _ => None,
        };
        alarm.is_some_and(|at| at <= now)
    })
}

/// A savepoint in the caller's transaction.
async fn savepoint(
    conn: &mut PgConnection,
) -> std::result::Result<Transaction<'_, Postgres>, StoreError> {
    conn.begin()
        .await
        .context("setting a savepoint in the caller's transaction")
}

/// Rolls back to `savepoint`. A failure to do so means the connection is lost, and with it the
/// caller's transaction: the error that led here says more.
async fn undo(savepoint: Transaction<'_, Postgres>) {
    if let Err(e) = savepoint.rollback().await {
        tracing::debug!(error = %e, "rolling back to a savepoint failed");
    }
}

/// Keeps what was done under `savepoint` in the caller's transaction.
async fn keep(savepoint: Transaction<'_, Postgres>) -> std::result::Result<(), StoreError> {
    savepoint
        .commit()
        .await
        .context("releasing a savepoint in the caller's transaction")
}

/// Creates `runs` in the caller's transaction, as [`RunStore::enqueue`] creates them in one of
/// its own: against the stored runs (committed, and the caller's own) and those earlier in
/// `runs`. A conflict writes nothing.
///
/// [`RunStore::enqueue`]: crate::store::RunStore::enqueue
pub(crate) async fn enqueue_runs(
    conn: &mut PgConnection,
    store: &PostgresStore,
    runs: &[NewRun],
    now: Timestamp,
) -> std::result::Result<EnqueueOutcome, StoreError> {
    for _ in 0..ATTEMPTS {
        let mut sp = savepoint(conn).await?;
        let attempt = enqueue::enqueue(&mut sp, &store.sql, runs, now).await;
        match attempt {
            Ok(Attempt::Done(done)) => {
                if done.iter().any(|e| matches!(e, Enqueued::Created(_))) {
                    if let Err(e) = announce(&mut sp, store, Change::Runs).await {
                        undo(sp).await;
                        return Err(e);
                    }
                }
                keep(sp).await?;
                return Ok(EnqueueOutcome::Done(done));
            }
            Ok(Attempt::Conflict(conflict)) => {
                undo(sp).await;
                return Ok(conflict);
            }
            // Another transaction committed a run with one of the keys meanwhile: the next
            // attempt finds it.
            Ok(Attempt::Raced) => undo(sp).await,
            Err(e) => {
                undo(sp).await;
                return Err(e);
            }
        }
    }
    Err(database_error(
        "an enqueue kept losing races with other transactions; giving up",
    ))
}

/// Inserts the instance row `batch` holds (one insert, built by the engine), unless the
/// instance exists: then nothing is written and its row is returned.
pub(crate) async fn insert_instance(
    conn: &mut PgConnection,
    store: &PostgresStore,
    key: &InstanceKey,
    batch: &WriteBatch,
    now: Timestamp,
) -> std::result::Result<Option<InstanceRecord>, StoreError> {
    for _ in 0..ATTEMPTS {
        let mut sp = savepoint(conn).await?;
        let done = async {
            if let Some(existing) = instances::load(&mut sp, &store.sql, key).await? {
                return Ok(Some(existing));
            }
            instances::apply_batch(&mut sp, &store.sql, batch).await?;
            if due_now(batch, now) {
                announce(&mut sp, store, Change::Alarms).await?;
            }
            Ok(None)
        }
        .await;
        match done {
            Ok(found) => {
                keep(sp).await?;
                return Ok(found);
            }
            // Created by another transaction since the read: the next attempt finds it.
            Err(StoreError::Conflict(_)) => undo(sp).await,
            Err(e) => {
                undo(sp).await;
                return Err(e);
            }
        }
    }
    Err(database_error(format!(
        "creating {key} kept losing races with other transactions; giving up"
    )))
}

/// How one attempt at [`update_instance`] ended.
enum Step<T> {
    Done(T),
    /// The event id was recorded for the instance already.
    Duplicate,
    /// An execution holds the instance: look again after this pause.
    Held(Duration),
    /// Another transaction created the instance since the read.
    Raced,
}

/// Changes instance `key` in the caller's transaction: records `event_id` (if any), locks the
/// row (`FOR UPDATE`, until the caller's transaction ends), and applies the writes `write`
/// makes of it (the engine's, as for an action of its own). `None` when `event_id` was
/// recorded for the instance already: nothing is written.
///
/// While an execution holds the instance (a lease that has not lapsed, on any engine), the row
/// is let go and looked at again after a pause, as a client action waits: the execution's end
/// must not find the row changed under it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn update_instance<T>(
    conn: &mut PgConnection,
    store: &PostgresStore,
    key: &InstanceKey,
    event_id: Option<&str>,
    clock: &Clock,
    pace: Duration,
    operation: Operation,
    mut write: impl FnMut(Option<InstanceRecord>) -> Result<(WriteBatch, T)>,
) -> Result<Option<T>> {
    let sql = &store.sql;
    let mut raced = 0;
    loop {
        let mut sp = savepoint(conn)
            .await
            .map_err(|e| store_error(e, operation))?;
        let step = async {
            let now = clock.now();
            if let Some(event_id) = event_id {
                match instances::record_event(&mut sp, sql, key, event_id, now).await {
                    Ok(()) => {}
                    Err(StoreError::DuplicateEvent { .. }) => return Ok(Step::Duplicate),
                    Err(e) => return Err(store_error(e, operation)),
                }
            }
            let existing = instances::load_for_update(&mut sp, sql, key)
                .await
                .map_err(|e| store_error(e, operation))?;
            if let Some(lease) = existing.as_ref().and_then(|r| r.lease.as_ref()) {
                if lease.until > now {
                    let left = lease.until.saturating_duration_since(now);
                    return Ok(Step::Held(pace.min(left).max(Duration::from_millis(1))));
                }
            }
            let (batch, value) = write(existing)?;
            match instances::apply_batch(&mut sp, sql, &batch).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => return Ok(Step::Raced),
                Err(e) => return Err(store_error(e, operation)),
            }
            if due_now(&batch, clock.now()) {
                announce(&mut sp, store, Change::Alarms)
                    .await
                    .map_err(|e| store_error(e, operation))?;
            }
            Ok(Step::Done(value))
        }
        .await;
        match step {
            Ok(Step::Done(value)) => {
                keep(sp).await.map_err(|e| store_error(e, operation))?;
                return Ok(Some(value));
            }
            Ok(Step::Duplicate) => {
                undo(sp).await;
                return Ok(None);
            }
            Ok(Step::Held(pause)) => {
                // Rolling back to the savepoint lets the row go: the execution's end writes it.
                undo(sp).await;
                tracing::trace!(instance = %key, %operation, "held by an execution; waiting");
                tokio::time::sleep(pause).await;
            }
            Ok(Step::Raced) => {
                undo(sp).await;
                raced += 1;
                if raced >= ATTEMPTS {
                    return Err(store_error(
                        database_error(format!(
                            "writing {key} kept losing races with other transactions; giving up"
                        )),
                        operation,
                    ));
                }
            }
            Err(e) => {
                undo(sp).await;
                return Err(e);
            }
        }
    }
}

/// Queues `event` (JSON) for task instance `key` in the inbox, under `event_id`, for an engine
/// to apply after the caller's transaction commits. `false` when the event id was seen for the
/// instance already: applied (when `check_applied`), or queued by a transaction that committed
/// or is still open (which this one then waits for); nothing is written.
pub(crate) async fn queue_event(
    conn: &mut PgConnection,
    store: &PostgresStore,
    key: &InstanceKey,
    event: &str,
    event_id: &str,
    check_applied: bool,
    now: Timestamp,
) -> std::result::Result<bool, StoreError> {
    let mut sp = savepoint(conn).await?;
    let queued = async {
        if check_applied && instances::has_event_id(&mut sp, &store.sql, key, event_id).await? {
            return Ok(false);
        }
        let inserted = sqlx::query(&store.sql.get(
            "INSERT INTO {s}.inbox (kind, job, id, event, event_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        ))
        .bind(key.kind().as_str())
        .bind(key.job())
        .bind(key.id())
        .bind(event)
        .bind(event_id)
        .bind(DbTime(now))
        .execute(&mut *sp)
        .await
        .context_with(|| format!("queueing an event for {key}"))?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        announce(&mut sp, store, Change::Alarms).await?;
        Ok(true)
    }
    .await;
    match queued {
        Ok(true) => {
            keep(sp).await?;
            Ok(true)
        }
        Ok(false) => {
            undo(sp).await;
            Ok(false)
        }
        Err(e) => {
            undo(sp).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_work_is_announced_at_most_once_in_a_while() {
        let announcements = Announcements::new();
        assert!(announcements.due(Change::Runs));
        assert!(!announcements.due(Change::Runs), "again at once");
        assert!(announcements.due(Change::Alarms), "another kind");
        assert!(!announcements.due(Change::Alarms));
    }
}
