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

pub(crate) fn erase<A: Send + Sync + 'static, J: crate::StepJob<A>>(
    job: J,
) -> std::sync::Arc<dyn ErasedStepJob<A>> {
    std::sync::Arc::new(Erased(job))
}

/// Worker settings of step jobs.
#[derive(Clone, Debug, Default)]
pub struct StepOptions {}

pub(crate) struct StepRuntime<A> {
    _app: std::sync::Arc<A>,
}

impl<A: Send + Sync + 'static> StepRuntime<A> {
    pub(crate) fn new(
        _store: std::sync::Arc<crate::store::sqlite::SqliteStore>,
        _jobs: std::collections::HashMap<&'static str, std::sync::Arc<dyn ErasedStepJob<A>>>,
        app: std::sync::Arc<A>,
        _clock: crate::Clock,
        _options: StepOptions,
    ) -> std::sync::Arc<Self> {
        std::sync::Arc::new(StepRuntime { _app: app })
    }
    pub(crate) fn start(self: &std::sync::Arc<Self>) {}
    pub(crate) async fn shutdown(&self, _timeout: std::time::Duration) {}
    pub(crate) fn abort(&self) {}
}

/// Calls one step job.
pub struct StepJobClient<A, J> {
    _runtime: std::sync::Arc<StepRuntime<A>>,
    _job: std::marker::PhantomData<fn() -> J>,
}

impl<A, J> StepJobClient<A, J> {
    pub(crate) fn new(runtime: std::sync::Arc<StepRuntime<A>>) -> Self {
        StepJobClient {
            _runtime: runtime,
            _job: std::marker::PhantomData,
        }
    }
}
