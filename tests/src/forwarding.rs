//! A store that hands every call to another store, telling hooks of each call: for tests
//! that count what the engine asks of its store, or that play a store's part (its poll interval,
//! its change feed) on top of a real one.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::steps::RunFilter;
use durable_jobs::store::runs::{
    CancelOutcome, Claimed, DeleteOutcome, EnqueueOutcome, Fence, Finish, FinishOutcome, LogRow,
    NewLog, NewRun, NewStep, RunCounts, RunRecord, StepRow, StoredStep,
};
use durable_jobs::store::{
    AlarmScan, Backend, BoxFuture, ChangeFeed, Durability, InstanceCounts, InstanceQuery,
    InstanceRecord, OutboxEntry, Ownership, RunStore, Store, StoreError, WriteBatch,
};
use durable_jobs::{InstanceKey, JobKind, Timestamp, UnregisteredJob};

/// A store method, as [`Hooks`] are told of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    AppendLogs,
    CancelRun,
    Claim,
    ClaimAlarm,
    ClaimInstance,
    Close,
    Commit,
    CompletedSteps,
    CountInstances,
    CountRuns,
    DeleteCancelledSteps,
    DeleteRun,
    Durability,
    Enqueue,
    FinishRun,
    GetLogs,
    GetRun,
    GetRuns,
    GetSteps,
    HasEventId,
    ListInstances,
    Load,
    LoadBroken,
    NextDue,
    OutboxAck,
    OutboxPeek,
    PersistStep,
    PruneEventIds,
    PullAlarmsTo,
    PurgeRuns,
    Recover,
    RenewLeases,
    RunRecover,
    RunRenewLeases,
    ScanAlarms,
    UnregisteredJobs,
    UpdateProgress,
    /// `instance_keys`; `last_page` when it returned fewer keys than asked for (always `false`
    /// before the call).
    InstanceKeys {
        last_page: bool,
    },
}

/// What a [`Forwarding`] store tells, and what it lets a test answer in the inner store's place.
pub trait Hooks: Send + Sync + 'static {
    /// `method` is about to be handed on.
    fn calling(&self, _method: Method) {}

    /// `method` returned `Ok`.
    fn succeeded(&self, _method: Method) {}

    /// The poll interval to answer, given the inner store's.
    fn poll_interval(&self, inner: Option<Duration>) -> Option<Duration> {
        inner
    }

    /// The change feed to answer instead of the inner store's, if any.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// The database time to answer instead of the inner store's, if any.
    fn database_time(&self) -> Option<Timestamp> {
        None
    }
}

/// No hooks.
impl Hooks for () {}

/// `inner`, with `hooks` told of every call.
pub struct Forwarding<H> {
    /// The store that answers.
    pub inner: Arc<dyn Store>,
    /// What is told of each call.
    pub hooks: H,
}

impl<H: Hooks> Forwarding<H> {
    /// `inner` with `hooks`.
    pub fn new(inner: Arc<dyn Store>, hooks: H) -> Arc<Self> {
        Arc::new(Forwarding { inner, hooks })
    }

    fn forward<'a, T: Send + 'a>(
        &'a self,
        method: Method,
        call: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        self.hooks.calling(method);
        Box::pin(async move {
            let result = call.await;
            if result.is_ok() {
                self.hooks.succeeded(method);
            }
            result
        })
    }
}

impl<H: Hooks> Backend for Forwarding<H> {
    fn load<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        self.forward(Method::Load, self.inner.load(key))
    }
    fn has_event_id<'a>(
        &'a self,
        key: &'a InstanceKey,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.forward(Method::HasEventId, self.inner.has_event_id(key, event_id))
    }
    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        self.forward(Method::Commit, self.inner.commit(batch))
    }
    fn claim_alarm<'a>(
        &'a self,
        key: &'a InstanceKey,
        now: Timestamp,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        self.forward(
            Method::ClaimAlarm,
            self.inner.claim_alarm(key, now, owner, lease_until),
        )
    }
    fn claim_instance<'a>(
        &'a self,
        key: &'a InstanceKey,
        expected_version: u64,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        self.forward(
            Method::ClaimInstance,
            self.inner
                .claim_instance(key, expected_version, owner, lease_until),
        )
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.forward(
            Method::RenewLeases,
            Backend::renew_leases(self.inner.as_ref(), owner, lease_until),
        )
    }
    fn scan_alarms<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        jobs: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<AlarmScan, StoreError>> {
        self.forward(Method::ScanAlarms, self.inner.scan_alarms(now, limit, jobs))
    }
    fn load_broken<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InstanceRecord>, StoreError>> {
        self.forward(Method::LoadBroken, self.inner.load_broken(kind, job))
    }
    fn unregistered_jobs<'a>(
        &'a self,
        registered: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<Vec<UnregisteredJob>, StoreError>> {
        self.forward(
            Method::UnregisteredJobs,
            self.inner.unregistered_jobs(registered),
        )
    }
    fn pull_alarms_to<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.forward(
            Method::PullAlarmsTo,
            self.inner.pull_alarms_to(kind, job, at),
        )
    }
    fn recover(&self, owner: &str, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        let owner = owner.to_owned();
        self.forward(
            Method::Recover,
            Box::pin(async move { Backend::recover(self.inner.as_ref(), &owner, now).await }),
        )
    }
    fn outbox_peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>> {
        self.forward(Method::OutboxPeek, self.inner.outbox_peek(limit))
    }
    fn outbox_ack(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.forward(Method::OutboxAck, self.inner.outbox_ack(seq))
    }
    fn prune_event_ids(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.forward(
            Method::PruneEventIds,
            self.inner.prune_event_ids(before, limit),
        )
    }
    fn list_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, Result<Vec<InstanceRecord>, StoreError>> {
        self.forward(Method::ListInstances, self.inner.list_instances(query))
    }
    fn instance_keys(
        &self,
        after: Option<InstanceKey>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<InstanceKey>, StoreError>> {
        self.hooks
            .calling(Method::InstanceKeys { last_page: false });
        Box::pin(async move {
            let keys = self.inner.instance_keys(after, limit).await?;
            let last_page = keys.len() < limit as usize;
            self.hooks.succeeded(Method::InstanceKeys { last_page });
            Ok(keys)
        })
    }
    fn count_instances(
        &self,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<InstanceCounts>, StoreError>> {
        self.forward(Method::CountInstances, self.inner.count_instances(now))
    }
    fn verify(&self) -> Result<(), StoreError> {
        self.inner.verify()
    }
    fn durability(&self) -> BoxFuture<'_, Result<Option<Durability>, StoreError>> {
        self.forward(Method::Durability, self.inner.durability())
    }
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.forward(Method::Close, self.inner.close())
    }
}

impl<H: Hooks> RunStore for Forwarding<H> {
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>> {
        self.forward(Method::Enqueue, self.inner.enqueue(runs, now))
    }
    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        self.forward(Method::GetRun, self.inner.get_run(id))
    }
    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.forward(Method::GetRuns, self.inner.get_runs(filter))
    }
    fn count_runs(&self, since: Timestamp) -> BoxFuture<'_, Result<Vec<RunCounts>, StoreError>> {
        self.forward(Method::CountRuns, self.inner.count_runs(since))
    }
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        self.forward(
            Method::Claim,
            self.inner.claim(owner, now, lease_until, limit),
        )
    }
    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        self.forward(Method::NextDue, self.inner.next_due(owner, now))
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        self.forward(
            Method::RunRenewLeases,
            RunStore::renew_leases(self.inner.as_ref(), owner, now, lease_until),
        )
    }
    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>> {
        self.forward(Method::CompletedSteps, self.inner.completed_steps(run_id))
    }
    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.forward(
            Method::PersistStep,
            self.inner.persist_step(fence, step, logs),
        )
    }
    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.forward(
            Method::UpdateProgress,
            self.inner.update_progress(fence, progress, logs, now),
        )
    }
    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.forward(Method::AppendLogs, self.inner.append_logs(run_id, logs))
    }
    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        self.forward(
            Method::DeleteCancelledSteps,
            self.inner.delete_cancelled_steps(run_id),
        )
    }
    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>> {
        self.forward(
            Method::FinishRun,
            self.inner.finish_run(fence, finish, logs, cleanup, now),
        )
    }
    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        self.forward(Method::CancelRun, self.inner.cancel_run(id, now, cleanup))
    }
    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>> {
        self.forward(Method::DeleteRun, self.inner.delete_run(id))
    }
    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.forward(Method::PurgeRuns, self.inner.purge_runs(job, before, limit))
    }
    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>> {
        self.forward(Method::GetSteps, self.inner.get_steps(run_id))
    }
    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        self.forward(Method::GetLogs, self.inner.get_logs(run_id))
    }
    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.forward(
            Method::RunRecover,
            RunStore::recover(self.inner.as_ref(), now),
        )
    }
}

impl<H: Hooks> Store for Forwarding<H> {
    fn ownership(&self) -> Ownership {
        self.inner.ownership()
    }
    fn close_blocking(&self) {
        self.inner.close_blocking();
    }
    fn poll_interval(&self) -> Option<Duration> {
        self.hooks.poll_interval(self.inner.poll_interval())
    }
    fn changes(&self) -> Option<ChangeFeed> {
        self.hooks.changes().or_else(|| self.inner.changes())
    }
    fn database_time(&self) -> Option<BoxFuture<'_, Result<Timestamp, StoreError>>> {
        match self.hooks.database_time() {
            Some(time) => Some(Box::pin(std::future::ready(Ok(time)))),
            None => self.inner.database_time(),
        }
    }
}
