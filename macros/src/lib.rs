//! Attribute macros of durable-jobs. Use them through the `durable-jobs` crate, which re-exports
//! them: `#[durable_jobs::continuous]`, `#[durable_jobs::debounce]`, `#[durable_jobs::task]`,
//! `#[durable_jobs::step_job]` and `durable_jobs::registry!`.
//!
//! Each attribute reads its arguments into checked settings (`attr`), checks the shape of the
//! item it goes on (`ast`) and the types it names (`valid`), then generates the job's type and
//! trait impls (`expand`), with stand-ins next to any error (`fallback`); `registry!` generates
//! the registry (`registry`). Every check collects all its errors, each on the smallest guilty
//! token, and quotes the fix; each mistake is one error. `docs/compile-errors.md` lists them.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod duration;
mod errors;
mod expand;
mod fallback;
mod names;
mod registry;
mod valid;

use attr::Kind;

/// Defines a continuous job from an `async fn`: a recurring run with persisted state.
///
/// ```text
/// #[continuous(
///     every = "30m" | cron = "0 4 * * *",      // one schedule, required
///     tz = "Europe/Paris",                      // with `cron` only; UTC by default
///     start_immediately = false,                // default true: `start` runs it at once
///     retry(max_attempts = 5, backoff = exponential("1s", max = "30s"),
///           jitter = false, max_duration = "10m"),
///     on_retry_exhausted = path::to::hook,      // async fn(RetryExhausted<State>[, &App])
///     state_version = 2,                        // default 0; see `ContinuousJob::STATE_VERSION`
///     migrate = path::to::migrate,              // fn(serde_json::Value, u32) -> Result<State, E>
///     name = "token_refresher",                 // persisted name; default: the fn name
/// )]
/// async fn token_refresher(ctx: &mut ContinuousContext<State>, app: &App) -> Result<(), E>
/// ```
///
/// The function stays as written. The macro adds `struct TokenRefresher;` (the function's name
/// in PascalCase, with its visibility and documentation) implementing
/// [`Job`](../durable_jobs/trait.Job.html) and `ContinuousJob<App>`. Without the `app`
/// parameter the job runs in a registry of any app type.
///
/// Durations are numbers with units (`ms`, `s`, `m`, `h`, `d`, `w`), as the `humantime` crate
/// reads them: `"500ms"`, `"30s"`, `"1h30m"`, `"1h 30m"`. Cron expressions have 5 fields, or 6 with leading seconds. Both, and the
/// time zone, are checked at compile time. Backoffs: `constant("5s")`,
/// `linear("1s", "2s", max = "30s")`, `exponential("1s", factor = 2.0, max = "30s")`.
///
/// # Examples
///
/// ```
/// use durable_jobs::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// pub struct App;
///
/// #[derive(Serialize, Deserialize, Clone)]
/// pub struct Tokens { pub refresh_token: String }
///
/// #[durable_jobs::continuous(every = "30m", retry(max_attempts = 5))]
/// async fn token_refresher(ctx: &mut ContinuousContext<Tokens>, app: &App) -> Result<(), std::io::Error> {
///     if ctx.state().refresh_token.is_empty() {
///         return ctx.terminate("no refresh token");
///     }
///     Ok(())
/// }
///
/// assert_eq!(<TokenRefresher as Job>::NAME, "token_refresher");
/// ```
#[proc_macro_attribute]
pub fn continuous(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Continuous, args.into(), item.into()).into()
}

/// Defines a debounce job on `impl DebounceJob<App> for YourType`: events folded into a batch,
/// flushed after a window, a quiet period or a count.
///
/// ```text
/// #[debounce(
///     flush_after = "5s",     // required: the longest a batch waits after its first event
///     quiet = "1s",           // also flush once no event came for this long
///     max_events = 100,       // also flush inside the `add` that reaches this count
///     retry(max_attempts = 3, ...),
///     name = "webhook_batcher",   // persisted name; default: the type name in snake_case
/// )]
/// impl DebounceJob<App> for WebhookBatcher { type Event; type State; type Error; fn on_event; async fn execute; }
/// ```
///
/// The macro writes `fn config` from the arguments and adds the `Job` impl. `impl DebounceJob
/// for WebhookBatcher`, without an app type, defines a job for any app type: its `execute` and
/// `on_retry_exhausted` then take no `app` parameter.
///
/// # Examples
///
/// ```
/// use durable_jobs::prelude::*;
///
/// pub struct App;
/// pub struct WebhookBatcher;
///
/// #[durable_jobs::debounce(flush_after = "5s", quiet = "1s", max_events = 100)]
/// impl DebounceJob<App> for WebhookBatcher {
///     type Event = String;
///     type State = Vec<String>;
///     type Error = std::io::Error;
///
///     fn on_event(&self, state: Option<Vec<String>>, event: String, _ctx: &EventContext) -> Vec<String> {
///         let mut batch = state.unwrap_or_default();
///         batch.push(event);
///         batch
///     }
///
///     async fn execute(&self, ctx: &mut FlushContext<Vec<String>>, _app: &App) -> Result<(), std::io::Error> {
///         println!("{} webhooks ({})", ctx.state().len(), ctx.flush_reason());
///         Ok(())
///     }
/// }
///
/// assert_eq!(<WebhookBatcher as Job>::NAME, "webhook_batcher");
/// ```
#[proc_macro_attribute]
pub fn debounce(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Debounce, args.into(), item.into()).into()
}

/// Defines a task job on `impl TaskJob<App> for YourType`: an event-driven state machine that
/// schedules its own `execute`.
///
/// ```text
/// #[task(name = "orders")]   // persisted name; default: the type name in snake_case
/// impl TaskJob<App> for OrderProcessor { type State; type Event; type Error; async fn on_event; async fn execute; }
/// ```
///
/// `impl TaskJob for OrderProcessor`, without an app type, defines a job for any app type: its
/// handlers then take no `app` parameter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::prelude::*;
///
/// pub struct Reminder;
///
/// #[durable_jobs::task]
/// impl TaskJob for Reminder {
///     type State = String;
///     type Event = String;
///     type Error = std::convert::Infallible;
///
///     async fn on_event(&self, ctx: &mut TaskContext<String>, text: String) -> Result<(), Self::Error> {
///         ctx.set_state(text);
///         ctx.schedule_in(Duration::from_secs(3600));
///         Ok(())
///     }
///
///     async fn execute(&self, ctx: &mut TaskContext<String>) -> Result<(), Self::Error> {
///         println!("reminder: {:?}", ctx.state());
///         ctx.terminate()
///     }
/// }
///
/// assert_eq!(<Reminder as Job>::NAME, "reminder");
/// ```
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Task, args.into(), item.into()).into()
}

/// Defines a step job from an `async fn`: a run of memoised steps that resumes after a crash.
///
/// ```text
/// #[step_job(
///     retry(max_attempts = 3, ...),
///     name = "sync-users",      // persisted name; default: the fn name
/// )]
/// async fn sync_users(step: &mut StepContext, input: Input, app: &App) -> Result<Output, E>
/// ```
///
/// The function stays as written; the macro adds `struct SyncUsers;` implementing `Job` and
/// `StepJob<App>` with `Input`, `Output` and `Error` taken from the signature. Without the `app`
/// parameter the job runs in a registry of any app type.
///
/// # Examples
///
/// ```
/// use durable_jobs::prelude::*;
///
/// #[durable_jobs::step_job(name = "sync-users", retry(max_attempts = 3))]
/// async fn sync_users(_step: &mut StepContext, org_id: String) -> Result<usize, std::io::Error> {
///     Ok(org_id.len())
/// }
///
/// assert_eq!(<SyncUsers as Job>::NAME, "sync-users");
/// ```
#[proc_macro_attribute]
pub fn step_job(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Step, args.into(), item.into()).into()
}

/// Lists the jobs of an application.
///
/// ```text
/// registry! {
///     /// Documentation of the registry.
///     pub Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
/// }
/// ```
///
/// `<App>` is the application state handed to handlers; without it, `()`. Generates:
///
/// - `pub struct Jobs;` implementing [`Registry`](../durable_jobs/trait.Registry.html), and
///   `Jobs::builder()`, the same as `Engine::<Jobs>::builder()`;
/// - `Registered<Jobs>` for each listed job, so the typed client (`client.task::<J>()`, ...)
///   refuses, at compile time, a job that is not listed;
/// - `pub enum JobsName { TokenRefresher, ... }` with `as_str()` (the persisted name), `kind()`,
///   `ALL`, `FromStr` (unknown names give `Error::JobNotFound`) and `Display`;
/// - a compile-time check that no two listed jobs share a persisted name.
///
/// # Examples
///
/// ```
/// use durable_jobs::prelude::*;
///
/// #[durable_jobs::continuous(every = "1m")]
/// async fn heartbeat(ctx: &mut ContinuousContext<u64>) -> Result<(), std::io::Error> {
///     *ctx.state_mut() += 1;
///     Ok(())
/// }
///
/// durable_jobs::registry! {
///     /// The jobs of this service.
///     pub Jobs { Heartbeat }
/// }
///
/// assert_eq!(JobsName::Heartbeat.as_str(), "heartbeat");
/// assert_eq!("heartbeat".parse::<JobsName>().unwrap(), JobsName::Heartbeat);
/// let _builder = Jobs::builder();
/// ```
#[proc_macro]
pub fn registry(input: TokenStream) -> TokenStream {
    registry::expand(input.into()).into()
}
