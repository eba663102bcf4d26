//! The step-job side of the boundary: runs, steps and logs.
//!
//! Every write of an executing worker is fenced by its lease: it applies only while the run is
//! `leased` with the generation the worker claimed, so a worker whose lease was lost (it expired
//! and another worker reclaimed the run, or the run was cancelled) can never overwrite anything.
//! A refused write is how the worker learns it lost the run; there is no status re-read per step.
//!
//! The trait is object-safe and backend-agnostic: the SQLite driver implements it with plain
//! statements; a server database implements the same operations (the claim with
//! `FOR UPDATE SKIP LOCKED`).

mod vocabulary;

use super::{BoxFuture, StoreError};
use crate::time::Timestamp;

pub use vocabulary::{
    is_valid_label_key, Labels, LogLevel, RunCounts, RunCursor, RunFilter, RunStatus, StepStatus,
};

/// One run row, with its JSON columns still encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// The run's id (a ULID, increasing).
    pub id: String,
    /// The step job's persisted name.
    pub job_name: String,
    /// The input, as JSON.
    pub input: String,
    /// Where the run is in its life.
    pub status: RunStatus,
    /// The key that makes a second trigger of the same job return this run.
    pub idempotency_key: Option<String>,
    /// The key of which at most one run is pending, and one leased, at a time.
    pub concurrency_key: Option<String>,
    /// The index the next step of the current execution gets.
    pub current_step_index: u64,
    /// Steps completed, over every execution.
    pub completed_step_count: u64,
    /// The progress reported by the run, as JSON.
    pub progress: Option<String>,
    /// The output of a completed run, as JSON.
    pub output: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// The run's labels.
    pub labels: Labels,
    /// The worker holding the lease, while leased.
    pub lease_owner: Option<String>,
    /// When the lease lapses, while leased.
    pub lease_expires_at: Option<Timestamp>,
    /// Bumped by every claim; fences the claimed execution's writes.
    pub lease_generation: u64,
    /// The attempt (1 for the first), counted by the retry policy.
    pub attempt: u32,
    /// A retried run is not claimed before this time.
    pub not_before: Option<Timestamp>,
    /// When it was first claimed.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// When it was triggered.
    pub created_at: Timestamp,
    /// Time of the last write.
    pub updated_at: Timestamp,
}

/// A run to create.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// The run's id.
    pub id: String,
    /// The step job's persisted name.
    pub job_name: String,
    /// The input, as JSON.
    pub input: String,
    /// See [`RunRecord::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// See [`RunRecord::concurrency_key`].
    pub concurrency_key: Option<String>,
    /// The run's labels.
    pub labels: Labels,
    /// `coalesce: skip`: a pending run with the same job and concurrency key is returned
    /// instead of a conflict.
    pub coalesce: bool,
}

/// How one item of an enqueue was satisfied.
#[derive(Clone, Debug, PartialEq)]
pub enum Enqueued {
    /// A new run.
    Created(RunRecord),
    /// The run that already had the idempotency key.
    Idempotent(RunRecord),
    /// The pending run with the same job and concurrency key (`coalesce: skip`).
    Coalesced(RunRecord),
}

/// The result of an enqueue: every item applied, or none because one conflicted.
#[derive(Clone, Debug, PartialEq)]
pub enum EnqueueOutcome {
    /// Every item, in order.
    Done(Vec<Enqueued>),
    /// Item `index` found a pending run with the same job and concurrency key and did not
    /// coalesce. Nothing was written.
    Conflict {
        /// The item that conflicted.
        index: usize,
        /// The pending run it conflicted with.
        existing: Box<RunRecord>,
    },
}

/// A run claimed by a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedRun {
    /// The run's id.
    pub id: String,
    /// The step job's persisted name.
    pub job_name: String,
    /// The input, as JSON.
    pub input: String,
    /// The run's labels.
    pub labels: Labels,
    /// See [`RunRecord::concurrency_key`].
    pub concurrency_key: Option<String>,
    /// The claimed generation: the fence of every write of this execution.
    pub generation: u64,
    /// See [`Fence::hint`].
    pub hint: Option<i64>,
    /// The attempt this execution makes (1 for the first).
    pub attempt: u32,
    /// When the run was first claimed.
    pub started_at: Timestamp,
    /// When the run became claimable: its creation, its retry's not-before time, or the expiry
    /// of the lease it was reclaimed from.
    pub due_at: Timestamp,
    /// When the lease lapses unless renewed.
    pub lease_expires_at: Timestamp,
}

/// What a claim found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claimed {
    /// The runs claimed, oldest first.
    pub runs: Vec<ClaimedRun>,
    /// The earliest later time at which something may become claimable without a new trigger:
    /// a retry's not-before time or another owner's lease expiry.
    pub next_due: Option<Timestamp>,
}

/// The fence of an executing worker: the run and the generation it claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The run.
    pub run_id: String,
    /// The generation claimed.
    pub generation: u64,
    /// Backend-private: whatever the backend's claim handed out ([`ClaimedRun::hint`]) to find
    /// the run faster than by its id. Only the backend that gave it reads it, and it checks the
    /// id all the same; the engine passes it back untouched.
    pub hint: Option<i64>,
}

/// A step attempt to persist.
#[derive(Clone, Debug)]
pub struct NewStep {
    /// The step row's id.
    pub id: String,
    /// The step's name, its memoisation key.
    pub name: String,
    /// Its position within the execution.
    pub index: u64,
    /// How it ended.
    pub status: StepStatus,
    /// Its output as JSON, when completed.
    pub output: Option<String>,
    /// Its error, when failed or cancelled.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub completed_at: Timestamp,
}

/// A log entry to persist.
#[derive(Clone, Debug)]
pub struct NewLog {
    /// The log row's id (increasing).
    pub id: String,
    /// The step it was written in, if any.
    pub step_name: Option<String>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Structured data, as JSON.
    pub data: Option<String>,
    /// When it was written.
    pub created_at: Timestamp,
}

/// A completed step loaded for replay.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredStep {
    /// The step's name.
    pub name: String,
    /// Its position within the execution that ran it.
    pub index: u64,
    /// Its output, as JSON.
    pub output: Option<String>,
}

/// One persisted step row.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRow {
    /// The step row's id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The step's name.
    pub name: String,
    /// Its position within the execution that ran it.
    pub index: u64,
    /// How it ended.
    pub status: StepStatus,
    /// Its output as JSON, when completed.
    pub output: Option<String>,
    /// Its error, when failed or cancelled.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
}

/// One persisted log row.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// The log row's id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The step it was written in, if any.
    pub step_name: Option<String>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Structured data, as JSON.
    pub data: Option<String>,
    /// When it was written.
    pub created_at: Timestamp,
}

/// How a run ends, as written by its worker.
#[derive(Clone, Debug)]
pub enum Finish {
    /// The run completed with `output`.
    Completed {
        /// The output, as JSON.
        output: Option<String>,
        /// Steps completed, over every execution.
        completed_step_count: u64,
        /// The index the next step would have had.
        current_step_index: u64,
    },
    /// The run failed with `error`.
    Failed {
        /// The error message.
        error: String,
        /// With a retry policy: go back to pending for `attempt`, not before `not_before`.
        retry: Option<(u32, Timestamp)>,
    },
}

/// What [`RunStore::finish_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The fence did not hold: nothing was written.
    Refused,
    /// Completed.
    Completed,
    /// Failed for good.
    Failed,
    /// Back to pending for a retry.
    Retrying,
    /// A retry was asked for but a pending run with the same job and concurrency key exists,
    /// so the run failed instead.
    FailedRetryBlocked,
}

/// What a cancel found.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// No such run.
    NotFound,
    /// Already terminal, in this status.
    Terminal(RunStatus),
    /// Cancelled; the run as it was before.
    Cancelled(Box<RunRecord>),
}

/// What a delete found.
#[derive(Clone, Debug, PartialEq)]
pub enum DeleteOutcome {
    /// No such run.
    NotFound,
    /// Still pending or leased.
    Active(RunStatus),
    /// Deleted; the run as it was.
    Deleted(Box<RunRecord>),
}

/// The operations of step jobs on a store.
///
/// Object-safe: the engine holds it as `Arc<dyn RunStore>`.
pub trait RunStore: Send + Sync + 'static {
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

    /// Expires every lease, so runs interrupted by a crash resume at once; returns how many.
    /// Called once when the worker of an engine on an [exclusive](super::Ownership::Exclusive)
    /// store starts: no other process can hold a lease there. Never called on a shared store.
    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;
}
