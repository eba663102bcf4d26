//! Durable background jobs for Rust services, kept in an embedded SQLite file.
//!
//! A job is plain Rust annotated with one of four attributes: recurring jobs with persisted
//! state ([`#[continuous]`](macro@continuous)), events folded into a batch that is flushed after
//! a window, a quiet period or a count ([`#[debounce]`](macro@debounce)), event-driven state
//! machines that schedule their own work ([`#[task]`](macro@task)), and runs of memoised steps
//! that resume after a crash ([`#[step_job]`](macro@step_job)). One [`registry!`] lists the
//! jobs of an application; an [`Engine`] runs them inside your tokio runtime, with no separate
//! server; its [`Client`] is typed, so a job that does not exist, is not registered, is of
//! another kind or gets the wrong payload is a compile error. State, schedules, batches and
//! retries are rows of one SQLite file and survive restarts.
//!
//! # Example
//!
//! Three jobs, an engine on an in-memory store driven by a [`TestClock`](testing::TestClock),
//! the typed client, an hour passing in an instant, and a shutdown. In production, replace
//! `.in_memory()` by `.sqlite("jobs.db")` and leave the clock out.
//!
//! ```
//! use std::time::Duration;
//!
//! use durable_jobs::prelude::*;
//! use durable_jobs::testing::TestClock;
//! use serde::{Deserialize, Serialize};
//!
//! /// What every handler receives as `&App`: HTTP clients, pools, configuration.
//! pub struct App {
//!     issuer: String,
//! }
//!
//! #[derive(Serialize, Deserialize, Clone, Debug)]
//! pub struct Tokens {
//!     access_token: String,
//!     refresh_token: String,
//! }
//!
//! /// Refreshes a user's tokens every 30 minutes; failed runs are retried.
//! #[durable_jobs::continuous(every = "30m", retry(max_attempts = 3))]
//! async fn token_refresher(
//!     ctx: &mut ContinuousContext<Tokens>,
//!     app: &App,
//! ) -> Result<(), std::io::Error> {
//!     if ctx.state().refresh_token.is_empty() {
//!         return ctx.terminate("no refresh token");
//!     }
//!     let access_token = format!("{}-{}", app.issuer, ctx.run_count());
//!     ctx.update_state(|t| t.access_token = access_token);
//!     Ok(())
//! }
//!
//! /// Delivers a contact's webhooks in batches.
//! pub struct WebhookBatcher;
//!
//! #[durable_jobs::debounce(flush_after = "5s", quiet = "1s", max_events = 100)]
//! impl DebounceJob<App> for WebhookBatcher {
//!     type Event = String;
//!     type State = Vec<String>;
//!     type Error = std::io::Error;
//!
//!     fn on_event(
//!         &self,
//!         batch: Option<Vec<String>>,
//!         event: String,
//!         _ctx: &EventContext,
//!     ) -> Vec<String> {
//!         let mut batch = batch.unwrap_or_default();
//!         batch.push(event);
//!         batch
//!     }
//!
//!     async fn execute(
//!         &self,
//!         ctx: &mut FlushContext<Vec<String>>,
//!         _app: &App,
//!     ) -> Result<(), Self::Error> {
//!         println!("delivering {:?} ({})", ctx.state(), ctx.flush_reason());
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
//! pub enum Stage {
//!     Paid,
//!     Shipped,
//! }
//!
//! #[derive(Serialize, Deserialize, Clone, Debug)]
//! pub struct Payment {
//!     amount: u64,
//! }
//!
//! /// Ships an order an hour after it is paid.
//! pub struct OrderProcessor;
//!
//! #[durable_jobs::task]
//! impl TaskJob<App> for OrderProcessor {
//!     type State = Stage;
//!     type Event = Payment;
//!     type Error = std::io::Error;
//!
//!     async fn on_event(
//!         &self,
//!         ctx: &mut TaskContext<Stage>,
//!         _paid: Payment,
//!         _app: &App,
//!     ) -> Result<(), Self::Error> {
//!         ctx.set_state(Stage::Paid);
//!         ctx.schedule_in(Duration::from_secs(3600));
//!         Ok(())
//!     }
//!
//!     async fn execute(
//!         &self,
//!         ctx: &mut TaskContext<Stage>,
//!         _app: &App,
//!     ) -> Result<(), Self::Error> {
//!         ctx.set_state(Stage::Shipped);
//!         Ok(())
//!     }
//! }
//!
//! durable_jobs::registry! {
//!     /// Every job of this service.
//!     pub Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> durable_jobs::Result<()> {
//!     let clock = TestClock::new();
//!     let engine = Jobs::builder()
//!         .in_memory()
//!         .clock(clock.clone())
//!         .app(App {
//!             issuer: "idp".into(),
//!         })
//!         .start()
//!         .await?;
//!     let client = engine.client();
//!
//!     let tokens = Tokens {
//!         access_token: String::new(),
//!         refresh_token: "rt_abc".into(),
//!     };
//!     let started = client
//!         .continuous::<TokenRefresher>()
//!         .start("user-123", tokens)
//!         .await?;
//!     assert!(started.created); // and its first run is done
//!     client
//!         .debounce::<WebhookBatcher>()
//!         .add("contact-456", "contact.updated".into())
//!         .await?;
//!     client
//!         .task::<OrderProcessor>()
//!         .send("order-789", Payment { amount: 42 })
//!         .await?;
//!     // client.task::<TokenRefresher>(); // does not compile: not a #[task] job
//!
//!     // An hour passes at once: every alarm on the way runs, in order, before `advance` returns.
//!     clock.advance(Duration::from_secs(3600)).await;
//!
//!     let refresher = client.continuous::<TokenRefresher>();
//!     assert_eq!(refresher.status("user-123").await?.run_count, 3); // at 0, 30 and 60 minutes
//!     assert_eq!(
//!         refresher.get_state("user-123").await?.unwrap().access_token,
//!         "idp-3"
//!     );
//!     // Flushed after its quiet second, the batch is gone.
//!     assert!(client
//!         .debounce::<WebhookBatcher>()
//!         .status("contact-456")
//!         .await?
//!         .is_not_found());
//!     let order = client
//!         .task::<OrderProcessor>()
//!         .get_state("order-789")
//!         .await?;
//!     assert_eq!(order, Some(Stage::Shipped));
//!
//!     drop(client);
//!     engine.shutdown().await
//! }
//! ```
//!
//! Longer programs, one per kind, are in the repository's `examples/examples/` and run with
//! `cargo run -p durable-jobs-examples --example continuous` (or `debounce`, `task`,
//! `step_job`, `quickstart`).
//!
//! # The job kinds
//!
//! | kind | what runs, and when | client |
//! |---|---|---|
//! | [`#[continuous]`](macro@continuous) on an `async fn` | `execute` at `start` (unless `start_immediately = false`), then on its schedule: `every = "30m"` after each run ends, or `cron = "0 4 * * *"` with `tz` | [`continuous`](Client::continuous): `start`, `trigger`, `status`, `get_state`, `terminate` |
//! | [`#[debounce]`](macro@debounce) on `impl DebounceJob<App>` | `on_event` folds each event into the batch; `execute` flushes it `flush_after` after its first event, after a `quiet` period, inside the `add` that reaches `max_events`, or on `flush` | [`debounce`](Client::debounce): `add`, `add_with_id`, `flush`, `clear`, `status`, `get_state` |
//! | [`#[task]`](macro@task) on `impl TaskJob<App>` | `on_event` per event; `execute` when a handler's [`schedule_in`](TaskContext::schedule_in) comes due or on `trigger`; `on_idle` when nothing is scheduled; `on_error` may rescue a failure | [`task`](Client::task): `send`, `send_with_id`, `trigger`, `status`, `get_state`, `terminate` |
//! | [`#[step_job]`](macro@step_job) on an `async fn` | a run per `trigger`, executed by the engine's step worker; each [`step.run(name, ...)`](StepContext::run) is persisted as it completes, so a retried or interrupted run resumes after its last completed step | [`step_job`](Client::step_job): `trigger`, `trigger_and_wait`, `batch_trigger`, `wait_for_run`, `get_run`, `get_runs`, `retrigger`, `cancel`, `delete_run` |
//!
//! An instance of the first three kinds is addressed by its job and an id of yours
//! (`"user-123"`); its [`InstanceKey`] is the kind, the job's persisted name and that id.
//! Actions on one instance are serialised; different instances run concurrently. A step job
//! has runs instead, with ids the engine gives them, idempotency keys and concurrency keys. What happens on failure, retry
//! policies, the quiet period, missed runs, event ids and size limits are described exactly in
//! [`docs/jobs.md`](https://github.com/durable-jobs/durable-jobs/blob/main/docs/jobs.md). In
//! short: a failure never leaves an instance stuck. Without a retry policy a continuous job
//! keeps its cadence, a debounce batch is kept and flushed again `flush_after` later, and a
//! task's error goes to its `on_error` or back to the caller. A retry policy retries with
//! durable alarms; when it gives up, `on_retry_exhausted` runs and the instance is deleted.
//!
//! # Errors
//!
//! Every engine and client operation returns [`Result<T, Error>`](Result). [`Error`] is one
//! `#[non_exhaustive]` enum to match on; each variant carries the instance and operation
//! concerned, and a failure of your code arrives as [`Error::Execution`] with your error as its
//! source, so `source.downcast_ref::<MyError>()` gets it back. Which operation returns which
//! variant is tabled in the documentation of [`Error`]. Two rules to know: a
//! query never fails because the instance is missing (`status` answers a `NotFound` status,
//! `get_state` answers `None`), while a command that needs an instance (`trigger`,
//! `terminate`, `flush`, `clear`) returns [`Error::InstanceNotFound`]; and an action on an
//! instance issued from inside that instance's own handler returns [`Error::InvalidState`]
//! instead of waiting for itself.
//!
//! # Testing
//!
//! Everything that reads time reads the engine's [`Clock`]. Hand a
//! [`TestClock`](testing::TestClock) to the builder with `.clock(clock.clone())` and time
//! moves only when the test says so: [`advance`](testing::TestClock::advance) steps through
//! every alarm that falls due on the way (schedules, debounce windows, retry delays), runs each
//! one and waits for it, so tests never sleep. [`jump`](testing::TestClock::jump) moves in one
//! step, as a suspended laptop does, and alarms on the way fire once, late. Use `.in_memory()`
//! for a store that disappears with the engine, or `.sqlite(path)` in a temporary directory to
//! test restarts: shut the engine down, build a new one on the same file and the same clock.
//!
//! # Durability
//!
//! Every action and every alarm execution commits all of its effects (state, counters, the
//! next alarm, retry bookkeeping, event ids, telemetry outbox rows) in one SQLite transaction,
//! or none of them. One writer thread groups the transactions waiting into one commit, so one
//! fsync serves many actions. The database is in WAL mode with
//! [`Synchronous::Normal`](sqlite::Synchronous): a crash of the process loses nothing committed; a
//! power loss may lose the last commits, unless `.synchronous(Synchronous::Full)`.
//!
//! If the process dies during an execution, nothing of that execution is committed and its
//! alarm fires again after the next start (alarms that fell due while the engine was down fire
//! at once); an execution whose end could not be committed runs again one lease later. A
//! step-job run persists each step as it completes; a run whose process died is claimed again
//! when its lease lapses and skips the steps already done. Executions are therefore *at least
//! once*: an `execute` or a step that called an external service may call it again, so make
//! such calls idempotent.
//! [`Engine::shutdown`] stops taking work, waits for running executions and closes the file
//! (telemetry not yet delivered stays in the outbox for the next start); dropping the last
//! engine handle without it behaves like a crash.
//!
//! A panic in your code is caught and handled as the error it stands for ([`Panicked`] is the
//! source of the [`Error::Execution`]); state that would not read back from its JSON (a NaN,
//! say) is refused before it is stored; the database file is locked itself, whatever path
//! reaches it, and a file deleted under the engine fails the next write instead of swallowing
//! it. A deploy that changes a job's state type migrates stored states
//! ([`ContinuousJob::STATE_VERSION`], [`ContinuousJob::migrate_state`]); a state that cannot
//! be read leaves its instance `Broken`, visible in `status`, until a migration repairs it.
//!
//! # Telemetry and tracing
//!
//! [`Engine::events`] streams every [`Event`] as it commits, in one stream: the
//! [`JobEvent`]s of continuous, debounce and task jobs (`job.started`, `job.executed`,
//! `job.failed`, `job.retryExhausted`, `job.terminated`, `debounce.started`,
//! `debounce.flushed`, `task.scheduled` and `job.broken`) and the run events of step jobs
//! ([`steps::RunEvent`]: `run:trigger`, `run:leased`, `step:complete`, `run:complete`, ...).
//! A step client's `subscribe(run_id)` and `events()` read the same events, filtered to one
//! run or one job. With the `http-telemetry` feature and
//! `.telemetry(HttpTelemetry::new(endpoint, env, service_key))` job events are also written to
//! an outbox in the transaction of the change they describe, then posted in batches with
//! retries: an event is sent if and only if its change committed, even across restarts.
//! Run events go to the same outbox and endpoint, written just after their change commits
//! rather than in its transaction, so one emitted just before a crash may be lost. User code
//! runs inside a `tracing` span `durable_jobs.execute` with the fields `kind`, `job`,
//! `instance` and `operation`.
//!
//! With the `metrics` feature, executions, failures, retries, durations, lateness, due alarms,
//! step runs and the SQLite writer's groups are recorded through the `metrics` facade, for
//! Prometheus or OpenTelemetry: see [`metrics`](mod@metrics) for the names.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
// Runtime code returns errors; it does not panic. A case proven unreachable says why, next to a
// targeted `allow`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

extern crate self as durable_jobs;

pub mod checks;
pub mod client;
mod clock;
mod engine;
mod error;
mod id;
pub mod job;
mod json;
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
mod retry;
pub mod sqlite;
pub mod steps;
pub mod store;
pub mod telemetry;
mod time;

pub use client::Client;
pub use clock::Clock;
pub use engine::{
    AddResult, ClearResult, ContinuousState, ContinuousStatus, DebounceState, DebounceStatus,
    Engine, EngineBuilder, FlushOutcome, FlushResult, JobSet, Limits, NoApp, Registry, SendResult,
    StartResult, TaskState, TaskStatus, TaskTriggerResult, TerminateResult, TriggerResult, WithApp,
};
pub use error::{BoxError, Error, Operation, Panicked, Result, ValidationTarget};
pub use id::{InstanceKey, JobKind, MAX_ID_BYTES};
pub use job::continuous::{ContinuousConfig, ContinuousContext, ContinuousJob};
pub use job::debounce::{DebounceConfig, DebounceJob, EventContext, FlushContext, FlushReason};
pub use job::schedule::{CronSchedule, Schedule};
pub use job::step::StepJob;
pub use job::task::{ErrorSource, IdleReason, TaskContext, TaskJob};
pub use job::{Job, JobError, Payload, Registered, RetryExhausted};
pub use json::MAX_NESTING_DEPTH;
pub use retry::{Backoff, ExhaustionReason, RetryPolicy};
pub use steps::{StepContext, StepJobConfig, StepOptions};
pub use store::UnregisteredJob;
#[cfg(feature = "http-telemetry")]
pub use telemetry::HttpTelemetry;
pub use telemetry::{Event, EventKind, EventStream, JobEvent};
pub use time::Timestamp;

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private;

/// Not public API. Used by the benchmark.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;

#[doc(inline)]
pub use durable_jobs_macros::{continuous, debounce, registry, step_job, task};

/// Helpers for testing code that uses durable jobs.
pub mod testing {
    pub use crate::clock::TestClock;
}

/// The names most job definitions need.
pub mod prelude {
    pub use crate::{
        Backoff, ContinuousConfig, ContinuousContext, ContinuousJob, DebounceConfig, DebounceJob,
        ErrorSource, EventContext, FlushContext, FlushReason, IdleReason, Job, JobKind,
        RetryPolicy, Schedule, StepContext, StepJob, StepJobConfig, TaskContext, TaskJob,
        Timestamp,
    };
}
