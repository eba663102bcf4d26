//! Reads and operators' writes: runs, counts, steps and logs; cancel, delete and purge.

use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::codec::{fetch_runs, run_columns, run_from_row};
use super::fenced::delete_steps_and_logs;
use crate::postgres::codec::{database_error, to_u64, Context, DbTime, Sql};
use crate::store::runs::{
    is_valid_label_key, CancelOutcome, DeleteOutcome, LogLevel, LogRow, RunCounts, RunFilter,
    RunRecord, RunStatus, StepRow, StepStatus,
};
use crate::store::StoreError;
use crate::time::Timestamp;

/// One run, as last committed.
pub(crate) async fn get_run(
    conn: &mut PgConnection,
    sql: &Sql,
    id: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let statement = sql.get(concat!(
        "SELECT ",
        run_columns!(),
        " FROM {s}.runs r WHERE r.id = $1"
    ));
    Ok(fetch_runs(conn, sqlx::query(&statement).bind(id))
        .await?
        .pop())
}

/// A run, locked until the end of the caller's transaction.
async fn lock_run(
    conn: &mut PgConnection,
    sql: &Sql,
    id: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let statement = sql.get(concat!(
        "SELECT ",
        run_columns!(),
        " FROM {s}.runs r WHERE r.id = $1 FOR UPDATE OF r"
    ));
    Ok(fetch_runs(conn, sqlx::query(&statement).bind(id))
        .await?
        .pop())
}

/// A page of runs, newest first (ties by id, newest first), read as a page of an index rather
/// than a walk of the history:
///
/// - a single status or job is a plain equality, so `runs_status_created` or
///   `runs_job_created` is read backwards from the page's start (an `= ANY($1)` of one value
///   would not be read in creation order: the planner walks every run newest first and
///   filters);
/// - a label filter is driven from the label's rows (`run_labels_listed`, which carry their
///   run's creation time), newest first, each joined to its run: probing the labels of every
///   run until a page is found reads the history when the label is rare;
/// - the cursor and the time range bound the same index ranges.
pub(crate) async fn get_runs(
    conn: &mut PgConnection,
    sql: &Sql,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    for key in filter.labels.keys() {
        if !is_valid_label_key(key) {
            return Err(database_error(format!("invalid label key {key:?}")));
        }
    }
    let labels_table = sql.expand("{s}.run_labels");
    let mut labels = filter.labels.iter();
    // The order and the ranges are the driving table's: the first label's rows, or the runs.
    let driver = labels.next();
    let (created, id) = if driver.is_some() {
        ("d.created_at", "d.run_id")
    } else {
        ("r.created_at", "r.id")
    };
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(match driver {
        Some(_) => sql.expand(concat!(
            "SELECT ",
            run_columns!(),
            " FROM {s}.run_labels d JOIN {s}.runs r ON r.id = d.run_id WHERE true"
        )),
        None => sql.expand(concat!(
            "SELECT ",
            run_columns!(),
            " FROM {s}.runs r WHERE true"
        )),
    });
    if let Some((key, value)) = driver {
        q.push(" AND d.key = ")
            .push_bind(key.clone())
            .push(" AND d.value = ")
            .push_bind(value.clone());
    }
    match filter.statuses.as_slice() {
        [] => {}
        [status] => {
            q.push(" AND r.status = ").push_bind(status.as_str());
        }
        statuses => {
            let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            q.push(" AND r.status = ANY(").push_bind(statuses).push(")");
        }
    }
    match filter.job_names.as_slice() {
        [] => {}
        [job] => {
            q.push(" AND r.job_name = ").push_bind(job.clone());
        }
        jobs => {
            q.push(" AND r.job_name = ANY(")
                .push_bind(jobs.to_vec())
                .push(")");
        }
    }
    for (key, value) in labels {
        q.push(format!(
            " AND EXISTS (SELECT 1 FROM {labels_table} l WHERE l.run_id = r.id AND l.key = "
        ))
        .push_bind(key.clone())
        .push(" AND l.value = ")
        .push_bind(value.clone())
        .push(")");
    }
    if let Some(since) = filter.created_since {
        q.push(format!(" AND {created} >= "))
            .push_bind(DbTime(since));
    }
    if let Some(until) = filter.created_until {
        q.push(format!(" AND {created} < "))
            .push_bind(DbTime(until));
    }
    if let Some(cursor) = &filter.before {
        q.push(format!(" AND ({created}, {id}) < ("))
            .push_bind(DbTime(cursor.created_at))
            .push(", ")
            .push_bind(cursor.id.clone())
            .push(")");
    }
    q.push(format!(" ORDER BY {created} DESC, {id} DESC"));
    if let Some(limit) = filter.limit {
        q.push(" LIMIT ").push_bind(i64::from(limit));
    }
    if let Some(offset) = filter.offset {
        q.push(" OFFSET ").push_bind(i64::from(offset));
    }
    let rows = q.build().fetch_all(conn).await.context("listing runs")?;
    rows.iter().map(run_from_row).collect()
}

/// Per job: runs by status, recent completions and failures, the oldest pending run.
pub(crate) async fn count_runs(
    conn: &mut PgConnection,
    sql: &Sql,
    since: Timestamp,
) -> Result<Vec<RunCounts>, StoreError> {
    let rows = sqlx::query(&sql.get(
        "SELECT job_name,
                count(*) FILTER (WHERE status = 'pending'),
                count(*) FILTER (WHERE status = 'leased'),
                count(*) FILTER (WHERE status = 'completed'),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'cancelled'),
                count(*) FILTER (WHERE status = 'completed' AND completed_at >= $1),
                count(*) FILTER (WHERE status = 'failed' AND completed_at >= $1),
                min(created_at) FILTER (WHERE status = 'pending')
           FROM {s}.runs GROUP BY job_name ORDER BY job_name",
    ))
    .bind(DbTime(since))
    .fetch_all(conn)
    .await
    .context("counting runs")?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<RunCounts, sqlx::Error> {
                let n = |i: usize| row.try_get::<i64, _>(i).map(to_u64);
                Ok(RunCounts {
                    job_name: row.try_get(0)?,
                    pending: n(1)?,
                    leased: n(2)?,
                    completed: n(3)?,
                    failed: n(4)?,
                    cancelled: n(5)?,
                    completed_since: n(6)?,
                    failed_since: n(7)?,
                    oldest_pending: row.try_get::<Option<DbTime>, _>(8)?.map(|t| t.0),
                })
            };
            read().context("counting runs")
        })
        .collect()
}

/// Cancels a pending or leased run, inside the caller's transaction.
pub(crate) async fn cancel_run(
    conn: &mut PgConnection,
    sql: &Sql,
    id: &str,
    now: Timestamp,
    cleanup: bool,
) -> Result<CancelOutcome, StoreError> {
    let Some(before) = lock_run(conn, sql, id).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    if before.status.is_terminal() {
        return Ok(CancelOutcome::Terminal(before.status));
    }
    sqlx::query(&sql.get(
        "UPDATE {s}.runs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                not_before = NULL, completed_at = $2, updated_at = $2
          WHERE id = $1",
    ))
    .bind(id)
    .bind(DbTime(now))
    .execute(&mut *conn)
    .await
    .context("cancelling a run")?;
    if cleanup && before.status == RunStatus::Pending {
        delete_steps_and_logs(conn, sql, id).await?;
    }
    Ok(CancelOutcome::Cancelled(Box::new(before)))
}

/// Deletes the runs `ids` with their labels, steps and logs.
async fn delete_cascade(
    conn: &mut PgConnection,
    sql: &Sql,
    ids: &[&str],
) -> Result<(), StoreError> {
    for table in [
        "DELETE FROM {s}.run_labels WHERE run_id = ANY($1)",
        "DELETE FROM {s}.run_steps WHERE run_id = ANY($1)",
        "DELETE FROM {s}.run_logs WHERE run_id = ANY($1)",
        "DELETE FROM {s}.runs WHERE id = ANY($1)",
    ] {
        sqlx::query(&sql.get(table))
            .bind(ids)
            .execute(&mut *conn)
            .await
            .context("deleting runs")?;
    }
    Ok(())
}

/// Deletes a terminal run, inside the caller's transaction.
pub(crate) async fn delete_run(
    conn: &mut PgConnection,
    sql: &Sql,
    id: &str,
) -> Result<DeleteOutcome, StoreError> {
    let Some(run) = lock_run(conn, sql, id).await? else {
        return Ok(DeleteOutcome::NotFound);
    };
    if run.status.is_active() {
        return Ok(DeleteOutcome::Active(run.status));
    }
    delete_cascade(conn, sql, &[id]).await?;
    Ok(DeleteOutcome::Deleted(Box::new(run)))
}

/// Deletes up to `limit` terminal runs (of `job`, when given) that ended before `before`,
/// oldest first by creation, inside the caller's transaction. Runs another purge is deleting
/// are skipped, not waited for.
pub(crate) async fn purge_runs(
    conn: &mut PgConnection,
    sql: &Sql,
    job: Option<&str>,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(&sql.get(
        "SELECT id FROM {s}.runs
          WHERE status IN ('completed', 'failed', 'cancelled')
            AND created_at < $1 AND completed_at < $1
            AND ($2::text IS NULL OR job_name = $2)
          ORDER BY created_at, id LIMIT $3
          FOR UPDATE SKIP LOCKED",
    ))
    .bind(DbTime(before))
    .bind(job)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .context("finding runs to purge")?;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        delete_cascade(conn, sql, &refs).await?;
    }
    Ok(ids.len() as u64)
}

/// Every step row of a run, in order.
pub(crate) async fn get_steps(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Vec<StepRow>, StoreError> {
    let rows = sqlx::query(&sql.get(
        r#"SELECT id, run_id, name, "index", status, output, error, started_at, completed_at
             FROM {s}.run_steps WHERE run_id = $1 ORDER BY "index", started_at, id"#,
    ))
    .bind(run_id)
    .fetch_all(conn)
    .await
    .context("reading steps")?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    StepRow {
                        id: row.try_get(0)?,
                        run_id: row.try_get(1)?,
                        name: row.try_get(2)?,
                        index: to_u64(row.try_get(3)?),
                        status: StepStatus::Completed,
                        output: row
                            .try_get::<Option<String>, _>(5)?
                            .filter(|o| !o.is_empty()),
                        error: row.try_get(6)?,
                        started_at: row.try_get::<DbTime, _>(7)?.0,
                        completed_at: row.try_get::<Option<DbTime>, _>(8)?.map(|t| t.0),
                    },
                    row.try_get::<String, _>(4)?,
                ))
            };
            let (mut step, status) = read().context("reading a step")?;
            step.status = status.parse().map_err(database_error)?;
            Ok(step)
        })
        .collect()
}

/// Every log row of a run, in order.
pub(crate) async fn get_logs(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Vec<LogRow>, StoreError> {
    let rows = sqlx::query(&sql.get(
        "SELECT id, run_id, step_name, level, message, data, created_at
           FROM {s}.run_logs WHERE run_id = $1 ORDER BY created_at, id",
    ))
    .bind(run_id)
    .fetch_all(conn)
    .await
    .context("reading logs")?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    LogRow {
                        id: row.try_get(0)?,
                        run_id: row.try_get(1)?,
                        step_name: row.try_get(2)?,
                        level: LogLevel::Info,
                        message: row.try_get(4)?,
                        data: row.try_get(5)?,
                        created_at: row.try_get::<DbTime, _>(6)?.0,
                    },
                    row.try_get::<String, _>(3)?,
                ))
            };
            let (mut log, level) = read().context("reading a log")?;
            log.level = level.parse().map_err(database_error)?;
            Ok(log)
        })
        .collect()
}
