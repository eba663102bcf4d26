//! What the engine records through the `metrics` facade, read back from `metrics-util`'s
//! `DebuggingRecorder`: one recorder per test, set as the default of the test's thread, where
//! the current-thread runtime runs the engine's scheduler, executions and step worker. (The
//! SQLite writer's metrics come from its own thread; the Prometheus example's test scrapes
//! them.)

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::metrics::{
    ALARMS_DUE, EXECUTIONS_TOTAL, EXECUTION_DURATION_SECONDS, FAILURES_TOTAL, LATENESS_SECONDS,
    RETRIES_EXHAUSTED_TOTAL, RETRIES_TOTAL, STEP_RUNS, STEP_RUNS_FINISHED_TOTAL,
};
use durable_jobs::prelude::*;
use durable_jobs::steps::{StepError, TriggerOptions};
use durable_jobs::testing::TestClock;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::sync::{mpsc, Semaphore};

/// What the jobs share: a gate the `gated` job waits at, and where it says it arrived.
pub struct App {
    gate: Arc<Semaphore>,
    arrived: mpsc::UnboundedSender<()>,
}

/// The test's side of the gate.
struct Gate {
    permits: Arc<Semaphore>,
    arrivals: mpsc::UnboundedReceiver<()>,
}

impl App {
    fn new() -> (App, Gate) {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(0));
        let app = App {
            gate: permits.clone(),
            arrived,
        };
        (app, Gate { permits, arrivals })
    }
}

/// The error of the failing jobs.
#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct Refused;

/// Every minute.
#[durable_jobs::continuous(every = "1m")]
async fn ticker(_ctx: &mut ContinuousContext<u32>, _app: &App) -> Result<(), Refused> {
    Ok(())
}

/// Always fails: three attempts ten seconds apart, then the policy gives up.
#[durable_jobs::continuous(
    every = "1h",
    retry(max_attempts = 3, backoff = constant("10s"), jitter = false)
)]
async fn flaky(_ctx: &mut ContinuousContext<u32>, _app: &App) -> Result<(), Refused> {
    Err(Refused)
}

/// Every minute, first a minute after its start.
#[durable_jobs::continuous(every = "1m", start_immediately = false)]
async fn later(_ctx: &mut ContinuousContext<u32>, _app: &App) -> Result<(), Refused> {
    Ok(())
}

/// Every minute, first a minute after its start; each run waits at the app's gate.
#[durable_jobs::continuous(every = "1m", start_immediately = false)]
async fn gated(_ctx: &mut ContinuousContext<u32>, app: &App) -> Result<(), Refused> {
    let _ = app.arrived.send(());
    app.gate.acquire().await.map_err(|_| Refused)?.forget();
    Ok(())
}

/// Flushes at two events.
pub struct Batcher;

#[durable_jobs::debounce(flush_after = "1m", max_events = 2)]
impl DebounceJob<App> for Batcher {
    type Event = u32;
    type State = Vec<u32>;
    type Error = Refused;

    fn on_event(&self, batch: Option<Vec<u32>>, event: u32, _ctx: &EventContext) -> Vec<u32> {
        let mut batch = batch.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(&self, _ctx: &mut FlushContext<Vec<u32>>, _app: &App) -> Result<(), Refused> {
        Ok(())
    }
}

/// Keeps a total; fails on a negative amount.
pub struct Totals;

#[durable_jobs::task]
impl TaskJob<App> for Totals {
    type State = i64;
    type Event = i64;
    type Error = Refused;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<i64>,
        amount: i64,
        _app: &App,
    ) -> Result<(), Refused> {
        if amount < 0 {
            return Err(Refused);
        }
        let total = ctx.state().copied().unwrap_or(0) + amount;
        ctx.set_state(total);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<i64>, _app: &App) -> Result<(), Refused> {
        Ok(())
    }
}

/// Doubles its input in one step; an input of zero fails the step.
#[durable_jobs::step_job(name = "doubler")]
async fn doubler(step: &mut StepContext, input: u32, _app: &App) -> Result<u32, StepError> {
    let doubled = step
        .run("double", |_| async move {
            if input == 0 {
                return Err(Refused.into());
            }
            Ok(input * 2)
        })
        .await?;
    Ok(doubled)
}

durable_jobs::registry! {
    /// The jobs whose counters are checked.
    pub Counted<App> { Ticker, Flaky, Batcher, Totals, Doubler }
}

durable_jobs::registry! {
    /// The jobs whose lateness is checked.
    pub Timed<App> { Ticker, Later, Doubler }
}

durable_jobs::registry! {
    /// The job whose due alarms queue up.
    pub Queued<App> { Gated }
}

/// One snapshot of a recorder: the values recorded since the last one.
struct Recorded(Vec<(metrics::Key, DebugValue)>);

impl Recorded {
    fn take(recorder: &DebuggingRecorder) -> Recorded {
        Recorded(
            recorder
                .snapshotter()
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key.key().clone(), value))
                .collect(),
        )
    }

    /// The value of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0
            .iter()
            .find(|(key, _)| {
                let mut theirs: Vec<(&str, &str)> =
                    key.labels().map(|l| (l.key(), l.value())).collect();
                let mut ours = labels.to_vec();
                theirs.sort_unstable();
                ours.sort_unstable();
                key.name() == name && theirs == ours
            })
            .map(|(_, value)| value)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name} {labels:?} is not a gauge: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(name, labels) {
            Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
            other => panic!("{name} {labels:?} is not a histogram: {other:?}"),
        }
    }
}

fn job<'a>(job: &'a str, kind: &'a str) -> [(&'a str, &'a str); 2] {
    [("job", job), ("kind", kind)]
}

#[tokio::test]
async fn executions_failures_retries_and_durations_are_counted_per_job_and_kind() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let clock = TestClock::new();
    let (app, _gate) = App::new();
    let engine = Counted::builder()
        .in_memory()
        .clock(clock.clone())
        .app(app)
        .start()
        .await
        .unwrap();
    let client = engine.client();

    // Two tickers run at their start and at one and two minutes: six runs.
    for id in ["a", "b"] {
        client.continuous::<Ticker>().start(id, 0).await.unwrap();
    }
    // The flaky job fails at its start, then at 10 s and 20 s, when the policy gives up.
    let _ = client.continuous::<Flaky>().start("x", 0).await;
    clock.advance(Duration::from_secs(120)).await;
    // Two events flush a batch inside the second `add`: one execution.
    client.debounce::<Batcher>().add("c", 1).await.unwrap();
    client.debounce::<Batcher>().add("c", 2).await.unwrap();
    // Each task event is an invocation; the negative one fails.
    client.task::<Totals>().send("t", 5).await.unwrap();
    client.task::<Totals>().send("t", 7).await.unwrap();
    client.task::<Totals>().send("t", -1).await.unwrap_err();
    // One step run completes, one fails.
    let wait = Duration::from_secs(30);
    let steps = client.step_job::<Doubler>();
    let done = steps
        .trigger_and_wait(21, TriggerOptions::default(), wait)
        .await
        .unwrap();
    assert_eq!(done.output, 42);
    steps
        .trigger_and_wait(0, TriggerOptions::default(), wait)
        .await
        .unwrap_err();
    engine.record_step_runs().await.unwrap();

    let recorded = Recorded::take(&recorder);
    let ticker = job("ticker", "continuous");
    assert_eq!(recorded.counter(EXECUTIONS_TOTAL, &ticker), 6);
    assert_eq!(recorded.counter(FAILURES_TOTAL, &ticker), 0);
    assert_eq!(recorded.counter(RETRIES_TOTAL, &ticker), 0);
    let durations = recorded.histogram(EXECUTION_DURATION_SECONDS, &ticker);
    assert_eq!(durations.len(), 6);
    assert!(
        durations.iter().all(|s| (0.0..5.0).contains(s)),
        "{durations:?}"
    );

    let flaky = job("flaky", "continuous");
    assert_eq!(recorded.counter(EXECUTIONS_TOTAL, &flaky), 3);
    assert_eq!(recorded.counter(FAILURES_TOTAL, &flaky), 3);
    assert_eq!(recorded.counter(RETRIES_TOTAL, &flaky), 2);
    assert_eq!(recorded.counter(RETRIES_EXHAUSTED_TOTAL, &flaky), 1);

    let batcher = job("batcher", "debounce");
    assert_eq!(recorded.counter(EXECUTIONS_TOTAL, &batcher), 1);
    assert_eq!(recorded.counter(FAILURES_TOTAL, &batcher), 0);

    let totals = job("totals", "task");
    assert_eq!(recorded.counter(EXECUTIONS_TOTAL, &totals), 3);
    assert_eq!(recorded.counter(FAILURES_TOTAL, &totals), 1);

    let doubler = job("doubler", "step");
    assert_eq!(recorded.counter(EXECUTIONS_TOTAL, &doubler), 2);
    assert_eq!(recorded.counter(FAILURES_TOTAL, &doubler), 1);
    assert_eq!(
        recorded
            .histogram(EXECUTION_DURATION_SECONDS, &doubler)
            .len(),
        2
    );
    let finished = |status| {
        let labels = [("job", "doubler"), ("kind", "step"), ("status", status)];
        recorded.counter(STEP_RUNS_FINISHED_TOTAL, &labels)
    };
    assert_eq!(
        (
            finished("completed"),
            finished("failed"),
            finished("cancelled")
        ),
        (1, 1, 0)
    );
    let stored = |status| {
        let labels = [("job", "doubler"), ("kind", "step"), ("status", status)];
        recorded.gauge(STEP_RUNS, &labels)
    };
    assert_eq!(
        ["pending", "leased", "completed", "failed", "cancelled"].map(stored),
        [0.0, 0.0, 1.0, 1.0, 0.0]
    );

    drop(client);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn lateness_is_how_long_after_its_due_time_an_alarm_or_a_run_started() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let clock = TestClock::new();
    let (app, _gate) = App::new();
    let engine = Timed::builder()
        .in_memory()
        .clock(clock.clone())
        .app(app)
        .start()
        .await
        .unwrap();
    let client = engine.client();

    // Stepped through, the ticker's alarms start when they are due.
    client
        .continuous::<Ticker>()
        .start("on-time", 0)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(120)).await;
    // Due a minute after its start, `later` is reached only by a jump of five minutes (a
    // suspended laptop): its alarm starts four minutes late.
    client.continuous::<Later>().start("late", 0).await.unwrap();
    clock.jump(Duration::from_secs(300)).await;
    // A step run is claimed the moment it is triggered.
    client
        .step_job::<Doubler>()
        .trigger_and_wait(1, TriggerOptions::default(), Duration::from_secs(30))
        .await
        .unwrap();

    let recorded = Recorded::take(&recorder);
    // The ticker's start runs inside `start`, not from an alarm; the jump fires its alarm once,
    // late too.
    let ticker = recorded.histogram(LATENESS_SECONDS, &job("ticker", "continuous"));
    assert_eq!(ticker, [0.0, 0.0, 240.0]);
    assert_eq!(
        recorded.histogram(LATENESS_SECONDS, &job("later", "continuous")),
        [240.0]
    );
    assert_eq!(
        recorded.histogram(LATENESS_SECONDS, &job("doubler", "step")),
        [0.0]
    );

    drop(client);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn due_alarms_waiting_for_a_slot_are_a_gauge() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let clock = TestClock::new();
    let (app, mut gate) = App::new();
    let engine = Queued::builder()
        .in_memory()
        .clock(clock.clone())
        .app(app)
        .max_concurrent_executions(1)
        .start()
        .await
        .unwrap();
    let client = engine.client();
    for id in ["a", "b", "c"] {
        client.continuous::<Gated>().start(id, 0).await.unwrap();
    }

    // The three alarms fall due together; one slot runs the first, which waits at the gate.
    let jumping = tokio::spawn({
        let clock = clock.clone();
        async move { clock.jump(Duration::from_secs(60)).await }
    });
    gate.arrivals.recv().await.unwrap();
    let recorded = Recorded::take(&recorder);
    assert_eq!(recorded.gauge(ALARMS_DUE, &job("gated", "continuous")), 2.0);

    gate.permits.add_permits(3);
    jumping.await.unwrap();
    drop(client);
    engine.shutdown().await.unwrap();
}
