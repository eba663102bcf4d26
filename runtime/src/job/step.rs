//! Step jobs: typed runs whose `step.run` results are persisted, so a run interrupted by a crash
//! resumes after its last completed step.

use std::future::Future;

use super::{Job, JobError, Payload};
use crate::retry::RetryPolicy;
use crate::steps::StepContext;

/// A job whose runs are made of memoised steps (the durably model).
///
/// `#[step_job]` implements it for an `async fn(step: &mut StepContext, input: I, app: &App)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[step_job]",
    label = "not a #[step_job]",
    note = "`client.step_job::<J>()` takes a job defined with #[step_job]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[debounce] job with `client.debounce::<J>()`, a #[task] job with `client.task::<J>()`"
)]
pub trait StepJob<A: Send + Sync + 'static = ()>: Job {
    /// What `trigger` accepts.
    type Input: Payload;
    /// What a completed run returns.
    type Output: Payload;
    /// The error a run may fail with.
    type Error: JobError;

    /// Retry policy and other per-job settings.
    fn config(&self) -> StepJobConfig {
        StepJobConfig::default()
    }

    /// The body of a run.
    fn run(
        &self,
        step: &mut StepContext,
        input: Self::Input,
        app: &A,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// Per-job settings of a step job.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Backoff, RetryPolicy, StepJobConfig};
///
/// let config = StepJobConfig::default()
///     .retry(RetryPolicy::new(3).backoff(Backoff::exponential(Duration::from_secs(1))));
/// # let _ = config;
/// ```
#[derive(Clone, Debug, Default)]
pub struct StepJobConfig {
    pub(crate) retry: Option<RetryPolicy>,
}

impl StepJobConfig {
    /// Retries failed runs with this policy (upstream has no retries): a failed attempt goes
    /// back to pending, not before the policy's delay, and its completed steps stay memoised.
    /// Cancelled runs and runs whose input no longer decodes are not retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}
