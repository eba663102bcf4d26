//! The bounds of the typed client's accessors: `client.task::<J>()` takes a `J:
//! TaskJobOf<Jobs>`, a `TaskJob` for the registry's app type.
//!
//! The accessors are bounded on these rather than on the kind traits themselves because of what
//! rustc adds to an error: it lists the implementations of the bound that failed, and the kind
//! traits' implementations are the user's jobs ("the trait `TaskJob` is implemented for
//! `OrderProcessor`"), while these have one implementation each, generic, which it never lists.

use crate::engine::Registry;
use crate::job::continuous::ContinuousJob;
use crate::job::debounce::DebounceJob;
use crate::job::step::StepJob;
use crate::job::task::TaskJob;

macro_rules! job_of {
    ($($name:ident: $kind:ident, $message:literal, $label:literal, $note:literal;)*) => {$(
        #[doc = concat!("A `", stringify!($kind), "` for the app type of the registry `R`.")]
        #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
        pub trait $name<R: Registry>: $kind<R::App> {}

        impl<R: Registry, J: $kind<R::App>> $name<R> for J {}
    )*};
}

job_of! {
    ContinuousJobOf: ContinuousJob, "`{Self}` is not a #[continuous] job", "not a #[continuous] job",
        "`client.continuous::<J>()` takes a job defined with #[continuous]; a #[debounce] job is reached with `client.debounce::<J>()`, a #[task] job with `client.task::<J>()`, a #[step_job] with `client.step_job::<J>()`";
    DebounceJobOf: DebounceJob, "`{Self}` is not a #[debounce] job", "not a #[debounce] job",
        "`client.debounce::<J>()` takes a job defined with #[debounce]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[task] job with `client.task::<J>()`, a #[step_job] with `client.step_job::<J>()`";
    TaskJobOf: TaskJob, "`{Self}` is not a #[task] job", "not a #[task] job",
        "`client.task::<J>()` takes a job defined with #[task]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[debounce] job with `client.debounce::<J>()`, a #[step_job] with `client.step_job::<J>()`";
    StepJobOf: StepJob, "`{Self}` is not a #[step_job]", "not a #[step_job]",
        "`client.step_job::<J>()` takes a job defined with #[step_job]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[debounce] job with `client.debounce::<J>()`, a #[task] job with `client.task::<J>()`";
}
