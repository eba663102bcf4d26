//! The types of a job's code: a function job's signature read through type aliases (the state
//! type of its context, the success and error types of its result), and the future of a
//! step's closure.

use std::future::Future;

use crate::error::BoxError;
use crate::job::continuous::ContinuousContext;

/// The state type of a continuous job's context, for a context written through an alias.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the context of a #[continuous] job",
    label = "expected `ContinuousContext<State>`",
    note = "the first parameter of a #[continuous] function is `ctx: &mut ContinuousContext<State>`"
)]
pub trait ContinuousContextParts {
    /// The job's state.
    type State;
}

impl<S> ContinuousContextParts for ContinuousContext<S> {
    type State = S;
}

/// The success and error types of a job function's return type, for a `Result` written
/// through an alias such as `anyhow::Result<()>`.
#[diagnostic::on_unimplemented(
    message = "a job function returns a `Result`, not `{Self}`",
    label = "expected `Result<_, Error>`",
    note = "a #[continuous] function returns `Result<(), Error>`, a #[step_job] function `Result<Output, Error>`"
)]
pub trait ResultParts {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
}

impl<T, E> ResultParts for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// The future a step's closure returns: one that resolves to `Result<T, BoxError>`.
///
/// The error type is fixed rather than generic so that a closure which only returns `Ok(..)`
/// or converts its errors with `?` needs no type annotation: the bound names the error type
/// for it. A closure whose future resolves to another error type (the service's own, say)
/// gets this trait's message instead of rustc's type mismatch.
#[diagnostic::on_unimplemented(
    message = "a step's closure returns `Result<_, BoxError>`, and this one returns another type",
    label = "the closure's future resolves to another `Result`, or to no `Result`",
    note = "convert the error with `?` inside `Ok(..)`: `|_| async {{ Ok(fetch_user(id).await?) }}`, or return `Err(e.into())`"
)]
pub trait StepBody<T>: Future<Output = Result<T, BoxError>> {}

// `do_not_recommend`: a closure with another output fails on `StepBody` itself, with its
// message, not on the `Future::Output` projection.
#[diagnostic::do_not_recommend]
impl<T, F: Future<Output = Result<T, BoxError>>> StepBody<T> for F {}
