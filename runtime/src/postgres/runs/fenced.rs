//! The writes of an executing run, fenced by its lease generation: steps, progress, logs and
//! its end.
//!
//! A fenced write first locks the run row as long as it is leased at the fence's generation
//! (`FOR SHARE` in the same statement, or the condition of an `UPDATE`). A bare `EXISTS` check
//! would not do: under `READ COMMITTED` a reclaim committed between the check and the insert
//! would go unseen. The lock makes a concurrent reclaim (or cancel) wait for this write's
//! commit, or this write see the reclaim's result and refuse.

use sqlx::{Acquire, PgConnection};

use crate::postgres::codec::{sqlstate, to_i64, to_u64, Context, DbTime, Sql, UNIQUE_VIOLATION};
use crate::store::runs::{Fence, Finish, FinishOutcome, NewLog, NewStep, StoredStep};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The completed steps of a run, in order, for replay.
pub(crate) async fn completed_steps(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<Vec<StoredStep>, StoreError> {
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(&sql.get(
        r#"SELECT name, "index", output FROM {s}.run_steps
            WHERE run_id = $1 AND status = 'completed' ORDER BY "index""#,
    ))
    .bind(run_id)
    .fetch_all(conn)
    .await
    .context("reading completed steps")?;
    Ok(rows
        .into_iter()
        .map(|(name, index, output)| StoredStep {
            name,
            index: to_u64(index),
            output: output.filter(|o| !o.is_empty()),
        })
        .collect())
}

/// Appends `logs` to run `run_id`, unfenced.
pub(crate) async fn insert_logs(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
    logs: &[NewLog],
) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = logs.iter().map(|l| l.id.as_str()).collect();
    let steps: Vec<Option<&str>> = logs.iter().map(|l| l.step_name.as_deref()).collect();
    let levels: Vec<&str> = logs.iter().map(|l| l.level.as_str()).collect();
    let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    let data: Vec<Option<&str>> = logs.iter().map(|l| l.data.as_deref()).collect();
    let times: Vec<DbTime> = logs.iter().map(|l| DbTime(l.created_at)).collect();
    sqlx::query(&sql.get(
        "INSERT INTO {s}.run_logs (id, run_id, step_name, level, message, data, created_at)
         SELECT l.id, $1, l.step_name, l.level, l.message, l.data, l.created_at
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::timestamptz[]) AS l(id, step_name, level, message, data, created_at)",
    ))
    .bind(run_id)
    .bind(&ids)
    .bind(&steps)
    .bind(&levels)
    .bind(&messages)
    .bind(&data)
    .bind(&times)
    .execute(conn)
    .await
    .context("appending logs")?;
    Ok(())
}

/// Persists a step attempt and the buffered logs (those whatever the fence says); `false` when
/// the fence does not hold.
pub(crate) async fn persist_step(
    conn: &mut PgConnection,
    sql: &Sql,
    fence: &Fence,
    step: &NewStep,
    logs: &[NewLog],
) -> Result<bool, StoreError> {
    insert_logs(conn, sql, &fence.run_id, logs).await?;
    let inserted = sqlx::query(&sql.get(
        r#"WITH held AS (
              SELECT id FROM {s}.runs
               WHERE id = $2 AND status = 'leased' AND lease_generation = $10
               FOR SHARE)
           INSERT INTO {s}.run_steps
                  (id, run_id, name, "index", status, output, error, started_at, completed_at)
           SELECT $1, held.id, $3, $4, $5, $6, $7, $8, $9 FROM held"#,
    ))
    .bind(&step.id)
    .bind(&fence.run_id)
    .bind(&step.name)
    .bind(to_i64(step.index))
    .bind(step.status.as_str())
    .bind(step.output.as_deref())
    .bind(step.error.as_deref())
    .bind(DbTime(step.started_at))
    .bind(DbTime(step.completed_at))
    .bind(to_i64(fence.generation))
    .execute(conn)
    .await
    .context("persisting a step")?;
    Ok(inserted.rows_affected() == 1)
}

/// Sets (or clears) the progress, fenced, and appends the logs.
pub(crate) async fn update_progress(
    conn: &mut PgConnection,
    sql: &Sql,
    fence: &Fence,
    progress: Option<&str>,
    logs: &[NewLog],
    now: Timestamp,
) -> Result<bool, StoreError> {
    insert_logs(conn, sql, &fence.run_id, logs).await?;
    let updated = sqlx::query(&sql.get(
        "UPDATE {s}.runs SET progress = $1, updated_at = $2
          WHERE id = $3 AND status = 'leased' AND lease_generation = $4",
    ))
    .bind(progress)
    .bind(DbTime(now))
    .bind(&fence.run_id)
    .bind(to_i64(fence.generation))
    .execute(conn)
    .await
    .context("updating progress")?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes the step and log rows of run `run_id`.
pub(crate) async fn delete_steps_and_logs(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(&sql.get("DELETE FROM {s}.run_steps WHERE run_id = $1"))
        .bind(run_id)
        .execute(&mut *conn)
        .await
        .context("deleting steps")?;
    sqlx::query(&sql.get("DELETE FROM {s}.run_logs WHERE run_id = $1"))
        .bind(run_id)
        .execute(conn)
        .await
        .context("deleting logs")?;
    Ok(())
}

/// Deletes the steps and logs of run `run_id` if it is cancelled.
pub(crate) async fn delete_cancelled_steps(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<(), StoreError> {
    let cancelled: bool = sqlx::query_scalar(
        &sql.get("SELECT EXISTS (SELECT 1 FROM {s}.runs WHERE id = $1 AND status = 'cancelled')"),
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await
    .context("reading a run's status")?;
    if cancelled {
        delete_steps_and_logs(conn, sql, run_id).await?;
    }
    Ok(())
}

/// Ends an execution, fenced; see [`RunStore::finish_run`](crate::store::runs::RunStore::finish_run).
pub(crate) async fn finish_run(
    conn: &mut PgConnection,
    sql: &Sql,
    fence: &Fence,
    finish: &Finish,
    logs: &[NewLog],
    cleanup: bool,
    now: Timestamp,
) -> Result<FinishOutcome, StoreError> {
    let generation = to_i64(fence.generation);
    let (ended, outcome) = match finish {
        Finish::Completed {
            output,
            completed_step_count,
            current_step_index,
        } if cleanup => {
            // One statement (one round trip) for the completion and its cleanup.
            let completed: i64 = sqlx::query_scalar(&sql.get(
                "WITH done AS (
                    UPDATE {s}.runs SET status = 'completed', output = $1, error = NULL,
                           lease_owner = NULL, lease_expires_at = NULL, not_before = NULL,
                           completed_at = $2, updated_at = $2, completed_step_count = $3,
                           current_step_index = $4
                     WHERE id = $5 AND status = 'leased' AND lease_generation = $6
                     RETURNING id),
                 steps AS (DELETE FROM {s}.run_steps WHERE run_id IN (SELECT id FROM done)),
                 logs AS (DELETE FROM {s}.run_logs WHERE run_id IN (SELECT id FROM done))
                 SELECT count(*) FROM done",
            ))
            .bind(output.as_deref())
            .bind(DbTime(now))
            .bind(to_i64(*completed_step_count))
            .bind(to_i64(*current_step_index))
            .bind(&fence.run_id)
            .bind(generation)
            .fetch_one(&mut *conn)
            .await
            .context("completing a run")?;
            if completed != 1 {
                insert_logs(conn, sql, &fence.run_id, logs).await?;
                return Ok(FinishOutcome::Refused);
            }
            return Ok(FinishOutcome::Completed);
        }
        Finish::Completed {
            output,
            completed_step_count,
            current_step_index,
        } => {
            let completed = sqlx::query(&sql.get(
                "UPDATE {s}.runs SET status = 'completed', output = $1, error = NULL,
                        lease_owner = NULL, lease_expires_at = NULL, not_before = NULL,
                        completed_at = $2, updated_at = $2, completed_step_count = $3,
                        current_step_index = $4
                  WHERE id = $5 AND status = 'leased' AND lease_generation = $6",
            ))
            .bind(output.as_deref())
            .bind(DbTime(now))
            .bind(to_i64(*completed_step_count))
            .bind(to_i64(*current_step_index))
            .bind(&fence.run_id)
            .bind(generation)
            .execute(&mut *conn)
            .await
            .context("completing a run")?;
            (completed.rows_affected(), FinishOutcome::Completed)
        }
        Finish::Failed { error, retry } => {
            let mut blocked = false;
            if let Some((attempt, not_before)) = retry {
                blocked = has_pending_sibling(conn, sql, &fence.run_id).await?;
                if !blocked {
                    match retry_later(conn, sql, fence, error, *attempt, *not_before, now).await? {
                        Some(retried) => {
                            insert_logs(conn, sql, &fence.run_id, logs).await?;
                            return Ok(if retried {
                                FinishOutcome::Retrying
                            } else {
                                FinishOutcome::Refused
                            });
                        }
                        // A sibling was enqueued since the check.
                        None => blocked = true,
                    }
                }
            }
            let failed = sqlx::query(&sql.get(
                r#"UPDATE {s}.runs SET status = 'failed', error = $1, lease_owner = NULL,
                        lease_expires_at = NULL, not_before = NULL, completed_at = $2,
                        updated_at = $2,
                        completed_step_count = (SELECT COUNT(*) FROM {s}.run_steps s
                            WHERE s.run_id = $3 AND s.status = 'completed'),
                        current_step_index = (SELECT COALESCE(MAX(s."index") + 1, 0)
                            FROM {s}.run_steps s WHERE s.run_id = $3 AND s.status = 'completed')
                  WHERE id = $3 AND status = 'leased' AND lease_generation = $4"#,
            ))
            .bind(error)
            .bind(DbTime(now))
            .bind(&fence.run_id)
            .bind(generation)
            .execute(&mut *conn)
            .await
            .context("failing a run")?;
            (
                failed.rows_affected(),
                if blocked {
                    FinishOutcome::FailedRetryBlocked
                } else {
                    FinishOutcome::Failed
                },
            )
        }
    };
    if ended != 1 {
        insert_logs(conn, sql, &fence.run_id, logs).await?;
        return Ok(FinishOutcome::Refused);
    }
    if cleanup {
        delete_steps_and_logs(conn, sql, &fence.run_id).await?;
    } else {
        insert_logs(conn, sql, &fence.run_id, logs).await?;
    }
    Ok(outcome)
}

/// Whether another run of the same job and concurrency key is pending: a retry would break
/// the one-pending-run rule.
async fn has_pending_sibling(
    conn: &mut PgConnection,
    sql: &Sql,
    run_id: &str,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(&sql.get(
        "SELECT EXISTS (SELECT 1 FROM {s}.runs r JOIN {s}.runs p
            ON p.job_name = r.job_name AND p.concurrency_key = r.concurrency_key
         WHERE r.id = $1 AND p.status = 'pending' AND p.id <> r.id)",
    ))
    .bind(run_id)
    .fetch_one(conn)
    .await
    .context("looking for a pending sibling")
}

/// Sends the run back to pending for `attempt`, fenced: `Some(true)` when done, `Some(false)`
/// when the fence does not hold, `None` when another process enqueued a pending run of the
/// same key meanwhile (the unique index refused it; nothing was written).
async fn retry_later(
    conn: &mut PgConnection,
    sql: &Sql,
    fence: &Fence,
    error: &str,
    attempt: u32,
    not_before: Timestamp,
    now: Timestamp,
) -> Result<Option<bool>, StoreError> {
    // A savepoint: the unique violation would otherwise abort the whole transaction.
    let mut savepoint = conn.begin().await.context("starting a savepoint")?;
    let retried = sqlx::query(&sql.get(
        "UPDATE {s}.runs SET status = 'pending', error = $1, lease_owner = NULL,
                lease_expires_at = NULL, attempt = $2, not_before = $3, updated_at = $4
          WHERE id = $5 AND status = 'leased' AND lease_generation = $6",
    ))
    .bind(error)
    .bind(i64::from(attempt))
    .bind(DbTime(not_before))
    .bind(DbTime(now))
    .bind(&fence.run_id)
    .bind(to_i64(fence.generation))
    .execute(&mut *savepoint)
    .await
    .context("scheduling a retry");
    match retried {
        Ok(done) => {
            savepoint.commit().await.context("releasing a savepoint")?;
            Ok(Some(done.rows_affected() == 1))
        }
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            savepoint
                .rollback()
                .await
                .context("rolling back to a savepoint")?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
