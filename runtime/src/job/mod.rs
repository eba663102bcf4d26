//! What a job is: the [`Job`] identity trait, one trait per kind, their configuration and the
//! contexts handed to user code.
//!
//! The attribute macros implement these traits; they can also be implemented by hand.

pub mod continuous;
pub mod debounce;
pub mod schedule;
pub mod step;
pub mod task;

use crate::error::BoxError;
use crate::id::JobKind;

/// The identity every job has: its persisted name and its kind.
///
/// The name is what the store keys instances by. Renaming a Rust type or function does not
/// change it, so stored instances are never orphaned by a refactor; the attribute macros derive
/// it from the function or type name (`snake_case`) unless `name = "..."` is given.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a durable job",
    label = "not a job",
    note = "annotate it with #[continuous], #[debounce], #[task] or #[step_job]"
)]
pub trait Job: Send + Sync + 'static {
    /// The persisted name.
    const NAME: &'static str;
    /// The kind.
    const KIND: JobKind;
}

/// Marks a job as listed in the registry `R`.
///
/// `registry!` records each job it lists ([`ListsJob`](crate::checks::ListsJob)), which makes
/// the job `Registered` in that registry, so a job that exists but was not listed fails to
/// compile where the client uses it. A registry written by hand implements it directly.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not registered in `{R}`",
    label = "this job is not in the registry",
    note = "add `{Self}` to the list in the `registry!` invocation that defines `{R}`"
)]
pub trait Registered<R> {}

/// A user error type: anything that converts into a boxed error (`std` errors, `String`,
/// `anyhow::Error`, ...).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an error type a job can return",
    label = "not an error",
    note = "a job fails with a type that converts into `Box<dyn std::error::Error + Send + Sync>`: an error type (`#[derive(thiserror::Error)]`), `String`, `anyhow::Error`, ..."
)]
pub trait JobError: Into<BoxError> + Send + 'static {}
// `do_not_recommend`: a type that is no error fails on `JobError` itself, once, not on each of
// the bounds below.
#[diagnostic::do_not_recommend]
impl<E: Into<BoxError> + Send + 'static> JobError for E {}

/// Types stored as job state, input or events: serialisable, owned and sendable.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored as a job's state, event, input or output",
    label = "not serialisable",
    note = "the store keeps it as JSON and handlers run on other threads: derive `serde::Serialize` and `serde::Deserialize`, and keep it `Send + Sync + 'static`"
)]
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}
// `do_not_recommend`: a type without `Serialize` and `Deserialize` fails on `Payload` once, not
// once per missing trait.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Payload for T {}

/// What `on_retry_exhausted` learns when a retry policy gives up.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryExhausted<S> {
    /// The instance, which is purged after the hook returns.
    pub instance: crate::id::InstanceKey,
    /// The last stored state.
    pub state: Option<S>,
    /// Attempts made, counting the first.
    pub attempts: u32,
    /// Why the policy gave up.
    pub reason: crate::retry::ExhaustionReason,
    /// The message of the last error.
    pub last_error: String,
    /// Time from the first attempt to exhaustion.
    pub total_duration: std::time::Duration,
}
