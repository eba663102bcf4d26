//! Continuous jobs: start, trigger, terminate, status, and the alarm that runs them.
//!
//! A run that fails without a retry policy keeps the cadence: the next run is scheduled as
//! after a success, and the caller (if any) gets the error. After downtime or a clock jump the
//! missed runs collapse into one run, and the cadence restarts from its end.

use std::sync::Arc;

use super::erased::{ContinuousHandler, Decoded, Input, RunMeta, RunOutcome};
use super::{execution_error, state_json, Events, Failure, Handler, Inner, Stored};
use crate::error::{BoxError, Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::job::continuous::ContinuousConfig;
use crate::metrics;
use crate::store::InstanceRecord;
use crate::telemetry::EventKind;
use crate::time::Timestamp;

/// Whether a continuous instance exists and what it is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ContinuousState {
    /// Scheduled on its cadence (or running now).
    Running,
    /// A failed run is waiting for its retry.
    Retrying,
    /// It ended during this call (`ctx.terminate` in the first run).
    Terminated,
    /// Its stored state does not decode (even after migration): it does not run until a
    /// deploy that decodes it starts, or it is terminated. `status` says why.
    Broken,
    /// There is no such instance.
    NotFound,
}

/// The answer to `start`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StartResult {
    /// The instance.
    pub instance: InstanceKey,
    /// Whether this call created it (`false`: it existed and was left unchanged).
    pub created: bool,
    /// Its state after the call.
    pub status: ContinuousState,
    /// When it runs next.
    pub next_run_at: Option<Timestamp>,
}

/// The answer to `trigger`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TriggerResult {
    /// The instance.
    pub instance: InstanceKey,
    /// The run called `ctx.terminate`: the instance is gone.
    pub terminated: bool,
    /// The run failed and a retry is scheduled.
    pub retry_scheduled: bool,
    /// When it runs next.
    pub next_run_at: Option<Timestamp>,
}

/// The answer to `terminate`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TerminateResult {
    /// The instance, now deleted.
    pub instance: InstanceKey,
    /// The reason given.
    pub reason: Option<String>,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ContinuousStatus {
    /// Whether it exists and what it is doing.
    pub status: ContinuousState,
    /// Runs so far (retries do not count).
    pub run_count: u64,
    /// When it runs next (the retry time while retrying; `None` while it runs).
    pub next_run_at: Option<Timestamp>,
    /// The attempt the next run makes.
    pub attempt: u32,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// Why it is broken, when it is.
    pub broken: Option<String>,
}

impl ContinuousStatus {
    /// Whether there is no such instance.
    pub fn is_not_found(&self) -> bool {
        self.status == ContinuousState::NotFound
    }
}

/// How one run ended.
enum RunEnd {
    Succeeded,
    Terminated(String),
    RetryScheduled,
    Failed(BoxError),
    Exhausted(BoxError),
}

impl<A: Send + Sync + 'static> Inner<A> {
    fn continuous_handler(&self, name: &str) -> Result<Arc<dyn ContinuousHandler<A>>> {
        match self.handler(name)? {
            Handler::Continuous(h) => Ok(h.clone()),
            _ => Err(Error::JobNotFound {
                name: name.to_owned(),
            }),
        }
    }

    fn next_run(
        &self,
        config: &ContinuousConfig,
        key: &InstanceKey,
        after: Timestamp,
    ) -> Result<Timestamp> {
        config
            .schedule
            .next_after(after)
            .ok_or_else(|| Error::Scheduler {
                operation: "schedule",
                message: format!("the schedule of {key} has no run after {after}"),
            })
    }

    pub(crate) async fn continuous_start(
        &self,
        job: &str,
        id: &str,
        input: Input,
    ) -> Result<StartResult> {
        let op = Operation::Start;
        let _active = self.enter(op)?;
        let h = self.continuous_handler(job)?;
        let key = self.key(JobKind::Continuous, job, id)?;
        let mut input = self.retain(input, |input| {
            let (state, _) = h
                .encode_input(input)
                .map_err(|m| Error::validation(ValidationTarget::Input, Some(job), m))?;
            // Stored states read back (`json::encode` checks it), so this JSON does too.
            serde_json::from_str(&state)
                .map(Ok)
                .map_err(|e| Error::validation(ValidationTarget::Input, Some(job), e.to_string()))
        })?;
        self.retrying(op, || {
            let input = input.next(job);
            self.continuous_start_once(&h, &key, input)
        })
        .await
    }

    async fn continuous_start_once(
        &self,
        h: &Arc<dyn ContinuousHandler<A>>,
        key: &InstanceKey,
        input: Result<Input>,
    ) -> Result<StartResult> {
        let op = Operation::Start;
        let job = key.job();
        let (state, decoded) = h
            .encode_input(input?)
            .map_err(|m| Error::validation(ValidationTarget::Input, Some(job), m))?;
        self.check_size(&state, ValidationTarget::Input, job)?;
        let _lock = self.lock(key, op).await?;
        if let Some(rec) = self.load_for_action(key, op).await? {
            return Ok(StartResult {
                status: status_of(&rec),
                next_run_at: rec.alarm_at,
                instance: key.clone(),
                created: false,
            });
        }
        let key = key.clone();
        let now = self.clock.now();
        let config = h.config();
        let mut rec = InstanceRecord::new(key.clone(), now);
        let mut events = self.events();
        events.push(&key, now, || EventKind::Started {
            input: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
        });
        rec.state = Some(state);
        rec.state_version = h.state_version();
        if !config.start_immediately {
            rec.alarm_at = Some(self.next_run(config, &key, now)?);
            let at = rec.alarm_at;
            let write = Self::persist(None, &key, Some(rec), now);
            self.commit(write.into_iter().collect(), events, at, op)
                .await?;
            return Ok(StartResult {
                instance: key,
                created: true,
                status: ContinuousState::Running,
                next_run_at: at,
            });
        }
        rec.run_count = 1;
        let mut expected = None;
        let _claim = self
            .claim_for_execution(&mut rec, &mut expected, op)
            .await?;
        let decoded = Decoded {
            state: decoded,
            migrated: false,
        };
        let end = self
            .run_continuous(h, &mut rec, decoded, op, &mut events)
            .await;
        let (result, next) = self.finish_run(h, expected, rec, end, events, op).await?;
        match result {
            Ok(terminated) => Ok(StartResult {
                instance: key,
                created: true,
                status: if terminated {
                    ContinuousState::Terminated
                } else {
                    next.1
                },
                next_run_at: next.0,
            }),
            Err(e) => Err(e),
        }
    }

    /// The row a `start` made inside an application's transaction inserts, built before any
    /// SQL: the input encoded and checked as `start` checks it, and the first run as its alarm.
    /// With `start_immediately` the alarm is due now and the scheduler makes the first run once
    /// the transaction commits, where `start` would make it inside the call.
    #[cfg(feature = "postgres")]
    pub(crate) fn continuous_start_row(
        &self,
        job: &str,
        key: &InstanceKey,
        input: Input,
    ) -> Result<crate::store::WriteBatch> {
        let h = self.continuous_handler(job)?;
        let (state, _) = h
            .encode_input(input)
            .map_err(|m| Error::validation(ValidationTarget::Input, Some(job), m))?;
        self.check_size(&state, ValidationTarget::Input, job)?;
        let now = self.clock.now();
        let config = h.config();
        let mut rec = InstanceRecord::new(key.clone(), now);
        rec.state = Some(state);
        rec.state_version = h.state_version();
        rec.alarm_at = Some(if config.start_immediately {
            now
        } else {
            self.next_run(config, key, now)?
        });
        let mut batch: crate::store::WriteBatch = Self::persist(None, key, Some(rec), now)
            .into_iter()
            .collect();
        self.claims.version_inserts(&mut batch, now);
        Ok(batch)
    }

    /// What `start` inside an application's transaction answers for the instance's row:
    /// inserted by the call (`created`) or found.
    #[cfg(feature = "postgres")]
    pub(crate) fn continuous_started(&self, rec: &InstanceRecord, created: bool) -> StartResult {
        StartResult {
            instance: rec.key.clone(),
            created,
            status: status_of(rec),
            next_run_at: self.pending_alarm(rec),
        }
    }

    pub(crate) async fn continuous_trigger(&self, job: &str, id: &str) -> Result<TriggerResult> {
        let op = Operation::Trigger;
        let _active = self.enter(op)?;
        let h = self.continuous_handler(job)?;
        let key = self.key(JobKind::Continuous, job, id)?;
        self.retrying(op, || self.continuous_trigger_once(&h, &key))
            .await
    }

    async fn continuous_trigger_once(
        &self,
        h: &Arc<dyn ContinuousHandler<A>>,
        key: &InstanceKey,
    ) -> Result<TriggerResult> {
        let op = Operation::Trigger;
        let _lock = self.lock(key, op).await?;
        let mut rec = self.load_existing(key, op).await?;
        let state = match self.stored_state_or(h.as_ref(), &rec, "null", op).await? {
            Stored::State(state) => state,
            Stored::Broken(e) => return Err(e),
        };
        let mut expected = Some(rec.version);
        let _claim = self
            .claim_for_execution(&mut rec, &mut expected, op)
            .await?;
        // A manual run starts a fresh attempt sequence; a pending retry is abandoned.
        super::clear_retry(&mut rec);
        rec.run_count += 1;
        let mut events = self.events();
        let end = self
            .run_continuous(h, &mut rec, state, op, &mut events)
            .await;
        let retry_scheduled = matches!(end, RunEnd::RetryScheduled);
        let (result, next) = self.finish_run(h, expected, rec, end, events, op).await?;
        let terminated = result?;
        Ok(TriggerResult {
            instance: key.clone(),
            terminated,
            retry_scheduled,
            next_run_at: next.0,
        })
    }

    pub(crate) async fn continuous_terminate(
        &self,
        job: &str,
        id: &str,
        reason: Option<String>,
    ) -> Result<TerminateResult> {
        let op = Operation::Terminate;
        let _active = self.enter(op)?;
        self.continuous_handler(job)?;
        let key = self.key(JobKind::Continuous, job, id)?;
        self.retrying(op, || self.continuous_terminate_once(&key, reason.clone()))
            .await
    }

    async fn continuous_terminate_once(
        &self,
        key: &InstanceKey,
        reason: Option<String>,
    ) -> Result<TerminateResult> {
        let op = Operation::Terminate;
        let _lock = self.lock(key, op).await?;
        let rec = self.load_existing(key, op).await?;
        let now = self.clock.now();
        let mut events = self.events();
        events.push(key, now, || EventKind::Terminated {
            reason: reason.clone(),
            run_count: rec.run_count,
        });
        let write = Self::persist(Some(rec.version), key, None, now);
        self.commit(write.into_iter().collect(), events, None, op)
            .await?;
        Ok(TerminateResult {
            instance: key.clone(),
            reason,
        })
    }

    pub(crate) async fn continuous_status(&self, job: &str, id: &str) -> Result<ContinuousStatus> {
        let key = self.key(JobKind::Continuous, job, id)?;
        Ok(match self.load(&key, Operation::Status).await? {
            None => ContinuousStatus {
                status: ContinuousState::NotFound,
                run_count: 0,
                next_run_at: None,
                attempt: 0,
                created_at: None,
                broken: None,
            },
            Some(rec) => ContinuousStatus {
                status: status_of(&rec),
                run_count: rec.run_count,
                next_run_at: self.pending_alarm(&rec),
                attempt: rec.retry_attempt.max(1),
                created_at: Some(rec.created_at),
                broken: rec.broken,
            },
        })
    }

    pub(crate) async fn continuous_alarm(
        &self,
        h: Arc<dyn ContinuousHandler<A>>,
        mut rec: InstanceRecord,
    ) -> Result<()> {
        let op = Operation::Alarm;
        let state = match self.stored_state_or(h.as_ref(), &rec, "null", op).await? {
            Stored::State(state) => state,
            // Nothing ran and nothing is counted; the alarm waits for a repair.
            Stored::Broken(_) => return Ok(()),
        };
        let expected = rec.version;
        if rec.retry_attempt <= 1 {
            rec.run_count += 1;
        }
        let mut events = self.events();
        let end = self
            .run_continuous(&h, &mut rec, state, op, &mut events)
            .await;
        let key = rec.key.clone();
        let (result, _) = self
            .finish_run(&h, Some(expected), rec, end, events, op)
            .await?;
        if let Err(e) = result {
            tracing::warn!(instance = %key, error = %e, "continuous run failed");
        }
        Ok(())
    }

    /// Runs `execute` once on `state` (`rec`'s, decoded) and records the outcome in `rec` and
    /// `events`.
    async fn run_continuous(
        &self,
        h: &Arc<dyn ContinuousHandler<A>>,
        rec: &mut InstanceRecord,
        state: Decoded,
        op: Operation,
        events: &mut Events,
    ) -> RunEnd {
        let key = rec.key.clone();
        let attempt = rec.retry_attempt.max(1);
        let started = self.clock.now();
        if attempt == 1 {
            rec.retry_started_at = Some(started);
        }
        let pre_state = state_json(rec, events);
        let meta = RunMeta {
            instance: key.clone(),
            run_count: rec.run_count,
            attempt,
            now: started,
        };
        let stopwatch = metrics::Stopwatch::start();
        let outcome = self
            .user_code(&key, op, h.run(state, meta, &self.app))
            .await
            .unwrap_or_else(|panicked| RunOutcome {
                result: Err(panicked.into()),
                state: None,
                terminate: None,
            });
        stopwatch.executed(key.kind(), key.job(), outcome.result.is_ok());
        let now = self.clock.now();
        let duration_ms = now.saturating_duration_since(started).as_millis() as u64;
        if let Some(reason) = outcome.terminate {
            return RunEnd::Terminated(reason);
        }
        match outcome.result {
            Ok(()) => {
                if let Some(s) = outcome.state {
                    if let Err(e) = self.check_size(&s, ValidationTarget::State, key.job()) {
                        return self
                            .continuous_failure(h, rec, attempt, e.into(), pre_state, events)
                            .await;
                    }
                    rec.state = Some(s);
                    rec.state_version = h.state_version();
                }
                super::clear_retry(rec);
                let run_count = rec.run_count;
                events.push(&key, now, || EventKind::Executed {
                    run_count,
                    duration_ms,
                    attempt,
                    pre_execution_state: pre_state,
                });
                RunEnd::Succeeded
            }
            Err(e) => {
                self.continuous_failure(h, rec, attempt, e, pre_state, events)
                    .await
            }
        }
    }

    async fn continuous_failure(
        &self,
        h: &Arc<dyn ContinuousHandler<A>>,
        rec: &mut InstanceRecord,
        attempt: u32,
        error: BoxError,
        pre_state: Option<serde_json::Value>,
        events: &mut Events,
    ) -> RunEnd {
        let run_count = rec.run_count;
        let failure = self
            .fail_attempt(
                h.as_ref(),
                rec,
                attempt,
                run_count,
                &error,
                pre_state,
                events,
                Operation::Alarm,
            )
            .await;
        match failure {
            Failure::Retry(_) => RunEnd::RetryScheduled,
            Failure::NoPolicy => RunEnd::Failed(error),
            Failure::Exhausted { .. } => RunEnd::Exhausted(error),
        }
    }

    /// Schedules what follows a run and commits it. Returns whether the instance ended
    /// (or the run's error) and the next run time with the resulting state.
    async fn finish_run(
        &self,
        h: &Arc<dyn ContinuousHandler<A>>,
        expected: Option<u64>,
        mut rec: InstanceRecord,
        end: RunEnd,
        mut events: Events,
        op: Operation,
    ) -> Result<(Result<bool>, (Option<Timestamp>, ContinuousState))> {
        let key = rec.key.clone();
        let now = self.clock.now();
        let (keep, outcome) = match end {
            RunEnd::Succeeded => {
                rec.alarm_at = Some(self.next_run(h.config(), &key, now)?);
                (true, Ok(false))
            }
            RunEnd::RetryScheduled => (true, Ok(false)),
            RunEnd::Failed(e) => {
                rec.alarm_at = Some(self.next_run(h.config(), &key, now)?);
                (true, Err(execution_error(&key, op, e)))
            }
            RunEnd::Terminated(reason) => {
                let run_count = rec.run_count;
                events.push(&key, now, || EventKind::Terminated {
                    reason: Some(reason),
                    run_count,
                });
                (false, Ok(true))
            }
            RunEnd::Exhausted(e) => (false, Err(execution_error(&key, op, e))),
        };
        let next = if keep {
            (rec.alarm_at, status_of(&rec))
        } else {
            (None, ContinuousState::NotFound)
        };
        let alarm = if keep { rec.alarm_at } else { None };
        let write = Self::persist(expected, &key, keep.then_some(rec), now);
        self.commit(write.into_iter().collect(), events, alarm, op)
            .await?;
        Ok((outcome, next))
    }
}

fn status_of(rec: &InstanceRecord) -> ContinuousState {
    if rec.broken.is_some() {
        ContinuousState::Broken
    } else if rec.retry_attempt > 1 {
        ContinuousState::Retrying
    } else {
        ContinuousState::Running
    }
}
