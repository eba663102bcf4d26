//! Continuous jobs: a recurring `execute` with persisted state.

use std::future::Future;

use super::schedule::Schedule;
use super::{Job, JobError, Payload, RetryExhausted};
use crate::id::InstanceKey;
use crate::retry::RetryPolicy;
use crate::time::Timestamp;

/// A recurring job with persisted state, run on a [`Schedule`].
///
/// `#[continuous]` implements it for an `async fn`; it can be implemented by hand too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::prelude::*;
///
/// pub struct Counter;
///
/// impl Job for Counter {
///     const NAME: &'static str = "counter";
///     const KIND: JobKind = JobKind::Continuous;
/// }
///
/// impl<A: Send + Sync + 'static> ContinuousJob<A> for Counter {
///     type State = u64;
///     type Error = std::convert::Infallible;
///
///     fn config(&self) -> ContinuousConfig {
///         ContinuousConfig::new(Schedule::every(Duration::from_secs(60)))
///     }
///
///     async fn execute(&self, ctx: &mut ContinuousContext<u64>, _app: &A) -> Result<(), Self::Error> {
///         *ctx.state_mut() += 1;
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[continuous] job",
    label = "not a #[continuous] job",
    note = "`client.continuous::<J>()` takes a job defined with #[continuous]; a #[debounce] job is reached with `client.debounce::<J>()`, a #[task] job with `client.task::<J>()`, a #[step_job] with `client.step_job::<J>()`"
)]
pub trait ContinuousJob<A: Send + Sync + 'static = ()>: Job {
    /// The persisted state; the initial state is the input of `start`.
    type State: Payload;
    /// The error `execute` may return.
    type Error: JobError;

    /// Schedule, start-up behaviour and retry policy.
    fn config(&self) -> ContinuousConfig;

    /// The periodic body. State changes are kept only when it returns `Ok`.
    fn execute(
        &self,
        ctx: &mut ContinuousContext<Self::State>,
        app: &A,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called once when the retry policy gives up, before the instance is purged.
    fn on_retry_exhausted(
        &self,
        exhausted: RetryExhausted<Self::State>,
        app: &A,
    ) -> impl Future<Output = ()> + Send {
        let _ = (exhausted, app);
        async {}
    }

    /// The version of the shape of [`State`](Self::State) this code writes (default 0). It is
    /// stored with every state; raise it when the shape changes in a way serde defaults do not
    /// cover, and teach [`migrate_state`](Self::migrate_state) the older shapes. See
    /// "Deploys" in `docs/jobs.md`.
    const STATE_VERSION: u32 = 0;

    /// Turns a state stored at an older `version` (below
    /// [`STATE_VERSION`](Self::STATE_VERSION)), given as its raw JSON, into the current state.
    /// Called when the state is read, before any handler sees it; the result is written back,
    /// at `STATE_VERSION`, with the instance's next write. By default the JSON is decoded as it
    /// is, which is enough when new fields have serde defaults. An error leaves the instance
    /// broken until a migration that works is deployed (or it is deleted).
    fn migrate_state(
        &self,
        stored: serde_json::Value,
        version: u32,
    ) -> Result<Self::State, crate::error::BoxError> {
        let _ = version;
        Ok(serde_json::from_value(stored)?)
    }
}

/// How a continuous job is scheduled and retried.
#[derive(Clone, Debug)]
pub struct ContinuousConfig {
    pub(crate) schedule: Schedule,
    pub(crate) start_immediately: bool,
    pub(crate) retry: Option<RetryPolicy>,
}

impl ContinuousConfig {
    /// Runs on `schedule`, once immediately at `start`, without retries.
    pub fn new(schedule: Schedule) -> Self {
        ContinuousConfig {
            schedule,
            start_immediately: true,
            retry: None,
        }
    }

    /// Whether `start` runs `execute` at once (the default) or only schedules the first run.
    pub fn start_immediately(mut self, yes: bool) -> Self {
        self.start_immediately = yes;
        self
    }

    /// Retries failed runs with this policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// What `execute` of a continuous job sees and changes.
#[derive(Debug)]
pub struct ContinuousContext<S> {
    pub(crate) state: S,
    pub(crate) dirty: bool,
    pub(crate) terminate: Option<String>,
    pub(crate) instance: InstanceKey,
    pub(crate) run_count: u64,
    pub(crate) attempt: u32,
    pub(crate) started_at: Timestamp,
}

impl<S> ContinuousContext<S> {
    /// The current state, including changes made earlier in this run.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state, for changing in place.
    pub fn state_mut(&mut self) -> &mut S {
        self.dirty = true;
        &mut self.state
    }

    /// Replaces the state. Kept only if this run succeeds.
    pub fn set_state(&mut self, state: S) {
        self.dirty = true;
        self.state = state;
    }

    /// Changes the state with `f`.
    pub fn update_state(&mut self, f: impl FnOnce(&mut S)) {
        f(self.state_mut());
    }

    /// Ends this instance after the run: the alarm is cancelled and the state deleted, whatever
    /// the run returns, and no retry happens. Returns `Ok(())` so it can end the function.
    pub fn terminate<E>(&mut self, reason: impl Into<String>) -> Result<(), E> {
        self.terminate = Some(reason.into());
        Ok(())
    }

    /// The instance being run.
    pub fn instance(&self) -> &InstanceKey {
        &self.instance
    }

    /// The user's id of the instance.
    pub fn id(&self) -> &str {
        self.instance.id()
    }

    /// 1 for the first run; retries do not count.
    pub fn run_count(&self) -> u64 {
        self.run_count
    }

    /// 1 for a first try, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this run is a retry of a failed one.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    /// When this run started, on the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.started_at
    }
}
