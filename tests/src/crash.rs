//! Jobs of the crash tests (`tests/crash.rs`). A child process (`src/bin/crash_child.rs`) runs
//! them on a database file and reports on its standard output what it did and what the engine
//! acknowledged; the test kills it with `SIGKILL` at a chosen point, then runs the same jobs on
//! the same file in its own process and checks that nothing acknowledged was lost.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

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

    async fn step(&self, name: &'static str) -> Result<String, durable_jobs::BoxError> {
        *self
            .entered
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
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

durable_jobs::registry! {
    /// The jobs of the crash tests.
    pub CrashJobs<Arc<Witness>> { Ledger, Tally }
}
