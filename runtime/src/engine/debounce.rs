//! Debounce jobs: add, flush, clear, status, and the alarm that flushes a batch.
//!
//! A flush that fails without a retry policy keeps its batch and re-arms a flush `flush_after`
//! later (never a zombie). A successful or exhausted flush deletes the instance.

use std::sync::Arc;

use super::erased::{DebounceHandler, DecodedState, FlushMeta, Input};
use super::{execution_error, Events, Failure, Handler, Inner, Stored};
use crate::error::{BoxError, Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::job::debounce::{DebounceConfig, EventContext, FlushReason};
use crate::metrics;
use crate::store::{InstanceRecord, Write};
use crate::telemetry::EventKind;
use crate::time::Timestamp;

/// Whether a debounce instance exists and what it is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DebounceState {
    /// Collecting events until its flush.
    Debouncing,
    /// A failed flush is waiting for its retry.
    Retrying,
    /// Its stored state does not decode (even after migration): it takes no events and is not
    /// flushed until a deploy that decodes it starts, or it is cleared. `status` says why.
    Broken,
    /// There is no pending batch.
    NotFound,
}

/// What happened to a flush that ran inside a call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FlushOutcome {
    /// `execute` succeeded; the batch is gone.
    Flushed,
    /// `execute` failed; a retry is scheduled at this time.
    RetryScheduled(Timestamp),
    /// `execute` failed without a retry policy; the batch is kept and flushed again later.
    Failed {
        /// The error's message.
        message: String,
        /// When the batch is flushed again.
        next_flush_at: Timestamp,
    },
    /// `execute` failed and the retry policy gave up; the batch was dropped.
    Exhausted {
        /// The error's message.
        message: String,
    },
}

/// The answer to `add`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AddResult {
    /// The instance.
    pub instance: InstanceKey,
    /// Whether this event started a new batch.
    pub created: bool,
    /// Events in the batch, counting this one.
    pub event_count: u64,
    /// When the batch will be flushed (`None` when this add flushed it).
    pub will_flush_at: Option<Timestamp>,
    /// The flush this add caused by reaching `max_events`, if any.
    pub flush: Option<FlushOutcome>,
}

/// The answer to `flush`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlushResult {
    /// The instance.
    pub instance: InstanceKey,
    /// Whether `execute` succeeded (the batch is gone).
    pub flushed: bool,
    /// Events in the batch.
    pub event_count: u64,
    /// Whether a retry is scheduled.
    pub retry_scheduled: bool,
    /// When the batch is flushed next, if it is kept.
    pub will_flush_at: Option<Timestamp>,
}

/// The answer to `clear`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClearResult {
    /// The instance, now deleted.
    pub instance: InstanceKey,
    /// Events dropped without `execute`.
    pub discarded_events: u64,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DebounceStatus {
    /// Whether a batch exists and what it is doing.
    pub status: DebounceState,
    /// Events in the batch.
    pub event_count: u64,
    /// When the first event arrived.
    pub started_at: Option<Timestamp>,
    /// When the batch will be flushed (`None` while it flushes).
    pub will_flush_at: Option<Timestamp>,
    /// The attempt the next flush makes.
    pub attempt: u32,
    /// Why the batch is broken, when it is.
    pub broken: Option<String>,
}

impl DebounceStatus {
    /// Whether there is no pending batch.
    pub fn is_not_found(&self) -> bool {
        self.status == DebounceState::NotFound
    }
}

enum FlushEnd {
    Flushed,
    RetryScheduled(Timestamp),
    Failed(BoxError),
    Exhausted(BoxError),
}

/// When the batch flushes by itself: `flush_after` after its first event, or earlier once it
/// has been quiet for `quiet`.
fn due_at(config: &DebounceConfig, rec: &InstanceRecord) -> Timestamp {
    let started = rec.batch_started_at.unwrap_or(rec.created_at);
    let deadline = started + config.flush_after;
    match (config.quiet, rec.last_event_at) {
        (Some(quiet), Some(last)) => deadline.min(last + quiet),
        _ => deadline,
    }
}

/// Records a folded event in the batch's row: its state, its count, and the flush alarm, which
/// a pending retry keeps.
fn fold_into_row(
    config: &DebounceConfig,
    state_version: u32,
    rec: &mut InstanceRecord,
    state: String,
    event_count: u64,
    now: Timestamp,
) {
    rec.state = Some(state);
    rec.state_version = state_version;
    rec.event_count = event_count;
    rec.last_event_at = Some(now);
    if rec.retry_attempt <= 1 {
        rec.alarm_at = Some(due_at(config, rec));
    }
}

/// Why a batch's alarm flushes it at `now`.
fn alarm_reason(config: &DebounceConfig, rec: &InstanceRecord, now: Timestamp) -> FlushReason {
    let deadline = rec.batch_started_at.unwrap_or(rec.created_at) + config.flush_after;
    // Before its deadline, a batch not retrying that holds `max_events` was brought there by an
    // add inside an application's transaction, which leaves the flush to the alarm (an add
    // outside one flushes at once, and a batch kept after a failed flush starts a new window).
    let full = config.max_events.is_some_and(|max| rec.event_count >= max);
    if full && rec.retry_attempt <= 1 && now < deadline {
        FlushReason::MaxEvents
    } else if config.quiet.is_some() && now < deadline {
        FlushReason::Quiet
    } else {
        FlushReason::FlushAfter
    }
}

impl<A: Send + Sync + 'static> Inner<A> {
    fn debounce_handler(&self, name: &str) -> Result<Arc<dyn DebounceHandler<A>>> {
        match self.handler(name)? {
            Handler::Debounce(h) => Ok(h.clone()),
            _ => Err(Error::JobNotFound {
                name: name.to_owned(),
            }),
        }
    }

    pub(crate) async fn debounce_add(
        &self,
        job: &str,
        id: &str,
        event: Input,
        event_id: Option<&str>,
    ) -> Result<AddResult> {
        let op = Operation::Add;
        let _active = self.enter(op)?;
        let h = self.debounce_handler(job)?;
        let key = self.key(JobKind::Debounce, job, id)?;
        self.check_event_id(job, event_id)?;
        let mut event = self.retain(event, |event| h.event_json(event))?;
        self.retrying(op, || {
            let event = event.next(job);
            self.debounce_add_once(&h, &key, event, event_id)
        })
        .await
    }

    async fn debounce_add_once(
        &self,
        h: &Arc<dyn DebounceHandler<A>>,
        key: &InstanceKey,
        event: Result<Input>,
        event_id: Option<&str>,
    ) -> Result<AddResult> {
        let op = Operation::Add;
        let job = key.job();
        let key = key.clone();
        let event = h.decode_event(event?)?;
        let _lock = self.lock(&key, op).await?;
        let existing = self.load_for_action(&key, op).await?;
        self.ensure_new_event(&key, event_id, op).await?;
        // The batch's state, decoded: kept by the previous add when the cache has it.
        let mut prior = None;
        if let Some(rec) = &existing {
            let cached = match (&self.cache, &rec.broken) {
                (Some(cache), None) => cache.take_decoded(&key, rec.version),
                _ => None,
            };
            prior = Some(match cached {
                Some(state) => state,
                None => match self.stored_state_or(h.as_ref(), rec, "null", op).await? {
                    Stored::State(decoded) => decoded.state,
                    Stored::Broken(e) => return Err(e),
                },
            });
        }
        let now = self.clock.now();
        let config = h.config();
        let mut expected = existing.as_ref().map(|r| r.version);
        let created = existing.is_none();
        let mut rec = existing.unwrap_or_else(|| {
            let mut r = InstanceRecord::new(key.clone(), now);
            r.batch_started_at = Some(now);
            r
        });
        let event_count = rec.event_count + 1;
        let ctx = EventContext {
            instance: key.clone(),
            event_count,
            now,
        };
        let (state, decoded) = match h.fold(prior, event, &ctx) {
            Ok(folded) => folded,
            Err(e) => {
                if let Error::Execution { source, .. } = &e {
                    // `on_event` panicked: reported like a failed handler; the batch is unchanged.
                    let mut events = self.events();
                    events.push(&key, now, || EventKind::Failed {
                        message: source.to_string(),
                        run_count: 0,
                        attempt: 1,
                        will_retry: false,
                        pre_execution_state: None,
                    });
                    self.commit(Vec::new(), events, None, op).await?;
                }
                return Err(e);
            }
        };
        self.check_size(&state, ValidationTarget::State, job)?;
        fold_into_row(config, h.state_version(), &mut rec, state, event_count, now);
        let mut events = self.events();
        if created {
            let flush_at = now + config.flush_after;
            events.push(&key, now, || EventKind::DebounceStarted { flush_at });
        }
        let mut batch = Vec::with_capacity(2);
        if let Some(event_id) = event_id {
            batch.push(Write::RecordEvent {
                key: key.clone(),
                event_id: event_id.to_owned(),
                at: now,
            });
        }
        // The folded state goes to the flush, or stays decoded for the next add.
        let mut _claim = None;
        let (flush, decoded) = match config.max_events {
            Some(max) if event_count >= max => {
                _claim = self
                    .claim_for_execution(&mut rec, &mut expected, op)
                    .await?;
                let reason = FlushReason::MaxEvents;
                let end = self
                    .run_flush(h, &mut rec, decoded, reason, op, &mut events)
                    .await;
                (Some(end), None)
            }
            _ => (None, Some(decoded)),
        };
        let keep = !matches!(
            flush,
            Some(FlushEnd::Flushed) | Some(FlushEnd::Exhausted(_))
        );
        let will_flush_at = if keep { rec.alarm_at } else { None };
        let now = self.clock.now();
        let written_version = Self::version_after(expected);
        batch.extend(Self::persist(expected, &key, keep.then_some(rec), now));
        self.commit(batch, events, will_flush_at, op).await?;
        if let (Some(cache), Some(decoded)) = (&self.cache, decoded) {
            // The batch goes on with the state just written: the next add needs no decode.
            cache.put_decoded(&key, written_version, decoded);
        }
        let flush = flush.map(|end| match end {
            FlushEnd::Flushed => FlushOutcome::Flushed,
            FlushEnd::RetryScheduled(at) => FlushOutcome::RetryScheduled(at),
            FlushEnd::Failed(e) => FlushOutcome::Failed {
                message: e.to_string(),
                next_flush_at: will_flush_at.unwrap_or(now),
            },
            FlushEnd::Exhausted(e) => FlushOutcome::Exhausted {
                message: e.to_string(),
            },
        });
        Ok(AddResult {
            instance: key,
            created,
            event_count,
            will_flush_at,
            flush,
        })
    }

    /// The write of an `add` made inside an application's transaction, to the row read there
    /// (`existing`, locked until that transaction ends): the event folded into the batch as
    /// `add` folds it, nothing else. A batch the event brings to `max_events` is written with
    /// its alarm due now: the scheduler flushes it once the transaction commits
    /// ([`FlushReason::MaxEvents`]), where `add` would flush it inside the call. A row whose
    /// state does not decode is refused as broken (not marked: the caller's transaction may
    /// roll back; the engine marks it when it next reads it).
    #[cfg(feature = "postgres")]
    pub(crate) fn debounce_add_write(
        &self,
        job: &str,
        key: &InstanceKey,
        existing: Option<InstanceRecord>,
        event: Input,
    ) -> Result<(crate::store::WriteBatch, AddResult)> {
        let op = Operation::Add;
        let h = self.debounce_handler(job)?;
        let event = h.decode_event(event)?;
        let prior = match &existing {
            Some(rec) => {
                if let Some(why) = &rec.broken {
                    return Err(super::broken_error(key, op, why));
                }
                let json = rec.state.as_deref().unwrap_or("null");
                let decoded = h
                    .decode_state(json, rec.state_version)
                    .map_err(|why| super::broken_error(key, op, &why))?;
                Some(decoded.state)
            }
            None => None,
        };
        let now = self.clock.now();
        let config = h.config();
        let expected = existing.as_ref().map(|r| r.version);
        let created = existing.is_none();
        let mut rec = existing.unwrap_or_else(|| {
            let mut r = InstanceRecord::new(key.clone(), now);
            r.batch_started_at = Some(now);
            r
        });
        let event_count = rec.event_count + 1;
        let ctx = EventContext {
            instance: key.clone(),
            event_count,
            now,
        };
        let (state, _) = h.fold(prior, event, &ctx)?;
        self.check_size(&state, ValidationTarget::State, job)?;
        fold_into_row(config, h.state_version(), &mut rec, state, event_count, now);
        if config.max_events.is_some_and(|max| event_count >= max) {
            rec.alarm_at = Some(now);
        }
        let will_flush_at = rec.alarm_at;
        let mut batch: crate::store::WriteBatch = Self::persist(expected, key, Some(rec), now)
            .into_iter()
            .collect();
        self.claims.version_inserts(&mut batch, now);
        Ok((
            batch,
            AddResult {
                instance: key.clone(),
                created,
                event_count,
                will_flush_at,
                flush: None,
            },
        ))
    }

    pub(crate) async fn debounce_flush(&self, job: &str, id: &str) -> Result<FlushResult> {
        let op = Operation::Flush;
        let _active = self.enter(op)?;
        let h = self.debounce_handler(job)?;
        let key = self.key(JobKind::Debounce, job, id)?;
        self.retrying(op, || self.debounce_flush_once(&h, &key))
            .await
    }

    async fn debounce_flush_once(
        &self,
        h: &Arc<dyn DebounceHandler<A>>,
        key: &InstanceKey,
    ) -> Result<FlushResult> {
        let op = Operation::Flush;
        let key = key.clone();
        let _lock = self.lock(&key, op).await?;
        let mut rec = self.load_existing(&key, op).await?;
        let state = match self.stored_state_or(h.as_ref(), &rec, "null", op).await? {
            Stored::State(decoded) => decoded.state,
            Stored::Broken(e) => return Err(e),
        };
        let mut expected = Some(rec.version);
        let _claim = self
            .claim_for_execution(&mut rec, &mut expected, op)
            .await?;
        let event_count = rec.event_count;
        let mut events = self.events();
        let end = self
            .run_flush(h, &mut rec, state, FlushReason::Manual, op, &mut events)
            .await;
        let (keep, result) = match end {
            FlushEnd::Flushed => (false, Ok((true, false))),
            FlushEnd::RetryScheduled(_) => (true, Ok((false, true))),
            FlushEnd::Failed(e) => (true, Err(execution_error(&key, op, e))),
            FlushEnd::Exhausted(e) => (false, Err(execution_error(&key, op, e))),
        };
        let will_flush_at = if keep { rec.alarm_at } else { None };
        let now = self.clock.now();
        let write = Self::persist(expected, &key, keep.then_some(rec), now);
        self.commit(write.into_iter().collect(), events, will_flush_at, op)
            .await?;
        let (flushed, retry_scheduled) = result?;
        Ok(FlushResult {
            instance: key,
            flushed,
            event_count,
            retry_scheduled,
            will_flush_at,
        })
    }

    pub(crate) async fn debounce_clear(&self, job: &str, id: &str) -> Result<ClearResult> {
        let op = Operation::Clear;
        let _active = self.enter(op)?;
        self.debounce_handler(job)?;
        let key = self.key(JobKind::Debounce, job, id)?;
        self.retrying(op, || self.debounce_clear_once(&key)).await
    }

    async fn debounce_clear_once(&self, key: &InstanceKey) -> Result<ClearResult> {
        let op = Operation::Clear;
        let key = key.clone();
        let _lock = self.lock(&key, op).await?;
        let rec = self.load_existing(&key, op).await?;
        let now = self.clock.now();
        let write = Self::persist(Some(rec.version), &key, None, now);
        self.commit(write.into_iter().collect(), self.events(), None, op)
            .await?;
        Ok(ClearResult {
            instance: key,
            discarded_events: rec.event_count,
        })
    }

    pub(crate) async fn debounce_status(&self, job: &str, id: &str) -> Result<DebounceStatus> {
        let key = self.key(JobKind::Debounce, job, id)?;
        Ok(match self.load(&key, Operation::Status).await? {
            None => DebounceStatus {
                status: DebounceState::NotFound,
                event_count: 0,
                started_at: None,
                will_flush_at: None,
                attempt: 0,
                broken: None,
            },
            Some(rec) => DebounceStatus {
                status: if rec.broken.is_some() {
                    DebounceState::Broken
                } else if rec.retry_attempt > 1 {
                    DebounceState::Retrying
                } else {
                    DebounceState::Debouncing
                },
                event_count: rec.event_count,
                started_at: rec.batch_started_at,
                will_flush_at: self.pending_alarm(&rec),
                attempt: rec.retry_attempt.max(1),
                broken: rec.broken,
            },
        })
    }

    pub(crate) async fn debounce_alarm(
        &self,
        h: Arc<dyn DebounceHandler<A>>,
        mut rec: InstanceRecord,
    ) -> Result<()> {
        let op = Operation::Alarm;
        let state = match self.stored_state_or(h.as_ref(), &rec, "null", op).await? {
            Stored::State(decoded) => decoded.state,
            // Nothing ran; the alarm waits for a repair.
            Stored::Broken(_) => return Ok(()),
        };
        let expected = rec.version;
        let now = self.clock.now();
        let config = h.config();
        let reason = alarm_reason(config, &rec, now);
        let mut events = self.events();
        let key = rec.key.clone();
        let end = self
            .run_flush(&h, &mut rec, state, reason, op, &mut events)
            .await;
        let keep = matches!(end, FlushEnd::RetryScheduled(_) | FlushEnd::Failed(_));
        if let FlushEnd::Failed(e) | FlushEnd::Exhausted(e) = &end {
            tracing::warn!(instance = %key, error = %e, "debounce flush failed");
        }
        let alarm = if keep { rec.alarm_at } else { None };
        let now = self.clock.now();
        let write = Self::persist(Some(expected), &key, keep.then_some(rec), now);
        self.commit(write.into_iter().collect(), events, alarm, op)
            .await
    }

    /// Runs `execute` on the batch (`state` is `rec`'s, decoded) and records the outcome in
    /// `rec` and `events`.
    async fn run_flush(
        &self,
        h: &Arc<dyn DebounceHandler<A>>,
        rec: &mut InstanceRecord,
        state: DecodedState,
        reason: FlushReason,
        op: Operation,
        events: &mut Events,
    ) -> FlushEnd {
        let key = rec.key.clone();
        let attempt = rec.retry_attempt.max(1);
        let started = self.clock.now();
        if attempt == 1 {
            rec.retry_started_at = Some(started);
        }
        let batch_started = rec.batch_started_at.unwrap_or(rec.created_at);
        let meta = FlushMeta {
            instance: key.clone(),
            event_count: rec.event_count,
            started_at: batch_started,
            reason,
            attempt,
            now: started,
        };
        let stopwatch = metrics::Stopwatch::start();
        let result = self
            .user_code(&key, op, h.flush(state, meta, &self.app))
            .await
            .unwrap_or_else(|panicked| Err(panicked.into()));
        stopwatch.executed(key.kind(), key.job(), result.is_ok());
        let now = self.clock.now();
        let event_count = rec.event_count;
        match result {
            Ok(()) => {
                let duration_ms = now.saturating_duration_since(started).as_millis() as u64;
                events.push(&key, now, || EventKind::Executed {
                    run_count: 0,
                    duration_ms,
                    attempt,
                    pre_execution_state: None,
                });
                let batch_ms = now.saturating_duration_since(batch_started).as_millis() as u64;
                events.push(&key, now, || EventKind::DebounceFlushed {
                    event_count,
                    reason,
                    duration_ms: batch_ms,
                });
                FlushEnd::Flushed
            }
            Err(error) => {
                let failure = self
                    .fail_attempt(h.as_ref(), rec, attempt, 0, &error, None, events, op)
                    .await;
                match failure {
                    Failure::Retry(at) => FlushEnd::RetryScheduled(at),
                    Failure::NoPolicy => {
                        // The kept batch gets a fresh window: later adds must not pull the
                        // flush back to the original (already passed) deadline.
                        rec.batch_started_at = Some(now);
                        rec.last_event_at = None;
                        rec.alarm_at = Some(now + h.config().flush_after);
                        FlushEnd::Failed(error)
                    }
                    Failure::Exhausted { .. } => FlushEnd::Exhausted(error),
                }
            }
        }
    }
}
