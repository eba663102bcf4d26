//! What `registry!` records and checks: which jobs a registry lists, and that no two of them
//! share a persisted name.

use crate::job::Registered;

/// Implemented by `registry!` for its registry type, once per listed job. A job is
/// [`Registered`] in every registry that lists it; that implementation is `do_not_recommend`, so
/// a job that is not listed fails on `Registered`'s message alone.
pub trait ListsJob<J> {}

#[diagnostic::do_not_recommend]
impl<R: ListsJob<J>, J> Registered<R> for J {}

/// Whether two persisted names are equal, as a type: `registry!` checks every pair of its jobs
/// with `NamesEqual<{ a == b }>: DistinctNames<A, B, Registry>`.
#[derive(Clone, Copy, Debug)]
pub struct NamesEqual<const EQUAL: bool>;

/// Holds for [`NamesEqual<false>`] only.
pub trait Unequal {}

impl Unequal for NamesEqual<false> {}

/// Holds when jobs `A` and `B` of registry `R` have different persisted names.
#[diagnostic::on_unimplemented(
    message = "`{A}` and `{B}` in `{R}` have the same persisted name",
    label = "the store could not tell `{B}` from `{A}`",
    note = "give one of them another with `name = \"...\"` in its attribute, keeping the name of the one whose instances are already stored"
)]
pub trait DistinctNames<A, B, R> {
    /// Named by `registry!` to make the check.
    const CHECKED: () = ();
}

// Written for any `T: Unequal` rather than for `NamesEqual<false>`, so that rustc, finding no
// implementation for a type like `NamesEqual<true>`, does not add "but it is implemented for
// `NamesEqual<false>`" to the error.
#[diagnostic::do_not_recommend]
impl<T: Unequal, A, B, R> DistinctNames<A, B, R> for T {}
