//! SQL for the telemetry outbox: events written with the change they describe, removed once
//! delivered.

use rusqlite::{params, Connection};

use super::{limit_to_sql, Context};
use crate::store::{OutboxEntry, StoreError};

/// Appends `rows` in order.
pub(super) fn append(conn: &Connection, rows: &[String]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO outbox (json) VALUES (?1)")
        .context("preparing to append to the outbox")?;
    for json in rows {
        stmt.execute([json]).context("appending to the outbox")?;
    }
    Ok(())
}

/// Up to `limit` rows, oldest first.
pub(super) fn peek(conn: &Connection, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, json FROM outbox ORDER BY seq LIMIT ?1")
        .context("preparing to read the outbox")?;
    let rows = stmt
        .query_map(params![limit_to_sql(limit)], |row| {
            Ok(OutboxEntry {
                seq: row.get(0)?,
                json: row.get(1)?,
            })
        })
        .context("reading the outbox")?;
    rows.collect::<rusqlite::Result<_>>()
        .context("reading the outbox")
}

/// Removes the rows up to and including `seq`.
pub(super) fn ack(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")
        .context("preparing to acknowledge outbox rows")?
        .execute([seq])
        .context("acknowledging outbox rows")?;
    Ok(())
}
