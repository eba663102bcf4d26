//! Task jobs: event-driven state machines that schedule themselves.

use std::future::Future;
use std::time::Duration;

use super::{Job, JobError, Payload};
use crate::id::InstanceKey;
use crate::time::Timestamp;

/// An event-driven state machine: `send` delivers events to `on_event`, which may schedule
/// `execute` for later with [`TaskContext::schedule_in`]; `on_idle` runs when a handler finishes
/// with nothing scheduled; `on_error` may rescue a failed handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[task] job",
    label = "not a #[task] job",
    note = "`client.task::<J>()` takes a job defined with #[task]; a #[continuous] job is reached with `client.continuous::<J>()`, a #[debounce] job with `client.debounce::<J>()`, a #[step_job] with `client.step_job::<J>()`"
)]
pub trait TaskJob<A: Send + Sync + 'static = ()>: Job {
    /// The persisted state; `None` until a handler sets it.
    type State: Payload;
    /// What `send` accepts.
    type Event: Payload;
    /// The error the handlers may return.
    type Error: JobError;

    /// Handles one event.
    fn on_event(
        &self,
        ctx: &mut TaskContext<Self::State>,
        event: Self::Event,
        app: &A,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs when the scheduled time comes, or on `trigger`.
    fn execute(
        &self,
        ctx: &mut TaskContext<Self::State>,
        app: &A,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs after `on_event` or `execute` when nothing is scheduled. Does nothing by default.
    fn on_idle(
        &self,
        ctx: &mut TaskContext<Self::State>,
        reason: IdleReason,
        app: &A,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, reason, app);
        async {}
    }

    /// Runs when `on_event` or `execute` fails. Returning `Ok` rescues the invocation: state
    /// and schedule changes made so far are kept. By default the error goes back to the caller.
    fn on_error(
        &self,
        ctx: &mut TaskContext<Self::State>,
        error: Self::Error,
        source: ErrorSource,
        app: &A,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (ctx, source, app);
        async move { Err(error) }
    }

    /// The version of the shape of [`State`](Self::State) this code writes (default 0). It is
    /// stored with every state; raise it when the shape changes in a way serde defaults do not
    /// cover, and teach [`migrate_state`](Self::migrate_state) the older shapes. See
    /// "Deploys" in `docs/jobs.md`.
    const STATE_VERSION: u32 = 0;

    /// Turns a state stored at an older `version` (below
    /// [`STATE_VERSION`](Self::STATE_VERSION)), given as its raw JSON, into the current state.
    /// Called when the state is read, before any handler sees it; the result is written back,
    /// at `STATE_VERSION`, with the instance's next write. By default the JSON is decoded as it
    /// is, which is enough when new fields have serde defaults. An error leaves the instance
    /// broken until a migration that works is deployed (or it is deleted).
    fn migrate_state(
        &self,
        stored: serde_json::Value,
        version: u32,
    ) -> Result<Self::State, crate::error::BoxError> {
        let _ = version;
        Ok(serde_json::from_value(stored)?)
    }
}

/// Which handler finished with nothing scheduled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IdleReason {
    /// `on_event`.
    Event,
    /// `execute`.
    Execute,
}

/// Which handler failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorSource {
    /// `on_event`.
    Event,
    /// `execute`.
    Execute,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ScheduleChange {
    Unchanged,
    At(Timestamp),
    Cancel,
}

/// What a task's handlers see and change. Changes are buffered and committed together when the
/// invocation ends; a failure that `on_error` does not rescue discards them.
#[derive(Debug)]
pub struct TaskContext<S> {
    pub(crate) state: Option<S>,
    pub(crate) dirty: bool,
    pub(crate) schedule: ScheduleChange,
    pub(crate) stored_schedule: Option<Timestamp>,
    pub(crate) terminate: bool,
    pub(crate) instance: InstanceKey,
    pub(crate) event_count: u64,
    pub(crate) execute_count: u64,
    pub(crate) created_at: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) is_first_event: bool,
}

impl<S> TaskContext<S> {
    /// The state, including changes made earlier in this invocation; `None` until set.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// The state for changing in place; `None` until set.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        if self.state.is_some() {
            self.dirty = true;
        }
        self.state.as_mut()
    }

    /// Replaces the state.
    pub fn set_state(&mut self, state: S) {
        self.dirty = true;
        self.state = Some(state);
    }

    /// Changes the state with `f`; does nothing while there is no state.
    pub fn update_state(&mut self, f: impl FnOnce(&mut S)) {
        if let Some(s) = self.state_mut() {
            f(s);
        }
    }

    /// Schedules `execute` after `delay`, replacing any earlier schedule (last call wins).
    pub fn schedule_in(&mut self, delay: Duration) {
        self.schedule = ScheduleChange::At(self.now + delay);
    }

    /// Schedules `execute` at `at`; a time in the past runs it as soon as possible.
    pub fn schedule_at(&mut self, at: Timestamp) {
        self.schedule = ScheduleChange::At(at);
    }

    /// Cancels the schedule.
    pub fn cancel_schedule(&mut self) {
        self.schedule = ScheduleChange::Cancel;
    }

    /// The schedule in effect, counting changes made in this invocation.
    pub fn scheduled_at(&self) -> Option<Timestamp> {
        match self.schedule {
            ScheduleChange::Unchanged => self.stored_schedule,
            ScheduleChange::At(t) => Some(t),
            ScheduleChange::Cancel => None,
        }
    }

    /// Deletes the instance when the handler returns, whatever it returns.
    pub fn terminate<E>(&mut self) -> Result<(), E> {
        self.terminate = true;
        Ok(())
    }

    /// The instance.
    pub fn instance(&self) -> &InstanceKey {
        &self.instance
    }

    /// The user's id of the instance.
    pub fn id(&self) -> &str {
        self.instance.id()
    }

    /// Events received, counting the current one.
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// Executions, counting the current one.
    pub fn execute_count(&self) -> u64 {
        self.execute_count
    }

    /// When the instance was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When this invocation started.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Whether the instance had no state when this invocation started.
    pub fn is_first_event(&self) -> bool {
        self.is_first_event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobKind;

    fn ctx(state: Option<i32>, stored: Option<Timestamp>) -> TaskContext<i32> {
        TaskContext {
            is_first_event: state.is_none(),
            state,
            dirty: false,
            schedule: ScheduleChange::Unchanged,
            stored_schedule: stored,
            terminate: false,
            instance: InstanceKey::new(JobKind::Task, "t", "1"),
            event_count: 1,
            execute_count: 0,
            created_at: Timestamp::from_millis(0),
            now: Timestamp::from_millis(10_000),
        }
    }

    #[test]
    fn state_is_none_until_set_and_updates_are_no_ops_until_then() {
        let mut c = ctx(None, None);
        assert_eq!(c.state(), None);
        c.update_state(|s| *s += 1);
        assert_eq!(c.state(), None);
        assert!(!c.dirty);
        c.set_state(5);
        c.update_state(|s| *s += 1);
        assert_eq!(c.state(), Some(&6));
        assert!(c.dirty);
    }

    #[test]
    fn the_last_schedule_call_wins_and_is_relative_to_the_invocation_time() {
        let mut c = ctx(Some(1), Some(Timestamp::from_millis(99_000)));
        assert_eq!(c.scheduled_at(), Some(Timestamp::from_millis(99_000)));
        c.schedule_in(Duration::from_secs(5));
        assert_eq!(c.scheduled_at(), Some(Timestamp::from_millis(15_000)));
        c.schedule_at(Timestamp::from_millis(1));
        assert_eq!(c.scheduled_at(), Some(Timestamp::from_millis(1)));
        c.cancel_schedule();
        assert_eq!(c.scheduled_at(), None);
        c.schedule_in(Duration::ZERO);
        assert_eq!(c.scheduled_at(), Some(Timestamp::from_millis(10_000)));
    }
}
