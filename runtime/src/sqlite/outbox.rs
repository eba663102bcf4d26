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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::store::{Backend, Write};

    #[tokio::test]
    async fn rows_are_peeked_oldest_first_and_acknowledged_up_to_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        store
            .commit(vec![Write::Outbox(vec![
                "{\"n\":0}".into(),
                "{\"n\":1}".into(),
            ])])
            .await
            .unwrap();
        store
            .commit(vec![
                Write::Outbox(vec!["{\"n\":2}".into()]),
                Write::Outbox(vec!["{\"n\":3}".into()]),
            ])
            .await
            .unwrap();

        let all = store.outbox_peek(10).await.unwrap();
        let json: Vec<_> = all.iter().map(|e| e.json.as_str()).collect();
        assert_eq!(json, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.outbox_peek(2).await.unwrap(), all[..2]);

        store.outbox_ack(all[1].seq).await.unwrap();
        assert_eq!(store.outbox_peek(10).await.unwrap(), all[2..]);
        store.outbox_ack(all[3].seq).await.unwrap();
        assert!(store.outbox_peek(10).await.unwrap().is_empty());

        // Sequence numbers are not reused once the outbox is empty.
        store
            .commit(vec![Write::Outbox(vec!["{}".into()])])
            .await
            .unwrap();
        assert!(store.outbox_peek(1).await.unwrap()[0].seq > all[3].seq);
    }
}
