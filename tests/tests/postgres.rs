//! The behavioural suites again, on PostgreSQL: each test's data is a schema of its own on the
//! server at `DURABLE_JOBS_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`;
//! `.ci/run` provides one), dropped afterwards; without a server the tests fail. A PostgreSQL
//! store is shared ([`Ownership::Shared`]): every alarm execution claims its row with a durable
//! lease, nothing is cached, and engines hear other processes' writes through `LISTEN`.
//!
//! Left out, with the reason:
//! - `faults/files.rs`: the SQLite file itself (paths, links, deletion, a file that is not a
//!   database); `faults/docs.rs`: the docs' text, no store;
//! - `crash`, `kill`, `powercut`, `storage_faults`, `multiprocess`: processes and disks under a
//!   SQLite file; `history` and `metrics` open SQLite stores of their own; `system_clock` runs
//!   on the system clock (`database_server` covers following a server's clock);
//! - `client_api` and `docs`: no store.
//!
//! Besides the suites, tests of PostgreSQL's own: engines sharing a schema, as processes on
//! several machines do, run each alarm once between them and post each telemetry event once;
//! and an engine wakes as soon as
//! another process writes (`LISTEN`/`NOTIFY`), or polls when it does not listen.

// The suites are written as crate roots of their own binaries, where their `pub` items are
// reachable; here they are modules.
#![allow(unreachable_pub)]

#[path = "continuous.rs"]
mod continuous;
#[path = "debounce.rs"]
mod debounce;
#[path = "error_table.rs"]
mod error_table;
#[path = "errors.rs"]
mod errors;
#[path = "introspection.rs"]
mod introspection;
#[path = "model.rs"]
mod model;
#[path = "restart.rs"]
mod restart;
#[path = "serialisation.rs"]
mod serialisation;
#[path = "steps.rs"]
mod steps;
#[path = "steps_client.rs"]
mod steps_client;
#[path = "task.rs"]
mod task;
#[path = "telemetry.rs"]
mod telemetry;

// The faults suite (`faults/main.rs`) without its SQLite-file module.
#[path = "faults/deploys.rs"]
mod faults_deploys;
#[path = "faults/input.rs"]
mod faults_input;
#[path = "faults/panics.rs"]
mod faults_panics;
#[path = "faults/shutdown.rs"]
mod faults_shutdown;

#[path = "postgres/wakeups.rs"]
mod wakeups;

use std::collections::BTreeMap;
use std::time::Duration;

use durable_jobs::store::{Backend, Ownership, Store};
use durable_jobs::testing::TestClock;
use durable_jobs::{ContinuousState, Engine, HttpTelemetry};
use durable_jobs_tests::*;

#[tokio::test]
async fn this_binary_runs_the_suites_on_postgres() {
    assert_eq!(backing(), Backing::Postgres);
    assert_eq!(ownership(), Ownership::Shared);
    let db = TestDb::new().await;
    assert!(db.sqlite_file().is_none());
    let store = db.open().await;
    assert_eq!(store.ownership(), Ownership::Shared);
    assert!(store.changes().is_some(), "the store listens");
    // The data is the test's schema.
    assert_eq!(
        db.int(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'instances'",
            db.postgres_schema().unwrap()
        ))
        .await,
        1
    );
    store.close().await.unwrap();
}

async fn engine(schema: &Schema, clock: &TestClock, probe: &Probe) -> Engine<TestJobs> {
    Engine::<TestJobs>::builder()
        .postgres_options(schema.options())
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("an engine on PostgreSQL at {}: {e}", postgres_url()))
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

/// Three engines on one schema post their telemetry to one endpoint, as three processes do:
/// every engine's sender looks at the one outbox, after its own engine's writes and at its poll,
/// and every event reaches the endpoint once, whichever engine wrote it and whichever posted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_sharing_a_schema_post_each_telemetry_event_once() {
    let schema = Schema::new();
    let (events, mut posted) = tokio::sync::mpsc::unbounded_channel();
    async fn ingest(
        axum::extract::State(events): axum::extract::State<
            tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
        >,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> &'static str {
        for event in body["events"].as_array().unwrap() {
            events.send(event.clone()).unwrap();
        }
        "ok"
    }
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(events);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut engines = Vec::new();
    for _ in 0..3 {
        let engine = Engine::<TestJobs>::builder()
            .postgres_options(schema.options())
            .telemetry(HttpTelemetry::new(&url, "test", "svc").batch_size(3))
            .app(Probe::default())
            .start()
            .await
            .unwrap();
        engines.push(engine);
    }
    // Each instance started (and run at once) by one engine and terminated by another: 90
    // events, written by all three.
    for i in 0..30 {
        let id = format!("u{i}");
        let refresher = |n: usize| engines[n % 3].client().continuous::<Refresher>();
        refresher(i).start(&id, count(0)).await.unwrap();
        refresher(i + 1).terminate(&id, None).await.unwrap();
    }
    let store = durable_jobs::postgres::PostgresStore::open(schema.options())
        .await
        .unwrap();
    // A row leaves the outbox once the endpoint accepted the request that carried it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store.outbox_peek(1).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox was never emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for engine in engines {
        engine.shutdown().await.unwrap();
    }
    store.close().await.unwrap();

    let mut received = Vec::new();
    while let Ok(event) = posted.try_recv() {
        received.push(event);
    }
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for event in &received {
        let id = event["eventId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "posted twice: {event}");
        *by_type
            .entry(event["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = ["job.executed", "job.started", "job.terminated"]
        .into_iter()
        .map(|t| (t.to_owned(), 30))
        .collect();
    assert_eq!(by_type, expected);
}

#[tokio::test]
async fn the_store_is_shared_and_keeps_to_its_schema() {
    let schema = Schema::new();
    let store = durable_jobs::postgres::PostgresStore::open(schema.options())
        .await
        .unwrap();
    assert_eq!(store.ownership(), Ownership::Shared);
    assert_eq!(store.schema(), schema.name());
}
