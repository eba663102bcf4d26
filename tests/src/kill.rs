//! The kill harness's jobs and the protocol between its child and its parent.
//!
//! A child process (`src/bin/kill_child.rs`) runs a mixed load of all four job kinds on one
//! database file and prints one line per event on its standard output: what it is about to ask
//! (`issue ...`), what the engine answered (`ack ...`, printed only after the call returned), and
//! what the jobs' own code did (`step-enter ...`, `flush ...`, `task-exec ...`, `cont-exec ...`).
//! The parent (`tests/kill.rs`) kills it with `SIGKILL` at random moments, starts it again on the
//! same file, and keeps the ledger ([`ledger`]) that checks every acknowledgement against what
//! the database holds after a final drain.
//!
//! The jobs fail on purpose, deterministically from their input, so that retries and failures
//! are part of the load: a step run with `fail = 1` fails its second step once and is retried;
//! with `fail = 2` it fails every attempt and ends `failed`; a debounce flush holding a multiple
//! of 7 fails its first attempt; every third continuous run fails its first attempt; a task event
//! with `fail` is refused by `on_event`.

pub mod harness;
pub mod ledger;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{Disposition, StepError, TriggerOptions};
use durable_jobs::{Client, Error, FlushOutcome};
use serde::{Deserialize, Serialize};

use crate::ProbeError;

/// Where the jobs report what their code did: the child's standard output, or a list kept in
/// memory (the parent's drain engine).
///
/// With a marker folder (processes sharing one file, `tests/multiprocess.rs`), the jobs also
/// check, across processes, what the lines alone could only suggest: each execution creates a
/// marker for its instance (or run) with `O_EXCL` when it starts and removes it when it ends, so
/// a second execution of the same instance while the first runs finds the marker of a live
/// process and says `unexpected overlap ...`; and a step whose output was persisted leaves a
/// marker that a later entry of the same step trips.
#[derive(Default)]
pub struct Reporter {
    memory: Option<Mutex<Vec<String>>>,
    markers: Option<PathBuf>,
}

impl Reporter {
    /// Reports on standard output, one flushed line each.
    pub fn stdout() -> Arc<Reporter> {
        Arc::new(Reporter::default())
    }

    /// Reports on standard output, and keeps execution markers in `dir` (see the type's docs).
    pub fn stdout_with_markers(dir: impl Into<PathBuf>) -> Arc<Reporter> {
        Arc::new(Reporter {
            memory: None,
            markers: Some(dir.into()),
        })
    }

    /// Keeps the lines in memory; read them with [`take`](Self::take).
    pub fn memory() -> Arc<Reporter> {
        Arc::new(Reporter {
            memory: Some(Mutex::default()),
            markers: None,
        })
    }

    /// Marks the start of an execution of `what` (an instance or a run); the marker goes when
    /// the guard drops. A marker left by a process that is gone (killed mid-execution) is taken
    /// over; one of a live process is an overlap, reported as `unexpected`.
    pub fn enter(&self, what: &str) -> Option<Marker> {
        let path = self.markers.as_ref()?.join(format!("running-{what}"));
        let me = std::process::id();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{me}");
                    return Some(Marker { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    match holder.trim().parse::<u32>() {
                        Ok(pid) if process_alive(pid) => {
                            self.say(&format!(
                                "unexpected overlap {what} running in {pid}, entered by {me}"
                            ));
                            return None;
                        }
                        // Gone with its process, or not written yet by one that was killed
                        // between creating and writing it.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    self.say(&format!("unexpected marker {what} {e}"));
                    return None;
                }
            }
        }
    }

    /// Records that step `step` of `op` persisted its output.
    pub fn step_done(&self, op: &str, step: &str) {
        if let Some(dir) = &self.markers {
            let _ = std::fs::write(dir.join(format!("done-{op}-{step}")), b"");
        }
    }

    /// Reports, as `unexpected`, an entry into a step whose output was persisted.
    pub fn check_step_not_done(&self, op: &str, step: &str) {
        if let Some(dir) = &self.markers {
            if dir.join(format!("done-{op}-{step}")).exists() {
                self.say(&format!("unexpected rerun {op} {step} after it completed"));
            }
        }
    }

    /// Reports one line. With markers (processes at work at the same time), the line is
    /// stamped with the time it is printed, `@<nanoseconds since the epoch> `, which the ledger
    /// orders the lines of all the processes by.
    pub fn say(&self, line: &str) {
        match (&self.memory, &self.markers) {
            (Some(lines), _) => lines.lock().unwrap().push(line.to_owned()),
            (None, Some(_)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                say(&format!("@{now} {line}"));
            }
            (None, None) => say(line),
        }
    }

    /// The lines kept so far (memory reporters only).
    pub fn take(&self) -> Vec<String> {
        self.memory
            .as_ref()
            .map(|m| std::mem::take(&mut *m.lock().unwrap()))
            .unwrap_or_default()
    }
}

/// An execution in progress, as [`Reporter::enter`] marked it.
pub struct Marker {
    path: PathBuf,
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` runs (a zombie, killed and not reaped yet, does not).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Writes one line to standard output at once, so the parent has it before any kill.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the parent is gone (a test run stopped half-way): nothing is left to
    // tell or to do, and a child left running would load the machine forever.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// A small deterministic generator (SplitMix64): the harness's choices are reproducible from
/// the seed it prints.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A seed from the time and the process id, for runs that do not fix one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(nanos ^ u64::from(std::process::id())).next_u64()
}

// ---------------------------------------------------------------------------------------------
// Step job

/// The steps of a ledger run, in order.
pub const STEPS: [&str; 3] = ["one", "two", "three"];

/// What a ledger run is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInput {
    /// The operation that triggered it (also its idempotency key).
    pub op: String,
    /// 0: succeed; 1: step `two` fails on the first attempt; 2: step `two` always fails.
    pub fail: u8,
}

/// Three steps; each reports when its body is entered and, after `step.run` returned (so its
/// output is persisted), that it is done.
#[durable_jobs::step_job(
    name = "kill-ledger",
    retry(max_attempts = 3, backoff = constant("20ms"), jitter = false)
)]
pub async fn kill_ledger(
    step: &mut StepContext,
    input: RunInput,
    app: &Arc<Reporter>,
) -> Result<Vec<String>, StepError> {
    let attempt = step.attempt();
    let _running = app.enter(&format!("run-{}", input.op));
    let mut out = Vec::new();
    for name in STEPS {
        let op = input.op.clone();
        let fails = name == "two" && (input.fail == 2 || (input.fail == 1 && attempt == 1));
        let app2 = app.clone();
        let result = step
            .run(name, move |_| async move {
                app2.check_step_not_done(&op, name);
                app2.say(&format!("step-enter {op} {name} {attempt}"));
                if fails {
                    app2.say(&format!("step-fail {op} {name} {attempt}"));
                    return Err(format!("{name} refused on attempt {attempt}").into());
                }
                Ok::<_, durable_jobs::BoxError>(name.to_owned())
            })
            .await?;
        app.step_done(&input.op, name);
        app.say(&format!("step-done {} {name}", input.op));
        out.push(result);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Debounce job

/// The debounce instances of the load.
pub const BATCHES: u64 = 4;

/// The batch instance a number goes to.
pub fn batch_of(n: u64) -> String {
    format!("b{}", n % BATCHES)
}

/// Folds numbers; flushed 150 ms after its first event or at 5 events; a batch holding a
/// multiple of 7 fails its first attempt and is retried 20 ms later.
pub struct KillBatch;

#[durable_jobs::debounce(
    flush_after = "150ms",
    max_events = 5,
    retry(max_attempts = 3, backoff = constant("20ms"), jitter = false)
)]
impl DebounceJob<Arc<Reporter>> for KillBatch {
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
        app: &Arc<Reporter>,
    ) -> Result<(), ProbeError> {
        let _running = app.enter(&format!("batch-{}", ctx.instance().id()));
        let fails = ctx.attempt() == 1 && ctx.state().iter().any(|n| n % 7 == 0);
        let list: Vec<String> = ctx.state().iter().map(u64::to_string).collect();
        app.say(&format!(
            "flush {} {} {} {}",
            ctx.instance().id(),
            ctx.attempt(),
            if fails { "err" } else { "ok" },
            list.join(",")
        ));
        if fails {
            return Err(ProbeError("a multiple of 7".into()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Task job

/// The task instances of the load.
pub const TASKS: u64 = 4;

/// The state of a ledger task: every operation it accepted, and its executions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskLedger {
    /// Accepted operations, in order.
    pub ops: Vec<String>,
    /// Successful executions seen by the job itself.
    pub executed: u64,
}

/// One operation sent to a ledger task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOp {
    /// Its name (also its event id).
    pub op: String,
    /// Schedule `execute` this many milliseconds later (0: nothing).
    pub schedule_ms: u64,
    /// Refuse it: `on_event` records it, then fails.
    pub fail: bool,
}

/// Accepts operations; `execute` counts itself.
pub struct KillTask;

#[durable_jobs::task]
impl TaskJob<Arc<Reporter>> for KillTask {
    type State = TaskLedger;
    type Event = TaskOp;
    type Error = ProbeError;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<TaskLedger>,
        event: TaskOp,
        app: &Arc<Reporter>,
    ) -> Result<(), ProbeError> {
        let _running = app.enter(&format!("task-{}", ctx.id()));
        let mut ledger = ctx.state().cloned().unwrap_or_default();
        ledger.ops.push(event.op.clone());
        ctx.set_state(ledger);
        if event.fail {
            return Err(ProbeError(format!("{} refused", event.op)));
        }
        if event.schedule_ms > 0 {
            ctx.schedule_in(Duration::from_millis(event.schedule_ms));
        }
        Ok(())
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<TaskLedger>,
        app: &Arc<Reporter>,
    ) -> Result<(), ProbeError> {
        let _running = app.enter(&format!("task-{}", ctx.id()));
        app.say(&format!("task-exec {} {}", ctx.id(), ctx.execute_count()));
        ctx.update_state(|l| l.executed += 1);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Continuous job

/// The continuous instances of the load.
pub const TICKERS: u64 = 3;

/// The state of a ticker: its successful runs, counted by the job itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ticks {
    /// Successful runs.
    pub runs: u64,
}

/// Every 100 ms; every third run fails its first attempt and is retried 10 ms later.
#[durable_jobs::continuous(
    every = "100ms",
    name = "kill-ticker",
    retry(max_attempts = 2, backoff = constant("10ms"), jitter = false)
)]
pub async fn kill_ticker(
    ctx: &mut ContinuousContext<Ticks>,
    app: &Arc<Reporter>,
) -> Result<(), ProbeError> {
    let _running = app.enter(&format!("ticker-{}", ctx.id()));
    let fails = ctx.attempt() == 1 && ctx.run_count().is_multiple_of(3);
    app.say(&format!(
        "cont-exec {} {} {} {}",
        ctx.id(),
        ctx.run_count(),
        ctx.attempt(),
        if fails { "err" } else { "ok" }
    ));
    if fails {
        return Err(ProbeError("every third run fails once".into()));
    }
    ctx.update_state(|t| t.runs += 1);
    Ok(())
}

durable_jobs::registry! {
    /// The jobs of the kill harness.
    pub KillJobs<Arc<Reporter>> { KillLedger, KillBatch, KillTask, KillTicker }
}

// ---------------------------------------------------------------------------------------------
// The load's calls, each reported before it is made and once it was answered

/// Triggers the ledger run of `op` (its idempotency key).
pub async fn trigger(client: &Client<KillJobs>, out: &Reporter, op: &str, fail: u8) {
    out.say(&format!("issue step {op} {fail}"));
    let input = RunInput {
        op: op.to_owned(),
        fail,
    };
    match client
        .step_job::<KillLedger>()
        .trigger(input, TriggerOptions::new().idempotency_key(op))
        .await
    {
        Ok(t) => {
            let how = match t.disposition {
                Disposition::Created => "created",
                Disposition::Idempotent => "idempotent",
                _ => "other",
            };
            out.say(&format!("ack step {op} {} {how}", t.run.id));
        }
        Err(e) => failed(out, &format!("step {op}"), &e),
    }
}

/// Adds `n` to its batch, with event id `e<n>`.
pub async fn add(client: &Client<KillJobs>, out: &Reporter, n: u64) {
    out.say(&format!("issue add {n}"));
    let inst = batch_of(n);
    match client
        .debounce::<KillBatch>()
        .add_with_id(&inst, n, &format!("e{n}"))
        .await
    {
        Ok(r) => {
            let flush = match r.flush {
                None => "none",
                Some(FlushOutcome::Flushed) => "flushed",
                Some(FlushOutcome::RetryScheduled(_)) => "retry",
                Some(_) => "other",
            };
            out.say(&format!("ack add {n} {flush}"));
        }
        Err(Error::DuplicateEvent { .. }) => out.say(&format!("dup add {n}")),
        Err(e) => failed(out, &format!("add {n}"), &e),
    }
}

/// Sends `event` to task `inst`, with its operation as the event id.
pub async fn send(client: &Client<KillJobs>, out: &Reporter, inst: &str, event: TaskOp) {
    let op = event.op.clone();
    out.say(&format!(
        "issue send {inst} {op} {} {}",
        event.schedule_ms, event.fail
    ));
    match client
        .task::<KillTask>()
        .send_with_id(inst, event, &op)
        .await
    {
        Ok(_) => out.say(&format!("ack send {op}")),
        Err(Error::DuplicateEvent { .. }) => out.say(&format!("dup send {op}")),
        Err(Error::Execution { .. }) => out.say(&format!("refused send {op}")),
        Err(e) => failed(out, &format!("send {op}"), &e),
    }
}

/// Triggers a ticker or a task now.
pub async fn poke(client: &Client<KillJobs>, out: &Reporter, rng: &mut Rng) {
    if rng.below(2) == 0 {
        let inst = format!("c{}", rng.below(TICKERS));
        match client.continuous::<KillTicker>().trigger(&inst).await {
            Ok(r) => out.say(&format!("ack ctrigger {inst} {}", r.retry_scheduled)),
            Err(e) => failed(out, &format!("ctrigger {inst}"), &e),
        }
    } else {
        let inst = format!("t{}", rng.below(TASKS));
        match client.task::<KillTask>().trigger(&inst).await {
            Ok(_) => out.say(&format!("ack ttrigger {inst}")),
            Err(Error::InstanceNotFound { .. }) => out.say(&format!("notfound ttrigger {inst}")),
            Err(e) => failed(out, &format!("ttrigger {inst}"), &e),
        }
    }
    // The pokes are a sprinkle among the other calls, not a flood.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// Whether this process's calls may meet storage errors: its database connections are broken
/// on purpose (set by `kill_child`'s `outages` argument).
static OUTAGES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells [`failed`] that storage errors are expected from now on.
pub fn expect_outages() {
    OUTAGES.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`expect_outages`] was called.
pub fn outages_expected() -> bool {
    OUTAGES.load(std::sync::atomic::Ordering::SeqCst)
}

/// Reports the error a call (`what`) got: `outage <what> <error>` for a storage error while
/// outages are expected ([`expect_outages`]), which leaves the call unanswered, so a later life
/// issues it again with the same keys; `unexpected <what> <error>` otherwise, which fails the
/// test.
pub fn failed(out: &Reporter, what: &str, e: &Error) {
    if matches!(e, Error::Storage { .. }) && outages_expected() {
        out.say(&format!("outage {what} {e}"));
    } else {
        out.say(&format!("unexpected {what} {e}"));
    }
}

/// Issues again, with the same keys, every operation listed by [`ledger::Ledger::resends`].
pub async fn resend(client: &Client<KillJobs>, out: &Reporter, resends: &str) {
    for line in resends.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["step", op, fail] => trigger(client, out, op, fail.parse().unwrap_or(0)).await,
            ["add", n] => match n.parse() {
                Ok(n) => add(client, out, n).await,
                Err(_) => out.say(&format!("unexpected resend-line {line}")),
            },
            ["send", inst, op, schedule_ms, fail] => {
                let event = TaskOp {
                    op: (*op).to_owned(),
                    schedule_ms: schedule_ms.parse().unwrap_or(0),
                    fail: *fail == "true",
                };
                send(client, out, inst, event).await;
            }
            _ => out.say(&format!("unexpected resend-line {line}")),
        }
    }
}
