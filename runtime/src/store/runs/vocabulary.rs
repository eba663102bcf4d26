//! The words of the run store: statuses, levels, labels, filters and counts. Callers see them
//! through the step-job client; backends store and filter by them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Labels attached to a run: string keys (`^[a-zA-Z0-9\-_./]+$`) to string values.
pub type Labels = BTreeMap<String, String>;

/// Where a run is in its life.
///
/// `pending → leased → completed | failed`; `pending | leased → cancelled`. A leased run whose
/// lease expires is claimed again (same status, new lease generation). With a retry policy a
/// failed attempt goes back to `pending` with a not-before time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker holding a lease.
    Leased,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Leased,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The stored name: `pending`, `leased`, `completed`, `failed` or `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Leased => "leased",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// `completed`, `failed` or `cancelled`.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// `pending` or `leased`.
    pub const fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

/// Whether `key` is a valid label key: `^[a-zA-Z0-9\-_./]+$`, at most 512 bytes.
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= crate::id::MAX_ID_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Which runs `get_runs` returns. Empty lists mean "no filter"; newest first.
///
/// # Examples
///
/// ```
/// use durable_jobs::steps::{RunFilter, RunStatus};
///
/// let filter = RunFilter::new()
///     .status(RunStatus::Pending)
///     .status(RunStatus::Leased)
///     .label("env", "prod")
///     .limit(10)
///     .offset(20);
/// assert_eq!(filter.statuses.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RunFilter {
    /// Any of these statuses.
    pub statuses: Vec<RunStatus>,
    /// Any of these jobs (a job's client always filters by its own job).
    pub job_names: Vec<String>,
    /// All of these labels.
    pub labels: Labels,
    /// At most this many runs.
    pub limit: Option<u32>,
    /// Skipping this many.
    pub offset: Option<u32>,
    /// Only runs after this one in the listing order (older, or as old with a smaller id): the
    /// last run of the previous page. Unlike `offset`, pages stay exact while runs are created,
    /// deleted or change status, and a page costs the same however deep it is.
    pub before: Option<RunCursor>,
    /// Only runs created at or after this time.
    pub created_since: Option<Timestamp>,
    /// Only runs created before this time.
    pub created_until: Option<Timestamp>,
}

/// A position in the run listing (newest first): the creation time and id of a run, which
/// [`RunFilter::before`] continues after. The run itself may since have been deleted.
///
/// Its [token](RunCursor::token) is an opaque string for callers that hand the position to
/// someone else (the HTTP API's `cursor`), read back with `parse`.
///
/// # Examples
///
/// ```
/// use durable_jobs::steps::{RunCursor, RunFilter};
/// use durable_jobs::Timestamp;
///
/// let cursor = RunCursor::new(Timestamp::from_millis(1_700_000_000_000), "01HZX");
/// let token = cursor.token();
/// assert_eq!(token.parse::<RunCursor>(), Ok(cursor.clone()));
/// let next_page = RunFilter::new().limit(100).before(cursor);
/// assert!(next_page.before.is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunCursor {
    /// The run's creation time.
    pub created_at: Timestamp,
    /// The run's id.
    pub id: String,
}

impl RunCursor {
    /// The position of the run created at `created_at` with id `id`.
    pub fn new(created_at: Timestamp, id: impl Into<String>) -> Self {
        RunCursor {
            created_at,
            id: id.into(),
        }
    }

    /// The position as an opaque string, which `str::parse` reads back.
    pub fn token(&self) -> String {
        format!("{}.{}", self.created_at.as_millis(), self.id)
    }
}

impl FromStr for RunCursor {
    type Err = String;

    /// Reads a [`RunCursor::token`].
    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || format!("invalid run cursor {s:?}");
        let (millis, id) = s.split_once('.').ok_or_else(invalid)?;
        let millis: i64 = millis.parse().map_err(|_| invalid())?;
        if id.is_empty() || id.len() > crate::id::MAX_ID_BYTES {
            return Err(invalid());
        }
        Ok(RunCursor::new(Timestamp::from_millis(millis), id))
    }
}

/// How many runs a job has, by status, as `count_runs` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunCounts {
    /// The job.
    pub job_name: String,
    /// Runs waiting for a worker.
    pub pending: u64,
    /// Runs executing.
    pub leased: u64,
    /// Completed runs.
    pub completed: u64,
    /// Failed runs.
    pub failed: u64,
    /// Cancelled runs.
    pub cancelled: u64,
    /// Runs that completed at or after the time asked about.
    pub completed_since: u64,
    /// Runs that failed at or after the time asked about.
    pub failed_since: u64,
    /// When the oldest pending run was triggered.
    pub oldest_pending: Option<Timestamp>,
}

impl RunFilter {
    /// Every run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a status.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Adds a job name.
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.job_names.push(name.into());
        self
    }

    /// Adds a label condition.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the offset.
    pub fn offset(mut self, offset: u32) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Continues after `cursor` (keyset paging).
    pub fn before(mut self, cursor: RunCursor) -> Self {
        self.before = Some(cursor);
        self
    }

    /// Only runs created at or after `at`.
    pub fn created_since(mut self, at: Timestamp) -> Self {
        self.created_since = Some(at);
        self
    }

    /// Only runs created before `at`.
    pub fn created_until(mut self, at: Timestamp) -> Self {
        self.created_until = Some(at);
        self
    }
}

/// The status of a persisted step attempt.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// The step's output is memoised.
    Completed,
    /// The step returned an error.
    Failed,
    /// The step failed because its run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// `completed`, `failed` or `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for StepStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "completed" => Ok(StepStatus::Completed),
            "failed" => Ok(StepStatus::Failed),
            "cancelled" => Ok(StepStatus::Cancelled),
            _ => Err(format!("unknown step status {s:?}")),
        }
    }
}

/// The level of a `step.log` entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Information.
    Info,
    /// A warning.
    Warn,
    /// An error.
    Error,
}

impl LogLevel {
    /// `info`, `warn` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(format!("unknown log level {s:?}")),
        }
    }
}
