//! The worker: one dispatcher task per runtime that claims runs in batches, renews every lease
//! it holds with one statement, runs maintenance, and executes each claimed run in its own task.
//!
//! On an exclusive store there is no polling. The dispatcher sleeps until one of: a trigger
//! (`Notify`), a run finishing (its slot frees and a same-key sibling may become claimable), the
//! earliest not-before time of a retry or lease expiry of another owner, the next renewal, the
//! next maintenance, or the end of a claim-error backoff. On a shared store it also claims when
//! the store reports that another process may have made a run claimable, and every poll
//! interval (see `store::changes`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use super::cancel::{CancelReason, Cancellation};
use super::context::StepContext;
use super::events::{json_value, RunEventKind};
use super::run::{Labels, RunStatus};
use super::runtime::{ActiveRun, Shared, StepRuntime};
use super::{ErasedStepJob, RunFailure};
use crate::error::{catch_panic, Error};
use crate::id::JobKind;
use crate::metrics::{self, RunEnd};
use crate::store::changes::{Change, Watcher};
use crate::store::runs::{Claimed, ClaimedRun, Fence, Finish, FinishOutcome};
use crate::store::{BoxFuture, StoreError};
use crate::time::Timestamp;

/// Runs claimed ahead, beyond the free slots, per slot: they wait in memory, leased, and start
/// the moment a body returns, so a slot never waits for a claim's commit. One per slot (it was
/// one per four): short runs end faster than claims commit, and a claim of more runs costs
/// less per run (`burndown`, medians of 8 paired runs: drain +5% to +14%, writer CPU per run
/// -4% to -14%).
const RUNS_CLAIMED_AHEAD_PER_SLOT: usize = 1;

/// How long maintenance (purging expired runs) waits between passes.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// Claim-error backoff: from this, doubling, ...
const BACKOFF_START: Duration = Duration::from_millis(50);
/// ... up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn worker_error(shared: &Shared, run_id: &str, job: &str, context: &'static str, error: String) {
    tracing::warn!(run_id, job, context, %error, "step worker error");
    shared.events.emit(
        shared.clock.now(),
        run_id,
        job,
        &Arc::new(Labels::new()),
        || RunEventKind::WorkerError {
            error: error.clone(),
            context,
        },
    );
}

async fn maybe<T>(fut: &mut Option<BoxFuture<'static, T>>) -> T {
    match fut.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

type RenewResult = (
    Result<Vec<(String, u64)>, StoreError>,
    Vec<(String, u64)>,
    Timestamp,
);

/// The dispatcher loop; returns when the runtime stops.
pub(crate) async fn dispatch<A: Send + Sync + 'static>(rt: Arc<StepRuntime<A>>) {
    let mut dispatcher = Dispatcher::new(rt);
    dispatcher.recover().await;
    loop {
        let now = dispatcher.shared.clock.now();
        let stopping = dispatcher.shared.stopping.load(Ordering::Acquire);
        dispatcher.note_settle_request();
        dispatcher.start_ready(stopping);
        if stopping && dispatcher.runs.is_empty() && dispatcher.claim.is_none() {
            break;
        }
        if dispatcher.next_due.is_some_and(|t| t <= now) {
            dispatcher.next_due = None;
            dispatcher.dirty = true;
        }
        dispatcher.schedule_renewal(now);
        dispatcher.schedule_maintenance(now, stopping);
        let free = dispatcher.schedule_claim(now, stopping);
        dispatcher.report_settled(free, stopping);
        dispatcher.wait(stopping).await;
    }
    dispatcher.stopped();
}

/// What the dispatcher keeps between two turns of its loop.
struct Dispatcher<A: Send + Sync + 'static> {
    rt: Arc<StepRuntime<A>>,
    shared: Arc<Shared>,
    /// Run bodies executing at once, at most.
    max: usize,
    lease: Duration,
    /// Runs claimed ahead, beyond the free slots, at most.
    claim_ahead: usize,
    /// The run tasks.
    runs: JoinSet<()>,
    /// Runs claimed ahead, leased, waiting for a slot.
    ready: VecDeque<Reserved>,
    /// Something may have become claimable: the next turn claims.
    dirty: bool,
    /// When another process may have made a run claimable.
    others: Watcher,
    /// The claim in flight, and how many runs it asked for.
    claim: Option<BoxFuture<'static, Result<Claimed, StoreError>>>,
    requested: usize,
    /// The renewal in flight.
    renew: Option<BoxFuture<'static, RenewResult>>,
    /// The purge in flight.
    maintenance: Option<BoxFuture<'static, Result<u64, Error>>>,
    /// When a run becomes claimable by itself (a retry's not-before, a foreign lease expiring).
    next_due: Option<Timestamp>,
    next_renew: Option<Timestamp>,
    next_maintenance: Option<Timestamp>,
    /// Claim-error backoff: its current length, and when it ends.
    backoff: Duration,
    backoff_until: Option<tokio::time::Instant>,
    /// Test clock: the last settle request seen, and the last one answered.
    settle_pending: u64,
    settle_served: u64,
}

impl<A: Send + Sync + 'static> Dispatcher<A> {
    fn new(rt: Arc<StepRuntime<A>>) -> Self {
        let shared = rt.shared.clone();
        let others = shared.others.watch(Change::Runs);
        let max = shared.options.max_concurrent_runs;
        let next_maintenance = shared.options.retain_runs.map(|_| shared.clock.now());
        Dispatcher {
            max,
            lease: shared.options.lease_duration,
            claim_ahead: max * RUNS_CLAIMED_AHEAD_PER_SLOT,
            rt,
            shared,
            runs: JoinSet::new(),
            ready: VecDeque::new(),
            dirty: true,
            others,
            claim: None,
            requested: 0,
            renew: None,
            maintenance: None,
            next_due: None,
            next_renew: None,
            next_maintenance,
            backoff: Duration::ZERO,
            backoff_until: None,
            settle_pending: 0,
            settle_served: 0,
        }
    }

    /// On an exclusive store, expires every lease: whatever held one crashed.
    async fn recover(&mut self) {
        if self.shared.recover_at_start {
            if let Err(e) = self.shared.store.recover(self.shared.clock.now()).await {
                worker_error(&self.shared, "", "", "recover", e.to_string());
            }
        }
    }

    fn note_settle_request(&mut self) {
        let requested_settle = self.shared.settle_requested.load(Ordering::Acquire);
        if requested_settle > self.settle_pending {
            self.settle_pending = requested_settle;
            self.dirty = true;
        }
    }

    /// Starts claimed runs in the free slots; once stopping, lets them go instead.
    fn start_ready(&mut self, stopping: bool) {
        if stopping {
            // Claimed ahead but not started: they keep their leases, like runs cut off at the
            // shutdown deadline, and the next start reclaims them at once.
            for reserved in self.ready.drain(..) {
                reserved.forget(&self.shared);
            }
        } else {
            while self.shared.bodies.load(Ordering::Acquire) < self.max {
                let Some(reserved) = self.ready.pop_front() else {
                    break;
                };
                start_run(&self.rt, &mut self.runs, reserved);
            }
        }
    }

    /// One renewal for every lease this worker holds, every `lease_renew_interval`.
    fn schedule_renewal(&mut self, now: Timestamp) {
        let shared = &self.shared;
        if self.runs.is_empty() {
            self.next_renew = None;
        } else if self.next_renew.is_none() {
            self.next_renew = Some(now + shared.options.lease_renew_interval);
        }
        if self.renew.is_none() && self.next_renew.is_some_and(|t| t <= now) {
            let checked: Vec<(String, u64)> = shared
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(id, a)| (id.clone(), a.generation))
                .collect();
            let until = now + self.lease;
            let store = shared.store.clone();
            let owner = shared.owner.clone();
            self.renew = Some(Box::pin(async move {
                (store.renew_leases(&owner, now, until).await, checked, until)
            }));
            self.next_renew = Some(now + shared.options.lease_renew_interval);
        }
        shared.next_renew.store(
            self.next_renew.map_or(i64::MIN, Timestamp::as_millis),
            Ordering::Release,
        );
    }

    /// Maintenance: purges runs older than `retain_runs`.
    fn schedule_maintenance(&mut self, now: Timestamp, stopping: bool) {
        if let (Some(retain), None, false) =
            (self.shared.options.retain_runs, &self.maintenance, stopping)
        {
            if self.next_maintenance.is_some_and(|t| t <= now) {
                let rt = self.rt.clone();
                self.maintenance = Some(Box::pin(async move {
                    rt.purge_runs(None, now - retain, None).await
                }));
                self.next_maintenance = Some(now + MAINTENANCE_INTERVAL);
            }
        }
        self.shared.next_maintenance.store(
            self.next_maintenance.map_or(i64::MIN, Timestamp::as_millis),
            Ordering::Release,
        );
    }

    /// Claims enough runs to fill the free slots and the claimed-ahead queue, when something
    /// may be claimable; returns how many that is. A slot frees when a run's body returns,
    /// while its end is still being written.
    fn schedule_claim(&mut self, now: Timestamp, stopping: bool) -> usize {
        let free = (self.max + self.claim_ahead)
            .saturating_sub(self.shared.bodies.load(Ordering::Acquire) + self.ready.len());
        let can_claim = self.dirty && free > 0 && !stopping && self.backoff_until.is_none();
        // One claim at a time: slots that free while it is in flight are filled by the next
        // one, so claims grow with the load instead of taking one run each.
        if self.claim.is_none() && can_claim {
            self.dirty = false;
            self.requested = free;
            let store = self.shared.store.clone();
            let owner = self.shared.owner.clone();
            let lease = self.lease;
            self.claim = Some(Box::pin(async move {
                store.claim(&owner, now, now + lease, free).await
            }));
        }
        free
    }

    /// Test clock: tells a settle request that everything due at its time has been started.
    fn report_settled(&mut self, free: usize, stopping: bool) {
        let busy = self.claim.is_some()
            || self.renew.is_some()
            || self.maintenance.is_some()
            || (self.dirty && free > 0 && !stopping && self.backoff_until.is_none());
        if !busy && self.settle_pending > self.settle_served {
            self.settle_served = self.settle_pending;
            self.shared.settle_served.send_replace(self.settle_served);
        }
    }

    /// Sleeps until something happens: a claim, renewal or purge answers, a run task ends, a
    /// wake-up, the next deadline, the end of a backoff or the shutdown deadline.
    async fn wait(&mut self, stopping: bool) {
        let shared = self.shared.clone();
        let deadline = [self.next_due, self.next_renew, self.next_maintenance]
            .into_iter()
            .flatten()
            .min();
        let stop_at = if stopping {
            *shared
                .stop_deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        } else {
            None
        };
        let backoff_until = self.backoff_until;

        tokio::select! {
            result = maybe(&mut self.claim) => {
                self.claim = None;
                self.claimed(result);
            }
            Some(joined) = self.runs.join_next(), if !self.runs.is_empty() => {
                self.dirty = true;
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!("a step run task panicked");
                    }
                }
            }
            (result, checked, until) = maybe(&mut self.renew) => {
                self.renew = None;
                renewed(&shared, result, checked, until);
            }
            result = maybe(&mut self.maintenance) => {
                self.maintenance = None;
                if let Err(e) = result {
                    worker_error(&shared, "", "", "maintenance", e.to_string());
                }
            }
            _ = shared.wake.notified() => {
                self.dirty = true;
            }
            () = self.others.next() => {
                self.dirty = true;
            }
            _ = async { match deadline { Some(at) => shared.clock.sleep_until(at).await, None => std::future::pending().await } } => {}
            _ = async { match backoff_until { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                self.backoff_until = None;
            }
            _ = async { match stop_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                self.runs.abort_all();
                *shared.stop_deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }

    /// A claim answered: its runs wait for slots, or its error starts (or doubles) a backoff.
    fn claimed(&mut self, result: Result<Claimed, StoreError>) {
        match result {
            Ok(claimed) => {
                self.backoff = Duration::ZERO;
                if claimed.runs.len() >= self.requested {
                    self.dirty = true;
                } else {
                    self.next_due = claimed.next_due;
                }
                let shared = &self.shared;
                self.ready.extend(
                    claimed
                        .runs
                        .into_iter()
                        .map(|run| Reserved::new(shared, run)),
                );
            }
            Err(e) => {
                self.backoff = if self.backoff.is_zero() {
                    BACKOFF_START
                } else {
                    (self.backoff * 2).min(BACKOFF_MAX)
                };
                self.backoff_until = Some(tokio::time::Instant::now() + self.backoff);
                worker_error(&self.shared, "", "", "claim", e.to_string());
                self.dirty = true;
            }
        }
    }

    /// The loop ended: nothing is scheduled any more.
    fn stopped(&self) {
        let shared = &self.shared;
        shared.next_renew.store(i64::MIN, Ordering::Release);
        shared.next_maintenance.store(i64::MIN, Ordering::Release);
        shared.running.store(false, Ordering::Release);
        shared.settle_served.send_modify(|_| {});
    }
}

fn renewed(
    shared: &Shared,
    result: Result<Vec<(String, u64)>, StoreError>,
    checked: Vec<(String, u64)>,
    until: Timestamp,
) {
    let renewed = match result {
        Ok(r) => r,
        Err(e) => {
            worker_error(shared, "", "", "lease-renewal", e.to_string());
            return;
        }
    };
    let set: HashSet<&(String, u64)> = renewed.iter().collect();
    let active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
    for pair in &checked {
        if set.contains(pair) {
            continue;
        }
        if let Some(a) = active.get(&pair.0).filter(|a| a.generation == pair.1) {
            a.cancellation.cancel(CancelReason::LeaseLost);
            worker_error(
                shared,
                &pair.0,
                &a.job_name,
                "lease-renewal",
                format!("lease of run {} was lost", pair.0),
            );
        }
    }
    if shared.events.listening() {
        let now = shared.clock.now();
        for (id, _) in &renewed {
            let Some(a) = active.get(id) else { continue };
            shared.events.emit(now, id, &a.job_name, &a.labels, || {
                RunEventKind::LeaseRenewed {
                    lease_owner: shared.owner.clone(),
                    lease_expires_at: until,
                }
            });
        }
    }
}

/// A run this worker claimed, not started yet. It is in the active table from the claim on,
/// so its lease is renewed with the others and a cancel reaches its token.
struct Reserved {
    run: ClaimedRun,
    labels: Arc<Labels>,
    cancellation: Cancellation,
}

impl Reserved {
    fn new(shared: &Shared, mut run: ClaimedRun) -> Reserved {
        let cancellation = Cancellation::new();
        let labels = Arc::new(std::mem::take(&mut run.labels));
        shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                run.id.clone(),
                ActiveRun {
                    generation: run.generation,
                    cancellation: cancellation.clone(),
                    job_name: run.job_name.clone(),
                    labels: labels.clone(),
                },
            );
        Reserved {
            run,
            labels,
            cancellation,
        }
    }

    /// Gives the run up without starting it (its lease stays in the store).
    fn forget(self, shared: &Shared) {
        leave_active(shared, &self.run.id, self.run.generation);
    }
}

fn start_run<A: Send + Sync + 'static>(
    rt: &Arc<StepRuntime<A>>,
    runs: &mut JoinSet<()>,
    reserved: Reserved,
) {
    let Reserved {
        run,
        labels,
        cancellation,
    } = reserved;
    let slot = Slot::take(&rt.shared);
    let job = rt.job(&run.job_name).cloned();
    let span = tracing::info_span!(
        "step_run",
        job = %run.job_name,
        run_id = %run.id,
        attempt = run.attempt,
        generation = run.generation
    );
    let fut = execute(
        rt.shared.clone(),
        job,
        rt.app.clone(),
        run,
        labels,
        cancellation,
        slot,
    )
    .instrument(span);
    runs.spawn(fut);
}

/// One of the worker's `max_concurrent_runs` slots, held while a run's body executes. Released
/// once the body returned (or its task ended, even aborted), which wakes the dispatcher.
struct Slot {
    shared: Option<Arc<Shared>>,
}

impl Slot {
    fn take(shared: &Arc<Shared>) -> Slot {
        shared.bodies.fetch_add(1, Ordering::AcqRel);
        Slot {
            shared: Some(shared.clone()),
        }
    }

    fn release(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.bodies.fetch_sub(1, Ordering::AcqRel);
            shared.wake.notify_one();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Removes the run from the active table however its task ends (even aborted).
struct ActiveGuard {
    shared: Arc<Shared>,
    id: String,
    generation: u64,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        leave_active(&self.shared, &self.id, self.generation);
    }
}

/// Removes the run from the active table, unless a later execution took its place.
fn leave_active(shared: &Shared, id: &str, generation: u64) {
    let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
    if active.get(id).is_some_and(|a| a.generation == generation) {
        active.remove(id);
    }
}

/// Executes one claimed run to its end: completed, failed, back to pending for a retry,
/// cancelled, or abandoned because the lease was lost.
async fn execute<A: Send + Sync + 'static>(
    shared: Arc<Shared>,
    job: Option<Arc<dyn ErasedStepJob<A>>>,
    app: Arc<A>,
    run: ClaimedRun,
    labels: Arc<Labels>,
    cancellation: Cancellation,
    mut slot: Slot,
) {
    let _guard = ActiveGuard {
        shared: shared.clone(),
        id: run.id.clone(),
        generation: run.generation,
    };
    let started = shared.clock.now();
    let (id, job_name) = (run.id, run.job_name);
    metrics::started(JobKind::Step, &job_name, run.due_at, started);
    let fence = Fence {
        run_id: id.clone(),
        generation: run.generation,
        hint: run.hint,
    };
    shared
        .events
        .emit(started, &id, &job_name, &labels, || RunEventKind::Leased {
            input: json_value(Some(&run.input)),
            lease_owner: shared.owner.clone(),
            lease_expires_at: run.lease_expires_at,
        });
    let end = Ending {
        shared: &shared,
        id: &id,
        job_name: &job_name,
        labels: &labels,
        fence: &fence,
        started,
    };

    let Some(job) = job else {
        end.fail(
            format!("Unknown job: {job_name}"),
            None,
            None,
            Vec::new(),
            run.generation > 1,
        )
        .await;
        return;
    };
    let stored = if run.generation > 1 {
        match shared.store.completed_steps(&id).await {
            Ok(s) => s,
            Err(e) => {
                // The store failed, not the run: the run stays leased until its lease lapses,
                // then runs again, here or in another process.
                worker_error(&shared, &id, &job_name, "run-setup", e.to_string());
                return;
            }
        }
    } else {
        Vec::new()
    };
    let mut ctx = StepContext::new(
        shared.clone(),
        id.clone(),
        job_name.clone(),
        labels.clone(),
        run.generation,
        run.hint,
        run.attempt,
        cancellation.clone(),
        stored,
    );
    // A run cancelled while it waited for its slot does not start.
    let result = if cancellation.is_cancelled() {
        None
    } else {
        // A panicking body fails the attempt like an error it returned.
        let stopwatch = metrics::Stopwatch::start();
        let result = catch_panic(job.run(&mut ctx, &run.input, &app))
            .await
            .unwrap_or_else(|panicked| {
                tracing::error!(error = %panicked, "step run panicked");
                Err(RunFailure::Job(panicked.into()))
            });
        stopwatch.executed(JobKind::Step, &job_name, result.is_ok());
        Some(result)
    };
    slot.release();
    let cleanup = !shared.options.preserve_steps && (ctx.wrote_rows() || run.generation > 1);

    match cancellation.reason() {
        Some(CancelReason::LeaseLost) => {
            tracing::debug!("lease lost; the run continues elsewhere");
            return;
        }
        Some(_) => {
            end.cancelled(ctx.take_logs(), cleanup).await;
            return;
        }
        None => {}
    }
    // Not started means cancelled, which ended above.
    let Some(result) = result else { return };
    if result.is_err() && ctx.store_failed() {
        // A step's result could not be stored: the store failed, not the run (a connection
        // lost, a disk full), and whether the write took effect may not even be known. The
        // run is not failed for it: it stays leased until its lease lapses, then runs again
        // from its last stored step, here or in another process.
        worker_error(
            &shared,
            &id,
            &job_name,
            "step-persist",
            "the store failed while a step was stored; the run resumes once its lease lapses"
                .to_owned(),
        );
        return;
    }
    match result {
        Ok(output) => {
            let finish = Finish::Completed {
                output: Some(output.clone()),
                completed_step_count: ctx.completed_step_count(),
                current_step_index: ctx.current_step_index(),
            };
            match shared
                .store
                .finish_run(fence.clone(), finish, ctx.take_logs(), cleanup, ctx.now())
                .await
            {
                Ok(FinishOutcome::Completed) => {
                    let now = shared.clock.now();
                    shared
                        .events
                        .emit(now, &id, &job_name, &labels, || RunEventKind::Complete {
                            output: json_value(Some(&output)),
                            duration_ms: now.saturating_duration_since(started).as_millis() as u64,
                        });
                    metrics::step_run_finished(&job_name, RunEnd::Completed);
                    shared.run_finished(&id);
                }
                Ok(_) => end.refused("run-completion", cleanup).await,
                Err(e) => worker_error(&shared, &id, &job_name, "run-completion", e.to_string()),
            }
        }
        Err(failure) => {
            let message = failure.to_string();
            let retry = match (&failure, &job.config().retry) {
                (RunFailure::Job(_), Some(policy)) => {
                    match policy.after_failure(
                        run.attempt,
                        run.started_at,
                        shared.clock.now(),
                        crate::retry::jitter_unit(),
                    ) {
                        crate::retry::RetryDecision::Retry { attempt, at } => Some((attempt, at)),
                        crate::retry::RetryDecision::Exhausted(_) => {
                            metrics::retries_exhausted(JobKind::Step, &job_name);
                            None
                        }
                    }
                }
                _ => None,
            };
            let failed_step = ctx.failed_step().map(str::to_owned);
            end.fail(message, retry, failed_step, ctx.take_logs(), cleanup)
                .await;
        }
    }
}

/// The ways an execution ends, with their writes and events.
struct Ending<'a> {
    shared: &'a Arc<Shared>,
    id: &'a str,
    job_name: &'a str,
    labels: &'a Arc<Labels>,
    fence: &'a Fence,
    started: Timestamp,
}

impl Ending<'_> {
    async fn fail(
        &self,
        error: String,
        retry: Option<(u32, Timestamp)>,
        failed_step: Option<String>,
        logs: Vec<crate::store::runs::NewLog>,
        cleanup: bool,
    ) {
        let finish = Finish::Failed {
            error: error.clone(),
            retry,
        };
        let now = self.shared.clock.now();
        match self
            .shared
            .store
            .finish_run(self.fence.clone(), finish, logs, cleanup, now)
            .await
        {
            Ok(FinishOutcome::Retrying) => {
                metrics::retry_scheduled(JobKind::Step, self.job_name);
                if let Some((next_attempt, not_before)) = retry {
                    tracing::info!(%error, next_attempt, %not_before, "run failed; retrying");
                    self.shared
                        .events
                        .emit(now, self.id, self.job_name, self.labels, || {
                            RunEventKind::Retry {
                                error: error.clone(),
                                next_attempt,
                                not_before,
                            }
                        });
                }
                self.shared.wake.notify_one();
            }
            Ok(FinishOutcome::Failed | FinishOutcome::FailedRetryBlocked) => {
                tracing::info!(%error, "run failed");
                self.shared
                    .events
                    .emit(now, self.id, self.job_name, self.labels, || {
                        RunEventKind::Fail {
                            error: error.clone(),
                            failed_step_name: failed_step.clone(),
                        }
                    });
                metrics::step_run_finished(self.job_name, RunEnd::Failed);
                self.shared.run_finished(self.id);
            }
            Ok(_) => self.refused("run-failure", cleanup).await,
            Err(e) => worker_error(
                self.shared,
                self.id,
                self.job_name,
                "run-failure",
                e.to_string(),
            ),
        }
        let _ = self.started;
    }

    /// The run was cancelled while it executed: keep its logs, drop its steps unless preserved.
    async fn cancelled(&self, logs: Vec<crate::store::runs::NewLog>, cleanup: bool) {
        if cleanup {
            if let Err(e) = self
                .shared
                .store
                .delete_cancelled_steps(self.id.to_owned())
                .await
            {
                worker_error(
                    self.shared,
                    self.id,
                    self.job_name,
                    "run-cancel",
                    e.to_string(),
                );
            }
        } else if !logs.is_empty() {
            if let Err(e) = self
                .shared
                .store
                .append_logs(self.id.to_owned(), logs)
                .await
            {
                worker_error(
                    self.shared,
                    self.id,
                    self.job_name,
                    "run-cancel",
                    e.to_string(),
                );
            }
        }
        metrics::step_run_finished(self.job_name, RunEnd::Cancelled);
        tracing::info!("run cancelled");
    }

    /// The final write was refused: the run was cancelled meanwhile, or the lease was lost.
    async fn refused(&self, context: &'static str, cleanup: bool) {
        let status = self
            .shared
            .store
            .get_run(self.id)
            .await
            .ok()
            .flatten()
            .map(|r| r.status);
        if status == Some(RunStatus::Cancelled) {
            self.cancelled(Vec::new(), cleanup).await;
        } else {
            worker_error(
                self.shared,
                self.id,
                self.job_name,
                context,
                format!("lease of run {} was lost", self.id),
            );
        }
    }
}
