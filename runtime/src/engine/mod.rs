//! The engine: job table, per-instance serialisation, the alarm scheduler and the actions of
//! each job kind.

mod builder;
mod cache;
mod claims;
mod continuous;
mod debounce;
mod deploy;
pub(crate) mod erased;
mod lifecycle;
mod locks;
mod registry;
mod scheduler;
mod task;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

#[cfg(feature = "postgres")]
pub(crate) use builder::ConnectStore;
pub(crate) use builder::OpenStore;
pub use builder::{EngineBuilder, Limits, NoApp, WithApp};
pub(crate) use registry::Handler;
pub use registry::{JobSet, RegisterJob, Registry};

pub use continuous::{
    ContinuousState, ContinuousStatus, StartResult, TerminateResult, TriggerResult,
};
pub use debounce::{
    AddResult, ClearResult, DebounceState, DebounceStatus, FlushOutcome, FlushResult,
};
pub use task::{SendResult, TaskState, TaskStatus, TaskTriggerResult};

use self::claims::{ClaimRows, Claims};
use self::lifecycle::{Activity, ActivityGuard};
use self::locks::{KeyGuard, KeyedLocks};
use self::scheduler::Scheduler;
use crate::clock::Clock;
use crate::error::{catch_panic, BoxError, Error, Operation, Panicked, Result, ValidationTarget};
use crate::id::{check_identifier, InstanceKey, JobKind};
use crate::retry::{ExhaustionReason, RetryDecision, RetryPolicy};
use crate::steps::StepRuntime;
use crate::store::changes::OtherWriters;
use crate::store::{
    Backend, BoxFuture, Columns, InstanceRecord, Lease, StoreError, UnregisteredJob, Write,
    WriteBatch,
};
use crate::telemetry::{EventKind, EventStream, JobEvent, Telemetry};
use crate::time::Timestamp;

tokio::task_local! {
    /// The instance whose user code is running on this task, to refuse re-entrant actions.
    static EXECUTING: InstanceKey;
    /// Set once an attempt of a client action is not to be made again, whatever conflict it
    /// meets: it claimed its instance for an execution (its user code may have run), or its
    /// payload can be given only once.
    static CLAIMED: std::cell::Cell<bool>;
}

/// A running engine for the jobs of registry `R`.
///
/// Cheap to clone; every clone and every [`Client`](crate::Client) shares the engine. Call
/// [`shutdown`](Self::shutdown) to stop it gracefully. When the last handle is dropped without
/// a shutdown, the engine stops at once, as after a crash: running executions are abandoned and
/// their alarms fire again after a restart.
pub struct Engine<R: Registry> {
    pub(crate) handle: Arc<lifecycle::EngineHandle<R::App>>,
}

impl<R: Registry> Clone for Engine<R> {
    fn clone(&self) -> Self {
        Engine {
            handle: self.handle.clone(),
        }
    }
}

impl<R: Registry> Engine<R> {
    /// A builder for an engine running the jobs of `R`.
    pub fn builder() -> EngineBuilder<R> {
        EngineBuilder::new()
    }

    /// A typed client.
    pub fn client(&self) -> crate::Client<R> {
        crate::Client::new(self.clone())
    }

    /// The jobs that have instances in the store but are not registered in this engine (removed,
    /// renamed, or not deployed here yet), found at start. Their instances are left as they are:
    /// their alarms do not fire, and they run again once a deploy registers the job. A warning
    /// names each at start too.
    pub fn unregistered_jobs(&self) -> &[UnregisteredJob] {
        &self.handle.inner.unregistered
    }

    /// Every committed event from now on, as it happens: the job events of continuous,
    /// debounce and task jobs ([`Event::Job`](crate::Event::Job)) and the run events of step
    /// jobs ([`Event::Run`](crate::Event::Run)), each instance's and each run's in the order
    /// their changes committed. The step clients'
    /// [`subscribe`](crate::steps::StepJobClient::subscribe) and
    /// [`events`](crate::steps::StepJobClient::events) read the same events, filtered to a run
    /// or a job.
    pub fn events(&self) -> EventStream {
        self.handle.inner.telemetry.subscribe()
    }

    /// The name this engine's leases carry: the `lease_owner` of the step runs it executes and
    /// of the instances it holds while it runs them, and the `leaseOwner` of its `run:leased`
    /// events. Unique per engine start; on a shared store it tells which process holds what.
    pub fn lease_owner(&self) -> &str {
        &self.handle.inner.owner
    }

    /// Stops gracefully: no new actions or claims, running executions finish (up to the
    /// configured shutdown timeout), the store is closed. Telemetry delivery is not waited for:
    /// a request in flight may finish, and undelivered events stay in the outbox for the next
    /// start.
    ///
    /// # Errors
    ///
    /// `Storage` when the store fails to close cleanly.
    pub async fn shutdown(self) -> Result<()> {
        self.handle.shutdown().await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner<R::App>> {
        &self.handle.inner
    }
}

/// The state shared by the engine's tasks.
pub(crate) struct Inner<A> {
    pub(crate) app: Arc<A>,
    pub(crate) jobs: JobSet<A>,
    /// The jobs whose alarms the scheduler scans: the registered continuous, debounce and task
    /// jobs, by kind and persisted name.
    pub(crate) alarm_jobs: Vec<(JobKind, &'static str)>,
    /// Jobs with instances in the store that are not registered, found at start.
    pub(crate) unregistered: Vec<UnregisteredJob>,
    pub(crate) store: Arc<dyn Backend>,
    pub(crate) clock: Clock,
    pub(crate) locks: KeyedLocks,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) telemetry: Telemetry,
    pub(crate) limits: Limits,
    pub(crate) owner: String,
    pub(crate) lease: Duration,
    /// How this engine learns of what other processes wrote (a shared store's
    /// [`poll_interval`](crate::store::Store::poll_interval) and
    /// [`changes`](crate::store::Store::changes)); nothing when only this engine writes.
    pub(crate) others: OtherWriters,
    /// How long a `DuplicateEvent` check remembers an event id.
    pub(crate) event_id_retention: Duration,
    pub(crate) activity: Activity,
    pub(crate) steps: Arc<StepRuntime<A>>,
    /// How alarms are claimed, chosen from the store's ownership.
    pub(crate) claims: Box<dyn Claims>,
    /// Committed rows, when the claim strategy allows it.
    pub(crate) cache: Option<cache::RecordCache>,
}

/// Events produced by one action, collected only when someone listens.
pub(crate) struct Events {
    enabled: bool,
    pub(crate) list: Vec<JobEvent>,
}

impl Events {
    pub(crate) fn push(
        &mut self,
        key: &InstanceKey,
        at: Timestamp,
        kind: impl FnOnce() -> EventKind,
    ) {
        if self.enabled {
            self.list.push(JobEvent::new(key, at, kind()));
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }
}

/// An instance's stored state, read for an action or an execution.
pub(crate) enum Stored<T> {
    /// Decoded.
    State(T),
    /// The instance is broken: its state does not decode. The error is for the caller.
    Broken(Error),
}

/// How a failed execution continues.
#[derive(Clone, Copy)]
pub(crate) enum Failure {
    /// A retry is scheduled at this time (the record's alarm holds it).
    Retry(Timestamp),
    /// The retry policy gave up.
    Exhausted {
        reason: ExhaustionReason,
        attempts: u32,
        total: Duration,
    },
    /// There is no retry policy.
    NoPolicy,
}

impl<A: Send + Sync + 'static> ClaimRows for Inner<A> {
    fn load_row<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, std::result::Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            if let Some(cache) = &self.cache {
                let known = cache
                    .get(key)
                    .or_else(|| cache.known_absent(key).then_some(None));
                if let Some(known) = known {
                    // What the cache holds is only true while the store is.
                    self.store.verify()?;
                    return Ok(known);
                }
            }
            let loaded = self.store.load(key).await?;
            if let Some(cache) = &self.cache {
                cache.put(key.clone(), loaded.clone());
            }
            Ok(loaded)
        })
    }

    fn store(&self) -> &dyn Backend {
        self.store.as_ref()
    }

    fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

impl<A: Send + Sync + 'static> Inner<A> {
    /// Refuses new work once shutdown has begun; the guard keeps shutdown waiting.
    pub(crate) fn enter(&self, operation: Operation) -> Result<ActivityGuard<'_>> {
        self.activity.enter().ok_or(Error::ShutDown {
            operation: operation.as_str(),
        })
    }

    pub(crate) fn key(&self, kind: JobKind, job: &str, id: &str) -> Result<InstanceKey> {
        check_identifier(id).map_err(|why| {
            Error::validation(
                ValidationTarget::Id,
                Some(job),
                format!("instance id {why}"),
            )
        })?;
        Ok(InstanceKey::new(kind, job, id))
    }

    pub(crate) fn check_event_id(&self, job: &str, event_id: Option<&str>) -> Result<()> {
        match event_id {
            Some(e) => check_identifier(e).map_err(|why| {
                Error::validation(
                    ValidationTarget::EventId,
                    Some(job),
                    format!("event id {why}"),
                )
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn check_size(&self, json: &str, target: ValidationTarget, job: &str) -> Result<()> {
        if json.len() > self.limits.max_payload_bytes {
            return Err(Error::validation(
                target,
                Some(job),
                format!(
                    "is {} bytes as JSON, the limit is {}",
                    json.len(),
                    self.limits.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn handler(&self, name: &str) -> Result<&Handler<A>> {
        self.jobs.get(name).ok_or_else(|| Error::JobNotFound {
            name: name.to_owned(),
        })
    }

    /// The state codec of a job with state (continuous, debounce, task).
    pub(crate) fn state_codec(&self, name: &str) -> Result<&dyn erased::StateCodec<A>> {
        match self.handler(name)? {
            Handler::Continuous(h) => Ok(h.as_ref()),
            Handler::Debounce(h) => Ok(h.as_ref()),
            Handler::Task(h) => Ok(h.as_ref()),
            Handler::Step(_) => Err(Error::JobNotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Takes the instance's lock; refuses when called from the instance's own execution, which
    /// would wait for itself.
    pub(crate) async fn lock(
        &self,
        key: &InstanceKey,
        operation: Operation,
    ) -> Result<KeyGuard<'_>> {
        self.refuse_reentry(key, operation)?;
        Ok(self.locks.lock(key).await)
    }

    /// Refuses an action on `key` made from the user code of one of `key`'s own executions,
    /// which would wait for that execution to end.
    pub(crate) fn refuse_reentry(&self, key: &InstanceKey, operation: Operation) -> Result<()> {
        if EXECUTING
            .try_with(|running| running == key)
            .unwrap_or(false)
        {
            return Err(Error::InvalidState {
                instance: key.clone(),
                operation,
                state: "executing (the call comes from its own handler)".into(),
            });
        }
        Ok(())
    }

    pub(crate) async fn load(
        &self,
        key: &InstanceKey,
        operation: Operation,
    ) -> Result<Option<InstanceRecord>> {
        self.load_row(key)
            .await
            .map_err(|e| store_error(e, operation))
    }

    /// The alarm `rec` is waiting for, as a status reports it (see [`Claims::pending_alarm`]).
    pub(crate) fn pending_alarm(&self, rec: &InstanceRecord) -> Option<Timestamp> {
        self.claims
            .pending_alarm(rec, self.scheduler.running(&rec.key))
    }

    /// Claims a due alarm, under the instance's lock: the row to run it on, with this engine's
    /// lease, or `None` when it is not due (or held). How depends on the store's ownership
    /// ([`Claims::claim`]).
    pub(crate) async fn claim(
        &self,
        key: &InstanceKey,
        now: Timestamp,
    ) -> Result<Option<InstanceRecord>> {
        let lease = Lease {
            owner: self.owner.clone(),
            until: now + self.lease,
        };
        self.claims
            .claim(self, key, now, lease)
            .await
            .map_err(|e| store_error(e, Operation::Alarm))
    }

    /// The instance as a client action starts from: as [`load`](Self::load), once no execution
    /// of another process holds it (on a store shared with other processes; see
    /// [`Claims::held_elsewhere`]). The instance lock keeps this process's own executions out.
    pub(crate) async fn load_for_action(
        &self,
        key: &InstanceKey,
        operation: Operation,
    ) -> Result<Option<InstanceRecord>> {
        loop {
            let rec = self.load(key, operation).await?;
            match self.held_elsewhere(rec.as_ref()) {
                None => return Ok(rec),
                Some(pause) => {
                    tracing::trace!(instance = %key, %operation, "held by another process; waiting");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// How long to wait before looking again, when `rec` is held by another engine (see
    /// [`Claims::held_elsewhere`]); `None` when the action may go on.
    fn held_elsewhere(&self, rec: Option<&InstanceRecord>) -> Option<Duration> {
        self.claims
            .held_elsewhere(rec, &self.owner, self.clock.now(), self.others.pace())
    }

    /// Before a client action runs user code on `rec` (read at `expected`, `None` for a row not
    /// stored yet): on a store shared with other processes, claims the instance durably, as an
    /// alarm execution does, so that no other process runs it meanwhile, and makes `rec` and
    /// `expected` those of the claimed row; the action's own commit then releases the claim.
    /// The guard keeps the lease renewed until dropped. A row not stored yet is inserted
    /// claimed, with an alarm at the lease's expiry if it has none, so that an execution
    /// interrupted with its process runs again there. Otherwise nothing to do.
    ///
    /// # Errors
    ///
    /// `Storage` with a conflict when another process wrote the instance since it was read:
    /// the action is made again ([`retrying`](Self::retrying)).
    pub(crate) async fn claim_for_execution(
        &self,
        rec: &mut InstanceRecord,
        expected: &mut Option<u64>,
        operation: Operation,
    ) -> Result<Option<scheduler::InlineClaim>> {
        let now = self.clock.now();
        let claim = self
            .claims
            .claim_for_action(self, rec, expected, &self.owner, now, now + self.lease)
            .await
            .map_err(|e| store_error(e, operation))?;
        if claim.is_some() {
            let _ = CLAIMED.try_with(|claimed| claimed.set(true));
        }
        Ok(claim)
    }

    /// The write that gives back a claim taken by
    /// [`claim_for_execution`](Self::claim_for_execution) when the action ends without writing
    /// what its execution did: `claimed` as it was claimed (its lease cleared), or its deletion
    /// when the claim inserted it. Nothing without a claim.
    pub(crate) fn release_write(
        &self,
        claim: &Option<scheduler::InlineClaim>,
        claimed: &InstanceRecord,
        inserted: bool,
    ) -> Option<Write> {
        claim.as_ref()?;
        let kept = (!inserted).then(|| claimed.clone());
        Self::persist(Some(claimed.version), &claimed.key, kept, self.clock.now())
    }

    /// Makes a client action, and makes it again, with a growing pause, when it lost a race
    /// for its instance to another process (its commit found the instance written since it
    /// was read) before it ran any user code under a claim, up to
    /// [`Claims::action_attempts`] times in all.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        operation: Operation,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let attempts = self.claims.action_attempts();
        if attempts <= 1 {
            return attempt().await;
        }
        let mut pause = Duration::from_millis(1);
        let most = self.others.pace();
        let mut made = 1;
        loop {
            let (result, claimed) = CLAIMED
                .scope(std::cell::Cell::new(false), async {
                    let result = attempt().await;
                    (result, CLAIMED.with(std::cell::Cell::get))
                })
                .await;
            match result {
                Err(e) if is_conflict(&e) && !claimed && made < attempts => {
                    tracing::debug!(%operation, attempt = made, error = %e, "another process wrote the instance first; making the action again");
                    // Spread, so that processes that collided do not collide again in step.
                    let spread = 1.0 + 0.5 * crate::retry::jitter_unit();
                    tokio::time::sleep(pause.mul_f64(spread)).await;
                    pause = (pause * 2).min(most);
                    made += 1;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn load_existing(
        &self,
        key: &InstanceKey,
        operation: Operation,
    ) -> Result<InstanceRecord> {
        self.load_for_action(key, operation)
            .await?
            .ok_or_else(|| Error::InstanceNotFound {
                instance: key.clone(),
                operation,
            })
    }

    pub(crate) async fn ensure_new_event(
        &self,
        key: &InstanceKey,
        event_id: Option<&str>,
        operation: Operation,
    ) -> Result<()> {
        if let Some(event_id) = event_id {
            if self
                .store
                .has_event_id(key, event_id)
                .await
                .map_err(|e| store_error(e, operation))?
            {
                return Err(Error::DuplicateEvent {
                    instance: key.clone(),
                    event_id: event_id.to_owned(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn events(&self) -> Events {
        Events {
            enabled: self.telemetry.enabled(),
            list: Vec::new(),
        }
    }

    /// Commits a batch with its telemetry, then publishes the events and wakes the scheduler
    /// when an alarm was written.
    pub(crate) async fn commit(
        &self,
        mut batch: WriteBatch,
        events: Events,
        alarm: Option<Timestamp>,
        operation: Operation,
    ) -> Result<()> {
        if let Some(rows) = self.telemetry.outbox_rows(&events.list) {
            batch.push(Write::Outbox(rows));
        }
        self.claims.version_inserts(&mut batch, self.clock.now());
        if !batch.is_empty() {
            if let Some(cache) = &self.cache {
                cache.narrow_updates(&mut batch);
                cache.will_write(&batch);
            }
            let effects = self
                .cache
                .as_ref()
                .map(|_| cache::RecordCache::effects(&batch));
            let committed = self.store.commit(batch).await;
            if let (Some(cache), Some(effects)) = (&self.cache, effects) {
                for (key, record) in effects {
                    match &committed {
                        Ok(()) => cache.put(key, record),
                        Err(_) => cache.forget(&key),
                    }
                }
            }
            committed.map_err(|e| store_error(e, operation))?;
        }
        self.telemetry.committed(events.list);
        if let Some(at) = alarm {
            self.scheduler.alarm_written(at);
        }
        Ok(())
    }

    /// Runs user code on behalf of `key`, inside a tracing span, marked so that re-entrant
    /// actions on the same instance are refused instead of deadlocking. A panic is caught and
    /// returned, for the caller to handle as the code's failure.
    pub(crate) async fn user_code<F: std::future::Future + Unpin>(
        &self,
        key: &InstanceKey,
        operation: Operation,
        fut: F,
    ) -> Result<F::Output, Panicked> {
        let span = tracing::info_span!(
            "durable_jobs.execute",
            kind = key.kind().as_str(),
            job = key.job(),
            instance = key.id(),
            operation = operation.as_str(),
        );
        let result = EXECUTING
            .scope(key.clone(), catch_panic(fut))
            .instrument(span)
            .await;
        if let Err(panicked) = &result {
            tracing::error!(instance = %key, %operation, error = %panicked, "user code panicked");
        }
        result
    }

    /// Decides what follows a failed attempt and records it in `rec` (retry bookkeeping and
    /// the retry alarm).
    pub(crate) fn after_failure(
        &self,
        policy: Option<&RetryPolicy>,
        rec: &mut InstanceRecord,
        attempt: u32,
        message: &str,
        now: Timestamp,
    ) -> Failure {
        let Some(policy) = policy else {
            clear_retry(rec);
            return Failure::NoPolicy;
        };
        let first = rec.retry_started_at.unwrap_or(now);
        match policy.after_failure(attempt, first, now, crate::retry::jitter_unit()) {
            RetryDecision::Retry { attempt: next, at } => {
                rec.retry_attempt = next;
                rec.retry_started_at = Some(first);
                rec.retry_last_error = Some(message.to_owned());
                rec.alarm_at = Some(at);
                Failure::Retry(at)
            }
            RetryDecision::Exhausted(reason) => {
                clear_retry(rec);
                Failure::Exhausted {
                    reason,
                    attempts: attempt,
                    total: now.saturating_duration_since(first),
                }
            }
        }
    }

    /// Records a failed attempt of a job with an optional retry policy: decides what follows
    /// (in `rec`), emits `job.failed` with the real message and, when the policy gives up,
    /// `job.retryExhausted` followed by the job's `on_retry_exhausted` hook.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fail_attempt(
        &self,
        job: &dyn erased::Exhaustible<A>,
        rec: &mut InstanceRecord,
        attempt: u32,
        run_count: u64,
        error: &BoxError,
        pre_execution_state: Option<serde_json::Value>,
        events: &mut Events,
        operation: Operation,
    ) -> Failure {
        let key = rec.key.clone();
        let now = self.clock.now();
        let message = error.to_string();
        let failure = self.after_failure(job.retry_policy(), rec, attempt, &message, now);
        let will_retry = matches!(failure, Failure::Retry(_));
        crate::metrics::failure_handled(&key, &failure);
        events.push(&key, now, || EventKind::Failed {
            message: message.clone(),
            run_count,
            attempt,
            will_retry,
            pre_execution_state,
        });
        if let Failure::Exhausted {
            reason,
            attempts,
            total,
        } = failure
        {
            events.push(&key, now, || EventKind::RetryExhausted { attempts, reason });
            let info = erased::ExhaustedInfo {
                instance: key.clone(),
                attempts,
                reason,
                last_error: message,
                total_duration: total,
            };
            // The hook cannot fail; a panic in it is logged by `user_code` and the instance is
            // purged all the same.
            let stored = rec.state.as_deref().map(|json| (json, rec.state_version));
            let _ = self
                .user_code(&key, operation, job.exhausted(stored, info, &self.app))
                .await;
        }
        failure
    }

    /// Reads `rec`'s stored state for `codec`'s job (`None` while there is none: a task has no
    /// state until a handler sets one). A state that does not decode, even after migration,
    /// makes the instance broken: that is committed (with a `job.broken` event) and the caller
    /// gets the error to return. `Err` only if that commit fails.
    pub(crate) async fn stored_state(
        &self,
        codec: &dyn erased::StateCodec<A>,
        rec: &InstanceRecord,
        operation: Operation,
    ) -> Result<Stored<Option<erased::Decoded>>> {
        if rec.state.is_none() && rec.broken.is_none() {
            return Ok(Stored::State(None));
        }
        Ok(
            match self.stored_state_or(codec, rec, "null", operation).await? {
                Stored::State(state) => Stored::State(Some(state)),
                Stored::Broken(e) => Stored::Broken(e),
            },
        )
    }

    /// As [`stored_state`](Self::stored_state), decoding `absent` when there is no state (the
    /// kinds whose instances always have one).
    pub(crate) async fn stored_state_or(
        &self,
        codec: &dyn erased::StateCodec<A>,
        rec: &InstanceRecord,
        absent: &str,
        operation: Operation,
    ) -> Result<Stored<erased::Decoded>> {
        if let Some(why) = &rec.broken {
            return Ok(Stored::Broken(broken_error(&rec.key, operation, why)));
        }
        let json = rec.state.as_deref().unwrap_or(absent);
        match codec.decode_state(json, rec.state_version) {
            Ok(decoded) => Ok(Stored::State(decoded)),
            // Rare: boxed, so that every execution's future does not carry this one.
            Err(why) => Box::pin(self.break_instance(rec.clone(), why, operation)).await,
        }
    }

    /// Marks `rec` broken with `why` and commits it, alarm and counters unchanged: the alarm
    /// does not fire while the instance is broken (the scan leaves broken rows out) and fires at
    /// once when a deploy that can decode the state repairs it at start-up.
    async fn break_instance<T>(
        &self,
        mut rec: InstanceRecord,
        why: String,
        operation: Operation,
    ) -> Result<Stored<T>> {
        let key = rec.key.clone();
        tracing::error!(
            instance = %key,
            error = %why,
            "stored state does not decode: the instance is broken until a migration is deployed or it is deleted"
        );
        let now = self.clock.now();
        let mut events = self.events();
        events.push(&key, now, || EventKind::Broken {
            message: why.clone(),
        });
        let expected = rec.version;
        rec.broken = Some(why.clone());
        let write = Self::persist(Some(expected), &key, Some(rec), now);
        self.commit(write.into_iter().collect(), events, None, operation)
            .await?;
        Ok(Stored::Broken(broken_error(&key, operation, &why)))
    }

    /// The version [`Inner::persist`] gives a row read at `expected` (`None`: a new row).
    pub(crate) fn version_after(expected: Option<u64>) -> u64 {
        expected.map_or(0, |v| v + 1)
    }

    /// The write that makes the store hold `rec` (or nothing), given the version it was read at.
    pub(crate) fn persist(
        expected: Option<u64>,
        key: &InstanceKey,
        rec: Option<InstanceRecord>,
        now: Timestamp,
    ) -> Option<Write> {
        match (expected, rec) {
            (None, Some(mut rec)) => {
                rec.updated_at = now;
                rec.lease = None;
                rec.version = Self::version_after(None);
                Some(Write::Insert(rec))
            }
            (Some(v), Some(mut rec)) => {
                rec.updated_at = now;
                rec.lease = None;
                rec.version = Self::version_after(Some(v));
                Some(Write::Update {
                    record: rec,
                    expected_version: v,
                    changed: Columns::ALL,
                })
            }
            (Some(v), None) => Some(Write::Delete {
                key: key.clone(),
                expected_version: v,
            }),
            (None, None) => None,
        }
    }
}

pub(crate) fn clear_retry(rec: &mut InstanceRecord) {
    rec.retry_attempt = 0;
    rec.retry_started_at = None;
    rec.retry_last_error = None;
}

/// The error of an action on a broken instance.
pub(crate) fn broken_error(instance: &InstanceKey, operation: Operation, why: &str) -> Error {
    Error::InvalidState {
        instance: instance.clone(),
        operation,
        state: format!("broken ({why}); terminate or clear it, or deploy a state migration"),
    }
}

pub(crate) fn execution_error(
    instance: &InstanceKey,
    operation: Operation,
    source: BoxError,
) -> Error {
    Error::Execution {
        instance: instance.clone(),
        operation,
        source,
    }
}

/// Whether `e` says that another writer changed the instance first.
fn is_conflict(e: &Error) -> bool {
    match e {
        Error::Storage { source, .. } => matches!(
            source.downcast_ref::<StoreError>(),
            Some(StoreError::Conflict(_))
        ),
        _ => false,
    }
}

/// A client action's payload, kept so that an attempt lost to another process can be made
/// again: the value itself when actions are made once, its JSON when they may be made again.
pub(crate) enum Retained {
    Once(Option<erased::Input>),
    Json(serde_json::Value),
}

impl Retained {
    /// The payload for the next attempt.
    pub(crate) fn next(&mut self, job: &str) -> Result<erased::Input> {
        match self {
            Retained::Once(input) => {
                // Given once: the attempt is not made again.
                let _ = CLAIMED.try_with(|once| once.set(true));
                input.take().ok_or_else(|| {
                    Error::validation(ValidationTarget::Input, Some(job), "the payload was used")
                })
            }
            Retained::Json(value) => Ok(erased::Input::Json(value.clone())),
        }
    }
}

impl<A: Send + Sync + 'static> Inner<A> {
    /// Keeps `input` for [`retrying`](Self::retrying): as it is when the action is made once,
    /// as JSON (through `to_json`, which validates it) when it may be made again. A payload
    /// whose JSON would not read back (`to_json` gives it back) is kept as it is: its action
    /// is made once.
    pub(crate) fn retain(
        &self,
        input: erased::Input,
        to_json: impl FnOnce(
            erased::Input,
        ) -> Result<std::result::Result<serde_json::Value, erased::Input>>,
    ) -> Result<Retained> {
        if self.claims.action_attempts() <= 1 {
            return Ok(Retained::Once(Some(input)));
        }
        Ok(match to_json(input)? {
            Ok(json) => Retained::Json(json),
            Err(input) => Retained::Once(Some(input)),
        })
    }
}

pub(crate) fn store_error(e: StoreError, operation: Operation) -> Error {
    match e {
        StoreError::DuplicateEvent { key, event_id } => Error::DuplicateEvent {
            instance: key,
            event_id,
        },
        other => Error::from_store(operation.as_str(), other),
    }
}

pub(crate) fn state_json(rec: &InstanceRecord, events: &Events) -> Option<serde_json::Value> {
    if !events.enabled() {
        return None;
    }
    rec.state
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}
