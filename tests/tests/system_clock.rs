//! Alarms on the system clock: every other alarm test drives a `TestClock`, so these check the
//! production path, where the scheduler sleeps in real time until the earliest alarm. Short
//! intervals; each test waits for the committed events (a notification), bounded, never a
//! sleep followed by an assertion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::prelude::*;
use durable_jobs::{Engine, EventKind, EventStream, JobEvent};

/// Bounds a regression (an alarm that never fires); a working engine needs milliseconds.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs every 100 ms and counts.
#[durable_jobs::continuous(every = "100ms", start_immediately = false, name = "sys-ticker")]
async fn ticker(ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    Ok(())
}

/// Flushed 100 ms after its first event.
struct Batcher;

#[durable_jobs::debounce(flush_after = "100ms", name = "sys-batch")]
impl DebounceJob for Batcher {
    type Event = u32;
    type State = Vec<u32>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<u32>>, n: u32, _ctx: &EventContext) -> Vec<u32> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        all
    }

    async fn execute(&self, _ctx: &mut FlushContext<Vec<u32>>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// Each event schedules `execute` 100 ms later.
struct Scheduler;

#[durable_jobs::task(name = "sys-task")]
impl TaskJob for Scheduler {
    type State = u32;
    type Event = ();
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, _event: ()) -> Result<(), std::io::Error> {
        ctx.set_state(0);
        ctx.schedule_in(Duration::from_millis(100));
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<u32>) -> Result<(), std::io::Error> {
        ctx.update_state(|n| *n += 1);
        Ok(())
    }
}

durable_jobs::registry! {
    /// The jobs of these tests.
    SysJobs { Ticker, Batcher, Scheduler }
}

async fn engine() -> (Engine<SysJobs>, EventStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::<SysJobs>::builder()
        .sqlite(dir.path().join("jobs.db"))
        .start()
        .await
        .unwrap();
    let events = engine.events();
    (engine, events, dir)
}

/// The next committed event matching `want`, within [`PATIENCE`].
async fn next_event(events: &mut EventStream, want: impl Fn(&JobEvent) -> bool) -> Arc<JobEvent> {
    let wait = async {
        loop {
            let event = events.next().await.expect("the event stream stays open");
            match event.into_job() {
                Some(event) if want(&event) => return event,
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the alarm fired on the system clock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_schedule_fires_on_the_system_clock() {
    let (engine, mut events, _dir) = engine().await;
    let tickers = engine.client().continuous::<Ticker>();
    let started = Instant::now();
    tickers.start("t", 0).await.unwrap();
    for run in 1..=2 {
        let event = next_event(&mut events, |e| {
            matches!(e.kind, EventKind::Executed { .. }) && e.instance.id() == "t"
        })
        .await;
        let EventKind::Executed { run_count, .. } = event.kind else {
            unreachable!()
        };
        assert_eq!(run_count, run);
    }
    // Two runs 100 ms apart, the first 100 ms after the start: not before 200 ms of real time.
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(tickers.get_state("t").await.unwrap().unwrap() >= 2);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debounce_window_closes_on_the_system_clock() {
    let (engine, mut events, _dir) = engine().await;
    let batches = engine.client().debounce::<Batcher>();
    let started = Instant::now();
    batches.add("b", 1).await.unwrap();
    batches.add("b", 2).await.unwrap();
    let event = next_event(&mut events, |e| {
        matches!(e.kind, EventKind::DebounceFlushed { .. })
    })
    .await;
    let EventKind::DebounceFlushed {
        event_count,
        reason,
        ..
    } = event.kind
    else {
        unreachable!()
    };
    assert_eq!((event_count, reason), (2, FlushReason::FlushAfter));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(batches.status("b").await.unwrap().is_not_found());
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_schedule_fires_on_the_system_clock() {
    let (engine, mut events, _dir) = engine().await;
    let tasks = engine.client().task::<Scheduler>();
    let started = Instant::now();
    let sent = tasks.send("k", ()).await.unwrap();
    let due = sent.scheduled_at.expect("the event scheduled an execution");
    // The send's own `on_event` is reported as executed too; the alarm's execution comes at
    // the scheduled time.
    next_event(&mut events, |e| {
        matches!(e.kind, EventKind::Executed { .. }) && e.instance.id() == "k" && e.timestamp >= due
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    let status = tasks.status("k").await.unwrap();
    assert_eq!((status.execute_count, status.scheduled_at), (1, None));
    assert_eq!(tasks.get_state("k").await.unwrap(), Some(1));
    engine.shutdown().await.unwrap();
}
