//! Reads and operators' writes: runs, counts, steps and logs; cancel, delete and purge.

use std::collections::BTreeSet;

use rusqlite::types::Value;
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

/// A page of runs, newest first.
///
/// The listing is a union of index ranges, one per job and status the filter names (every
/// status when it names none), each read newest first and cut at the page's end (limit plus
/// offset), then merged. Ended runs are read through `(status, created_at, id)` or, for one
/// job, `(job_name, status, created_at, id)`, both of runs with an end time (each range says
/// `completed_at IS NOT NULL`, the indexes' condition); pending runs through the pending-only
/// `(status, created_at, id)`, for one job too (its job checked on each: pending runs are the
/// queue, not the history); leased runs, as many as the workers hold, through the lease index, and
/// sorted. A page thus costs its size times the number of ranges, not the number of ended runs
/// of other jobs or statuses. A time range and a cursor narrow each range in the index. With
/// labels, the runs carrying the first label are read newest
/// first through `(key, value, created_at, run_id)` and the rest of the filter is checked on
/// each: a label-only page costs its size; with a status or job too, it also reads the label's
/// newer runs that the status or job leaves out.
pub(crate) fn get_runs(
    conn: &Connection,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let (sql, values) = listing_sql(filter)?;
    let params: Vec<&dyn rusqlite::ToSql> =
        values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
    let page = format!(
        "WITH page(rid, created_at, id) AS ({sql})
         SELECT {RUN_COLUMNS} FROM page p CROSS JOIN durably_runs r ON r.rowid = p.rid
         ORDER BY p.created_at DESC, p.id DESC"
    );
    let mut stmt = conn.prepare_cached(&page).map_err(db)?;
    let raws = stmt
        .query_map(params.as_slice(), raw_run)
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    raws.into_iter().map(RawRun::decode).collect()
}

/// The statement selecting `(rowid, created_at, id)` of a page of runs, and its parameters.
fn listing_sql(filter: &RunFilter) -> Result<(String, Vec<Value>), StoreError> {
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |v: Value| {
        values.push(v);
        format!("?{}", values.len())
    };
    // Conditions every range shares, the time range and the cursor: on the run (`common`),
    // and on a label row, which carries its run's creation time (`on_label`).
    let mut common = String::new();
    let mut on_label = String::new();
    if let Some(since) = filter.created_since {
        let p = bind(Value::Text(format_ts(since)));
        common.push_str(&format!(" AND r.created_at >= {p}"));
        on_label.push_str(&format!(" AND l.created_at >= {p}"));
    }
    if let Some(until) = filter.created_until {
        let p = bind(Value::Text(format_ts(until)));
        common.push_str(&format!(" AND r.created_at < {p}"));
        on_label.push_str(&format!(" AND l.created_at < {p}"));
    }
    if let Some(cursor) = &filter.before {
        let at = bind(Value::Text(format_ts(cursor.created_at)));
        let id = bind(Value::Text(cursor.id.clone()));
        common.push_str(&format!(" AND (r.created_at, r.id) < ({at}, {id})"));
        on_label.push_str(&format!(" AND (l.created_at, l.run_id) < ({at}, {id})"));
    }
    let mut labels = Vec::new();
    for (k, v) in &filter.labels {
        if !crate::store::runs::is_valid_label_key(k) {
            return Err(corrupt(format!("invalid label key {k:?}")));
        }
        labels.push((bind(Value::Text(k.clone())), bind(Value::Text(v.clone()))));
    }
    let statuses: BTreeSet<&'static str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let jobs: BTreeSet<&str> = filter.job_names.iter().map(String::as_str).collect();
    let order = "ORDER BY r.created_at DESC, r.id DESC";
    let page = |arm_limit: Option<u64>| match arm_limit {
        Some(n) => format!(" LIMIT {n}"),
        None => String::new(),
    };
    let (limit, offset) = (filter.limit.map(u64::from), filter.offset.unwrap_or(0));
    let outer = match (limit, offset) {
        (Some(l), 0) => format!(" LIMIT {l}"),
        (Some(l), o) => format!(" LIMIT {l} OFFSET {o}"),
        (None, 0) => String::new(),
        (None, o) => format!(" LIMIT -1 OFFSET {o}"),
    };

    if let Some(((first_key, first_value), more)) = labels.split_first() {
        // The runs carrying the first label, newest first through its index (a label row's
        // creation time and run id are its run's), each checked for the rest.
        let mut sql = format!(
            "SELECT r.rowid, r.created_at, r.id
               FROM durably_run_labels l CROSS JOIN durably_runs r ON r.id = l.run_id
              WHERE l.key = {first_key} AND l.value = {first_value}{on_label}"
        );
        for (k, v) in more {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM durably_run_labels m
                               WHERE m.run_id = r.id AND m.key = {k} AND m.value = {v})"
            ));
        }
        if !statuses.is_empty() {
            let list: Vec<String> = statuses
                .iter()
                .map(|s| bind(Value::Text((*s).to_owned())))
                .collect();
            sql.push_str(&format!(" AND r.status IN ({})", list.join(", ")));
        }
        if !jobs.is_empty() {
            let list: Vec<String> = jobs
                .iter()
                .map(|j| bind(Value::Text((*j).to_owned())))
                .collect();
            sql.push_str(&format!(" AND r.job_name IN ({})", list.join(", ")));
        }
        sql.push_str(&format!(
            " ORDER BY l.created_at DESC, l.run_id DESC{outer}"
        ));
        return Ok((sql, values));
    }

    // One index range per (job, status), each status once.
    let statuses: Vec<RunStatus> = RunStatus::ALL
        .into_iter()
        .filter(|s| statuses.is_empty() || statuses.contains(s.as_str()))
        .collect();
    let jobs: Vec<Option<&str>> = if jobs.is_empty() {
        vec![None]
    } else {
        jobs.into_iter().map(Some).collect()
    };
    let mut arms = Vec::with_capacity(jobs.len() * statuses.len());
    for job in &jobs {
        for status in &statuses {
            // Statuses are ours, written as literals, and an ended status says the ended
            // indexes' condition too: SQLite uses a partial index only for conditions it can
            // see imply the index's.
            let ended = if status.is_terminal() {
                " AND r.completed_at IS NOT NULL"
            } else {
                ""
            };
            let mut arm = format!(
                "SELECT r.rowid, r.created_at, r.id FROM durably_runs r
                  WHERE r.status = '{status}'{ended}"
            );
            if let Some(job) = job {
                arm.push_str(&format!(
                    " AND r.job_name = {}",
                    bind(Value::Text((*job).to_owned()))
                ));
            }
            arm.push_str(&common);
            arms.push(arm);
        }
    }
    if let [only] = arms.as_slice() {
        return Ok((format!("{only} {order}{outer}"), values));
    }
    // Each range is cut where the page can end: no run past its first `limit + offset` can be
    // on the page.
    let arm_limit = limit.map(|l| l + u64::from(offset));
    let union: Vec<String> = arms
        .iter()
        .map(|arm| format!("SELECT * FROM ({arm} {order}{})", page(arm_limit)))
        .collect();
    Ok((
        format!(
            "{} ORDER BY 2 DESC, 3 DESC{outer}",
            union.join(" UNION ALL ")
        ),
        values,
    ))
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

/// Terminal runs that ended before `before`, oldest first by creation, at most `limit`. Each
/// terminal status is read through `(status, created_at, id)` of ended runs, or `(job_name,
/// status, created_at, id)` for one job (the statement says their condition, `completed_at IS
/// NOT NULL`), from its oldest run: a run that ended before `before` was created before it too,
/// so the range read holds the runs to delete and, at its end, only the few created before
/// `before` that ended after it.
pub(crate) fn purge_runs(
    conn: &Connection,
    job: Option<&str>,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let before = format_ts(before);
    let mut found: Vec<(String, String)> = Vec::new();
    // A job, when named, is in the statement: one that tested `?2 IS NULL` could not use the
    // job's index.
    let of_job = if job.is_some() {
        "AND job_name = ?2"
    } else {
        "AND ?2 IS NULL"
    };
    for status in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT created_at, id FROM durably_runs
                 WHERE status = '{status}' {of_job} AND completed_at IS NOT NULL
                   AND created_at < ?1 AND completed_at < ?1
                 ORDER BY created_at, id LIMIT ?3"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![before, job, i64::from(limit)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(db)?;
        for row in rows {
            found.push(row.map_err(db)?);
        }
    }
    found.sort();
    found.truncate(limit as usize);
    for (_, id) in &found {
        delete_cascade(conn, id)?;
    }
    Ok(found.len() as u64)
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
