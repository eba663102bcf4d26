//! Actions inside the application's own PostgreSQL transaction (feature `postgres`): a run, a
//! start, an add or an event that exists if and only if the caller's transaction commits. See
//! "Inside your transaction" in the [`postgres`](crate::postgres) module's guide.
//!
//! Each method takes the caller's transaction (`&mut tx`, an `sqlx::Transaction<'_, Postgres>`
//! from `pool.begin()`, or a savepoint of one), validates what it is given before any SQL, and
//! writes under a savepoint: a conflict comes back as an outcome ([`TriggerOutcome`],
//! [`EventOutcome`]), and neither a conflict nor an error leaves the caller's transaction
//! aborted. What would run the job's code inside the call runs after the commit instead, on
//! whichever engine gets to it first: a `start_immediately` first run, a `max_events` flush, a
//! task's `on_event`.

use serde::de::DeserializeOwned;
use sqlx::{Postgres, Transaction};

use super::step::StepJobClient;
use super::{typed, ContinuousClient, DebounceClient, TaskClient};
use crate::engine::erased::Input;
use crate::engine::{AddResult, Registry, Retained, StartResult};
use crate::error::{Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::job::continuous::ContinuousJob;
use crate::job::debounce::DebounceJob;
use crate::job::step::StepJob;
use crate::job::task::TaskJob;
use crate::postgres::tx as pg;
use crate::steps::{BatchItem, Disposition, Run, TriggerOptions, Triggered};
use crate::store::runs::{EnqueueOutcome, Enqueued, NewRun, RunRecord};

/// What [`trigger_in`](StepJobClient::trigger_in) and
/// [`batch_trigger_in`](StepJobClient::batch_trigger_in) did in the caller's transaction.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TriggerOutcome<T, I = serde_json::Value, O = serde_json::Value> {
    /// The runs, as `trigger` (a [`Triggered`]) or `batch_trigger` (a `Vec` of them) returns
    /// them: created, which takes effect when the transaction commits, or found for an
    /// idempotency key or `coalesce`.
    Triggered(T),
    /// Item `index` (0 for `trigger_in`) has the concurrency key of a pending run of the job
    /// and does not coalesce, where `trigger` answers `InvalidState`: nothing was written, and
    /// the transaction goes on as it was.
    Conflict {
        /// The item that conflicted.
        index: usize,
        /// The pending run it conflicted with.
        pending: Box<Run<I, O>>,
    },
}

impl<T, I, O> TriggerOutcome<T, I, O> {
    /// The runs, or `None` after a conflict.
    pub fn triggered(self) -> Option<T> {
        match self {
            TriggerOutcome::Triggered(t) => Some(t),
            TriggerOutcome::Conflict { .. } => None,
        }
    }
}

/// What an event given an id did in the caller's transaction
/// ([`add_in_with_id`](DebounceClient::add_in_with_id),
/// [`send_in_with_id`](TaskClient::send_in_with_id)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventOutcome<T> {
    /// Written; it takes effect when the transaction commits.
    Accepted(T),
    /// The event id was seen for this instance (where the call without a transaction answers
    /// `DuplicateEvent`): nothing was written, and the transaction goes on as it was.
    Duplicate {
        /// The instance.
        instance: InstanceKey,
        /// The repeated event id.
        event_id: String,
    },
}

impl<T> EventOutcome<T> {
    /// What was accepted, or `None` for a duplicate.
    pub fn accepted(self) -> Option<T> {
        match self {
            EventOutcome::Accepted(t) => Some(t),
            EventOutcome::Duplicate { .. } => None,
        }
    }
}

/// A task event queued in the caller's transaction ([`send_in`](TaskClient::send_in)): once the
/// transaction commits, an engine delivers it to `on_event` under `event_id`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Queued {
    /// The instance.
    pub instance: InstanceKey,
    /// The id the event is delivered under: the caller's, or one made for it (`tx-` and a
    /// ULID). `status` and events name the instance; a repeated send under this id is a
    /// duplicate.
    pub event_id: String,
}

/// The runs of an enqueue, typed, with how each was obtained.
fn dispositions(done: Vec<Enqueued>) -> Vec<(RunRecord, Disposition)> {
    done.into_iter()
        .map(|e| match e {
            Enqueued::Created(run) => (run, Disposition::Created),
            Enqueued::Idempotent(run) => (run, Disposition::Idempotent),
            Enqueued::Coalesced(run) => (run, Disposition::Coalesced),
        })
        .collect()
}

impl<A: Send + Sync + 'static, J: StepJob<A>> StepJobClient<A, J> {
    /// As [`trigger`](Self::trigger), inside the caller's transaction: the run exists if and
    /// only if the transaction commits, and a worker of any engine on the database claims it
    /// after the commit. An idempotency key or `coalesce` finds runs committed by others and
    /// those of this transaction; a concurrency-key conflict is an outcome. Run events are not
    /// published for it (no `run:trigger`): the worker's are, once it runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use durable_jobs::postgres::TriggerOutcome;
    /// use durable_jobs::prelude::*;
    /// use durable_jobs::steps::{StepError, TriggerOptions};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ship {
    ///     order: i64,
    /// }
    ///
    /// #[durable_jobs::step_job]
    /// async fn ship_order(_step: &mut StepContext, input: Ship, _app: &()) -> Result<i64, StepError> {
    ///     Ok(input.order)
    /// }
    ///
    /// durable_jobs::registry! { pub Jobs<()> { ShipOrder } }
    ///
    /// # async fn run(pool: sqlx::PgPool, engine: durable_jobs::Engine<Jobs>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE orders SET paid = true WHERE id = $1")
    ///     .bind(42_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let ship = engine.client().step_job::<ShipOrder>();
    /// let options = TriggerOptions::new().idempotency_key("ship-42");
    /// match ship.trigger_in(&mut tx, Ship { order: 42 }, options).await? {
    ///     TriggerOutcome::Triggered(run) => println!("run {} ({:?})", run.id, run.disposition),
    ///     TriggerOutcome::Conflict { pending, .. } => println!("{} is pending", pending.id),
    ///     _ => {}
    /// }
    /// tx.commit().await?; // the order is paid and its shipping run exists, or neither
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As `trigger`'s, before any SQL: `Validation` for an input or options it refuses, and
    /// when the engine is not on PostgreSQL. `Storage` when a
    /// statement fails (the transaction is left as it was before the call, unless the
    /// connection itself failed), and under `REPEATABLE READ` or `SERIALIZABLE` when another
    /// transaction committed a run with the same key meanwhile: the caller's transaction has
    /// to run again.
    pub async fn trigger_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        input: J::Input,
        options: TriggerOptions,
    ) -> Result<TriggerOutcome<Triggered<J::Input, J::Output>, J::Input, J::Output>> {
        let input = Self::encode(&input)
            .map_err(|m| Error::validation(ValidationTarget::Input, Some(J::NAME), m))?;
        let outcome = self.enqueue_in(tx, vec![(input, options)]).await?;
        Ok(match outcome {
            TriggerOutcome::Triggered(mut runs) => match runs.pop() {
                Some(run) => TriggerOutcome::Triggered(run),
                None => return Err(Error::storage("trigger", "no run returned")),
            },
            TriggerOutcome::Conflict { index, pending } => {
                TriggerOutcome::Conflict { index, pending }
            }
        })
    }

    /// As [`batch_trigger`](Self::batch_trigger), inside the caller's transaction: every item
    /// is validated before any SQL, and a concurrency-key conflict on any item writes none of
    /// them (an outcome naming the item). See [`trigger_in`](Self::trigger_in).
    ///
    /// # Errors
    ///
    /// As [`trigger_in`](Self::trigger_in); validation messages name the item.
    pub async fn batch_trigger_in<T: Into<BatchItem<J::Input>>>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        items: impl IntoIterator<Item = T>,
    ) -> Result<TriggerOutcome<Vec<Triggered<J::Input, J::Output>>, J::Input, J::Output>> {
        let items: Vec<BatchItem<J::Input>> = items.into_iter().map(Into::into).collect();
        let encoded = Self::encode_items(items)?;
        self.enqueue_in(tx, encoded).await
    }

    async fn enqueue_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        items: Vec<(String, TriggerOptions)>,
    ) -> Result<TriggerOutcome<Vec<Triggered<J::Input, J::Output>>, J::Input, J::Output>> {
        let store = self
            .store
            .as_deref()
            .ok_or_else(|| pg::not_on_postgres(J::NAME))?;
        let store = pg::postgres_store(store, J::NAME)?;
        let now = self.rt.shared.clock.now();
        let runs: Vec<NewRun> = self.rt.new_runs(J::NAME, items, now)?;
        if runs.is_empty() {
            return Ok(TriggerOutcome::Triggered(Vec::new()));
        }
        let outcome = pg::enqueue_runs(tx, store, &runs, now)
            .await
            .map_err(|e| Error::from_store("trigger", e))?;
        Ok(match outcome {
            EnqueueOutcome::Done(done) => {
                TriggerOutcome::Triggered(Self::triggered(dispositions(done))?)
            }
            EnqueueOutcome::Conflict { index, existing } => TriggerOutcome::Conflict {
                index,
                pending: Box::new(typed(*existing)?),
            },
        })
    }
}

impl<R: Registry, J: ContinuousJob<R::App>> ContinuousClient<R, J> {
    /// As [`start`](Self::start), inside the caller's transaction: the instance exists if and
    /// only if the transaction commits, and an existing one is left unchanged (`created:
    /// false`). The first run is not made inside the call: with `start_immediately` it is due
    /// now, and an engine makes it once the transaction commits (the result says `Running`,
    /// next run now). No `job.started` event is published.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or an input over the size limit, when the engine is not on
    /// PostgreSQL (all before any SQL); `Scheduler`
    /// when the schedule has no next run; `Storage` when a statement fails (the transaction is
    /// left as it was before the call, unless the connection itself failed).
    pub async fn start_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        input: J::State,
    ) -> Result<StartResult> {
        let inner = self.client.inner();
        let _active = inner.enter(Operation::Start)?;
        let key = inner.key(JobKind::Continuous, J::NAME, id)?;
        let store = pg::postgres_store(self.client.engine.handle.store.as_ref(), J::NAME)?;
        let row = inner.continuous_start_row(J::NAME, &key, Input::typed(input))?;
        let found = pg::insert_instance(tx, store, &key, &row, inner.clock.now())
            .await
            .map_err(|e| Error::from_store("start", e))?;
        Ok(match (found, row.first()) {
            (Some(existing), _) => inner.continuous_started(&existing, false),
            (None, Some(crate::store::Write::Insert(rec))) => inner.continuous_started(rec, true),
            (None, _) => return Err(Error::storage("start", "no row to insert")),
        })
    }
}

impl<R: Registry, J: DebounceJob<R::App>> DebounceClient<R, J> {
    /// As [`add`](Self::add), inside the caller's transaction: the event is folded into the
    /// batch (by `on_event`, which runs here) and the batch written, taking effect if and only
    /// if the transaction commits. The batch's row stays locked until then: other adds to it,
    /// and its flush, wait for the commit, so keep the transaction short. An add that brings
    /// the batch to `max_events` does not flush it inside the call: the batch is written due
    /// now, and an engine flushes it once the transaction commits (`flush` is `None`, and
    /// `will_flush_at` is now). While a flush of the batch is running, the call waits for it,
    /// as `add` does. No `debounce.started` event is published.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a state over the size limit, when the engine is not on
    /// PostgreSQL; `InvalidState` when the batch is
    /// broken, or when called from its own `execute`; `Execution` when `on_event` panics;
    /// `Storage` when a statement fails. Whatever the error, the transaction is left as it was
    /// before the call, unless the connection itself failed.
    pub async fn add_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
    ) -> Result<AddResult> {
        match self.add_in_with(tx, id, event, None).await? {
            EventOutcome::Accepted(added) => Ok(added),
            EventOutcome::Duplicate { .. } => Err(Error::storage(
                "add",
                "an add without an event id found a duplicate",
            )),
        }
    }

    /// As [`add_in`](Self::add_in), de-duplicated by `event_id`: an id seen for this instance
    /// (by any add, committed, or in a transaction still open, which this call then waits
    /// for) is an outcome, and nothing is written.
    ///
    /// # Errors
    ///
    /// As [`add_in`](Self::add_in), and `Validation` for a bad event id.
    pub async fn add_in_with_id(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
        event_id: &str,
    ) -> Result<EventOutcome<AddResult>> {
        self.add_in_with(tx, id, event, Some(event_id)).await
    }

    async fn add_in_with(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
        event_id: Option<&str>,
    ) -> Result<EventOutcome<AddResult>> {
        let op = Operation::Add;
        let inner = self.client.inner();
        let _active = inner.enter(op)?;
        let key = inner.key(JobKind::Debounce, J::NAME, id)?;
        inner.check_event_id(J::NAME, event_id)?;
        inner.refuse_reentry(&key, op)?;
        let store = pg::postgres_store(self.client.engine.handle.store.as_ref(), J::NAME)?;
        // Kept to fold again if the row has to be read again (a flush ended, a race lost).
        let mut event = retained(event);
        let added = pg::update_instance(
            tx,
            store,
            &key,
            event_id,
            &inner.clock,
            inner.others.pace(),
            op,
            |existing| inner.debounce_add_write(J::NAME, &key, existing, event.next(J::NAME)?),
        )
        .await?;
        Ok(match (added, event_id) {
            (Some(added), _) => EventOutcome::Accepted(added),
            (None, Some(event_id)) => EventOutcome::Duplicate {
                instance: key,
                event_id: event_id.to_owned(),
            },
            (None, None) => {
                return Err(Error::storage(
                    "add",
                    "an add without an event id found a duplicate",
                ))
            }
        })
    }
}

/// An event kept as JSON, to decode for each attempt; one whose JSON does not read back as
/// itself is kept as it is, for one attempt.
fn retained<E: serde::Serialize + DeserializeOwned + Send + 'static>(event: E) -> Retained {
    match crate::json::encode(&event)
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
    {
        Some(json) => Retained::Json(json),
        None => Retained::Once(Some(Input::typed(event))),
    }
}

impl<R: Registry, J: TaskJob<R::App>> TaskClient<R, J> {
    /// As [`send`](Self::send), inside the caller's transaction, but delivered after it: the
    /// event is queued, and only if the transaction commits does an engine deliver it to
    /// `on_event` (the handlers are the job's code and do not run inside the caller's
    /// transaction). The answer says the event was accepted, not what the handlers did:
    /// [`status`](Self::status) and `job.*` events tell that later. Events queued for one
    /// instance are delivered one at a time, in the order they were queued among those
    /// committed when an engine looks; each exactly once, under its event id. An event that
    /// `send` would refuse after the commit (the handlers fail and `on_error` does not rescue
    /// them, published as `job.failed`; or it no longer decodes) is dropped with a warning in
    /// the log, since no caller is left to tell.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id, an event that does not encode to JSON that reads back or is
    /// over the size limit, or when the engine is not on PostgreSQL (all before any SQL);
    /// `Storage` when a statement fails (the transaction is
    /// left as it was before the call, unless the connection itself failed).
    pub async fn send_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
    ) -> Result<Queued> {
        match self.send_in_with(tx, id, event, None).await? {
            EventOutcome::Accepted(queued) => Ok(queued),
            EventOutcome::Duplicate { instance, .. } => Err(Error::storage(
                "send",
                format!("a fresh event id was taken for {instance}"),
            )),
        }
    }

    /// As [`send_in`](Self::send_in), de-duplicated by `event_id`: an id delivered to this
    /// instance, or queued for it by a transaction that committed (or is still open, which
    /// this call then waits for), is an outcome, and nothing is written.
    ///
    /// # Errors
    ///
    /// As [`send_in`](Self::send_in), and `Validation` for a bad event id.
    pub async fn send_in_with_id(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
        event_id: &str,
    ) -> Result<EventOutcome<Queued>> {
        self.send_in_with(tx, id, event, Some(event_id)).await
    }

    async fn send_in_with(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        event: J::Event,
        event_id: Option<&str>,
    ) -> Result<EventOutcome<Queued>> {
        let inner = self.client.inner();
        let _active = inner.enter(Operation::Send)?;
        let key = inner.key(JobKind::Task, J::NAME, id)?;
        inner.check_event_id(J::NAME, event_id)?;
        let event = crate::json::encode(&event)
            .map_err(|m| Error::validation(ValidationTarget::Event, Some(J::NAME), m))?;
        inner.check_size(&event, ValidationTarget::Event, J::NAME)?;
        let store = pg::postgres_store(self.client.engine.handle.store.as_ref(), J::NAME)?;
        let (event_id, given) = match event_id {
            Some(event_id) => (event_id.to_owned(), true),
            None => (format!("tx-{}", ulid::Ulid::new()), false),
        };
        let now = inner.clock.now();
        let queued = pg::queue_event(tx, store, &key, &event, &event_id, given, now)
            .await
            .map_err(|e| Error::from_store("send", e))?;
        Ok(if queued {
            EventOutcome::Accepted(Queued {
                instance: key,
                event_id,
            })
        } else {
            EventOutcome::Duplicate {
                instance: key,
                event_id,
            }
        })
    }
}
