//! The store contract on a real server, and what is PostgreSQL's own: migrations, schemas,
//! pools.
//!
//! Every test works in a schema of its own, created for it on the server at
//! `DURABLE_JOBS_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and dropped when
//! its guard is. Without a reachable server the tests fail: they are never skipped.

use std::sync::Arc;

use super::*;
use crate::store::Write;

/// The server the tests use.
pub(crate) fn server_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema created for one test, dropped (with everything in it) when the guard is dropped.
pub(crate) struct TestSchema {
    name: String,
}

impl TestSchema {
    /// A fresh, unique schema name; nothing is created until a store opens it.
    pub(crate) fn new() -> Self {
        TestSchema {
            name: format!("dj_test_{}", ulid::Ulid::new().to_string().to_lowercase()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Options for a store in this schema on the test server.
    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions::new(server_url())
            .schema(&self.name)
            .max_connections(4)
            // Without a server, each test fails after this long instead of sqlx's 30 s.
            .acquire_timeout(std::time::Duration::from_secs(10))
    }

    /// A store in this schema; panics, failing the test, when the server cannot be reached.
    pub(crate) async fn open(&self) -> PostgresStore {
        PostgresStore::open(self.options())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL tests need a server at {} (set DURABLE_JOBS_PG_URL): {e}",
                    server_url()
                )
            })
    }

    /// A connection of its own to the test server, outside any store.
    pub(crate) async fn admin(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&server_url())
            .await
            .expect("connecting to the test server")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: the schema is dropped on
        // a thread of its own with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&server_url()).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A fresh store in a schema of its own, with the guard that drops the schema.
pub(crate) async fn fresh_store() -> (TestSchema, Arc<dyn Store>) {
    let schema = TestSchema::new();
    let store: Arc<dyn Store> = Arc::new(schema.open().await);
    (schema, store)
}

/// The store contract, on PostgreSQL.
mod conformance {
    crate::store::conformance::conformance_tests!(super::fresh_store().await);
}

fn key(id: &str) -> InstanceKey {
    InstanceKey::new(JobKind::Task, "job", id)
}

async fn versions(schema: &TestSchema) -> Vec<i64> {
    let mut conn = schema.admin().await;
    sqlx::query_scalar(&format!(
        "SELECT version FROM \"{}\".schema_migrations ORDER BY version",
        schema.name()
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[test]
fn versions_start_at_one_and_increase_by_one() {
    for (i, migration) in migrations::MIGRATIONS.iter().enumerate() {
        assert_eq!(migration.version, i as i64 + 1);
    }
}

#[tokio::test]
async fn migrations_are_applied_once() {
    let schema = TestSchema::new();
    let first = schema.open().await;
    let all: Vec<i64> = (1..=migrations::MIGRATIONS.len() as i64).collect();
    assert_eq!(versions(&schema).await, all);
    first.close().await.unwrap();
    // Reopening applies nothing (running `CREATE TABLE instances` again would fail anyway).
    let again = schema.open().await;
    assert_eq!(versions(&schema).await, all);
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_starting_together_migrate_once() {
    let schema = TestSchema::new();
    let opens: Vec<_> = (0..6)
        .map(|_| tokio::spawn(PostgresStore::open(schema.options())))
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("every store opens"));
    }
    let all: Vec<i64> = (1..=migrations::MIGRATIONS.len() as i64).collect();
    assert_eq!(versions(&schema).await, all);
    // They all see one schema: what one writes, the others read.
    let record = InstanceRecord::new(key("a"), Timestamp::from_millis(1));
    stores[0]
        .commit(vec![Write::Insert(record.clone())])
        .await
        .unwrap();
    for store in &stores {
        assert_eq!(store.load(&key("a")).await.unwrap(), Some(record.clone()));
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused() {
    let schema = TestSchema::new();
    schema.open().await.close().await.unwrap();
    let mut conn = schema.admin().await;
    sqlx::raw_sql(&format!(
        "INSERT INTO \"{}\".schema_migrations (version) VALUES (999)",
        schema.name()
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let err = PostgresStore::open(schema.options()).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("version 999") && message.contains("newer"),
        "{message}"
    );
}

#[tokio::test]
async fn a_schema_holding_another_applications_tables_is_left_alone() {
    let schema = TestSchema::new();
    let mut conn = schema.admin().await;
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".orders (id int)",
        schema.name()
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let err = PostgresStore::open(schema.options()).await.unwrap_err();
    assert!(
        err.to_string().contains("another application's tables"),
        "{err}"
    );
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = $1")
        .bind(schema.name())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        tables, 1,
        "nothing was created beside the application's table"
    );
}

#[tokio::test]
async fn each_schema_is_a_store_of_its_own() {
    let (one, two) = (TestSchema::new(), TestSchema::new());
    let (a, b) = (one.open().await, two.open().await);
    assert_eq!(a.schema(), one.name());
    let record = InstanceRecord::new(key("a"), Timestamp::from_millis(1));
    a.commit(vec![Write::Insert(record.clone())]).await.unwrap();
    assert_eq!(a.load(&key("a")).await.unwrap(), Some(record.clone()));
    assert_eq!(b.load(&key("a")).await.unwrap(), None);
    // The tables are in the schema named, and nowhere else.
    let mut conn = one.admin().await;
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'instances'",
    )
    .bind(one.name())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(found, 1);
    // The same insert in the other schema is no conflict.
    b.commit(vec![Write::Insert(record)]).await.unwrap();
}

#[tokio::test]
async fn an_invalid_schema_name_is_refused_before_connecting() {
    let options = PostgresOptions::new("postgres://nobody@127.0.0.1:1/none").schema("a;b");
    let err = PostgresStore::open(options).await.unwrap_err();
    assert!(err.to_string().contains("invalid schema name"), "{err}");
}

#[tokio::test]
async fn a_store_on_the_applications_pool_leaves_the_pool_open_when_closed() {
    let schema = TestSchema::new();
    let pool = PgPool::connect(&server_url()).await.unwrap();
    let store = PostgresStore::open(PostgresOptions::from_pool(pool.clone()).schema(schema.name()))
        .await
        .unwrap();
    store
        .commit(vec![Write::Insert(InstanceRecord::new(
            key("a"),
            Timestamp::from_millis(1),
        ))])
        .await
        .unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.load(&key("a")).await,
        Err(StoreError::Closed)
    ));
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1, "the application's pool is still open");
}

#[tokio::test]
async fn an_unreachable_server_is_a_storage_error() {
    let options = PostgresOptions::new("postgres://nobody@127.0.0.1:1/none")
        .acquire_timeout(std::time::Duration::from_secs(2));
    let err = PostgresStore::open(options).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
}

/// Two stores on one schema, as two processes: each with a pool of its own.
async fn two_stores() -> (TestSchema, Arc<PostgresStore>, Arc<PostgresStore>) {
    let schema = TestSchema::new();
    let a = Arc::new(schema.open().await);
    let b = Arc::new(schema.open().await);
    (schema, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_alarm_is_claimed_by_one_of_two_processes() {
    use crate::store::Lease;
    let (_schema, a, b) = two_stores().await;
    let now = Timestamp::from_millis(1_000);
    let records: Vec<Write> = (0..40)
        .map(|i| {
            let mut record = InstanceRecord::new(key(&format!("i{i}")), now);
            record.alarm_at = Some(now);
            Write::Insert(record)
        })
        .collect();
    a.commit(records).await.unwrap();
    let until = Timestamp::from_millis(61_000);
    let claims: Vec<_> = (0..40)
        .flat_map(|i| {
            [(a.clone(), "a"), (b.clone(), "b")].map(|(store, owner)| {
                tokio::spawn(async move {
                    store
                        .claim_alarm(&key(&format!("i{i}")), now, owner, until)
                        .await
                        .unwrap()
                        .map(|claimed| (i, claimed.lease))
                })
            })
        })
        .collect();
    let mut won = Vec::new();
    for claim in claims {
        won.extend(claim.await.unwrap());
    }
    won.sort_by_key(|(i, _)| *i);
    let instances: Vec<i32> = won.iter().map(|(i, _)| *i).collect();
    assert_eq!(instances, (0..40).collect::<Vec<_>>(), "one winner each");
    for (i, lease) in won {
        let stored = a.load(&key(&format!("i{i}"))).await.unwrap().unwrap();
        assert_eq!(stored.lease, lease, "the winner's lease is the stored one");
        assert_eq!(stored.lease.map(|l: Lease| l.until), Some(until));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_racing_in_two_processes_honour_idempotency_and_concurrency_keys() {
    use crate::store::runs::{EnqueueOutcome, Enqueued, NewRun, RunStore};
    let (_schema, a, b) = two_stores().await;
    let now = Timestamp::from_millis(1_000);
    let run = |id: String, idempotency: Option<String>, concurrency: Option<String>| NewRun {
        id,
        job_name: "job".into(),
        input: "{}".into(),
        idempotency_key: idempotency,
        concurrency_key: concurrency,
        labels: Default::default(),
        coalesce: false,
    };
    for round in 0..20 {
        // The same idempotency key from both: one run, which both get back.
        let key = Some(format!("idem-{round}"));
        let (x, y) = tokio::join!(
            a.enqueue(vec![run(format!("a{round}"), key.clone(), None)], now),
            b.enqueue(vec![run(format!("b{round}"), key, None)], now),
        );
        let id = |outcome: EnqueueOutcome| match outcome {
            EnqueueOutcome::Done(mut done) => match done.pop() {
                Some(Enqueued::Created(r)) => (true, r.id),
                Some(Enqueued::Idempotent(r)) => (false, r.id),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let ((x_created, x_id), (y_created, y_id)) = (id(x.unwrap()), id(y.unwrap()));
        assert_eq!(x_id, y_id, "round {round}: both get the one run");
        assert!(
            x_created != y_created,
            "round {round}: exactly one created it"
        );

        // The same pending concurrency key from both: one run, the other a conflict.
        let key = Some(format!("conc-{round}"));
        let (x, y) = tokio::join!(
            a.enqueue(vec![run(format!("ca{round}"), None, key.clone())], now),
            b.enqueue(vec![run(format!("cb{round}"), None, key)], now),
        );
        let conflicts = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter(|o| matches!(o, EnqueueOutcome::Conflict { .. }))
            .count();
        assert_eq!(conflicts, 1, "round {round}");
    }
}

/// Wake-ups across processes, and the database's clock.
mod outbox;
mod wakeups;
mod writer;
