//! The table of `durable_jobs::Error` ("which operation returns which variant"), row by row,
//! through the public client: each test produces the variants of its row that no other test
//! file produces (`errors.rs`, `continuous.rs`, `debounce.rs`, `task.rs`, `steps.rs` and
//! `storage_faults.rs` produce the rest; the row comments say where).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{RunStatus, StepError, TriggerOptions};
use durable_jobs::{Client, Engine, Error, Limits};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);

/// What the jobs share: a client for calling their own instance, what those calls answered,
/// and a gate the step job waits at.
pub struct Loop {
    client: OnceLock<Client<TableJobs>>,
    seen: Mutex<Vec<String>>,
    gate: Semaphore,
}

impl Default for Loop {
    fn default() -> Self {
        Loop {
            client: OnceLock::new(),
            seen: Mutex::default(),
            gate: Semaphore::new(0),
        }
    }
}

impl Loop {
    fn client(&self) -> &Client<TableJobs> {
        self.client
            .get()
            .expect("the client is set before any call")
    }

    fn saw<T: std::fmt::Debug>(&self, call: &str, result: Result<T, Error>) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{call}: {}", describe(result)));
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A variant and its operation (and the first word of a refusing state), or `Ok`.
fn describe<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => "Ok".into(),
        Err(Error::InvalidState {
            operation, state, ..
        }) => format!(
            "InvalidState {operation} ({})",
            state.split(' ').next().unwrap_or_default()
        ),
        Err(Error::InstanceNotFound { operation, .. }) => format!("InstanceNotFound {operation}"),
        Err(Error::Execution { operation, .. }) => format!("Execution {operation}"),
        Err(Error::Validation { target, .. }) => format!("Validation {target}"),
        Err(Error::Timeout { operation, .. }) => format!("Timeout {operation}"),
        Err(Error::ShutDown { operation }) => format!("ShutDown {operation}"),
        Err(e) => format!("{e:?}"),
    }
}

/// What a looping continuous run does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `fail`, `trigger-self` or `terminate-self`.
    pub action: String,
}

/// Does what its state says, on its own instance.
#[durable_jobs::continuous(every = "1h", start_immediately = false, name = "looper")]
pub async fn looper(ctx: &mut ContinuousContext<Plan>, app: &Arc<Loop>) -> Result<(), Error> {
    let own = app.client().continuous::<Looper>();
    match ctx.state().action.as_str() {
        "fail" => {
            return Err(Error::Scheduler {
                operation: "looper",
                message: "failing on purpose".into(),
            })
        }
        "trigger-self" => app.saw("trigger", own.trigger(ctx.id()).await),
        "terminate-self" => app.saw("terminate", own.terminate(ctx.id(), None).await),
        _ => {}
    }
    Ok(())
}

/// A batch whose flush calls its own instance with every debounce command.
pub struct LoopBatch;

#[durable_jobs::debounce(flush_after = "1h", name = "loop-batch")]
impl DebounceJob<Arc<Loop>> for LoopBatch {
    type Event = u32;
    type State = Vec<u32>;
    type Error = Error;

    fn on_event(&self, state: Option<Vec<u32>>, n: u32, _ctx: &EventContext) -> Vec<u32> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        all
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<u32>>,
        app: &Arc<Loop>,
    ) -> Result<(), Error> {
        let own = app.client().debounce::<LoopBatch>();
        let id = ctx.instance().id().to_owned();
        app.saw("add", own.add(&id, 1).await);
        app.saw("add_with_id", own.add_with_id(&id, 1, "e1").await);
        app.saw("flush", own.flush(&id).await);
        app.saw("clear", own.clear(&id).await);
        Ok(())
    }
}

/// A task whose handlers call their own instance, or fail, as the event says.
pub struct LoopTask;

#[durable_jobs::task(name = "loop-task")]
impl TaskJob<Arc<Loop>> for LoopTask {
    type State = String;
    type Event = String;
    type Error = Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<String>,
        event: String,
        app: &Arc<Loop>,
    ) -> Result<(), Error> {
        let own = app.client().task::<LoopTask>();
        match event.as_str() {
            "send-self" => app.saw("send", own.send(ctx.id(), "x".into()).await),
            "terminate-self" => app.saw("terminate", own.terminate(ctx.id()).await),
            "big" => ctx.set_state("x".repeat(1_000)),
            other => ctx.set_state(other.to_owned()),
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<String>, _app: &Arc<Loop>) -> Result<(), Error> {
        if ctx.state().map(String::as_str) == Some("fail-execute") {
            return Err(Error::Scheduler {
                operation: "loop-task",
                message: "failing on purpose".into(),
            });
        }
        Ok(())
    }
}

/// What a step run is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Doubled.
    pub n: u32,
}

/// One step that waits at the gate.
#[durable_jobs::step_job(name = "gated-work")]
pub async fn gated_work(
    step: &mut StepContext,
    input: Work,
    app: &Arc<Loop>,
) -> Result<u32, StepError> {
    step.run("wait", |_| async {
        app.gate.acquire().await?.forget();
        Ok::<_, durable_jobs::BoxError>(input.n * 2)
    })
    .await
}

durable_jobs::registry! {
    /// The jobs of the error table's tests.
    pub TableJobs<Arc<Loop>> { Looper, LoopBatch, LoopTask, GatedWork }
}

struct Env {
    engine: Engine<TableJobs>,
    client: Client<TableJobs>,
    app: Arc<Loop>,
    clock: durable_jobs::testing::TestClock,
    _dir: durable_jobs_tests::TestDb,
}

async fn env() -> Env {
    let dir = durable_jobs_tests::TestDb::new().await;
    let app = Arc::new(Loop::default());
    let clock = durable_jobs::testing::TestClock::new();
    let engine = Engine::<TableJobs>::builder()
        .store_arc(dir.open().await)
        .clock(clock.clone())
        .limits(Limits::default().max_payload_bytes(512))
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    app.client.set(engine.client()).ok().unwrap();
    Env {
        engine,
        client,
        app,
        clock,
        _dir: dir,
    }
}

impl Env {
    async fn stop(self) {
        drop(self.client);
        drop(self.app);
        tokio::time::timeout(WAIT, self.engine.shutdown())
            .await
            .expect("shutdown in time")
            .unwrap();
    }
}

fn plan(action: &str) -> Plan {
    Plan {
        action: action.into(),
    }
}

/// Row `continuous start`: `Validation` (input over the size limit; the id: `errors.rs`),
/// `Execution` (`continuous.rs`), `ShutDown` after shutdown (below), `Storage`
/// (`storage_faults.rs`).
#[tokio::test]
async fn continuous_start_refuses_an_input_over_the_limit_and_creates_nothing() {
    let env = env().await;
    let looper = env.client.continuous::<Looper>();
    let e = looper.start("big", plan(&"x".repeat(1_000))).await;
    assert_eq!(describe(e), "Validation input");
    assert!(looper.status("big").await.unwrap().is_not_found());
    env.stop().await;
}

/// Row `trigger (continuous, task)`: `Execution` and `InvalidState` (`InstanceNotFound` and a
/// task's `InvalidState`: `continuous.rs`, `errors.rs`).
#[tokio::test]
async fn trigger_reports_a_failed_run_and_refuses_a_call_from_inside() {
    let env = env().await;
    let looper = env.client.continuous::<Looper>();
    looper.start("fails", plan("fail")).await.unwrap();
    assert_eq!(describe(looper.trigger("fails").await), "Execution trigger");

    looper.start("me", plan("trigger-self")).await.unwrap();
    looper.trigger("me").await.unwrap();
    assert_eq!(
        env.app.seen(),
        ["trigger: InvalidState trigger (executing)"]
    );

    let tasks = env.client.task::<LoopTask>();
    tasks.send("t", "fail-execute".into()).await.unwrap();
    assert_eq!(describe(tasks.trigger("t").await), "Execution trigger");
    env.stop().await;
}

/// Row `terminate, debounce flush and clear`: `InvalidState` from inside the instance
/// (`InstanceNotFound`, and `Execution` for `flush`: `continuous.rs`, `debounce.rs`).
#[tokio::test]
async fn terminate_flush_and_clear_refuse_a_call_from_inside() {
    let env = env().await;
    env.client
        .continuous::<Looper>()
        .start("me", plan("terminate-self"))
        .await
        .unwrap();
    env.client
        .continuous::<Looper>()
        .trigger("me")
        .await
        .unwrap();
    env.client
        .task::<LoopTask>()
        .send("me", "terminate-self".into())
        .await
        .unwrap();
    env.client
        .debounce::<LoopBatch>()
        .add("me", 7)
        .await
        .unwrap();
    env.client
        .debounce::<LoopBatch>()
        .flush("me")
        .await
        .unwrap();
    assert_eq!(
        env.app.seen(),
        [
            "terminate: InvalidState terminate (executing)",
            "terminate: InvalidState terminate (executing)",
            // Row `debounce add, add_with_id`: `InvalidState` too.
            "add: InvalidState add (executing)",
            "add_with_id: InvalidState add (executing)",
            "flush: InvalidState flush (executing)",
            "clear: InvalidState clear (executing)",
        ]
    );
    env.stop().await;
}

/// Row `debounce add, add_with_id`: `Validation` of an event that does not decode (by name);
/// the id, event id and size limit are in `errors.rs`, `DuplicateEvent` in `debounce.rs`.
#[tokio::test]
async fn add_by_name_refuses_an_event_that_does_not_decode() {
    let env = env().await;
    let Ok(durable_jobs::client::DynamicJob::Debounce(batch)) = env.client.by_name("loop-batch")
    else {
        panic!("loop-batch is a debounce job")
    };
    let e = batch.add("b", serde_json::json!("seven"), None).await;
    assert_eq!(describe(e), "Validation event");
    assert!(batch.status("b").await.unwrap().is_not_found());
    env.stop().await;
}

/// Row `task send, send_with_id`: `Validation` (event id, a state over the limit) and
/// `InvalidState` (send to its own id); the id, event, `DuplicateEvent` and `Execution` are in
/// `errors.rs` and `task.rs`.
#[tokio::test]
async fn send_refuses_a_bad_event_id_a_state_over_the_limit_and_a_call_from_inside() {
    let env = env().await;
    let tasks = env.client.task::<LoopTask>();
    let e = tasks.send_with_id("t", "a".into(), "bad\nid").await;
    assert_eq!(describe(e), "Validation event_id");
    assert_eq!(
        describe(tasks.send("t", "big".into()).await),
        "Validation state"
    );
    assert!(
        tasks.status("t").await.unwrap().is_not_found(),
        "nothing created"
    );
    tasks.send("me", "send-self".into()).await.unwrap();
    assert_eq!(env.app.seen(), ["send: InvalidState send (executing)"]);
    env.stop().await;
}

/// Row `status, get_state`: `Validation` for a bad id (a stored state that no longer decodes:
/// `errors.rs`).
#[tokio::test]
async fn status_and_get_state_refuse_a_bad_id() {
    let env = env().await;
    let bad = "bad\0id";
    assert_eq!(
        describe(env.client.continuous::<Looper>().status(bad).await),
        "Validation id"
    );
    assert_eq!(
        describe(env.client.continuous::<Looper>().get_state(bad).await),
        "Validation id"
    );
    assert_eq!(
        describe(env.client.debounce::<LoopBatch>().status(bad).await),
        "Validation id"
    );
    assert_eq!(
        describe(env.client.task::<LoopTask>().get_state(bad).await),
        "Validation id"
    );
    env.stop().await;
}

/// Rows of the step job: `trigger`/`batch_trigger` (`Validation`, `InvalidState`),
/// `trigger_and_wait`/`wait_for_run` (`InvalidState`, `InstanceNotFound`, `Timeout`; `Execution`
/// in `steps.rs`), `retrigger`/`cancel`/`delete_run` (`InstanceNotFound`, `InvalidState`).
#[tokio::test]
async fn step_job_operations_return_the_documented_errors() {
    let env = env().await;
    let work = env.client.step_job::<GatedWork>();
    // Keys and labels are checked before anything is written.
    let e = work
        .trigger(Work { n: 1 }, TriggerOptions::new().idempotency_key(""))
        .await;
    assert_eq!(describe(e), "Validation key");
    let e = work
        .batch_trigger([durable_jobs::steps::BatchItem::new(Work { n: 1 })
            .options(TriggerOptions::new().label("not a key!", "v"))])
        .await;
    assert_eq!(describe(e), "Validation key");
    assert!(work.get_runs(Default::default()).await.unwrap().is_empty());

    // A run held inside its step: a short wait times out and the run goes on.
    let held = work
        .trigger(Work { n: 2 }, TriggerOptions::new().concurrency_key("k"))
        .await
        .unwrap();
    let e = work
        .wait_for_run(&held.run.id, Some(Duration::from_millis(50)))
        .await;
    assert_eq!(describe(e), "Timeout wait_for_run");
    let e = work
        .trigger_and_wait(
            Work { n: 3 },
            TriggerOptions::new(),
            Duration::from_millis(50),
        )
        .await;
    assert_eq!(describe(e), "Timeout wait_for_run");
    // A second pending run with the same concurrency key is refused.
    let queued = work
        .trigger(Work { n: 4 }, TriggerOptions::new().concurrency_key("k"))
        .await
        .unwrap();
    let e = work
        .trigger(Work { n: 5 }, TriggerOptions::new().concurrency_key("k"))
        .await;
    let e = describe(e);
    assert!(e.starts_with("InvalidState trigger"), "{e}");
    // Active runs cannot be retriggered or deleted.
    let e = work.retrigger(&queued.run.id).await;
    assert_eq!(describe(e), "InvalidState retrigger (pending)");
    let e = work.delete_run(&held.run.id).await;
    assert!(describe(e).starts_with("InvalidState delete_run"));
    // A cancelled run's waiters get `InvalidState`; a cancelled run cannot be cancelled again.
    work.cancel(&queued.run.id).await.unwrap();
    let e = work.wait_for_run(&queued.run.id, Some(WAIT)).await;
    assert_eq!(describe(e), "InvalidState wait_for_run (cancelled)");
    let e = work.cancel(&queued.run.id).await;
    assert!(describe(e).starts_with("InvalidState cancel"));
    // Missing runs.
    for (what, e) in [
        (
            "wait_for_run",
            describe(work.wait_for_run("missing", Some(WAIT)).await),
        ),
        ("retrigger", describe(work.retrigger("missing").await)),
        ("cancel", describe(work.cancel("missing").await)),
        ("delete_run", describe(work.delete_run("missing").await)),
    ] {
        assert_eq!(e, format!("InstanceNotFound {what}"));
    }
    env.app.gate.add_permits(10);
    let done = work.wait_for_run(&held.run.id, Some(WAIT)).await.unwrap();
    assert_eq!((done.status, done.output), (RunStatus::Completed, Some(4)));
    env.stop().await;
}

/// Row `any operation of any kind after shutdown`: `ShutDown`, for each kind, commands and
/// queries alike.
#[tokio::test]
async fn every_kind_refuses_work_after_shutdown() {
    let env = env().await;
    let client = env.client.clone();
    // An instance the engine has seen, so that a cache of rows could still answer for it.
    client
        .task::<LoopTask>()
        .send("known", "x".into())
        .await
        .unwrap();
    let Env {
        engine, app, clock, ..
    } = env;
    drop(app);
    drop(clock);
    engine.shutdown().await.unwrap();
    let work = client.step_job::<GatedWork>();
    assert_eq!(
        [
            describe(client.continuous::<Looper>().start("a", plan("")).await),
            describe(client.continuous::<Looper>().status("a").await),
            describe(client.debounce::<LoopBatch>().add("a", 1).await),
            describe(client.task::<LoopTask>().send("a", "x".into()).await),
            describe(client.task::<LoopTask>().get_state("a").await),
            describe(client.task::<LoopTask>().status("known").await),
            describe(work.trigger(Work { n: 1 }, TriggerOptions::new()).await),
            describe(work.get_run("r").await),
            describe(work.get_runs(Default::default()).await),
            describe(work.cancel("r").await),
        ],
        [
            "ShutDown start",
            "ShutDown status",
            "ShutDown add",
            "ShutDown send",
            "ShutDown get_state",
            "ShutDown status",
            "ShutDown trigger",
            "ShutDown get_run",
            "ShutDown get_runs",
            "ShutDown cancel",
        ]
    );
}
