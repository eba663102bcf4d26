//! [`StepRuntime`]: the run API (untyped, JSON) and the worker's shared state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use super::cancel::{CancelReason, Cancellation};
use super::events::{
    json_value, run_snapshot_source, snapshot, EventBus, RunEventKind, RunEventStream, StreamFilter,
};
use super::run::{Disposition, LogRecord, RunFilter, RunStatus, StepRecord, TriggerOptions};
use super::{ErasedStepJob, StepOptions};
use crate::clock::{Clock, ClockDriven};
use crate::error::{BoxError, Error, Operation, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::store::changes::{Change, OtherWriters};
use crate::store::runs::{
    CancelOutcome, DeleteOutcome, EnqueueOutcome, Enqueued, NewRun, RunRecord, RunStore,
};
use crate::store::{BoxFuture, StoreError};
use crate::telemetry::Fanout;
use crate::time::Timestamp;

/// The error a failed run is awaited with, as the source of [`Error::Execution`]: the run's
/// stored error message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunFailed {
    /// The run's error message.
    pub message: String,
}

pub(crate) fn key(job: &str, run_id: &str) -> InstanceKey {
    InstanceKey::new(JobKind::Step, job, run_id)
}

pub(crate) fn storage(operation: &'static str, e: StoreError) -> Error {
    Error::from_store(operation, e)
}

/// A run this worker executes.
pub(crate) struct ActiveRun {
    pub(crate) generation: u64,
    pub(crate) cancellation: Cancellation,
    pub(crate) job_name: String,
    pub(crate) labels: Arc<super::run::Labels>,
}

/// State shared by the runtime's API, its worker and every run's context. Not generic over the
/// application type.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) clock: Clock,
    pub(crate) options: StepOptions,
    pub(crate) events: EventBus,
    /// This worker's lease owner id: the engine's.
    pub(crate) owner: String,
    /// Whether the worker expires every lease when it starts: chosen by the engine from the
    /// store's ownership (an exclusive store's leases all belong to a crashed process).
    pub(crate) recover_at_start: bool,
    /// How the worker learns of runs other processes made claimable, and waiters of ends
    /// other processes wrote: nothing on an exclusive store.
    pub(crate) others: OtherWriters,
    ids: Mutex<ulid::Generator>,
    /// Wakes the worker: a trigger, a retry scheduled, a shutdown, a settle request.
    pub(crate) wake: Notify,
    pub(crate) active: Mutex<HashMap<String, ActiveRun>>,
    /// Run bodies executing now: the slots taken of `max_concurrent_runs`.
    pub(crate) bodies: AtomicUsize,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    waiter_count: AtomicUsize,
    pub(crate) stopping: AtomicBool,
    pub(crate) running: AtomicBool,
    /// Test clock: settle requests made, and the last one the worker served.
    pub(crate) settle_requested: AtomicU64,
    pub(crate) settle_served: watch::Sender<u64>,
    /// Millisecond timestamps of the worker's next renewal and maintenance (`i64::MIN`: none).
    pub(crate) next_renew: AtomicI64,
    pub(crate) next_maintenance: AtomicI64,
    /// Set by `shutdown`: when runs still in flight are aborted.
    pub(crate) stop_deadline: Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    /// A new monotonic ULID on the engine clock.
    pub(crate) fn next_id(&self, now: Timestamp) -> String {
        let mut g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        match g.generate_from_datetime(std::time::SystemTime::from(now)) {
            Ok(id) => id.to_string(),
            Err(_) => ulid::Ulid::new().to_string(),
        }
    }

    /// Wakes everyone waiting for `run_id` to end.
    pub(crate) fn run_finished(&self, run_id: &str) {
        if self.waiter_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let senders = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
        if let Some(senders) = senders {
            self.waiter_count.fetch_sub(senders.len(), Ordering::AcqRel);
            for s in senders {
                let _ = s.send(());
            }
        }
    }

    fn register_waiter(&self, run_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let list = w.entry(run_id.to_owned()).or_default();
        let before = list.len();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        let after = list.len();
        self.waiter_count.fetch_add(after, Ordering::AcqRel);
        self.waiter_count.fetch_sub(before, Ordering::AcqRel);
        rx
    }
}

impl ClockDriven for Shared {
    fn next_alarm(&self) -> BoxFuture<'_, Option<Timestamp>> {
        Box::pin(async move {
            if !self.running.load(Ordering::Acquire) {
                return None;
            }
            let now = self.clock.now();
            let mut next = self.store.next_due(&self.owner, now).await.ok().flatten();
            for slot in [&self.next_renew, &self.next_maintenance] {
                let t = slot.load(Ordering::Acquire);
                if t != i64::MIN && t > now.as_millis() {
                    let t = Timestamp::from_millis(t);
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            next
        })
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.running.load(Ordering::Acquire) {
                return;
            }
            let target = self.settle_requested.fetch_add(1, Ordering::AcqRel) + 1;
            let mut served = self.settle_served.subscribe();
            self.wake.notify_one();
            while *served.borrow_and_update() < target {
                if !self.running.load(Ordering::Acquire) || served.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// The step-job runtime of one engine: the run API, and the worker that claims and executes
/// runs.
pub(crate) struct StepRuntime<A> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) jobs: HashMap<&'static str, Arc<dyn ErasedStepJob<A>>>,
    pub(crate) app: Arc<A>,
    pub(crate) worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<A: Send + Sync + 'static> StepRuntime<A> {
    /// A runtime over `store` for `jobs`, whose leases `owner` holds, publishing its events
    /// into `fanout`. Nothing runs until [`start`](Self::start).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn RunStore>,
        owner: String,
        recover_at_start: bool,
        others: OtherWriters,
        jobs: HashMap<&'static str, Arc<dyn ErasedStepJob<A>>>,
        app: Arc<A>,
        clock: Clock,
        options: StepOptions,
        fanout: Arc<Fanout>,
    ) -> Arc<Self> {
        let options = options.normalised();
        let (settle_served, _) = watch::channel(0);
        Arc::new(StepRuntime {
            shared: Arc::new(Shared {
                store,
                clock,
                options,
                events: EventBus::new(fanout),
                owner,
                recover_at_start,
                others,
                ids: Mutex::new(ulid::Generator::new()),
                wake: Notify::new(),
                active: Mutex::new(HashMap::new()),
                bodies: AtomicUsize::new(0),
                waiters: Mutex::new(HashMap::new()),
                waiter_count: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                running: AtomicBool::new(false),
                settle_requested: AtomicU64::new(0),
                settle_served,
                next_renew: AtomicI64::new(i64::MIN),
                next_maintenance: AtomicI64::new(i64::MIN),
                stop_deadline: Mutex::new(None),
            }),
            jobs,
            app,
            worker: Mutex::new(None),
        })
    }

    /// Spawns the worker on the current tokio runtime (no-op when it runs already).
    pub(crate) fn start(self: &Arc<Self>) {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_some() {
            return;
        }
        self.shared.stopping.store(false, Ordering::Release);
        self.shared.running.store(true, Ordering::Release);
        if let Some(tc) = self.shared.clock.as_test() {
            let shared: Arc<dyn ClockDriven> = self.shared.clone();
            tc.drive(Arc::downgrade(&shared));
        }
        *worker = Some(tokio::spawn(super::worker::dispatch(self.clone())));
    }

    /// Stops claiming; runs in flight get until `timeout` to finish, then are aborted (their
    /// leases lapse and they resume on the next start).
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(handle) = handle else { return };
        self.shared.stopping.store(true, Ordering::Release);
        *self
            .shared
            .stop_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now() + timeout);
        self.shared.wake.notify_one();
        let abort = handle.abort_handle();
        if tokio::time::timeout(timeout + Duration::from_secs(1), handle)
            .await
            .is_err()
        {
            abort.abort();
        }
        self.shared.running.store(false, Ordering::Release);
        self.shared.settle_served.send_modify(|_| {});
    }

    /// Hard stop (for `Drop`): aborts the worker and every run it executes.
    pub(crate) fn abort(&self) {
        if let Some(handle) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            handle.abort();
        }
        self.shared.running.store(false, Ordering::Release);
        self.shared.settle_served.send_modify(|_| {});
    }

    pub(crate) fn job(&self, name: &str) -> Option<&Arc<dyn ErasedStepJob<A>>> {
        self.jobs.get(name)
    }

    // -----------------------------------------------------------------------------------------
    // Triggers

    /// Creates runs of `job` from JSON inputs (already encoded), atomically: every item is
    /// validated before anything is written, and a conflict writes nothing.
    pub(crate) async fn trigger_encoded(
        &self,
        job: &str,
        items: Vec<(String, TriggerOptions)>,
    ) -> Result<Vec<(RunRecord, Disposition)>, Error> {
        let now = self.shared.clock.now();
        let runs = self.new_runs(job, items, now)?;
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<(String, super::run::Labels)> = if self.shared.events.listening() {
            runs.iter()
                .map(|r| (r.input.clone(), r.labels.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let held = self
            .shared
            .events
            .hold(runs.iter().map(|run| run.id.as_str()));
        let outcome = self
            .shared
            .store
            .enqueue(runs, now)
            .await
            .map_err(|e| storage("trigger", e))?;
        let done = match outcome {
            EnqueueOutcome::Done(done) => done,
            EnqueueOutcome::Conflict { existing, .. } => {
                return Err(Error::InvalidState {
                    instance: key(job, &existing.id),
                    operation: Operation::TriggerRun,
                    state: existing.status.as_str().to_owned(),
                });
            }
        };
        let mut created = false;
        let mut out = Vec::with_capacity(done.len());
        for (i, e) in done.into_iter().enumerate() {
            match e {
                Enqueued::Created(run) => {
                    created = true;
                    let labels = Arc::new(run.labels.clone());
                    held.release_with_trigger(now, &run.id, &run.job_name, &labels, || {
                        RunEventKind::Trigger {
                            input: json_value(Some(&run.input)),
                        }
                    });
                    out.push((run, Disposition::Created));
                }
                Enqueued::Idempotent(run) => out.push((run, Disposition::Idempotent)),
                Enqueued::Coalesced(run) => {
                    let labels = Arc::new(run.labels.clone());
                    self.shared
                        .events
                        .emit(now, &run.id, &run.job_name, &labels, || {
                            let (input, skipped_labels) =
                                inputs.get(i).cloned().unwrap_or_default();
                            RunEventKind::Coalesced {
                                skipped_input: json_value(Some(&input)),
                                skipped_labels,
                            }
                        });
                    out.push((run, Disposition::Coalesced));
                }
            }
        }
        if created {
            self.shared.wake.notify_one();
        }
        Ok(out)
    }

    /// The runs of `job` that `items` (inputs already encoded) create at `now`, with their
    /// ids, once every item's options are valid. Nothing is written.
    pub(crate) fn new_runs(
        &self,
        job: &str,
        items: Vec<(String, TriggerOptions)>,
        now: Timestamp,
    ) -> Result<Vec<NewRun>, Error> {
        if self.job(job).is_none() {
            return Err(Error::JobNotFound {
                name: job.to_owned(),
            });
        }
        let batch = items.len() > 1;
        for (i, (_, options)) in items.iter().enumerate() {
            options
                .validate(job)
                .map_err(|e| at_index(e, batch.then_some(i)))?;
        }
        Ok(items
            .into_iter()
            .map(|(input, o)| NewRun {
                id: self.shared.next_id(now),
                job_name: job.to_owned(),
                input,
                idempotency_key: o.idempotency_key,
                concurrency_key: o.concurrency_key,
                labels: o.labels,
                coalesce: o.coalesce.is_some(),
            })
            .collect())
    }

    /// Creates runs of `job` from JSON inputs, decoding each into the job's input type first
    /// (for dynamic callers that only have JSON).
    pub(crate) async fn trigger_json(
        &self,
        job: &str,
        items: Vec<(serde_json::Value, TriggerOptions)>,
    ) -> Result<Vec<(RunRecord, Disposition)>, Error> {
        let handler = self.job(job).ok_or_else(|| Error::JobNotFound {
            name: job.to_owned(),
        })?;
        let batch = items.len() > 1;
        let mut encoded = Vec::with_capacity(items.len());
        for (i, (input, options)) in items.into_iter().enumerate() {
            let input = handler.check_input(input).map_err(|m| {
                at_index(
                    Error::validation(ValidationTarget::Input, Some(job), m),
                    batch.then_some(i),
                )
            })?;
            encoded.push((input, options));
        }
        self.trigger_encoded(job, encoded).await
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// One run (of `job`, when given: a run of another job is `None`).
    pub(crate) async fn get_run(
        &self,
        job: Option<&str>,
        id: &str,
    ) -> Result<Option<RunRecord>, Error> {
        let run = self
            .shared
            .store
            .get_run(id)
            .await
            .map_err(|e| storage("get_run", e))?;
        Ok(run.filter(|r| job.is_none_or(|j| r.job_name == j)))
    }

    /// Runs matching `filter`, newest first.
    pub(crate) async fn get_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, Error> {
        super::run::validate_labels(&filter.labels, None)?;
        self.shared
            .store
            .get_runs(filter)
            .await
            .map_err(|e| storage("get_runs", e))
    }

    async fn existing(
        &self,
        job: Option<&str>,
        id: &str,
        operation: Operation,
    ) -> Result<RunRecord, Error> {
        self.get_run(job, id)
            .await
            .map_err(|e| match e {
                // The read is part of `operation`, which is what was refused.
                Error::ShutDown { .. } => Error::ShutDown {
                    operation: operation.as_str(),
                },
                other => other,
            })?
            .ok_or_else(|| Error::InstanceNotFound {
                instance: key(job.unwrap_or(""), id),
                operation,
            })
    }

    /// The step rows of a run.
    pub(crate) async fn get_steps(
        &self,
        job: Option<&str>,
        id: &str,
    ) -> Result<Vec<StepRecord>, Error> {
        self.existing(job, id, Operation::GetRun).await?;
        let rows = self
            .shared
            .store
            .get_steps(id)
            .await
            .map_err(|e| storage("get_steps", e))?;
        Ok(rows
            .into_iter()
            .map(|r| StepRecord {
                id: r.id,
                run_id: r.run_id,
                name: r.name,
                index: r.index,
                status: r.status,
                output: r.output.as_deref().map(|o| json_value(Some(o))),
                error: r.error,
                started_at: r.started_at,
                completed_at: r.completed_at,
            })
            .collect())
    }

    /// The log rows of a run.
    pub(crate) async fn get_logs(
        &self,
        job: Option<&str>,
        id: &str,
    ) -> Result<Vec<LogRecord>, Error> {
        self.existing(job, id, Operation::GetRun).await?;
        let rows = self
            .shared
            .store
            .get_logs(id)
            .await
            .map_err(|e| storage("get_logs", e))?;
        Ok(rows
            .into_iter()
            .map(|r| LogRecord {
                id: r.id,
                run_id: r.run_id,
                step_name: r.step_name,
                level: r.level,
                message: r.message,
                data: r.data.as_deref().map(|d| json_value(Some(d))),
                created_at: r.created_at,
            })
            .collect())
    }

    // -----------------------------------------------------------------------------------------
    // Management

    /// Creates a new run with the input, labels and concurrency key of a terminal run (no
    /// idempotency key, no coalescing).
    pub(crate) async fn retrigger(&self, job: Option<&str>, id: &str) -> Result<RunRecord, Error> {
        let run = self.existing(job, id, Operation::Retrigger).await?;
        if run.status.is_active() {
            return Err(Error::InvalidState {
                instance: key(&run.job_name, id),
                operation: Operation::Retrigger,
                state: run.status.as_str().to_owned(),
            });
        }
        let handler = self.job(&run.job_name).ok_or_else(|| Error::JobNotFound {
            name: run.job_name.clone(),
        })?;
        let input: serde_json::Value =
            serde_json::from_str(&run.input).unwrap_or(serde_json::Value::Null);
        let input = handler.check_input(input).map_err(|m| {
            Error::validation(
                ValidationTarget::Input,
                Some(&run.job_name),
                format!("cannot retrigger run {id}: {m}"),
            )
        })?;
        let options = TriggerOptions {
            idempotency_key: None,
            concurrency_key: run.concurrency_key.clone(),
            labels: run.labels.clone(),
            coalesce: None,
        };
        let mut out = self
            .trigger_encoded(&run.job_name, vec![(input, options)])
            .await
            .map_err(|e| match e {
                Error::InvalidState {
                    instance, state, ..
                } => Error::InvalidState {
                    instance,
                    operation: Operation::Retrigger,
                    state,
                },
                other => other,
            })?;
        out.pop()
            .map(|(r, _)| r)
            .ok_or_else(|| storage("retrigger", StoreError::Database("no run created".into())))
    }

    /// Cancels a pending or leased run. A leased run's steps see the cancellation through
    /// their token; whatever they return is no longer persisted.
    pub(crate) async fn cancel(&self, job: Option<&str>, id: &str) -> Result<(), Error> {
        // Look first so a run of another job is "not found" without being touched.
        self.existing(job, id, Operation::Cancel).await?;
        let now = self.shared.clock.now();
        let cleanup = !self.shared.options.preserve_steps;
        let outcome = self
            .shared
            .store
            .cancel_run(id, now, cleanup)
            .await
            .map_err(|e| storage("cancel", e))?;
        match outcome {
            CancelOutcome::NotFound => Err(Error::InstanceNotFound {
                instance: key(job.unwrap_or(""), id),
                operation: Operation::Cancel,
            }),
            CancelOutcome::Terminal(status) => Err(Error::InvalidState {
                instance: key(job.unwrap_or(""), id),
                operation: Operation::Cancel,
                state: status.as_str().to_owned(),
            }),
            CancelOutcome::Cancelled(run) => {
                if let Some(a) = self
                    .shared
                    .active
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                {
                    a.cancellation.cancel(CancelReason::Cancelled);
                }
                let labels = Arc::new(run.labels.clone());
                self.shared
                    .events
                    .emit(now, id, &run.job_name, &labels, || RunEventKind::Cancel);
                self.shared.run_finished(id);
                Ok(())
            }
        }
    }

    /// Deletes a terminal run with its labels, steps and logs.
    pub(crate) async fn delete_run(&self, job: Option<&str>, id: &str) -> Result<(), Error> {
        self.existing(job, id, Operation::DeleteRun).await?;
        let outcome = self
            .shared
            .store
            .delete_run(id)
            .await
            .map_err(|e| storage("delete_run", e))?;
        match outcome {
            DeleteOutcome::NotFound => Err(Error::InstanceNotFound {
                instance: key(job.unwrap_or(""), id),
                operation: Operation::DeleteRun,
            }),
            DeleteOutcome::Active(status) => Err(Error::InvalidState {
                instance: key(job.unwrap_or(""), id),
                operation: Operation::DeleteRun,
                state: status.as_str().to_owned(),
            }),
            DeleteOutcome::Deleted(run) => {
                let labels = Arc::new(run.labels.clone());
                self.shared.events.emit(
                    self.shared.clock.now(),
                    id,
                    &run.job_name,
                    &labels,
                    || RunEventKind::Delete,
                );
                self.shared.run_finished(id);
                Ok(())
            }
        }
    }

    /// Deletes terminal runs (of `job`, when given) that ended before `older_than`, at most
    /// `limit` (all when `None`). Emits no events.
    pub(crate) async fn purge_runs(
        &self,
        job: Option<&str>,
        older_than: Timestamp,
        limit: Option<u32>,
    ) -> Result<u64, Error> {
        const CHUNK: u32 = 500;
        let mut total = 0u64;
        let mut left = limit.unwrap_or(u32::MAX);
        while left > 0 {
            let n = left.min(CHUNK);
            let deleted = self
                .shared
                .store
                .purge_runs(job.map(str::to_owned), older_than, n)
                .await
                .map_err(|e| storage("purge_runs", e))?;
            total += deleted;
            left -= n.min(deleted as u32);
            if deleted < u64::from(n) {
                break;
            }
        }
        Ok(total)
    }

    /// Per job: runs by status and recent ends.
    pub(crate) async fn count_runs(
        &self,
        since: Timestamp,
    ) -> Result<Vec<super::run::RunCounts>, Error> {
        self.shared
            .store
            .count_runs(since)
            .await
            .map_err(|e| storage("count_runs", e))
    }

    /// Now, on the engine's clock.
    pub(crate) fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Waits until the run completes (`Ok`), fails (`Error::Execution` with [`RunFailed`]) or
    /// is cancelled (`Error::InvalidState { state: "cancelled" }`).
    pub(crate) async fn wait_for_run(
        &self,
        job: Option<&str>,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<RunRecord, Error> {
        let wait = async {
            // Made before the first read: an end another process writes after it wakes this.
            let mut ended_elsewhere = self.shared.others.watch(Change::RunEnded);
            loop {
                let finished = self.shared.register_waiter(id);
                let run = self.existing(job, id, Operation::WaitForRun).await?;
                match run.status {
                    RunStatus::Completed => return Ok(run),
                    RunStatus::Failed => {
                        let message = run.error.clone().unwrap_or_else(|| "Run failed".to_owned());
                        return Err(Error::Execution {
                            instance: key(&run.job_name, id),
                            operation: Operation::WaitForRun,
                            source: Box::new(RunFailed { message }) as BoxError,
                        });
                    }
                    RunStatus::Cancelled => {
                        return Err(Error::InvalidState {
                            instance: key(&run.job_name, id),
                            operation: Operation::WaitForRun,
                            state: "cancelled".to_owned(),
                        })
                    }
                    RunStatus::Pending | RunStatus::Leased => {
                        // Ended here, or maybe by another process: read it again.
                        tokio::select! {
                            _ = finished => {}
                            () = ended_elsewhere.next() => {}
                        }
                    }
                }
            }
        };
        match timeout {
            None => wait.await,
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    operation: Operation::WaitForRun,
                    after: t,
                }),
            },
        }
    }

    /// A run's events: first a snapshot of its stored state (`sequence` 0), then live events,
    /// ending after it completes, fails, is cancelled or deleted.
    pub(crate) async fn subscribe(
        &self,
        job: Option<&str>,
        id: &str,
    ) -> Result<RunEventStream, Error> {
        // Subscribed before the run is read: what happens after the read is received.
        let rx = self.shared.events.subscribe();
        let run = self.existing(job, id, Operation::GetRun).await?;
        let snap = snapshot(&run_snapshot_source(&run));
        let filter = StreamFilter {
            run_id: Some(id.to_owned()),
            job_name: None,
        };
        Ok(RunEventStream::new(
            rx,
            snap,
            filter,
            self.shared.store.clone(),
        ))
    }

    /// Every event (of `job`, when given), from now on.
    pub(crate) fn events(&self, job: Option<&str>) -> RunEventStream {
        let rx = self.shared.events.subscribe();
        let filter = StreamFilter {
            run_id: None,
            job_name: job.map(str::to_owned),
        };
        RunEventStream::new(rx, Vec::new(), filter, self.shared.store.clone())
    }
}

fn at_index(e: Error, index: Option<usize>) -> Error {
    match (e, index) {
        (
            Error::Validation {
                target,
                job,
                message,
            },
            Some(i),
        ) => Error::Validation {
            target,
            job,
            message: format!("at index {i}: {message}"),
        },
        (e, _) => e,
    }
}
