//! Step jobs: runs of memoised steps with leases, idempotency and concurrency keys.

use crate::retry::RetryPolicy;

/// Per-job settings of a step job.
#[derive(Clone, Debug, Default)]
pub struct StepJobConfig {
    pub(crate) retry: Option<RetryPolicy>,
}

impl StepJobConfig {
    /// Retries failed runs with this policy (upstream has no retries).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// What a step job's run uses to run memoised steps.
#[derive(Debug)]
pub struct StepContext {
    _private: (),
}

/// A step job behind type erasure, as the engine stores it.
pub(crate) trait ErasedStepJob<A>: Send + Sync {}

struct Erased<J>(#[allow(dead_code)] J);

impl<A, J: Send + Sync> ErasedStepJob<A> for Erased<J> {}

pub(crate) fn erase<A: Send + Sync + 'static, J: crate::StepJob<A>>(job: J) -> std::sync::Arc<dyn ErasedStepJob<A>> {
    std::sync::Arc::new(Erased(job))
}
