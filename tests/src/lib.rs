//! Shared fixtures of the integration tests: jobs that record what they see and do what the
//! test tells them, a registry, and a harness that runs an engine on real data (a SQLite file,
//! or a PostgreSQL schema) with a test clock.
//!
//! Every engine the behavioural suites start opens its store through a [`TestDb`], on the
//! [`backing`] of the test binary: a SQLite file owned exclusively in each suite's own binary,
//! shared in the `shared` test binary, which runs the same suites a second time with the
//! engine's leased claims, and a schema on a PostgreSQL server in the `postgres` binary, which
//! runs them a third time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::testing::TestClock;
use durable_jobs::{Client, Engine};
use serde::{Deserialize, Serialize};

mod backing;
pub mod crash;
pub mod forwarding;
pub mod kill;
pub mod multiprocess;
pub mod pause;
pub mod pg_server;
pub mod powercut;

pub use backing::{backing, ownership, postgres_url, store_options, Backing, Schema, TestDb};

/// What a handler was called with.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The job's persisted name.
    pub job: &'static str,
    /// The handler (`execute`, `on_event`, `on_idle`, `on_error`, `exhausted`).
    pub handler: &'static str,
    /// Run or execute count seen by the handler.
    pub count: u64,
    /// Attempt seen by the handler.
    pub attempt: u32,
    /// State seen by the handler, as JSON.
    pub state: serde_json::Value,
    /// When it was called.
    pub at: Timestamp,
    /// Extra detail (flush reason, idle reason, error text).
    pub detail: String,
}

/// The application state of the test jobs: a call log and scripted failures.
#[derive(Clone, Default)]
pub struct Probe {
    calls: Arc<Mutex<Vec<Call>>>,
    failures: Arc<Mutex<VecDeque<String>>>,
    fail_always: Arc<Mutex<Option<String>>>,
}

impl Probe {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls of one handler.
    pub fn calls_of(&self, handler: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.handler == handler)
            .collect()
    }

    /// The next `n` executions fail with `message`.
    pub fn fail_next(&self, n: usize, message: &str) {
        let mut f = self.failures.lock().unwrap();
        for _ in 0..n {
            f.push_back(message.to_owned());
        }
    }

    /// Every execution fails with `message` (or none, with `None`).
    pub fn fail_always(&self, message: Option<&str>) {
        *self.fail_always.lock().unwrap() = message.map(str::to_owned);
    }

    fn scripted_failure(&self) -> Result<(), ProbeError> {
        if let Some(m) = self.fail_always.lock().unwrap().clone() {
            return Err(ProbeError(m));
        }
        match self.failures.lock().unwrap().pop_front() {
            Some(m) => Err(ProbeError(m)),
            None => Ok(()),
        }
    }
}

/// The error the test jobs fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Continuous

/// State of the continuous test jobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// Incremented by every successful run.
    pub count: i64,
    /// When set, the run that reaches this run count terminates the instance.
    pub max_runs: Option<u64>,
}

async fn count_up(
    ctx: &mut ContinuousContext<Count>,
    app: &Probe,
    job: &'static str,
) -> Result<(), ProbeError> {
    app.record(Call {
        job,
        handler: "execute",
        count: ctx.run_count(),
        attempt: ctx.attempt(),
        state: json(ctx.state()),
        at: ctx.now(),
        detail: ctx.instance().to_string(),
    });
    ctx.state_mut().count += 1;
    if ctx
        .state()
        .max_runs
        .is_some_and(|max| ctx.run_count() >= max)
    {
        return ctx.terminate("max runs reached");
    }
    app.scripted_failure()
}

fn exhausted<S: Serialize>(app: &Probe, job: &'static str, e: &durable_jobs::RetryExhausted<S>) {
    app.record(Call {
        job,
        handler: "exhausted",
        count: 0,
        attempt: e.attempts,
        state: json(&e.state),
        at: Timestamp::EPOCH,
        detail: format!("{}: {}", e.reason.as_str(), e.last_error),
    });
}

/// Thirty minutes.
pub const HALF_HOUR: Duration = Duration::from_secs(30 * 60);

/// Runs every 30 minutes, at once on start.
#[durable_jobs::continuous(every = "30m")]
pub async fn refresher(ctx: &mut ContinuousContext<Count>, app: &Probe) -> Result<(), ProbeError> {
    count_up(ctx, app, "refresher").await
}

/// Runs every 30 minutes, first after 30 minutes.
#[durable_jobs::continuous(every = "30m", start_immediately = false)]
pub async fn lazy_refresher(
    ctx: &mut ContinuousContext<Count>,
    app: &Probe,
) -> Result<(), ProbeError> {
    count_up(ctx, app, "lazy_refresher").await
}

/// Hourly, with three attempts one second apart.
#[durable_jobs::continuous(
    every = "1h",
    retry(max_attempts = 3, backoff = constant("1s"), jitter = false),
    on_retry_exhausted = retrying_exhausted
)]
pub async fn retrying_refresher(
    ctx: &mut ContinuousContext<Count>,
    app: &Probe,
) -> Result<(), ProbeError> {
    count_up(ctx, app, "retrying_refresher").await
}

async fn retrying_exhausted(e: durable_jobs::RetryExhausted<Count>, app: &Probe) {
    exhausted(app, "retrying_refresher", &e);
}

/// Hourly, retrying every minute for at most 150 seconds.
#[durable_jobs::continuous(
    every = "1h",
    retry(max_attempts = 10, backoff = constant("1m"), jitter = false, max_duration = "150s"),
    on_retry_exhausted = patient_exhausted
)]
pub async fn patient_refresher(
    ctx: &mut ContinuousContext<Count>,
    app: &Probe,
) -> Result<(), ProbeError> {
    count_up(ctx, app, "patient_refresher").await
}

async fn patient_exhausted(e: durable_jobs::RetryExhausted<Count>, app: &Probe) {
    exhausted(app, "patient_refresher", &e);
}

/// Every night at 04:30 UTC.
#[durable_jobs::continuous(
    cron = "30 4 * * *",
    start_immediately = false,
    name = "nightly_report"
)]
pub async fn nightly(ctx: &mut ContinuousContext<Count>, app: &Probe) -> Result<(), ProbeError> {
    count_up(ctx, app, "nightly_report").await
}

// ---------------------------------------------------------------------------------------------
// Debounce

/// A webhook event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    /// Payload.
    pub n: i64,
}

/// The batch of the debounce test jobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Events in order.
    pub events: Vec<i64>,
}

fn fold(state: Option<Batch>, event: Hook) -> Batch {
    let mut b = state.unwrap_or_default();
    b.events.push(event.n);
    b
}

async fn deliver(
    ctx: &mut FlushContext<Batch>,
    app: &Probe,
    job: &'static str,
) -> Result<(), ProbeError> {
    app.record(Call {
        job,
        handler: "execute",
        count: ctx.event_count(),
        attempt: ctx.attempt(),
        state: json(ctx.state()),
        at: ctx.now(),
        detail: ctx.flush_reason().to_string(),
    });
    app.scripted_failure()
}

/// Flushes 5 s after the first event, or at 3 events.
pub struct Batcher;

#[durable_jobs::debounce(flush_after = "5s", max_events = 3)]
impl DebounceJob<Probe> for Batcher {
    type Event = Hook;
    type State = Batch;
    type Error = ProbeError;

    fn on_event(&self, state: Option<Batch>, event: Hook, _ctx: &EventContext) -> Batch {
        fold(state, event)
    }

    async fn execute(&self, ctx: &mut FlushContext<Batch>, app: &Probe) -> Result<(), ProbeError> {
        deliver(ctx, app, "batcher").await
    }

    async fn on_retry_exhausted(&self, e: durable_jobs::RetryExhausted<Batch>, app: &Probe) {
        exhausted(app, "batcher", &e);
    }
}

/// Flushes after 5 s of quiet, at the latest 60 s after the first event.
pub struct QuietBatcher;

#[durable_jobs::debounce(flush_after = "60s", quiet = "5s")]
impl DebounceJob<Probe> for QuietBatcher {
    type Event = Hook;
    type State = Batch;
    type Error = ProbeError;

    fn on_event(&self, state: Option<Batch>, event: Hook, _ctx: &EventContext) -> Batch {
        fold(state, event)
    }

    async fn execute(&self, ctx: &mut FlushContext<Batch>, app: &Probe) -> Result<(), ProbeError> {
        deliver(ctx, app, "quiet_batcher").await
    }

    async fn on_retry_exhausted(&self, e: durable_jobs::RetryExhausted<Batch>, app: &Probe) {
        exhausted(app, "quiet_batcher", &e);
    }
}

/// Retries failed flushes: three attempts one second apart.
pub struct RetryBatcher;

#[durable_jobs::debounce(flush_after = "5s", max_events = 10, retry(max_attempts = 3, backoff = constant("1s"), jitter = false))]
impl DebounceJob<Probe> for RetryBatcher {
    type Event = Hook;
    type State = Batch;
    type Error = ProbeError;

    fn on_event(&self, state: Option<Batch>, event: Hook, _ctx: &EventContext) -> Batch {
        fold(state, event)
    }

    async fn execute(&self, ctx: &mut FlushContext<Batch>, app: &Probe) -> Result<(), ProbeError> {
        deliver(ctx, app, "retry_batcher").await
    }

    async fn on_retry_exhausted(&self, e: durable_jobs::RetryExhausted<Batch>, app: &Probe) {
        exhausted(app, "retry_batcher", &e);
    }
}

// ---------------------------------------------------------------------------------------------
// Task

/// State of the task test job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Sum of amounts.
    pub total: i64,
    /// Executions seen by the job itself.
    pub executed: u64,
}

/// Events of the task test job: each one scripts what `on_event` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// Adds to the total; nothing scheduled.
    Add {
        /// Amount.
        amount: i64,
    },
    /// Adds and schedules `execute` in `secs` seconds.
    AddAndSchedule {
        /// Amount.
        amount: i64,
        /// Delay.
        secs: u64,
    },
    /// Schedules, then cancels.
    ScheduleThenCancel,
    /// Sets the total, then fails.
    SetThenFail {
        /// The total set before failing.
        total: i64,
    },
    /// Sets the total, then reads it back into the call log.
    SetThenRead {
        /// The total set.
        total: i64,
    },
    /// Terminates the instance.
    Terminate,
}

/// The task test job; `on_error` rescues errors whose message starts with "rescue".
pub struct Orders;

#[durable_jobs::task]
impl TaskJob<Probe> for Orders {
    type State = Order;
    type Event = OrderEvent;
    type Error = ProbeError;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Order>,
        event: OrderEvent,
        app: &Probe,
    ) -> Result<(), ProbeError> {
        app.record(Call {
            job: "orders",
            handler: "on_event",
            count: ctx.event_count(),
            attempt: 1,
            state: json(&event),
            at: ctx.now(),
            detail: format!("first={}", ctx.is_first_event()),
        });
        let mut order = ctx.state().cloned().unwrap_or_default();
        match event {
            OrderEvent::Add { amount } => {
                order.total += amount;
                ctx.set_state(order);
            }
            OrderEvent::AddAndSchedule { amount, secs } => {
                order.total += amount;
                ctx.set_state(order);
                ctx.schedule_in(Duration::from_secs(secs));
            }
            OrderEvent::ScheduleThenCancel => {
                ctx.schedule_in(Duration::from_secs(5));
                ctx.cancel_schedule();
            }
            OrderEvent::SetThenFail { total } => {
                order.total = total;
                ctx.set_state(order);
                return Err(ProbeError(format!("rescue: failed after setting {total}")));
            }
            OrderEvent::SetThenRead { total } => {
                order.total = total;
                ctx.set_state(order);
                let seen = ctx.state().map(|o| o.total).unwrap_or(-1);
                app.record(Call {
                    job: "orders",
                    handler: "read",
                    count: 0,
                    attempt: 1,
                    state: json(&seen),
                    at: ctx.now(),
                    detail: String::new(),
                });
            }
            OrderEvent::Terminate => return ctx.terminate(),
        }
        app.scripted_failure()
    }

    async fn execute(&self, ctx: &mut TaskContext<Order>, app: &Probe) -> Result<(), ProbeError> {
        app.record(Call {
            job: "orders",
            handler: "execute",
            count: ctx.execute_count(),
            attempt: 1,
            state: json(&ctx.state()),
            at: ctx.now(),
            detail: String::new(),
        });
        ctx.update_state(|o| o.executed += 1);
        let seen = ctx.state().map(|o| o.executed).unwrap_or(0);
        app.record(Call {
            job: "orders",
            handler: "read",
            count: seen,
            attempt: 1,
            state: json(&ctx.state()),
            at: ctx.now(),
            detail: String::new(),
        });
        app.scripted_failure()
    }

    async fn on_idle(&self, ctx: &mut TaskContext<Order>, reason: IdleReason, app: &Probe) {
        app.record(Call {
            job: "orders",
            handler: "on_idle",
            count: ctx.execute_count(),
            attempt: 1,
            state: json(&ctx.state()),
            at: ctx.now(),
            detail: format!("{reason:?}"),
        });
        if ctx.state().is_some_and(|o| o.total >= 1000) {
            ctx.schedule_in(Duration::from_secs(10));
        }
    }

    async fn on_error(
        &self,
        ctx: &mut TaskContext<Order>,
        error: ProbeError,
        source: ErrorSource,
        app: &Probe,
    ) -> Result<(), ProbeError> {
        app.record(Call {
            job: "orders",
            handler: "on_error",
            count: ctx.event_count(),
            attempt: 1,
            state: json(&ctx.state()),
            at: ctx.now(),
            detail: format!("{source:?}: {error}"),
        });
        if error.0.starts_with("rescue") {
            ctx.update_state(|o| o.total += 100);
            ctx.schedule_in(Duration::from_secs(30));
            Ok(())
        } else {
            Err(error)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registry and harness

durable_jobs::registry! {
    /// Every test job.
    pub TestJobs<Probe> {
        Refresher, LazyRefresher, RetryingRefresher, PatientRefresher, Nightly,
        Batcher, QuietBatcher, RetryBatcher, Orders,
    }
}

/// An engine on this binary's [`backing`] (a real SQLite file in a temporary folder unless the
/// binary says otherwise), driven by a test clock.
pub struct Harness {
    /// The engine.
    pub engine: Engine<TestJobs>,
    /// Its client.
    pub client: Client<TestJobs>,
    /// The clock it runs on.
    pub clock: TestClock,
    /// The jobs' application state.
    pub probe: Probe,
    /// The data, to open another store on.
    pub db: TestDb,
}

impl Harness {
    /// A fresh engine on new data.
    pub async fn start() -> Harness {
        let db = TestDb::new().await;
        let clock = TestClock::new();
        let probe = Probe::default();
        let engine = Self::engine(&db, &clock, &probe).await;
        let client = engine.client();
        Harness {
            engine,
            client,
            clock,
            probe,
            db,
        }
    }

    async fn engine(db: &TestDb, clock: &TestClock, probe: &Probe) -> Engine<TestJobs> {
        Engine::<TestJobs>::builder()
            .store_arc(db.open().await)
            .clock(clock.clone())
            .app(probe.clone())
            .start()
            .await
            .unwrap()
    }

    /// Shuts the engine down gracefully and starts a new one on the same data and clock.
    pub async fn restart(self) -> Harness {
        let Harness {
            engine,
            client,
            clock,
            probe,
            db,
        } = self;
        drop(client);
        engine.shutdown().await.unwrap();
        let engine = Self::engine(&db, &clock, &probe).await;
        let client = engine.client();
        clock.settle().await;
        Harness {
            engine,
            client,
            clock,
            probe,
            db,
        }
    }

    /// The temporary folder.
    pub fn dir(&self) -> &std::path::Path {
        self.db.dir()
    }

    /// The database file, for the tests about SQLite files, which run on SQLite backings only.
    pub fn sqlite_file(&self) -> &std::path::Path {
        self.db
            .sqlite_file()
            .expect("a test about SQLite files, in a binary whose backing is not SQLite")
    }
}
