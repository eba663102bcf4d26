//! Claiming runs, renewing and expiring leases, and when something next becomes claimable.

use sqlx::{PgConnection, Row};

use super::codec::parse_labels;
use crate::postgres::codec::{to_i64, to_u32, to_u64, Context, DbTime, Sql};
use crate::store::runs::{Claimed, ClaimedRun};
use crate::store::StoreError;
use crate::time::Timestamp;

/// A run that may be claimed, as the candidate query reads it.
struct Candidate {
    id: String,
    job_name: String,
    input: String,
    labels: String,
    concurrency_key: Option<String>,
    attempt: i64,
    started_at: Option<DbTime>,
    due_at: Option<DbTime>,
}

/// The runs a claim may take, oldest first, locked: due pending runs (through
/// `runs_status_created`) and expired leases (through `runs_leased_expiry`) whose concurrency
/// key no live lease holds. Rows locked by a concurrent claim are skipped, not waited for.
const CANDIDATES: &str = "
    SELECT r.id, r.job_name, r.input, r.labels, r.concurrency_key, r.attempt, r.started_at,
           CASE r.status WHEN 'leased' THEN r.lease_expires_at
                ELSE COALESCE(r.not_before, r.created_at) END
      FROM {s}.runs r
     WHERE r.id IN (
            (SELECT p.id FROM {s}.runs p
              WHERE p.status = 'pending' AND (p.not_before IS NULL OR p.not_before <= $1)
                AND (p.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.runs a
                      WHERE a.status = 'leased' AND a.concurrency_key = p.concurrency_key
                        AND a.lease_expires_at > $1))
              ORDER BY p.created_at, p.id LIMIT $2)
            UNION ALL
            (SELECT e.id FROM {s}.runs e
              WHERE e.status = 'leased' AND e.lease_expires_at <= $1
                AND (e.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.runs a
                      WHERE a.status = 'leased' AND a.concurrency_key = e.concurrency_key
                        AND a.lease_expires_at > $1))
              ORDER BY e.lease_expires_at LIMIT $2))
       -- Checked again on rows another claim changed meanwhile (PostgreSQL re-reads a row it
       -- waited for before locking it).
       AND ((r.status = 'pending' AND (r.not_before IS NULL OR r.not_before <= $1))
            OR (r.status = 'leased' AND r.lease_expires_at <= $1))
     ORDER BY r.created_at, r.id
     LIMIT $2
     FOR UPDATE OF r SKIP LOCKED";

/// Claims up to `limit` runs for `owner`, oldest first; see
/// [`RunStore::claim`](crate::store::runs::RunStore::claim). Runs inside the caller's
/// transaction:
///
/// 1. the candidates (due pending runs and expired leases whose concurrency key no live lease
///    holds) are locked with `FOR UPDATE SKIP LOCKED`, so concurrent claims take different rows
///    without waiting for each other;
/// 2. a keyed candidate is taken only if this transaction gets the key's advisory lock
///    (`pg_try_advisory_xact_lock`, released at commit) and no live lease holds the key once it
///    has it: two processes claiming runs of one key at once cannot both lease one;
/// 3. the runs taken are leased in one `UPDATE`.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Claimed, StoreError> {
    if limit == 0 {
        return Ok(Claimed::default());
    }
    // Over-fetch a little: candidates sharing a concurrency key are skipped after the first.
    let fetch = to_i64((limit + limit / 4 + 1).min(2000) as u64);
    let rows = sqlx::query(&sql.get(CANDIDATES))
        .bind(DbTime(now))
        .bind(fetch)
        .fetch_all(&mut *conn)
        .await
        .context("finding runs to claim")?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in rows {
        let read = || -> Result<Candidate, sqlx::Error> {
            Ok(Candidate {
                id: row.try_get(0)?,
                job_name: row.try_get(1)?,
                input: row.try_get(2)?,
                labels: row.try_get(3)?,
                concurrency_key: row.try_get(4)?,
                attempt: row.try_get(5)?,
                started_at: row.try_get(6)?,
                due_at: row.try_get(7)?,
            })
        };
        candidates.push(read().context("reading a run to claim")?);
    }
    let mut keys: Vec<String> = Vec::new();
    let mut taken = Vec::with_capacity(limit.min(candidates.len()));
    for c in candidates {
        if taken.len() == limit {
            break;
        }
        if let Some(key) = &c.concurrency_key {
            if keys.contains(key) || !key_is_free(conn, sql, key, &c.id, now).await? {
                continue;
            }
            keys.push(key.clone());
        }
        taken.push(c);
    }
    let ids: Vec<&str> = taken.iter().map(|c| c.id.as_str()).collect();
    let leased: Vec<(String, i64)> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(&sql.get(
            "UPDATE {s}.runs
                SET status = 'leased', lease_owner = $2, lease_expires_at = $3,
                    lease_generation = lease_generation + 1,
                    started_at = COALESCE(started_at, $4), not_before = NULL, updated_at = $4
              WHERE id = ANY($1)
              RETURNING id, lease_generation",
        ))
        .bind(&ids)
        .bind(owner)
        .bind(DbTime(lease_until))
        .bind(DbTime(now))
        .fetch_all(&mut *conn)
        .await
        .context("leasing runs")?
    };
    let mut runs = Vec::with_capacity(taken.len());
    for c in taken {
        // Every candidate is locked by this transaction, so every one was leased.
        let Some((_, generation)) = leased.iter().find(|(id, _)| *id == c.id) else {
            continue;
        };
        runs.push(ClaimedRun {
            labels: parse_labels(&c.id, &c.labels)?,
            generation: to_u64(*generation),
            hint: None,
            attempt: to_u32(c.attempt).max(1),
            started_at: c.started_at.map_or(now, |t| t.0),
            due_at: c.due_at.map_or(now, |t| t.0),
            lease_expires_at: lease_until,
            id: c.id,
            job_name: c.job_name,
            input: c.input,
            concurrency_key: c.concurrency_key,
        });
    }
    let next_due = if runs.len() < limit {
        next_due(conn, sql, owner, now).await?
    } else {
        None
    };
    Ok(Claimed { runs, next_due })
}

/// Whether this transaction may lease run `id` of concurrency key `key`: it holds the key's
/// advisory lock (nobody else is claiming a run of the key right now) and no other run of the
/// key holds a live lease (no claim committed one since the candidates were read).
async fn key_is_free(
    conn: &mut PgConnection,
    sql: &Sql,
    key: &str,
    id: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('durable_jobs:' || $1), hashtext($2))",
    )
    .bind(sql.schema())
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .context("locking a concurrency key")?;
    if !locked {
        return Ok(false);
    }
    let held: bool = sqlx::query_scalar(&sql.get(
        "SELECT EXISTS (SELECT 1 FROM {s}.runs
                         WHERE status = 'leased' AND concurrency_key = $1
                           AND lease_expires_at > $2 AND id <> $3)",
    ))
    .bind(key)
    .bind(DbTime(now))
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .context("checking a concurrency key")?;
    Ok(!held)
}

/// The earliest time after `now` at which a run may become claimable by itself: a retry's
/// not-before time, or the expiry of a lease another owner holds.
pub(crate) async fn next_due(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let next: Option<DbTime> = sqlx::query_scalar(&sql.get(
        "SELECT LEAST(
            (SELECT MIN(not_before) FROM {s}.runs
              WHERE status = 'pending' AND not_before IS NOT NULL AND not_before > $1),
            (SELECT MIN(lease_expires_at) FROM {s}.runs
              WHERE status = 'leased' AND lease_expires_at > $1
                AND (lease_owner IS NULL OR lease_owner <> $2)))",
    ))
    .bind(DbTime(now))
    .bind(owner)
    .fetch_one(conn)
    .await
    .context("finding the next due run")?;
    Ok(next.map(|t| t.0))
}

/// Extends to `lease_until` every live lease of `owner`; returns the runs renewed with their
/// generations.
pub(crate) async fn renew_leases(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(&sql.get(
        "UPDATE {s}.runs SET lease_expires_at = $3, updated_at = $2
          WHERE status = 'leased' AND lease_owner = $1 AND lease_expires_at > $2
          RETURNING id, lease_generation",
    ))
    .bind(owner)
    .bind(DbTime(now))
    .bind(DbTime(lease_until))
    .fetch_all(conn)
    .await
    .context("renewing run leases")?;
    Ok(rows
        .into_iter()
        .map(|(id, generation)| (id, to_u64(generation)))
        .collect())
}

/// Expires every live lease at `now`; returns how many.
pub(crate) async fn recover(
    conn: &mut PgConnection,
    sql: &Sql,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let expired = sqlx::query(&sql.get(
        "UPDATE {s}.runs SET lease_expires_at = $1
          WHERE status = 'leased' AND lease_expires_at > $1",
    ))
    .bind(DbTime(now))
    .execute(conn)
    .await
    .context("expiring run leases")?;
    Ok(expired.rows_affected())
}
