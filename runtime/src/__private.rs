//! Not public API. Used by generated code.
//!
//! The attribute macros and `registry!` name runtime items only through this module (and the
//! crate's public paths), so user code that shadows `Result`, `Option` or `core` cannot break
//! them. Nothing here is covered by semver.

pub use crate::engine::RegisterJob;
/// The step-job schema as the store's migrations leave it (2, then 4), for the benchmark's
/// raw-SQLite ceiling (it writes the same rows).
pub fn step_job_schema() -> String {
    use crate::store::sqlite::runs::{DROP_STEP_NAME_INDEX, RUNS_SCHEMA};
    format!("{RUNS_SCHEMA}\n{DROP_STEP_NAME_INDEX}")
}
/// The statements the store runs for a run that goes well, for the same ceiling.
pub use crate::store::sqlite::runs::statements as step_job_statements;
/// How an engine's store commits, read from its write connection, for the benchmark, which prints
/// it next to every figure it compares with another system.
pub use crate::store::Durability;
/// The [`Durability`] of `engine`'s store; `None` for a store without such settings.
pub async fn store_durability<R: crate::Registry>(
    engine: &crate::Engine<R>,
) -> Result<Option<Durability>, crate::store::StoreError> {
    engine.inner().store.durability().await
}
pub use serde;
pub use serde_json;
pub use std::time::Duration;

use crate::error::Error;
use crate::job::continuous::ContinuousContext;
use crate::job::schedule::Schedule;

/// `a == b`, usable in constants: `registry!` compares persisted names at compile time.
// In range: `i < a.len()`, and `b` has the same length. (A `const fn` cannot use `get` or
// iterators; and it runs at compile time, where a panic would be a compile error.)
#[allow(clippy::indexing_slicing)]
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The schedule of `#[continuous(cron = "...", tz = "...")]`.
///
/// # Panics
///
/// Never for arguments written by the macro: it validated the expression with the same
/// `croner` parser and settings as [`Schedule::cron`] and the zone with the same `chrono-tz`
/// (one lockfile resolves one version of each for both crates), and rejected the attribute at
/// compile time otherwise. `ContinuousJob::config` cannot return an error, and a wrong schedule
/// must not be replaced silently by another one, hence the `expect`. It would run once, when
/// the engine registers the job at start-up.
#[allow(clippy::expect_used)]
pub fn cron_schedule(expression: &'static str, time_zone: Option<&'static str>) -> Schedule {
    Schedule::cron(expression, time_zone)
        .expect("cron expression validated by #[continuous] at compile time")
}

/// The error of `JobsName::from_str` for a name that is not in the registry.
pub fn job_not_found(name: &str) -> Error {
    Error::JobNotFound {
        name: name.to_owned(),
    }
}

/// The state type of a continuous job's context, for a context written through an alias.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the context of a continuous job",
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

/// Wrong-kind diagnostics. Each job macro implements the three other kind traits for its job
/// under a `where` clause naming one of these traits, which have no implementations. Using a
/// job with the accessor of another kind then fails on that clause, with a message naming the
/// job's kind and the accessor to use.
pub mod kind {
    /// Marks a `#[continuous]` job in wrong-kind diagnostics.
    #[derive(Debug)]
    pub struct Continuous;
    /// Marks a `#[debounce]` job in wrong-kind diagnostics.
    #[derive(Debug)]
    pub struct Debounce;
    /// Marks a `#[task]` job in wrong-kind diagnostics.
    #[derive(Debug)]
    pub struct Task;
    /// Marks a `#[step_job]` in wrong-kind diagnostics.
    #[derive(Debug)]
    pub struct Step;

    macro_rules! wrong_kind {
        ($($name:ident: $message:literal, $label:literal, $note:literal;)*) => {$(
            /// A wrong-kind diagnostic, never implemented; see the module documentation.
            #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
            pub trait $name<J, A> {
                /// Never callable: the trait has no implementations.
                fn unreachable() -> core::convert::Infallible;
            }
        )*};
    }

    wrong_kind! {
        ContinuousNotDebounce: "`{J}` is a #[continuous] job, not a #[debounce] job", "a #[continuous] job", "call it with `client.continuous::<{J}>()`";
        ContinuousNotTask: "`{J}` is a #[continuous] job, not a #[task] job", "a #[continuous] job", "call it with `client.continuous::<{J}>()`";
        ContinuousNotStep: "`{J}` is a #[continuous] job, not a #[step_job]", "a #[continuous] job", "call it with `client.continuous::<{J}>()`";
        DebounceNotContinuous: "`{J}` is a #[debounce] job, not a #[continuous] job", "a #[debounce] job", "call it with `client.debounce::<{J}>()`";
        DebounceNotTask: "`{J}` is a #[debounce] job, not a #[task] job", "a #[debounce] job", "call it with `client.debounce::<{J}>()`";
        DebounceNotStep: "`{J}` is a #[debounce] job, not a #[step_job]", "a #[debounce] job", "call it with `client.debounce::<{J}>()`";
        TaskNotContinuous: "`{J}` is a #[task] job, not a #[continuous] job", "a #[task] job", "call it with `client.task::<{J}>()`";
        TaskNotDebounce: "`{J}` is a #[task] job, not a #[debounce] job", "a #[task] job", "call it with `client.task::<{J}>()`";
        TaskNotStep: "`{J}` is a #[task] job, not a #[step_job]", "a #[task] job", "call it with `client.task::<{J}>()`";
        StepNotContinuous: "`{J}` is a #[step_job], not a #[continuous] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`";
        StepNotDebounce: "`{J}` is a #[step_job], not a #[debounce] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`";
        StepNotTask: "`{J}` is a #[step_job], not a #[task] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_eq_compares_bytes() {
        assert!(str_eq("", ""));
        assert!(str_eq("token_refresher", "token_refresher"));
        assert!(!str_eq("a", "b"));
        assert!(!str_eq("ab", "a"));
    }
}
