//! Job kinds as types, and what they decide at compile time: which accessor of the typed client
//! takes a job, and how `registry!` adds it to the engine.
//!
//! Each job attribute records its job's kind as a type ([`KindOf::Kind`], e.g.
//! [`ContinuousKind`]) and how to make the job's value ([`KindOf::job`]).
//!
//! **Wrong kind.** Each kind trait has one implementation for every attributed job whose kind is
//! another one, under a `where` clause that no job meets: `TaskJob` is implemented for `J` where
//! `J::Kind: ContinuousNotTask<J> + DebounceNotTask<J> + StepNotTask<J>`. [`ContinuousKind`]
//! implements the last two, so for a continuous job exactly one clause fails, and rustc reports
//! it with that trait's message ("`TokenRefresher` is a #[continuous] job, not a #[task] job")
//! and note (the accessor to call). [`TaskKind`] implements none of them, so the implementation
//! never overlaps a task job's own. The kinds' implementations are `do_not_recommend`, so rustc
//! does not list them.
//!
//! **Registration.** [`RegisterJob`] is implemented for every attributed job through its kind
//! ([`Registers`]), and is `do_not_recommend`: when a listed type is no job of the registry's
//! app type, the error is `RegisterJob`'s own sentence, whatever deeper bound failed.
//!
//! Every `do_not_recommend` of this crate is here or in the other `checks` modules: the code the
//! macros generate carries no `#[diagnostic]` attribute, which would not resolve in a module
//! under `#[no_implicit_prelude]`.

use std::convert::Infallible;
use std::future::{pending, Future};

use crate::engine::{JobSet, RegisterJob};
use crate::job::continuous::{ContinuousConfig, ContinuousContext, ContinuousJob};
use crate::job::debounce::{DebounceConfig, DebounceJob, EventContext, FlushContext};
use crate::job::step::StepJob;
use crate::job::task::{TaskContext, TaskJob};
use crate::job::Job;
use crate::steps::StepContext;

/// The kind of a job defined with an attribute, as a type, and its value. The attributes
/// implement it.
pub trait KindOf: Job + Sized {
    /// [`ContinuousKind`], [`DebounceKind`], [`TaskKind`] or [`StepKind`].
    type Kind;

    /// The job. Job types are unit structs: what a job needs at run time comes from the app.
    fn job() -> Self;
}

/// [`KindOf`], through an implementation rustc does not recommend: a type that is no attributed
/// job fails on the bound that needed it, not on `KindOf` with a list of every job.
pub trait Kinded: Job + Sized {
    /// [`KindOf::Kind`].
    type Kind;
    /// [`KindOf::job`].
    fn job() -> Self;
}

#[diagnostic::do_not_recommend]
impl<J: KindOf> Kinded for J {
    type Kind = <J as KindOf>::Kind;
    fn job() -> Self {
        <J as KindOf>::job()
    }
}

/// The kind of `#[continuous]` jobs.
#[derive(Clone, Copy, Debug)]
pub struct ContinuousKind;
/// The kind of `#[debounce]` jobs.
#[derive(Clone, Copy, Debug)]
pub struct DebounceKind;
/// The kind of `#[task]` jobs.
#[derive(Clone, Copy, Debug)]
pub struct TaskKind;
/// The kind of `#[step_job]`s.
#[derive(Clone, Copy, Debug)]
pub struct StepKind;

macro_rules! wrong_kind {
    ($(
        $name:ident: $message:literal, $label:literal, $note:literal,
        implemented by $($other:ident),+;
    )*) => {$(
        /// Fails, with its message, for a job of the kind this name starts with called through
        /// the accessor of the kind it ends with; the two other kinds implement it. See
        /// [`checks`](crate::checks).
        #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
        pub trait $name<J> {}

        $(
            #[diagnostic::do_not_recommend]
            impl<J> $name<J> for $other {}
        )+
    )*};
}

// `XNotY` fails for a job of kind X called as a Y. A kind implements every such trait about two
// other kinds, so that of the three clauses on a kind trait's implementation it fails exactly
// the one that names it, while the kind of the trait itself fails all three.
wrong_kind! {
    ContinuousNotDebounce: "`{J}` is a #[continuous] job, not a #[debounce] job", "a #[continuous] job", "call it with `client.continuous::<{J}>()`",
        implemented by TaskKind, StepKind;
    ContinuousNotTask: "`{J}` is a #[continuous] job, not a #[task] job", "a #[continuous] job", "call it with `client.continuous::<{J}>()`",
        implemented by DebounceKind, StepKind;
    ContinuousNotStep: "`{J}` is a #[continuous] job, not a #[step_job]", "a #[continuous] job", "call it with `client.continuous::<{J}>()`",
        implemented by DebounceKind, TaskKind;
    DebounceNotContinuous: "`{J}` is a #[debounce] job, not a #[continuous] job", "a #[debounce] job", "call it with `client.debounce::<{J}>()`",
        implemented by TaskKind, StepKind;
    DebounceNotTask: "`{J}` is a #[debounce] job, not a #[task] job", "a #[debounce] job", "call it with `client.debounce::<{J}>()`",
        implemented by ContinuousKind, StepKind;
    DebounceNotStep: "`{J}` is a #[debounce] job, not a #[step_job]", "a #[debounce] job", "call it with `client.debounce::<{J}>()`",
        implemented by ContinuousKind, TaskKind;
    TaskNotContinuous: "`{J}` is a #[task] job, not a #[continuous] job", "a #[task] job", "call it with `client.task::<{J}>()`",
        implemented by DebounceKind, StepKind;
    TaskNotDebounce: "`{J}` is a #[task] job, not a #[debounce] job", "a #[task] job", "call it with `client.task::<{J}>()`",
        implemented by ContinuousKind, StepKind;
    TaskNotStep: "`{J}` is a #[task] job, not a #[step_job]", "a #[task] job", "call it with `client.task::<{J}>()`",
        implemented by ContinuousKind, DebounceKind;
    StepNotContinuous: "`{J}` is a #[step_job], not a #[continuous] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`",
        implemented by DebounceKind, TaskKind;
    StepNotDebounce: "`{J}` is a #[step_job], not a #[debounce] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`",
        implemented by ContinuousKind, TaskKind;
    StepNotTask: "`{J}` is a #[step_job], not a #[task] job", "a #[step_job]", "call it with `client.step_job::<{J}>()`",
        implemented by ContinuousKind, DebounceKind;
}

/// The body of the implementations below: they apply to no type (see the module
/// documentation), so nothing can call them.
fn unselectable() -> ! {
    unreachable!("a wrong-kind implementation was selected; its `where` clause holds for no type")
}

#[doc(hidden)]
impl<A, J> ContinuousJob<A> for J
where
    A: Send + Sync + 'static,
    J: Kinded,
    J::Kind: DebounceNotContinuous<J> + TaskNotContinuous<J> + StepNotContinuous<J>,
{
    type State = ();
    type Error = Infallible;

    fn config(&self) -> ContinuousConfig {
        unselectable()
    }

    fn execute(
        &self,
        _: &mut ContinuousContext<()>,
        _: &A,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        pending()
    }
}

#[doc(hidden)]
impl<A, J> DebounceJob<A> for J
where
    A: Send + Sync + 'static,
    J: Kinded,
    J::Kind: ContinuousNotDebounce<J> + TaskNotDebounce<J> + StepNotDebounce<J>,
{
    type Event = ();
    type State = ();
    type Error = Infallible;

    fn config(&self) -> DebounceConfig {
        unselectable()
    }

    fn on_event(&self, _: Option<()>, _: (), _: &EventContext) {}

    fn execute(
        &self,
        _: &mut FlushContext<()>,
        _: &A,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        pending()
    }
}

#[doc(hidden)]
impl<A, J> TaskJob<A> for J
where
    A: Send + Sync + 'static,
    J: Kinded,
    J::Kind: ContinuousNotTask<J> + DebounceNotTask<J> + StepNotTask<J>,
{
    type State = ();
    type Event = ();
    type Error = Infallible;

    fn on_event(
        &self,
        _: &mut TaskContext<()>,
        _: (),
        _: &A,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        pending()
    }

    fn execute(
        &self,
        _: &mut TaskContext<()>,
        _: &A,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        pending()
    }
}

#[doc(hidden)]
impl<A, J> StepJob<A> for J
where
    A: Send + Sync + 'static,
    J: Kinded,
    J::Kind: ContinuousNotStep<J> + DebounceNotStep<J> + TaskNotStep<J>,
{
    type Input = ();
    type Output = ();
    type Error = Infallible;

    fn run(
        &self,
        _: &mut StepContext,
        _: (),
        _: &A,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        pending()
    }
}

/// How a job of each kind is added to a [`JobSet`].
pub trait Registers<J, A> {
    /// Adds `J` to `jobs`.
    fn register(jobs: &mut JobSet<A>);
}

impl<J: ContinuousJob<A> + Kinded, A: Send + Sync + 'static> Registers<J, A> for ContinuousKind {
    fn register(jobs: &mut JobSet<A>) {
        jobs.continuous(J::job());
    }
}

impl<J: DebounceJob<A> + Kinded, A: Send + Sync + 'static> Registers<J, A> for DebounceKind {
    fn register(jobs: &mut JobSet<A>) {
        jobs.debounce(J::job());
    }
}

impl<J: TaskJob<A> + Kinded, A: Send + Sync + 'static> Registers<J, A> for TaskKind {
    fn register(jobs: &mut JobSet<A>) {
        jobs.task(J::job());
    }
}

impl<J: StepJob<A> + Kinded, A: Send + Sync + 'static> Registers<J, A> for StepKind {
    fn register(jobs: &mut JobSet<A>) {
        jobs.step_job(J::job());
    }
}

#[diagnostic::do_not_recommend]
impl<J, A> RegisterJob<A> for J
where
    J: Kinded,
    J::Kind: Registers<J, A>,
{
    fn register_into(jobs: &mut JobSet<A>) {
        <J::Kind as Registers<J, A>>::register(jobs);
    }
}
