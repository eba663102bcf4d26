//! Runs as callers see them: statuses, dispositions, trigger options, filters, progress, step and
//! log records.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ValidationTarget};
use crate::id::check_identifier;
use crate::time::Timestamp;

pub use crate::store::runs::{
    is_valid_label_key, Labels, LogLevel, RunCounts, RunCursor, RunFilter, RunStatus, StepStatus,
};

/// How a trigger was satisfied.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// A new run was created.
    Created,
    /// A run with the same idempotency key existed (in any status); it is returned unchanged.
    Idempotent,
    /// `coalesce: skip` found a pending run with the same concurrency key; it is returned
    /// unchanged and the new input was dropped.
    Coalesced,
}

impl Disposition {
    /// `created`, `idempotent` or `coalesced`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Disposition::Created => "created",
            Disposition::Idempotent => "idempotent",
            Disposition::Coalesced => "coalesced",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a trigger does when a pending run with the same concurrency key exists.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Coalesce {
    /// Return the pending run (disposition [`Disposition::Coalesced`]) instead of failing.
    Skip,
}

/// Options of `trigger`, `trigger_and_wait` and each `batch_trigger` item.
///
/// # Examples
///
/// ```
/// use durable_jobs::steps::{Coalesce, TriggerOptions};
///
/// let options = TriggerOptions::new()
///     .idempotency_key("import-2026-01-01")
///     .concurrency_key("org-42")
///     .coalesce(Coalesce::Skip)
///     .label("env", "prod");
/// assert_eq!(options.labels.get("env").map(String::as_str), Some("prod"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct TriggerOptions {
    /// Per job: a second trigger with the same key returns the existing run, whatever its status,
    /// for as long as that run exists.
    pub idempotency_key: Option<String>,
    /// At most one pending run per job and key, and at most one leased run per key across jobs.
    pub concurrency_key: Option<String>,
    /// Labels to filter runs by.
    pub labels: Labels,
    /// What to do when a pending run with the same concurrency key exists; needs
    /// `concurrency_key`. Without it such a trigger fails with [`Error::InvalidState`].
    pub coalesce: Option<Coalesce>,
}

impl TriggerOptions {
    /// No keys, no labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the concurrency key.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces the labels.
    pub fn labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the coalescing behaviour.
    pub fn coalesce(mut self, coalesce: Coalesce) -> Self {
        self.coalesce = Some(coalesce);
        self
    }

    /// Checks keys, labels and coalesce; `job` names the job in the error.
    pub(crate) fn validate(&self, job: &str) -> Result<(), Error> {
        if let Some(k) = &self.idempotency_key {
            check_identifier(k).map_err(|why| {
                Error::validation(
                    ValidationTarget::Key,
                    Some(job),
                    format!("idempotency key {why}"),
                )
            })?;
        }
        if let Some(k) = &self.concurrency_key {
            check_identifier(k).map_err(|why| {
                Error::validation(
                    ValidationTarget::Key,
                    Some(job),
                    format!("concurrency key {why}"),
                )
            })?;
        }
        if self.coalesce.is_some() && self.concurrency_key.is_none() {
            return Err(Error::validation(
                ValidationTarget::Key,
                Some(job),
                "coalesce requires concurrency_key",
            ));
        }
        validate_labels(&self.labels, Some(job))
    }
}

/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;

pub(crate) fn validate_labels(labels: &Labels, job: Option<&str>) -> Result<(), Error> {
    for (k, v) in labels {
        if !is_valid_label_key(k) {
            return Err(Error::validation(
                ValidationTarget::Key,
                job,
                format!("invalid label key {k:?}: label keys must match ^[a-zA-Z0-9\\-_./]+$"),
            ));
        }
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Error::validation(
                ValidationTarget::Key,
                job,
                format!(
                    "label {k:?} is {} bytes long, the limit is {MAX_LABEL_VALUE_BYTES}",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A progress report set by `step.progress`; it overwrites the previous one and survives the
/// run's completion.
///
/// # Examples
///
/// ```
/// use durable_jobs::steps::Progress;
///
/// let p = Progress::new(25).of(100).message("Processing items...");
/// assert_eq!((p.current, p.total, p.message.as_deref()), (25, Some(100), Some("Processing items...")));
/// assert_eq!(Progress::from((3, 10)), Progress::new(3).of(10));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// Units done.
    pub current: u64,
    /// Units in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// A message for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Progress {
    /// `current` units done, total unknown.
    pub fn new(current: u64) -> Self {
        Progress {
            current,
            total: None,
            message: None,
        }
    }

    /// Sets the total.
    pub fn of(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

impl From<u64> for Progress {
    fn from(current: u64) -> Self {
        Progress::new(current)
    }
}

impl From<(u64, u64)> for Progress {
    fn from((current, total): (u64, u64)) -> Self {
        Progress::new(current).of(total)
    }
}

/// One run of a step job, with its input and output decoded as `I` and `O`.
///
/// The untyped form (`Run<serde_json::Value, serde_json::Value>`) is what dynamic callers get.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Run<I = serde_json::Value, O = serde_json::Value> {
    /// A ULID, increasing with creation time.
    pub id: String,
    /// The job's persisted name.
    pub job_name: String,
    /// The input the run was triggered with.
    pub input: I,
    /// Where the run is.
    pub status: RunStatus,
    /// The idempotency key it was triggered with.
    pub idempotency_key: Option<String>,
    /// Its concurrency key.
    pub concurrency_key: Option<String>,
    /// One past the position of the last completed step persisted.
    pub current_step_index: u64,
    /// Completed steps persisted.
    pub completed_step_count: u64,
    /// The last progress report.
    pub progress: Option<Progress>,
    /// The output, once completed (`None` for a unit output stored as `null`).
    pub output: Option<O>,
    /// The error, once failed (or of the last failed attempt while a retry is pending).
    pub error: Option<String>,
    /// Its labels.
    pub labels: Labels,
    /// The worker holding the lease, while leased.
    pub lease_owner: Option<String>,
    /// When the lease lapses, while leased.
    pub lease_expires_at: Option<Timestamp>,
    /// Bumped by every claim; fences the executing worker's writes.
    pub lease_generation: u64,
    /// The attempt the run is making (1 unless a retry policy retried it).
    pub attempt: u32,
    /// With a retry policy: the run is not claimed before this time.
    pub not_before: Option<Timestamp>,
    /// When it was first claimed.
    pub started_at: Option<Timestamp>,
    /// When it became completed, failed or cancelled.
    pub completed_at: Option<Timestamp>,
    /// When it was triggered.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl<I, O> Run<I, O> {
    /// Whether the run is completed, failed or cancelled.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether the run is pending or leased.
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }
}

/// What `trigger` and `batch_trigger` return: the run and how it was obtained.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Triggered<I = serde_json::Value, O = serde_json::Value> {
    /// The run: new, or the existing one for an idempotent or coalesced trigger.
    pub run: Run<I, O>,
    /// How it was obtained.
    pub disposition: Disposition,
}

impl<I, O> std::ops::Deref for Triggered<I, O> {
    type Target = Run<I, O>;
    fn deref(&self) -> &Run<I, O> {
        &self.run
    }
}

/// What `trigger_and_wait` returns.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Completed<O = serde_json::Value> {
    /// The run's id.
    pub id: String,
    /// Its output.
    pub output: O,
    /// How the trigger was satisfied.
    pub disposition: Disposition,
}

/// One `batch_trigger` item: an input and its options.
///
/// # Examples
///
/// ```
/// use durable_jobs::steps::{BatchItem, TriggerOptions};
///
/// let plain: BatchItem<u32> = 5.into();
/// let keyed = BatchItem::new(6).options(TriggerOptions::new().idempotency_key("key-6"));
/// assert_eq!(plain.input, 5);
/// assert_eq!(keyed.options.idempotency_key.as_deref(), Some("key-6"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BatchItem<I> {
    /// The input.
    pub input: I,
    /// Its options.
    pub options: TriggerOptions,
}

impl<I> BatchItem<I> {
    /// An item with default options.
    pub fn new(input: I) -> Self {
        BatchItem {
            input,
            options: TriggerOptions::default(),
        }
    }

    /// Sets the options.
    pub fn options(mut self, options: TriggerOptions) -> Self {
        self.options = options;
        self
    }
}

impl<I> From<I> for BatchItem<I> {
    fn from(input: I) -> Self {
        BatchItem::new(input)
    }
}

impl RunCursor {
    /// The position of `run`.
    pub fn of<I, O>(run: &Run<I, O>) -> Self {
        RunCursor::new(run.created_at, run.id.clone())
    }
}

/// One persisted step attempt (kept after the run ends only with `preserve_steps`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepRecord {
    /// A ULID.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The step's name, its memoisation key.
    pub name: String,
    /// Its position within the execution that ran it.
    pub index: u64,
    /// How it ended.
    pub status: StepStatus,
    /// Its output, when completed.
    pub output: Option<serde_json::Value>,
    /// Its error, when failed or cancelled.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
}

/// One persisted `step.log` entry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LogRecord {
    /// A ULID, increasing.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The step it was written in, if any.
    pub step_name: Option<String>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Structured data.
    pub data: Option<serde_json::Value>,
    /// When it was written.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_the_upstream_pattern() {
        for ok in ["env", "app.kubernetes.io/name", "a-b_c", "A9"] {
            assert!(is_valid_label_key(ok), "{ok}");
        }
        for bad in ["", "invalid key", "key\"injection", "ümlaut", "a:b"] {
            assert!(!is_valid_label_key(bad), "{bad}");
        }
    }

    #[test]
    fn options_are_validated() {
        let ok = TriggerOptions::new()
            .concurrency_key("k")
            .coalesce(Coalesce::Skip)
            .label("env", "x");
        assert!(ok.validate("j").is_ok());
        let no_key = TriggerOptions::new().coalesce(Coalesce::Skip);
        assert!(matches!(
            no_key.validate("j"),
            Err(Error::Validation {
                target: ValidationTarget::Key,
                ..
            })
        ));
        let bad_label = TriggerOptions::new().label("bad key", "x");
        let err = bad_label
            .validate("j")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("invalid label key")));
        assert!(TriggerOptions::new()
            .idempotency_key("")
            .validate("j")
            .is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        }
        assert!(RunStatus::Completed.is_terminal() && RunStatus::Pending.is_active());
    }
}
