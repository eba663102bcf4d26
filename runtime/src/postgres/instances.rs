//! SQL for instances (with their alarm and lease), processed event ids and the outbox.
//!
//! Every function takes the connection it runs on; the store decides whether that is a
//! transaction (a batch, a claim) or a plain connection from the pool (reads).

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use super::codec::{db_time, to_i64, to_u32, to_u64, Context, DbTime, Sql};
use crate::id::{InstanceKey, JobKind};
use crate::store::{AlarmScan, InstanceRecord, Lease, OutboxEntry, StoreError, Write, WriteBatch};
use crate::time::Timestamp;

/// The columns of an instance row, in the order [`record_from_row`] reads them and
/// [`bind_record`] binds them (`$1` to `$21`).
macro_rules! record_columns {
    () => {
        "kind, job, id, state, created_at, updated_at, run_count, event_count, execute_count, \
         batch_started_at, last_event_at, alarm_at, retry_attempt, retry_started_at, \
         retry_last_error, version, lease_owner, lease_until, lease_generation, state_version, \
         broken"
    };
}
pub(super) use record_columns;

/// The second key of the advisory lock under which outbox rows are appended.
const OUTBOX_LOCK: i32 = 2;

/// The instance row of `key`, if any.
pub(super) async fn load(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
) -> Result<Option<InstanceRecord>, StoreError> {
    let row = sqlx::query(&sql.get(concat!(
        "SELECT ",
        record_columns!(),
        " FROM {s}.instances WHERE kind = $1 AND job = $2 AND id = $3"
    )))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .fetch_optional(conn)
    .await
    .context_with(|| format!("loading {key}"))?;
    row.map(|row| record_from_row(&row)).transpose()
}

/// The instance row of `key`, if any, locked until the end of the transaction (`FOR UPDATE`):
/// what an action inside the application's transaction changes.
pub(super) async fn load_for_update(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
) -> Result<Option<InstanceRecord>, StoreError> {
    let row = sqlx::query(&sql.get(concat!(
        "SELECT ",
        record_columns!(),
        " FROM {s}.instances WHERE kind = $1 AND job = $2 AND id = $3 FOR UPDATE"
    )))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .fetch_optional(conn)
    .await
    .context_with(|| format!("locking {key}"))?;
    row.map(|row| record_from_row(&row)).transpose()
}

/// Whether `event_id` was recorded for `key`.
pub(super) async fn has_event_id(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
    event_id: &str,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(&sql.get(
        "SELECT EXISTS (SELECT 1 FROM {s}.event_ids
                         WHERE kind = $1 AND job = $2 AND id = $3 AND event_id = $4)",
    ))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .bind(event_id)
    .fetch_one(conn)
    .await
    .context_with(|| format!("looking up event {event_id} of {key}"))
}

/// Applies every write of `batch` inside the caller's transaction: an error leaves the
/// transaction to be rolled back.
///
/// Outbox rows are appended last, under a transaction-scoped advisory lock held until the
/// commit: transactions that append to the outbox commit in the order of their sequence
/// numbers, so a reader never acknowledges a number past one still to be committed.
pub(super) async fn apply_batch(
    conn: &mut PgConnection,
    sql: &Sql,
    batch: &WriteBatch,
) -> Result<(), StoreError> {
    let mut outbox: Vec<&str> = Vec::new();
    for write in batch {
        match write {
            Write::Insert(record) => insert(conn, sql, record).await?,
            Write::Update {
                record,
                expected_version,
                changed: _,
            } => update(conn, sql, record, *expected_version).await?,
            Write::Delete {
                key,
                expected_version,
            } => delete(conn, sql, key, *expected_version).await?,
            Write::RecordEvent { key, event_id, at } => {
                record_event(conn, sql, key, event_id, *at).await?
            }
            Write::Outbox(rows) => outbox.extend(rows.iter().map(String::as_str)),
        }
    }
    if !outbox.is_empty() {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('durable_jobs:' || $1), $2)")
            .bind(sql.schema())
            .bind(OUTBOX_LOCK)
            .execute(&mut *conn)
            .await
            .context("waiting for the outbox lock")?;
        sqlx::query(&sql.get(
            "INSERT INTO {s}.outbox (json)
             SELECT o.json FROM unnest($1::text[]) WITH ORDINALITY AS o(json, n) ORDER BY o.n",
        ))
        .bind(&outbox)
        .execute(&mut *conn)
        .await
        .context("appending to the outbox")?;
    }
    Ok(())
}

pub(super) async fn insert(
    conn: &mut PgConnection,
    sql: &Sql,
    record: &InstanceRecord,
) -> Result<(), StoreError> {
    let statement = sql.get(concat!(
        "INSERT INTO {s}.instances (",
        record_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21) ON CONFLICT DO NOTHING"
    ));
    let inserted = bind_record(sqlx::query(&statement), record)
        .execute(conn)
        .await
        .context_with(|| format!("inserting {}", record.key))?;
    match inserted.rows_affected() {
        0 => Err(StoreError::Conflict(record.key.clone())),
        _ => Ok(()),
    }
}

/// Writes every column, fenced on the version. Writing a column its stored value changes
/// nothing for PostgreSQL's HOT updates, which compare the indexed columns' values: an update
/// that leaves the alarm and the lease where they were writes no index entry either way.
pub(super) async fn update(
    conn: &mut PgConnection,
    sql: &Sql,
    record: &InstanceRecord,
    expected_version: u64,
) -> Result<(), StoreError> {
    let statement = sql.get(
        "UPDATE {s}.instances SET state = $4, created_at = $5, updated_at = $6, run_count = $7,
                event_count = $8, execute_count = $9, batch_started_at = $10,
                last_event_at = $11, alarm_at = $12, retry_attempt = $13,
                retry_started_at = $14, retry_last_error = $15, version = $16,
                lease_owner = $17, lease_until = $18, lease_generation = $19,
                state_version = $20, broken = $21
          WHERE kind = $1 AND job = $2 AND id = $3 AND version = $22",
    );
    let updated = bind_record(sqlx::query(&statement), record)
        .bind(to_i64(expected_version))
        .execute(conn)
        .await
        .context_with(|| format!("updating {}", record.key))?;
    match updated.rows_affected() {
        0 => Err(StoreError::Conflict(record.key.clone())),
        _ => Ok(()),
    }
}

async fn delete(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
    expected_version: u64,
) -> Result<(), StoreError> {
    let deleted = sqlx::query(&sql.get(
        "DELETE FROM {s}.instances WHERE kind = $1 AND job = $2 AND id = $3 AND version = $4",
    ))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .bind(to_i64(expected_version))
    .execute(conn)
    .await
    .context_with(|| format!("deleting {key}"))?;
    match deleted.rows_affected() {
        0 => Err(StoreError::Conflict(key.clone())),
        _ => Ok(()),
    }
}

pub(super) async fn record_event(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
    event_id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    // A concurrent transaction recording the same id makes this one wait for its outcome, then
    // insert nothing if it committed.
    let inserted = sqlx::query(&sql.get(
        "INSERT INTO {s}.event_ids (kind, job, id, event_id, seen_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    ))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .bind(event_id)
    .bind(DbTime(at))
    .execute(conn)
    .await
    .context_with(|| format!("recording event {event_id} of {key}"))?;
    match inserted.rows_affected() {
        0 => Err(StoreError::DuplicateEvent {
            key: key.clone(),
            event_id: event_id.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Claims the alarm of `key` if it is due and not held by a live lease; see
/// [`Backend::claim_alarm`](crate::store::Backend::claim_alarm).
///
/// One conditional `UPDATE` of the row, if no other transaction holds it locked (`SKIP
/// LOCKED`): a concurrent claim of the same row claims nothing, and neither does a claim of a
/// row an application's transaction holds (an `add_in` not yet committed), which would
/// otherwise keep this connection waiting for as long as that transaction lasts. The alarm stays
/// due, and the scheduler's next look claims it.
pub(super) async fn claim_alarm(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
    now: Timestamp,
    owner: &str,
    lease_until: Timestamp,
) -> Result<Option<InstanceRecord>, StoreError> {
    let row = sqlx::query(&sql.get(concat!(
        "UPDATE {s}.instances
            SET lease_owner = $5, lease_until = $6, alarm_at = $6,
                lease_generation = lease_generation + 1, version = version + 1
          WHERE kind = $1 AND job = $2 AND id = $3
            AND alarm_at IS NOT NULL AND alarm_at <= $4
            AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $4)
            AND (kind, job, id) IN (SELECT kind, job, id FROM {s}.instances
                                     WHERE kind = $1 AND job = $2 AND id = $3
                                       FOR UPDATE SKIP LOCKED)
          RETURNING ",
        record_columns!()
    )))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .bind(DbTime(now))
    .bind(owner)
    .bind(DbTime(lease_until))
    .fetch_optional(conn)
    .await
    .context_with(|| format!("claiming the alarm of {key}"))?;
    row.map(|row| record_from_row(&row)).transpose()
}

/// Claims `key` for an execution a client action runs, if its version is still
/// `expected_version`: the lease, a new generation and version; the alarm is left alone.
pub(super) async fn claim_instance(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &InstanceKey,
    expected_version: u64,
    owner: &str,
    lease_until: Timestamp,
) -> Result<Option<InstanceRecord>, StoreError> {
    let row = sqlx::query(&sql.get(concat!(
        "UPDATE {s}.instances
            SET lease_owner = $5, lease_until = $6,
                lease_generation = lease_generation + 1, version = version + 1
          WHERE kind = $1 AND job = $2 AND id = $3 AND version = $4
          RETURNING ",
        record_columns!()
    )))
    .bind(key.kind().as_str())
    .bind(key.job())
    .bind(key.id())
    .bind(to_i64(expected_version))
    .bind(owner)
    .bind(DbTime(lease_until))
    .fetch_optional(conn)
    .await
    .context_with(|| format!("claiming {key}"))?;
    row.map(|row| record_from_row(&row)).transpose()
}

/// Extends the leases of `owner` to `lease_until`, and the alarms that stand for them (an alarm
/// claim moved the alarm to its lease's expiry; a client action's claim left it alone). The
/// version is left alone: the executions holding these leases write with the version they
/// claimed.
pub(super) async fn renew_leases(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
    lease_until: Timestamp,
) -> Result<u64, StoreError> {
    let renewed = sqlx::query(&sql.get(
        "UPDATE {s}.instances
            SET alarm_at = CASE WHEN alarm_at = lease_until THEN $2 ELSE alarm_at END,
                lease_until = $2
          WHERE lease_owner = $1",
    ))
    .bind(owner)
    .bind(DbTime(lease_until))
    .execute(conn)
    .await
    .context("renewing leases")?;
    Ok(renewed.rows_affected())
}

/// Due alarms of `jobs`, earliest first, and the first alarm of `jobs` after `now`: for each
/// job, a range of the partial index on `(kind, job, alarm_at)`, so the cost depends on `limit`
/// and the number of jobs, not on the number of instances, nor on alarms of jobs not asked for.
pub(super) async fn scan_alarms(
    conn: &mut PgConnection,
    sql: &Sql,
    now: Timestamp,
    limit: usize,
    jobs: &[(JobKind, &str)],
) -> Result<AlarmScan, StoreError> {
    if jobs.is_empty() {
        return Ok(AlarmScan::default());
    }
    let kinds: Vec<&str> = jobs.iter().map(|(kind, _)| kind.as_str()).collect();
    let names: Vec<&str> = jobs.iter().map(|(_, name)| *name).collect();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut due = Vec::new();
    if limit > 0 {
        let rows = sqlx::query(&sql.get(
            "SELECT j.kind, j.job, d.id, d.alarm_at
               FROM unnest($1::text[], $2::text[]) AS j(kind, job)
              CROSS JOIN LATERAL (
                    SELECT i.id, i.alarm_at FROM {s}.instances i
                     WHERE i.kind = j.kind AND i.job = j.job AND i.alarm_at IS NOT NULL
                       AND i.broken IS NULL AND i.alarm_at <= $3
                     ORDER BY i.alarm_at LIMIT $4) d
              ORDER BY d.alarm_at LIMIT $4",
        ))
        .bind(&kinds)
        .bind(&names)
        .bind(DbTime(now))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .context("scanning due alarms")?;
        for row in rows {
            let kind: String = row.try_get(0).context("reading an alarm")?;
            let kind = parse_kind(&kind)?;
            let job: String = row.try_get(1).context("reading an alarm")?;
            let id: String = row.try_get(2).context("reading an alarm")?;
            let at: DbTime = row.try_get(3).context("reading an alarm")?;
            due.push((InstanceKey::new(kind, job, id), at.0));
        }
    }
    let next: Option<DbTime> = sqlx::query_scalar(&sql.get(
        "SELECT MIN(n.at)
           FROM unnest($1::text[], $2::text[]) AS j(kind, job)
          CROSS JOIN LATERAL (
                SELECT MIN(i.alarm_at) AS at FROM {s}.instances i
                 WHERE i.kind = j.kind AND i.job = j.job AND i.alarm_at IS NOT NULL
                   AND i.broken IS NULL AND i.alarm_at > $3) n",
    ))
    .bind(&kinds)
    .bind(&names)
    .bind(DbTime(now))
    .fetch_one(conn)
    .await
    .context("finding the next alarm")?;
    Ok(AlarmScan {
        due,
        next: next.map(|t| t.0),
    })
}

/// Moves the alarms of `job` later than `at` to `at`; see
/// [`Backend::pull_alarms_to`](crate::store::Backend::pull_alarms_to).
pub(super) async fn pull_alarms_to(
    conn: &mut PgConnection,
    sql: &Sql,
    kind: JobKind,
    job: &str,
    at: Timestamp,
) -> Result<u64, StoreError> {
    let moved = sqlx::query(&sql.get(
        "UPDATE {s}.instances SET alarm_at = $3, version = version + 1
          WHERE kind = $1 AND job = $2 AND alarm_at IS NOT NULL AND broken IS NULL
            AND alarm_at > $3 AND retry_attempt <= 1 AND lease_owner IS NULL",
    ))
    .bind(kind.as_str())
    .bind(job)
    .bind(DbTime(at))
    .execute(conn)
    .await
    .context("moving alarms")?;
    Ok(moved.rows_affected())
}

/// Releases every lease and makes its alarm due at `now`. Returns how many rows had a lease.
pub(super) async fn release_all_leases(
    conn: &mut PgConnection,
    sql: &Sql,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let released = sqlx::query(&sql.get(
        "UPDATE {s}.instances
            SET lease_owner = NULL, lease_until = NULL, alarm_at = $1, version = version + 1
          WHERE lease_owner IS NOT NULL",
    ))
    .bind(DbTime(now))
    .execute(conn)
    .await
    .context("releasing leases")?;
    Ok(released.rows_affected())
}

/// Deletes up to `limit` event-id records seen before `before`, oldest first.
pub(super) async fn prune_event_ids(
    conn: &mut PgConnection,
    sql: &Sql,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let pruned = sqlx::query(&sql.get(
        "DELETE FROM {s}.event_ids WHERE (kind, job, id, event_id) IN (
            SELECT kind, job, id, event_id FROM {s}.event_ids
             WHERE seen_at < $1 ORDER BY seen_at LIMIT $2
               FOR UPDATE SKIP LOCKED)",
    ))
    .bind(DbTime(before))
    .bind(i64::from(limit))
    .execute(conn)
    .await
    .context("pruning event ids")?;
    Ok(pruned.rows_affected())
}

/// Up to `limit` outbox events, oldest first.
pub(super) async fn outbox_peek(
    conn: &mut PgConnection,
    sql: &Sql,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as(&sql.get("SELECT seq, json FROM {s}.outbox ORDER BY seq LIMIT $1"))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(conn)
            .await
            .context("reading the outbox")?;
    Ok(rows
        .into_iter()
        .map(|(seq, json)| OutboxEntry { seq, json })
        .collect())
}

/// Removes outbox events up to and including `seq`.
pub(super) async fn outbox_ack(
    conn: &mut PgConnection,
    sql: &Sql,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(&sql.get("DELETE FROM {s}.outbox WHERE seq <= $1"))
        .bind(seq)
        .execute(conn)
        .await
        .context("acknowledging outbox events")?;
    Ok(())
}

/// Binds the columns of [`record_columns!`] to `$1` .. `$21`.
fn bind_record<'q>(
    query: Query<'q, Postgres, PgArguments>,
    r: &'q InstanceRecord,
) -> Query<'q, Postgres, PgArguments> {
    let (lease_owner, lease_until) = match &r.lease {
        Some(lease) => (Some(lease.owner.as_str()), Some(DbTime(lease.until))),
        None => (None, None),
    };
    query
        .bind(r.key.kind().as_str())
        .bind(r.key.job())
        .bind(r.key.id())
        .bind(r.state.as_deref())
        .bind(DbTime(r.created_at))
        .bind(DbTime(r.updated_at))
        .bind(to_i64(r.run_count))
        .bind(to_i64(r.event_count))
        .bind(to_i64(r.execute_count))
        .bind(db_time(r.batch_started_at))
        .bind(db_time(r.last_event_at))
        .bind(db_time(r.alarm_at))
        .bind(i64::from(r.retry_attempt))
        .bind(db_time(r.retry_started_at))
        .bind(r.retry_last_error.as_deref())
        .bind(to_i64(r.version))
        .bind(lease_owner)
        .bind(lease_until)
        .bind(to_i64(r.lease_generation))
        .bind(i64::from(r.state_version))
        .bind(r.broken.as_deref())
}

pub(super) fn parse_kind(name: &str) -> Result<JobKind, StoreError> {
    JobKind::parse(name).ok_or_else(|| {
        super::codec::database_error(format!("unknown job kind {name:?} in the instances table"))
    })
}

/// Reads a row selected with [`record_columns!`].
pub(super) fn record_from_row(row: &PgRow) -> Result<InstanceRecord, StoreError> {
    let read = || -> Result<InstanceRecord, sqlx::Error> {
        let time = |i: usize| -> Result<Option<Timestamp>, sqlx::Error> {
            Ok(row.try_get::<Option<DbTime>, _>(i)?.map(|t| t.0))
        };
        let lease = match (row.try_get::<Option<String>, _>(16)?, time(17)?) {
            (Some(owner), Some(until)) => Some(Lease { owner, until }),
            _ => None,
        };
        let kind: String = row.try_get(0)?;
        let kind = JobKind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "kind".into(),
            source: format!("unknown job kind {kind:?}").into(),
        })?;
        Ok(InstanceRecord {
            key: InstanceKey::new(
                kind,
                row.try_get::<String, _>(1)?,
                row.try_get::<String, _>(2)?,
            ),
            state: row.try_get(3)?,
            created_at: row.try_get::<DbTime, _>(4)?.0,
            updated_at: row.try_get::<DbTime, _>(5)?.0,
            run_count: to_u64(row.try_get(6)?),
            event_count: to_u64(row.try_get(7)?),
            execute_count: to_u64(row.try_get(8)?),
            batch_started_at: time(9)?,
            last_event_at: time(10)?,
            alarm_at: time(11)?,
            retry_attempt: to_u32(row.try_get(12)?),
            retry_started_at: time(13)?,
            retry_last_error: row.try_get(14)?,
            version: to_u64(row.try_get(15)?),
            lease,
            lease_generation: to_u64(row.try_get(18)?),
            state_version: to_u32(row.try_get(19)?),
            broken: row.try_get(20)?,
        })
    };
    read().context("reading an instance")
}
