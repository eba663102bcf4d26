//! The PostgreSQL store's statements for step-job runs, on a connection the caller holds: the
//! benchmark's raw-SQL ceiling runs them for the same rows as its workloads, many runs to a
//! transaction of its own, without the engine or the store's writer.

use sqlx::PgConnection;

use super::codec::{check_schema_name, Sql};
use super::runs::{claim, enqueue, fenced};
use crate::store::runs::{
    Claimed, EnqueueOutcome, Fence, Finish, FinishOutcome, NewLog, NewRun, NewStep,
};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The run statements of the store in one schema (which a store opened on it has migrated).
#[derive(Debug)]
pub struct RunStatements {
    sql: Sql,
}

impl RunStatements {
    /// The statements of the schema `name`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when `name` is not a plain identifier.
    pub fn new(schema: &str) -> Result<RunStatements, StoreError> {
        check_schema_name(schema)?;
        Ok(RunStatements {
            sql: Sql::new(schema),
        })
    }

    /// Creates `runs` as the store's enqueue does; `Ok(None)` when it would roll back or run
    /// again (a conflict, a race), which the ceiling's fresh rows never meet.
    ///
    /// # Errors
    ///
    /// As the statements'.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        runs: &[NewRun],
        now: Timestamp,
    ) -> Result<Option<EnqueueOutcome>, StoreError> {
        Ok(match enqueue::enqueue(conn, &self.sql, runs, now).await? {
            enqueue::Attempt::Done(done) => Some(EnqueueOutcome::Done(done)),
            enqueue::Attempt::Conflict(_) | enqueue::Attempt::Raced => None,
        })
    }

    /// Claims up to `limit` runs for `owner`, as the store's claim does.
    ///
    /// # Errors
    ///
    /// As the statements'.
    pub async fn claim(
        &self,
        conn: &mut PgConnection,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Claimed, StoreError> {
        claim::claim(conn, &self.sql, owner, now, lease_until, limit).await
    }

    /// Persists a step, fenced, as the store does; `false` when the fence does not hold.
    ///
    /// # Errors
    ///
    /// As the statements'.
    pub async fn persist_step(
        &self,
        conn: &mut PgConnection,
        fence: &Fence,
        step: &NewStep,
        logs: &[NewLog],
    ) -> Result<bool, StoreError> {
        fenced::persist_step(conn, &self.sql, fence, step, logs).await
    }

    /// Ends a run, fenced, as the store does.
    ///
    /// # Errors
    ///
    /// As the statements'.
    pub async fn finish_run(
        &self,
        conn: &mut PgConnection,
        fence: &Fence,
        finish: &Finish,
        cleanup: bool,
        now: Timestamp,
    ) -> Result<FinishOutcome, StoreError> {
        fenced::finish_run(conn, &self.sql, fence, finish, &[], cleanup, now).await
    }
}
