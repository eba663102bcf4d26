//! The outbox's claims: how the telemetry senders of several processes share one outbox.
//!
//! Every engine with HTTP telemetry runs a sender over the same table. A sender takes a batch
//! for itself (`claimed_by`, `claimed_until`, migration 3) in one statement that passes over
//! rows another sender is taking at that moment (`FOR UPDATE SKIP LOCKED`) and rows another
//! holds with a live claim, posts it, then deletes exactly those rows. While two senders live,
//! neither posts a row the other took. A sender that dies leaves its rows claimed until the
//! claim lapses; the next sender to look after that takes them: delivery is at least once
//! across a crash, as it is on one process (a batch posted just before its sender died is
//! posted again).

use sqlx::PgConnection;

use super::codec::{Context, DbTime, Sql};
use crate::store::{OutboxEntry, StoreError};
use crate::time::Timestamp;

/// Takes up to `limit` rows, oldest first, for `owner` until `until`: rows nobody holds at
/// `now`, and `owner`'s own (a batch it is sending again).
pub(super) async fn claim(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
    now: Timestamp,
    until: Timestamp,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut rows: Vec<(i64, String)> = sqlx::query_as(&sql.get(
        "WITH taken AS (
              SELECT seq FROM {s}.outbox
               WHERE claimed_until IS NULL OR claimed_until <= $2 OR claimed_by = $1
               ORDER BY seq LIMIT $4
                 FOR UPDATE SKIP LOCKED)
         UPDATE {s}.outbox o SET claimed_by = $1, claimed_until = $3
           FROM taken WHERE o.seq = taken.seq
         RETURNING o.seq, o.json",
    ))
    .bind(owner)
    .bind(DbTime(now))
    .bind(DbTime(until))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
    .context("claiming outbox events")?;
    // `RETURNING` keeps no order.
    rows.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(rows
        .into_iter()
        .map(|(seq, json)| OutboxEntry { seq, json })
        .collect())
}

/// Deletes the rows of `seqs`: delivered, whoever holds them now.
pub(super) async fn delivered(
    conn: &mut PgConnection,
    sql: &Sql,
    seqs: &[i64],
) -> Result<(), StoreError> {
    sqlx::query(&sql.get("DELETE FROM {s}.outbox WHERE seq = ANY($1)"))
        .bind(seqs)
        .execute(conn)
        .await
        .context("removing delivered outbox events")?;
    Ok(())
}

/// Clears the claims of `owner`, for other senders to take its rows at once.
pub(super) async fn release(
    conn: &mut PgConnection,
    sql: &Sql,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(&sql.get(
        "UPDATE {s}.outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
    ))
    .bind(owner)
    .execute(conn)
    .await
    .context("releasing outbox claims")?;
    Ok(())
}
