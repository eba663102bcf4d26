//! The types of a job's code: a function job's signature read through type aliases (the state
//! type of its context, the success and error types of its result), and the error type of a
//! step's closure.

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

/// The error type of a step's closure: anything that converts into a boxed error, like a job's.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an error type a step can fail with",
    label = "the step's closure returns `Result<_, {Self}>`",
    note = "a step fails with a type that converts into `Box<dyn std::error::Error + Send + Sync>`: an error type (`#[derive(thiserror::Error)]`), `String`, `anyhow::Error`, ..."
)]
pub trait StepFailure: Into<BoxError> {}

// `do_not_recommend`: a type that is no error fails on `StepFailure` itself, not on `Into`.
#[diagnostic::do_not_recommend]
impl<E: Into<BoxError>> StepFailure for E {}
