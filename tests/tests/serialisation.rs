//! Per-instance serialisation: an action waits behind a running execution of the same
//! instance (an `add` behind a flush, a `trigger` behind a scheduled run, a `send` behind an
//! `execute`); other instances and read-only queries do not wait; alarm executions run at most
//! `max_concurrent_executions` at once. Every wait is bounded: a regression fails, it does not
//! hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::store::Ownership;
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, JobSet, Registered, Registry};
use tokio::sync::{Notify, Semaphore};

/// How long a test waits for something the engine does in microseconds; only bounds a
/// regression, which then fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

struct Gate {
    log: Mutex<Vec<String>>,
    logged: Notify,
    open: Semaphore,
    /// Executions inside the gate now, and the most seen at once.
    inside: Mutex<(usize, usize)>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            log: Mutex::default(),
            logged: Notify::new(),
            open: Semaphore::new(0),
            inside: Mutex::default(),
        }
    }
}

impl Gate {
    fn log(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
        self.logged.notify_waiters();
    }

    fn position(&self, line: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} not in {log:?}"))
    }

    fn count(&self, prefix: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Logs `line` and waits at the gate, counting who is inside. The execution counts as
    /// inside before its line is logged, so a test that saw the line sees it counted.
    async fn pass(&self, line: String) {
        {
            let mut inside = self.inside.lock().unwrap();
            inside.0 += 1;
            inside.1 = inside.1.max(inside.0);
        }
        self.log(line);
        self.open.acquire().await.expect("semaphore open").forget();
        self.inside.lock().unwrap().0 -= 1;
    }
}

struct Slow;
impl Job for Slow {
    const NAME: &'static str = "slow";
    const KIND: JobKind = JobKind::Task;
}
impl Registered<GateJobs> for Slow {}
impl TaskJob<Arc<Gate>> for Slow {
    type State = u32;
    type Event = String;
    type Error = std::convert::Infallible;
    async fn on_event(
        &self,
        ctx: &mut TaskContext<u32>,
        event: String,
        app: &Arc<Gate>,
    ) -> Result<(), Self::Error> {
        app.log(format!("event {event} on {}", ctx.id()));
        ctx.set_state(ctx.state().copied().unwrap_or(0) + 1);
        Ok(())
    }
    async fn execute(
        &self,
        ctx: &mut TaskContext<u32>,
        app: &Arc<Gate>,
    ) -> Result<(), Self::Error> {
        app.pass(format!("execute begins on {}", ctx.id())).await;
        app.log(format!("execute ends on {}", ctx.id()));
        ctx.set_state(100);
        Ok(())
    }
}

struct GateJobs;
impl Registry for GateJobs {
    type App = Arc<Gate>;
    fn register(jobs: &mut JobSet<Arc<Gate>>) {
        jobs.task(Slow);
    }
}

/// Waits until `n` lines starting with `prefix` are logged, at most [`PATIENCE`].
async fn until_logged_n(gate: &Gate, prefix: &str, n: usize) {
    let wait = async {
        loop {
            let logged = gate.logged.notified();
            if gate.count(prefix) >= n {
                return;
            }
            logged.await;
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!(
            "{n} x {prefix:?} not logged in {PATIENCE:?}: {:?}",
            gate.log.lock().unwrap()
        );
    }
}

async fn until_logged(gate: &Gate, line: &str) {
    until_logged_n(gate, line, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_waits_behind_a_running_execution() {
    let gate = Arc::new(Gate::default());
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<GateJobs>::builder()
        .store_arc(db.open().await)
        .app(gate.clone())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    client
        .task::<Slow>()
        .send("a", "create".into())
        .await
        .unwrap();
    client
        .task::<Slow>()
        .send("b", "create".into())
        .await
        .unwrap();

    let c = client.clone();
    let trigger = tokio::spawn(async move { c.task::<Slow>().trigger("a").await });
    until_logged(&gate, "execute begins on a").await;

    // Reads do not wait for the running execution, and see the last committed state.
    assert_eq!(client.task::<Slow>().get_state("a").await.unwrap(), Some(1));
    assert_eq!(
        client
            .task::<Slow>()
            .status("a")
            .await
            .unwrap()
            .execute_count,
        0
    );
    // Another instance is not blocked.
    client
        .task::<Slow>()
        .send("b", "during".into())
        .await
        .unwrap();

    // An action on the same instance waits.
    let c = client.clone();
    let send = tokio::spawn(async move { c.task::<Slow>().send("a", "during".into()).await });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!send.is_finished(), "the send must wait for the execution");
    gate.open.add_permits(1);
    trigger.await.unwrap().unwrap();
    send.await.unwrap().unwrap();

    let log = gate.log.lock().unwrap().clone();
    let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
    assert!(
        pos("execute ends on a") < pos("event during on a"),
        "{log:?}"
    );
    assert!(
        pos("event during on b") < pos("execute ends on a"),
        "{log:?}"
    );
    // The send saw the execution's committed state.
    assert_eq!(
        client.task::<Slow>().get_state("a").await.unwrap(),
        Some(101)
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_executions() {
    let gate = Arc::new(Gate::default());
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<GateJobs>::builder()
        .store_arc(db.open().await)
        .app(gate.clone())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    client
        .task::<Slow>()
        .send("a", "create".into())
        .await
        .unwrap();
    let c = client.clone();
    let trigger = tokio::spawn(async move { c.task::<Slow>().trigger("a").await });
    until_logged(&gate, "execute begins on a").await;
    let e = engine.clone();
    let g = gate.clone();
    let shutdown = tokio::spawn(async move {
        let done = e.shutdown().await;
        g.log("shutdown returns");
        done
    });
    // Once shutdown has begun, new work is refused ...
    let refused = async {
        while client.task::<Slow>().send("z", "late".into()).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("new work is refused once shutdown has begun");
    // ... while the running execution is waited for: shutdown returns only after it ends.
    gate.open.add_permits(1);
    trigger.await.unwrap().unwrap();
    shutdown.await.unwrap().unwrap();
    assert!(gate.position("execute ends on a") < gate.position("shutdown returns"));
}

/// A continuous job that waits at the gate on every run.
struct Gated;
impl Job for Gated {
    const NAME: &'static str = "gated";
    const KIND: JobKind = JobKind::Continuous;
}
impl Registered<GatedJobs> for Gated {}
impl ContinuousJob<Arc<Gate>> for Gated {
    type State = u32;
    type Error = std::convert::Infallible;
    fn config(&self) -> ContinuousConfig {
        ContinuousConfig::new(Schedule::every(std::time::Duration::from_millis(20)))
            .start_immediately(false)
    }
    async fn execute(
        &self,
        ctx: &mut ContinuousContext<u32>,
        app: &Arc<Gate>,
    ) -> Result<(), Self::Error> {
        app.pass(format!("run begins on {}", ctx.id())).await;
        let runs = *ctx.state() + 1;
        ctx.set_state(runs);
        app.log(format!("run {runs} ends on {}", ctx.id()));
        Ok(())
    }
}

/// A debounce job whose flush waits at the gate; flushed 5 s after its first event.
struct GatedBatch;
impl Job for GatedBatch {
    const NAME: &'static str = "gated-batch";
    const KIND: JobKind = JobKind::Debounce;
}
impl Registered<GatedJobs> for GatedBatch {}
impl DebounceJob<Arc<Gate>> for GatedBatch {
    type Event = u32;
    type State = Vec<u32>;
    type Error = std::convert::Infallible;
    fn config(&self) -> DebounceConfig {
        DebounceConfig::new(Duration::from_secs(5))
    }
    fn on_event(&self, state: Option<Vec<u32>>, event: u32, _ctx: &EventContext) -> Vec<u32> {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }
    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<u32>>,
        app: &Arc<Gate>,
    ) -> Result<(), Self::Error> {
        app.pass(format!("flush of {:?} begins", ctx.state())).await;
        app.log(format!("flush of {:?} ends", ctx.state()));
        Ok(())
    }
}

struct GatedJobs;
impl Registry for GatedJobs {
    type App = Arc<Gate>;
    fn register(jobs: &mut JobSet<Arc<Gate>>) {
        jobs.continuous(Gated);
        jobs.debounce(GatedBatch);
    }
}

/// An engine of the gated jobs on a test clock, at most `max` alarm executions at once, and
/// its data.
async fn gated_engine(
    max: Option<usize>,
) -> (
    Engine<GatedJobs>,
    TestClock,
    Arc<Gate>,
    durable_jobs_tests::TestDb,
) {
    let gate = Arc::new(Gate::default());
    let clock = TestClock::new();
    let db = durable_jobs_tests::TestDb::new().await;
    let mut builder = Engine::<GatedJobs>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone());
    if let Some(max) = max {
        builder = builder.max_concurrent_executions(max);
    }
    let engine = builder.app(gate.clone()).start().await.unwrap();
    (engine, clock, gate, db)
}

/// Lets the other tasks run for a while: long enough for an action that does not wait to get
/// through, never needed for a correct engine (the assertions after it hold either way).
async fn let_others_run() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_during_a_flush_waits_for_its_commit_then_starts_a_new_batch() {
    let (engine, clock, gate, _db) = gated_engine(None).await;
    let batches = engine.client().debounce::<GatedBatch>();
    assert!(batches.add("a", 1).await.unwrap().created);
    let advance = tokio::spawn({
        let clock = clock.clone();
        async move { clock.advance(Duration::from_secs(5)).await }
    });
    until_logged(&gate, "flush of [1] begins").await;
    let during = tokio::spawn({
        let batches = engine.client().debounce::<GatedBatch>();
        async move { batches.add("a", 2).await }
    });
    let_others_run().await;
    assert!(!during.is_finished(), "the add waits for the flush");
    gate.open.add_permits(1);
    let added = tokio::time::timeout(PATIENCE, during)
        .await
        .expect("the add goes on once the flush committed")
        .unwrap()
        .unwrap();
    advance.await.unwrap();
    // The flushed batch did not take the event; the add started a new batch.
    assert!(added.created, "{added:?}");
    assert_eq!(added.event_count, 1);
    assert_eq!(batches.get_state("a").await.unwrap(), Some(vec![2]));
    assert_eq!(gate.count("flush of [1] ends"), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_during_a_scheduled_run_waits_for_it_then_runs_again() {
    let (engine, clock, gate, _db) = gated_engine(None).await;
    let gated = engine.client().continuous::<Gated>();
    gated.start("a", 0).await.unwrap();
    let advance = tokio::spawn({
        let clock = clock.clone();
        async move { clock.advance(Duration::from_millis(20)).await }
    });
    until_logged(&gate, "run begins on a").await;
    let trigger = tokio::spawn({
        let gated = engine.client().continuous::<Gated>();
        async move { gated.trigger("a").await }
    });
    let_others_run().await;
    assert_eq!(gate.count("run begins"), 1, "the trigger's run waits");
    gate.open.add_permits(1);
    until_logged_n(&gate, "run begins", 2).await;
    gate.open.add_permits(1);
    tokio::time::timeout(PATIENCE, trigger)
        .await
        .expect("the trigger's run ends")
        .unwrap()
        .unwrap();
    advance.await.unwrap();
    // One after the other, the second on the first's committed state.
    assert!(gate.position("run 1 ends on a") < gate.position("run 2 ends on a"));
    assert_eq!(gate.inside.lock().unwrap().1, 1, "never two runs at once");
    assert_eq!(gated.get_state("a").await.unwrap(), Some(2));
    assert_eq!(gated.status("a").await.unwrap().run_count, 2);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_executions_run_at_most_max_concurrent_executions_at_once() {
    let (engine, clock, gate, _db) = gated_engine(Some(2)).await;
    let gated = engine.client().continuous::<Gated>();
    for id in ["a", "b", "c", "d"] {
        gated.start(id, 0).await.unwrap();
    }
    // Four runs fall due at once.
    let advance = tokio::spawn({
        let clock = clock.clone();
        async move { clock.advance(Duration::from_millis(20)).await }
    });
    until_logged_n(&gate, "run begins", 2).await;
    let_others_run().await;
    assert_eq!(gate.count("run begins"), 2, "two at once, the others wait");
    // Each run that ends lets one more begin.
    gate.open.add_permits(1);
    until_logged_n(&gate, "run begins", 3).await;
    gate.open.add_permits(3);
    tokio::time::timeout(PATIENCE, advance)
        .await
        .expect("every run ends")
        .unwrap();
    assert_eq!(gate.count("run 1 ends"), 4);
    assert_eq!(gate.inside.lock().unwrap().1, 2, "at most two at once");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_alarm_shows_no_next_time_and_its_claim_is_written_only_on_a_shared_store() {
    let db = durable_jobs_tests::TestDb::new().await;
    let gate = Arc::new(Gate::default());
    let clock = TestClock::new();
    let engine = Engine::<GatedJobs>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone())
        .app(gate.clone())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    let gated = client.continuous::<Gated>();
    // The first run fires from its alarm, 20 ms after the start; the advance returns once it
    // has ended, which the gate holds off.
    gated.start("a", 0).await.unwrap();
    let advance = tokio::spawn({
        let clock = clock.clone();
        async move { clock.advance(std::time::Duration::from_millis(20)).await }
    });
    until_logged(&gate, "run begins on a").await;

    let status = gated.status("a").await.unwrap();
    assert_eq!(status.next_run_at, None, "{status:?}");
    // An exclusive store holds the file alone: the claim is a check, not a write, and the run
    // costs one write. A shared store's claim is a durable lease another process can see.
    let leases_written = match durable_jobs_tests::ownership() {
        Ownership::Exclusive => 0,
        Ownership::Shared => 1,
    };
    assert_eq!(
        db.int("SELECT count(*) FROM instances WHERE lease_owner IS NOT NULL")
            .await,
        leases_written
    );
    let version_while_running = db.int("SELECT version FROM instances").await;

    gate.open.add_permits(1);
    advance.await.unwrap();
    assert_eq!(gated.get_state("a").await.unwrap(), Some(1));
    // One write for the run's end (after the claim, on a shared store). The next run is 20 ms
    // of the test clock away.
    assert_eq!(
        db.int("SELECT version FROM instances").await,
        version_while_running + 1
    );
    assert!(gated.status("a").await.unwrap().next_run_at.is_some());
    engine.shutdown().await.unwrap();
}
