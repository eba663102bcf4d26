//! The typed client: one accessor per job kind, bounded on the kind's trait and on the job
//! being registered, so an unknown job, a job of another kind, an unregistered job or a wrong
//! payload type does not compile. A dynamic path by name serves HTTP and CLI callers.

mod dynamic;
mod instances;
mod jobs;
mod runs;
mod step;
#[cfg(feature = "postgres")]
pub(crate) mod tx;

use std::marker::PhantomData;

pub use dynamic::{DynamicContinuous, DynamicDebounce, DynamicJob, DynamicStep, DynamicTask};
pub use instances::{InstanceInfo, InstancePage};
pub use jobs::JobInfo;
pub use runs::Runs;
pub(crate) use step::typed;
pub use step::StepJobClient;

use crate::checks::{ContinuousJobOf, DebounceJobOf, StepJobOf, TaskJobOf};
use crate::engine::erased::{undecodable, Input};
use crate::engine::{
    AddResult, ClearResult, ContinuousStatus, DebounceStatus, Engine, FlushResult, Inner, Registry,
    SendResult, StartResult, TaskStatus, TaskTriggerResult, TerminateResult, TriggerResult,
};
use crate::error::{Operation, Result};
use crate::id::{InstanceKey, JobKind};
use crate::job::continuous::ContinuousJob;
use crate::job::debounce::DebounceJob;
use crate::job::task::TaskJob;
use crate::job::{Job, Registered};

/// A handle for calling jobs; get one from [`Engine::client`]. Cheap to clone; it keeps the
/// engine alive.
pub struct Client<R: Registry> {
    engine: Engine<R>,
}

impl<R: Registry> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            engine: self.engine.clone(),
        }
    }
}

impl<R: Registry> Client<R> {
    pub(crate) fn new(engine: Engine<R>) -> Self {
        Client { engine }
    }

    pub(crate) fn inner(&self) -> &Inner<R::App> {
        self.engine.inner()
    }

    /// The client of a `#[continuous]` job.
    pub fn continuous<J>(&self) -> ContinuousClient<R, J>
    where
        J: ContinuousJobOf<R> + Registered<R>,
    {
        ContinuousClient {
            client: self.clone(),
            _job: PhantomData,
        }
    }

    /// The client of a `#[debounce]` job.
    pub fn debounce<J>(&self) -> DebounceClient<R, J>
    where
        J: DebounceJobOf<R> + Registered<R>,
    {
        DebounceClient {
            client: self.clone(),
            _job: PhantomData,
        }
    }

    /// The client of a `#[task]` job.
    pub fn task<J>(&self) -> TaskClient<R, J>
    where
        J: TaskJobOf<R> + Registered<R>,
    {
        TaskClient {
            client: self.clone(),
            _job: PhantomData,
        }
    }

    /// The client of a `#[step_job]`.
    pub fn step_job<J>(&self) -> StepJobClient<R::App, J>
    where
        J: StepJobOf<R> + Registered<R>,
    {
        let client = StepJobClient::new(self.inner().steps.clone());
        #[cfg(feature = "postgres")]
        let client = client.with_store(self.engine.handle.store.clone());
        client
    }

    /// The runs of every step job, untyped: list, read, retrigger, cancel, delete and watch
    /// runs by id.
    pub fn runs(&self) -> Runs<R::App> {
        Runs::new(self.inner().steps.clone())
    }

    /// A job by its persisted name, for callers that only have a string.
    ///
    /// # Errors
    ///
    /// `JobNotFound` when no job has that name.
    pub fn by_name(&self, name: &str) -> Result<DynamicJob<R>> {
        DynamicJob::new(self.clone(), name)
    }
}

/// The committed state of an instance, decoded (and migrated, if it was stored by an older
/// version of the job) by the job's own type.
async fn get_state<A: Send + Sync + 'static, S: 'static>(
    inner: &Inner<A>,
    kind: JobKind,
    job: &str,
    id: &str,
) -> Result<Option<S>> {
    let key = inner.key(kind, job, id)?;
    let Some(rec) = inner.load(&key, Operation::GetState).await? else {
        return Ok(None);
    };
    let Some(json) = rec.state.as_deref() else {
        return Ok(None);
    };
    let decoded = inner
        .state_codec(job)?
        .decode_state(json, rec.state_version)
        .map_err(|why| undecodable(job, why))?;
    decoded
        .state
        .downcast::<S>()
        .map(|state| Some(*state))
        .map_err(|_| undecodable(job, "stored state of the wrong type".to_owned()))
}

/// Calls one `#[continuous]` job.
pub struct ContinuousClient<R: Registry, J> {
    client: Client<R>,
    _job: PhantomData<fn() -> J>,
}

impl<R: Registry, J: ContinuousJob<R::App>> ContinuousClient<R, J> {
    /// Creates instance `id` with `input` as its state and schedules it (running it at once
    /// unless `start_immediately = false`). An existing instance is left unchanged and reported
    /// with `created: false`.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or an input over the size limit (nothing is created);
    /// `Execution` when the first run fails without a retry policy (the instance exists and
    /// keeps its schedule) or exhausts it (the instance is gone); `Scheduler` when the schedule
    /// has no next run; `Storage`.
    pub async fn start(&self, id: &str, input: J::State) -> Result<StartResult> {
        self.client
            .inner()
            .continuous_start(J::NAME, id, Input::typed(input))
            .await
    }

    /// Runs the instance now; its cadence restarts from this run.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `Execution` when the run fails without a retry policy; `InvalidState`
    /// when called from the instance's own `execute`.
    pub async fn trigger(&self, id: &str) -> Result<TriggerResult> {
        self.client.inner().continuous_trigger(J::NAME, id).await
    }

    /// Cancels the schedule and deletes the instance; the id can be started afresh.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `InvalidState` when called from the instance's own `execute`.
    pub async fn terminate(&self, id: &str, reason: Option<&str>) -> Result<TerminateResult> {
        self.client
            .inner()
            .continuous_terminate(J::NAME, id, reason.map(str::to_owned))
            .await
    }

    /// The instance's status; `NotFound` when it does not exist. Does not wait for a running
    /// execution.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id; `Storage`.
    pub async fn status(&self, id: &str) -> Result<ContinuousStatus> {
        self.client.inner().continuous_status(J::NAME, id).await
    }

    /// The committed state; `None` when the instance does not exist.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a stored state that no longer deserialises; `Storage`.
    pub async fn get_state(&self, id: &str) -> Result<Option<J::State>> {
        get_state(self.client.inner(), JobKind::Continuous, J::NAME, id).await
    }

    /// The key of instance `id`.
    pub fn instance(&self, id: &str) -> InstanceKey {
        InstanceKey::new(JobKind::Continuous, J::NAME, id)
    }
}

/// Calls one `#[debounce]` job.
pub struct DebounceClient<R: Registry, J> {
    client: Client<R>,
    _job: PhantomData<fn() -> J>,
}

impl<R: Registry, J: DebounceJob<R::App>> DebounceClient<R, J> {
    /// Folds `event` into instance `id`'s batch, creating it (and its flush alarm) when there
    /// is none. The `add` that reaches `max_events` flushes the batch before returning; the
    /// result says how that went, and the event is part of the batch either way.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a state over the size limit (nothing changes);
    /// `InvalidState` when called from the instance's own `execute`; `Storage`.
    pub async fn add(&self, id: &str, event: J::Event) -> Result<AddResult> {
        self.client
            .inner()
            .debounce_add(J::NAME, id, Input::typed(event), None)
            .await
    }

    /// As [`add`](Self::add), de-duplicated by `event_id`.
    ///
    /// # Errors
    ///
    /// `DuplicateEvent` when `event_id` was seen for this instance (nothing changes), and those
    /// of `add`.
    pub async fn add_with_id(
        &self,
        id: &str,
        event: J::Event,
        event_id: &str,
    ) -> Result<AddResult> {
        self.client
            .inner()
            .debounce_add(J::NAME, id, Input::typed(event), Some(event_id))
            .await
    }

    /// Flushes the batch now (`FlushReason::Manual`).
    ///
    /// # Errors
    ///
    /// `InstanceNotFound` when there is no batch; `Execution` when `execute` fails without a
    /// retry policy (the batch is kept and flushed again `flush_after` later) or exhausts it.
    pub async fn flush(&self, id: &str) -> Result<FlushResult> {
        self.client.inner().debounce_flush(J::NAME, id).await
    }

    /// Drops the batch without calling `execute`.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound` when there is no batch.
    pub async fn clear(&self, id: &str) -> Result<ClearResult> {
        self.client.inner().debounce_clear(J::NAME, id).await
    }

    /// The batch's status; `NotFound` when there is none.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id; `Storage`.
    pub async fn status(&self, id: &str) -> Result<DebounceStatus> {
        self.client.inner().debounce_status(J::NAME, id).await
    }

    /// The accumulated state; `None` when there is no batch.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a stored state that no longer deserialises; `Storage`.
    pub async fn get_state(&self, id: &str) -> Result<Option<J::State>> {
        get_state(self.client.inner(), JobKind::Debounce, J::NAME, id).await
    }

    /// The key of instance `id`, as results and errors name it.
    pub fn instance(&self, id: &str) -> InstanceKey {
        InstanceKey::new(JobKind::Debounce, J::NAME, id)
    }
}

/// Calls one `#[task]` job.
pub struct TaskClient<R: Registry, J> {
    client: Client<R>,
    _job: PhantomData<fn() -> J>,
}

impl<R: Registry, J: TaskJob<R::App>> TaskClient<R, J> {
    /// Delivers `event` to `on_event`, creating the instance if needed.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id (nothing is created); `Execution` when the handlers fail and
    /// `on_error` does not rescue them (nothing changes); `InvalidState` when called from the
    /// instance's own handler; `Storage`.
    pub async fn send(&self, id: &str, event: J::Event) -> Result<SendResult> {
        self.client
            .inner()
            .task_send(J::NAME, id, Input::typed(event), None)
            .await
    }

    /// As [`send`](Self::send), de-duplicated by `event_id`.
    ///
    /// # Errors
    ///
    /// `DuplicateEvent` when `event_id` was seen for this instance (nothing changes), and those
    /// of `send`.
    pub async fn send_with_id(
        &self,
        id: &str,
        event: J::Event,
        event_id: &str,
    ) -> Result<SendResult> {
        self.client
            .inner()
            .task_send(J::NAME, id, Input::typed(event), Some(event_id))
            .await
    }

    /// Runs `execute` now; a pending schedule stays unless the handler changes it.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`; `Execution` as for `send`.
    pub async fn trigger(&self, id: &str) -> Result<TaskTriggerResult> {
        self.client.inner().task_trigger(J::NAME, id).await
    }

    /// Cancels any schedule and deletes the instance.
    ///
    /// # Errors
    ///
    /// `InstanceNotFound`.
    pub async fn terminate(&self, id: &str) -> Result<InstanceKey> {
        self.client.inner().task_terminate(J::NAME, id).await
    }

    /// The instance's status; `NotFound` when it does not exist.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id; `Storage`.
    pub async fn status(&self, id: &str) -> Result<TaskStatus> {
        self.client.inner().task_status(J::NAME, id).await
    }

    /// The committed state; `None` when the instance does not exist or has no state yet.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a stored state that no longer deserialises; `Storage`.
    pub async fn get_state(&self, id: &str) -> Result<Option<J::State>> {
        get_state(self.client.inner(), JobKind::Task, J::NAME, id).await
    }

    /// The key of instance `id`, as results and errors name it.
    pub fn instance(&self, id: &str) -> InstanceKey {
        InstanceKey::new(JobKind::Task, J::NAME, id)
    }
}

impl<R: Registry, J: Job> std::fmt::Debug for ContinuousClient<R, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContinuousClient({})", J::NAME)
    }
}
impl<R: Registry, J: Job> std::fmt::Debug for DebounceClient<R, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DebounceClient({})", J::NAME)
    }
}
impl<R: Registry, J: Job> std::fmt::Debug for TaskClient<R, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskClient({})", J::NAME)
    }
}
