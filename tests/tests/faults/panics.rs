//! A panic in user code is an error of that code: the caller gets `Execution` with a
//! `Panicked` source, the failure is counted and reported, retry policies and cadences apply,
//! and nothing of the failed execution is kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{RunStatus, StepError, TriggerOptions};
use durable_jobs::testing::TestClock;
use durable_jobs::{
    ContinuousState, DebounceState, Engine, Error, EventKind, JobEvent, Panicked, TaskState,
};
use serde::{Deserialize, Serialize};

/// Which handlers panic, and how often each ran.
#[derive(Default)]
pub(crate) struct Switches {
    panicking: Mutex<HashSet<&'static str>>,
    ran: Mutex<Vec<&'static str>>,
}

impl Switches {
    fn set(&self, handler: &'static str, panics: bool) {
        let mut p = self.panicking.lock().unwrap();
        if panics {
            p.insert(handler);
        } else {
            p.remove(handler);
        }
    }

    /// Records the call, then panics if `handler` is switched on.
    fn enter(&self, handler: &'static str) {
        self.ran.lock().unwrap().push(handler);
        if self.panicking.lock().unwrap().contains(handler) {
            panic!("{handler} blew up");
        }
    }

    fn runs(&self, handler: &str) -> usize {
        self.ran
            .lock()
            .unwrap()
            .iter()
            .filter(|h| **h == handler)
            .count()
    }
}

type App = Arc<Switches>;

/// Hourly, first run at `start`.
#[durable_jobs::continuous(every = "1h")]
async fn ticker(ctx: &mut ContinuousContext<u64>, app: &App) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    app.enter("ticker");
    Ok(())
}

/// Hourly, retried once a minute up to three attempts.
#[durable_jobs::continuous(
    every = "1h",
    start_immediately = false,
    retry(max_attempts = 3, backoff = constant("1m"), jitter = false),
    on_retry_exhausted = retried_exhausted
)]
async fn retried(ctx: &mut ContinuousContext<u64>, app: &App) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    app.enter("retried");
    Ok(())
}

async fn retried_exhausted(_: durable_jobs::RetryExhausted<u64>, app: &App) {
    app.enter("retried_exhausted");
}

/// Collects numbers and flushes them 5 s after the first.
pub(crate) struct Collector;

#[durable_jobs::debounce(flush_after = "5s")]
impl DebounceJob<App> for Collector {
    type Event = u32;
    type State = Vec<u32>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<u32>>, event: u32, ctx: &EventContext) -> Vec<u32> {
        let _ = ctx;
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        if event == 666 {
            panic!("on_event blew up");
        }
        batch
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<u32>>,
        app: &App,
    ) -> Result<(), Self::Error> {
        let _ = ctx;
        app.enter("flush");
        Ok(())
    }
}

/// An event of [`Reminder`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Remind {
    /// Sets the state and schedules `execute` in ten seconds.
    In10s,
}

/// Schedules an `execute` per event.
pub(crate) struct Reminder;

#[durable_jobs::task]
impl TaskJob<App> for Reminder {
    type State = u32;
    type Event = Remind;
    type Error = std::io::Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<u32>,
        _: Remind,
        app: &App,
    ) -> Result<(), Self::Error> {
        ctx.set_state(ctx.state().copied().unwrap_or(0) + 1);
        ctx.schedule_in(Duration::from_secs(10));
        app.enter("on_event");
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<u32>, app: &App) -> Result<(), Self::Error> {
        ctx.set_state(1000);
        app.enter("execute");
        Ok(())
    }

    async fn on_idle(&self, _: &mut TaskContext<u32>, _: IdleReason, app: &App) {
        app.enter("on_idle");
    }
}

/// Two steps; either the second step or the body after it may panic.
#[durable_jobs::step_job]
async fn two_steps(step: &mut StepContext, input: u32, app: &App) -> Result<u32, StepError> {
    let a: u32 = step.run("first", |_| async move { Ok(input + 1) }).await?;
    let b: u32 = step
        .run("second", |_| async move {
            app.enter("second");
            Ok(a * 2)
        })
        .await?;
    app.enter("after_steps");
    Ok(b)
}

/// A body that panics on its first attempt only; retried at once.
#[durable_jobs::step_job(retry(max_attempts = 2, backoff = constant("1ms"), jitter = false))]
async fn retried_steps(step: &mut StepContext, input: u32, app: &App) -> Result<u32, StepError> {
    let a: u32 = step.run("only", |_| async move { Ok(input) }).await?;
    if step.attempt() == 1 {
        app.enter("retried_body");
    }
    Ok(a)
}

durable_jobs::registry! {
    /// Jobs whose handlers panic on demand.
    pub(crate) Panicky<App> { Ticker, Retried, Collector, Reminder, TwoSteps, RetriedSteps }
}

struct Setup {
    engine: Engine<Panicky>,
    clock: TestClock,
    app: App,
    events: durable_jobs::EventStream,
    _dir: durable_jobs_tests::TestDb,
}

/// An engine on a file, driven by a test clock.
async fn setup() -> Setup {
    setup_on(Some(TestClock::new())).await
}

/// An engine on a file, on `clock` or the system clock.
async fn setup_on(test_clock: Option<TestClock>) -> Setup {
    let dir = durable_jobs_tests::TestDb::new().await;
    let app = App::default();
    let builder = Panicky::builder()
        .store_arc(dir.open().await)
        .app(app.clone());
    let (engine, clock) = match test_clock {
        Some(clock) => (builder.clock(clock.clone()).start().await.unwrap(), clock),
        None => (builder.start().await.unwrap(), TestClock::new()),
    };
    let events = engine.events();
    Setup {
        engine,
        clock,
        app,
        events,
        _dir: dir,
    }
}

/// The panic message carried by an `Execution` error.
fn panic_message(error: &Error) -> String {
    match error {
        Error::Execution { source, .. } => match source.downcast_ref::<Panicked>() {
            Some(p) => p.message().to_owned(),
            None => panic!("an Execution error whose source is not Panicked: {error:?}"),
        },
        other => panic!("expected Execution, got {other:?}"),
    }
}

/// Moves the clock, failing (instead of hanging) if the alarms due on the way never settle.
async fn advance(clock: &TestClock, by: Duration) {
    tokio::time::timeout(Duration::from_secs(30), clock.advance(by))
        .await
        .expect("the alarms never settled: an execution is firing again and again");
}

/// The `job.failed` events received so far.
fn failures(events: &mut durable_jobs::EventStream) -> Vec<Arc<JobEvent>> {
    events
        .drain()
        .into_iter()
        .filter_map(durable_jobs::Event::into_job)
        .filter(|e| matches!(e.kind, EventKind::Failed { .. }))
        .collect()
}

#[tokio::test]
async fn a_panicking_handler_returns_execution_to_its_caller() {
    let mut s = setup().await;
    let client = s.engine.client();

    // `add` whose `on_event` panics: the batch is not created.
    let err = client
        .debounce::<Collector>()
        .add("c", 666)
        .await
        .unwrap_err();
    assert_eq!(panic_message(&err), "on_event blew up");
    assert!(client
        .debounce::<Collector>()
        .status("c")
        .await
        .unwrap()
        .is_not_found());

    // `flush` whose `execute` panics: the batch is kept, events and all.
    client.debounce::<Collector>().add("c", 1).await.unwrap();
    s.app.set("flush", true);
    let err = client.debounce::<Collector>().flush("c").await.unwrap_err();
    assert_eq!(panic_message(&err), "flush blew up");
    let batch = client.debounce::<Collector>().status("c").await.unwrap();
    assert_eq!(batch.status, DebounceState::Debouncing);
    assert_eq!(batch.event_count, 1);
    assert_eq!(
        client.debounce::<Collector>().get_state("c").await.unwrap(),
        Some(vec![1])
    );

    // `send` whose `on_event` panics: no instance, nothing kept.
    s.app.set("on_event", true);
    let err = client
        .task::<Reminder>()
        .send("r", Remind::In10s)
        .await
        .unwrap_err();
    assert_eq!(panic_message(&err), "on_event blew up");
    assert!(client
        .task::<Reminder>()
        .status("r")
        .await
        .unwrap()
        .is_not_found());

    // `start` whose `execute` panics: the instance exists and keeps its schedule, as after
    // an `execute` that returned `Err`; its state change is not kept.
    s.app.set("ticker", true);
    let err = client
        .continuous::<Ticker>()
        .start("t", 0)
        .await
        .unwrap_err();
    assert_eq!(panic_message(&err), "ticker blew up");
    let ticker = client.continuous::<Ticker>().status("t").await.unwrap();
    assert_eq!(ticker.status, ContinuousState::Running);
    assert_eq!(ticker.run_count, 1);
    assert_eq!(
        ticker.next_run_at,
        Some(s.clock.now() + Duration::from_secs(3600))
    );
    assert_eq!(
        client.continuous::<Ticker>().get_state("t").await.unwrap(),
        Some(0)
    );

    // Each failure was reported, once.
    let failed = failures(&mut s.events);
    let messages: Vec<String> = failed
        .iter()
        .map(|e| match &e.kind {
            EventKind::Failed { message, .. } => message.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        messages,
        [
            "panicked: on_event blew up",
            "panicked: flush blew up",
            "panicked: on_event blew up",
            "panicked: ticker blew up"
        ]
    );

    // The engine goes on: the same calls succeed once the code stops panicking.
    s.app.set("flush", false);
    s.app.set("on_event", false);
    s.app.set("ticker", false);
    assert!(
        client
            .debounce::<Collector>()
            .flush("c")
            .await
            .unwrap()
            .flushed
    );
    client
        .task::<Reminder>()
        .send("r", Remind::In10s)
        .await
        .unwrap();
    assert!(
        !client
            .continuous::<Ticker>()
            .trigger("t")
            .await
            .unwrap()
            .terminated
    );
    assert_eq!(
        client.continuous::<Ticker>().get_state("t").await.unwrap(),
        Some(1)
    );
    drop(client);
    s.engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_scheduled_execution_is_counted_and_keeps_its_cadence() {
    let mut s = setup().await;
    let client = s.engine.client();
    client.continuous::<Ticker>().start("t", 0).await.unwrap();
    client
        .task::<Reminder>()
        .send("r", Remind::In10s)
        .await
        .unwrap();
    client.debounce::<Collector>().add("c", 7).await.unwrap();
    for handler in ["ticker", "execute", "flush"] {
        s.app.set(handler, true);
    }
    let _ = failures(&mut s.events);

    // Each due alarm runs, fails, and is reported: the task's `execute` at 10 s, the flush at
    // 5 s and, re-armed `flush_after` later, at 10 s.
    advance(&s.clock, Duration::from_secs(10)).await;
    assert_eq!(s.app.runs("execute"), 1);
    assert_eq!(s.app.runs("flush"), 2);
    let task = client.task::<Reminder>().status("r").await.unwrap();
    assert_eq!(task.execute_count, 1, "the failed execute is counted");
    assert_eq!(task.status, TaskState::Idle, "its schedule was consumed");
    assert_eq!(
        client.task::<Reminder>().get_state("r").await.unwrap(),
        Some(1)
    );
    let batch = client.debounce::<Collector>().status("c").await.unwrap();
    assert_eq!(batch.status, DebounceState::Debouncing, "the batch is kept");
    assert_eq!(
        batch.will_flush_at,
        Some(s.clock.now() + Duration::from_secs(5))
    );
    assert_eq!(failures(&mut s.events).len(), 3);

    // The continuous run keeps its cadence: one run per hour, each failure reported.
    advance(&s.clock, Duration::from_secs(3600 - 10)).await;
    assert_eq!(s.app.runs("ticker"), 2);
    let ticker = client.continuous::<Ticker>().status("t").await.unwrap();
    assert_eq!(ticker.run_count, 2);
    assert_eq!(
        ticker.next_run_at,
        Some(s.clock.now() + Duration::from_secs(3600))
    );
    assert_eq!(
        client.continuous::<Ticker>().get_state("t").await.unwrap(),
        Some(1)
    );
    // The kept batch failed again every 5 s meanwhile: no more, no less.
    assert_eq!(s.app.runs("flush"), 2 + (3600 - 10) / 5);
    let failed = failures(&mut s.events);
    assert_eq!(failed.len(), (3600 - 10) / 5 + 1);

    // Nothing fired in a loop: an idle hour later, only the cadences ran.
    s.app.set("flush", false);
    advance(&s.clock, Duration::from_secs(3600)).await;
    assert_eq!(s.app.runs("execute"), 1);
    assert_eq!(s.app.runs("ticker"), 3);
    drop(client);
    s.engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_scheduled_execution_is_retried_by_its_policy() {
    let s = setup().await;
    let client = s.engine.client();
    client.continuous::<Retried>().start("t", 0).await.unwrap();
    s.app.set("retried", true);
    advance(&s.clock, Duration::from_secs(3600)).await;
    let status = client.continuous::<Retried>().status("t").await.unwrap();
    assert_eq!(status.status, ContinuousState::Retrying);
    assert_eq!(status.attempt, 2);
    assert_eq!(
        status.next_run_at,
        Some(s.clock.now() + Duration::from_secs(60))
    );

    // Two more panics exhaust the policy: the hook runs (and may panic too), the instance goes.
    s.app.set("retried_exhausted", true);
    advance(&s.clock, Duration::from_secs(120)).await;
    assert_eq!(s.app.runs("retried"), 3);
    assert_eq!(s.app.runs("retried_exhausted"), 1);
    assert!(client
        .continuous::<Retried>()
        .status("t")
        .await
        .unwrap()
        .is_not_found());
    drop(client);
    s.engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_step_fails_its_run_instead_of_leaving_it_leased() {
    // On the system clock: the retry below waits a real millisecond.
    let s = setup_on(None).await;
    let jobs = s.engine.client().step_job::<TwoSteps>();
    let wait = Duration::from_secs(30);

    // A panic inside a step: the step fails like a closure that returned `Err`.
    s.app.set("second", true);
    let err = jobs
        .trigger_and_wait(1, TriggerOptions::new(), wait)
        .await
        .unwrap_err();
    match &err {
        Error::Execution { source, .. } => {
            assert!(source.to_string().contains("second blew up"), "{err}")
        }
        other => panic!("expected Execution, got {other:?}"),
    }
    let runs = jobs.get_runs(Default::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].lease_owner, None);
    assert!(runs[0]
        .error
        .as_deref()
        .unwrap()
        .contains("panicked: second blew up"));

    // A panic in the body, outside any step: the run fails the same way.
    s.app.set("second", false);
    s.app.set("after_steps", true);
    let err = jobs
        .trigger_and_wait(2, TriggerOptions::new(), wait)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("after_steps blew up"), "{err}");

    // With a retry policy the panicking attempt is retried, and the retry completes.
    s.app.set("retried_body", true);
    let done = s
        .engine
        .client()
        .step_job::<RetriedSteps>()
        .trigger_and_wait(5, TriggerOptions::new(), wait)
        .await
        .unwrap();
    assert_eq!(done.output, 5);
    assert_eq!(s.app.runs("retried_body"), 1);

    // The worker goes on.
    s.app.set("after_steps", false);
    let done = jobs
        .trigger_and_wait(3, TriggerOptions::new(), wait)
        .await
        .unwrap();
    assert_eq!(done.output, 8);
    s.engine.shutdown().await.unwrap();
}
