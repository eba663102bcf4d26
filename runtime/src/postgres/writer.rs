//! The writer: every write of the store, grouped into shared transactions (group commit).
//!
//! A write is queued with its reply channel. The writer task takes the first waiting write and
//! every other one queued behind it (up to [`MAX_GROUP`]) and runs them in one transaction on
//! a connection of the pool: one commit, one wait for the server's log flush, answers them
//! all, and the writes queued meanwhile make the next group. Replies are sent only after
//! `COMMIT` returned, so no caller sees a write that could still be rolled back; announcements
//! are the callers' own, made after their reply. The writer runs the store's own statements
//! only, never user code, so no transaction stays open across it.
//!
//! The writes of a group run without savepoints first. A savepoint costs a round trip to the
//! server and a subtransaction: a transaction with more than 64 of them overflows the server's
//! per-backend cache, and every snapshot taken meanwhile, on every connection, pays for it.
//! Almost every write that does not apply says so before changing a row (a fence or version
//! that does not hold, a key already taken), and the group commits. When a write fails or must
//! roll back its own part, the whole transaction is rolled back and the group run again with a
//! savepoint around each write, so that this write rolls back alone and every other one gets
//! exactly the outcome it would have had in a transaction of its own. Writes therefore may run
//! more than once; they must act only on the connection they are given.
//!
//! A group whose connection fails (the server restarted, the backend was terminated, the
//! network dropped) answers every one of its writes with [`StoreError::Database`]: nothing of
//! it committed. The connection is closed, and the next group takes a new one from the pool.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::codec::{database_error, is_transient, sql_error, sqlstate, Sql};
use super::completions::{Completion, Completions};
use super::{Decision, ATTEMPTS};
use crate::store::runs::FinishOutcome;
use crate::store::{BoxFuture, StoreError};

/// Most writes in one group. Bounds how long the first write of a group waits for the others.
const MAX_GROUP: usize = 256;

/// A write: the store's statements for one caller, run on the group's connection with the
/// caller's data. A plain function (no captures), so that it can run again on a replay.
pub(crate) type WriteFn<D, T> = for<'c> fn(
    &'c mut PgConnection,
    &'c Sql,
    &'c D,
) -> BoxFuture<'c, Result<Decision<T>, StoreError>>;

/// What running a write once found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// Its changes are to commit.
    Applied,
    /// Its outcome is known and nothing of it may stay: a refusal it decided, or its own error.
    RolledBack,
    /// It lost a race (or was a deadlock's victim) that running it again resolves.
    Again,
    /// The connection failed under it: the group cannot commit.
    Broken,
}

/// A queued write with its reply channel, type-erased for the queue.
pub(super) trait Job: Send {
    /// Runs the write and keeps its outcome (replacing one from an earlier run).
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection, sql: &'c Sql) -> BoxFuture<'c, Ran>;
    /// Replies: the write's own outcome, or `failure` when its group did not commit.
    fn answer(self: Box<Self>, failure: Option<&Failure>);
    /// Why the group failed, when this write found its connection broken.
    fn failure(&self) -> Failure;
}

/// Why a group did not commit.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Closed,
    Database(String),
}

impl Failure {
    pub(super) fn of(error: &StoreError) -> Failure {
        match error {
            StoreError::Closed => Failure::Closed,
            other => Failure::Database(other.to_string()),
        }
    }

    /// The error each write of the group is answered with.
    pub(super) fn to_error(&self) -> StoreError {
        match self {
            Failure::Closed => StoreError::Closed,
            Failure::Database(message) => database_error(format!(
                "the transaction of a group of writes failed, nothing of it was applied: {message}"
            )),
        }
    }
}

struct Pending<D, T> {
    data: D,
    write: WriteFn<D, T>,
    attempts: u32,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<D: Send + Sync, T: Send> Job for Pending<D, T> {
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection, sql: &'c Sql) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            self.attempts += 1;
            let last_attempt = self.attempts >= ATTEMPTS;
            let (ran, outcome) = match (self.write)(conn, sql, &self.data).await {
                Ok(Decision::Commit(value)) => (Ran::Applied, Some(Ok(value))),
                Ok(Decision::RollBack(value)) => (Ran::RolledBack, Some(Ok(value))),
                Ok(Decision::Retry) if !last_attempt => (Ran::Again, None),
                Ok(Decision::Retry) => (
                    Ran::RolledBack,
                    Some(Err(database_error(
                        "a transaction kept losing races with other processes; giving up",
                    ))),
                ),
                Err(e) => match ran_after(&e, last_attempt) {
                    Ran::Again => (Ran::Again, None),
                    ran => (ran, Some(Err(e))),
                },
            };
            self.outcome = outcome;
            ran
        })
    }

    fn answer(self: Box<Self>, failure: Option<&Failure>) {
        let answer = match (failure, self.outcome) {
            (Some(failure), _) => Err(failure.to_error()),
            (None, Some(outcome)) => outcome,
            // Every write of a committed group ran to an outcome; this is for safety only.
            (None, None) => Err(database_error("a write of a group was never run")),
        };
        // The caller may have stopped waiting; its write stands either way.
        let _ = self.reply.send(answer);
    }

    fn failure(&self) -> Failure {
        match &self.outcome {
            Some(Err(e)) => Failure::of(e),
            _ => Failure::Database("the connection failed during a group's transaction".into()),
        }
    }
}

/// What a write that failed with `error` did to its group.
pub(super) fn ran_after(error: &StoreError, last_attempt: bool) -> Ran {
    match classify(error) {
        Fault::Own => Ran::RolledBack,
        Fault::Transient if !last_attempt => Ran::Again,
        Fault::Transient => Ran::RolledBack,
        Fault::Connection => Ran::Broken,
    }
}

/// Whose fault a write's error is.
enum Fault {
    /// The write's own: it gets the error, the others of its group are unaffected.
    Own,
    /// A deadlock or serialization failure: running it again may succeed.
    Transient,
    /// The connection's (or the server's): the group's transaction is lost.
    Connection,
}

fn classify(error: &StoreError) -> Fault {
    match error {
        StoreError::Conflict(_) | StoreError::DuplicateEvent { .. } | StoreError::InUse { .. } => {
            Fault::Own
        }
        StoreError::Closed => Fault::Connection,
        StoreError::Database(_) if is_transient(error) => Fault::Transient,
        StoreError::Database(_) => match sqlstate(error).as_deref() {
            // Connection exceptions, operator intervention (shutdown, terminated backend),
            // and a transaction the server already aborted.
            Some(code) if code.starts_with("08") || code.starts_with("57") || code == "25P02" => {
                Fault::Connection
            }
            Some(_) => Fault::Own,
            // Not reported by the server: the connection failed.
            None => Fault::Connection,
        },
    }
}

/// What the writer is asked to do.
enum Queued {
    Write(Box<dyn Job>),
    /// A run's completion, folded with the group's others into one statement.
    Completion(Completion),
}

type Queue = mpsc::UnboundedReceiver<Queued>;

/// The writer tasks and their queue.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
    /// The queue's other end, which the tasks take turns to read.
    #[cfg(test)]
    receiver: Arc<tokio::sync::Mutex<Queue>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Writer {
    /// Starts `connections` writer tasks on `pool`. Must be called within a Tokio runtime.
    pub(crate) fn start(pool: &PgPool, sql: &Arc<Sql>, connections: usize) -> Writer {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let tasks = (0..connections.max(1))
            .map(|_| {
                let (pool, sql, receiver) = (pool.clone(), Arc::clone(sql), Arc::clone(&receiver));
                tokio::spawn(async move {
                    while let Some(group) = next_group(&receiver).await {
                        run_group(&pool, &sql, group).await;
                    }
                })
            })
            .collect();
        Writer {
            queue: Mutex::new(Some(sender)),
            #[cfg(test)]
            receiver,
            tasks: Mutex::new(tasks),
        }
    }

    /// Queues `write` with `data` and waits for its outcome, which comes once its group
    /// committed (or failed).
    pub(crate) async fn write<D, T>(&self, data: D, write: WriteFn<D, T>) -> Result<T, StoreError>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Queued::Write(Box::new(Pending {
            data,
            write,
            attempts: 0,
            outcome: None,
            reply,
        })))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Queues a run's completion (one with no logs to append) and waits for its outcome,
    /// which comes once its group committed (or failed).
    pub(crate) async fn complete(
        &self,
        completion: impl FnOnce(oneshot::Sender<Result<FinishOutcome, StoreError>>) -> Completion,
    ) -> Result<FinishOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Queued::Completion(completion(reply)))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    fn send(&self, queued: Queued) -> Result<(), StoreError> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match queue.as_ref() {
            Some(queue) if queue.send(queued).is_ok() => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    /// How many writes wait in the queue while no task reads it (one that waits for a write
    /// holds it, and this waits for it).
    #[cfg(test)]
    pub(crate) async fn queued(&self) -> usize {
        self.receiver.lock().await.len()
    }

    /// Refuses later writes; the writer tasks finish the queued ones, then end.
    pub(crate) fn stop_now(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// As [`stop_now`](Self::stop_now), then waits for the tasks to end (so that their
    /// connections are back in the pool).
    pub(crate) async fn stop(&self) {
        self.stop_now();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The first queued write, waited for, and every one queued behind it; `None` when the queue
/// is closed and empty.
async fn next_group(receiver: &tokio::sync::Mutex<Queue>) -> Option<Vec<Box<dyn Job>>> {
    let mut receiver = receiver.lock().await;
    let mut next = Some(receiver.recv().await?);
    let mut group: Vec<Box<dyn Job>> = Vec::new();
    let mut completions = Vec::new();
    while let Some(queued) = next.take() {
        match queued {
            Queued::Write(job) => group.push(job),
            Queued::Completion(completion) => completions.push(completion),
        }
        if group.len() + completions.len() < MAX_GROUP {
            next = receiver.try_recv().ok();
        }
    }
    if !completions.is_empty() {
        group.push(Box::new(Completions::new(completions)));
    }
    Some(group)
}

/// Runs `group` in one transaction on a connection of `pool` and answers each write.
async fn run_group(pool: &PgPool, sql: &Sql, mut group: Vec<Box<dyn Job>>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let failure = Failure::of(&sql_error("taking a connection for a group of writes", e));
            return answer_all(group, Some(&failure));
        }
    };
    let ended = match without_savepoints(&mut conn, sql, &mut group).await {
        Ended::Replay => with_savepoints(&mut conn, sql, &mut group).await,
        ended => ended,
    };
    match ended {
        Ended::Committed => answer_all(group, None),
        Ended::Failed { failure, broken } => {
            if broken {
                // Its state is unknown: it must not go back to the pool.
                let _ = conn.close().await;
            }
            if let Failure::Database(message) = &failure {
                tracing::warn!(
                    writes = group.len(),
                    error = %message,
                    "a group of writes failed; every write of it is answered with the error"
                );
            }
            answer_all(group, Some(&failure));
        }
        // A replay never asks for another one; answered as a failure should that change.
        Ended::Replay => {
            let failure = Failure::Database("a group of writes could not be replayed".into());
            answer_all(group, Some(&failure));
        }
    }
}

/// How a run of a group ended.
enum Ended {
    Committed,
    /// A write must roll back alone: run the group again with a savepoint around each.
    Replay,
    /// Nothing of the group committed; `broken` when the connection must be closed.
    Failed {
        failure: Failure,
        broken: bool,
    },
}

impl Ended {
    fn failed(error: &StoreError) -> Ended {
        Ended::Failed {
            failure: Failure::of(error),
            broken: matches!(classify(error), Fault::Connection),
        }
    }
}

/// The first run of a group: one transaction, no savepoints.
async fn without_savepoints(
    conn: &mut PoolConnection<Postgres>,
    sql: &Sql,
    group: &mut [Box<dyn Job>],
) -> Ended {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return Ended::failed(&sql_error("starting a group's transaction", e)),
    };
    for job in group.iter_mut() {
        match job.run(&mut tx, sql).await {
            Ran::Applied => {}
            Ran::RolledBack | Ran::Again => {
                return match tx.rollback().await {
                    Ok(()) => Ended::Replay,
                    Err(e) => Ended::failed(&sql_error("rolling back a group's transaction", e)),
                };
            }
            Ran::Broken => return broken_by(job.as_ref()),
        }
    }
    commit(tx).await
}

/// The replay of a group: each write in a savepoint of its own, rolled back to when the write
/// does not apply, and run again (up to [`ATTEMPTS`] times in all) when it lost a race.
async fn with_savepoints(
    conn: &mut PoolConnection<Postgres>,
    sql: &Sql,
    group: &mut [Box<dyn Job>],
) -> Ended {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return Ended::failed(&sql_error("starting a group's transaction", e)),
    };
    for job in group.iter_mut() {
        loop {
            let mut savepoint = match tx.begin().await {
                Ok(savepoint) => savepoint,
                Err(e) => return Ended::failed(&sql_error("starting a savepoint", e)),
            };
            let ran = job.run(&mut savepoint, sql).await;
            let closed = match ran {
                Ran::Applied => savepoint.commit().await,
                Ran::RolledBack | Ran::Again => savepoint.rollback().await,
                Ran::Broken => return broken_by(job.as_ref()),
            };
            if let Err(e) = closed {
                return Ended::failed(&sql_error("ending a savepoint", e));
            }
            if ran != Ran::Again {
                break;
            }
        }
    }
    commit(tx).await
}

async fn commit(tx: sqlx::Transaction<'_, Postgres>) -> Ended {
    match tx.commit().await {
        Ok(()) => Ended::Committed,
        Err(e) => Ended::failed(&sql_error("committing a group of writes", e)),
    }
}

/// `job` found the connection failed under it.
fn broken_by(job: &dyn Job) -> Ended {
    Ended::Failed {
        failure: job.failure(),
        broken: true,
    }
}

fn answer_all(group: Vec<Box<dyn Job>>, failure: Option<&Failure>) {
    for job in group {
        job.answer(failure);
    }
}
