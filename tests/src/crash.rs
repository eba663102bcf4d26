//! Jobs of the crash tests (`tests/crash.rs`). A child process (`src/bin/crash_child.rs`) runs
//! them on a database file and reports on its standard output what it did and what the engine
//! acknowledged; the test kills it with `SIGKILL` at a chosen point, then runs the same jobs on
//! the same file in its own process and checks that nothing acknowledged was lost.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;
use serde::{Deserialize, Serialize};

use crate::ProbeError;

/// What the crash jobs do and report.
#[derive(Default)]
pub struct Witness {
    /// The step that never finishes (the child's run is killed inside it).
    hang_at: Option<&'static str>,
    /// Report each step entered on standard output (the child).
    report: bool,
    entered: Mutex<HashMap<String, u32>>,
    changed: tokio::sync::Notify,
}

impl Witness {
    /// The child's: reports every step it enters, and hangs in `hang_at`.
    pub fn reporting(hang_at: Option<&'static str>) -> Arc<Witness> {
        Arc::new(Witness {
            hang_at,
            report: true,
            ..Witness::default()
        })
    }

    /// How many times this process entered `step`.
    pub fn entered(&self, step: &str) -> u32 {
        self.entered.lock().unwrap().get(step).copied().unwrap_or(0)
    }

    /// Waits until this process entered `step` `n` times; false after `patience`.
    pub async fn until_entered(&self, step: &str, n: u32, patience: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.entered(step) >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(patience, wait).await.is_ok()
    }

    async fn step(&self, name: &str) -> Result<String, durable_jobs::BoxError> {
        *self
            .entered
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
        self.changed.notify_waiters();
        if self.report {
            say(&format!("entered {name}"));
        }
        if self.hang_at == Some(name) {
            std::future::pending::<()>().await;
        }
        Ok(format!("{name}-done"))
    }
}

/// Writes one line to standard output at once, so the parent sees it before any kill.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the parent is gone; nothing left to tell.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// What a ledger run is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerInput {
    /// A label carried to the output.
    pub label: String,
}

/// The steps of a ledger run, in order.
pub const LEDGER_STEPS: [&str; 3] = ["one", "two", "three"];

/// Three steps in sequence; returns the label and each step's result.
#[durable_jobs::step_job(name = "crash-ledger")]
pub async fn ledger(
    step: &mut StepContext,
    input: LedgerInput,
    app: &Arc<Witness>,
) -> Result<Vec<String>, StepError> {
    let mut out = vec![input.label];
    for name in LEDGER_STEPS {
        out.push(step.run(name, |_| app.step(name)).await?);
    }
    Ok(out)
}

/// Keeps every number added, in the order added; flushes only after an hour.
pub struct Tally;

#[durable_jobs::debounce(flush_after = "1h")]
impl DebounceJob<Arc<Witness>> for Tally {
    type Event = u64;
    type State = Vec<u64>;
    type Error = ProbeError;

    fn on_event(&self, state: Option<Vec<u64>>, n: u64, _ctx: &EventContext) -> Vec<u64> {
        let mut numbers = state.unwrap_or_default();
        numbers.push(n);
        numbers
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<Vec<u64>>,
        _app: &Arc<Witness>,
    ) -> Result<(), ProbeError> {
        Ok(())
    }
}

/// Callers adding to `Tally` at once in the child, and the instances they share.
pub const TALLY_CALLERS: u64 = 8;
/// Instances of `Tally` in the debounce scenario; caller `c` adds to `tally-{c % 4}`.
pub const TALLY_INSTANCES: u64 = 4;

/// The instance the number `n` goes to (caller `n % TALLY_CALLERS` added it).
pub fn tally_instance(n: u64) -> String {
    format!("tally-{}", n % TALLY_CALLERS % TALLY_INSTANCES)
}

/// Runs every 50 ms (the first run 50 ms after `start`); each run enters `tick` and counts.
#[durable_jobs::continuous(every = "50ms", start_immediately = false, name = "crash-ticker")]
pub async fn crash_ticker(
    ctx: &mut ContinuousContext<u64>,
    app: &Arc<Witness>,
) -> Result<(), ProbeError> {
    app.step("tick")
        .await
        .map_err(|e| ProbeError(e.to_string()))?;
    *ctx.state_mut() += 1;
    Ok(())
}

/// Fails its first attempt, then retries after a second; the retry enters `retry`.
#[durable_jobs::continuous(
    every = "1h",
    name = "crash-retrier",
    retry(max_attempts = 3, backoff = constant("1s"), jitter = false)
)]
pub async fn crash_retrier(
    ctx: &mut ContinuousContext<u64>,
    app: &Arc<Witness>,
) -> Result<(), ProbeError> {
    if ctx.attempt() == 1 {
        return Err(ProbeError("the first attempt fails".into()));
    }
    app.step("retry")
        .await
        .map_err(|e| ProbeError(e.to_string()))?;
    *ctx.state_mut() += 1;
    Ok(())
}

/// Flushed 50 ms after its first event; the flush enters `flush-<events>`.
pub struct CrashBatch;

#[durable_jobs::debounce(flush_after = "50ms", name = "crash-batch")]
impl DebounceJob<Arc<Witness>> for CrashBatch {
    type Event = u64;
    type State = Vec<u64>;
    type Error = ProbeError;

    fn on_event(&self, state: Option<Vec<u64>>, n: u64, _ctx: &EventContext) -> Vec<u64> {
        let mut numbers = state.unwrap_or_default();
        numbers.push(n);
        numbers
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<u64>>,
        app: &Arc<Witness>,
    ) -> Result<(), ProbeError> {
        let name = format!("flush-{}", ctx.state().len());
        app.step(&name)
            .await
            .map_err(|e| ProbeError(e.to_string()))?;
        Ok(())
    }
}

/// Each event schedules `execute` 50 ms later; `execute` enters `task-execute` and counts.
pub struct CrashTask;

#[durable_jobs::task(name = "crash-task")]
impl TaskJob<Arc<Witness>> for CrashTask {
    type State = u64;
    type Event = ();
    type Error = ProbeError;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<u64>,
        _event: (),
        _app: &Arc<Witness>,
    ) -> Result<(), ProbeError> {
        ctx.set_state(ctx.state().copied().unwrap_or(0));
        ctx.schedule_in(Duration::from_millis(50));
        Ok(())
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<u64>,
        app: &Arc<Witness>,
    ) -> Result<(), ProbeError> {
        app.step("task-execute")
            .await
            .map_err(|e| ProbeError(e.to_string()))?;
        ctx.update_state(|n| *n += 1);
        Ok(())
    }
}

durable_jobs::registry! {
    /// The jobs of the crash tests.
    pub CrashJobs<Arc<Witness>> { Ledger, Tally, CrashTicker, CrashRetrier, CrashBatch, CrashTask }
}
