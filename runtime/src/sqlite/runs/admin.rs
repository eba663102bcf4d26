//! Reads and operators' writes: runs, counts, steps and logs; cancel, delete and purge.

use rusqlite::{params, Connection};

use super::codec::*;
use super::fenced::delete_steps_and_logs;
use crate::store::runs::{
    CancelOutcome, DeleteOutcome, LogLevel, LogRow, RunCounts, RunFilter, RunRecord, RunStatus,
    StepRow, StepStatus,
};
use crate::store::StoreError;
use crate::time::Timestamp;

pub(crate) fn get_run(conn: &Connection, id: &str) -> Result<Option<RunRecord>, StoreError> {
    Ok(query_runs(conn, "WHERE r.id = ?1", &[&id])?.pop())
}

pub(crate) fn get_runs(
    conn: &Connection,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut sql = String::from("WHERE 1 = 1");
    let mut values: Vec<String> = Vec::new();
    let placeholder = |values: &mut Vec<String>, v: String| {
        values.push(v);
        format!("?{}", values.len())
    };
    if !filter.statuses.is_empty() {
        let list: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| placeholder(&mut values, s.as_str().to_owned()))
            .collect();
        sql.push_str(&format!(" AND r.status IN ({})", list.join(", ")));
    }
    if !filter.job_names.is_empty() {
        let list: Vec<String> = filter
            .job_names
            .iter()
            .map(|j| placeholder(&mut values, j.clone()))
            .collect();
        sql.push_str(&format!(" AND r.job_name IN ({})", list.join(", ")));
    }
    for (k, v) in &filter.labels {
        if !crate::store::runs::is_valid_label_key(k) {
            return Err(corrupt(format!("invalid label key {k:?}")));
        }
        let pk = placeholder(&mut values, k.clone());
        let pv = placeholder(&mut values, v.clone());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM durably_run_labels l WHERE l.run_id = r.id AND l.key = {pk} AND l.value = {pv})"
        ));
    }
    if let Some(cursor) = &filter.before {
        let pc = placeholder(&mut values, format_ts(cursor.created_at));
        let pi = placeholder(&mut values, cursor.id.clone());
        sql.push_str(&format!(" AND (r.created_at, r.id) < ({pc}, {pi})"));
    }
    sql.push_str(" ORDER BY r.created_at DESC, r.id DESC");
    match (filter.limit, filter.offset) {
        (Some(l), Some(o)) => sql.push_str(&format!(" LIMIT {l} OFFSET {o}")),
        (Some(l), None) => sql.push_str(&format!(" LIMIT {l}")),
        (None, Some(o)) => sql.push_str(&format!(" LIMIT -1 OFFSET {o}")),
        (None, None) => {}
    }
    let params: Vec<&dyn rusqlite::ToSql> =
        values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
    query_runs(conn, &sql, &params)
}

/// Per job: runs by status, recent completions and failures, the oldest pending run.
pub(crate) fn count_runs(
    conn: &Connection,
    since: Timestamp,
) -> Result<Vec<RunCounts>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT job_name,
                    SUM(status = 'pending'), SUM(status = 'leased'), SUM(status = 'completed'),
                    SUM(status = 'failed'), SUM(status = 'cancelled'),
                    SUM(status = 'completed' AND completed_at >= ?1),
                    SUM(status = 'failed' AND completed_at >= ?1),
                    MIN(CASE WHEN status = 'pending' THEN created_at END)
               FROM durably_runs GROUP BY job_name ORDER BY job_name",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![format_ts(since)], |row| {
            let n = |i: usize| {
                row.get::<_, Option<i64>>(i)
                    .map(|v| v.unwrap_or(0).max(0) as u64)
            };
            Ok((
                RunCounts {
                    job_name: row.get(0)?,
                    pending: n(1)?,
                    leased: n(2)?,
                    completed: n(3)?,
                    failed: n(4)?,
                    cancelled: n(5)?,
                    completed_since: n(6)?,
                    failed_since: n(7)?,
                    oldest_pending: None,
                },
                row.get::<_, Option<String>>(8)?,
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    rows.into_iter()
        .map(|(mut counts, oldest)| {
            counts.oldest_pending = oldest.as_deref().map(parse_ts).transpose()?;
            Ok(counts)
        })
        .collect()
}

pub(crate) fn cancel_run(
    conn: &Connection,
    id: &str,
    now: Timestamp,
    cleanup: bool,
) -> Result<CancelOutcome, StoreError> {
    let Some(before) = get_run(conn, id)? else {
        return Ok(CancelOutcome::NotFound);
    };
    if before.status.is_terminal() {
        return Ok(CancelOutcome::Terminal(before.status));
    }
    let now_s = format_ts(now);
    conn.prepare_cached(
        "UPDATE durably_runs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
            not_before = NULL, completed_at = ?2, updated_at = ?2
         WHERE id = ?1 AND status IN ('pending', 'leased')",
    )
    .map_err(db)?
    .execute(params![id, now_s])
    .map_err(db)?;
    if cleanup && before.status == RunStatus::Pending {
        delete_steps_and_logs(conn, id)?;
    }
    Ok(CancelOutcome::Cancelled(Box::new(before)))
}

pub(super) fn delete_cascade(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM durably_run_labels WHERE run_id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    delete_steps_and_logs(conn, id)?;
    conn.prepare_cached("DELETE FROM durably_runs WHERE id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn delete_run(conn: &Connection, id: &str) -> Result<DeleteOutcome, StoreError> {
    let Some(run) = get_run(conn, id)? else {
        return Ok(DeleteOutcome::NotFound);
    };
    if run.status.is_active() {
        return Ok(DeleteOutcome::Active(run.status));
    }
    delete_cascade(conn, id)?;
    Ok(DeleteOutcome::Deleted(Box::new(run)))
}

pub(crate) fn purge_runs(
    conn: &Connection,
    job: Option<&str>,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM durably_runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at IS NOT NULL AND completed_at < ?1
                   AND (?2 IS NULL OR job_name = ?2)
                 ORDER BY completed_at LIMIT ?3",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![format_ts(before), job, i64::from(limit)], |r| {
                r.get(0)
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    for id in &ids {
        delete_cascade(conn, id)?;
    }
    Ok(ids.len() as u64)
}

pub(crate) fn get_steps(conn: &Connection, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            r#"SELECT id, run_id, name, "index", status, output, error, started_at, completed_at
               FROM durably_steps WHERE run_id = ?1 ORDER BY "index", started_at, id"#,
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, run_id, name, index, status, output, error, started_at, completed_at) =
            row.map_err(db)?;
        out.push(StepRow {
            id,
            run_id,
            name,
            index: index.max(0) as u64,
            status: status.parse::<StepStatus>().map_err(corrupt)?,
            output: output.filter(|o| !o.is_empty()),
            error,
            started_at: parse_ts(&started_at)?,
            completed_at: opt_ts(completed_at)?,
        });
    }
    Ok(out)
}

pub(crate) fn get_logs(conn: &Connection, run_id: &str) -> Result<Vec<LogRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, run_id, step_name, level, message, data, created_at
             FROM durably_logs WHERE run_id = ?1 ORDER BY created_at, id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, run_id, step_name, level, message, data, created_at) = row.map_err(db)?;
        out.push(LogRow {
            id,
            run_id,
            step_name,
            level: level.parse::<LogLevel>().map_err(corrupt)?,
            message,
            data,
            created_at: parse_ts(&created_at)?,
        });
    }
    Ok(out)
}
