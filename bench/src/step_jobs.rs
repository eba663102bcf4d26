//! The step jobs of the `steps`, `latency` and `burndown` workloads, written by hand against
//! the `StepJob` trait.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use durable_jobs::prelude::*;
use durable_jobs::{JobSet, Registered, Registry};

/// What the step-job workloads' jobs share: a gate that holds runs until the trigger phase is
/// over (the engine's worker starts with the engine, durably's and effectum's only when told),
/// and the ids of runs in the order their bodies ended.
pub(crate) struct StepApp {
    gate: tokio::sync::watch::Sender<bool>,
    /// Bodies ended so far.
    pub(crate) ended: AtomicU64,
    /// Told when `ended` reaches `expected`.
    all_ended: tokio::sync::Notify,
    expected: AtomicU64,
    /// The last run ids whose bodies ended (a ring of the last 1,024), to wait for their commits.
    pub(crate) last_ended: Mutex<std::collections::VecDeque<String>>,
}

impl StepApp {
    /// A gate that is open (`true`) or closed.
    pub(crate) fn new(open: bool) -> Self {
        StepApp {
            gate: tokio::sync::watch::Sender::new(open),
            ended: AtomicU64::new(0),
            all_ended: tokio::sync::Notify::new(),
            expected: AtomicU64::new(u64::MAX),
            last_ended: Mutex::new(std::collections::VecDeque::with_capacity(1024)),
        }
    }

    /// Lets held and future runs go.
    pub(crate) fn open(&self) {
        self.gate.send_replace(true);
    }

    async fn pass(&self) {
        if !*self.gate.borrow() {
            let _ = self.gate.subscribe().wait_for(|open| *open).await;
        }
    }

    fn end(&self, run_id: &str) {
        if let Ok(mut last) = self.last_ended.lock() {
            if last.len() == 1024 {
                last.pop_front();
            }
            last.push_back(run_id.to_owned());
        }
        if self.ended.fetch_add(1, Ordering::AcqRel) + 1 == self.expected.load(Ordering::Acquire) {
            self.all_ended.notify_one();
        }
    }

    /// Waits until `n` bodies ended in all (at most `limit`); `false` on timeout.
    pub(crate) async fn wait_ended(&self, n: u64, limit: std::time::Duration) -> bool {
        self.expected.store(n, Ordering::Release);
        let wait = async {
            // `notify_one` keeps a permit, so an end between the check and the wait counts.
            while self.ended.load(Ordering::Acquire) < n {
                self.all_ended.notified().await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// Input of the step jobs.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Num {
    pub(crate) i: u64,
}

/// Output of the step jobs.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Sum {
    pub(crate) sum: u64,
}

/// `steps`: three trivial steps, as in durably's harness.
pub(crate) struct ThreeSteps;

impl Job for ThreeSteps {
    const NAME: &'static str = "bench_three_steps";
    const KIND: JobKind = JobKind::Step;
}

/// Steps per run of [`ThreeSteps`].
pub(crate) const STEPS_PER_RUN: u64 = 3;

impl StepJob<Arc<StepApp>> for ThreeSteps {
    type Input = Num;
    type Output = Sum;
    type Error = durable_jobs::steps::StepError;

    async fn run(
        &self,
        step: &mut StepContext,
        input: Num,
        app: &Arc<StepApp>,
    ) -> Result<Sum, Self::Error> {
        app.pass().await;
        let mut sum = 0;
        for s in 0..STEPS_PER_RUN {
            let name = ["s0", "s1", "s2"][s as usize];
            let i = input.i;
            sum += step
                .run(name, move |_| async move {
                    Ok::<u64, durable_jobs::BoxError>(i + s)
                })
                .await?;
        }
        app.end(step.run_id());
        Ok(Sum { sum })
    }
}

/// `latency`: one trivial step.
pub(crate) struct OneStep;

impl Job for OneStep {
    const NAME: &'static str = "bench_one_step";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<Arc<StepApp>> for OneStep {
    type Input = Num;
    type Output = Sum;
    type Error = durable_jobs::steps::StepError;

    async fn run(
        &self,
        step: &mut StepContext,
        input: Num,
        _app: &Arc<StepApp>,
    ) -> Result<Sum, Self::Error> {
        let i = input.i;
        let sum = step
            .run("only", move |_| async move {
                Ok::<u64, durable_jobs::BoxError>(i + 1)
            })
            .await?;
        Ok(Sum { sum })
    }
}

/// `burndown`: no steps at all, as effectum's no-op job.
pub(crate) struct NoOp;

impl Job for NoOp {
    const NAME: &'static str = "bench_noop";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<Arc<StepApp>> for NoOp {
    type Input = ();
    type Output = ();
    type Error = Infallible;

    async fn run(
        &self,
        step: &mut StepContext,
        _input: (),
        app: &Arc<StepApp>,
    ) -> Result<(), Infallible> {
        app.pass().await;
        app.end(step.run_id());
        Ok(())
    }
}

impl Registered<StepJobs> for ThreeSteps {}
impl Registered<StepJobs> for OneStep {}
impl Registered<StepJobs> for NoOp {}

/// The registry of the step-job workloads.
pub(crate) struct StepJobs;

impl Registry for StepJobs {
    type App = Arc<StepApp>;
    fn register(jobs: &mut JobSet<Arc<StepApp>>) {
        jobs.step_job(ThreeSteps).step_job(OneStep).step_job(NoOp);
    }
}
