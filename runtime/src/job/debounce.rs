//! Debounce jobs: events folded into state, flushed after a window, a quiet period or a count.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::{Job, JobError, Payload, RetryExhausted};
use crate::id::InstanceKey;
use crate::retry::RetryPolicy;
use crate::time::Timestamp;

/// Events folded into state by `on_event` and handed to `execute` in one batch.
///
/// A batch is flushed `flush_after` after its first event, or once no event arrived for `quiet`
/// (when set), or synchronously inside the `add` that brings it to `max_events`; whichever comes
/// first. `flush_after` bounds the wait, so a steady stream cannot postpone a flush forever. A
/// successful flush deletes the instance; the next `add` starts a new batch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[debounce] job",
    label = "not a #[debounce] job",
    note = "`client.debounce::<J>()` takes a job defined with #[debounce]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[task] job with `client.task::<J>()`, a #[step_job] with `client.step_job::<J>()`"
)]
pub trait DebounceJob<A: Send + Sync + 'static = ()>: Job {
    /// What `add` accepts.
    type Event: Payload;
    /// The accumulated batch.
    type State: Payload;
    /// The error `execute` may return.
    type Error: JobError;

    /// Window, quiet period, event limit and retry policy.
    fn config(&self) -> DebounceConfig;

    /// Folds one event into the batch; `state` is `None` for the first event of a batch.
    fn on_event(
        &self,
        state: Option<Self::State>,
        event: Self::Event,
        ctx: &EventContext,
    ) -> Self::State;

    /// Processes the batch.
    fn execute(
        &self,
        ctx: &mut FlushContext<Self::State>,
        app: &A,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called once when the retry policy gives up, before the batch is dropped.
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

/// How a debounce job batches and retries.
#[derive(Clone, Debug)]
pub struct DebounceConfig {
    pub(crate) flush_after: Duration,
    pub(crate) quiet: Option<Duration>,
    pub(crate) max_events: Option<u64>,
    pub(crate) retry: Option<RetryPolicy>,
}

impl DebounceConfig {
    /// Flushes at the latest `flush_after` after the first event of a batch.
    pub fn new(flush_after: Duration) -> Self {
        DebounceConfig {
            flush_after,
            quiet: None,
            max_events: None,
            retry: None,
        }
    }

    /// Also flushes once no event arrived for `quiet` (a trailing debounce).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = Some(quiet);
        self
    }

    /// Flushes inside the `add` that brings the batch to `n` events.
    pub fn max_events(mut self, n: u64) -> Self {
        self.max_events = Some(n.max(1));
        self
    }

    /// Retries failed flushes with this policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// What `on_event` learns about the event it folds.
#[derive(Debug)]
pub struct EventContext {
    pub(crate) instance: InstanceKey,
    pub(crate) event_count: u64,
    pub(crate) now: Timestamp,
}

impl EventContext {
    /// The instance receiving the event.
    pub fn instance(&self) -> &InstanceKey {
        &self.instance
    }

    /// Events in the batch, counting this one.
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// When the event arrived.
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

/// Why a batch was flushed.
///
/// It displays as its Rust name in snake case, the name of the argument that caused the flush
/// where there is one; [`as_str`](Self::as_str) gives the name the `debounce.flushed` event
/// carries on the wire.
///
/// # Examples
///
/// ```
/// use durable_jobs::FlushReason;
///
/// assert_eq!(FlushReason::FlushAfter.to_string(), "flush_after");
/// assert_eq!(FlushReason::FlushAfter.as_str(), "timeout");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlushReason {
    /// The `add` that reached `max_events`.
    MaxEvents,
    /// `flush_after` passed since the first event (also reported by retries of a timed flush).
    FlushAfter,
    /// No event arrived for the quiet period.
    Quiet,
    /// The client called `flush`.
    Manual,
}

impl FlushReason {
    /// The wire name, as in the `debounce.flushed` event: `maxEvents`, `timeout`, `quiet` or
    /// `manual`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlushReason::MaxEvents => "maxEvents",
            FlushReason::FlushAfter => "timeout",
            FlushReason::Quiet => "quiet",
            FlushReason::Manual => "manual",
        }
    }
}

/// The Rust name: `max_events`, `flush_after`, `quiet` or `manual`.
impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushReason::MaxEvents => "max_events",
            FlushReason::FlushAfter => "flush_after",
            FlushReason::Quiet => "quiet",
            FlushReason::Manual => "manual",
        })
    }
}

/// What `execute` of a debounce job sees.
#[derive(Debug)]
pub struct FlushContext<S> {
    pub(crate) state: S,
    pub(crate) instance: InstanceKey,
    pub(crate) event_count: u64,
    pub(crate) started_at: Timestamp,
    pub(crate) reason: FlushReason,
    pub(crate) attempt: u32,
    pub(crate) now: Timestamp,
}

impl<S> FlushContext<S> {
    /// The batch.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Takes the batch out of the context (for moving it into a call).
    pub fn take_state(&mut self) -> S
    where
        S: Default,
    {
        std::mem::take(&mut self.state)
    }

    /// Events in the batch.
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// When the first event of the batch arrived.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Why the batch is flushed.
    pub fn flush_reason(&self) -> FlushReason {
        self.reason
    }

    /// 1 for a first try, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this flush is a retry.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    /// The instance being flushed.
    pub fn instance(&self) -> &InstanceKey {
        &self.instance
    }

    /// When the flush started.
    pub fn now(&self) -> Timestamp {
        self.now
    }
}
