//! The one error type every engine and client operation returns.

use std::fmt;

use crate::id::InstanceKey;
use crate::store::StoreError;

/// A boxed error from user code or a dependency, kept as a source so callers can downcast it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every engine and client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Match on it; every variant carries its context.
///
/// # Which operation returns which variant
///
/// | operation | variants |
/// |---|---|
/// | builder `start` | `Storage` (the file cannot be opened or migrated, or another engine holds it), `Validation` (bad configuration) |
/// | continuous `start` | `Validation` (id, input: too large, too deeply nested, or not reading back from its JSON), `Execution` (the first run failed or panicked with no retry policy, or a one-attempt policy gave up), `Scheduler`, `Storage` |
/// | `trigger` (continuous, task) | `InstanceNotFound`, `Execution`, `InvalidState` (called from inside the same instance's execution, or the instance is broken) |
/// | `terminate`, debounce `flush` and `clear` | `InstanceNotFound`, `Execution` (flush), `InvalidState` (as `trigger`; `terminate` and `clear` delete a broken instance) |
/// | debounce `add`, `add_with_id` | `Validation` (id, event, event id, a batch over the size limit or not reading back), `DuplicateEvent`, `Execution` (`on_event` panicked), `InvalidState` (as `trigger`); a failed `max_events` flush is not an error but `AddResult::flush` |
/// | task `send`, `send_with_id` | `Validation` (id, event, event id, a state over the size limit or not reading back), `DuplicateEvent`, `Execution` (`on_event` failed or panicked and `on_error` did not rescue it), `InvalidState` (as `trigger`) |
/// | `status`, `get_state` | `Validation` (id; stored state that no longer deserialises), `Storage`; never `InstanceNotFound`: a missing instance is a `NotFound` status or `None` |
/// | step job `trigger`, `batch_trigger` | `Validation` (input, keys, labels), `InvalidState` (a pending run has the same concurrency key and `coalesce` is not set) |
/// | step job `trigger_and_wait`, `wait_for_run` | `Execution` (the run failed; the source is `RunFailed` with its message), `InvalidState` (it was cancelled), `InstanceNotFound`, `Timeout` (the run goes on) |
/// | step job `retrigger`, `cancel`, `delete_run` | `InstanceNotFound`, `InvalidState` (the run's status does not allow it) |
/// | step job `get_run`, `get_runs` | `Validation` (a stored input or output that no longer deserialises); a missing run is `None` |
/// | dynamic `by_name` | `JobNotFound` |
/// | any operation of any kind after `shutdown` | `ShutDown` |
///
/// Any operation given an invalid instance id also returns `Validation`, and any operation that
/// touches the store may return `Storage` (also once the database file was deleted or replaced
/// under the engine). A broken instance is one whose stored state does not decode even after
/// migration (see "Deploys" in `docs/jobs.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job with this name is registered (dynamic calls by name).
    #[error("job not found: {name}")]
    JobNotFound {
        /// The name that was asked for.
        name: String,
    },

    /// The command needs an existing instance and there is none.
    #[error("cannot {operation} {instance}: instance not found")]
    InstanceNotFound {
        /// The instance that was addressed.
        instance: InstanceKey,
        /// The command.
        operation: Operation,
    },

    /// The command is not allowed in the instance's current state.
    #[error("cannot {operation} {instance} while it is {state}")]
    InvalidState {
        /// The instance that was addressed.
        instance: InstanceKey,
        /// The command.
        operation: Operation,
        /// The state that refused it.
        state: String,
    },

    /// Input was refused before anything was written.
    #[error("invalid {target}{}: {message}", job.as_ref().map(|j| format!(" for job {j}")).unwrap_or_default())]
    Validation {
        /// What was invalid.
        target: ValidationTarget,
        /// The job concerned, when known.
        job: Option<String>,
        /// Why it was refused.
        message: String,
    },

    /// User code (`execute`, `on_event`, ...) failed; the user's error is the source, or a
    /// [`Panicked`] when the code panicked.
    #[error("{operation} of {instance} failed: {source}")]
    Execution {
        /// The instance whose code failed.
        instance: InstanceKey,
        /// The command or alarm that ran it.
        operation: Operation,
        /// The user's error, downcastable with `source.downcast_ref::<MyError>()`.
        #[source]
        source: BoxError,
    },

    /// An event id was seen before for this instance; nothing changed.
    #[error("duplicate event {event_id} for {instance}")]
    DuplicateEvent {
        /// The instance that already saw the event.
        instance: InstanceKey,
        /// The repeated event id.
        event_id: String,
    },

    /// The store failed.
    #[error("storage failed during {operation}: {source}")]
    Storage {
        /// What the store was doing.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: BoxError,
    },

    /// The engine was shut down (or is shutting down): nothing was done. Every operation of
    /// every kind answers this after [`Engine::shutdown`](crate::Engine::shutdown).
    #[error("cannot {operation}: the engine is shut down")]
    ShutDown {
        /// The operation that was refused.
        operation: &'static str,
    },

    /// An alarm could not be computed.
    #[error("scheduler failed during {operation}: {message}")]
    Scheduler {
        /// What the scheduler was doing.
        operation: &'static str,
        /// Why it failed.
        message: String,
    },

    /// A wait (such as `trigger_and_wait`) ran out of time; the work itself goes on.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The command that waited.
        operation: Operation,
        /// How long it waited.
        after: std::time::Duration,
    },
}

impl Error {
    /// The error of a store call made for `operation`: [`Error::ShutDown`] once the store is
    /// closed (the engine shut down), [`Error::Storage`] otherwise. The one place a closed
    /// store becomes an error.
    pub(crate) fn from_store(operation: &'static str, e: StoreError) -> Self {
        match e {
            StoreError::Closed => Error::ShutDown { operation },
            other => Error::storage(operation, other),
        }
    }

    pub(crate) fn storage(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Storage {
            operation,
            source: source.into(),
        }
    }

    pub(crate) fn validation(
        target: ValidationTarget,
        job: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Validation {
            target,
            job: job.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// User code panicked: the source of the [`Error::Execution`] (or of a failed step, a failed
/// step-job run) that the panic became.
///
/// A panic in a handler is caught and handled as if the handler had returned an error: the
/// caller gets [`Error::Execution`] with a `Panicked` source, the failure is counted, reported
/// as `job.failed` and retried per the job's policy, and nothing the failed execution changed
/// is committed. Match on it with `source.downcast_ref::<Panicked>()`.
///
/// # Examples
///
/// ```
/// use durable_jobs::{Error, Panicked};
///
/// fn panicked(error: &Error) -> Option<&str> {
///     match error {
///         Error::Execution { source, .. } => source.downcast_ref::<Panicked>().map(Panicked::message),
///         _ => None,
///     }
/// }
/// # let _ = panicked;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// The panic's message (`panic!("...")`'s text), or a placeholder when the panic carried
    /// something other than a string.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Reads the message out of a panic's payload.
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic without a message".to_owned()
        };
        Panicked { message }
    }
}

/// Polls `fut` to its end, turning a panic inside it into [`Panicked`] instead of unwinding into
/// the caller. The future is not polled again after it panicked.
///
/// `fut` is `Unpin` (user code comes boxed), so the wrapper holds it as it is: wrapping a
/// future this way costs no copy of it and no allocation.
pub(crate) fn catch_panic<F: std::future::Future + Unpin>(fut: F) -> CatchPanic<F> {
    CatchPanic(fut)
}

/// The future of [`catch_panic`].
pub(crate) struct CatchPanic<F>(F);

impl<F: std::future::Future + Unpin> std::future::Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        use std::task::Poll;

        let fut = &mut self.0;
        // Unwind safety: after a panic the future is dropped unpolled, and what it borrowed is
        // only read again by code that treats the execution as failed.
        match catch_unwind(AssertUnwindSafe(|| std::pin::Pin::new(fut).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload.as_ref()))),
        }
    }
}

/// As [`catch_panic`], for synchronous user code.
pub(crate) fn catch_panic_sync<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| Panicked::from_payload(payload.as_ref()))
}

/// The operations named in errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Operation {
    /// Continuous `start`.
    Start,
    /// Continuous or task `trigger`.
    Trigger,
    /// `terminate`.
    Terminate,
    /// Debounce `add`.
    Add,
    /// Debounce `flush`.
    Flush,
    /// Debounce `clear`.
    Clear,
    /// Task `send`.
    Send,
    /// `status`.
    Status,
    /// `get_state`.
    GetState,
    /// An alarm firing.
    Alarm,
    /// Step job `trigger` or `batch_trigger`.
    TriggerRun,
    /// Step job `trigger_and_wait` or `wait_for_run`.
    WaitForRun,
    /// Step job `get_run` or `get_runs`.
    GetRun,
    /// Step job `retrigger`.
    Retrigger,
    /// Step job `cancel`.
    Cancel,
    /// Step job `delete_run`.
    DeleteRun,
    /// A step run executing.
    Run,
}

impl Operation {
    /// The lowercase name of the operation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Trigger => "trigger",
            Operation::Terminate => "terminate",
            Operation::Add => "add",
            Operation::Flush => "flush",
            Operation::Clear => "clear",
            Operation::Send => "send",
            Operation::Status => "status",
            Operation::GetState => "get_state",
            Operation::Alarm => "alarm",
            Operation::TriggerRun => "trigger",
            Operation::WaitForRun => "wait_for_run",
            Operation::GetRun => "get_run",
            Operation::Retrigger => "retrigger",
            Operation::Cancel => "cancel",
            Operation::DeleteRun => "delete_run",
            Operation::Run => "run",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Error::Validation`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ValidationTarget {
    /// An instance id.
    Id,
    /// A continuous job's start input or a step job's input.
    Input,
    /// A debounce or task event.
    Event,
    /// Job state, as produced by user code or as stored.
    State,
    /// An event id.
    EventId,
    /// A step job's output.
    Output,
    /// An idempotency or concurrency key, or a label.
    Key,
    /// Engine or job configuration.
    Config,
}

impl ValidationTarget {
    /// The variant's name in snake case: `id`, `event_id`, `config`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            ValidationTarget::Id => "id",
            ValidationTarget::Input => "input",
            ValidationTarget::Event => "event",
            ValidationTarget::State => "state",
            ValidationTarget::EventId => "event_id",
            ValidationTarget::Output => "output",
            ValidationTarget::Key => "key",
            ValidationTarget::Config => "config",
        }
    }
}

impl fmt::Display for ValidationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
