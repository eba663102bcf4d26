//! The writes of an executing run, fenced by its lease generation: steps, progress, logs and
//! its end.

use rusqlite::{params, Connection, OptionalExtension};

use super::codec::*;
use super::statements;
use crate::store::runs::{Fence, Finish, FinishOutcome, NewLog, NewStep, StoredStep};
use crate::store::StoreError;
use crate::time::Timestamp;

pub(crate) fn completed_steps(
    conn: &Connection,
    run_id: &str,
) -> Result<Vec<StoredStep>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            r#"SELECT name, "index", output FROM durably_steps WHERE run_id = ?1 AND status = 'completed' ORDER BY "index""#,
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![run_id], |r| {
            Ok(StoredStep {
                name: r.get(0)?,
                index: r.get::<_, i64>(1)?.max(0) as u64,
                output: r.get::<_, Option<String>>(2)?.filter(|o| !o.is_empty()),
            })
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(super) fn insert_logs(
    conn: &Connection,
    run_id: &str,
    logs: &[NewLog],
) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO durably_logs (id, run_id, step_name, level, message, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db)?;
    for l in logs {
        stmt.execute(params![
            l.id,
            run_id,
            l.step_name,
            l.level.as_str(),
            l.message,
            l.data,
            format_ts(l.created_at)
        ])
        .map_err(db)?;
    }
    Ok(())
}

pub(crate) fn persist_step(
    conn: &Connection,
    fence: &Fence,
    step: &NewStep,
    logs: &[NewLog],
) -> Result<bool, StoreError> {
    insert_logs(conn, &fence.run_id, logs)?;
    if !holds(conn, fence)? {
        return Ok(false);
    }
    conn.prepare_cached(statements::INSERT_STEP)
        .map_err(db)?
        .execute(params![
            step.id,
            fence.run_id,
            step.name,
            step.index as i64,
            step.status.as_str(),
            step.output,
            step.error,
            format_ts(step.started_at),
            format_ts(step.completed_at),
        ])
        .map_err(db)?;
    Ok(true)
}

/// Whether the execution `fence` names still owns its run: leased, at that generation.
pub(super) fn holds(conn: &Connection, fence: &Fence) -> Result<bool, StoreError> {
    conn.prepare_cached(statements::HOLDS_RUN)
        .map_err(db)?
        .exists(params![
            fence.run_id,
            fence.generation as i64,
            fence_row(conn, fence)?
        ])
        .map_err(db)
}

/// The rowid of the fence's run: the one its claim read, or, for a fence made without a claim,
/// looked up by id (`None`: no such run, which no fenced statement then matches).
pub(super) fn fence_row(conn: &Connection, fence: &Fence) -> Result<Option<i64>, StoreError> {
    match fence.hint {
        Some(row) => Ok(Some(row)),
        None => conn
            .prepare_cached("SELECT rowid FROM durably_runs WHERE id = ?1")
            .map_err(db)?
            .query_row([&fence.run_id], |r| r.get(0))
            .optional()
            .map_err(db),
    }
}

pub(crate) fn update_progress(
    conn: &Connection,
    fence: &Fence,
    progress: Option<&str>,
    logs: &[NewLog],
    now: Timestamp,
) -> Result<bool, StoreError> {
    insert_logs(conn, &fence.run_id, logs)?;
    let n = conn
        .prepare_cached(
            "UPDATE durably_runs SET progress = ?1, updated_at = ?2
             WHERE id = ?3 AND status = 'leased' AND lease_generation = ?4",
        )
        .map_err(db)?
        .execute(params![
            progress,
            format_ts(now),
            fence.run_id,
            fence.generation as i64
        ])
        .map_err(db)?;
    Ok(n == 1)
}

pub(super) fn delete_steps_and_logs(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(statements::DELETE_STEPS)
        .map_err(db)?
        .execute([run_id])
        .map_err(db)?;
    conn.prepare_cached(statements::DELETE_LOGS)
        .map_err(db)?
        .execute([run_id])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn delete_cancelled_steps(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    let cancelled = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM durably_runs WHERE id = ?1 AND status = 'cancelled')",
        )
        .map_err(db)?
        .query_row([run_id], |r| r.get::<_, bool>(0))
        .map_err(db)?;
    if cancelled {
        delete_steps_and_logs(conn, run_id)?;
    }
    Ok(())
}

pub(crate) fn finish_run(
    conn: &Connection,
    fence: &Fence,
    finish: &Finish,
    logs: &[NewLog],
    cleanup: bool,
    now: Timestamp,
) -> Result<FinishOutcome, StoreError> {
    let now_s = format_ts(now);
    let gen = fence.generation as i64;
    let (n, outcome) = match finish {
        Finish::Completed {
            output,
            completed_step_count,
            current_step_index,
        } => {
            let n = conn
                .prepare_cached(statements::COMPLETE_RUN)
                .map_err(db)?
                .execute(params![
                    output,
                    now_s,
                    *completed_step_count as i64,
                    *current_step_index as i64,
                    fence.run_id,
                    gen,
                    fence_row(conn, fence)?
                ])
                .map_err(db)?;
            (n, FinishOutcome::Completed)
        }
        Finish::Failed { error, retry } => {
            let blocked = match retry {
                Some(_) => conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM durably_runs r JOIN durably_runs p
                            ON p.job_name = r.job_name AND p.concurrency_key = r.concurrency_key
                            WHERE r.id = ?1 AND p.status = 'pending' AND p.id <> r.id)",
                    )
                    .map_err(db)?
                    .query_row([&fence.run_id], |r| r.get::<_, bool>(0))
                    .map_err(db)?,
                None => false,
            };
            match retry {
                Some((attempt, not_before)) if !blocked => {
                    let n = conn
                        .prepare_cached(
                            "UPDATE durably_runs SET status = 'pending', error = ?1, lease_owner = NULL,
                                lease_expires_at = NULL, attempt = ?2, not_before = ?3, updated_at = ?4
                             WHERE id = ?5 AND status = 'leased' AND lease_generation = ?6",
                        )
                        .map_err(db)?
                        .execute(params![error, i64::from(*attempt), format_ts(*not_before), now_s, fence.run_id, gen])
                        .map_err(db)?;
                    insert_logs(conn, &fence.run_id, logs)?;
                    return Ok(if n == 1 {
                        FinishOutcome::Retrying
                    } else {
                        FinishOutcome::Refused
                    });
                }
                _ => {}
            }
            let n = conn
                .prepare_cached(
                    r#"UPDATE durably_runs SET status = 'failed', error = ?1, lease_owner = NULL,
                        lease_expires_at = NULL, not_before = NULL, completed_at = ?2, updated_at = ?2,
                        completed_step_count = (SELECT COUNT(*) FROM durably_steps s WHERE s.run_id = ?3 AND s.status = 'completed'),
                        current_step_index = (SELECT COALESCE(MAX(s."index") + 1, 0) FROM durably_steps s WHERE s.run_id = ?3 AND s.status = 'completed')
                     WHERE id = ?3 AND status = 'leased' AND lease_generation = ?4"#,
                )
                .map_err(db)?
                .execute(params![error, now_s, fence.run_id, gen])
                .map_err(db)?;
            (
                n,
                if blocked {
                    FinishOutcome::FailedRetryBlocked
                } else {
                    FinishOutcome::Failed
                },
            )
        }
    };
    if n != 1 {
        insert_logs(conn, &fence.run_id, logs)?;
        return Ok(FinishOutcome::Refused);
    }
    if cleanup {
        delete_steps_and_logs(conn, &fence.run_id)?;
    } else {
        insert_logs(conn, &fence.run_id, logs)?;
    }
    Ok(outcome)
}
