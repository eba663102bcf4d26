//! The journal mode and `synchronous` level a figure was measured with, read at run time from
//! the connection that committed: ours from the engine's write connection, the raw-SQLite
//! ceiling's from its own, each peer's from its connection (the peers' harnesses print them).
//! Side-by-side figures are compared only when both sides agree on both.

use std::fmt;

use serde_json::Value;

use crate::BenchResult;

/// How a side committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Durability {
    /// `wal`, `delete`, `memory`, ...
    pub(crate) journal_mode: String,
    /// The level acknowledged writes have: `NORMAL`, `FULL`, ...
    pub(crate) synchronous: String,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.journal_mode, self.synchronous)
    }
}

impl Durability {
    /// A PostgreSQL server's commits: `journal_mode` is `postgres`, the level its
    /// `synchronous_commit` (`ON`, `OFF`, `REMOTE_APPLY`, ...).
    pub(crate) fn postgres(synchronous_commit: &str) -> Durability {
        Durability {
            journal_mode: "postgres".into(),
            synchronous: synchronous_commit.to_ascii_uppercase(),
        }
    }
}

/// SQLite's number for a `synchronous` level, or its name, as the name.
fn level_name(level: &str) -> String {
    match level.to_ascii_uppercase().as_str() {
        "0" | "OFF" => "OFF".into(),
        "1" | "NORMAL" => "NORMAL".into(),
        "2" | "FULL" => "FULL".into(),
        "3" | "EXTRA" => "EXTRA".into(),
        other => other.into(),
    }
}

/// What the engine's store commits with, read from its write connection. With
/// `Synchronous::Full` the connection runs `NORMAL` and a thread of the store syncs the log
/// before each write is acknowledged: that is `FULL` for every acknowledged write.
pub(crate) async fn of_engine<R: durable_jobs::Registry>(
    engine: &durable_jobs::Engine<R>,
) -> BenchResult<Durability> {
    let d = durable_jobs::bench_internals::store_durability(engine)
        .await?
        .ok_or("the engine's store reports no journal mode")?;
    Ok(Durability {
        journal_mode: d.journal_mode.clone(),
        synchronous: level_name(d.synchronous()),
    })
}

/// What a raw rusqlite connection commits with.
pub(crate) fn of_connection(conn: &rusqlite::Connection) -> BenchResult<Durability> {
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    Ok(Durability {
        journal_mode: journal_mode.to_ascii_lowercase(),
        synchronous: level_name(&level.to_string()),
    })
}

/// What a peer's JSON line says its connection ran with (`journal_mode`, `synchronous`).
pub(crate) fn of_peer(line: &Value) -> Option<Durability> {
    let text = |k: &str| line.get(k).and_then(Value::as_str);
    Some(Durability {
        journal_mode: text("journal_mode")?.to_ascii_lowercase(),
        synchronous: level_name(text("synchronous")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_raw_connection_and_a_peer_line() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("d.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        assert_eq!(of_connection(&conn).unwrap().to_string(), "wal/FULL");

        let line = serde_json::json!({"journal_mode": "WAL", "synchronous": "normal"});
        assert_eq!(of_peer(&line).unwrap().to_string(), "wal/NORMAL");
        assert!(of_peer(&serde_json::json!({"drain_per_s": 5})).is_none());

        // A PostgreSQL peer's line and ours agree when the server's level is the same.
        let line = serde_json::json!({"journal_mode": "postgres", "synchronous": "on"});
        assert_eq!(of_peer(&line), Some(Durability::postgres("on")));
        assert_eq!(Durability::postgres("on").to_string(), "postgres/ON");
    }
}
