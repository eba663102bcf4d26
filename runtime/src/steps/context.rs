//! [`StepContext`]: what a run uses to run memoised steps, report progress and log.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::cancel::{CancelReason, Cancellation};
use super::events::RunEventKind;
use super::run::{Labels, LogLevel, Progress, RunStatus, StepStatus};
use super::runtime::Shared;
use crate::checks::StepBody;
use crate::error::BoxError;
use crate::store::runs::{Fence, NewLog, NewStep, StoredStep};
use crate::store::StoreError;
use crate::time::Timestamp;

/// Why `step.run` (or the run) could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The step's closure returned an error (kept as the source); the failed attempt was
    /// persisted. Its display is the closure's error message.
    #[error("{source}")]
    Failed {
        /// The step's name.
        step: String,
        /// The closure's error.
        #[source]
        source: BoxError,
    },
    /// The run was cancelled; nothing more of this execution is persisted.
    #[error("run {run_id} was cancelled")]
    Cancelled {
        /// The run.
        run_id: String,
    },
    /// The worker lost the run's lease; nothing more of this execution is persisted.
    #[error("run {run_id} lost its lease")]
    LeaseLost {
        /// The run.
        run_id: String,
    },
    /// A step's output could not be encoded, or a memoised output no longer decodes into the
    /// step's type.
    #[error("output of step {step} {message}")]
    Output {
        /// The step's name.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// The store failed.
    #[error("storage failed while persisting step {step}: {source}")]
    Storage {
        /// The step's name.
        step: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// The future of [`StepContext::run`]: the step's output, or why the run cannot go on.
pub type StepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StepError>> + Send + 'a>>;

/// Buffered logs of one run, shared by its context and step scopes. They are persisted with the
/// run's next write (a step, a progress report, the end of the execution).
pub(crate) struct LogSink {
    shared: Arc<Shared>,
    run_id: String,
    job_name: String,
    labels: Arc<Labels>,
    buffer: Mutex<Vec<NewLog>>,
}

impl LogSink {
    fn write(
        &self,
        step_name: Option<&str>,
        level: LogLevel,
        message: String,
        data: Option<Value>,
    ) {
        let now = self.shared.clock.now();
        self.shared
            .events
            .emit(now, &self.run_id, &self.job_name, &self.labels, || {
                RunEventKind::LogWrite {
                    step_name: step_name.map(str::to_owned),
                    level,
                    message: message.clone(),
                    data: data.clone(),
                }
            });
        let log = NewLog {
            id: self.shared.next_id(now),
            step_name: step_name.map(str::to_owned),
            level,
            message,
            data: data.map(|d| d.to_string()),
            created_at: now,
        };
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log);
    }

    pub(crate) fn take(&self) -> Vec<NewLog> {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *b)
        }
    }
}

/// What a step's closure receives: the run's cancellation and a logger attributed to the step.
#[derive(Clone)]
pub struct StepScope {
    cancellation: Cancellation,
    sink: Arc<LogSink>,
    step_name: Arc<str>,
}

impl std::fmt::Debug for StepScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepScope")
            .field("step_name", &self.step_name)
            .finish_non_exhaustive()
    }
}

impl StepScope {
    /// The step's name.
    pub fn step_name(&self) -> &str {
        &self.step_name
    }

    /// The run's cancellation token.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancellation
    }

    /// Whether the run was cancelled (or its lease lost).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Resolves once the run is cancelled (or its lease lost).
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await
    }

    /// Logs `message` at `level` with optional data, attributed to this step.
    pub fn log(&self, level: LogLevel, message: impl Into<String>, data: Option<Value>) {
        self.sink
            .write(Some(&self.step_name), level, message.into(), data);
    }

    /// Logs at info level.
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message, None);
    }

    /// Logs at warn level.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message, None);
    }

    /// Logs at error level.
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message, None);
    }
}

/// What a step job's run uses to run memoised steps, report progress and log.
///
/// A step's output is persisted when it completes, keyed by the step's name; when the run
/// resumes (after a crash, a lost lease or a retry), `run` returns the stored output without
/// calling the closure again. Within one execution a second step with the same name returns the
/// first one's output, so steps in a loop need distinct names (`format!("batch-{i}")`).
///
/// # Examples
///
/// ```
/// use durable_jobs::prelude::*;
///
/// async fn body(step: &mut StepContext, user: u64) -> Result<u64, durable_jobs::BoxError> {
///     let profile: String = step.run("fetch-profile", |_| async move { Ok(format!("user-{user}")) }).await?;
///     step.progress((1, 2)).await;
///     let len = step.run("measure", |s| async move {
///         s.info("measuring");
///         Ok(profile.len() as u64)
///     }).await?;
///     Ok(len)
/// }
/// ```
pub struct StepContext {
    shared: Arc<Shared>,
    run_id: String,
    job_name: String,
    labels: Arc<Labels>,
    generation: u64,
    /// See [`Fence::hint`].
    hint: Option<i64>,
    attempt: u32,
    cancellation: Cancellation,
    /// Made at the first step or log: a run with neither never needs one.
    sink: Option<Arc<LogSink>>,
    memo: HashMap<String, Option<String>>,
    /// Position of the next `run` call within this execution (replays count).
    index: u64,
    /// One past the index of the last completed step persisted (stored or in this execution).
    current_step_index: u64,
    /// Whether this execution persisted any row (a step or a log).
    wrote_rows: bool,
    /// Whether storing a step failed in the store: the run's failure is then not its own.
    store_failed: bool,
    failed_step: Option<String>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("run_id", &self.run_id)
            .field("job_name", &self.job_name)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        run_id: String,
        job_name: String,
        labels: Arc<Labels>,
        generation: u64,
        hint: Option<i64>,
        attempt: u32,
        cancellation: Cancellation,
        stored: Vec<StoredStep>,
    ) -> Self {
        let current_step_index = stored.iter().map(|s| s.index + 1).max().unwrap_or(0);
        let memo = stored.into_iter().map(|s| (s.name, s.output)).collect();
        StepContext {
            shared,
            run_id,
            job_name,
            labels,
            generation,
            hint,
            attempt,
            cancellation,
            sink: None,
            memo,
            index: 0,
            current_step_index,
            wrote_rows: false,
            store_failed: false,
            failed_step: None,
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The job's persisted name.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// The run's labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The attempt this execution makes: 1, or more when a retry policy retried the run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The run's cancellation token.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancellation
    }

    /// Whether the run was cancelled (or its lease lost).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Fails with [`StepError::Cancelled`] or [`StepError::LeaseLost`] once the run was
    /// cancelled or its lease lost.
    pub fn check_cancelled(&self) -> Result<(), StepError> {
        match self.cancellation.reason() {
            None => Ok(()),
            Some(CancelReason::LeaseLost) => Err(StepError::LeaseLost {
                run_id: self.run_id.clone(),
            }),
            Some(_) => Err(StepError::Cancelled {
                run_id: self.run_id.clone(),
            }),
        }
    }

    /// The run's log buffer, made on first use.
    fn sink(&mut self) -> &Arc<LogSink> {
        self.sink.get_or_insert_with(|| {
            Arc::new(LogSink {
                shared: self.shared.clone(),
                run_id: self.run_id.clone(),
                job_name: self.job_name.clone(),
                labels: self.labels.clone(),
                buffer: Mutex::new(Vec::new()),
            })
        })
    }

    fn fence(&self) -> Fence {
        Fence {
            run_id: self.run_id.clone(),
            generation: self.generation,
            hint: self.hint,
        }
    }

    fn emit(&self, kind: impl FnOnce() -> RunEventKind) {
        self.shared.events.emit(
            self.shared.clock.now(),
            &self.run_id,
            &self.job_name,
            &self.labels,
            kind,
        );
    }

    /// Runs step `name`: returns its stored output when it completed before (in an earlier
    /// execution or earlier in this one), otherwise calls `f`, persists its output and returns
    /// it.
    ///
    /// `f` receives a [`StepScope`] with the run's cancellation token and a logger, and returns
    /// a future of `Result<T, BoxError>`: `T` is the output, stored as JSON (a unit output is
    /// stored as `null` and replays as `()`). Any error converts into the
    /// [`BoxError`](crate::BoxError) with `?`, your own types included
    /// (`#[derive(thiserror::Error)]`, `std::io::Error`, `reqwest::Error`, `anyhow::Error`,
    /// `String`, ...); it is kept as the source of [`StepError::Failed`], so the job can
    /// downcast it. A function that returns its own error type is called inside `Ok(..)` with
    /// `?`: `|_| async { Ok(list_users(&org).await?) }`.
    ///
    /// The error type is fixed so that the common closure, one that returns `Ok(value)` and
    /// converts errors with `?`, needs no type annotation.
    ///
    /// # Errors
    ///
    /// - [`StepError::Failed`] when `f` fails (the failed attempt is persisted);
    /// - [`StepError::Cancelled`] / [`StepError::LeaseLost`] when the run was cancelled or the
    ///   worker lost its lease, before or while `f` ran (its output is then not persisted);
    /// - [`StepError::Output`] when the output cannot be encoded, or a stored one decoded;
    /// - [`StepError::Storage`] when the store fails.
    ///
    /// Return the error from the job (with `?`): the run then fails, or ends cancelled.
    ///
    /// # Examples
    ///
    /// A step calls the service's own code, which fails with the service's own error type,
    /// and the job reads that error back:
    ///
    /// ```
    /// use durable_jobs::prelude::*;
    /// use durable_jobs::steps::StepError;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("the directory refused: {0}")]
    /// pub struct DirectoryError(String);
    ///
    /// async fn list_users(org_id: &str) -> Result<Vec<String>, DirectoryError> {
    ///     Ok(vec![format!("{org_id}-admin")])
    /// }
    ///
    /// #[durable_jobs::step_job]
    /// async fn sync_users(step: &mut StepContext, org_id: String) -> Result<usize, StepError> {
    ///     let users = step
    ///         .run("list-users", |_| async { Ok(list_users(&org_id).await?) })
    ///         .await?;
    ///     let checked = step
    ///         .run("check-users", |_| async {
    ///             if users.is_empty() {
    ///                 return Err(DirectoryError("no users".into()).into());
    ///             }
    ///             Ok(users.len())
    ///         })
    ///         .await;
    ///     match checked {
    ///         Err(StepError::Failed { source, .. }) if source.is::<DirectoryError>() => Ok(0),
    ///         other => other,
    ///     }
    /// }
    /// ```
    // A boxed future rather than an `async fn`: the bounds are then checked once, where `run`
    // is called, instead of again on the future it returns and where that is awaited (three
    // copies of one error for a closure with the wrong output).
    pub fn run<'a, T, F, Fut>(&'a mut self, name: &'a str, f: F) -> StepFuture<'a, T>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
        F: FnOnce(StepScope) -> Fut + Send + 'a,
        Fut: StepBody<T> + Send + 'a,
    {
        Box::pin(self.run_step(name, f))
    }

    /// [`run`](Self::run)'s body.
    async fn run_step<T, F, Fut>(&mut self, name: &str, f: F) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepScope) -> Fut,
        Fut: Future<Output = Result<T, BoxError>>,
    {
        self.check_cancelled()?;
        let index = self.index;
        self.index += 1;
        if let Some(stored) = self.memo.get(name) {
            return serde_json::from_str(stored.as_deref().unwrap_or("null")).map_err(|e| {
                StepError::Output {
                    step: name.to_owned(),
                    message: format!("stored by an earlier execution no longer deserialises: {e}"),
                }
            });
        }
        let started_at = self.shared.clock.now();
        self.emit(|| RunEventKind::StepStart {
            step_name: name.to_owned(),
            step_index: index,
        });
        let scope = StepScope {
            cancellation: self.cancellation.clone(),
            sink: self.sink().clone(),
            step_name: name.into(),
        };
        // A panicking closure fails the step like an error it returned.
        let result = crate::error::catch_panic(Box::pin(f(scope)))
            .await
            .unwrap_or_else(|panicked| {
                tracing::error!(step = name, error = %panicked, "step panicked");
                Err(panicked.into())
            });

        if self.cancellation.reason() == Some(CancelReason::LeaseLost) {
            return Err(StepError::LeaseLost {
                run_id: self.run_id.clone(),
            });
        }
        let cancelled = self.cancellation.reason() == Some(CancelReason::Cancelled);
        let (status, output, error) = match &result {
            Ok(_) if cancelled => (
                StepStatus::Cancelled,
                None,
                Some("run was cancelled".to_owned()),
            ),
            Ok(value) => match crate::json::encode(value) {
                Ok(json) => (StepStatus::Completed, Some(json), None),
                Err(e) => (
                    StepStatus::Failed,
                    None,
                    Some(format!("output could not be encoded: {e}")),
                ),
            },
            Err(e) if cancelled => (StepStatus::Cancelled, None, Some(e.to_string())),
            Err(e) => (StepStatus::Failed, None, Some(e.to_string())),
        };
        let completed_at = self.shared.clock.now();
        let step = NewStep {
            id: ulid::Ulid::new().to_string(),
            name: name.to_owned(),
            index,
            status,
            output: output.clone(),
            error: error.clone(),
            started_at,
            completed_at,
        };
        let logs = self.take_logs();
        let accepted = match self
            .shared
            .store
            .persist_step(self.fence(), step, logs)
            .await
        {
            Ok(a) => a,
            Err(source) => {
                self.store_failed = true;
                return Err(StepError::Storage {
                    step: name.to_owned(),
                    source,
                });
            }
        };
        if !accepted {
            return Err(self.refused(Some((name, index))).await);
        }
        self.wrote_rows = true;
        match (status, result) {
            (StepStatus::Completed, Ok(value)) => {
                self.current_step_index = index + 1;
                let duration_ms = completed_at
                    .saturating_duration_since(started_at)
                    .as_millis() as u64;
                self.emit(|| RunEventKind::StepComplete {
                    step_name: name.to_owned(),
                    step_index: index,
                    output: super::events::json_value(output.as_deref()),
                    duration_ms,
                });
                self.memo.insert(name.to_owned(), output);
                Ok(value)
            }
            (StepStatus::Cancelled, _) => {
                self.emit(|| RunEventKind::StepCancel {
                    step_name: name.to_owned(),
                    step_index: index,
                });
                Err(StepError::Cancelled {
                    run_id: self.run_id.clone(),
                })
            }
            (_, result) => {
                let message = error.unwrap_or_default();
                self.failed_step = Some(name.to_owned());
                self.emit(|| RunEventKind::StepFail {
                    step_name: name.to_owned(),
                    step_index: index,
                    error: message.clone(),
                });
                match result {
                    Err(source) => Err(StepError::Failed {
                        step: name.to_owned(),
                        source,
                    }),
                    Ok(_) => Err(StepError::Output {
                        step: name.to_owned(),
                        message,
                    }),
                }
            }
        }
    }

    /// A fenced write was refused: the run was cancelled, or another execution owns it now.
    /// Records the reason in the token and returns the matching error.
    async fn refused(&self, step: Option<(&str, u64)>) -> StepError {
        let status = self
            .shared
            .store
            .get_run(&self.run_id)
            .await
            .ok()
            .flatten()
            .map(|r| r.status);
        if matches!(status, Some(RunStatus::Cancelled)) {
            self.cancellation.cancel(CancelReason::Cancelled);
        } else {
            self.cancellation.cancel(CancelReason::LeaseLost);
        }
        match self.cancellation.reason() {
            Some(CancelReason::Cancelled) => {
                if let Some((name, index)) = step {
                    self.emit(|| RunEventKind::StepCancel {
                        step_name: name.to_owned(),
                        step_index: index,
                    });
                }
                StepError::Cancelled {
                    run_id: self.run_id.clone(),
                }
            }
            _ => StepError::LeaseLost {
                run_id: self.run_id.clone(),
            },
        }
    }

    /// Reports progress: emits `run:progress` and persists it (overwriting the previous report).
    /// A report refused because the run was cancelled or its lease lost marks the run so, and
    /// the next `run` fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # use durable_jobs::prelude::*;
    /// # use durable_jobs::steps::Progress;
    /// # async fn f(step: &mut StepContext) {
    /// step.progress(50).await;
    /// step.progress((75, 100)).await;
    /// step.progress(Progress::new(25).of(100).message("Processing items...")).await;
    /// # }
    /// ```
    pub async fn progress(&mut self, progress: impl Into<Progress>) {
        let progress = progress.into();
        self.emit(|| RunEventKind::Progress {
            progress: progress.clone(),
        });
        if self.cancellation.is_cancelled() {
            return;
        }
        let json = serde_json::to_string(&progress).ok();
        let logs = self.take_logs();
        let now = self.shared.clock.now();
        match self
            .shared
            .store
            .update_progress(self.fence(), json, logs, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.refused(None).await;
            }
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %e, "progress could not be persisted")
            }
        }
    }

    /// Logs `message` at `level` with optional data: emits `log:write` and persists the entry
    /// with the run's next write.
    pub fn log(&mut self, level: LogLevel, message: impl Into<String>, data: Option<Value>) {
        self.sink().write(None, level, message.into(), data);
    }

    /// Logs at info level.
    pub fn info(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Info, message, None);
    }

    /// Logs at warn level.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message, None);
    }

    /// Logs at error level.
    pub fn error(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Error, message, None);
    }

    // --- for the worker

    pub(crate) fn take_logs(&self) -> Vec<NewLog> {
        self.sink.as_ref().map(|s| s.take()).unwrap_or_default()
    }

    pub(crate) fn wrote_rows(&self) -> bool {
        self.wrote_rows
    }

    /// Whether storing a step failed in the store during this execution.
    pub(crate) fn store_failed(&self) -> bool {
        self.store_failed
    }

    pub(crate) fn completed_step_count(&self) -> u64 {
        self.memo.len() as u64
    }

    pub(crate) fn current_step_index(&self) -> u64 {
        self.current_step_index
    }

    pub(crate) fn failed_step(&self) -> Option<&str> {
        self.failed_step.as_deref()
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }
}
