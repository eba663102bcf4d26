//! Attribute macros of durable-jobs. Use them through the `durable-jobs` crate, which re-exports
//! them and documents them: [`continuous`], [`debounce`], [`task`], [`step_job`] and
//! [`registry!`].
//!
//! Each attribute reads its arguments into checked settings (`attr`), checks the shape of the
//! item it goes on (`ast`) and generates the job's type and trait impls (`expand`); `registry!`
//! generates the registry (`registry`). Every check collects all its errors, each on the
//! smallest guilty token.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod duration;
mod errors;
mod expand;
mod names;
mod registry;

use attr::Kind;

/// Defines a continuous job from an `async fn`: a recurring `execute` with persisted state.
///
/// See the documentation in the `durable-jobs` crate.
#[proc_macro_attribute]
pub fn continuous(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Continuous, args.into(), item.into()).into()
}

/// Defines a debounce job on `impl DebounceJob<App> for YourType`.
///
/// See the documentation in the `durable-jobs` crate.
#[proc_macro_attribute]
pub fn debounce(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Debounce, args.into(), item.into()).into()
}

/// Defines a task job on `impl TaskJob<App> for YourType`.
///
/// See the documentation in the `durable-jobs` crate.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Task, args.into(), item.into()).into()
}

/// Defines a step job from an `async fn(step: &mut StepContext, input: Input, app: &App)`.
///
/// See the documentation in the `durable-jobs` crate.
#[proc_macro_attribute]
pub fn step_job(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Step, args.into(), item.into()).into()
}

/// Lists the jobs of an application: `registry! { pub Jobs<App> { JobA, JobB } }`.
///
/// See the documentation in the `durable-jobs` crate.
#[proc_macro]
pub fn registry(input: TokenStream) -> TokenStream {
    registry::expand(input.into()).into()
}
