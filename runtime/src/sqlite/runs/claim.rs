//! Claiming runs, renewing and expiring leases, and when something next becomes claimable.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::codec::*;
use super::statements;
use crate::store::runs::{Claimed, ClaimedRun, Labels};
use crate::store::StoreError;
use crate::time::Timestamp;

pub(super) struct Candidate {
    id: String,
    job_name: String,
    input: String,
    labels: String,
    concurrency_key: Option<String>,
    created_at: String,
    lease_generation: i64,
    attempt: i64,
    started_at: Option<String>,
    rowid: i64,
    due_at: Option<String>,
}

/// The columns [`candidate`] reads, in order.
pub(super) const CANDIDATE_COLUMNS: &str =
    "r.id, r.job_name, r.input, r.labels, r.concurrency_key, r.created_at,
    r.lease_generation, r.attempt, r.started_at, r.rowid,
    CASE r.status WHEN 'leased' THEN r.lease_expires_at ELSE COALESCE(r.not_before, r.created_at) END";

pub(super) fn candidate(row: &Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        id: row.get(0)?,
        job_name: row.get(1)?,
        input: row.get(2)?,
        labels: row.get(3)?,
        concurrency_key: row.get(4)?,
        created_at: row.get(5)?,
        lease_generation: row.get(6)?,
        attempt: row.get(7)?,
        started_at: row.get(8)?,
        rowid: row.get(9)?,
        due_at: row.get(10)?,
    })
}

pub(super) const KEY_FREE: &str = "(r.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM durably_runs a
    WHERE a.status = 'leased' AND a.concurrency_key = r.concurrency_key AND a.lease_expires_at > ?1))";

/// The FIFO scan of due pending runs whose concurrency key is free, through
/// `idx_durably_runs_pending` (`(status, created_at, id)` of pending runs only).
///
/// Its limit is a literal (the caller stops reading early): with `LIMIT ?`, SQLite re-prepares
/// the statement on every execution once it was re-prepared for any reason, because the bound
/// limit changes from one claim to the next.
pub(crate) fn claim_pending_sql() -> String {
    format!(
        "SELECT {CANDIDATE_COLUMNS} FROM durably_runs r
         WHERE r.status = 'pending' AND (r.not_before IS NULL OR r.not_before <= ?1) AND {KEY_FREE}
         ORDER BY r.created_at, r.id LIMIT 2000"
    )
}

pub(crate) fn claim(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Claimed, StoreError> {
    if limit == 0 {
        return Ok(Claimed::default());
    }
    let now_s = format_ts(now);
    let until_s = format_ts(lease_until);
    // Over-fetch a little: candidates sharing a concurrency key are skipped after the first.
    let fetch = (limit + limit / 4 + 1).min(2000);
    let mut candidates: Vec<Candidate> = Vec::new();
    {
        let mut pending = conn.prepare_cached(&claim_pending_sql()).map_err(db)?;
        for c in pending
            .query_map(params![now_s], candidate)
            .map_err(db)?
            .take(fetch)
        {
            candidates.push(c.map_err(db)?);
        }
        let mut expired = conn
            .prepare_cached(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM durably_runs r
                 WHERE r.status = 'leased' AND r.lease_expires_at <= ?1 AND {KEY_FREE}
                 ORDER BY r.lease_expires_at LIMIT 2000"
            ))
            .map_err(db)?;
        let before = candidates.len();
        for c in expired
            .query_map(params![now_s], candidate)
            .map_err(db)?
            .take(fetch)
        {
            candidates.push(c.map_err(db)?);
        }
        if candidates.len() > before && before > 0 {
            candidates.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        }
    }
    let mut update = conn.prepare_cached(statements::CLAIM_RUN).map_err(db)?;
    let mut keys: Vec<String> = Vec::new();
    let mut runs = Vec::with_capacity(limit.min(candidates.len()));
    // The candidates are moved into the claimed runs, not copied.
    for c in candidates {
        if runs.len() == limit {
            break;
        }
        if c.concurrency_key.as_ref().is_some_and(|k| keys.contains(k)) {
            continue;
        }
        // Decoded before the update, so a corrupt row fails the claim without changing a row.
        let labels = if c.labels.is_empty() || c.labels == "{}" {
            Labels::new()
        } else {
            serde_json::from_str(&c.labels)
                .map_err(|e| corrupt(format!("labels of run {}: {e}", c.id)))?
        };
        let started_at = c
            .started_at
            .as_deref()
            .map(parse_ts)
            .transpose()?
            .unwrap_or(now);
        let due_at = c
            .due_at
            .as_deref()
            .map(parse_ts)
            .transpose()?
            .unwrap_or(now);
        let claimed = update
            .execute(params![
                c.id,
                owner,
                until_s,
                now_s,
                c.lease_generation,
                c.rowid
            ])
            .map_err(db)?;
        if claimed != 1 {
            continue;
        }
        if let Some(k) = &c.concurrency_key {
            keys.push(k.clone());
        }
        runs.push(ClaimedRun {
            id: c.id,
            job_name: c.job_name,
            input: c.input,
            labels,
            concurrency_key: c.concurrency_key,
            generation: (c.lease_generation + 1).max(0) as u64,
            hint: Some(c.rowid),
            attempt: u32::try_from(c.attempt.max(1)).unwrap_or(u32::MAX),
            started_at,
            due_at,
            lease_expires_at: lease_until,
        });
    }
    let next_due = if runs.len() < limit {
        next_due(conn, owner, now)?
    } else {
        None
    };
    Ok(Claimed { runs, next_due })
}

pub(crate) fn next_due(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let now_s = format_ts(now);
    let retry: Option<String> = conn
        .prepare_cached(
            "SELECT MIN(not_before) FROM durably_runs WHERE status = 'pending' AND not_before IS NOT NULL AND not_before > ?1",
        )
        .map_err(db)?
        .query_row(params![now_s], |r| r.get(0))
        .map_err(db)?;
    let lease: Option<String> = conn
        .prepare_cached(
            "SELECT lease_expires_at FROM durably_runs WHERE status = 'leased' AND lease_expires_at > ?1
               AND (lease_owner IS NULL OR lease_owner <> ?2)
             ORDER BY lease_expires_at LIMIT 1",
        )
        .map_err(db)?
        .query_row(params![now_s, owner], |r| r.get(0))
        .optional()
        .map_err(db)?;
    let a = opt_ts(retry)?;
    let b = opt_ts(lease)?;
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

pub(crate) fn renew_leases(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE durably_runs SET lease_expires_at = ?3, updated_at = ?2
             WHERE status = 'leased' AND lease_owner = ?1 AND lease_expires_at > ?2
             RETURNING id, lease_generation",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(
            params![owner, format_ts(now), format_ts(lease_until)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
        )
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(crate) fn recover(conn: &Connection, now: Timestamp) -> Result<u64, StoreError> {
    let now_s = format_ts(now);
    let n = conn
        .prepare_cached(
            "UPDATE durably_runs SET lease_expires_at = ?1 WHERE status = 'leased' AND lease_expires_at > ?1",
        )
        .map_err(db)?
        .execute([&now_s])
        .map_err(db)?;
    Ok(n as u64)
}
