//! The set of jobs an engine runs, and the [`Registry`] trait the `registry!` macro implements.

use std::collections::HashMap;
use std::sync::Arc;

use super::erased::{self, ContinuousHandler, DebounceHandler, TaskHandler};
use crate::error::{Error, ValidationTarget};
use crate::id::JobKind;
use crate::job::continuous::ContinuousJob;
use crate::job::debounce::DebounceJob;
use crate::job::step::StepJob;
use crate::job::task::TaskJob;
use crate::job::Job;
use crate::steps::ErasedStepJob;

/// An application's list of jobs and the type of the application state their handlers receive.
///
/// `registry!` implements it (with compile-time checks that names are unique); it can be
/// implemented by hand, together with [`Registered`](crate::Registered) for each listed job.
///
/// # Examples
///
/// ```
/// # use std::time::Duration;
/// use durable_jobs::prelude::*;
/// use durable_jobs::{JobSet, Registered, Registry};
///
/// # pub struct Heartbeat;
/// # impl Job for Heartbeat { const NAME: &'static str = "heartbeat"; const KIND: JobKind = JobKind::Continuous; }
/// # impl<A: Send + Sync + 'static> ContinuousJob<A> for Heartbeat {
/// #     type State = u64; type Error = std::convert::Infallible;
/// #     fn config(&self) -> ContinuousConfig { ContinuousConfig::new(Schedule::every(Duration::from_secs(1))) }
/// #     async fn execute(&self, ctx: &mut ContinuousContext<u64>, _: &A) -> Result<(), Self::Error> { Ok(()) }
/// # }
/// pub struct MyJobs;
///
/// impl Registry for MyJobs {
///     type App = ();
///     fn register(jobs: &mut JobSet<()>) {
///         jobs.continuous(Heartbeat);
///     }
/// }
/// impl Registered<MyJobs> for Heartbeat {}
/// ```
pub trait Registry: Send + Sync + 'static {
    /// The application state handed to every handler.
    type App: Send + Sync + 'static;

    /// Adds every job of the application.
    fn register(jobs: &mut JobSet<Self::App>);
}

pub(crate) enum Handler<A> {
    Continuous(Arc<dyn ContinuousHandler<A>>),
    Debounce(Arc<dyn DebounceHandler<A>>),
    Task(Arc<dyn TaskHandler<A>>),
    Step(Arc<dyn ErasedStepJob<A>>),
}

impl<A> Clone for Handler<A> {
    fn clone(&self) -> Self {
        match self {
            Handler::Continuous(h) => Handler::Continuous(h.clone()),
            Handler::Debounce(h) => Handler::Debounce(h.clone()),
            Handler::Task(h) => Handler::Task(h.clone()),
            Handler::Step(h) => Handler::Step(h.clone()),
        }
    }
}

impl<A> Handler<A> {
    pub(crate) fn kind(&self) -> JobKind {
        match self {
            Handler::Continuous(_) => JobKind::Continuous,
            Handler::Debounce(_) => JobKind::Debounce,
            Handler::Task(_) => JobKind::Task,
            Handler::Step(_) => JobKind::Step,
        }
    }
}

/// The jobs of one engine, keyed by persisted name.
pub struct JobSet<A> {
    pub(crate) jobs: HashMap<&'static str, Handler<A>>,
    pub(crate) duplicates: Vec<&'static str>,
}

impl<A: Send + Sync + 'static> JobSet<A> {
    pub(crate) fn new() -> Self {
        JobSet {
            jobs: HashMap::new(),
            duplicates: Vec::new(),
        }
    }

    fn insert<J: Job>(&mut self, handler: Handler<A>) -> &mut Self {
        if self.jobs.insert(J::NAME, handler).is_some() {
            self.duplicates.push(J::NAME);
        }
        self
    }

    /// Adds a continuous job.
    pub fn continuous<J: ContinuousJob<A>>(&mut self, job: J) -> &mut Self {
        self.insert::<J>(Handler::Continuous(erased::continuous(job)))
    }

    /// Adds a debounce job.
    pub fn debounce<J: DebounceJob<A>>(&mut self, job: J) -> &mut Self {
        self.insert::<J>(Handler::Debounce(erased::debounce(job)))
    }

    /// Adds a task job.
    pub fn task<J: TaskJob<A>>(&mut self, job: J) -> &mut Self {
        self.insert::<J>(Handler::Task(erased::task(job)))
    }

    /// Adds a step job.
    pub fn step_job<J: StepJob<A>>(&mut self, job: J) -> &mut Self {
        self.insert::<J>(Handler::Step(crate::steps::erase(job)))
    }

    /// The persisted names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.jobs.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(name) = self.duplicates.first() {
            return Err(Error::validation(
                ValidationTarget::Config,
                Some(name),
                "two jobs share this persisted name; give one of them `name = \"...\"`",
            ));
        }
        for name in self.jobs.keys() {
            if let Err(why) = crate::id::check_job_name(name) {
                return Err(Error::validation(
                    ValidationTarget::Config,
                    Some(name),
                    format!("job name {why}"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler<A>> {
        self.jobs.get(name)
    }
}

/// Lets a job add itself to a [`JobSet`] without the caller naming its kind. The job attribute
/// macros implement it; the `registry!` macro calls it, and rustc names it when a listed type
/// is no job of the registry's app type (see [`checks`](crate::checks)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job that runs with `{A}`, the app type of this registry",
    label = "not a job for this registry's app type",
    note = "every job in `registry!` is defined with #[continuous], #[debounce], #[task] or #[step_job], for the registry's app type (`app: &App`, `impl TaskJob<App> for ..`) or for any app (no `app` parameter, `impl TaskJob for ..`)"
)]
pub trait RegisterJob<A>: Job {
    /// The job's [`Job::NAME`]. `registry!` reads the name and the kind through this trait, so
    /// that a listed type that is no job fails on one trait, once.
    const NAME: &'static str = <Self as Job>::NAME;
    /// The job's [`Job::KIND`].
    const KIND: JobKind = <Self as Job>::KIND;

    /// Adds the job to `jobs` under its kind.
    fn register_into(jobs: &mut JobSet<A>);
}
