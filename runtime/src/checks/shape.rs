//! Reading a function job's signature when it is written through type aliases: the state type
//! of its context and the success and error types of its result.

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
