//! Engines on the PostgreSQL store (`EngineBuilder::postgres_options`): the job kinds run on
//! it as on SQLite, and engines sharing one schema, as processes on several machines do, run
//! each alarm once between them.
//!
//! Each test works in a schema of its own on the server at `DURABLE_JOBS_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` provides one), dropped afterwards.
//! Without a server the tests fail.

use std::collections::BTreeMap;
use std::time::Duration;

use durable_jobs::postgres::PostgresOptions;
use durable_jobs::store::{Ownership, Store};
use durable_jobs::testing::TestClock;
use durable_jobs::{ContinuousState, Engine};
use durable_jobs_tests::*;

fn server_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema for one test, dropped with everything in it when the guard is.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Schema(format!(
            "dj_engine_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions::new(server_url())
            .schema(&self.0)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&server_url()).await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

async fn engine(schema: &Schema, clock: &TestClock, probe: &Probe) -> Engine<TestJobs> {
    Engine::<TestJobs>::builder()
        .postgres_options(schema.options())
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("an engine on PostgreSQL at {}: {e}", server_url()))
}

fn count(n: i64) -> Count {
    Count {
        count: n,
        max_runs: None,
    }
}

#[tokio::test]
async fn the_job_kinds_run_on_postgres() {
    let schema = Schema::new();
    let (clock, probe) = (TestClock::new(), Probe::default());
    let engine = engine(&schema, &clock, &probe).await;
    let client = engine.client();

    let started = client
        .continuous::<Refresher>()
        .start("u", count(0))
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(started.status, ContinuousState::Running);
    for n in 1..=2 {
        client
            .debounce::<Batcher>()
            .add("b", Hook { n })
            .await
            .unwrap();
    }
    client
        .task::<Orders>()
        .send(
            "o",
            OrderEvent::AddAndSchedule {
                amount: 5,
                secs: 60,
            },
        )
        .await
        .unwrap();

    clock.advance(Duration::from_secs(3600)).await;
    // Continuous: at 0, 30 and 60 minutes.
    assert_eq!(
        client
            .continuous::<Refresher>()
            .get_state("u")
            .await
            .unwrap(),
        Some(count(3))
    );
    // Debounce: one flush of both events, 5 s after the first.
    let flushes = probe.calls_of("execute");
    let flushed: Vec<_> = flushes.iter().filter(|c| c.job == "batcher").collect();
    assert_eq!(flushed.len(), 1, "{flushes:?}");
    assert_eq!(flushed[0].count, 2);
    // Task: executed once, a minute after its event.
    let order = client
        .task::<Orders>()
        .get_state("o")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((order.total, order.executed), (5, 1));
    engine.shutdown().await.unwrap();
}

/// Three engines on one schema and one clock, as three processes on three machines: every
/// scheduled run of every instance is made exactly once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_sharing_a_schema_run_each_alarm_once() {
    let schema = Schema::new();
    let clock = TestClock::new();
    let probes = [Probe::default(), Probe::default(), Probe::default()];
    let mut engines = Vec::new();
    for probe in &probes {
        engines.push(engine(&schema, &clock, probe).await);
    }
    for i in 0..12 {
        engines[i % 3]
            .client()
            .continuous::<Refresher>()
            .start(&format!("u{i}"), count(0))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(3600)).await;

    // Every instance ran at 0, 30 and 60 minutes: three runs, each made once, whichever
    // engine made it.
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for probe in &probes {
        for call in probe.calls_of("execute") {
            runs.entry(call.detail).or_default().push(call.count);
        }
    }
    assert_eq!(runs.len(), 12);
    for (instance, mut counts) in runs {
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3], "{instance}");
    }
    for i in 0..12 {
        let state = engines[(i + 1) % 3]
            .client()
            .continuous::<Refresher>()
            .get_state(&format!("u{i}"))
            .await
            .unwrap();
        assert_eq!(state, Some(count(3)));
    }
    for engine in engines {
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn the_store_is_shared_and_keeps_to_its_schema() {
    let schema = Schema::new();
    let store = durable_jobs::postgres::PostgresStore::open(schema.options())
        .await
        .unwrap();
    assert_eq!(store.ownership(), Ownership::Shared);
    assert_eq!(store.schema(), schema.0);
}
