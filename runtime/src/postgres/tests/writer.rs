//! The writer's groups on a real server: what one write of a group does to the others.
//!
//! Each test holds the writer inside a first group (a write waiting for an advisory lock the
//! test holds) while it queues the writes under test, so that they make one group when the
//! test lets the first one commit.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::*;
use crate::postgres::writer::Writer;

/// How long a test waits for the writer or the server to reach the state it waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// The advisory lock the first group waits for.
const HOLD: i64 = 0x6a6f_6273;
/// The advisory lock a write of the group under test waits for.
const STALL: i64 = HOLD + 1;

/// A store (for its pool and schema) with a scratch table, and a writer of the test's own.
async fn setup(schema: &TestSchema) -> (PostgresStore, Arc<Sql>, Writer) {
    let store = schema.open().await;
    let sql = Arc::new(Sql::new(store.schema()));
    sqlx::query(&sql.get("CREATE TABLE {s}.scratch (k text PRIMARY KEY)"))
        .execute(store.pool())
        .await
        .unwrap();
    let writer = Writer::start(store.pool(), &sql, 1);
    (store, sql, writer)
}

/// Inserts the key, and returns the transaction's id.
fn insert<'c>(
    conn: &'c mut PgConnection,
    sql: &'c Sql,
    key: &'c &'static str,
) -> WriteFuture<'c, i64> {
    Box::pin(async move {
        sqlx::query(&sql.get("INSERT INTO {s}.scratch (k) VALUES ($1)"))
            .bind(*key)
            .execute(&mut *conn)
            .await
            .context("inserting")?;
        let txid: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(conn)
            .await
            .context("reading the transaction id")?;
        Ok(Decision::Commit(txid))
    })
}

type WriteFuture<'c, T> = BoxFuture<'c, Result<Decision<T>, StoreError>>;

/// Waits for the advisory lock `key`, held until the end of the transaction.
fn wait_for_lock<'c>(conn: &'c mut PgConnection, _: &'c Sql, key: &'c i64) -> WriteFuture<'c, ()> {
    Box::pin(async move {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(*key)
            .execute(conn)
            .await
            .context("waiting for a lock")?;
        Ok(Decision::Commit(()))
    })
}

/// The keys in the scratch table.
async fn keys(store: &PostgresStore, sql: &Sql) -> Vec<String> {
    sqlx::query_scalar(&sql.get("SELECT k FROM {s}.scratch ORDER BY k"))
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// The backend waiting for advisory lock `key`, once there is one.
async fn waiting_for(admin: &mut PgConnection, key: i64) -> i32 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(key)
        .fetch_optional(&mut *admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backend waits for lock {key}"
        );
        tokio::task::yield_now().await;
    }
}

/// Waits until `n` writes are queued behind the running group.
async fn queued(writer: &Writer, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while writer.queued().await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} writes were never queued"
        );
        tokio::task::yield_now().await;
    }
}

/// A lock held by the test's own session until it lets go.
async fn hold(admin: &mut PgConnection, key: i64) {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(admin)
        .await
        .unwrap();
}

async fn let_go(admin: &mut PgConnection, key: i64) {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_or_rolls_back_in_a_group_leaves_the_others_committed() {
    let schema = TestSchema::new();
    let (store, sql, writer) = setup(&schema).await;
    let writer = Arc::new(writer);
    let mut admin = schema.admin().await;
    hold(&mut admin, HOLD).await;
    let first = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.write(HOLD, wait_for_lock).await }
    });
    waiting_for(&mut admin, HOLD).await;

    let spawn_insert = |key: &'static str| {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move { writer.write(key, insert).await })
    };
    let a = spawn_insert("a");
    queued(&writer, 1).await;
    // Writes a row, then fails on its own: the key `a` is taken by the write before it.
    let fails = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move {
            writer
                .write((), |conn, sql, ()| {
                    Box::pin(async move {
                        for key in ["b", "a"] {
                            sqlx::query(&sql.get("INSERT INTO {s}.scratch (k) VALUES ($1)"))
                                .bind(key)
                                .execute(&mut *conn)
                                .await
                                .context("inserting")?;
                        }
                        Ok(Decision::Commit(()))
                    })
                })
                .await
        }
    });
    queued(&writer, 2).await;
    // Writes a row, then decides to roll back its part.
    let refuses = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move {
            writer
                .write((), |conn, sql, ()| {
                    Box::pin(async move {
                        sqlx::query(&sql.get("INSERT INTO {s}.scratch (k) VALUES ('c')"))
                            .execute(conn)
                            .await
                            .context("inserting")?;
                        Ok(Decision::RollBack("refused"))
                    })
                })
                .await
        }
    });
    queued(&writer, 3).await;
    let d = spawn_insert("d");
    queued(&writer, 4).await;
    let_go(&mut admin, HOLD).await;

    first.await.unwrap().unwrap();
    let a = a.await.unwrap().unwrap();
    let d = d.await.unwrap().unwrap();
    assert_eq!(a, d, "the writes did not share a transaction");
    let error = fails.await.unwrap().unwrap_err();
    assert_eq!(
        codec::sqlstate(&error).as_deref(),
        Some(codec::UNIQUE_VIOLATION),
        "{error}"
    );
    assert_eq!(refuses.await.unwrap().unwrap(), "refused");
    assert_eq!(keys(&store, &sql).await, ["a", "d"]);
    writer.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_loses_its_connection_fails_every_write_and_the_next_group_reconnects() {
    let schema = TestSchema::new();
    let (store, sql, writer) = setup(&schema).await;
    let writer = Arc::new(writer);
    let mut admin = schema.admin().await;
    hold(&mut admin, HOLD).await;
    hold(&mut admin, STALL).await;
    let first = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.write(HOLD, wait_for_lock).await }
    });
    waiting_for(&mut admin, HOLD).await;
    let a = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.write("a", insert).await }
    });
    queued(&writer, 1).await;
    let stalled = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.write(STALL, wait_for_lock).await }
    });
    queued(&writer, 2).await;
    let_go(&mut admin, HOLD).await;
    first.await.unwrap().unwrap();

    // The group of `a` and the stalled write is under way, `a` written: cut its connection.
    let backend = waiting_for(&mut admin, STALL).await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(backend)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    for (what, outcome) in [
        ("a", a.await.unwrap().map(|_| ())),
        ("stalled", stalled.await.unwrap()),
    ] {
        assert!(
            matches!(outcome, Err(StoreError::Database(_))),
            "{what}: {outcome:?}"
        );
    }
    assert!(
        keys(&store, &sql).await.is_empty(),
        "part of the group was applied"
    );

    writer.write("z", insert).await.unwrap();
    assert_eq!(keys(&store, &sql).await, ["z"]);
    let_go(&mut admin, STALL).await;
    admin.close().await.unwrap();
    writer.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_folded_into_one_statement_are_each_fenced_on_their_own_run() {
    use crate::store::runs::{Fence, Finish, FinishOutcome, NewRun, RunStatus, RunStore};

    let schema = TestSchema::new();
    let store = Arc::new(schema.open().await);
    let now = crate::time::Timestamp::from_millis(1_767_225_600_000);
    let runs = ["r1", "r2", "r3"].map(|id| NewRun {
        id: id.to_owned(),
        job_name: "job".to_owned(),
        input: "null".to_owned(),
        idempotency_key: None,
        concurrency_key: None,
        labels: Default::default(),
        coalesce: false,
    });
    store.enqueue(runs.to_vec(), now).await.unwrap();
    let until = crate::time::Timestamp::from_millis(now.as_millis() + 60_000);
    let claimed = store.claim("me", now, until, 3).await.unwrap();
    assert_eq!(claimed.runs.len(), 3);

    let mut admin = schema.admin().await;
    hold(&mut admin, HOLD).await;
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.writer.write(HOLD, wait_for_lock).await }
    });
    waiting_for(&mut admin, HOLD).await;
    let mut finishing = Vec::new();
    for (i, run) in claimed.runs.iter().enumerate() {
        // The second completion is fenced out: its generation is not the claim's.
        let fence = Fence {
            run_id: run.id.clone(),
            generation: run.generation + u64::from(i == 1),
            hint: None,
        };
        let finisher = Arc::clone(&store);
        finishing.push(tokio::spawn(async move {
            let finish = Finish::Completed {
                output: Some(format!("{i}")),
                completed_step_count: 0,
                current_step_index: 0,
            };
            finisher
                .finish_run(fence, finish, Vec::new(), false, now)
                .await
        }));
        queued(&store.writer, i + 1).await;
    }
    let_go(&mut admin, HOLD).await;
    first.await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for finishing in finishing {
        outcomes.push(finishing.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes,
        [
            FinishOutcome::Completed,
            FinishOutcome::Refused,
            FinishOutcome::Completed
        ]
    );
    for (i, run) in claimed.runs.iter().enumerate() {
        let stored = store.get_run(&run.id).await.unwrap().unwrap();
        if i == 1 {
            assert_eq!(stored.status, RunStatus::Leased);
            assert_eq!(stored.output, None);
        } else {
            assert_eq!(stored.status, RunStatus::Completed);
            assert_eq!(stored.output.as_deref(), Some(format!("{i}").as_str()));
        }
    }
    store.close().await.unwrap();
}
