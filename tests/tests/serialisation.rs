//! Per-instance serialisation: an action waits behind a running execution of the same
//! instance; other instances and read-only queries do not wait.

use std::sync::{Arc, Mutex};

use durable_jobs::prelude::*;
use durable_jobs::{Engine, JobSet, Registered, Registry};
use tokio::sync::Semaphore;

struct Gate {
    log: Mutex<Vec<String>>,
    open: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            log: Mutex::default(),
            open: Semaphore::new(0),
        }
    }
}

impl Gate {
    fn log(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
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
        app.log(format!("execute begins on {}", ctx.id()));
        app.open.acquire().await.expect("semaphore open").forget();
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

async fn until_logged(gate: &Gate, line: &str) {
    while !gate.log.lock().unwrap().iter().any(|l| l == line) {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_waits_behind_a_running_execution() {
    let gate = Arc::new(Gate::default());
    let engine = Engine::<GateJobs>::builder()
        .in_memory()
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
    let engine = Engine::<GateJobs>::builder()
        .in_memory()
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
    let shutdown = tokio::spawn(async move { e.shutdown().await });
    // Once shutdown has begun, new work is refused ...
    while client.task::<Slow>().send("z", "late".into()).await.is_ok() {
        tokio::task::yield_now().await;
    }
    // ... while the running execution is waited for.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the running execution"
    );
    gate.open.add_permits(1);
    trigger.await.unwrap().unwrap();
    shutdown.await.unwrap().unwrap();
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
        app.log(format!("run begins on {}", ctx.id()));
        app.open.acquire().await.expect("semaphore open").forget();
        let runs = *ctx.state() + 1;
        ctx.set_state(runs);
        Ok(())
    }
}

struct GatedJobs;
impl Registry for GatedJobs {
    type App = Arc<Gate>;
    fn register(jobs: &mut JobSet<Arc<Gate>>) {
        jobs.continuous(Gated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_alarm_shows_no_next_time_and_costs_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let gate = Arc::new(Gate::default());
    let clock = durable_jobs::testing::TestClock::new();
    let engine = Engine::<GatedJobs>::builder()
        .sqlite(&path)
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
    // The store holds the file alone: the claim was not written.
    let row = |sql: &str| -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    assert_eq!(
        row("SELECT count(*) FROM instances WHERE lease_owner IS NOT NULL"),
        0
    );
    let version_while_running = row("SELECT version FROM instances");

    gate.open.add_permits(1);
    advance.await.unwrap();
    assert_eq!(gated.get_state("a").await.unwrap(), Some(1));
    // One write for the run: its end. The next run is 20 ms of the test clock away.
    assert_eq!(
        row("SELECT version FROM instances"),
        version_while_running + 1
    );
    assert!(gated.status("a").await.unwrap().next_run_at.is_some());
    engine.shutdown().await.unwrap();
}
