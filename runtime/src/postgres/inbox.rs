//! Applying the events that applications sent to task instances inside their own transactions
//! (`TaskClient::send_in`).
//!
//! Such an event cannot be applied where it is sent: `on_event` is the job's code, which runs
//! with the application and must not run inside the caller's transaction, nor before it
//! commits. It is queued in the `inbox` table instead, and every engine on the store with task
//! jobs runs [`apply`]: it leases the first entry of each instance (a few instances at a time),
//! delivers it through the same `send` as any other event, under the entry's event id, and
//! deletes it. An instance's next entry is not taken before its first is deleted, so each
//! instance gets its events in order. The event id makes the delivery happen once: an engine
//! that dies after delivering an entry and before deleting it leaves it to another, whose
//! delivery is then refused as a duplicate and deletes it.
//!
//! What `send` would answer its caller decides the entry's fate: delivered (or a duplicate),
//! it is deleted; refused for good (the handlers failed without rescue, which is published as
//! `job.failed`, or the event no longer decodes), it is logged and deleted, as a `send` whose
//! caller got the error changes nothing; otherwise (the store failed, the instance is broken
//! until a deploy repairs it) it is left for later, with a growing pause.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use super::codec::{Context, DbTime};
use super::PostgresStore;
use crate::engine::erased::Input;
use crate::engine::Inner;
use crate::error::{Error, Operation};
use crate::id::{InstanceKey, JobKind};
use crate::store::changes::Change;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Entries leased per look: at most one per instance, applied side by side.
const BATCH: i64 = 32;

/// The longest pause before an entry that could not be applied is tried again.
const MOST_PAUSE: Duration = Duration::from_secs(300);

/// One queued event.
struct Entry {
    seq: i64,
    key: InstanceKey,
    event: String,
    event_id: String,
    /// How many times it was leased, this time included.
    attempts: i64,
}

/// The loop that applies the inbox for `inner`'s engine, when its store is PostgreSQL and it
/// has task jobs; `None` otherwise.
pub(crate) fn applier<A: Send + Sync + 'static>(
    inner: &Arc<Inner<A>>,
    store: &Arc<dyn Store>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let any: &dyn std::any::Any = store.as_ref();
    any.downcast_ref::<PostgresStore>()?;
    let tasks: Vec<&'static str> = inner
        .alarm_jobs
        .iter()
        .filter(|(kind, _)| *kind == JobKind::Task)
        .map(|(_, name)| *name)
        .collect();
    if tasks.is_empty() {
        return None;
    }
    Some(apply(inner.clone(), store.clone(), tasks))
}

/// Looks for entries whenever another process may have queued one (a change announced, or
/// the poll interval passed) and applies them, until the engine shuts down.
async fn apply<A: Send + Sync + 'static>(
    inner: Arc<Inner<A>>,
    store: Arc<dyn Store>,
    tasks: Vec<&'static str>,
) {
    // Made before the first look: an entry queued after it wakes the loop.
    let mut others = inner.others.watch(Change::Alarms);
    let mut backoff = Duration::from_millis(10);
    loop {
        // Shutting down: the entries wait for another engine, or the next start.
        if inner.enter(Operation::Send).is_err() {
            return;
        }
        let Some(pg) = postgres(&store) else { return };
        let now = inner.clock.now();
        let claimed = claim(pg, &tasks, &inner.owner, now, now + inner.lease).await;
        match claimed {
            Ok(entries) if entries.is_empty() => others.next().await,
            Ok(entries) => {
                backoff = Duration::from_millis(10);
                let mut applying = tokio::task::JoinSet::new();
                for entry in entries {
                    applying.spawn(deliver(inner.clone(), store.clone(), entry));
                }
                while applying.join_next().await.is_some() {}
                // The next entries of these instances are first now: look again at once.
            }
            Err(e) => {
                tracing::error!(error = %e, ?backoff, "reading the inbox failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn postgres(store: &Arc<dyn Store>) -> Option<&PostgresStore> {
    let any: &dyn std::any::Any = store.as_ref();
    any.downcast_ref::<PostgresStore>()
}

/// Delivers one entry and settles its fate.
async fn deliver<A: Send + Sync + 'static>(
    inner: Arc<Inner<A>>,
    store: Arc<dyn Store>,
    entry: Entry,
) {
    let key = &entry.key;
    let delivered = match serde_json::from_str(&entry.event) {
        Ok(event) => {
            inner
                .task_send(
                    key.job(),
                    key.id(),
                    Input::Json(event),
                    Some(&entry.event_id),
                )
                .await
        }
        Err(e) => Err(Error::validation(
            crate::error::ValidationTarget::Event,
            Some(key.job()),
            format!("the queued event is not JSON: {e}"),
        )),
    };
    let Some(pg) = postgres(&store) else { return };
    let settled = match delivered {
        Ok(_) | Err(Error::DuplicateEvent { .. }) => remove(pg, &entry, &inner.owner).await,
        Err(e @ (Error::Execution { .. } | Error::Validation { .. })) => {
            tracing::warn!(
                instance = %key,
                event_id = %entry.event_id,
                error = %e,
                "an event sent inside a transaction was refused after its commit; it is dropped"
            );
            remove(pg, &entry, &inner.owner).await
        }
        Err(Error::ShutDown { .. }) => put_back(pg, &entry, &inner.owner, None, None).await,
        Err(e) => {
            let doublings = u32::try_from(entry.attempts.clamp(1, 9) - 1).unwrap_or(0);
            let pause = Duration::from_secs(1)
                .saturating_mul(1 << doublings)
                .min(MOST_PAUSE);
            tracing::warn!(
                instance = %key,
                event_id = %entry.event_id,
                error = %e,
                ?pause,
                "an event sent inside a transaction could not be applied yet; trying again later"
            );
            let at = inner.clock.now() + pause;
            put_back(pg, &entry, &inner.owner, Some(at), Some(&e.to_string())).await
        }
    };
    if let Err(e) = settled {
        // The lease lapses and the entry is taken again; its event id keeps it from being
        // applied twice.
        tracing::warn!(instance = %key, error = %e, "settling an inbox entry failed");
    }
}

/// Leases the first entry of up to [`BATCH`] instances of `tasks` that are not leased (or
/// whose lease lapsed), oldest first, to `owner` until `until`. Entries other engines are
/// leasing right now are skipped, not waited for.
async fn claim(
    pg: &PostgresStore,
    tasks: &[&str],
    owner: &str,
    now: Timestamp,
    until: Timestamp,
) -> Result<Vec<Entry>, StoreError> {
    let mut conn = pg.connection().await?;
    let rows = sqlx::query(&pg.sql.get(
        "UPDATE {s}.inbox i SET lease_owner = $2, lease_until = $3, attempts = i.attempts + 1
          WHERE i.seq IN (
                SELECT c.seq FROM {s}.inbox c
                 WHERE c.seq IN (SELECT DISTINCT ON (f.kind, f.job, f.id) f.seq
                                   FROM {s}.inbox f
                                  WHERE f.kind = 'task' AND f.job = ANY($1::text[])
                                  ORDER BY f.kind, f.job, f.id, f.seq)
                   AND (c.lease_until IS NULL OR c.lease_until <= $4)
                 ORDER BY c.seq
                 LIMIT $5
                   FOR UPDATE SKIP LOCKED)
          RETURNING i.seq, i.job, i.id, i.event, i.event_id, i.attempts",
    ))
    .bind(tasks)
    .bind(owner)
    .bind(DbTime(until))
    .bind(DbTime(now))
    .bind(BATCH)
    .fetch_all(&mut *conn)
    .await
    .context("leasing inbox entries")?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let read = || -> Result<Entry, sqlx::Error> {
            Ok(Entry {
                seq: row.try_get(0)?,
                key: InstanceKey::new(
                    JobKind::Task,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?,
                ),
                event: row.try_get(3)?,
                event_id: row.try_get(4)?,
                attempts: row.try_get(5)?,
            })
        };
        entries.push(read().context("reading an inbox entry")?);
    }
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

/// Deletes a settled entry, if `owner` still holds it.
async fn remove(pg: &PostgresStore, entry: &Entry, owner: &str) -> Result<(), StoreError> {
    let mut conn = pg.connection().await?;
    sqlx::query(
        &pg.sql
            .get("DELETE FROM {s}.inbox WHERE seq = $1 AND lease_owner = $2"),
    )
    .bind(entry.seq)
    .bind(owner)
    .execute(&mut *conn)
    .await
    .context("deleting an inbox entry")?;
    Ok(())
}

/// Gives an entry back, if `owner` still holds it: to be taken again from `not_before` (at
/// once when `None`).
async fn put_back(
    pg: &PostgresStore,
    entry: &Entry,
    owner: &str,
    not_before: Option<Timestamp>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let mut conn = pg.connection().await?;
    sqlx::query(&pg.sql.get(
        "UPDATE {s}.inbox
            SET lease_owner = NULL, lease_until = $3, last_error = COALESCE($4, last_error)
          WHERE seq = $1 AND lease_owner = $2",
    ))
    .bind(entry.seq)
    .bind(owner)
    .bind(not_before.map(DbTime))
    .bind(error)
    .execute(&mut *conn)
    .await
    .context("giving an inbox entry back")?;
    Ok(())
}
