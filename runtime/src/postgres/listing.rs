//! Operators' reads of instances: listings, keys, counts per job, unregistered jobs and broken
//! instances.

use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::codec::{to_u64, Context, DbTime, Sql};
use super::instances::{parse_kind, record_columns, record_from_row};
use crate::id::{InstanceKey, JobKind};
use crate::store::{InstanceCounts, InstanceQuery, InstanceRecord, StoreError, UnregisteredJob};
use crate::time::Timestamp;

/// Instances matching `query` in key order. The statement is built from the conditions set, so
/// the key comparison of `after` (a row value) seeks in the primary key.
pub(super) async fn list_instances(
    conn: &mut PgConnection,
    sql: &Sql,
    query: &InstanceQuery,
) -> Result<Vec<InstanceRecord>, StoreError> {
    let select = sql.expand(concat!(
        "SELECT ",
        record_columns!(),
        " FROM {s}.instances WHERE true"
    ));
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(select);
    if let Some(kind) = query.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(job) = &query.job {
        q.push(" AND job = ").push_bind(job.as_str());
    }
    match query.has_alarm {
        Some(true) => {
            q.push(" AND alarm_at IS NOT NULL");
        }
        Some(false) => {
            q.push(" AND alarm_at IS NULL");
        }
        None => {}
    }
    match query.retrying {
        Some(true) => {
            q.push(" AND retry_attempt > 0");
        }
        Some(false) => {
            q.push(" AND retry_attempt = 0");
        }
        None => {}
    }
    if let Some(at) = query.due_before {
        q.push(" AND alarm_at <= ").push_bind(DbTime(at));
    }
    if let Some(after) = &query.after {
        q.push(" AND (kind, job, id) > (")
            .push_bind(after.kind().as_str())
            .push(", ")
            .push_bind(after.job())
            .push(", ")
            .push_bind(after.id())
            .push(")");
    }
    q.push(" ORDER BY kind, job, id LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = q
        .build()
        .fetch_all(conn)
        .await
        .context("listing instances")?;
    rows.iter().map(record_from_row).collect()
}

/// Up to `limit` instance keys after `after`, in key order: a walk of the primary key that
/// reads no state.
pub(super) async fn instance_keys(
    conn: &mut PgConnection,
    sql: &Sql,
    after: Option<&InstanceKey>,
    limit: u32,
) -> Result<Vec<InstanceKey>, StoreError> {
    let limit = i64::from(limit);
    let rows: Vec<(String, String, String)> = match after {
        None => {
            sqlx::query_as(
                &sql.get("SELECT kind, job, id FROM {s}.instances ORDER BY kind, job, id LIMIT $1"),
            )
            .bind(limit)
            .fetch_all(conn)
            .await
        }
        Some(k) => {
            sqlx::query_as(&sql.get(
                "SELECT kind, job, id FROM {s}.instances WHERE (kind, job, id) > ($1, $2, $3)
              ORDER BY kind, job, id LIMIT $4",
            ))
            .bind(k.kind().as_str())
            .bind(k.job())
            .bind(k.id())
            .bind(limit)
            .fetch_all(conn)
            .await
        }
    }
    .context("listing instance keys")?;
    rows.into_iter()
        .map(|(kind, job, id)| Ok(InstanceKey::new(parse_kind(&kind)?, job, id)))
        .collect()
}

/// Per job: instances, scheduled ones, retrying ones, due ones at `now`, the most overdue
/// alarm and the next one. One pass over the table.
pub(super) async fn count_instances(
    conn: &mut PgConnection,
    sql: &Sql,
    now: Timestamp,
) -> Result<Vec<InstanceCounts>, StoreError> {
    let rows = sqlx::query(&sql.get(
        "SELECT kind, job, count(*), count(alarm_at),
                count(*) FILTER (WHERE retry_attempt > 0),
                count(*) FILTER (WHERE alarm_at <= $1),
                min(alarm_at) FILTER (WHERE alarm_at <= $1),
                min(alarm_at) FILTER (WHERE alarm_at > $1)
           FROM {s}.instances GROUP BY kind, job ORDER BY kind, job",
    ))
    .bind(DbTime(now))
    .fetch_all(conn)
    .await
    .context("counting instances")?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    row.try_get::<String, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    [
                        row.try_get::<i64, _>(2)?,
                        row.try_get::<i64, _>(3)?,
                        row.try_get::<i64, _>(4)?,
                        row.try_get::<i64, _>(5)?,
                    ],
                    row.try_get::<Option<DbTime>, _>(6)?,
                    row.try_get::<Option<DbTime>, _>(7)?,
                ))
            };
            let (kind, job, [total, scheduled, retrying, due], oldest_due, next_alarm) =
                read().context("counting instances")?;
            Ok(InstanceCounts {
                kind: parse_kind(&kind)?,
                job,
                total: to_u64(total),
                scheduled: to_u64(scheduled),
                retrying: to_u64(retrying),
                due: to_u64(due),
                oldest_due: oldest_due.map(|t| t.0),
                next_alarm: next_alarm.map(|t| t.0),
            })
        })
        .collect()
}

/// The broken instances of `job`, by the partial index that holds only them.
pub(super) async fn load_broken(
    conn: &mut PgConnection,
    sql: &Sql,
    kind: JobKind,
    job: &str,
) -> Result<Vec<InstanceRecord>, StoreError> {
    let rows = sqlx::query(&sql.get(concat!(
        "SELECT ",
        record_columns!(),
        " FROM {s}.instances WHERE kind = $1 AND job = $2 AND broken IS NOT NULL"
    )))
    .bind(kind.as_str())
    .bind(job)
    .fetch_all(conn)
    .await
    .context("loading broken instances")?;
    rows.iter().map(record_from_row).collect()
}

/// The jobs with instances that are not in `registered`, each with its number of instances.
/// Finds the distinct jobs by skipping from one to the next along the primary key (a recursive
/// query, one index lookup per job, whatever the number of instances), and counts the instances
/// of unregistered jobs only.
pub(super) async fn unregistered_jobs(
    conn: &mut PgConnection,
    sql: &Sql,
    registered: &[(JobKind, &str)],
) -> Result<Vec<UnregisteredJob>, StoreError> {
    let jobs: Vec<(String, String)> = sqlx::query_as(&sql.get(
        "WITH RECURSIVE jobs (kind, job) AS (
            (SELECT kind, job FROM {s}.instances ORDER BY kind, job LIMIT 1)
            UNION ALL
            SELECT n.kind, n.job FROM jobs j CROSS JOIN LATERAL (
                SELECT i.kind, i.job FROM {s}.instances i
                 WHERE (i.kind, i.job) > (j.kind, j.job) ORDER BY i.kind, i.job LIMIT 1) n
         )
         SELECT kind, job FROM jobs",
    ))
    .fetch_all(&mut *conn)
    .await
    .context("listing jobs")?;
    let mut found = Vec::new();
    for (kind, job) in jobs {
        // A kind this build does not know is not a job it could register.
        let Some(parsed) = JobKind::parse(&kind) else {
            continue;
        };
        if registered
            .iter()
            .any(|(k, name)| *k == parsed && *name == job)
        {
            continue;
        }
        let count: i64 = sqlx::query_scalar(
            &sql.get("SELECT count(*) FROM {s}.instances WHERE kind = $1 AND job = $2"),
        )
        .bind(&kind)
        .bind(&job)
        .fetch_one(&mut *conn)
        .await
        .context("counting instances")?;
        found.push(UnregisteredJob {
            kind: parsed,
            name: job,
            instances: to_u64(count),
        });
    }
    Ok(found)
}
