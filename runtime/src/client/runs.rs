//! [`Runs`]: the runs of every step job, untyped (JSON inputs and outputs), for callers that
//! manage runs by id without knowing their job's types: HTTP APIs, command-line tools,
//! dashboards.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::typed;
use crate::error::{Error, Result};
use crate::steps::{
    Disposition, LogRecord, Run, RunCounts, RunEventStream, RunFilter, StepRecord, StepRuntime,
    TriggerOptions,
};
use crate::time::Timestamp;

/// The runs of every step job of an engine, with JSON inputs and outputs; get it from
/// [`Client::runs`](crate::Client::runs). Cheap to clone.
///
/// The typed [`StepJobClient`](crate::steps::StepJobClient) sees the runs of one job; this sees
/// all of them, as `@coji/durably`'s run-level API does (`getRun`, `getRuns`, `retrigger`,
/// `cancel`, `deleteRun`, `subscribe`).
///
/// # Examples
///
/// ```no_run
/// # async fn f<R: durable_jobs::Registry>(client: durable_jobs::Client<R>) -> durable_jobs::Result<()> {
/// use durable_jobs::steps::{RunFilter, RunStatus};
///
/// let runs = client.runs();
/// for run in runs.get_runs(RunFilter::new().status(RunStatus::Failed).limit(20)).await? {
///     println!("{} {} {:?}", run.id, run.job_name, run.error);
///     runs.retrigger(&run.id).await?;
/// }
/// # Ok(()) }
/// ```
pub struct Runs<A> {
    rt: Arc<StepRuntime<A>>,
}

impl<A> Clone for Runs<A> {
    fn clone(&self) -> Self {
        Runs {
            rt: self.rt.clone(),
        }
    }
}

impl<A> std::fmt::Debug for Runs<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runs")
    }
}

impl<A: Send + Sync + 'static> Runs<A> {
    pub(crate) fn new(rt: Arc<StepRuntime<A>>) -> Self {
        Runs { rt }
    }

    /// Whether `job` is a registered step job.
    pub fn has_job(&self, job: &str) -> bool {
        self.rt.job(job).is_some()
    }

    /// Triggers a run of step job `job` with a JSON input, decoded into the job's input type
    /// first; returns the run and how the trigger was satisfied.
    ///
    /// # Errors
    ///
    /// `JobNotFound` when `job` is not a step job of this engine; `Validation` when the input
    /// does not decode or the options are invalid; `InvalidState` for a concurrency-key
    /// conflict; `Storage`.
    pub async fn trigger(
        &self,
        job: &str,
        input: Value,
        options: TriggerOptions,
    ) -> Result<(Run, Disposition)> {
        let (run, disposition) = self
            .rt
            .trigger_json(job, vec![(input, options)])
            .await?
            .pop()
            .ok_or_else(|| Error::storage("trigger", "no run was written"))?;
        Ok((typed(run)?, disposition))
    }

    /// One run, of any job; `None` when there is none.
    ///
    /// # Errors
    ///
    /// `Validation` when its stored input or output is not JSON; `Storage`.
    pub async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        self.rt.get_run(None, id).await?.map(typed).transpose()
    }

    /// Runs matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// `Validation` for an invalid label key; `Storage`.
    pub async fn get_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        self.rt
            .get_runs(filter)
            .await?
            .into_iter()
            .map(typed)
            .collect()
    }

    /// The persisted step attempts of a run, in order.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound` when there is no such run; `Storage`.
    pub async fn steps(&self, id: &str) -> Result<Vec<StepRecord>> {
        self.rt.get_steps(None, id).await
    }

    /// The persisted log entries of a run, in order.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound` when there is no such run; `Storage`.
    pub async fn logs(&self, id: &str) -> Result<Vec<LogRecord>> {
        self.rt.get_logs(None, id).await
    }

    /// Creates a new run with the input, labels and concurrency key of a completed, failed or
    /// cancelled run.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `InvalidState` when the run is pending or leased, or a pending run
    /// has its concurrency key; `JobNotFound` when its job is no longer registered;
    /// `Validation` when its input no longer decodes; `Storage`.
    pub async fn retrigger(&self, id: &str) -> Result<Run> {
        typed(self.rt.retrigger(None, id).await?)
    }

    /// Cancels a pending or leased run.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `InvalidState` naming the status when the run already ended;
    /// `Storage`.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        self.rt.cancel(None, id).await
    }

    /// Deletes a completed, failed or cancelled run with its labels, steps and logs.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `InvalidState` when the run is pending or leased; `Storage`.
    pub async fn delete_run(&self, id: &str) -> Result<()> {
        self.rt.delete_run(None, id).await
    }

    /// Waits until the run ends (at most `timeout`) and returns it completed.
    ///
    /// # Errors
    ///
    /// As [`StepJobClient::wait_for_run`](crate::steps::StepJobClient::wait_for_run).
    pub async fn wait_for_run(&self, id: &str, timeout: Option<Duration>) -> Result<Run> {
        typed(self.rt.wait_for_run(None, id, timeout).await?)
    }

    /// The run's events: a snapshot of its state (`sequence` 0), then live events, ending
    /// after it completes, fails, is cancelled or deleted.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `Storage`.
    pub async fn subscribe(&self, id: &str) -> Result<RunEventStream> {
        self.rt.subscribe(None, id).await
    }

    /// Every run event of every job from now on (`run:*`, `step:*`, `log:write`,
    /// `worker:error`): the [`Event::Run`](crate::Event::Run)s of
    /// [`Engine::events`](crate::Engine::events), without the job events. Events are only
    /// built while someone listens.
    pub fn events(&self) -> RunEventStream {
        self.rt.events(None)
    }

    /// Per job: runs by status, how many completed and failed at or after `since`, and when
    /// the oldest pending run was triggered. Reads every run.
    ///
    /// # Errors
    ///
    /// `Storage`.
    pub async fn count_runs(&self, since: Timestamp) -> Result<Vec<RunCounts>> {
        self.rt.count_runs(since).await
    }

    /// Now, on the engine's clock (a [`TestClock`](crate::testing::TestClock) in tests).
    pub fn now(&self) -> Timestamp {
        self.rt.now()
    }
}
