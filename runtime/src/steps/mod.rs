//! Step jobs: runs of memoised steps with leases, idempotency and concurrency keys (the
//! `@coji/durably` model).
//!
//! A step job is an async function over a [`StepContext`] and a typed input. Each
//! `step.run(name, f)` persists `f`'s output under `name`; a run that is interrupted (its
//! process dies, its lease is lost, or it fails and its retry policy retries it) resumes with
//! the stored outputs instead of running those steps again.
//!
//! Runs move through `pending → leased → completed | failed`, or to `cancelled`. A worker claims
//! pending runs in batches and holds a lease on each (owner, expiry, generation); every write of
//! the executing worker is fenced by the generation it claimed, so a worker that lost its lease
//! can never overwrite anything. Leases are renewed by one periodic write per worker; an expired
//! lease is reclaimed by the next claim, keeping the run's place in the queue.
//!
//! Differences from upstream, by design:
//! - the step index is the position within the current execution (upstream drifts on resume);
//! - `trigger` wakes an idle worker at once (upstream waits for its next poll);
//! - claim errors back off exponentially (upstream retries in a hot loop);
//! - a per-job retry policy ([`StepJobConfig::retry`]) sends a failed attempt back to pending
//!   with a not-before time, keeping its completed steps;
//! - the steps of a run cancelled while leased are cleaned up like those of a pending one;
//! - `step.log` is always persisted (upstream needs a plugin), with the run's next write.

mod cancel;
mod context;
mod events;
pub(crate) mod run;
mod runtime;
mod worker;

use std::sync::Arc;

use serde::Deserialize;
use std::time::Duration;

use crate::error::{BoxError, Error, ValidationTarget};
use crate::store::BoxFuture;

pub use crate::client::StepJobClient;
pub use cancel::{CancelReason, Cancellation};
pub use context::{StepContext, StepError, StepFuture, StepScope};
pub use events::{RunEvent, RunEventKind, RunEventStream};
pub use run::{
    is_valid_label_key, BatchItem, Coalesce, Completed, Disposition, Labels, LogLevel, LogRecord,
    Progress, Run, RunCounts, RunCursor, RunFilter, RunStatus, StepRecord, StepStatus,
    TriggerOptions, Triggered, MAX_LABEL_VALUE_BYTES,
};
pub use runtime::RunFailed;
pub(crate) use runtime::StepRuntime;

pub use crate::job::step::StepJobConfig;

/// How long finished runs are kept by default: 7 days, as River keeps completed jobs. A week
/// covers the questions asked of a finished run (what did last night's run return, why did
/// Friday's fail) and a retry from the dashboard after a weekend, while a service's database
/// stays the size of one week of runs instead of growing with its age.
pub const DEFAULT_RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of the step-job worker of an engine.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::steps::StepOptions;
///
/// let options = StepOptions::default()
///     .max_concurrent_runs(50)
///     .lease_duration(Duration::from_secs(60))
///     .lease_renew_interval(Duration::from_secs(10))
///     .preserve_steps(true)
///     .retain_runs(Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(options.max_concurrent_runs, 50);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepOptions {
    /// Run bodies executed at once by this worker, 1 to 1,000. Default 100 (upstream: 1). A run
    /// gives its slot back when its body returns, while its end (completion, failure) is still
    /// being written. The worker keeps as many runs again claimed ahead, leased and waiting, so
    /// a freed slot starts the next run at once. Runs with the same concurrency key
    /// never run at once, whatever this says.
    ///
    /// A body spends most of its time waiting, on the services it calls and on the commit of
    /// each step, and every step commit of the runs in flight shares one group commit: more
    /// runs in flight means fewer commits per run. Lower it for jobs that load a service which
    /// takes only a few calls at once (or give those runs a concurrency key).
    pub max_concurrent_runs: usize,
    /// How long a claim holds a run; a run whose worker died is reclaimed this long after its
    /// last renewal. Default 30 s.
    pub lease_duration: Duration,
    /// How often the worker renews all its leases (one write). Must be shorter than
    /// `lease_duration`. Default 5 s.
    pub lease_renew_interval: Duration,
    /// Keep step and log rows after a run ends. Default `false`: they are deleted when the run
    /// completes, fails or is cancelled.
    pub preserve_steps: bool,
    /// Delete completed, failed and cancelled runs, with their labels, steps and logs, this
    /// long after they ended; `None` keeps them forever ([`keep_runs_forever`]). Checked at
    /// start and every minute, and deleted 500 runs per write, so a backlog never holds the
    /// writer for long. Default [`DEFAULT_RUN_RETENTION`], 7 days.
    ///
    /// [`keep_runs_forever`]: StepOptions::keep_runs_forever
    pub retain_runs: Option<Duration>,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            max_concurrent_runs: 100,
            lease_duration: Duration::from_secs(30),
            lease_renew_interval: Duration::from_secs(5),
            preserve_steps: false,
            retain_runs: Some(DEFAULT_RUN_RETENTION),
        }
    }
}

impl StepOptions {
    /// Sets `max_concurrent_runs`.
    pub fn max_concurrent_runs(mut self, n: usize) -> Self {
        self.max_concurrent_runs = n;
        self
    }

    /// Sets `lease_duration`.
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self
    }

    /// Sets `lease_renew_interval`.
    pub fn lease_renew_interval(mut self, d: Duration) -> Self {
        self.lease_renew_interval = d;
        self
    }

    /// Sets `preserve_steps`.
    pub fn preserve_steps(mut self, keep: bool) -> Self {
        self.preserve_steps = keep;
        self
    }

    /// Sets `retain_runs`.
    pub fn retain_runs(mut self, d: Duration) -> Self {
        self.retain_runs = Some(d);
        self
    }

    /// Keeps finished runs forever: the database then grows with every run (about 370 bytes a
    /// run of three steps, more with large inputs, outputs or kept steps), and a step job
    /// client's `purge_runs` is the way to delete them.
    pub fn keep_runs_forever(mut self) -> Self {
        self.retain_runs = None;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] (target `configuration`) when `max_concurrent_runs` is not in
    /// 1..=1000, `lease_duration` is zero, or `lease_renew_interval` is zero or not shorter
    /// than `lease_duration`.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::validation(ValidationTarget::Config, None, m));
        if !(1..=1000).contains(&self.max_concurrent_runs) {
            return bad("max_concurrent_runs must be between 1 and 1000");
        }
        if self.lease_duration.is_zero() {
            return bad("lease_duration must be positive");
        }
        if self.lease_renew_interval.is_zero() || self.lease_renew_interval >= self.lease_duration {
            return bad("lease_renew_interval must be positive and shorter than lease_duration");
        }
        Ok(())
    }

    /// Brings invalid settings into range (for callers that did not validate).
    pub(crate) fn normalised(mut self) -> Self {
        self.max_concurrent_runs = self.max_concurrent_runs.clamp(1, 1000);
        if self.lease_duration.is_zero() {
            self.lease_duration = Duration::from_secs(30);
        }
        if self.lease_renew_interval.is_zero() || self.lease_renew_interval >= self.lease_duration {
            self.lease_renew_interval = self.lease_duration / 3;
        }
        self
    }
}

/// Why an execution of a step job failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunFailure {
    /// The stored input does not decode into the job's input type (not retried).
    #[error("invalid input: {0}")]
    Input(String),
    /// The job returned an error.
    #[error("{0}")]
    Job(BoxError),
    /// The output could not be encoded (not retried).
    #[error("invalid output: {0}")]
    Output(String),
}

/// A step job behind type erasure, as the engine stores it: JSON in, JSON out.
pub(crate) trait ErasedStepJob<A>: Send + Sync {
    /// The job's settings.
    fn config(&self) -> &StepJobConfig;

    /// Decodes a JSON input into the job's input type and encodes it back (the stored form).
    /// Refuses input nested deeper than [`MAX_NESTING_DEPTH`](crate::MAX_NESTING_DEPTH), or that
    /// does not read back as itself.
    fn check_input(&self, input: serde_json::Value) -> Result<String, String>;

    /// Runs the job on a stored input; returns the encoded output.
    fn run<'a>(
        &'a self,
        step: &'a mut StepContext,
        input: &'a str,
        app: &'a A,
    ) -> BoxFuture<'a, Result<String, RunFailure>>;
}

struct Erased<J> {
    job: J,
    config: StepJobConfig,
}

impl<A: Send + Sync + 'static, J: crate::StepJob<A>> ErasedStepJob<A> for Erased<J> {
    fn config(&self) -> &StepJobConfig {
        &self.config
    }

    fn check_input(&self, input: serde_json::Value) -> Result<String, String> {
        let input = crate::json::check_depth(input)?;
        let typed = J::Input::deserialize(input).map_err(|e| e.to_string())?;
        crate::json::encode(&typed)
    }

    fn run<'a>(
        &'a self,
        step: &'a mut StepContext,
        input: &'a str,
        app: &'a A,
    ) -> BoxFuture<'a, Result<String, RunFailure>> {
        Box::pin(async move {
            let input: J::Input =
                serde_json::from_str(input).map_err(|e| RunFailure::Input(e.to_string()))?;
            let output = self
                .job
                .run(step, input, app)
                .await
                .map_err(|e| RunFailure::Job(e.into()))?;
            crate::json::encode(&output).map_err(RunFailure::Output)
        })
    }
}

pub(crate) fn erase<A: Send + Sync + 'static, J: crate::StepJob<A>>(
    job: J,
) -> Arc<dyn ErasedStepJob<A>> {
    let config = job.config();
    Arc::new(Erased { job, config })
}
