//! SQL for instances (with their alarm and lease) and processed event ids.
//!
//! Every function takes the connection it runs on; the caller decides whether that is the
//! writer (inside a write group) or a reader.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row, Statement};

use super::{limit_to_sql, outbox, u64_from_sql, u64_to_sql, Context};
use crate::id::{InstanceKey, JobKind};
use crate::store::{
    AlarmScan, Columns, InstanceCounts, InstanceQuery, InstanceRecord, Lease, StoreError,
    UnregisteredJob, Write, WriteBatch,
};
use crate::time::Timestamp;

/// The columns of an instance row, in the order [`record_from_row`] reads them and
/// [`bind_record`] binds them (`?1` to `?21`).
macro_rules! record_columns {
    () => {
        "kind, job, id, state, created_at, updated_at, run_count, event_count, execute_count, \
         batch_started_at, last_event_at, alarm_at, retry_attempt, retry_started_at, \
         retry_last_error, version, lease_owner, lease_until, lease_generation, state_version, \
         broken"
    };
}

/// The parameter of the expected version in an update, after those of [`bind_record`].
const EXPECTED_VERSION: usize = 22;

/// The instance row of `key`, if any.
pub(super) fn load(
    conn: &Connection,
    key: &InstanceKey,
) -> Result<Option<InstanceRecord>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        record_columns!(),
        " FROM instances WHERE kind = ?1 AND job = ?2 AND id = ?3"
    ))
    .context("preparing to load an instance")?
    .query_row(params![key.kind(), key.job(), key.id()], record_from_row)
    .optional()
    .context_with(|| format!("loading {key}"))
}

/// Whether `event_id` was recorded for `key`.
pub(super) fn has_event_id(
    conn: &Connection,
    key: &InstanceKey,
    event_id: &str,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM event_ids WHERE kind = ?1 AND job = ?2 AND id = ?3 AND event_id = ?4",
    )
    .context("preparing to look up an event id")?
    .exists(params![key.kind(), key.job(), key.id(), event_id])
    .context_with(|| format!("looking up event {event_id} of {key}"))
}

/// Applies every write of `batch`, as one write job of the writer: an error leaves nothing of
/// the batch applied.
pub(super) fn apply_batch(conn: &Connection, batch: &WriteBatch) -> Result<(), StoreError> {
    for write in batch {
        match write {
            Write::Insert(record) => insert(conn, record)?,
            Write::Update {
                record,
                expected_version,
                changed,
            } => update(conn, record, *expected_version, *changed)?,
            Write::Delete {
                key,
                expected_version,
            } => delete(conn, key, *expected_version)?,
            Write::RecordEvent { key, event_id, at } => record_event(conn, key, event_id, *at)?,
            Write::Outbox(rows) => outbox::append(conn, rows)?,
        }
    }
    Ok(())
}

fn insert(conn: &Connection, record: &InstanceRecord) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "INSERT INTO instances (",
            record_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)
             ON CONFLICT DO NOTHING"
        ))
        .context("preparing to insert an instance")?;
    bind_record(&mut stmt, record).context("binding an instance")?;
    match stmt
        .raw_execute()
        .context_with(|| format!("inserting {}", record.key))?
    {
        0 => Err(StoreError::Conflict(record.key.clone())),
        _ => Ok(()),
    }
}

fn update(
    conn: &Connection,
    record: &InstanceRecord,
    expected_version: u64,
    changed: Columns,
) -> Result<(), StoreError> {
    let mut stmt = UPDATE_SQL
        .with(|cache| {
            let mut cache = cache.borrow_mut();
            let sql = cache
                .entry(changed.bits())
                .or_insert_with(|| update_sql(changed));
            conn.prepare_cached(sql)
        })
        .context("preparing to update an instance")?;
    // Every column is bound; the statement uses those of `changed`.
    bind_record(&mut stmt, record).context("binding an instance")?;
    stmt.raw_bind_parameter(EXPECTED_VERSION, u64_to_sql(expected_version))
        .context("binding a version")?;
    match stmt
        .raw_execute()
        .context_with(|| format!("updating {}", record.key))?
    {
        0 => Err(StoreError::Conflict(record.key.clone())),
        _ => Ok(()),
    }
}

thread_local! {
    /// The `UPDATE` of each set of columns seen, built once (writes run on one thread).
    static UPDATE_SQL: RefCell<HashMap<u16, String>> = RefCell::new(HashMap::new());
}

/// `UPDATE instances SET` the columns of `changed` only, with the parameter numbers of
/// [`bind_record`], fenced on the version (`?22`). Leaving a column out also leaves its index
/// alone: an `add` that does not move the alarm does not touch `instances_alarms`.
fn update_sql(changed: Columns) -> String {
    const SETS: [(Columns, &str); 12] = [
        (Columns::STATE, "state = ?4, state_version = ?20"),
        (Columns::BROKEN, "broken = ?21"),
        (Columns::CREATED_AT, "created_at = ?5"),
        (Columns::UPDATED, "updated_at = ?6, version = ?16"),
        (Columns::RUN_COUNT, "run_count = ?7"),
        (Columns::EVENT_COUNT, "event_count = ?8"),
        (Columns::EXECUTE_COUNT, "execute_count = ?9"),
        (Columns::BATCH_STARTED_AT, "batch_started_at = ?10"),
        (Columns::LAST_EVENT_AT, "last_event_at = ?11"),
        (Columns::ALARM_AT, "alarm_at = ?12"),
        (
            Columns::RETRY,
            "retry_attempt = ?13, retry_started_at = ?14, retry_last_error = ?15",
        ),
        (
            Columns::LEASE,
            "lease_owner = ?17, lease_until = ?18, lease_generation = ?19",
        ),
    ];
    let sets: Vec<&str> = SETS
        .iter()
        .filter(|(column, _)| changed.contains(*column) || *column == Columns::UPDATED)
        .map(|(_, set)| *set)
        .collect();
    format!(
        "UPDATE instances SET {} WHERE kind = ?1 AND job = ?2 AND id = ?3 AND version = ?{EXPECTED_VERSION}",
        sets.join(", ")
    )
}

fn delete(conn: &Connection, key: &InstanceKey, expected_version: u64) -> Result<(), StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM instances WHERE kind = ?1 AND job = ?2 AND id = ?3 AND version = ?4",
        )
        .context("preparing to delete an instance")?
        .execute(params![
            key.kind(),
            key.job(),
            key.id(),
            u64_to_sql(expected_version)
        ])
        .context_with(|| format!("deleting {key}"))?;
    match deleted {
        0 => Err(StoreError::Conflict(key.clone())),
        _ => Ok(()),
    }
}

fn record_event(
    conn: &Connection,
    key: &InstanceKey,
    event_id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO event_ids (kind, job, id, event_id, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )
        .context("preparing to record an event id")?
        .execute(params![key.kind(), key.job(), key.id(), event_id, at])
        .context_with(|| format!("recording event {event_id} of {key}"))?;
    match inserted {
        0 => Err(StoreError::DuplicateEvent {
            key: key.clone(),
            event_id: event_id.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Claims the alarm of `key` if it is due and not held by a live lease; see
/// [`Backend::claim_alarm`](crate::store::Backend::claim_alarm).
pub(super) fn claim_alarm(
    conn: &Connection,
    key: &InstanceKey,
    now: Timestamp,
    owner: &str,
    lease_until: Timestamp,
) -> Result<Option<InstanceRecord>, StoreError> {
    conn.prepare_cached(concat!(
        "UPDATE instances
            SET lease_owner = ?5, lease_until = ?6, alarm_at = ?6,
                lease_generation = lease_generation + 1, version = version + 1
          WHERE kind = ?1 AND job = ?2 AND id = ?3
            AND alarm_at IS NOT NULL AND alarm_at <= ?4
            AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?4)
          RETURNING ",
        record_columns!()
    ))
    .context("preparing to claim an alarm")?
    .query_row(
        params![key.kind(), key.job(), key.id(), now, owner, lease_until],
        record_from_row,
    )
    .optional()
    .context_with(|| format!("claiming the alarm of {key}"))
}

/// Claims `key` for an execution a client action runs, if its version is still
/// `expected_version`: the lease, a new generation and version; the alarm is left alone.
pub(super) fn claim_instance(
    conn: &Connection,
    key: &InstanceKey,
    expected_version: u64,
    owner: &str,
    lease_until: Timestamp,
) -> Result<Option<InstanceRecord>, StoreError> {
    conn.prepare_cached(concat!(
        "UPDATE instances
            SET lease_owner = ?5, lease_until = ?6,
                lease_generation = lease_generation + 1, version = version + 1
          WHERE kind = ?1 AND job = ?2 AND id = ?3 AND version = ?4
          RETURNING ",
        record_columns!()
    ))
    .context("preparing to claim an instance")?
    .query_row(
        params![
            key.kind(),
            key.job(),
            key.id(),
            u64_to_sql(expected_version),
            owner,
            lease_until
        ],
        record_from_row,
    )
    .optional()
    .context_with(|| format!("claiming {key}"))
}

/// Extends the leases of `owner` to `lease_until`, and the alarms that stand for them (an
/// alarm claim moved the alarm to its lease's expiry; a client action's claim left it alone).
///
/// The version is left alone: the executions holding these leases write with the version they
/// claimed.
pub(super) fn renew_leases(
    conn: &Connection,
    owner: &str,
    lease_until: Timestamp,
) -> Result<u64, StoreError> {
    let renewed = conn
        .prepare_cached(
            "UPDATE instances
                SET alarm_at = CASE WHEN alarm_at = lease_until THEN ?2 ELSE alarm_at END,
                    lease_until = ?2
              WHERE lease_owner = ?1",
        )
        .context("preparing to renew leases")?
        .execute(params![owner, lease_until])
        .context("renewing leases")?;
    Ok(renewed as u64)
}

/// Due alarms of `jobs`, earliest first, and the first alarm of `jobs` after `now`. Each job's
/// queries walk its range of the partial index on `(kind, job, alarm_at)`, which holds the key
/// and leaves out broken instances: the cost depends on `limit` and the number of jobs, not on
/// the number of instances, nor on alarms of jobs not asked for.
pub(super) fn scan_alarms(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
    jobs: &[(JobKind, &str)],
) -> Result<AlarmScan, StoreError> {
    let mut due = Vec::new();
    let mut next: Option<Timestamp> = None;
    let mut due_stmt = conn
        .prepare_cached(
            "SELECT id, alarm_at FROM instances
              WHERE kind = ?1 AND job = ?2 AND alarm_at IS NOT NULL AND broken IS NULL
                AND alarm_at <= ?3
              ORDER BY alarm_at LIMIT ?4",
        )
        .context("preparing to scan due alarms")?;
    let mut next_stmt = conn
        .prepare_cached(
            "SELECT MIN(alarm_at) FROM instances
              WHERE kind = ?1 AND job = ?2 AND alarm_at IS NOT NULL AND broken IS NULL
                AND alarm_at > ?3",
        )
        .context("preparing to find the next alarm")?;
    for (kind, job) in jobs {
        if limit > 0 {
            let mut rows = due_stmt
                .query(params![kind, job, now, limit_to_sql(limit)])
                .context("scanning due alarms")?;
            while let Some(row) = rows.next().context("scanning due alarms")? {
                let key = InstanceKey::new(
                    *kind,
                    *job,
                    row.get::<_, String>(0).context("reading an alarm")?,
                );
                due.push((key, row.get(1).context("reading an alarm")?));
            }
        }
        let job_next: Option<Timestamp> = next_stmt
            .query_row(params![kind, job, now], |row| row.get(0))
            .context("finding the next alarm")?;
        next = match (next, job_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if jobs.len() > 1 {
        due.sort_by_key(|(_, at)| *at);
        due.truncate(limit);
    }
    Ok(AlarmScan { due, next })
}

/// Instances matching `query` in key order. The statement is built from the conditions set, so
/// the key comparison of `after` (a row value) seeks in the primary key instead of scanning
/// from its start.
/// Up to `limit` instance keys after `after`, in key order: a walk of the primary key that
/// reads no state.
pub(super) fn instance_keys(
    conn: &Connection,
    after: Option<&InstanceKey>,
    limit: u32,
) -> Result<Vec<InstanceKey>, StoreError> {
    let key = |row: &Row<'_>| {
        Ok(InstanceKey::new(
            row.get(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    };
    let limit = i64::from(limit);
    let rows = match after {
        // Two statements: with `?1 IS NULL OR ...` SQLite could not seek to `after`.
        None => conn
            .prepare_cached("SELECT kind, job, id FROM instances ORDER BY kind, job, id LIMIT ?1")
            .context("preparing to list instance keys")?
            .query_map(params![limit], key)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>()),
        Some(k) => conn
            .prepare_cached(
                "SELECT kind, job, id FROM instances WHERE (kind, job, id) > (?1, ?2, ?3)
                  ORDER BY kind, job, id LIMIT ?4",
            )
            .context("preparing to list instance keys")?
            .query_map(params![k.kind().as_str(), k.job(), k.id(), limit], key)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>()),
    };
    rows.context("listing instance keys")
}

pub(super) fn list_instances(
    conn: &Connection,
    query: &InstanceQuery,
) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut sql = String::from(concat!(
        "SELECT ",
        record_columns!(),
        " FROM instances WHERE 1 = 1"
    ));
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let bind = |values: &mut Vec<rusqlite::types::Value>, v: rusqlite::types::Value| {
        values.push(v);
        format!("?{}", values.len())
    };
    if let Some(kind) = query.kind {
        let p = bind(&mut values, kind.as_str().to_owned().into());
        sql.push_str(&format!(" AND kind = {p}"));
    }
    if let Some(job) = &query.job {
        let p = bind(&mut values, job.clone().into());
        sql.push_str(&format!(" AND job = {p}"));
    }
    match query.has_alarm {
        Some(true) => sql.push_str(" AND alarm_at IS NOT NULL"),
        Some(false) => sql.push_str(" AND alarm_at IS NULL"),
        None => {}
    }
    match query.retrying {
        Some(true) => sql.push_str(" AND retry_attempt > 0"),
        Some(false) => sql.push_str(" AND retry_attempt = 0"),
        None => {}
    }
    if let Some(at) = query.due_before {
        let p = bind(&mut values, at.as_millis().into());
        sql.push_str(&format!(" AND alarm_at <= {p}"));
    }
    if let Some(after) = &query.after {
        let k = bind(&mut values, after.kind().as_str().to_owned().into());
        let j = bind(&mut values, after.job().to_owned().into());
        let i = bind(&mut values, after.id().to_owned().into());
        sql.push_str(&format!(" AND (kind, job, id) > ({k}, {j}, {i})"));
    }
    let l = bind(&mut values, i64::from(query.limit).into());
    sql.push_str(&format!(" ORDER BY kind, job, id LIMIT {l}"));
    let mut stmt = conn
        .prepare_cached(&sql)
        .context("preparing to list instances")?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values.iter()), record_from_row)
        .context("listing instances")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("listing instances")
}

/// Per job: instances, scheduled ones, retrying ones, due ones at `now`, the most overdue
/// alarm and the next one. One pass over the table.
pub(super) fn count_instances(
    conn: &Connection,
    now: Timestamp,
) -> Result<Vec<InstanceCounts>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, job, COUNT(*),
                    COUNT(alarm_at),
                    SUM(retry_attempt > 0),
                    SUM(alarm_at IS NOT NULL AND alarm_at <= ?1),
                    MIN(CASE WHEN alarm_at <= ?1 THEN alarm_at END),
                    MIN(CASE WHEN alarm_at > ?1 THEN alarm_at END)
               FROM instances GROUP BY kind, job ORDER BY kind, job",
        )
        .context("preparing to count instances")?;
    let rows = stmt
        .query_map(params![now], |row| {
            Ok(InstanceCounts {
                kind: row.get(0)?,
                job: row.get(1)?,
                total: u64_from_sql(row.get(2)?),
                scheduled: u64_from_sql(row.get(3)?),
                retrying: u64_from_sql(row.get::<_, Option<i64>>(4)?.unwrap_or(0)),
                due: u64_from_sql(row.get::<_, Option<i64>>(5)?.unwrap_or(0)),
                oldest_due: row.get(6)?,
                next_alarm: row.get(7)?,
            })
        })
        .context("counting instances")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("counting instances")
}

/// The broken instances of `job`, by the partial index that holds only them.
pub(super) fn load_broken(
    conn: &Connection,
    kind: JobKind,
    job: &str,
) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            record_columns!(),
            // Without statistics SQLite would walk the job's range of the primary key.
            " FROM instances INDEXED BY instances_broken
               WHERE kind = ?1 AND job = ?2 AND broken IS NOT NULL"
        ))
        .context("preparing to load broken instances")?;
    let rows = stmt
        .query_map(params![kind, job], record_from_row)
        .context("loading broken instances")?;
    rows.collect::<rusqlite::Result<_>>()
        .context("loading broken instances")
}

/// The jobs with instances that are not in `registered`, each with its number of instances.
/// Finds the distinct jobs by skipping from one to the next along the primary key: one lookup
/// per job, whatever the number of instances (only those of unregistered jobs are counted).
pub(super) fn unregistered_jobs(
    conn: &Connection,
    registered: &[(JobKind, &str)],
) -> Result<Vec<UnregisteredJob>, StoreError> {
    let mut next_job = conn
        .prepare_cached(
            "SELECT kind, job FROM instances WHERE (kind, job) > (?1, ?2)
              ORDER BY kind, job LIMIT 1",
        )
        .context("preparing to list jobs")?;
    let mut count = conn
        .prepare_cached("SELECT count(*) FROM instances WHERE kind = ?1 AND job = ?2")
        .context("preparing to count instances")?;
    let mut found = Vec::new();
    let (mut kind, mut job) = (String::new(), String::new());
    while let Some((k, j)) = next_job
        .query_row(params![kind, job], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()
        .context("listing jobs")?
    {
        let parsed = JobKind::parse(&k);
        let known = parsed.is_some_and(|p| registered.iter().any(|(rk, rj)| *rk == p && *rj == j));
        if let (Some(parsed), false) = (parsed, known) {
            let n: i64 = count
                .query_row(params![k, j], |row| row.get(0))
                .context("counting instances")?;
            found.push(UnregisteredJob {
                kind: parsed,
                name: j.clone(),
                instances: u64_from_sql(n),
            });
        }
        (kind, job) = (k, j);
    }
    Ok(found)
}

/// Moves the alarms of `job` later than `at` to `at`; see
/// [`Backend::pull_alarms_to`](crate::store::Backend::pull_alarms_to). Walks only the alarms
/// to move, in the alarm index.
pub(super) fn pull_alarms_to(
    conn: &Connection,
    kind: JobKind,
    job: &str,
    at: Timestamp,
) -> Result<u64, StoreError> {
    let moved = conn
        .prepare_cached(
            "UPDATE instances SET alarm_at = ?3, version = version + 1
              WHERE kind = ?1 AND job = ?2 AND alarm_at IS NOT NULL AND broken IS NULL
                AND alarm_at > ?3 AND retry_attempt <= 1 AND lease_owner IS NULL",
        )
        .context("preparing to move alarms")?
        .execute(params![kind, job, at])
        .context("moving alarms")?;
    Ok(moved as u64)
}

/// Releases every lease and makes its alarm due at `now`, so interrupted executions run again
/// at once. Returns how many rows had a lease.
pub(super) fn release_all_leases(conn: &Connection, now: Timestamp) -> Result<u64, StoreError> {
    let released = conn
        .prepare_cached(
            "UPDATE instances SET lease_owner = NULL, lease_until = NULL, alarm_at = ?1, version = version + 1
              WHERE lease_owner IS NOT NULL",
        )
        .context("preparing to release leases")?
        .execute(params![now])
        .context("releasing leases")?;
    Ok(released as u64)
}

/// Deletes up to `limit` event-id records seen before `before`, oldest first (through
/// `event_ids_seen_at`).
pub(super) fn prune_event_ids(
    conn: &Connection,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let pruned = conn
        .prepare_cached(
            "DELETE FROM event_ids WHERE (kind, job, id, event_id) IN (
                SELECT kind, job, id, event_id FROM event_ids
                 WHERE seen_at < ?1 ORDER BY seen_at LIMIT ?2)",
        )
        .context("preparing to prune event ids")?
        .execute(params![before, i64::from(limit)])
        .context("pruning event ids")?;
    Ok(pruned as u64)
}

/// Binds the columns of [`record_columns!`] to `?1` .. `?21`.
fn bind_record(stmt: &mut Statement<'_>, r: &InstanceRecord) -> rusqlite::Result<()> {
    let (lease_owner, lease_until) = match &r.lease {
        Some(lease) => (Some(lease.owner.as_str()), Some(lease.until)),
        None => (None, None),
    };
    stmt.raw_bind_parameter(1, r.key.kind())?;
    stmt.raw_bind_parameter(2, r.key.job())?;
    stmt.raw_bind_parameter(3, r.key.id())?;
    stmt.raw_bind_parameter(4, r.state.as_deref())?;
    stmt.raw_bind_parameter(5, r.created_at)?;
    stmt.raw_bind_parameter(6, r.updated_at)?;
    stmt.raw_bind_parameter(7, u64_to_sql(r.run_count))?;
    stmt.raw_bind_parameter(8, u64_to_sql(r.event_count))?;
    stmt.raw_bind_parameter(9, u64_to_sql(r.execute_count))?;
    stmt.raw_bind_parameter(10, r.batch_started_at)?;
    stmt.raw_bind_parameter(11, r.last_event_at)?;
    stmt.raw_bind_parameter(12, r.alarm_at)?;
    stmt.raw_bind_parameter(13, r.retry_attempt)?;
    stmt.raw_bind_parameter(14, r.retry_started_at)?;
    stmt.raw_bind_parameter(15, r.retry_last_error.as_deref())?;
    stmt.raw_bind_parameter(16, u64_to_sql(r.version))?;
    stmt.raw_bind_parameter(17, lease_owner)?;
    stmt.raw_bind_parameter(18, lease_until)?;
    stmt.raw_bind_parameter(19, u64_to_sql(r.lease_generation))?;
    stmt.raw_bind_parameter(20, r.state_version)?;
    stmt.raw_bind_parameter(21, r.broken.as_deref())?;
    Ok(())
}

/// Reads a row selected with [`record_columns!`].
fn record_from_row(row: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    let lease = match (
        row.get::<_, Option<String>>(16)?,
        row.get::<_, Option<Timestamp>>(17)?,
    ) {
        (Some(owner), Some(until)) => Some(Lease { owner, until }),
        _ => None,
    };
    Ok(InstanceRecord {
        key: InstanceKey::new(
            row.get(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ),
        state: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        run_count: u64_from_sql(row.get(6)?),
        event_count: u64_from_sql(row.get(7)?),
        execute_count: u64_from_sql(row.get(8)?),
        batch_started_at: row.get(9)?,
        last_event_at: row.get(10)?,
        alarm_at: row.get(11)?,
        retry_attempt: row.get(12)?,
        retry_started_at: row.get(13)?,
        retry_last_error: row.get(14)?,
        version: u64_from_sql(row.get(15)?),
        lease,
        lease_generation: u64_from_sql(row.get(18)?),
        state_version: row.get(19)?,
        broken: row.get(20)?,
    })
}

#[cfg(test)]
mod tests {
    //! What is SQLite's own in the instance store: updates that write only the columns named,
    //! and the indexes its queries walk. The contract every backend keeps is checked by the
    //! conformance suite (`store::conformance::instances`), which runs on this store in both
    //! ownership modes.

    use super::super::test_support::*;
    use super::super::SqliteStore;
    use super::*;
    use crate::id::JobKind;
    use crate::store::conformance::instances::every_field_set;
    use crate::store::Backend;

    fn ms(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    async fn insert_all(store: &SqliteStore, records: impl IntoIterator<Item = InstanceRecord>) {
        store
            .commit(records.into_iter().map(Write::Insert).collect())
            .await
            .unwrap();
    }

    /// Every field of `full` changed to another value, the version bumped.
    fn every_field_changed(full: &InstanceRecord) -> InstanceRecord {
        InstanceRecord {
            key: full.key.clone(),
            state: Some("[1]".into()),
            created_at: ms(21),
            updated_at: ms(22),
            run_count: 23,
            event_count: 24,
            execute_count: 25,
            batch_started_at: None,
            last_event_at: Some(ms(27)),
            alarm_at: None,
            retry_attempt: 29,
            retry_started_at: Some(ms(30)),
            retry_last_error: None,
            version: full.version + 1,
            lease: None,
            lease_generation: 33,
            state_version: 34,
            broken: None,
        }
    }

    /// Driver-side because the contract lets a backend write every column of an update
    /// (`Write::Update::changed` names the columns that differ, the others already hold their
    /// values): this store writes only the named ones, which this test proves by naming fewer.
    #[tokio::test]
    async fn a_narrowed_update_writes_its_columns_and_leaves_the_others() {
        let columns = [
            Columns::STATE,
            Columns::CREATED_AT,
            Columns::RUN_COUNT,
            Columns::EVENT_COUNT,
            Columns::EXECUTE_COUNT,
            Columns::BATCH_STARTED_AT,
            Columns::LAST_EVENT_AT,
            Columns::ALARM_AT,
            Columns::RETRY,
            Columns::LEASE,
            Columns::BROKEN,
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        for (i, column) in columns.into_iter().enumerate() {
            let full = every_field_set(key(&format!("n{i}")));
            insert_all(&store, [full.clone()]).await;
            let new = every_field_changed(&full);
            let changed = Columns::between(&full, &new);
            assert_eq!(changed, Columns::ALL, "every field differs");
            store
                .commit(vec![Write::Update {
                    record: new.clone(),
                    expected_version: full.version,
                    changed: Columns::UPDATED.union(column),
                }])
                .await
                .unwrap();
            let stored = store.load(&full.key).await.unwrap().unwrap();
            // What was written is exactly `column` (and the version): against the stored row,
            // the new row differs in nothing else.
            assert_eq!(
                Columns::between(&stored, &new),
                Columns::UPDATED.union(
                    columns
                        .into_iter()
                        .filter(|c| *c != column)
                        .fold(Columns::UPDATED, Columns::union)
                ),
                "column {i}"
            );
            assert_eq!(
                (stored.version, stored.updated_at),
                (new.version, new.updated_at)
            );
        }
    }

    /// The SQL of every statement `f` runs on a connection to the store's file, as the store
    /// wrote it (parameters unbound).
    fn statements_run_by(
        dir: &tempfile::TempDir,
        f: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> (Connection, Vec<String>) {
        drop(file_store(dir));
        let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
        // rusqlite's trace callback is a function pointer, so statements are collected per
        // thread: `f` runs on this one.
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        fn record(event: rusqlite::trace::TraceEvent<'_>) {
            if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event {
                SEEN.with_borrow_mut(|seen| seen.push(stmt.sql().into_owned()));
            }
        }
        SEEN.with_borrow_mut(Vec::clear);
        conn.trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(record),
        );
        f(&conn).unwrap();
        conn.trace_v2(rusqlite::trace::TraceEventCodes::empty(), None);
        let statements = SEEN.with_borrow_mut(std::mem::take);
        assert!(!statements.is_empty(), "the function ran no statement");
        (conn, statements)
    }

    /// The query plan of `sql`, its steps joined by `; `.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps.join("; ")
    }

    #[test]
    fn alarm_queries_only_walk_the_alarm_index() {
        let dir = tempfile::tempdir().unwrap();
        let jobs: &[(JobKind, &'static str)] = &[(JobKind::Task, "job")];
        // Every statement of `scan_alarms`, `pull_alarms_to` and `load_broken`, as they run.
        let (conn, statements) = statements_run_by(&dir, |conn| {
            scan_alarms(conn, ms(0), 10, jobs)?;
            pull_alarms_to(conn, JobKind::Task, "job", ms(0))?;
            load_broken(conn, JobKind::Task, "job").map(drop)
        });
        assert_eq!(statements.len(), 4, "{statements:?}");
        for sql in &statements[..2] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("COVERING INDEX instances_alarms"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
        let pull = plan(&conn, &statements[2]);
        assert!(pull.contains("INDEX instances_alarms"), "{pull}");
        let broken = plan(&conn, &statements[3]);
        assert!(broken.contains("INDEX instances_broken"), "{broken}");
    }

    #[test]
    fn releasing_leases_only_walks_leased_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, statements) =
            statements_run_by(&dir, |conn| release_all_leases(conn, ms(0)).map(drop));
        for sql in &statements {
            let plan = plan(&conn, sql);
            assert!(plan.contains("instances_leased"), "{sql}: {plan}");
        }
    }

    #[test]
    fn listing_after_a_key_seeks_in_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        drop(file_store(&dir));
        let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT * FROM instances WHERE kind = 'task' AND (kind, job, id) > ('task', 'a', 'b') ORDER BY kind, job, id LIMIT 10",
            )
            .unwrap()
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("SEARCH") && p.contains("PRIMARY KEY")),
            "{plan:?}"
        );
    }
}
