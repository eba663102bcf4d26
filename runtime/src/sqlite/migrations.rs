//! Versioned schema migrations.
//!
//! The applied versions are rows of `schema_migrations`. At open, the migrations the database
//! lacks are applied in order, all in one transaction. A database with a version this build does
//! not know was written by a newer build and is refused rather than misread.
//!
//! To change the schema, append a [`Migration`] with the next version to [`MIGRATIONS`]; never
//! edit one that was released.

use rusqlite::{Connection, TransactionBehavior};

use super::{database_error, Context};
use crate::store::StoreError;
use crate::time::Timestamp;

/// Leased rows only, so releasing the leases at start-up does not scan every instance (it did:
/// ~220 ms of a 257 ms reopen with a million instances).
const LEASED_INSTANCES: &str =
    "CREATE INDEX IF NOT EXISTS instances_leased ON instances (lease_owner) WHERE lease_owner IS NOT NULL;";

/// One schema change.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    /// Its number: 1, 2, 3, ... in the order of [`MIGRATIONS`].
    pub(crate) version: i64,
    /// The statements, run as one batch.
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: INSTANCES,
    },
    Migration {
        version: 2,
        sql: super::runs::RUNS_SCHEMA,
    },
    Migration {
        version: 3,
        sql: LEASED_INSTANCES,
    },
    Migration {
        version: 4,
        sql: super::runs::DROP_STEP_NAME_INDEX,
    },
    Migration {
        version: 5,
        sql: STATE_VERSIONS_AND_BROKEN_INSTANCES,
    },
    Migration {
        version: 6,
        sql: super::runs::LISTING_INDEXES,
    },
    Migration {
        version: 7,
        sql: super::runs::PENDING_AND_ENDED_INDEXES,
    },
];

/// Deploys: each state records the version of its shape (a job's `STATE_VERSION`; rows written
/// before are version 0), an instance whose state does not decode is marked broken, and alarms
/// are indexed per job, without broken instances, so a scan asks only for the jobs an engine
/// registers and never walks the alarms of others. Continuous instances whose alarm an earlier
/// version cleared (their job was not registered at the time) get it back, due at once.
const STATE_VERSIONS_AND_BROKEN_INSTANCES: &str = "
ALTER TABLE instances ADD COLUMN state_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN broken TEXT;
DROP INDEX instances_alarm_at;
-- `broken` (always NULL in it) makes the index cover the scans, which name it.
CREATE INDEX instances_alarms ON instances (kind, job, alarm_at, broken)
    WHERE alarm_at IS NOT NULL AND broken IS NULL;
CREATE INDEX instances_broken ON instances (kind, job) WHERE broken IS NOT NULL;
UPDATE instances SET alarm_at = updated_at, version = version + 1
 WHERE kind = 'continuous' AND alarm_at IS NULL AND lease_owner IS NULL;
";

/// Instances (with their alarm and lease), processed event ids and the telemetry outbox.
const INSTANCES: &str = "
CREATE TABLE instances (
    kind             TEXT    NOT NULL,
    job              TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    state            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    run_count        INTEGER NOT NULL DEFAULT 0,
    event_count      INTEGER NOT NULL DEFAULT 0,
    execute_count    INTEGER NOT NULL DEFAULT 0,
    batch_started_at INTEGER,
    last_event_at    INTEGER,
    alarm_at         INTEGER,
    retry_attempt    INTEGER NOT NULL DEFAULT 0,
    retry_started_at INTEGER,
    retry_last_error TEXT,
    version          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    lease_generation INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, job, id)
) WITHOUT ROWID;

-- Carries the primary key, so scanning alarms never touches the table.
CREATE INDEX instances_alarm_at ON instances (alarm_at) WHERE alarm_at IS NOT NULL;

CREATE TABLE event_ids (
    kind     TEXT    NOT NULL,
    job      TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    event_id TEXT    NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, job, id, event_id)
) WITHOUT ROWID;

CREATE INDEX event_ids_seen_at ON event_ids (seen_at);

-- AUTOINCREMENT: a sequence number is never reused, even after every row was acknowledged.
CREATE TABLE outbox (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    json TEXT    NOT NULL
);
";

/// Refuses a file that holds another application's tables, before anything is written to it
/// (switching it to WAL mode alone would change its header). A database is this engine's when
/// it is empty or has both `schema_migrations` and `instances`.
///
/// # Errors
///
/// [`StoreError::Database`] for a foreign database, or a file that is not a database.
pub(crate) fn check_ownership(conn: &Connection) -> Result<(), StoreError> {
    let (tables, ours): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE name IN ('schema_migrations', 'instances'))
               FROM sqlite_master WHERE type = 'table'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .context("reading the schema")?;
    if tables > 0 && ours < 2 {
        return Err(database_error(
            "the file is another application's database (it has tables, but not durable-jobs' \
             schema_migrations and instances); refusing to change it",
        ));
    }
    Ok(())
}

/// Applies the migrations of `migrations` that `conn`'s database lacks, in one transaction.
///
/// # Errors
///
/// [`StoreError::Database`] if the database has a version newer than the last of
/// `migrations`, or if a migration fails (then none is applied).
pub(crate) fn apply(
    conn: &mut Connection,
    migrations: &[Migration],
    now: Timestamp,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("starting the migration transaction")?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )
    .context("creating schema_migrations")?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .context("reading the schema version")?;
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(database_error(format!(
            "the database has schema version {current}, newer than the newest this build of \
             durable-jobs knows ({known}); it was written by a newer version, upgrade to open it"
        )));
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(migration.sql)
            .context_with(|| format!("applying schema migration {}", migration.version))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![migration.version, now],
        )
        .context("recording a schema migration")?;
        tracing::info!(version = migration.version, "applied schema migration");
    }
    tx.commit().context("committing the migrations")
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteOptions, SqliteStore};
    use super::*;

    fn versions(path: &std::path::Path) -> Vec<(i64, i64)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1);
        }
    }

    #[test]
    fn migrations_are_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        SqliteStore::open(SqliteOptions::file(&path))
            .unwrap()
            .close_blocking();
        let first = versions(&path);
        assert_eq!(
            first.iter().map(|v| v.0).collect::<Vec<_>>(),
            (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>()
        );

        // Reopening applies nothing (re-running `CREATE TABLE instances` would fail anyway).
        SqliteStore::open(SqliteOptions::file(&path))
            .unwrap()
            .close_blocking();
        assert_eq!(versions(&path), first);
    }

    #[test]
    fn an_appended_migration_is_applied_to_an_existing_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, MIGRATIONS, Timestamp::from_millis(1)).unwrap();
        let mut more = MIGRATIONS.to_vec();
        more.push(Migration {
            version: MIGRATIONS.len() as i64 + 1,
            sql: "CREATE TABLE later (x INTEGER);",
        });
        apply(&mut conn, &more, Timestamp::from_millis(2)).unwrap();
        conn.execute("INSERT INTO later (x) VALUES (1)", [])
            .unwrap();
        let applied: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, more.len() as i64);
    }

    #[test]
    fn a_failing_migration_applies_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        let broken = [
            MIGRATIONS[0],
            Migration {
                version: 2,
                sql: "CREATE TABLE ok (x); NOT SQL;",
            },
        ];
        assert!(apply(&mut conn, &broken, Timestamp::EPOCH).is_err());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN ('instances', 'ok')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[tokio::test]
    async fn version_5_on_a_file_of_version_4_keeps_every_row_and_gives_cleared_alarms_back() {
        use crate::id::{InstanceKey, JobKind};
        use crate::store::Backend;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let before = MIGRATIONS.iter().take_while(|m| m.version < 5).count();
            apply(&mut conn, &MIGRATIONS[..before], Timestamp::from_millis(1)).unwrap();
            // As an earlier version left them: a continuous instance whose alarm was cleared
            // while its job was not registered, one scheduled, and an idle task.
            conn.execute_batch(
                "INSERT INTO instances (kind, job, id, state, created_at, updated_at, alarm_at, version)
                 VALUES ('continuous', 'meter', 'cleared', '{\"n\":1}', 10, 20, NULL, 3),
                        ('continuous', 'meter', 'scheduled', '{\"n\":2}', 10, 20, 500, 3),
                        ('task', 'orders', 'idle', '{\"total\":5}', 10, 20, NULL, 3);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(SqliteOptions::file(&path)).unwrap();
        let load = |kind, job: &str, id: &str| {
            let key = InstanceKey::new(kind, job, id);
            let store = store.clone();
            async move { store.load(&key).await.unwrap().unwrap() }
        };
        let cleared = load(JobKind::Continuous, "meter", "cleared").await;
        assert_eq!(cleared.alarm_at, Some(Timestamp::from_millis(20)));
        assert_eq!(cleared.state.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!((cleared.state_version, cleared.broken), (0, None));
        assert_eq!(cleared.version, 4);
        let scheduled = load(JobKind::Continuous, "meter", "scheduled").await;
        assert_eq!(scheduled.alarm_at, Some(Timestamp::from_millis(500)));
        assert_eq!(scheduled.version, 3);
        assert_eq!(load(JobKind::Task, "orders", "idle").await.alarm_at, None);
        let scan = store
            .scan_alarms(
                Timestamp::from_millis(100),
                10,
                &[(JobKind::Continuous, "meter")],
            )
            .await
            .unwrap();
        assert_eq!(scan.due.len(), 1);
        assert_eq!(scan.next, Some(Timestamp::from_millis(500)));
        store.close().await.unwrap();
    }

    #[test]
    fn version_6_indexes_the_runs_of_a_file_of_version_5_for_every_listing() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.iter().take_while(|m| m.version < 6).count();
        apply(&mut conn, &MIGRATIONS[..before], Timestamp::from_millis(1)).unwrap();
        conn.execute(
            "INSERT INTO durably_runs (id, job_name, input, status, created_at, updated_at)
             VALUES ('r1', 'j', '{}', 'failed', '2026-01-01T00:00:00.000Z',
                     '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
        let through_6 = MIGRATIONS.iter().take_while(|m| m.version <= 6).count();
        apply(
            &mut conn,
            &MIGRATIONS[..through_6],
            Timestamp::from_millis(2),
        )
        .unwrap();
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'durably_runs'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(indexes.iter().any(|n| n == "idx_durably_runs_job_listed"));
        assert!(!indexes.iter().any(|n| n == "idx_durably_runs_job_created"));
        // The run written before is in both listing indexes.
        for index in ["idx_durably_runs_listed", "idx_durably_runs_job_listed"] {
            let found: i64 = conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM durably_runs INDEXED BY {index}
                          WHERE listed_status = 'failed' AND job_name = 'j'"
                    ),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(found, 1, "{index}");
        }
    }

    #[test]
    fn version_7_reindexes_the_runs_of_a_file_of_version_6_by_phase() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.iter().take_while(|m| m.version < 7).count();
        apply(&mut conn, &MIGRATIONS[..before], Timestamp::from_millis(1)).unwrap();
        // One run in each status, of two jobs; an ended run without an end time and a pending
        // one with one, which no build writes but a file may hold.
        for (id, job, status, ended) in [
            ("p", "j", "pending", None),
            ("p2", "j", "pending", Some("2026-01-01T00:00:03.000Z")),
            ("l", "j", "leased", None),
            ("c", "j", "completed", Some("2026-01-01T00:00:01.000Z")),
            ("f", "k", "failed", Some("2026-01-01T00:00:01.000Z")),
            ("x", "k", "cancelled", None),
        ] {
            conn.execute(
                "INSERT INTO durably_runs (id, job_name, input, status, created_at, updated_at,
                    completed_at)
                 VALUES (?1, ?2, '{}', ?3, '2026-01-01T00:00:00.000Z',
                         '2026-01-01T00:00:02.000Z', ?4)",
                rusqlite::params![id, job, status, ended],
            )
            .unwrap();
        }
        apply(&mut conn, MIGRATIONS, Timestamp::from_millis(2)).unwrap();
        let ids = |sql: &str| -> Vec<String> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        // Each index holds the runs written before that its phase covers, and no other.
        assert_eq!(
            ids(
                "SELECT id FROM durably_runs INDEXED BY idx_durably_runs_pending
                  WHERE status = 'pending' ORDER BY id"
            ),
            ["p", "p2"]
        );
        assert_eq!(
            ids(
                "SELECT id FROM durably_runs INDEXED BY idx_durably_runs_ended
                  WHERE completed_at IS NOT NULL ORDER BY id"
            ),
            ["c", "f", "x"]
        );
        assert_eq!(
            ids(
                "SELECT id FROM durably_runs INDEXED BY idx_durably_runs_job_ended
                  WHERE job_name = 'k' AND status = 'failed' AND completed_at IS NOT NULL"
            ),
            ["f"]
        );
        // Ended runs keep their end time or get their last update's; the others have none.
        assert_eq!(
            ids("SELECT id || ' ' || COALESCE(completed_at, '-') FROM durably_runs ORDER BY id"),
            [
                "c 2026-01-01T00:00:01.000Z",
                "f 2026-01-01T00:00:01.000Z",
                "l -",
                "p -",
                "p2 -",
                "x 2026-01-01T00:00:02.000Z"
            ]
        );
        let names = ids("SELECT name FROM sqlite_master WHERE tbl_name = 'durably_runs'");
        for gone in ["idx_durably_runs_listed", "idx_durably_runs_job_listed"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
        }
        let columns = ids("SELECT name FROM pragma_table_xinfo('durably_runs')");
        assert!(!columns.iter().any(|c| c == "listed_status"), "{columns:?}");
        assert_eq!(columns.len(), 21, "{columns:?}");
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        SqliteStore::open(SqliteOptions::file(&path))
            .unwrap()
            .close_blocking();
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
                [],
            )
            .unwrap();

        let err = SqliteStore::open(SqliteOptions::file(&path)).unwrap_err();
        assert!(matches!(err, StoreError::Database(_)));
        let message = err.to_string();
        assert!(
            message.contains("schema version 999") && message.contains("newer"),
            "{message}"
        );
        // The refused open released the file.
        assert!(
            super::super::lock::DatabaseFile::lock(&path, crate::store::Ownership::Exclusive)
                .is_ok()
        );
    }
}
