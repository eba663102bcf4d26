//! [`StepJobClient`]: the typed handle of one step job.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, ValidationTarget};
use crate::job::step::StepJob;
use crate::steps::{
    BatchItem, Completed, Disposition, LogRecord, Run, RunEventStream, RunFilter, StepRecord,
    StepRuntime, TriggerOptions, Triggered,
};
use crate::store::runs::RunRecord;
use crate::time::Timestamp;

/// The typed handle of step job `J`: triggers runs with `J::Input` and reads them back with
/// `J::Output`. Cheap to clone.
///
/// Obtained from the engine's client (`client.step_job::<J>()`). Every method only sees runs of
/// `J`: a run of another job is "not found".
///
/// # Examples
///
/// ```ignore
/// let sync = client.step_job::<SyncUsers>();
/// let run = sync.trigger(SyncInput { org: "org_123".into() }, TriggerOptions::new()).await?;
/// let done = sync.wait_for_run(&run.id, Some(Duration::from_secs(30))).await?;
/// println!("{:?}", done.output);
/// ```
pub struct StepJobClient<A, J> {
    pub(super) rt: Arc<StepRuntime<A>>,
    /// The engine's store, for the triggers made inside an application's transaction.
    #[cfg(feature = "postgres")]
    pub(super) store: Option<Arc<dyn crate::store::Store>>,
    _job: PhantomData<fn() -> J>,
}

impl<A, J> Clone for StepJobClient<A, J> {
    fn clone(&self) -> Self {
        StepJobClient {
            rt: self.rt.clone(),
            #[cfg(feature = "postgres")]
            store: self.store.clone(),
            _job: PhantomData,
        }
    }
}

impl<A, J> std::fmt::Debug for StepJobClient<A, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepJobClient")
            .field("job", &std::any::type_name::<J>())
            .finish()
    }
}

type TriggeredRuns<I, O> = Vec<Triggered<I, O>>;

fn decode<T: DeserializeOwned>(
    json: &str,
    job: &str,
    what: ValidationTarget,
    id: &str,
) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::validation(
            what,
            Some(job),
            format!("stored {what} of run {id} no longer deserialises: {e}"),
        )
    })
}

pub(crate) fn typed<I: DeserializeOwned, O: DeserializeOwned>(
    r: RunRecord,
) -> Result<Run<I, O>, Error> {
    let input = decode(&r.input, &r.job_name, ValidationTarget::Input, &r.id)?;
    let output = r
        .output
        .as_deref()
        .map(|o| decode(o, &r.job_name, ValidationTarget::Output, &r.id))
        .transpose()?;
    let progress = r
        .progress
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok());
    Ok(Run {
        id: r.id,
        job_name: r.job_name,
        input,
        status: r.status,
        idempotency_key: r.idempotency_key,
        concurrency_key: r.concurrency_key,
        current_step_index: r.current_step_index,
        completed_step_count: r.completed_step_count,
        progress,
        output,
        error: r.error,
        labels: r.labels,
        lease_owner: r.lease_owner,
        lease_expires_at: r.lease_expires_at,
        lease_generation: r.lease_generation,
        attempt: r.attempt,
        not_before: r.not_before,
        started_at: r.started_at,
        completed_at: r.completed_at,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

impl<A: Send + Sync + 'static, J: StepJob<A>> StepJobClient<A, J> {
    pub(crate) fn new(runtime: Arc<StepRuntime<A>>) -> Self {
        StepJobClient {
            rt: runtime,
            #[cfg(feature = "postgres")]
            store: None,
            _job: PhantomData,
        }
    }

    /// The client, knowing the engine's store.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_store(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The job's persisted name.
    pub fn name(&self) -> &'static str {
        J::NAME
    }

    pub(super) fn encode(input: &J::Input) -> Result<String, String> {
        crate::json::encode(input)
    }

    /// The inputs of a batch, encoded; the first that cannot be is refused, naming its index.
    pub(super) fn encode_items(
        items: Vec<BatchItem<J::Input>>,
    ) -> Result<Vec<(String, TriggerOptions)>, Error> {
        let mut encoded = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let input = Self::encode(&item.input).map_err(|m| {
                Error::validation(
                    ValidationTarget::Input,
                    Some(J::NAME),
                    format!("at index {i}: {m}"),
                )
            })?;
            encoded.push((input, item.options));
        }
        Ok(encoded)
    }

    pub(super) fn triggered(
        out: Vec<(RunRecord, Disposition)>,
    ) -> Result<TriggeredRuns<J::Input, J::Output>, Error> {
        out.into_iter()
            .map(|(r, disposition)| {
                Ok(Triggered {
                    run: typed(r)?,
                    disposition,
                })
            })
            .collect()
    }

    /// Creates a run (or returns the existing one for an idempotency key or `coalesce: skip`)
    /// and wakes the worker.
    ///
    /// # Errors
    ///
    /// - [`Error::Validation`]: the input cannot be encoded; a key is empty, too long or has
    ///   control characters; a label key does not match `^[a-zA-Z0-9\-_./]+$`; `coalesce`
    ///   without `concurrency_key`. Nothing is created.
    /// - [`Error::InvalidState`] (state `pending`, naming the pending run): a pending run of this
    ///   job has the same concurrency key and `coalesce` is not set.
    /// - [`Error::Storage`].
    pub async fn trigger(
        &self,
        input: J::Input,
        options: TriggerOptions,
    ) -> Result<Triggered<J::Input, J::Output>, Error> {
        let encoded = Self::encode(&input)
            .map_err(|m| Error::validation(ValidationTarget::Input, Some(J::NAME), m))?;
        let out = self
            .rt
            .trigger_encoded(J::NAME, vec![(encoded, options)])
            .await?;
        Self::triggered(out)?
            .pop()
            .ok_or_else(|| Error::storage("trigger", "no run returned"))
    }

    /// Creates several runs atomically: every item is validated before anything is written, and
    /// a concurrency-key conflict on any item creates none. Idempotency keys and `coalesce`
    /// also match runs created earlier in the same batch. The result is aligned with the items.
    ///
    /// # Errors
    ///
    /// As [`trigger`](Self::trigger); validation messages name the item (`at index 1: ...`).
    pub async fn batch_trigger<T: Into<BatchItem<J::Input>>>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<TriggeredRuns<J::Input, J::Output>, Error> {
        let items: Vec<BatchItem<J::Input>> = items.into_iter().map(Into::into).collect();
        let encoded = Self::encode_items(items)?;
        let out = self.rt.trigger_encoded(J::NAME, encoded).await?;
        Self::triggered(out)
    }

    /// Triggers a run and waits until it ends, at most `timeout` in all.
    ///
    /// # Errors
    ///
    /// As [`trigger`](Self::trigger) and [`wait_for_run`](Self::wait_for_run);
    /// [`Error::Timeout`] when the run has not ended after `timeout` (it goes on).
    pub async fn trigger_and_wait(
        &self,
        input: J::Input,
        options: TriggerOptions,
        timeout: Duration,
    ) -> Result<Completed<J::Output>, Error> {
        let start = tokio::time::Instant::now();
        let triggered = self.trigger(input, options).await?;
        let left = timeout.saturating_sub(start.elapsed());
        let run = self
            .rt
            .wait_for_run(Some(J::NAME), &triggered.run.id, Some(left))
            .await
            .map_err(|e| match e {
                Error::Timeout { operation, .. } => Error::Timeout {
                    operation,
                    after: timeout,
                },
                e => e,
            })?;
        let output = match run.output.as_deref() {
            Some(o) => decode(o, J::NAME, ValidationTarget::Output, &run.id)?,
            None => decode("null", J::NAME, ValidationTarget::Output, &run.id)?,
        };
        Ok(Completed {
            id: run.id,
            output,
            disposition: triggered.disposition,
        })
    }

    /// One run of this job; `None` when there is none (or it belongs to another job).
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] when the stored input or output no longer deserialises;
    /// [`Error::Storage`].
    pub async fn get_run(&self, id: &str) -> Result<Option<Run<J::Input, J::Output>>, Error> {
        self.rt
            .get_run(Some(J::NAME), id)
            .await?
            .map(typed)
            .transpose()
    }

    /// Runs of this job matching `filter` (its job names are replaced by this job), newest
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] for an invalid label key or a stored value that no longer
    /// deserialises; [`Error::Storage`].
    pub async fn get_runs(
        &self,
        mut filter: RunFilter,
    ) -> Result<Vec<Run<J::Input, J::Output>>, Error> {
        filter.job_names = vec![J::NAME.to_owned()];
        self.rt
            .get_runs(filter)
            .await?
            .into_iter()
            .map(typed)
            .collect()
    }

    /// Creates a new run with the input, labels and concurrency key of a completed, failed or
    /// cancelled run (no idempotency key, no coalescing).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] when the run is pending or leased,
    /// or a pending run has its concurrency key; [`Error::Validation`] when its stored input no
    /// longer deserialises into `J::Input`; [`Error::Storage`].
    pub async fn retrigger(&self, id: &str) -> Result<Run<J::Input, J::Output>, Error> {
        typed(self.rt.retrigger(Some(J::NAME), id).await?)
    }

    /// Cancels a pending or leased run. Cancellation is cooperative: a running step sees it
    /// through its token, its result is not persisted, and the next step fails.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] naming the state when the run is
    /// completed, failed or already cancelled; [`Error::Storage`].
    pub async fn cancel(&self, id: &str) -> Result<(), Error> {
        self.rt.cancel(Some(J::NAME), id).await
    }

    /// Deletes a completed, failed or cancelled run with its labels, steps and logs.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] when the run is pending or leased;
    /// [`Error::Storage`].
    pub async fn delete_run(&self, id: &str) -> Result<(), Error> {
        self.rt.delete_run(Some(J::NAME), id).await
    }

    /// Waits until the run ends (at most `timeout`, when given) and returns it completed.
    ///
    /// # Errors
    ///
    /// - [`Error::Execution`] when it failed; the source is [`RunFailed`](crate::steps::RunFailed)
    ///   with the run's error message;
    /// - [`Error::InvalidState`] with state `cancelled` when it was cancelled;
    /// - [`Error::InstanceNotFound`] when there is no such run (or it was deleted meanwhile);
    /// - [`Error::Timeout`] when `timeout` passed first.
    pub async fn wait_for_run(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Run<J::Input, J::Output>, Error> {
        typed(self.rt.wait_for_run(Some(J::NAME), id, timeout).await?)
    }

    /// The run's events: a snapshot of its state first (`sequence` 0: `run:leased` and its
    /// progress, or its terminal event), then live events, ending after it completes, fails, is
    /// cancelled or deleted.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`] (operation `get_run`); [`Error::Storage`].
    pub async fn subscribe(&self, id: &str) -> Result<RunEventStream, Error> {
        self.rt.subscribe(Some(J::NAME), id).await
    }

    /// Every event of this job's runs from now on: the [`Event::Run`](crate::Event::Run)s of
    /// [`Engine::events`](crate::Engine::events) for this job.
    pub fn events(&self) -> RunEventStream {
        self.rt.events(Some(J::NAME))
    }

    /// The persisted step attempts of a run, in order (empty after the run ended unless
    /// `preserve_steps` is set).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::Storage`].
    pub async fn steps(&self, id: &str) -> Result<Vec<StepRecord>, Error> {
        self.rt.get_steps(Some(J::NAME), id).await
    }

    /// The persisted log entries of a run, in order.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::Storage`].
    pub async fn logs(&self, id: &str) -> Result<Vec<LogRecord>, Error> {
        self.rt.get_logs(Some(J::NAME), id).await
    }

    /// Deletes this job's completed, failed and cancelled runs that ended before `older_than`,
    /// oldest first, at most `limit` (all when `None`); returns how many. Emits no events.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`].
    pub async fn purge_runs(
        &self,
        older_than: Timestamp,
        limit: Option<u32>,
    ) -> Result<u64, Error> {
        self.rt.purge_runs(Some(J::NAME), older_than, limit).await
    }
}
