//! Job kinds, instance keys and the rules for user-supplied ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user-supplied instance id, event id or idempotency key, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// The kind of a job, which decides its client accessor and its semantics.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum JobKind {
    /// A recurring job with persisted state (`#[continuous]`).
    Continuous,
    /// Events folded into state and flushed after a window or a count (`#[debounce]`).
    Debounce,
    /// An event-driven state machine that schedules itself (`#[task]`).
    Task,
    /// A run of memoised steps that resumes after a crash (`#[step_job]`).
    Step,
}

impl JobKind {
    /// The lowercase name used in storage, instance ids and telemetry.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Continuous => "continuous",
            JobKind::Debounce => "debounce",
            JobKind::Task => "task",
            JobKind::Step => "step",
        }
    }

    /// Parses the lowercase name written by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "continuous" => JobKind::Continuous,
            "debounce" => JobKind::Debounce,
            "task" => JobKind::Task,
            "step" => JobKind::Step,
            _ => return None,
        })
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of one job instance: its kind, its job's persisted name and the user's id.
///
/// The three parts are stored as separate columns. The display form `kind:name:id`, used in
/// errors, logs and the telemetry `instanceId`, names one instance only: a job's persisted name
/// never contains `:` (the job macros refuse one at compile time, the engine at start), so the
/// name ends at the second `:` and everything after it is the id, colons included.
///
/// # Examples
///
/// ```
/// use durable_jobs::{InstanceKey, JobKind};
///
/// let key = InstanceKey::new(JobKind::Debounce, "pre", "x:y");
/// let shown = key.to_string();
/// assert_eq!(shown, "debounce:pre:x:y");
/// let (kind, rest) = shown.split_once(':').unwrap();
/// let (job, id) = rest.split_once(':').unwrap();
/// assert_eq!((kind, job, id), ("debounce", "pre", "x:y"));
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct InstanceKey {
    kind: JobKind,
    job: String,
    id: String,
}

impl InstanceKey {
    /// The key of instance `id` of job `job` of kind `kind`. Does not validate `id`.
    pub fn new(kind: JobKind, job: impl Into<String>, id: impl Into<String>) -> Self {
        InstanceKey {
            kind,
            job: job.into(),
            id: id.into(),
        }
    }

    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The job's persisted name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The user-supplied id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.job, self.id)
    }
}

/// Checks a job's persisted name: an identifier without `:`, so that the display form of its
/// instance keys stays unambiguous. Returns the reason when it is refused.
pub(crate) fn check_job_name(name: &str) -> Result<(), String> {
    check_identifier(name)?;
    if name.contains(':') {
        return Err(
            "contains `:`, which separates it from the instance id in `kind:name:id`".into(),
        );
    }
    Ok(())
}

/// Checks a user-supplied identifier (instance id, event id, key): not empty, at most
/// [`MAX_ID_BYTES`] bytes, no control characters. Returns the reason when it is refused.
pub(crate) fn check_identifier(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_ID_BYTES {
        return Err(format!(
            "is {} bytes long, the limit is {MAX_ID_BYTES}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("user-123").is_ok());
        assert!(check_identifier("a:b:c").is_ok());
        assert!(check_identifier("").is_err());
        assert!(check_identifier("a\nb").is_err());
        assert!(check_identifier("\u{7f}").is_err());
        assert!(check_identifier(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check_identifier(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn job_names_have_no_colon() {
        assert!(check_job_name("webhook_batcher").is_ok());
        assert!(check_job_name("pre:x").is_err());
        assert!(check_job_name("").is_err());
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            JobKind::Continuous,
            JobKind::Debounce,
            JobKind::Task,
            JobKind::Step,
        ] {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
    }
}
