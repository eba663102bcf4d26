//! Model-based tests: random sequences of client calls, test-clock advances, handler failures
//! and restarts, per job kind, run against a real engine on a SQLite file and against a small
//! reference model of the documented semantics (`docs/jobs.md`); every answer and every
//! observable state must agree after every step.
//!
//! `PROPTEST_CASES=N` sets the sequences per kind (32 by default, which keeps the file within
//! seconds); `PROPTEST_CASES=2000 cargo test -p durable-jobs-tests --release --test model` is
//! the long run. A failing sequence is shrunk and printed, with the seed to replay it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{Disposition, StepError, TriggerOptions};
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, Error, FlushOutcome};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Instances per sequence: few, so that operations meet on the same instance.
const INSTANCES: u8 = 2;
/// The window, schedule and cadence of the model jobs, in milliseconds.
const TEN_S: i64 = 10_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

// ---------------------------------------------------------------------------------------------
// The jobs, and what they report

/// Failures to inject (one each, per instance) and what the jobs delivered.
#[derive(Default)]
pub struct ModelApp {
    fail: Mutex<HashSet<String>>,
    delivered: Mutex<BTreeMap<String, Vec<Vec<i64>>>>,
}

impl ModelApp {
    /// Whether the next execution of `id` fails (consumes the failure).
    pub fn fail_for(&self, id: &str) {
        self.fail.lock().unwrap().insert(id.to_owned());
    }
    fn fails(&self, id: &str) -> bool {
        self.fail.lock().unwrap().remove(id)
    }
}

/// The error the model jobs fail with.
#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
pub struct Injected;

/// Flushed 10 s after its first event or at 3 events; no retry policy.
pub struct MBatch;

#[durable_jobs::debounce(flush_after = "10s", max_events = 3, name = "m-batch")]
impl DebounceJob<Arc<ModelApp>> for MBatch {
    type Event = i64;
    type State = Vec<i64>;
    type Error = Injected;

    fn on_event(&self, state: Option<Vec<i64>>, n: i64, _ctx: &EventContext) -> Vec<i64> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        all
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<i64>>,
        app: &Arc<ModelApp>,
    ) -> Result<(), Injected> {
        let id = ctx.instance().id().to_owned();
        if app.fails(&id) {
            return Err(Injected);
        }
        let batch = ctx.state().clone();
        app.delivered
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(batch);
        Ok(())
    }
}

/// Every 10 s, first at `start`; counts its successful runs; no retry policy.
#[durable_jobs::continuous(every = "10s", name = "m-tick")]
pub async fn m_tick(ctx: &mut ContinuousContext<i64>, app: &Arc<ModelApp>) -> Result<(), Injected> {
    *ctx.state_mut() += 1;
    if app.fails(ctx.id()) {
        return Err(Injected);
    }
    Ok(())
}

/// What a model task is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskEvent {
    /// Adds to the state.
    Add(i64),
    /// Schedules `execute` this many seconds later.
    Schedule(u64),
    /// Changes the state, then fails.
    Fail,
}

/// A task: events add or schedule; `execute` adds 1000.
pub struct MTask;

#[durable_jobs::task(name = "m-task")]
impl TaskJob<Arc<ModelApp>> for MTask {
    type State = i64;
    type Event = TaskEvent;
    type Error = Injected;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<i64>,
        event: TaskEvent,
        _app: &Arc<ModelApp>,
    ) -> Result<(), Injected> {
        let now = ctx.state().copied().unwrap_or(0);
        match event {
            TaskEvent::Add(n) => ctx.set_state(now + n),
            TaskEvent::Schedule(secs) => ctx.schedule_in(Duration::from_secs(secs)),
            TaskEvent::Fail => {
                ctx.set_state(now - 1);
                return Err(Injected);
            }
        }
        Ok(())
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<i64>,
        app: &Arc<ModelApp>,
    ) -> Result<(), Injected> {
        ctx.set_state(ctx.state().copied().unwrap_or(0) + 1000);
        if app.fails(ctx.id()) {
            return Err(Injected);
        }
        Ok(())
    }
}

/// Doubles its input in one step; a multiple of 5 fails the step (no retry policy).
#[durable_jobs::step_job(name = "m-double")]
pub async fn m_double(
    step: &mut StepContext,
    n: i64,
    _app: &Arc<ModelApp>,
) -> Result<i64, StepError> {
    step.run("double", |_| async move {
        if n % 5 == 0 {
            return Err(durable_jobs::BoxError::from("a multiple of 5"));
        }
        Ok(n * 2)
    })
    .await
}

durable_jobs::registry! {
    /// The model jobs.
    pub ModelJobs<Arc<ModelApp>> { MBatch, MTick, MTask, MDouble }
}

// ---------------------------------------------------------------------------------------------
// The engine under test

struct Real {
    engine: Option<Engine<ModelJobs>>,
    clock: TestClock,
    app: Arc<ModelApp>,
    db: durable_jobs_tests::TestDb,
}

impl Real {
    async fn start() -> Real {
        let db = durable_jobs_tests::TestDb::new().await;
        let clock = TestClock::new();
        let app = Arc::new(ModelApp::default());
        let mut real = Real {
            engine: None,
            clock,
            app,
            db,
        };
        real.open().await;
        real
    }

    async fn open(&mut self) {
        let engine = Engine::<ModelJobs>::builder()
            .store_arc(self.db.open().await)
            .clock(self.clock.clone())
            .app(self.app.clone())
            .start()
            .await
            .unwrap();
        self.engine = Some(engine);
        self.clock.settle().await;
    }

    async fn restart(&mut self) {
        let engine = self.engine.take().unwrap();
        engine.shutdown().await.unwrap();
        self.open().await;
    }

    fn client(&self) -> durable_jobs::Client<ModelJobs> {
        self.engine.as_ref().unwrap().client()
    }

    async fn stop(mut self) {
        self.engine.take().unwrap().shutdown().await.unwrap();
    }

    /// The clock's time in milliseconds from its start.
    fn now(&self) -> i64 {
        self.clock.now().as_millis() - TestClock::DEFAULT_START.as_millis()
    }

    fn at(&self, t: Option<Timestamp>) -> Option<i64> {
        t.map(|t| t.as_millis() - TestClock::DEFAULT_START.as_millis())
    }
}

fn id(i: u8) -> String {
    format!("i{i}")
}

/// Runs `body` on a runtime of its own (proptest cases are synchronous).
fn run<F: std::future::Future<Output = Result<(), TestCaseError>>>(
    body: F,
) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// `f`, or a test failure naming the step if it does not end within a minute: a hang shrinks
/// to its shortest sequence like any other failure.
async fn bounded<T>(
    step: usize,
    op: &impl std::fmt::Debug,
    f: impl std::future::Future<Output = T>,
) -> Result<T, TestCaseError> {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .map_err(|_| TestCaseError::fail(format!("step {step} {op:?} did not end in a minute")))
}

/// What an operation answered, in a form the model can predict.
fn answer<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(Error::InstanceNotFound { .. }) => "not found".into(),
        Err(Error::Execution { .. }) => "execution error".into(),
        Err(e) => format!("unexpected {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Debounce

#[derive(Clone, Debug)]
enum DebounceOp {
    Add(u8, i64),
    Flush(u8),
    Clear(u8),
    FailNext(u8),
    Advance(u64),
    Restart,
}

fn debounce_op() -> impl Strategy<Value = DebounceOp> {
    prop_oneof![
        6 => (0..INSTANCES, 0..100i64).prop_map(|(i, n)| DebounceOp::Add(i, n)),
        1 => (0..INSTANCES).prop_map(DebounceOp::Flush),
        1 => (0..INSTANCES).prop_map(DebounceOp::Clear),
        2 => (0..INSTANCES).prop_map(DebounceOp::FailNext),
        3 => (1..15u64).prop_map(DebounceOp::Advance),
        1 => Just(DebounceOp::Restart),
    ]
}

#[derive(Default)]
struct Batch {
    events: Vec<i64>,
    started: i64,
    due: i64,
}

/// `docs/jobs.md`, "Debounce jobs", for `flush_after = 10s, max_events = 3` without a retry
/// policy.
#[derive(Default)]
struct DebounceModel {
    now: i64,
    batches: BTreeMap<u8, Batch>,
    delivered: BTreeMap<u8, Vec<Vec<i64>>>,
    fail: HashSet<u8>,
}

impl DebounceModel {
    /// Runs `execute` on the batch: delivered and deleted, or kept and flushed again
    /// `flush_after` after the failure; the kept batch's window counts from the failure.
    fn flush(&mut self, i: u8) -> bool {
        if self.fail.remove(&i) {
            let now = self.now;
            if let Some(b) = self.batches.get_mut(&i) {
                b.started = now;
                b.due = now + TEN_S;
            }
            false
        } else {
            let b = self.batches.remove(&i).unwrap();
            self.delivered.entry(i).or_default().push(b.events);
            true
        }
    }

    /// Alarm flushes due up to `until`, in time order.
    fn fire_until(&mut self, until: i64) {
        while let Some((&i, b)) = self.batches.iter().min_by_key(|(i, b)| (b.due, **i)) {
            if b.due > until {
                break;
            }
            self.now = self.now.max(b.due);
            self.flush(i);
        }
        self.now = self.now.max(until);
    }

    fn apply(&mut self, op: &DebounceOp) -> String {
        match *op {
            DebounceOp::Add(i, n) => {
                let now = self.now;
                let created = !self.batches.contains_key(&i);
                let b = self.batches.entry(i).or_insert_with(|| Batch {
                    started: now,
                    ..Batch::default()
                });
                b.events.push(n);
                // Each add re-arms the flush by the rule: `flush_after` from the first event.
                b.due = b.started + TEN_S;
                let count = b.events.len();
                let flush = if count >= 3 {
                    if self.flush(i) {
                        "flushed"
                    } else {
                        "failed"
                    }
                } else {
                    "none"
                };
                format!("created={created} count={count} flush={flush}")
            }
            DebounceOp::Flush(i) => {
                if !self.batches.contains_key(&i) {
                    "not found".into()
                } else if self.flush(i) {
                    "flushed".into()
                } else {
                    "execution error".into()
                }
            }
            DebounceOp::Clear(i) => match self.batches.remove(&i) {
                None => "not found".into(),
                Some(b) => format!("discarded {}", b.events.len()),
            },
            DebounceOp::FailNext(i) => {
                self.fail.insert(i);
                String::new()
            }
            DebounceOp::Advance(secs) => {
                self.fire_until(self.now + secs as i64 * 1000);
                String::new()
            }
            DebounceOp::Restart => String::new(),
        }
    }
}

async fn debounce_real(real: &mut Real, op: &DebounceOp) -> String {
    // A client keeps its engine alive: none is held across a restart.
    let batches = || real.client().debounce::<MBatch>();
    match *op {
        DebounceOp::Add(i, n) => answer(batches().add(&id(i), n).await, |r| {
            let flush = match r.flush {
                None => "none",
                Some(FlushOutcome::Flushed) => "flushed",
                Some(FlushOutcome::Failed { .. }) => "failed",
                Some(_) => "other",
            };
            format!(
                "created={} count={} flush={flush}",
                r.created, r.event_count
            )
        }),
        DebounceOp::Flush(i) => answer(batches().flush(&id(i)).await, |_| "flushed".into()),
        DebounceOp::Clear(i) => answer(batches().clear(&id(i)).await, |r| {
            format!("discarded {}", r.discarded_events)
        }),
        DebounceOp::FailNext(i) => {
            real.app.fail_for(&id(i));
            String::new()
        }
        DebounceOp::Advance(secs) => {
            real.clock.advance(Duration::from_secs(secs)).await;
            String::new()
        }
        DebounceOp::Restart => {
            real.restart().await;
            String::new()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn debounce_jobs_behave_as_documented(ops in prop::collection::vec(debounce_op(), 1..30)) {
        run(async {
            let mut real = Real::start().await;
            let mut model = DebounceModel::default();
            for (step, op) in ops.iter().enumerate() {
                let got = bounded(step, op, debounce_real(&mut real, op)).await?;
                // Whatever fell due runs now, in both.
                bounded(step, op, real.clock.settle()).await?;
                let want = model.apply(op);
                model.fire_until(model.now);
                prop_assert_eq!(&got, &want, "step {} {:?}", step, op);
                prop_assert_eq!(real.now(), model.now);
                let batches = real.client().debounce::<MBatch>();
                for i in 0..INSTANCES {
                    let state = batches.get_state(&id(i)).await.unwrap();
                    let expected = model.batches.get(&i).map(|b| b.events.clone());
                    prop_assert_eq!(state, expected, "batch {} after step {} {:?}", i, step, op);
                    let status = batches.status(&id(i)).await.unwrap();
                    prop_assert_eq!(
                        real.at(status.will_flush_at),
                        model.batches.get(&i).map(|b| b.due),
                        "flush time of {} after step {} {:?}", i, step, op
                    );
                }
                let delivered: BTreeMap<u8, Vec<Vec<i64>>> = real
                    .app
                    .delivered
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k[1..].parse().unwrap(), v.clone()))
                    .collect();
                prop_assert_eq!(&delivered, &model.delivered, "after step {} {:?}", step, op);
            }
            real.stop().await;
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Continuous

#[derive(Clone, Debug)]
enum ContinuousOp {
    Start(u8),
    Trigger(u8),
    Terminate(u8),
    FailNext(u8),
    Advance(u64),
    Restart,
}

fn continuous_op() -> impl Strategy<Value = ContinuousOp> {
    prop_oneof![
        2 => (0..INSTANCES).prop_map(ContinuousOp::Start),
        3 => (0..INSTANCES).prop_map(ContinuousOp::Trigger),
        1 => (0..INSTANCES).prop_map(ContinuousOp::Terminate),
        2 => (0..INSTANCES).prop_map(ContinuousOp::FailNext),
        3 => (1..25u64).prop_map(ContinuousOp::Advance),
        1 => Just(ContinuousOp::Restart),
    ]
}

struct Ticker {
    runs: u64,
    state: i64,
    next: i64,
}

/// `docs/jobs.md`, "Continuous jobs", for `every = 10s`, started immediately, without a retry
/// policy: a failed run keeps the cadence and discards its state change.
#[derive(Default)]
struct ContinuousModel {
    now: i64,
    tickers: BTreeMap<u8, Ticker>,
    fail: HashSet<u8>,
}

impl ContinuousModel {
    fn run(&mut self, i: u8) -> bool {
        let failed = self.fail.remove(&i);
        let now = self.now;
        let t = self.tickers.get_mut(&i).unwrap();
        t.runs += 1;
        if !failed {
            t.state += 1;
        }
        t.next = now + TEN_S;
        !failed
    }

    fn fire_until(&mut self, until: i64) {
        while let Some((&i, t)) = self.tickers.iter().min_by_key(|(i, t)| (t.next, **i)) {
            if t.next > until {
                break;
            }
            self.now = self.now.max(t.next);
            self.run(i);
        }
        self.now = self.now.max(until);
    }

    fn apply(&mut self, op: &ContinuousOp) -> String {
        match *op {
            ContinuousOp::Start(i) => {
                if self.tickers.contains_key(&i) {
                    return "created=false".into();
                }
                self.tickers.insert(
                    i,
                    Ticker {
                        runs: 0,
                        state: 0,
                        next: self.now,
                    },
                );
                if self.run(i) {
                    "created=true".into()
                } else {
                    "execution error".into()
                }
            }
            ContinuousOp::Trigger(i) => {
                if !self.tickers.contains_key(&i) {
                    "not found".into()
                } else if self.run(i) {
                    "ran".into()
                } else {
                    "execution error".into()
                }
            }
            ContinuousOp::Terminate(i) => match self.tickers.remove(&i) {
                None => "not found".into(),
                Some(_) => "terminated".into(),
            },
            ContinuousOp::FailNext(i) => {
                self.fail.insert(i);
                String::new()
            }
            ContinuousOp::Advance(secs) => {
                self.fire_until(self.now + secs as i64 * 1000);
                String::new()
            }
            ContinuousOp::Restart => String::new(),
        }
    }
}

async fn continuous_real(real: &mut Real, op: &ContinuousOp) -> String {
    let tickers = || real.client().continuous::<MTick>();
    match *op {
        ContinuousOp::Start(i) => answer(tickers().start(&id(i), 0).await, |r| {
            format!("created={}", r.created)
        }),
        ContinuousOp::Trigger(i) => answer(tickers().trigger(&id(i)).await, |_| "ran".into()),
        ContinuousOp::Terminate(i) => answer(tickers().terminate(&id(i), None).await, |_| {
            "terminated".into()
        }),
        ContinuousOp::FailNext(i) => {
            real.app.fail_for(&id(i));
            String::new()
        }
        ContinuousOp::Advance(secs) => {
            real.clock.advance(Duration::from_secs(secs)).await;
            String::new()
        }
        ContinuousOp::Restart => {
            real.restart().await;
            String::new()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn continuous_jobs_behave_as_documented(ops in prop::collection::vec(continuous_op(), 1..30)) {
        run(async {
            let mut real = Real::start().await;
            let mut model = ContinuousModel::default();
            for (step, op) in ops.iter().enumerate() {
                let got = bounded(step, op, continuous_real(&mut real, op)).await?;
                let want = model.apply(op);
                prop_assert_eq!(&got, &want, "step {} {:?}", step, op);
                let tickers = real.client().continuous::<MTick>();
                for i in 0..INSTANCES {
                    let status = tickers.status(&id(i)).await.unwrap();
                    let state = tickers.get_state(&id(i)).await.unwrap();
                    let expected = model.tickers.get(&i);
                    prop_assert_eq!(state, expected.map(|t| t.state), "state of {} after step {} {:?}", i, step, op);
                    prop_assert_eq!(
                        (status.run_count, real.at(status.next_run_at)),
                        expected.map_or((0, None), |t| (t.runs, Some(t.next))),
                        "status of {} after step {} {:?}", i, step, op
                    );
                }
            }
            real.stop().await;
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Task

#[derive(Clone, Debug)]
enum TaskOp {
    Send(u8, TaskEvent),
    Trigger(u8),
    Terminate(u8),
    FailNext(u8),
    Advance(u64),
    Restart,
}

fn task_event() -> impl Strategy<Value = TaskEvent> {
    prop_oneof![
        3 => (1..10i64).prop_map(TaskEvent::Add),
        2 => (0..20u64).prop_map(TaskEvent::Schedule),
        1 => Just(TaskEvent::Fail),
    ]
}

fn task_op() -> impl Strategy<Value = TaskOp> {
    prop_oneof![
        5 => (0..INSTANCES, task_event()).prop_map(|(i, e)| TaskOp::Send(i, e)),
        2 => (0..INSTANCES).prop_map(TaskOp::Trigger),
        1 => (0..INSTANCES).prop_map(TaskOp::Terminate),
        1 => (0..INSTANCES).prop_map(TaskOp::FailNext),
        3 => (1..25u64).prop_map(TaskOp::Advance),
        1 => Just(TaskOp::Restart),
    ]
}

#[derive(Default)]
struct Task {
    state: Option<i64>,
    scheduled: Option<i64>,
    executions: u64,
}

/// `docs/jobs.md`, "Task jobs": one schedule, consumed when it fires; a failed invocation keeps
/// nothing (a first event that fails creates nothing); a failed scheduled `execute` leaves the
/// task idle with its state and counts the attempt.
#[derive(Default)]
struct TaskModel {
    now: i64,
    tasks: BTreeMap<u8, Task>,
    fail: HashSet<u8>,
}

impl TaskModel {
    fn execute(&mut self, i: u8) -> bool {
        let failed = self.fail.remove(&i);
        let t = self.tasks.get_mut(&i).unwrap();
        t.executions += 1;
        if !failed {
            t.state = Some(t.state.unwrap_or(0) + 1000);
        }
        !failed
    }

    fn fire_until(&mut self, until: i64) {
        while let Some((&i, at)) = self
            .tasks
            .iter()
            .filter_map(|(i, t)| t.scheduled.map(|at| (i, at)))
            .min_by_key(|(i, at)| (*at, **i))
        {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.tasks.get_mut(&i).unwrap().scheduled = None;
            self.execute(i);
        }
        self.now = self.now.max(until);
    }

    fn apply(&mut self, op: &TaskOp) -> String {
        match op {
            TaskOp::Send(i, event) => {
                let now = self.now;
                let exists = self.tasks.contains_key(i);
                match event {
                    TaskEvent::Fail => "execution error".into(),
                    TaskEvent::Add(n) => {
                        let t = self.tasks.entry(*i).or_default();
                        t.state = Some(t.state.unwrap_or(0) + n);
                        format!("created={}", !exists)
                    }
                    TaskEvent::Schedule(secs) => {
                        let t = self.tasks.entry(*i).or_default();
                        t.scheduled = Some(now + *secs as i64 * 1000);
                        format!("created={}", !exists)
                    }
                }
            }
            TaskOp::Trigger(i) => {
                if !self.tasks.contains_key(i) {
                    "not found".into()
                } else if self.execute(*i) {
                    "ran".into()
                } else {
                    // A failed trigger keeps nothing, not even the attempt.
                    self.tasks.get_mut(i).unwrap().executions -= 1;
                    "execution error".into()
                }
            }
            TaskOp::Terminate(i) => match self.tasks.remove(i) {
                None => "not found".into(),
                Some(_) => "terminated".into(),
            },
            TaskOp::FailNext(i) => {
                self.fail.insert(*i);
                String::new()
            }
            TaskOp::Advance(secs) => {
                self.fire_until(self.now + *secs as i64 * 1000);
                String::new()
            }
            TaskOp::Restart => String::new(),
        }
    }
}

async fn task_real(real: &mut Real, op: &TaskOp) -> String {
    let tasks = || real.client().task::<MTask>();
    match op {
        TaskOp::Send(i, event) => answer(tasks().send(&id(*i), event.clone()).await, |r| {
            format!("created={}", r.created)
        }),
        TaskOp::Trigger(i) => answer(tasks().trigger(&id(*i)).await, |_| "ran".into()),
        TaskOp::Terminate(i) => answer(tasks().terminate(&id(*i)).await, |_| "terminated".into()),
        TaskOp::FailNext(i) => {
            real.app.fail_for(&id(*i));
            String::new()
        }
        TaskOp::Advance(secs) => {
            real.clock.advance(Duration::from_secs(*secs)).await;
            String::new()
        }
        TaskOp::Restart => {
            real.restart().await;
            String::new()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn task_jobs_behave_as_documented(ops in prop::collection::vec(task_op(), 1..30)) {
        run(async {
            let mut real = Real::start().await;
            let mut model = TaskModel::default();
            for (step, op) in ops.iter().enumerate() {
                let got = bounded(step, op, task_real(&mut real, op)).await?;
                // A schedule in the past (0 s) runs as soon as possible: now, in both.
                bounded(step, op, real.clock.settle()).await?;
                let want = model.apply(op);
                model.fire_until(model.now);
                prop_assert_eq!(&got, &want, "step {} {:?}", step, op);
                let tasks = real.client().task::<MTask>();
                for i in 0..INSTANCES {
                    let status = tasks.status(&id(i)).await.unwrap();
                    let state = tasks.get_state(&id(i)).await.unwrap();
                    let expected = model.tasks.get(&i);
                    prop_assert_eq!(
                        (state, real.at(status.scheduled_at), status.execute_count, status.is_not_found()),
                        expected.map_or((None, None, 0, true), |t| (t.state, t.scheduled, t.executions, false)),
                        "task {} after step {} {:?}", i, step, op
                    );
                }
            }
            real.stop().await;
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Step jobs

#[derive(Clone, Debug)]
enum StepOp {
    Trigger(i64, Option<u8>),
    Restart,
}

fn step_op() -> impl Strategy<Value = StepOp> {
    prop_oneof![
        6 => (0..20i64, prop::option::of(0..3u8)).prop_map(|(n, k)| StepOp::Trigger(n, k)),
        1 => Just(StepOp::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// `docs/jobs.md`, "Step jobs" and "Keys": a run completes with its output or fails with its
    /// step's error; a key already used returns that run, whatever its status, and creates
    /// nothing; across restarts too.
    #[test]
    fn step_jobs_behave_as_documented(ops in prop::collection::vec(step_op(), 1..20)) {
        run(async {
            let mut real = Real::start().await;
            // The model: the run of each key, by its input.
            let mut keys: BTreeMap<u8, (String, i64)> = BTreeMap::new();
            let mut runs = 0usize;
            for (step, op) in ops.iter().enumerate() {
                let StepOp::Trigger(n, key) = *op else {
                    real.restart().await;
                    continue;
                };
                let doubler = real.client().step_job::<MDouble>();
                let options = match key {
                    Some(k) => TriggerOptions::new().idempotency_key(format!("k{k}")),
                    None => TriggerOptions::new(),
                };
                let t = doubler.trigger(n, options).await.unwrap();
                let first = key.and_then(|k| keys.get(&k).cloned());
                let input = match &first {
                    Some((run_id, input)) => {
                        prop_assert_eq!((&t.run.id, t.disposition), (run_id, Disposition::Idempotent), "step {}", step);
                        *input
                    }
                    None => {
                        prop_assert_eq!(t.disposition, Disposition::Created, "step {}", step);
                        runs += 1;
                        if let Some(k) = key {
                            keys.insert(k, (t.run.id.clone(), n));
                        }
                        n
                    }
                };
                let done = doubler.wait_for_run(&t.run.id, Some(Duration::from_secs(30))).await;
                if input % 5 == 0 {
                    prop_assert!(matches!(done, Err(Error::Execution { .. })), "step {}: {:?}", step, done.map(|r| r.status));
                } else {
                    prop_assert_eq!(done.unwrap().output, Some(input * 2), "step {}", step);
                }
                let all = doubler.get_runs(Default::default()).await.unwrap();
                prop_assert_eq!(all.len(), runs, "runs after step {}", step);
            }
            real.stop().await;
            Ok(())
        })?;
    }
}
