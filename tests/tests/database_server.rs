//! What a store on a database server gives the engines on it, played by a SQLite file in shared
//! mode under a store that forwards to it:
//!
//! - a change feed (`Store::changes`) wakes the engines as soon as another process writes,
//!   instead of at their next poll. Two engines share the file, as two processes do, each
//!   through its own store; both poll only once an hour, and announce every write on one feed,
//!   as a PostgreSQL store does with `NOTIFY` after its commits: an engine that acts within the
//!   test's patience did so because the feed woke it;
//! - the server's clock (`Store::database_time`): an engine on the system clock keeps in step
//!   with it, so that every process reads one time.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
use durable_jobs::steps::{RunStatus, StepError, TriggerOptions};
use durable_jobs::store::runs::{EnqueueOutcome, NewRun};
use durable_jobs::store::{
    Backend, Change, ChangeFeed, ChangeSender, InstanceRecord, RunStore, Store, Write,
};
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, InstanceKey, JobKind};
use durable_jobs_tests::forwarding::{Forwarding, Hooks, Method};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Far longer than the test waits: an engine woken only by its poll fails the test.
const POLL: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(30);

/// Announces this process's writes to every engine on the feed, as `NOTIFY` does.
struct Announcing {
    sender: Arc<ChangeSender>,
    feed: ChangeFeed,
    /// How many runs this store has read.
    runs_read: tokio::sync::watch::Sender<usize>,
}

impl Hooks for Announcing {
    fn succeeded(&self, method: Method) {
        match method {
            Method::Commit => self.sender.send(Change::Alarms),
            Method::Enqueue => self.sender.send(Change::Runs),
            Method::GetRun => {
                self.runs_read.send_modify(|n| *n += 1);
            }
            Method::FinishRun | Method::CancelRun => {
                self.sender.send(Change::RunEnded);
                // An end can free a concurrency key, or set a retry.
                self.sender.send(Change::Runs);
            }
            _ => {}
        }
    }

    fn poll_interval(&self, _inner: Option<Duration>) -> Option<Duration> {
        Some(POLL)
    }

    fn changes(&self) -> Option<ChangeFeed> {
        Some(self.feed.clone())
    }
}

/// One file, and the feed its stores announce on.
struct Shared {
    _dir: tempfile::TempDir,
    file: Arc<dyn Store>,
    sender: Arc<ChangeSender>,
    feed: ChangeFeed,
}

impl Shared {
    fn new() -> Shared {
        let (sender, feed) = ChangeFeed::channel();
        let dir = tempfile::tempdir().unwrap();
        // One store on the file per process: the engines of this one share it, each through
        // a store of its own that announces its writes.
        let file =
            SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db")).shared()).unwrap();
        Shared {
            _dir: dir,
            file,
            sender: Arc::new(sender),
            feed,
        }
    }

    /// A store of an engine's own on the file.
    fn store(&self) -> Arc<Forwarding<Announcing>> {
        Forwarding::new(
            self.file.clone(),
            Announcing {
                sender: self.sender.clone(),
                feed: self.feed.clone(),
                runs_read: tokio::sync::watch::channel(0).0,
            },
        )
    }
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

/// An engine of the step job, started and settled: its first look for runs is done.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_another_engine_ends_ends_the_wait_at_once() {
    let shared = Shared::new();
    let gate = Arc::new(Gate::default());
    let worker = workers(shared.store(), &gate).await;
    let watching = shared.store();
    let mut runs_read = watching.hooks.runs_read.subscribe();
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
        .expect("the wait ends when the other engine ends the run");
    assert_eq!(ended.status, RunStatus::Completed);
    watcher.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_another_process_enqueues_is_claimed_at_once() {
    let shared = Shared::new();
    let gate = Arc::new(Gate::default());
    let idle = workers(shared.store(), &gate).await;
    // Another process writes a run: nothing in this one triggered it, so only the announcement
    // of the enqueue can wake the idle engine before its next poll.
    let id = "01JDX0000000000000000000AB";
    let enqueued = shared
        .store()
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
            idle.client().runs().now(),
        )
        .await
        .unwrap();
    assert!(matches!(enqueued, EnqueueOutcome::Done(_)), "{enqueued:?}");
    let ended = idle
        .client()
        .runs()
        .wait_for_run(id, Some(PATIENCE))
        .await
        .expect("the idle engine runs the new run at once");
    assert_eq!(ended.status, RunStatus::Completed);
    idle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_another_process_writes_fires_at_once() {
    let shared = Shared::new();
    let clock = TestClock::new();
    let beats = Arc::new(Semaphore::new(0));
    let engine = Engine::<Watchers>::builder()
        .store_arc(shared.store())
        .clock(clock.clone())
        .app(beats.clone())
        .start()
        .await
        .unwrap();
    // Its first scan is done: it knows of no alarm.
    clock.settle().await;
    // Another process creates an instance whose first run is due now.
    let now = clock.now();
    let mut row = InstanceRecord::new(InstanceKey::new(JobKind::Continuous, "beat", "a"), now);
    row.state = Some("0".to_owned());
    row.alarm_at = Some(now);
    shared
        .store()
        .commit(vec![Write::Insert(row)])
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, beats.acquire())
        .await
        .expect("the engine runs the alarm at once")
        .unwrap()
        .forget();
    engine.shutdown().await.unwrap();
}

/// A database whose clock is an hour ahead of this machine's.
struct AheadByAnHour;

const HOUR: Duration = Duration::from_secs(3600);

impl Hooks for AheadByAnHour {
    fn database_time(&self) -> Option<durable_jobs::Timestamp> {
        Some(durable_jobs::Timestamp::now_system() + HOUR)
    }
}

#[tokio::test]
async fn an_engine_on_the_system_clock_keeps_the_database_s_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db")).shared()).unwrap();
    let engine = Engine::<Watchers>::builder()
        .store_arc(Forwarding::new(file, AheadByAnHour))
        .app(Arc::new(Semaphore::new(0)))
        .start()
        .await
        .unwrap();
    let before = durable_jobs::Timestamp::now_system();
    let started = engine
        .client()
        .continuous::<Beat>()
        .start("a", 0)
        .await
        .unwrap();
    assert!(started.created);
    let status = engine
        .client()
        .continuous::<Beat>()
        .status("a")
        .await
        .unwrap();
    let after = durable_jobs::Timestamp::now_system();
    // Created by the database's clock, an hour ahead of this machine's (give or take the
    // time the test took).
    let created = status.created_at.expect("created");
    assert!(
        created >= before + HOUR && created <= after + HOUR,
        "created at {created}, this machine's clock read {before} to {after}"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_test_clock_is_not_moved_by_the_database_s() {
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db")).shared()).unwrap();
    let clock = TestClock::new();
    let engine = Engine::<Watchers>::builder()
        .store_arc(Forwarding::new(file, AheadByAnHour))
        .clock(clock.clone())
        .app(Arc::new(Semaphore::new(0)))
        .start()
        .await
        .unwrap();
    engine
        .client()
        .continuous::<Beat>()
        .start("a", 0)
        .await
        .unwrap();
    let status = engine
        .client()
        .continuous::<Beat>()
        .status("a")
        .await
        .unwrap();
    assert_eq!(status.created_at, Some(clock.now()));
    engine.shutdown().await.unwrap();
}
