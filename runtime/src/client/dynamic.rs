//! Calling jobs by name with JSON payloads, for HTTP handlers and command-line tools.

use serde_json::Value;

use super::Client;
use crate::engine::erased::Input;
use crate::engine::{
    AddResult, ClearResult, ContinuousStatus, DebounceStatus, FlushResult, Registry, SendResult,
    StartResult, TaskStatus, TaskTriggerResult, TerminateResult, TriggerResult,
};
use crate::error::{Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::steps::{Disposition, TriggerOptions};

/// A job found by name. Match on the kind to reach its operations; payloads are JSON and are
/// validated by decoding them into the job's types. A payload that nests arrays and objects
/// deeper than [`MAX_NESTING_DEPTH`](crate::MAX_NESTING_DEPTH) levels is refused with
/// `Validation` before anything walks it recursively, however deep it is.
///
/// # Examples
///
/// ```no_run
/// # use durable_jobs::{Client, Registry};
/// # async fn handle<R: Registry>(client: Client<R>, name: &str, id: &str, body: serde_json::Value) -> durable_jobs::Result<()> {
/// use durable_jobs::client::DynamicJob;
///
/// match client.by_name(name)? {
///     DynamicJob::Debounce(job) => { job.add(id, body, None).await?; }
///     DynamicJob::Task(job) => { job.send(id, body, None).await?; }
///     other => println!("{} is a {} job", other.name(), other.kind()),
/// }
/// # Ok(()) }
/// ```
#[non_exhaustive]
pub enum DynamicJob<R: Registry> {
    /// A `#[continuous]` job.
    Continuous(DynamicContinuous<R>),
    /// A `#[debounce]` job.
    Debounce(DynamicDebounce<R>),
    /// A `#[task]` job.
    Task(DynamicTask<R>),
    /// A `#[step_job]`.
    Step(DynamicStep<R>),
}

struct Named<R: Registry> {
    client: Client<R>,
    name: &'static str,
}

/// A continuous job reached by name.
pub struct DynamicContinuous<R: Registry>(Named<R>);
/// A debounce job reached by name.
pub struct DynamicDebounce<R: Registry>(Named<R>);
/// A task job reached by name.
pub struct DynamicTask<R: Registry>(Named<R>);
/// A step job reached by name.
pub struct DynamicStep<R: Registry>(Named<R>);

impl<R: Registry> DynamicJob<R> {
    pub(super) fn new(client: Client<R>, name: &str) -> Result<Self> {
        let (name, kind) = match client.inner().jobs.jobs.get_key_value(name) {
            Some((name, handler)) => (*name, handler.kind()),
            None => {
                return Err(Error::JobNotFound {
                    name: name.to_owned(),
                })
            }
        };
        let named = Named { client, name };
        Ok(match kind {
            JobKind::Continuous => DynamicJob::Continuous(DynamicContinuous(named)),
            JobKind::Debounce => DynamicJob::Debounce(DynamicDebounce(named)),
            JobKind::Task => DynamicJob::Task(DynamicTask(named)),
            _ => DynamicJob::Step(DynamicStep(named)),
        })
    }

    /// The persisted name.
    pub fn name(&self) -> &'static str {
        match self {
            DynamicJob::Continuous(j) => j.0.name,
            DynamicJob::Debounce(j) => j.0.name,
            DynamicJob::Task(j) => j.0.name,
            DynamicJob::Step(j) => j.0.name,
        }
    }

    /// The kind.
    pub fn kind(&self) -> JobKind {
        match self {
            DynamicJob::Continuous(_) => JobKind::Continuous,
            DynamicJob::Debounce(_) => JobKind::Debounce,
            DynamicJob::Task(_) => JobKind::Task,
            DynamicJob::Step(_) => JobKind::Step,
        }
    }

    /// The committed state of instance `id` as JSON; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// `Validation` for a bad id or a stored state that is not JSON (or nests deeper than
    /// [`MAX_NESTING_DEPTH`](crate::MAX_NESTING_DEPTH)); `Storage`.
    pub async fn get_state(&self, id: &str) -> Result<Option<Value>> {
        let (client, name) = match self {
            DynamicJob::Continuous(j) => (&j.0.client, j.0.name),
            DynamicJob::Debounce(j) => (&j.0.client, j.0.name),
            DynamicJob::Task(j) => (&j.0.client, j.0.name),
            DynamicJob::Step(j) => {
                return Err(Error::InvalidState {
                    instance: InstanceKey::new(JobKind::Step, j.0.name, id),
                    operation: Operation::GetState,
                    state: "a step job, whose runs are read with `get_run`".into(),
                })
            }
        };
        let inner = client.inner();
        let key = inner.key(self.kind(), name, id)?;
        let rec = inner.load(&key, Operation::GetState).await?;
        rec.and_then(|r| r.state)
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| {
                    Error::validation(
                        ValidationTarget::State,
                        Some(name),
                        format!("stored state no longer deserialises: {e}"),
                    )
                })
            })
            .transpose()
    }
}

impl<R: Registry> DynamicContinuous<R> {
    /// See [`ContinuousClient::start`](crate::client::ContinuousClient::start).
    ///
    /// # Errors
    ///
    /// `Validation` when `input` nests too deep or does not decode into the job's state type, and those of the
    /// typed `start`.
    pub async fn start(&self, id: &str, input: Value) -> Result<StartResult> {
        self.0
            .client
            .inner()
            .continuous_start(self.0.name, id, Input::Json(input))
            .await
    }

    /// See [`ContinuousClient::trigger`](crate::client::ContinuousClient::trigger).
    ///
    /// # Errors
    ///
    /// As the typed `trigger`.
    pub async fn trigger(&self, id: &str) -> Result<TriggerResult> {
        self.0
            .client
            .inner()
            .continuous_trigger(self.0.name, id)
            .await
    }

    /// See [`ContinuousClient::terminate`](crate::client::ContinuousClient::terminate).
    ///
    /// # Errors
    ///
    /// As the typed `terminate`.
    pub async fn terminate(&self, id: &str, reason: Option<&str>) -> Result<TerminateResult> {
        self.0
            .client
            .inner()
            .continuous_terminate(self.0.name, id, reason.map(str::to_owned))
            .await
    }

    /// See [`ContinuousClient::status`](crate::client::ContinuousClient::status).
    ///
    /// # Errors
    ///
    /// As the typed `status`.
    pub async fn status(&self, id: &str) -> Result<ContinuousStatus> {
        self.0
            .client
            .inner()
            .continuous_status(self.0.name, id)
            .await
    }
}

impl<R: Registry> DynamicDebounce<R> {
    /// See [`DebounceClient::add`](crate::client::DebounceClient::add).
    ///
    /// # Errors
    ///
    /// `Validation` when `event` nests too deep or does not decode into the job's event type, and those of the
    /// typed `add`.
    pub async fn add(&self, id: &str, event: Value, event_id: Option<&str>) -> Result<AddResult> {
        self.0
            .client
            .inner()
            .debounce_add(self.0.name, id, Input::Json(event), event_id)
            .await
    }

    /// See [`DebounceClient::flush`](crate::client::DebounceClient::flush).
    ///
    /// # Errors
    ///
    /// As the typed `flush`.
    pub async fn flush(&self, id: &str) -> Result<FlushResult> {
        self.0.client.inner().debounce_flush(self.0.name, id).await
    }

    /// See [`DebounceClient::clear`](crate::client::DebounceClient::clear).
    ///
    /// # Errors
    ///
    /// As the typed `clear`.
    pub async fn clear(&self, id: &str) -> Result<ClearResult> {
        self.0.client.inner().debounce_clear(self.0.name, id).await
    }

    /// See [`DebounceClient::status`](crate::client::DebounceClient::status).
    ///
    /// # Errors
    ///
    /// As the typed `status`.
    pub async fn status(&self, id: &str) -> Result<DebounceStatus> {
        self.0.client.inner().debounce_status(self.0.name, id).await
    }
}

impl<R: Registry> DynamicTask<R> {
    /// See [`TaskClient::send`](crate::client::TaskClient::send).
    ///
    /// # Errors
    ///
    /// `Validation` when `event` nests too deep or does not decode into the job's event type, and those of the
    /// typed `send`.
    pub async fn send(&self, id: &str, event: Value, event_id: Option<&str>) -> Result<SendResult> {
        self.0
            .client
            .inner()
            .task_send(self.0.name, id, Input::Json(event), event_id)
            .await
    }

    /// See [`TaskClient::trigger`](crate::client::TaskClient::trigger).
    ///
    /// # Errors
    ///
    /// As the typed `trigger`.
    pub async fn trigger(&self, id: &str) -> Result<TaskTriggerResult> {
        self.0.client.inner().task_trigger(self.0.name, id).await
    }

    /// See [`TaskClient::terminate`](crate::client::TaskClient::terminate).
    ///
    /// # Errors
    ///
    /// As the typed `terminate`.
    pub async fn terminate(&self, id: &str) -> Result<InstanceKey> {
        self.0.client.inner().task_terminate(self.0.name, id).await
    }

    /// See [`TaskClient::status`](crate::client::TaskClient::status).
    ///
    /// # Errors
    ///
    /// As the typed `status`.
    pub async fn status(&self, id: &str) -> Result<TaskStatus> {
        self.0.client.inner().task_status(self.0.name, id).await
    }
}

impl<R: Registry> DynamicStep<R> {
    /// Triggers a run with a JSON input; returns the run id and whether it was created,
    /// found by its idempotency key, or coalesced onto a pending run.
    ///
    /// # Errors
    ///
    /// `Validation` when `input` nests too deep or does not decode into the job's input type or the options are
    /// invalid; `InvalidState` for a concurrency-key conflict; `Storage`.
    pub async fn trigger(
        &self,
        input: Value,
        options: TriggerOptions,
    ) -> Result<(String, Disposition)> {
        let mut runs = self
            .0
            .client
            .inner()
            .steps
            .trigger_json(self.0.name, vec![(input, options)])
            .await?;
        let (run, disposition) = runs
            .pop()
            .ok_or_else(|| Error::storage("trigger", "no run was written"))?;
        Ok((run.id, disposition))
    }
}

impl<R: Registry> std::fmt::Debug for DynamicJob<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DynamicJob::Continuous(j) => f.debug_tuple("Continuous").field(j).finish(),
            DynamicJob::Debounce(j) => f.debug_tuple("Debounce").field(j).finish(),
            DynamicJob::Task(j) => f.debug_tuple("Task").field(j).finish(),
            DynamicJob::Step(j) => f.debug_tuple("Step").field(j).finish(),
        }
    }
}

/// `DynamicTask(orders)`: the job's name, as the typed clients show theirs.
macro_rules! debug_by_name {
    ($($ty:ident),*) => {$(
        impl<R: Registry> std::fmt::Debug for $ty<R> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self.0.name)
            }
        }
    )*};
}

debug_by_name!(DynamicContinuous, DynamicDebounce, DynamicTask, DynamicStep);
