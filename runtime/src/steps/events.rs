//! Run events: the upstream event set with `sequence` and `timestamp`, published into the
//! engine's event fan-out (`telemetry::fanout`), beside the job events.
//!
//! Events are emitted as things happen (not from an outbox). `sequence` counts every event the
//! runtime emits, starting at 1, even when nobody listens; payloads are only built when someone
//! reads run events. A subscriber that falls more than 4,096 events behind (job events count
//! too while someone reads them) skips the oldest ones.
//!
//! A run's `run:trigger` comes before its other events. The trigger's commit can hand the run
//! to the worker before the triggering task resumes to emit `run:trigger`, so while someone
//! listens, a new run is held from before its commit until its `run:trigger` is sent: events
//! the worker emits for it meanwhile wait, and are sent right after, in order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::run::{Labels, LogLevel, Progress, RunStatus};
use crate::store::runs::RunStore;
use crate::telemetry::{Event, Fanout, Reads, Subscription};
use crate::time::Timestamp;

/// One run event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunEvent {
    /// Position among the runtime's events, from 1; 0 for the snapshot `subscribe` starts with.
    pub sequence: u64,
    /// When it happened, on the engine's clock.
    pub timestamp: Timestamp,
    /// The run (empty for a `worker:error` not tied to a run).
    pub run_id: String,
    /// The run's job (empty for a `worker:error` not tied to a run).
    pub job_name: String,
    /// The run's labels.
    pub labels: Arc<Labels>,
    /// What happened.
    pub kind: RunEventKind,
}

/// The event types and their payloads.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RunEventKind {
    /// `run:trigger`: a run was created (trigger, batch item, retrigger).
    Trigger {
        /// Its input.
        input: Value,
    },
    /// `run:coalesced`: a trigger returned the pending run with the same concurrency key.
    Coalesced {
        /// The input that was dropped.
        skipped_input: Value,
        /// The labels that were dropped.
        skipped_labels: Labels,
    },
    /// `run:leased`: an execution starts (also after a reclaim).
    Leased {
        /// The run's input.
        input: Value,
        /// The worker.
        lease_owner: String,
        /// Until when.
        lease_expires_at: Timestamp,
    },
    /// `run:lease-renewed`.
    LeaseRenewed {
        /// The worker.
        lease_owner: String,
        /// The new expiry.
        lease_expires_at: Timestamp,
    },
    /// `run:progress`.
    Progress {
        /// The report.
        progress: Progress,
    },
    /// `run:complete`.
    Complete {
        /// The output.
        output: Value,
        /// Duration of the execution, in milliseconds (0 in a snapshot).
        duration_ms: u64,
    },
    /// `run:fail`.
    Fail {
        /// The error message.
        error: String,
        /// The step that failed, when a step did (empty in a snapshot).
        failed_step_name: Option<String>,
    },
    /// `run:retry` (not upstream): a failed attempt goes back to pending under the job's retry
    /// policy.
    Retry {
        /// The error message.
        error: String,
        /// The attempt that will be made.
        next_attempt: u32,
        /// Not before this time.
        not_before: Timestamp,
    },
    /// `run:cancel`.
    Cancel,
    /// `run:delete` (not emitted by purges).
    Delete,
    /// `step:start`: a step that was not memoised begins.
    StepStart {
        /// Its name.
        step_name: String,
        /// Its position within the execution.
        step_index: u64,
    },
    /// `step:complete`: a step's output was persisted.
    StepComplete {
        /// Its name.
        step_name: String,
        /// Its position within the execution.
        step_index: u64,
        /// Its output.
        output: Value,
        /// Time spent in the step, in milliseconds.
        duration_ms: u64,
    },
    /// `step:fail`: a failed step was persisted.
    StepFail {
        /// Its name.
        step_name: String,
        /// Its position within the execution.
        step_index: u64,
        /// The error message.
        error: String,
    },
    /// `step:cancel`: a step's result was refused because the run was cancelled.
    StepCancel {
        /// Its name.
        step_name: String,
        /// Its position within the execution.
        step_index: u64,
    },
    /// `log:write`.
    LogWrite {
        /// The step it was written in, if any.
        step_name: Option<String>,
        /// Its level.
        level: LogLevel,
        /// Its message.
        message: String,
        /// Structured data.
        data: Option<Value>,
    },
    /// `worker:error`: something failed inside the worker; it goes on.
    WorkerError {
        /// The error message.
        error: String,
        /// `lease-renewal`, `run-completion`, `run-failure`, `claim`, `maintenance`, `run-setup`.
        context: &'static str,
    },
}

impl RunEventKind {
    /// The wire name, such as `run:complete`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            RunEventKind::Trigger { .. } => "run:trigger",
            RunEventKind::Coalesced { .. } => "run:coalesced",
            RunEventKind::Leased { .. } => "run:leased",
            RunEventKind::LeaseRenewed { .. } => "run:lease-renewed",
            RunEventKind::Progress { .. } => "run:progress",
            RunEventKind::Complete { .. } => "run:complete",
            RunEventKind::Fail { .. } => "run:fail",
            RunEventKind::Retry { .. } => "run:retry",
            RunEventKind::Cancel => "run:cancel",
            RunEventKind::Delete => "run:delete",
            RunEventKind::StepStart { .. } => "step:start",
            RunEventKind::StepComplete { .. } => "step:complete",
            RunEventKind::StepFail { .. } => "step:fail",
            RunEventKind::StepCancel { .. } => "step:cancel",
            RunEventKind::LogWrite { .. } => "log:write",
            RunEventKind::WorkerError { .. } => "worker:error",
        }
    }

    /// Whether the event ends a run's event stream: complete, fail, cancel or delete.
    pub const fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEventKind::Complete { .. }
                | RunEventKind::Fail { .. }
                | RunEventKind::Cancel
                | RunEventKind::Delete
        )
    }

    /// Upstream's domain events: trigger, coalesced, complete, fail, cancel, delete.
    pub const fn is_domain(&self) -> bool {
        matches!(
            self,
            RunEventKind::Trigger { .. }
                | RunEventKind::Coalesced { .. }
                | RunEventKind::Complete { .. }
                | RunEventKind::Fail { .. }
                | RunEventKind::Cancel
                | RunEventKind::Delete
        )
    }
}

impl RunEvent {
    /// The wire name, such as `run:complete`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The upstream wire form: `type`, `runId`, `jobName`, `labels`, the payload fields
    /// (camelCase), `timestamp` and `sequence`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.type_name()));
        if !self.run_id.is_empty() {
            m.insert("runId".into(), json!(self.run_id));
            m.insert("jobName".into(), json!(self.job_name));
            m.insert("labels".into(), json!(*self.labels));
        }
        let payload = match &self.kind {
            RunEventKind::Trigger { input } => json!({ "input": input }),
            RunEventKind::Coalesced {
                skipped_input,
                skipped_labels,
            } => {
                json!({ "skippedInput": skipped_input, "skippedLabels": skipped_labels })
            }
            RunEventKind::Leased {
                input,
                lease_owner,
                lease_expires_at,
            } => json!({
                "input": input, "leaseOwner": lease_owner, "leaseExpiresAt": lease_expires_at.to_rfc3339(),
            }),
            RunEventKind::LeaseRenewed {
                lease_owner,
                lease_expires_at,
            } => json!({
                "leaseOwner": lease_owner, "leaseExpiresAt": lease_expires_at.to_rfc3339(),
            }),
            RunEventKind::Progress { progress } => json!({ "progress": progress }),
            RunEventKind::Complete {
                output,
                duration_ms,
            } => json!({ "output": output, "duration": duration_ms }),
            RunEventKind::Fail {
                error,
                failed_step_name,
            } => json!({
                "error": error, "failedStepName": failed_step_name.clone().unwrap_or_default(),
            }),
            RunEventKind::Retry {
                error,
                next_attempt,
                not_before,
            } => json!({
                "error": error, "nextAttempt": next_attempt, "notBefore": not_before.to_rfc3339(),
            }),
            RunEventKind::Cancel | RunEventKind::Delete => json!({}),
            RunEventKind::StepStart {
                step_name,
                step_index,
            } => json!({ "stepName": step_name, "stepIndex": step_index }),
            RunEventKind::StepComplete {
                step_name,
                step_index,
                output,
                duration_ms,
            } => json!({
                "stepName": step_name, "stepIndex": step_index, "output": output, "duration": duration_ms,
            }),
            RunEventKind::StepFail {
                step_name,
                step_index,
                error,
            } => json!({
                "stepName": step_name, "stepIndex": step_index, "error": error,
            }),
            RunEventKind::StepCancel {
                step_name,
                step_index,
            } => json!({ "stepName": step_name, "stepIndex": step_index }),
            RunEventKind::LogWrite {
                step_name,
                level,
                message,
                data,
            } => json!({
                "stepName": step_name, "level": level.as_str(), "message": message, "data": data,
            }),
            RunEventKind::WorkerError { error, context } => {
                json!({ "error": error, "context": context })
            }
        };
        if let Value::Object(p) = payload {
            m.extend(p);
        }
        if self.kind.type_name() == "worker:error" && !self.run_id.is_empty() {
            m.remove("jobName");
            m.remove("labels");
        }
        m.insert("timestamp".into(), json!(self.timestamp.to_rfc3339()));
        m.insert("sequence".into(), json!(self.sequence));
        Value::Object(m)
    }
}

/// The runtime's side of the event fan-out: numbers run events, holds a new run's events until
/// its `run:trigger` is out, and publishes them.
pub(crate) struct EventBus {
    fanout: Arc<Fanout>,
    sequence: AtomicU64,
    /// Runs whose `run:trigger` is not sent yet, with the events emitted for them meanwhile.
    held: Mutex<HashMap<String, Vec<RunEvent>>>,
    /// The number of held runs, so that emitting takes the lock only while some are held.
    holding: AtomicUsize,
}

impl EventBus {
    pub(crate) fn new(fanout: Arc<Fanout>) -> Self {
        EventBus {
            fanout,
            sequence: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            holding: AtomicUsize::new(0),
        }
    }

    /// Whether anyone reads run events (payloads are only built then).
    pub(crate) fn listening(&self) -> bool {
        self.fanout.reads_runs()
    }

    /// Emits an event; `kind` is only called when someone listens. The event of a held run
    /// waits until the run's `run:trigger` is sent.
    pub(crate) fn emit(
        &self,
        timestamp: Timestamp,
        run_id: &str,
        job_name: &str,
        labels: &Arc<Labels>,
        kind: impl FnOnce() -> RunEventKind,
    ) {
        if !self.listening() {
            self.sequence.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = |sequence| RunEvent {
            sequence,
            timestamp,
            run_id: run_id.to_owned(),
            job_name: job_name.to_owned(),
            labels: labels.clone(),
            kind: kind(),
        };
        if self.holding.load(Ordering::Acquire) == 0 {
            self.send(event(self.next_sequence()));
            return;
        }
        // Under the lock, so that a run's release cannot interleave with its own events.
        let mut held = self.held();
        match held.get_mut(run_id) {
            Some(waiting) => waiting.push(event(0)),
            None => self.send(event(self.next_sequence())),
        }
    }

    /// Holds the events of runs about to be created until [`release`](Self::release) sends
    /// their `run:trigger`. Does nothing while nobody listens.
    pub(crate) fn hold<'id>(&self, run_ids: impl IntoIterator<Item = &'id str>) -> HeldRuns<'_> {
        let mut ids = Vec::new();
        if self.listening() {
            let mut held = self.held();
            for id in run_ids {
                held.insert(id.to_owned(), Vec::new());
                ids.push(id.to_owned());
            }
            self.holding.fetch_add(ids.len(), Ordering::AcqRel);
        }
        HeldRuns { bus: self, ids }
    }

    /// Sends `first` (the run's `run:trigger`, when the run was created), then what waited for
    /// it, and stops holding the run.
    fn release(&self, run_id: &str, first: Option<RunEvent>) {
        let mut held = self.held();
        let Some(waiting) = held.remove(run_id) else {
            return;
        };
        self.holding.fetch_sub(1, Ordering::AcqRel);
        for mut event in first.into_iter().chain(waiting) {
            event.sequence = self.next_sequence();
            self.send(event);
        }
    }

    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn send(&self, event: RunEvent) {
        self.fanout.publish(Event::Run(Arc::new(event)));
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Vec<RunEvent>>> {
        // The map stays consistent whatever a panicking holder did: entries are whole events.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader of run events from now on (the fan-out's job events pass by it).
    pub(crate) fn subscribe(&self) -> Subscription {
        self.fanout.subscribe(Reads::Runs)
    }
}

/// Runs held by [`EventBus::hold`]; dropping it releases those not released yet (runs whose
/// trigger failed, or found an existing run, have no events).
pub(crate) struct HeldRuns<'a> {
    bus: &'a EventBus,
    ids: Vec<String>,
}

impl HeldRuns<'_> {
    /// Sends a created run's `run:trigger`, then the events that waited for it.
    pub(crate) fn release_with_trigger(
        &self,
        timestamp: Timestamp,
        run_id: &str,
        job_name: &str,
        labels: &Arc<Labels>,
        kind: impl FnOnce() -> RunEventKind,
    ) {
        if !self.ids.iter().any(|id| id == run_id) {
            return self.bus.emit(timestamp, run_id, job_name, labels, kind);
        }
        let trigger = RunEvent {
            sequence: 0,
            timestamp,
            run_id: run_id.to_owned(),
            job_name: job_name.to_owned(),
            labels: labels.clone(),
            kind: kind(),
        };
        self.bus.release(run_id, Some(trigger));
    }
}

impl Drop for HeldRuns<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.bus.release(id, None);
        }
    }
}

/// Parses stored JSON for an event payload (`null` when absent or unreadable).
pub(crate) fn json_value(s: Option<&str>) -> Value {
    s.and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// What a [`RunEventStream`] passes on.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamFilter {
    pub(crate) run_id: Option<String>,
    pub(crate) job_name: Option<String>,
}

struct StreamState {
    rx: Subscription,
    queue: VecDeque<Arc<RunEvent>>,
    filter: StreamFilter,
    store: Arc<dyn RunStore>,
    done: bool,
}

type Pending = Pin<Box<dyn Future<Output = (Option<Arc<RunEvent>>, StreamState)> + Send>>;

/// A stream of run events: one run's (from `subscribe`, which ends after the run completes,
/// fails, is cancelled or deleted) or all of a job's, filtered from the events
/// [`Engine::events`](crate::Engine::events) yields.
///
/// A stream that falls more than 4,096 events behind skips the oldest (a `tracing` warning
/// says so); one run's stream then looks at the stored run and, if it ended meanwhile, ends
/// with its terminal event as `subscribe`'s snapshot gives it (`sequence` 0).
///
/// Use [`next`](Self::next), or it as a [`futures_core::Stream`].
pub struct RunEventStream {
    state: Option<StreamState>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for RunEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEventStream").finish_non_exhaustive()
    }
}

impl RunEventStream {
    pub(crate) fn new(
        rx: Subscription,
        snapshot: Vec<RunEvent>,
        filter: StreamFilter,
        store: Arc<dyn RunStore>,
    ) -> Self {
        let done = snapshot.iter().any(|e| e.kind.is_terminal()) && filter.run_id.is_some();
        let queue = snapshot.into_iter().map(Arc::new).collect();
        RunEventStream {
            state: Some(StreamState {
                rx,
                queue,
                filter,
                store,
                done,
            }),
            pending: None,
        }
    }

    /// The next event; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Arc<RunEvent>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<RunEvent>>> {
        if self.pending.is_none() {
            let Some(state) = self.state.take() else {
                return Poll::Ready(None);
            };
            self.pending = Some(Box::pin(advance(state)));
        }
        let Some(fut) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((event, state)) => {
                self.pending = None;
                self.state = Some(state);
                Poll::Ready(event)
            }
        }
    }
}

impl futures_core::Stream for RunEventStream {
    type Item = Arc<RunEvent>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

async fn advance(mut st: StreamState) -> (Option<Arc<RunEvent>>, StreamState) {
    if let Some(e) = st.queue.pop_front() {
        return (Some(e), st);
    }
    if st.done {
        return (None, st);
    }
    loop {
        match st.rx.recv().await {
            Ok(Event::Run(e)) => {
                if st.filter.run_id.as_ref().is_some_and(|id| *id != e.run_id)
                    || st
                        .filter
                        .job_name
                        .as_ref()
                        .is_some_and(|j| *j != e.job_name)
                {
                    continue;
                }
                if st.filter.run_id.is_some() && e.kind.is_terminal() {
                    st.done = true;
                }
                return (Some(e), st);
            }
            Ok(_) => {}
            Err(RecvError::Closed) => {
                st.done = true;
                return (None, st);
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "run event subscriber fell behind; events skipped"
                );
                // The terminal event may have been among those skipped: look at the run.
                if let Some(id) = st.filter.run_id.clone() {
                    match st.store.get_run(&id).await {
                        Ok(Some(run)) if run.status.is_terminal() => {
                            st.done = true;
                            if let Some(e) = snapshot(&run_snapshot_source(&run)).into_iter().last()
                            {
                                return (Some(Arc::new(e)), st);
                            }
                        }
                        Ok(None) => {
                            st.done = true;
                            return (None, st);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What a snapshot is built from.
pub(crate) struct SnapshotSource<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) job_name: &'a str,
    pub(crate) labels: &'a Labels,
    pub(crate) status: RunStatus,
    pub(crate) input: &'a str,
    pub(crate) output: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
    pub(crate) progress: Option<&'a str>,
    pub(crate) lease_owner: Option<&'a str>,
    pub(crate) lease_expires_at: Option<Timestamp>,
    pub(crate) updated_at: Timestamp,
}

pub(crate) fn run_snapshot_source(run: &crate::store::runs::RunRecord) -> SnapshotSource<'_> {
    SnapshotSource {
        run_id: &run.id,
        job_name: &run.job_name,
        labels: &run.labels,
        status: run.status,
        input: &run.input,
        output: run.output.as_deref(),
        error: run.error.as_deref(),
        progress: run.progress.as_deref(),
        lease_owner: run.lease_owner.as_deref(),
        lease_expires_at: run.lease_expires_at,
        updated_at: run.updated_at,
    }
}

/// The synthetic events (`sequence` 0) `subscribe` starts with, from the run's stored state:
/// leased → `run:leased` (and `run:progress`), completed → `run:complete` (duration 0),
/// failed → `run:fail`, cancelled → `run:cancel`, pending → nothing.
pub(crate) fn snapshot(src: &SnapshotSource<'_>) -> Vec<RunEvent> {
    let labels = Arc::new(src.labels.clone());
    let make = |kind| RunEvent {
        sequence: 0,
        timestamp: src.updated_at,
        run_id: src.run_id.to_owned(),
        job_name: src.job_name.to_owned(),
        labels: labels.clone(),
        kind,
    };
    match src.status {
        RunStatus::Pending => Vec::new(),
        RunStatus::Leased => {
            let mut out = vec![make(RunEventKind::Leased {
                input: json_value(Some(src.input)),
                lease_owner: src.lease_owner.unwrap_or_default().to_owned(),
                lease_expires_at: src.lease_expires_at.unwrap_or(src.updated_at),
            })];
            if let Some(p) = src
                .progress
                .and_then(|p| serde_json::from_str::<Progress>(p).ok())
            {
                out.push(make(RunEventKind::Progress { progress: p }));
            }
            out
        }
        RunStatus::Completed => {
            vec![make(RunEventKind::Complete {
                output: json_value(src.output),
                duration_ms: 0,
            })]
        }
        RunStatus::Failed => vec![make(RunEventKind::Fail {
            error: src.error.unwrap_or_default().to_owned(),
            failed_step_name: None,
        })],
        RunStatus::Cancelled => vec![make(RunEventKind::Cancel)],
    }
}
