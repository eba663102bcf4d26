//! Task jobs: send, trigger, terminate, status, and the alarm that runs `execute`.
//!
//! The stored schedule is consumed when its alarm fires, so after an `execute` that does not
//! reschedule the task is idle and `on_idle` runs. An invocation that fails and is not rescued
//! by `on_error` changes nothing; the caller gets the error (on the alarm path it is reported
//! as `job.failed` and the task is left idle).

use std::sync::Arc;

use super::erased::{Decoded, Input, Invocation, TaskHandler, TaskMeta, TaskOutcome};
use super::{execution_error, state_json, Events, Handler, Inner, Stored};
use crate::error::{Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::metrics;
use crate::store::{InstanceRecord, Write};
use crate::telemetry::EventKind;
use crate::time::Timestamp;

/// Whether a task instance exists and whether it has a schedule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskState {
    /// `execute` is scheduled.
    Active,
    /// Nothing is scheduled; the task waits for events.
    Idle,
    /// Its stored state does not decode (even after migration): it takes no events and its
    /// schedule does not fire until a deploy that decodes it starts, or it is terminated.
    /// `status` says why.
    Broken,
    /// There is no such instance.
    NotFound,
}

/// The answer to `send`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SendResult {
    /// The instance.
    pub instance: InstanceKey,
    /// Whether this event created it.
    pub created: bool,
    /// When `execute` is scheduled, if it is.
    pub scheduled_at: Option<Timestamp>,
    /// A handler called `terminate`: the instance is gone.
    pub terminated: bool,
}

/// The answer to task `trigger`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TaskTriggerResult {
    /// The instance.
    pub instance: InstanceKey,
    /// When `execute` is scheduled next, if it is.
    pub scheduled_at: Option<Timestamp>,
    /// A handler called `terminate`: the instance is gone.
    pub terminated: bool,
}

/// The answer to task `status`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TaskStatus {
    /// Whether it exists and whether it is scheduled.
    pub status: TaskState,
    /// When `execute` is scheduled.
    pub scheduled_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// Events received.
    pub event_count: u64,
    /// Executions so far.
    pub execute_count: u64,
    /// Why it is broken, when it is.
    pub broken: Option<String>,
}

impl TaskStatus {
    /// Whether there is no such instance.
    pub fn is_not_found(&self) -> bool {
        self.status == TaskState::NotFound
    }
}

/// What an invocation left to commit.
struct Applied {
    keep: bool,
    terminated: bool,
    error: Option<Error>,
}

impl<A: Send + Sync + 'static> Inner<A> {
    fn task_handler(&self, name: &str) -> Result<Arc<dyn TaskHandler<A>>> {
        match self.handler(name)? {
            Handler::Task(h) => Ok(h.clone()),
            _ => Err(Error::JobNotFound {
                name: name.to_owned(),
            }),
        }
    }

    pub(crate) async fn task_send(
        &self,
        job: &str,
        id: &str,
        event: Input,
        event_id: Option<&str>,
    ) -> Result<SendResult> {
        let op = Operation::Send;
        let _active = self.enter(op)?;
        let h = self.task_handler(job)?;
        let key = self.key(JobKind::Task, job, id)?;
        self.check_event_id(job, event_id)?;
        let mut event = self.retain(event, |event| h.event_json(event))?;
        self.retrying(op, || {
            let event = event.next(job);
            self.task_send_once(&h, &key, event, event_id)
        })
        .await
    }

    async fn task_send_once(
        &self,
        h: &Arc<dyn TaskHandler<A>>,
        key: &InstanceKey,
        event: Result<Input>,
        event_id: Option<&str>,
    ) -> Result<SendResult> {
        let op = Operation::Send;
        let key = key.clone();
        let event = h.decode_event(event?)?;
        let _lock = self.lock(&key, op).await?;
        let existing = self.load_for_action(&key, op).await?;
        self.ensure_new_event(&key, event_id, op).await?;
        let state = match &existing {
            Some(rec) => match self.stored_state(h.as_ref(), rec, op).await? {
                Stored::State(state) => state,
                Stored::Broken(e) => return Err(e),
            },
            None => None,
        };
        let now = self.clock.now();
        let mut expected = existing.as_ref().map(|r| r.version);
        let created = existing.is_none();
        let mut rec = existing.unwrap_or_else(|| InstanceRecord::new(key.clone(), now));
        // The handlers run on the instance: on a shared store, no other process runs it
        // meanwhile. (A new instance is inserted claimed; if its event is refused, the row
        // is deleted again below.)
        let claim = self
            .claim_for_execution(&mut rec, &mut expected, op)
            .await?;
        let release = self.release_write(&claim, &rec, created);
        rec.event_count += 1;
        let mut events = self.events();
        let stored = if created { None } else { rec.alarm_at };
        let applied = self
            .invoke_task(
                h,
                &mut rec,
                state,
                Invocation::Event(event),
                stored,
                op,
                &mut events,
            )
            .await;
        if let Some(e) = applied.error {
            // Nothing of the failed invocation is kept; only its `job.failed` is recorded (and
            // a claim released).
            self.commit(release.into_iter().collect(), events, None, op)
                .await?;
            return Err(e);
        }
        let mut batch = Vec::with_capacity(2);
        if let Some(event_id) = event_id {
            batch.push(Write::RecordEvent {
                key: key.clone(),
                event_id: event_id.to_owned(),
                at: now,
            });
        }
        let scheduled_at = if applied.keep { rec.alarm_at } else { None };
        batch.extend(Self::persist(
            expected,
            &key,
            applied.keep.then_some(rec),
            self.clock.now(),
        ));
        self.commit(batch, events, scheduled_at, op).await?;
        Ok(SendResult {
            instance: key,
            created,
            scheduled_at,
            terminated: applied.terminated,
        })
    }

    pub(crate) async fn task_trigger(&self, job: &str, id: &str) -> Result<TaskTriggerResult> {
        let op = Operation::Trigger;
        let _active = self.enter(op)?;
        let h = self.task_handler(job)?;
        let key = self.key(JobKind::Task, job, id)?;
        self.retrying(op, || self.task_trigger_once(&h, &key)).await
    }

    async fn task_trigger_once(
        &self,
        h: &Arc<dyn TaskHandler<A>>,
        key: &InstanceKey,
    ) -> Result<TaskTriggerResult> {
        let op = Operation::Trigger;
        let key = key.clone();
        let _lock = self.lock(&key, op).await?;
        let mut rec = self.load_existing(&key, op).await?;
        let state = match self.stored_state(h.as_ref(), &rec, op).await? {
            Stored::State(state) => state,
            Stored::Broken(e) => return Err(e),
        };
        let mut expected = Some(rec.version);
        let claim = self
            .claim_for_execution(&mut rec, &mut expected, op)
            .await?;
        let release = self.release_write(&claim, &rec, false);
        rec.execute_count += 1;
        let mut events = self.events();
        // A manual run leaves a pending schedule in place unless the handler changes it.
        let stored = rec.alarm_at;
        let applied = self
            .invoke_task(
                h,
                &mut rec,
                state,
                Invocation::Execute,
                stored,
                op,
                &mut events,
            )
            .await;
        if let Some(e) = applied.error {
            self.commit(release.into_iter().collect(), events, None, op)
                .await?;
            return Err(e);
        }
        let scheduled_at = if applied.keep { rec.alarm_at } else { None };
        let write = Self::persist(
            expected,
            &key,
            applied.keep.then_some(rec),
            self.clock.now(),
        );
        self.commit(write.into_iter().collect(), events, scheduled_at, op)
            .await?;
        Ok(TaskTriggerResult {
            instance: key,
            scheduled_at,
            terminated: applied.terminated,
        })
    }

    pub(crate) async fn task_terminate(&self, job: &str, id: &str) -> Result<InstanceKey> {
        let op = Operation::Terminate;
        let _active = self.enter(op)?;
        self.task_handler(job)?;
        let key = self.key(JobKind::Task, job, id)?;
        self.retrying(op, || self.task_terminate_once(&key)).await
    }

    async fn task_terminate_once(&self, key: &InstanceKey) -> Result<InstanceKey> {
        let op = Operation::Terminate;
        let key = key.clone();
        let _lock = self.lock(&key, op).await?;
        let rec = self.load_existing(&key, op).await?;
        let now = self.clock.now();
        let mut events = self.events();
        events.push(&key, now, || EventKind::Terminated {
            reason: None,
            run_count: rec.execute_count,
        });
        let write = Self::persist(Some(rec.version), &key, None, now);
        self.commit(write.into_iter().collect(), events, None, op)
            .await?;
        Ok(key)
    }

    pub(crate) async fn task_status(&self, job: &str, id: &str) -> Result<TaskStatus> {
        let key = self.key(JobKind::Task, job, id)?;
        Ok(match self.load(&key, Operation::Status).await? {
            None => TaskStatus {
                status: TaskState::NotFound,
                scheduled_at: None,
                created_at: None,
                event_count: 0,
                execute_count: 0,
                broken: None,
            },
            Some(rec) => {
                // While an execution holds the alarm, its schedule is consumed.
                let scheduled_at = self.pending_alarm(&rec);
                TaskStatus {
                    status: if rec.broken.is_some() {
                        TaskState::Broken
                    } else if scheduled_at.is_some() {
                        TaskState::Active
                    } else {
                        TaskState::Idle
                    },
                    scheduled_at,
                    created_at: Some(rec.created_at),
                    event_count: rec.event_count,
                    execute_count: rec.execute_count,
                    broken: rec.broken,
                }
            }
        })
    }

    pub(crate) async fn task_alarm(
        &self,
        h: Arc<dyn TaskHandler<A>>,
        mut rec: InstanceRecord,
    ) -> Result<()> {
        let op = Operation::Alarm;
        let state = match self.stored_state(h.as_ref(), &rec, op).await? {
            Stored::State(state) => state,
            // Nothing ran and nothing is counted; the alarm waits for a repair.
            Stored::Broken(_) => return Ok(()),
        };
        let expected = rec.version;
        let key = rec.key.clone();
        // The alarm is consumed: the schedule that fired is no longer in effect.
        rec.alarm_at = None;
        rec.execute_count += 1;
        let mut events = self.events();
        let mut after = rec.clone();
        let applied = self
            .invoke_task(
                &h,
                &mut after,
                state,
                Invocation::Execute,
                None,
                op,
                &mut events,
            )
            .await;
        let (keep, record) = match &applied.error {
            Some(e) => {
                tracing::warn!(instance = %key, error = %e, "task execute failed");
                (true, rec)
            }
            None => (applied.keep, after),
        };
        let alarm = if keep { record.alarm_at } else { None };
        let write = Self::persist(
            Some(expected),
            &key,
            keep.then_some(record),
            self.clock.now(),
        );
        self.commit(write.into_iter().collect(), events, alarm, op)
            .await
    }

    /// Runs one invocation on `state` (`rec`'s, decoded) and applies its outcome to `rec` and
    /// `events`.
    #[allow(clippy::too_many_arguments)]
    async fn invoke_task(
        &self,
        h: &Arc<dyn TaskHandler<A>>,
        rec: &mut InstanceRecord,
        state: Option<Decoded>,
        invocation: Invocation,
        stored_schedule: Option<Timestamp>,
        op: Operation,
        events: &mut Events,
    ) -> Applied {
        let key = rec.key.clone();
        let started = self.clock.now();
        let pre_state = state_json(rec, events);
        let meta = TaskMeta {
            instance: key.clone(),
            event_count: rec.event_count,
            execute_count: rec.execute_count,
            created_at: rec.created_at,
            now: started,
            stored_schedule,
        };
        // A panicking handler fails the invocation; it does not reach `on_error`, whose error
        // parameter has the job's error type.
        let stopwatch = metrics::Stopwatch::start();
        let outcome = self
            .user_code(&key, op, h.invoke(invocation, state, meta, &self.app))
            .await
            .unwrap_or_else(|panicked| TaskOutcome::Failed(panicked.into()));
        stopwatch.executed(
            key.kind(),
            key.job(),
            !matches!(outcome, TaskOutcome::Failed(_)),
        );
        let now = self.clock.now();
        let run_count = rec.execute_count;
        match outcome {
            TaskOutcome::Terminated => {
                events.push(&key, now, || EventKind::Terminated {
                    reason: None,
                    run_count,
                });
                Applied {
                    keep: false,
                    terminated: true,
                    error: None,
                }
            }
            TaskOutcome::Failed(error) => {
                events.push(&key, now, || EventKind::Failed {
                    message: error.to_string(),
                    run_count,
                    attempt: 1,
                    will_retry: false,
                    pre_execution_state: pre_state,
                });
                Applied {
                    keep: true,
                    terminated: false,
                    error: Some(execution_error(&key, op, error)),
                }
            }
            TaskOutcome::Invalid(e) => Applied {
                keep: true,
                terminated: false,
                error: Some(e),
            },
            TaskOutcome::Done {
                state,
                schedule,
                scheduled,
            } => {
                if let Some(state) = state {
                    if let Err(e) = self.check_size(&state, ValidationTarget::State, key.job()) {
                        return Applied {
                            keep: true,
                            terminated: false,
                            error: Some(e),
                        };
                    }
                    rec.state = Some(state);
                    rec.state_version = h.state_version();
                }
                rec.alarm_at = schedule;
                let duration_ms = now.saturating_duration_since(started).as_millis() as u64;
                events.push(&key, now, || EventKind::Executed {
                    run_count,
                    duration_ms,
                    attempt: 1,
                    pre_execution_state: pre_state,
                });
                for (at, trigger) in scheduled {
                    events.push(&key, now, || EventKind::TaskScheduled {
                        scheduled_at: at,
                        trigger,
                    });
                }
                Applied {
                    keep: true,
                    terminated: false,
                    error: None,
                }
            }
        }
    }
}
