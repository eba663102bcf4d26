//! Costs that do not grow with history: a first action on a new instance reads nothing on an
//! exclusive store, and a service left running with the defaults keeps its database the size
//! of its retention window (a month of steady load on the test clock).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use durable_jobs::steps::{RunFilter, StepError, StepOptions, TriggerOptions};
use durable_jobs::store::{Ownership, Store};
use durable_jobs::testing::TestClock;
use durable_jobs::Engine;
use durable_jobs_tests::forwarding::{Forwarding, Hooks, Method};

/// The jobs' application state: nothing.
#[derive(Clone, Default)]
pub struct App;

/// Sums the numbers it is sent, flushed an hour after the first.
pub struct Totals;

#[durable_jobs::debounce(flush_after = "1h")]
impl DebounceJob<App> for Totals {
    type Event = u64;
    type State = u64;
    type Error = std::convert::Infallible;

    fn on_event(&self, state: Option<u64>, event: u64, _ctx: &EventContext) -> u64 {
        state.unwrap_or(0) + event
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<u64>,
        _app: &App,
    ) -> Result<(), std::convert::Infallible> {
        Ok(())
    }
}

/// Two steps and a log line: a run leaves a run row, two step rows and a log row.
#[durable_jobs::step_job(name = "report")]
pub async fn report(step: &mut StepContext, input: u64, _app: &App) -> Result<u64, StepError> {
    let a: u64 = step
        .run("fetch", |_| async move {
            Ok::<_, durable_jobs::BoxError>(input)
        })
        .await?;
    step.info("fetched");
    let b: u64 = step
        .run("double", |_| async move {
            Ok::<_, durable_jobs::BoxError>(a * 2)
        })
        .await?;
    Ok(b)
}

durable_jobs::registry! {
    /// The jobs of these tests.
    pub HistoryJobs<App> { Totals, Report }
}

// ---------------------------------------------------------------------------------------------
// A first action on a new instance

/// Counts the instance reads the engine makes, and tells when it has listed every instance key.
struct Counting {
    loads: AtomicUsize,
    /// Set when `instance_keys` returned its last page.
    keys_listed: tokio::sync::watch::Sender<bool>,
}

impl Hooks for Counting {
    fn calling(&self, method: Method) {
        if method == Method::Load {
            self.loads.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn succeeded(&self, method: Method) {
        if method == (Method::InstanceKeys { last_page: true }) {
            self.keys_listed.send_replace(true);
        }
    }
}

/// The SQLite store, counting the instance reads the engine makes.
type CountingStore = Forwarding<Counting>;

fn counting_store(options: SqliteOptions) -> Arc<CountingStore> {
    Forwarding::new(
        SqliteStore::open(options).unwrap(),
        Counting {
            loads: AtomicUsize::new(0),
            keys_listed: tokio::sync::watch::channel(false).0,
        },
    )
}

fn loads(store: &CountingStore) -> usize {
    store.hooks.loads.load(Ordering::SeqCst)
}

/// Starts an engine on `store`.
async fn engine_on(store: Arc<CountingStore>, clock: &TestClock) -> Engine<HistoryJobs> {
    Engine::<HistoryJobs>::builder()
        .store_arc(store)
        .clock(clock.clone())
        .app(App)
        .start()
        .await
        .unwrap()
}

/// Creates `n` instances of `Totals` in the file at `path`, through an engine of their own.
async fn seed_instances(path: &Path, clock: &TestClock, n: usize) {
    let engine = engine_on(counting_store(SqliteOptions::file(path)), clock).await;
    let totals = engine.client().debounce::<Totals>();
    for i in 0..n {
        totals.add(&format!("old-{i}"), 1).await.unwrap();
    }
    engine.shutdown().await.unwrap();
}

/// Waits (30 s at most) until the engine has read the store's last page of instance keys,
/// which it does once, beside its other work, after it starts. The test runs on one thread:
/// when it resumes after the last page was returned, the engine's task has already taken the
/// keys in (it does so in the same turn, without waiting for anything).
async fn keys_read(store: &CountingStore) {
    let mut listed = store.hooks.keys_listed.subscribe();
    tokio::time::timeout(Duration::from_secs(30), listed.wait_for(|done| *done))
        .await
        .expect("the engine never read the instance keys")
        .unwrap();
}

#[tokio::test]
async fn a_first_add_to_a_new_instance_reads_nothing_on_an_exclusive_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let clock = TestClock::new();
    seed_instances(&path, &clock, 3).await;

    let store = counting_store(SqliteOptions::file(&path));
    assert_eq!(store.ownership(), Ownership::Exclusive);
    let engine = engine_on(store.clone(), &clock).await;
    keys_read(&store).await;
    let totals = engine.client().debounce::<Totals>();

    let before = loads(&store);
    for i in 0..100 {
        let added = totals.add(&format!("new-{i}"), 2).await.unwrap();
        assert!(added.created);
    }
    assert_eq!(loads(&store), before, "a first add read the store");

    // An instance that exists is still found, with its state, though it was never cached.
    let old = totals.add("old-2", 5).await.unwrap();
    assert!(!old.created, "an existing instance was created again");
    assert_eq!(old.event_count, 2);
    assert_eq!(totals.get_state("old-2").await.unwrap(), Some(6));
    assert_eq!(totals.get_state("new-7").await.unwrap(), Some(2));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shared_store_reads_before_a_first_add() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let clock = TestClock::new();
    let store = counting_store(SqliteOptions::file(&path).shared());
    let engine = engine_on(store.clone(), &clock).await;
    let totals = engine.client().debounce::<Totals>();
    let before = loads(&store);
    assert!(totals.add("new", 1).await.unwrap().created);
    assert!(
        loads(&store) > before,
        "another process may have created it: the store must be read"
    );
    engine.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bounded storage

/// Rows of `table` in the file at `path`, read on a connection of its own.
fn rows(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The database's size as the file will be once its log is checkpointed (pages, free ones
/// included, times the page size), read on a connection of its own, which sees the log.
fn database_bytes(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    (pages * size) as u64
}

/// The log file's size, in bytes.
fn wal_bytes(path: &Path) -> u64 {
    std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len())
}

/// Steady load on the test clock: every `every`, `runs` runs of `report` (completed) and
/// `events` debounce adds with event ids to as many instances, for `days`. Returns the
/// database's size after each simulated day.
async fn steady_load(
    engine: &Engine<HistoryJobs>,
    clock: &TestClock,
    path: &Path,
    days: u64,
    every: Duration,
    runs: u64,
    events: u64,
) -> Vec<u64> {
    let client = engine.client();
    let reports = client.step_job::<Report>();
    let totals = client.debounce::<Totals>();
    let per_day = (Duration::from_secs(24 * 3600).as_secs() / every.as_secs()).max(1);
    let mut sizes = Vec::new();
    let mut n = 0u64;
    for tick in 0..days * per_day {
        for _ in 0..runs {
            n += 1;
            let done = reports
                .trigger_and_wait(n, TriggerOptions::new(), Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(done.output, n * 2);
        }
        for e in 0..events {
            totals
                .add_with_id(&format!("i{e}"), 1, &format!("t{tick}-e{e}"))
                .await
                .unwrap();
        }
        // One jump per tick: what fell due on the way (flushes, the pruners) runs once, at
        // the new time, as after a busy stretch.
        clock.jump(every).await;
        if (tick + 1) % per_day == 0 {
            sizes.push(database_bytes(path));
        }
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_steady_load_keeps_the_database_the_size_of_a_week() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let clock = TestClock::new();
    // Steps and logs are kept after a run ends, so retention is what deletes them.
    let engine = Engine::<HistoryJobs>::builder()
        .sqlite(&path)
        // The month is about what stays in the file, not about fsyncs.
        .synchronous(Synchronous::Normal)
        .clock(clock.clone())
        .app(App)
        .step_options(StepOptions::default().preserve_steps(true))
        .start()
        .await
        .unwrap();
    let every = Duration::from_secs(3 * 3600);
    let (runs, events) = (8, 5);
    let sizes = steady_load(&engine, &clock, &path, 30, every, runs, events).await;

    // The defaults keep a week of finished runs and of event ids: 56 ticks of 3 hours, plus
    // the tick in progress when the pruner last ran.
    let week_of = |per_tick: u64| (7 * 24 / 3 + 1) * per_tick;
    let kept = rows(&path, "durably_runs") as u64;
    assert!(
        kept <= week_of(runs) && kept >= week_of(runs) - 2 * runs,
        "{kept} runs kept, a week is {}",
        week_of(runs)
    );
    assert_eq!(rows(&path, "durably_steps") as u64, 2 * kept);
    assert_eq!(rows(&path, "durably_logs") as u64, kept);
    assert_eq!(rows(&path, "durably_run_labels"), 0);
    let ids = rows(&path, "event_ids") as u64;
    assert!(
        ids <= week_of(events) + events,
        "{ids} event ids kept, a week is {}",
        week_of(events)
    );
    // The file stops growing once the first week is pruned: deleted rows' pages are reused.
    // After 7 days it holds a week of runs, as it does after 30.
    let (week, month) = (sizes[6], sizes[29]);
    assert!(
        month <= week + week / 4,
        "the database grew from {week} bytes after a week to {month} after a month: {sizes:?}"
    );
    // The log's documented bound: the writer checkpoints itself at 64 MiB.
    assert!(
        wal_bytes(&path) <= 68 << 20,
        "{} bytes of log",
        wal_bytes(&path)
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_runs_forever_keeps_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let clock = TestClock::new();
    let engine = Engine::<HistoryJobs>::builder()
        .sqlite(&path)
        // The month is about what stays in the file, not about fsyncs.
        .synchronous(Synchronous::Normal)
        .clock(clock.clone())
        .app(App)
        .step_options(StepOptions::default().keep_runs_forever())
        .start()
        .await
        .unwrap();
    let every = Duration::from_secs(12 * 3600);
    steady_load(&engine, &clock, &path, 20, every, 3, 0).await;
    assert_eq!(rows(&path, "durably_runs"), 20 * 2 * 3);
    let listed = engine
        .client()
        .step_job::<Report>()
        .get_runs(RunFilter::new())
        .await
        .unwrap();
    assert_eq!(listed.len(), 20 * 2 * 3);
    engine.shutdown().await.unwrap();
}
