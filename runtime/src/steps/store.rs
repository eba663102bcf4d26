//! The storage boundary of step jobs: what the step runtime asks of a backend.
//!
//! Every write of an executing worker is fenced by its lease: it applies only while the run is
//! `leased` with the generation the worker claimed, so a worker whose lease was lost (it expired
//! and another worker reclaimed the run, or the run was cancelled) can never overwrite anything.
//! A refused write is how the worker learns it lost the run; there is no status re-read per step.
//!
//! The trait is object-safe and backend-agnostic: SQLite implements it in
//! `store::sqlite::runs`; a PostgreSQL backend implements the same operations (the claim with
//! `FOR UPDATE SKIP LOCKED`).

use crate::store::{BoxFuture, StoreError};
use crate::time::Timestamp;

use super::run::{Labels, LogLevel, RunCounts, RunFilter, RunStatus, StepStatus};

/// One run row, with its JSON columns still encoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunRecord {
    pub(crate) id: String,
    pub(crate) job_name: String,
    pub(crate) input: String,
    pub(crate) status: RunStatus,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) concurrency_key: Option<String>,
    pub(crate) current_step_index: u64,
    pub(crate) completed_step_count: u64,
    pub(crate) progress: Option<String>,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) labels: Labels,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_expires_at: Option<Timestamp>,
    pub(crate) lease_generation: u64,
    pub(crate) attempt: u32,
    pub(crate) not_before: Option<Timestamp>,
    pub(crate) started_at: Option<Timestamp>,
    pub(crate) completed_at: Option<Timestamp>,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
}

/// A run to create.
#[derive(Clone, Debug)]
pub(crate) struct NewRun {
    pub(crate) id: String,
    pub(crate) job_name: String,
    pub(crate) input: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) concurrency_key: Option<String>,
    pub(crate) labels: Labels,
    /// `coalesce: skip`.
    pub(crate) coalesce: bool,
}

/// How one item of an enqueue was satisfied.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Enqueued {
    Created(RunRecord),
    Idempotent(RunRecord),
    Coalesced(RunRecord),
}

/// The result of an enqueue: every item applied, or none because one conflicted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EnqueueOutcome {
    Done(Vec<Enqueued>),
    /// Item `index` found a pending run with the same job and concurrency key and did not
    /// coalesce. Nothing was written.
    Conflict {
        index: usize,
        existing: Box<RunRecord>,
    },
}

/// A run claimed by a worker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClaimedRun {
    pub(crate) id: String,
    pub(crate) job_name: String,
    pub(crate) input: String,
    pub(crate) labels: Labels,
    pub(crate) concurrency_key: Option<String>,
    /// The claimed generation: the fence of every write of this execution.
    pub(crate) generation: u64,
    /// See [`Fence::row`].
    pub(crate) row: Option<i64>,
    pub(crate) attempt: u32,
    pub(crate) started_at: Timestamp,
    /// When the run became claimable: its creation, its retry's not-before time, or the expiry
    /// of the lease it was reclaimed from.
    pub(crate) due_at: Timestamp,
    pub(crate) lease_expires_at: Timestamp,
}

/// What a claim found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Claimed {
    pub(crate) runs: Vec<ClaimedRun>,
    /// The earliest later time at which something may become claimable without a new trigger:
    /// a retry's not-before time or another owner's lease expiry.
    pub(crate) next_due: Option<Timestamp>,
}

/// The fence of an executing worker: the run and the generation it claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) run_id: String,
    pub(crate) generation: u64,
    /// Where the store keeps the run, when the claim said (SQLite: its rowid), so a fenced
    /// write finds the row without a lookup by id. The id is checked all the same.
    pub(crate) row: Option<i64>,
}

/// A step attempt to persist.
#[derive(Clone, Debug)]
pub(crate) struct NewStep {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) index: u64,
    pub(crate) status: StepStatus,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: Timestamp,
    pub(crate) completed_at: Timestamp,
}

/// A log entry to persist.
#[derive(Clone, Debug)]
pub(crate) struct NewLog {
    pub(crate) id: String,
    pub(crate) step_name: Option<String>,
    pub(crate) level: LogLevel,
    pub(crate) message: String,
    pub(crate) data: Option<String>,
    pub(crate) created_at: Timestamp,
}

/// A completed step loaded for replay.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredStep {
    pub(crate) name: String,
    pub(crate) index: u64,
    pub(crate) output: Option<String>,
}

/// One persisted step row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StepRow {
    pub(crate) id: String,
    pub(crate) run_id: String,
    pub(crate) name: String,
    pub(crate) index: u64,
    pub(crate) status: StepStatus,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: Timestamp,
    pub(crate) completed_at: Option<Timestamp>,
}

/// One persisted log row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LogRow {
    pub(crate) id: String,
    pub(crate) run_id: String,
    pub(crate) step_name: Option<String>,
    pub(crate) level: LogLevel,
    pub(crate) message: String,
    pub(crate) data: Option<String>,
    pub(crate) created_at: Timestamp,
}

/// How a run ends, as written by its worker.
#[derive(Clone, Debug)]
pub(crate) enum Finish {
    Completed {
        output: Option<String>,
        completed_step_count: u64,
        current_step_index: u64,
    },
    Failed {
        error: String,
        /// With a retry policy: go back to pending for `attempt`, not before `not_before`.
        retry: Option<(u32, Timestamp)>,
    },
}

/// What [`RunStore::finish_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FinishOutcome {
    /// The fence did not hold: nothing was written.
    Refused,
    Completed,
    Failed,
    /// Back to pending for a retry.
    Retrying,
    /// A retry was asked for but a pending run with the same job and concurrency key exists,
    /// so the run failed instead.
    FailedRetryBlocked,
}

/// What a cancel found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CancelOutcome {
    NotFound,
    /// Already terminal, in this status.
    Terminal(RunStatus),
    /// Cancelled; the run as it was before.
    Cancelled(Box<RunRecord>),
}

/// What a delete found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DeleteOutcome {
    NotFound,
    /// Still pending or leased.
    Active(RunStatus),
    /// Deleted; the run as it was.
    Deleted(Box<RunRecord>),
}

/// The operations of step jobs on a store.
pub(crate) trait RunStore: Send + Sync + 'static {
    /// Creates runs atomically, honouring idempotency keys (per job, any status), the
    /// one-pending-run-per-job-and-concurrency-key rule and `coalesce: skip`, including against
    /// runs created earlier in the same call. On a conflict nothing is written.
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>>;

    /// One run, as last committed.
    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>>;

    /// Runs matching `filter`, newest first (ties broken by id, newest first).
    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>>;

    /// Per job: runs by status, those completed and failed at or after `since`, and the oldest
    /// pending run's creation time. Reads every run: an operator's query.
    fn count_runs(&self, since: Timestamp) -> BoxFuture<'_, Result<Vec<RunCounts>, StoreError>>;

    /// Claims up to `limit` runs, oldest first: pending runs whose not-before time has come, and
    /// leased runs whose lease expired (reclaimed with their priority). A run is skipped while a
    /// live lease holds its concurrency key (across jobs), and one claim takes at most one run
    /// per key. Each claimed run gets `owner`, `lease_until` and a new generation; `started_at`
    /// is set on the first claim only.
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>>;

    /// The earliest time after `now` at which a run may become claimable by itself (a retry's
    /// not-before time, a lease not held by `owner` expiring).
    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>>;

    /// Extends to `lease_until` every live lease of `owner`; returns the runs renewed with their
    /// generations. An expired lease is not renewed.
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>>;

    /// The completed steps of a run, for replay.
    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>>;

    /// Persists a step attempt and the buffered logs, fenced. `false` when refused.
    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Sets (or clears) the progress and persists the buffered logs, fenced.
    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Persists buffered logs, unfenced (they are attributed to the run whatever happened to it).
    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes the steps and logs of a run if it is cancelled.
    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Ends an execution, fenced: completed, failed, or back to pending for a retry. When it is
    /// accepted and `cleanup` is set, a terminal run's steps and logs are deleted.
    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>>;

    /// Cancels a pending or leased run (not fenced). With `cleanup`, a run that was pending
    /// loses its steps and logs.
    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>>;

    /// Deletes a terminal run with its labels, steps and logs.
    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>>;

    /// Deletes up to `limit` terminal runs (of `job`, when given) that ended before `before`,
    /// oldest first, with their labels, steps and logs. Returns how many.
    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Every step row of a run, in order.
    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>>;

    /// Every log row of a run, in order.
    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>>;

    /// Upstream's `releaseExpiredLeases`: expired leased runs go back to pending, or fail when a
    /// pending run with the same job and concurrency key exists. The worker does not need it
    /// (a claim reclaims expired leases directly); it is kept for parity and tooling.
    #[allow(dead_code)]
    fn release_expired_leases(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Called once when a worker starts. A backend that knows no other process can hold leases
    /// (SQLite holds the database file exclusively) expires every lease, so runs interrupted by
    /// a crash resume at once; a shared backend does nothing.
    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;
}
