//! The traits and types behind the compile-time checks of jobs, the registry and the typed
//! client.
//!
//! Nothing here is meant to be named in your code: the job attributes and `registry!`
//! implement and use these items, and jobs written by hand need none of them. They are public,
//! and documented, because rustc names them when it explains a compile error: a wrong-kind
//! call fails on [`ContinuousNotTask`], a duplicate persisted name on [`DistinctNames`]. Each
//! error's message says what is wrong and its note what to write instead;
//! `docs/compile-errors.md` lists them all.
//!
//! Three techniques keep every mistake to one error at the user's own token:
//! - `#[diagnostic::on_unimplemented]` on every trait a mistake can fail, so the headline is a
//!   sentence about the mistake;
//! - `#[diagnostic::do_not_recommend]` on the implementations a failure goes through, so rustc
//!   reports the bound the user's code asked for ([`RegisterJob`], [`Registered`](crate::Registered),
//!   [`Payload`](crate::Payload)) rather than a deeper one;
//! - implementations generic over their `Self` type ([`DistinctNames`], [`TaskJobOf`]), which
//!   rustc never offers as "the trait is implemented for ..." suggestions, since those would
//!   contradict the error's sentence.
//!
//! The macros' generated code itself carries no `#[diagnostic]` attribute: one would not
//! resolve in a module under `#[no_implicit_prelude]`.

mod client;
mod kind;
mod registry;
mod shape;

pub use client::{ContinuousJobOf, DebounceJobOf, StepJobOf, TaskJobOf};
pub use kind::{
    ContinuousKind, ContinuousNotDebounce, ContinuousNotStep, ContinuousNotTask, DebounceKind,
    DebounceNotContinuous, DebounceNotStep, DebounceNotTask, KindOf, Kinded, Registers, StepKind,
    StepNotContinuous, StepNotDebounce, StepNotTask, TaskKind, TaskNotContinuous, TaskNotDebounce,
    TaskNotStep,
};
pub use registry::{DistinctNames, ListsJob, NamesEqual, Unequal};
pub use shape::{ContinuousContextParts, ResultParts, StepBody};

pub use crate::engine::RegisterJob;
