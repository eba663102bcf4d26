//! The job registry as data: every job's name, kind and settings, for dashboards, command-line
//! tools and HTTP APIs that list what an engine runs.

use std::time::Duration;

use super::Client;
use crate::engine::{Handler, Registry};
use crate::id::JobKind;
use crate::job::schedule::Schedule;
use crate::retry::RetryPolicy;

/// One registered job and its settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobInfo {
    /// The persisted name.
    pub name: &'static str,
    /// The kind.
    pub kind: JobKind,
    /// Continuous: its cadence.
    pub schedule: Option<Schedule>,
    /// Continuous: whether `start` runs it at once.
    pub start_immediately: Option<bool>,
    /// Debounce: the longest a batch waits after its first event.
    pub flush_after: Option<Duration>,
    /// Debounce: the quiet period that flushes a batch early.
    pub quiet: Option<Duration>,
    /// Debounce: the batch size that flushes at once.
    pub max_events: Option<u64>,
    /// Continuous, debounce and step jobs: the retry policy, if any.
    pub retry: Option<RetryPolicy>,
}

impl JobInfo {
    fn new(name: &'static str, kind: JobKind) -> Self {
        JobInfo {
            name,
            kind,
            schedule: None,
            start_immediately: None,
            flush_after: None,
            quiet: None,
            max_events: None,
            retry: None,
        }
    }
}

impl<R: Registry> Client<R> {
    /// Every registered job with its kind and settings, sorted by name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f<R: durable_jobs::Registry>(client: durable_jobs::Client<R>) {
    /// for job in client.jobs() {
    ///     println!("{} ({}) {:?}", job.name, job.kind, job.schedule);
    /// }
    /// # }
    /// ```
    pub fn jobs(&self) -> Vec<JobInfo> {
        let jobs = &self.inner().jobs;
        jobs.names()
            .into_iter()
            .filter_map(|name| jobs.get(name).map(|h| (name, h)))
            .map(|(name, handler)| {
                let mut info = JobInfo::new(name, handler.kind());
                match handler {
                    Handler::Continuous(h) => {
                        let config = h.config();
                        info.schedule = Some(config.schedule.clone());
                        info.start_immediately = Some(config.start_immediately);
                        info.retry = config.retry.clone();
                    }
                    Handler::Debounce(h) => {
                        let config = h.config();
                        info.flush_after = Some(config.flush_after);
                        info.quiet = config.quiet;
                        info.max_events = config.max_events;
                        info.retry = config.retry.clone();
                    }
                    Handler::Task(_) => {}
                    Handler::Step(h) => info.retry = h.config().retry.clone(),
                }
                info
            })
            .collect()
    }
}
