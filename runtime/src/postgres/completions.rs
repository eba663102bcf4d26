//! The completions of a group, in one statement: the writer folds every run completion queued
//! in a group (those with no logs to append, the common case) into one `UPDATE ... FROM
//! unnest(...)`, each fenced on its own run and generation, with the cleanup of the runs that
//! ask for it in the same statement. Each caller is answered with its own outcome: `Completed`
//! when its run was leased at its generation, `Refused` (nothing written) otherwise.

use sqlx::PgConnection;
use tokio::sync::oneshot;

use super::codec::{to_i64, Context, DbTime, Sql};
use super::writer::{Failure, Job, Ran};
use crate::store::runs::{Fence, FinishOutcome};
use crate::store::{BoxFuture, StoreError};
use crate::time::Timestamp;

/// One run's completion, queued for the writer.
pub(crate) struct Completion {
    pub(crate) fence: Fence,
    pub(crate) output: Option<String>,
    pub(crate) completed_step_count: u64,
    pub(crate) current_step_index: u64,
    pub(crate) cleanup: bool,
    pub(crate) now: Timestamp,
    pub(crate) reply: oneshot::Sender<Result<FinishOutcome, StoreError>>,
}

/// The completions of one group, run as one write of it.
pub(crate) struct Completions {
    items: Vec<Completion>,
    /// Per item, whether its run was completed; set by the last run of the statement.
    completed: Vec<bool>,
    error: Option<StoreError>,
    attempts: u32,
}

impl Completions {
    pub(crate) fn new(items: Vec<Completion>) -> Completions {
        Completions {
            items,
            completed: Vec::new(),
            error: None,
            attempts: 0,
        }
    }

    async fn complete(&self, conn: &mut PgConnection, sql: &Sql) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<&str> = self.items.iter().map(|c| c.fence.run_id.as_str()).collect();
        let generations: Vec<i64> = self
            .items
            .iter()
            .map(|c| to_i64(c.fence.generation))
            .collect();
        let outputs: Vec<Option<&str>> = self.items.iter().map(|c| c.output.as_deref()).collect();
        let times: Vec<DbTime> = self.items.iter().map(|c| DbTime(c.now)).collect();
        let counts: Vec<i64> = self
            .items
            .iter()
            .map(|c| to_i64(c.completed_step_count))
            .collect();
        let indexes: Vec<i64> = self
            .items
            .iter()
            .map(|c| to_i64(c.current_step_index))
            .collect();
        let cleanups: Vec<bool> = self.items.iter().map(|c| c.cleanup).collect();
        let done: Vec<String> = sqlx::query_scalar(&sql.get(
            "WITH done AS (
                UPDATE {s}.runs r SET status = 'completed', output = c.output, error = NULL,
                       lease_owner = NULL, lease_expires_at = NULL, not_before = NULL,
                       completed_at = c.at, updated_at = c.at, completed_step_count = c.steps,
                       current_step_index = c.next_index
                  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                              $5::bigint[], $6::bigint[], $7::bool[])
                       AS c(id, generation, output, at, steps, next_index, cleanup)
                 WHERE r.id = c.id AND r.status = 'leased' AND r.lease_generation = c.generation
                 RETURNING r.id, c.cleanup),
             steps AS (DELETE FROM {s}.run_steps
                        WHERE run_id IN (SELECT id FROM done WHERE cleanup)),
             logs AS (DELETE FROM {s}.run_logs
                       WHERE run_id IN (SELECT id FROM done WHERE cleanup))
             SELECT id FROM done",
        ))
        .bind(&ids)
        .bind(&generations)
        .bind(&outputs)
        .bind(&times)
        .bind(&counts)
        .bind(&indexes)
        .bind(&cleanups)
        .fetch_all(conn)
        .await
        .context("completing runs")?;
        Ok(ids.iter().map(|id| done.iter().any(|d| d == id)).collect())
    }
}

impl Job for Completions {
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection, sql: &'c Sql) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            self.attempts += 1;
            match self.complete(conn, sql).await {
                Ok(completed) => {
                    self.completed = completed;
                    self.error = None;
                    Ran::Applied
                }
                Err(e) => {
                    let ran = super::writer::ran_after(&e, self.attempts >= super::ATTEMPTS);
                    self.error = Some(e);
                    ran
                }
            }
        })
    }

    fn answer(self: Box<Self>, failure: Option<&Failure>) {
        let Completions {
            items,
            completed,
            error,
            ..
        } = *self;
        let error = error.map(|e| Failure::of(&e));
        for (i, item) in items.into_iter().enumerate() {
            let answer = match (failure.or(error.as_ref()), completed.get(i)) {
                (Some(failure), _) => Err(failure.to_error()),
                (None, Some(true)) => Ok(FinishOutcome::Completed),
                (None, _) => Ok(FinishOutcome::Refused),
            };
            let _ = item.reply.send(answer);
        }
    }

    fn failure(&self) -> Failure {
        match &self.error {
            Some(e) => Failure::of(e),
            None => Failure::Database("the connection failed during a group's transaction".into()),
        }
    }
}
