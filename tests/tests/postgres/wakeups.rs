//! Engines in two processes on one schema, each through a store of its own (its pool, its
//! listening connection): the stores poll only once an hour, so an engine that acts within the
//! test's patience did so because another process's `NOTIFY` woke it. And a store that does not
//! listen finds the same writes by polling.
//!
//! (`tests/database_server.rs` plays the same scenes with a store that forwards to SQLite.)

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::postgres::PostgresStore;
use durable_jobs::prelude::*;
use durable_jobs::steps::{RunStatus, StepError, TriggerOptions};
use durable_jobs::store::runs::{EnqueueOutcome, NewRun};
use durable_jobs::store::{Backend, InstanceRecord, RunStore, Store, Write};
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, InstanceKey, JobKind};
use durable_jobs_tests::forwarding::{Forwarding, Hooks, Method};
use durable_jobs_tests::Schema;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// The fallback poll of the listening stores: far longer than the tests wait.
const HOUR: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(30);

/// A store of its own on `schema`, as another process has, polling hourly while it listens.
async fn process(schema: &Schema) -> Arc<PostgresStore> {
    let store = PostgresStore::open(schema.options().fallback_poll_interval(HOUR))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a store on PostgreSQL at {}: {e}",
                durable_jobs_tests::postgres_url()
            )
        });
    assert!(store.is_listening());
    assert_eq!(store.poll_interval(), Some(HOUR));
    Arc::new(store)
}

/// Holds the runs whose input asks for it until a permit is added.
pub struct Gate(Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Gate(Semaphore::new(0))
    }
}

/// A run's input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// Wait at the gate first.
    pub hold: bool,
}

/// One step, held at the gate when the input says so.
#[durable_jobs::step_job(name = "work")]
pub async fn work(step: &mut StepContext, input: Job, gate: &Arc<Gate>) -> Result<u32, StepError> {
    step.run("only", |_| async move {
        if input.hold {
            gate.0.acquire().await?.forget();
        }
        Ok::<_, durable_jobs::BoxError>(1)
    })
    .await
}

durable_jobs::registry! {
    /// The step job.
    pub Workers<Arc<Gate>> { Work }
}

/// Adds a permit for each of its runs; an engine with it runs no step job.
#[durable_jobs::continuous(every = "1h")]
pub async fn beat(
    _ctx: &mut ContinuousContext<u32>,
    beats: &Arc<Semaphore>,
) -> Result<(), std::convert::Infallible> {
    beats.add_permits(1);
    Ok(())
}

durable_jobs::registry! {
    /// No step job.
    pub Watchers<Arc<Semaphore>> { Beat }
}

/// An engine of the step job on `store`, started and settled: its first look for runs is done.
async fn workers(store: Arc<dyn Store>, gate: &Arc<Gate>) -> Engine<Workers> {
    let clock = TestClock::new();
    let engine = Engine::<Workers>::builder()
        .store_arc(store)
        .clock(clock.clone())
        .app(gate.clone())
        .start()
        .await
        .unwrap();
    clock.settle().await;
    engine
}

/// A run that nothing in the engine's process triggered, written by `store`.
async fn enqueue_elsewhere(store: &dyn RunStore, id: &str, now: durable_jobs::Timestamp) {
    let enqueued = store
        .enqueue(
            vec![NewRun {
                id: id.to_owned(),
                job_name: "work".to_owned(),
                input: r#"{"hold":false}"#.to_owned(),
                idempotency_key: None,
                concurrency_key: None,
                labels: Default::default(),
                coalesce: false,
            }],
            now,
        )
        .await
        .unwrap();
    assert!(matches!(enqueued, EnqueueOutcome::Done(_)), "{enqueued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_another_process_enqueues_is_claimed_at_once() {
    let schema = Schema::new();
    let gate = Arc::new(Gate::default());
    let idle = workers(process(&schema).await, &gate).await;
    let other = process(&schema).await;
    let id = "01JDX0000000000000000000AB";
    enqueue_elsewhere(other.as_ref(), id, idle.client().runs().now()).await;
    let ended = idle
        .client()
        .runs()
        .wait_for_run(id, Some(PATIENCE))
        .await
        .expect("the idle engine runs the new run at once");
    assert_eq!(ended.status, RunStatus::Completed);
    idle.shutdown().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_another_process_writes_fires_at_once() {
    let schema = Schema::new();
    let clock = TestClock::new();
    let beats = Arc::new(Semaphore::new(0));
    let engine = Engine::<Watchers>::builder()
        .store_arc(process(&schema).await)
        .clock(clock.clone())
        .app(beats.clone())
        .start()
        .await
        .unwrap();
    // Its first scan is done: it knows of no alarm.
    clock.settle().await;
    // Another process creates an instance whose first run is due now.
    let other = process(&schema).await;
    let now = clock.now();
    let mut row = InstanceRecord::new(InstanceKey::new(JobKind::Continuous, "beat", "a"), now);
    row.state = Some("0".to_owned());
    row.alarm_at = Some(now);
    other.commit(vec![Write::Insert(row)]).await.unwrap();
    tokio::time::timeout(PATIENCE, beats.acquire())
        .await
        .expect("the engine runs the alarm at once")
        .unwrap()
        .forget();
    engine.shutdown().await.unwrap();
    other.close().await.unwrap();
}

/// Counts the runs a store has read.
struct ReadsRuns(tokio::sync::watch::Sender<usize>);

impl Hooks for ReadsRuns {
    fn succeeded(&self, method: Method) {
        if method == Method::GetRun {
            self.0.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_another_process_ends_ends_the_wait_at_once() {
    let schema = Schema::new();
    let gate = Arc::new(Gate::default());
    let worker = workers(process(&schema).await, &gate).await;
    let watching = Forwarding::new(
        process(&schema).await,
        ReadsRuns(tokio::sync::watch::channel(0).0),
    );
    let mut runs_read = watching.hooks.0.subscribe();
    let watcher = Engine::<Watchers>::builder()
        .store_arc(watching)
        .app(Arc::new(Semaphore::new(0)))
        .start()
        .await
        .unwrap();
    let run = worker
        .client()
        .step_job::<Work>()
        .trigger(Job { hold: true }, TriggerOptions::default())
        .await
        .unwrap();
    // The watcher runs no step job: only the worker's end, announced, can end its wait.
    let wait = tokio::spawn({
        let runs = watcher.client().runs();
        let id = run.id.clone();
        async move { runs.wait_for_run(&id, Some(PATIENCE)).await }
    });
    // Once the watcher has read the run (still running), the worker ends it.
    runs_read.wait_for(|n| *n > 0).await.unwrap();
    gate.0.add_permits(1);
    let ended = wait
        .await
        .unwrap()
        .expect("the wait ends when the other process ends the run");
    assert_eq!(ended.status, RunStatus::Completed);
    watcher.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_listen_finds_another_process_s_run_by_polling() {
    let schema = Schema::new();
    let polling = PostgresStore::open(
        schema
            .options()
            .listen(false)
            .poll_interval(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert!(polling.changes().is_none());
    assert_eq!(polling.poll_interval(), Some(Duration::from_millis(20)));
    let gate = Arc::new(Gate::default());
    let engine = workers(Arc::new(polling), &gate).await;
    let other = process(&schema).await;
    let id = "01JDX0000000000000000000AC";
    enqueue_elsewhere(other.as_ref(), id, engine.client().runs().now()).await;
    let ended = engine
        .client()
        .runs()
        .wait_for_run(id, Some(PATIENCE))
        .await
        .expect("the polling engine runs the new run");
    assert_eq!(ended.status, RunStatus::Completed);
    engine.shutdown().await.unwrap();
    other.close().await.unwrap();
}
