//! Step-job runs on PostgreSQL: the [`RunStore`] operations as functions over a connection,
//! run by the store's writer (many callers' writes to a transaction, see the writer module) or
//! as single statements on connections of its pool.
//!
//! The tables follow the SQLite store's (`runs` is its `durably_runs`), with the differences
//! listed in the schema module. What several processes need is in the statements: a claim locks
//! its candidates with `FOR UPDATE SKIP LOCKED` and takes a transaction-scoped advisory lock per
//! concurrency key; every write of an executing run is fenced by its lease generation; the
//! idempotency and pending-concurrency rules are unique indexes, so concurrent enqueues from
//! several processes cannot both create a run either rule forbids.

mod admin;
pub(super) mod claim;
pub(crate) mod codec;
pub(super) mod enqueue;
pub(super) mod fenced;

use super::{Decision, PostgresStore};
use crate::store::runs::{
    CancelOutcome, Claimed, DeleteOutcome, EnqueueOutcome, Enqueued, Fence, Finish, FinishOutcome,
    LogRow, NewLog, NewRun, NewStep, RunCounts, RunFilter, RunRecord, RunStore, StepRow,
    StoredStep,
};
use crate::store::{BoxFuture, Change, StoreError};
use crate::time::Timestamp;

use super::completions::Completion;
use enqueue::Attempt;

impl RunStore for PostgresStore {
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>> {
        Box::pin(async move {
            let outcome = self
                .write((runs, now), |conn, sql, (runs, now)| {
                    Box::pin(async move {
                        let attempt = enqueue::enqueue(conn, sql, runs, *now).await?;
                        Ok(match attempt {
                            Attempt::Done(done) => Decision::Commit(EnqueueOutcome::Done(done)),
                            Attempt::Conflict(conflict) => Decision::RollBack(conflict),
                            Attempt::Raced => Decision::Retry,
                        })
                    })
                })
                .await?;
            if let EnqueueOutcome::Done(done) = &outcome {
                if done.iter().any(|run| matches!(run, Enqueued::Created(_))) {
                    self.wakeups.announce(Change::Runs);
                }
            }
            Ok(outcome)
        })
    }

    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            admin::get_run(&mut conn, &self.sql, id).await
        })
    }

    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            admin::get_runs(&mut conn, &self.sql, &filter).await
        })
    }

    fn count_runs(&self, since: Timestamp) -> BoxFuture<'_, Result<Vec<RunCounts>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            admin::count_runs(&mut conn, &self.sql, since).await
        })
    }

    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        let data = (owner.to_owned(), now, lease_until, limit);
        Box::pin(self.write(data, |conn, sql, (owner, now, until, limit)| {
            Box::pin(async move {
                claim::claim(conn, sql, owner, *now, *until, *limit)
                    .await
                    .map(Decision::Commit)
            })
        }))
    }

    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            claim::next_due(&mut conn, &self.sql, owner, now).await
        })
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        let data = (owner.to_owned(), now, lease_until);
        Box::pin(self.write(data, |conn, sql, (owner, now, until)| {
            Box::pin(async move {
                claim::renew_leases(conn, sql, owner, *now, *until)
                    .await
                    .map(Decision::Commit)
            })
        }))
    }

    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            fenced::completed_steps(&mut conn, &self.sql, run_id).await
        })
    }

    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(
            self.write((fence, step, logs), |conn, sql, (fence, step, logs)| {
                Box::pin(async move {
                    fenced::persist_step(conn, sql, fence, step, logs)
                        .await
                        .map(Decision::Commit)
                })
            }),
        )
    }

    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let data = (fence, progress, logs, now);
        Box::pin(self.write(data, |conn, sql, (fence, progress, logs, now)| {
            Box::pin(async move {
                fenced::update_progress(conn, sql, fence, progress.as_deref(), logs, *now)
                    .await
                    .map(Decision::Commit)
            })
        }))
    }

    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            fenced::insert_logs(&mut conn, &self.sql, &run_id, &logs).await
        })
    }

    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(run_id, |conn, sql, run_id| {
            Box::pin(async move {
                fenced::delete_cancelled_steps(conn, sql, run_id)
                    .await
                    .map(Decision::Commit)
            })
        }))
    }

    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>> {
        Box::pin(async move {
            let outcome = match (finish, logs.is_empty()) {
                // The common end: folded with the group's other completions.
                (
                    Finish::Completed {
                        output,
                        completed_step_count,
                        current_step_index,
                    },
                    true,
                ) => {
                    self.check_open()?;
                    self.writer
                        .complete(|reply| Completion {
                            fence,
                            output,
                            completed_step_count,
                            current_step_index,
                            cleanup,
                            now,
                            reply,
                        })
                        .await?
                }
                (finish, _) => {
                    let data = (fence, finish, logs, cleanup, now);
                    self.write(data, |conn, sql, (fence, finish, logs, cleanup, now)| {
                        Box::pin(async move {
                            fenced::finish_run(conn, sql, fence, finish, logs, *cleanup, *now)
                                .await
                                .map(Decision::Commit)
                        })
                    })
                    .await?
                }
            };
            match outcome {
                FinishOutcome::Refused => {}
                FinishOutcome::Retrying => self.wakeups.announce(Change::Runs),
                FinishOutcome::Completed
                | FinishOutcome::Failed
                | FinishOutcome::FailedRetryBlocked => self.announce_end(),
            }
            Ok(outcome)
        })
    }

    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        Box::pin(async move {
            let data = (id.to_owned(), now, cleanup);
            let outcome = self
                .write(data, |conn, sql, (id, now, cleanup)| {
                    Box::pin(async move {
                        admin::cancel_run(conn, sql, id, *now, *cleanup)
                            .await
                            .map(Decision::Commit)
                    })
                })
                .await?;
            if let CancelOutcome::Cancelled(_) = outcome {
                self.announce_end();
            }
            Ok(outcome)
        })
    }

    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>> {
        Box::pin(self.write(id.to_owned(), |conn, sql, id| {
            Box::pin(async move { admin::delete_run(conn, sql, id).await.map(Decision::Commit) })
        }))
    }

    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(
            self.write((job, before, limit), |conn, sql, (job, before, limit)| {
                Box::pin(async move {
                    admin::purge_runs(conn, sql, job.as_deref(), *before, *limit)
                        .await
                        .map(Decision::Commit)
                })
            }),
        )
    }

    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            admin::get_steps(&mut conn, &self.sql, run_id).await
        })
    }

    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            admin::get_logs(&mut conn, &self.sql, run_id).await
        })
    }

    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let expired = self
                .write(now, |conn, sql, now| {
                    Box::pin(
                        async move { claim::recover(conn, sql, *now).await.map(Decision::Commit) },
                    )
                })
                .await?;
            if expired > 0 {
                self.wakeups.announce(Change::Runs);
            }
            Ok(expired)
        })
    }
}

impl PostgresStore {
    /// Announces that a run ended: to engines waiting for it, and to workers, since its end
    /// may free its concurrency key for a pending run.
    fn announce_end(&self) {
        self.wakeups.announce(Change::RunEnded);
        self.wakeups.announce(Change::Runs);
    }
}
