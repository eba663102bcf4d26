//! Step jobs: typed runs whose `step.run` results are persisted, so a run interrupted by a crash
//! resumes after its last completed step.

use std::future::Future;

use super::{Job, JobError, Payload};
use crate::steps::{StepContext, StepJobConfig};

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
