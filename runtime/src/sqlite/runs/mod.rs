//! Step-job runs on SQLite: the schema (migrations 2, 4, 6 and 7) and the [`RunStore`] operations
//! as plain functions over a connection, run through the store's group-committed writer
//! (`write`) or its read connections (`read`).
//!
//! Table, column and index names follow `@coji/durably` 0.15.0, and timestamps are the same
//! 24-character ISO strings (`YYYY-MM-DDTHH:MM:SS.sssZ`, compared as text). Differences, all for
//! speed or for features upstream lacks:
//! - `attempt` and `not_before` columns (retry policies);
//! - several indexes are partial, so a row only pays for the indexes its status uses
//!   (`status_lease_expires` leased runs only, the idempotency and concurrency indexes keyed
//!   rows only);
//! - listings are answered by one index range per job and status, so a page costs its size and
//!   not the number of runs of other statuses (migration 7): pending runs by `(status,
//!   created_at, id)` of pending runs only, which ends with `id` so the FIFO claim order needs
//!   no sort; completed, failed and cancelled runs by `(status, created_at, id)` and `(job_name,
//!   status, created_at, id)` of ended runs only; leased runs by `status_lease_expires`. A run
//!   enters each once and leaves only the pending one;
//! - `durably_steps` is clustered on `(run_id, "index", id)` (`WITHOUT ROWID`), which replaces
//!   `idx_durably_steps_run_index`, and has no unique index on `(run_id, name)` of completed
//!   steps (dropped by migration 4): a step insert touches one b-tree instead of four. The
//!   uniqueness holds without it: a completed step is only persisted by the execution that holds
//!   the run's lease (the fence below), which never runs a step whose name it has completed;
//! - a step persist is a fence check on the run row and a single-row insert; the run's
//!   `completed_step_count` and `current_step_index` are written at the end of the execution and
//!   computed from the step rows while the run is active.

mod admin;
mod claim;
mod codec;
mod enqueue;
mod fenced;
mod schema;
// Public for the benchmark (`bench_internals`), which runs the same statements.
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub mod statements;

use std::future::Future;

use rusqlite::Connection;

use admin::*;
use claim::*;
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) use codec::format_ts;
use enqueue::*;
use fenced::*;
pub(crate) use schema::{
    DROP_STEP_NAME_INDEX, LISTING_INDEXES, PENDING_AND_ENDED_INDEXES, RUNS_SCHEMA,
};

/// The step-job tables as the migrations leave them (2, 4, 6, then 7).
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn schema_after_migrations() -> String {
    format!("{RUNS_SCHEMA}\n{DROP_STEP_NAME_INDEX}\n{LISTING_INDEXES}\n{PENDING_AND_ENDED_INDEXES}")
}

use crate::store::runs::{
    CancelOutcome, Claimed, DeleteOutcome, EnqueueOutcome, Fence, Finish, FinishOutcome, LogRow,
    NewLog, NewRun, NewStep, RunRecord, RunStore, StepRow, StoredStep,
};
use crate::store::runs::{RunCounts, RunFilter};
use crate::store::{BoxFuture, StoreError};
use crate::time::Timestamp;

/// How the run store reaches SQLite: a group-committed writer and read connections.
pub(crate) trait SqlExecutor: Send + Sync + 'static {
    /// Runs `op` on the writer connection; an `Err` rolls back `op` alone. Resolves after the
    /// enclosing transaction committed. `op` may run twice (a group replayed after another
    /// write's failure), so it acts on the connection only.
    fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static;

    /// As [`write`](Self::write), for a write a power loss may undo without undoing anything a
    /// caller was told (a claim): with a synced log, its result need not wait for the sync.
    fn write_unsynced<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(op)
    }

    /// Runs `op` on a read connection (committed data).
    fn read<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static;
}

impl<S: SqlExecutor> RunStore for S {
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>> {
        Box::pin(self.write(move |c| enqueue(c, &runs, now)))
    }

    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.read(move |c| get_run(c, &id)))
    }

    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(self.read(move |c| get_runs(c, &filter)))
    }

    fn count_runs(&self, since: Timestamp) -> BoxFuture<'_, Result<Vec<RunCounts>, StoreError>> {
        Box::pin(self.read(move |c| count_runs(c, since)))
    }

    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        let owner = owner.to_owned();
        // Unsynced: a claim lost with the machine leaves its run pending, to be claimed again.
        Box::pin(self.write_unsynced(move |c| claim(c, &owner, now, lease_until, limit)))
    }

    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.read(move |c| next_due(c, &owner, now)))
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.write(move |c| renew_leases(c, &owner, now, lease_until)))
    }

    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| completed_steps(c, &run_id)))
    }

    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |c| persist_step(c, &fence, &step, &logs)))
    }

    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |c| update_progress(c, &fence, progress.as_deref(), &logs, now)))
    }

    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c| insert_logs(c, &run_id, &logs)))
    }

    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c| delete_cancelled_steps(c, &run_id)))
    }

    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>> {
        Box::pin(self.write(move |c| finish_run(c, &fence, &finish, &logs, cleanup, now)))
    }

    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.write(move |c| cancel_run(c, &id, now, cleanup)))
    }

    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.write(move |c| delete_run(c, &id)))
    }

    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c| purge_runs(c, job.as_deref(), before, limit)))
    }

    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| get_steps(c, &run_id)))
    }

    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| get_logs(c, &run_id)))
    }

    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c| recover(c, now)))
    }
}

#[cfg(test)]
mod tests;

impl SqlExecutor for super::SqliteStore {
    fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::write(self, op)
    }

    fn write_unsynced<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::write_unsynced(self, op)
    }

    fn read<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::read(self, op)
    }
}
