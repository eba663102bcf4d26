//! The telemetry events and their wire form.

use serde_json::{json, Map, Value};

use crate::id::{InstanceKey, JobKind};
use crate::job::debounce::FlushReason;
use crate::retry::ExhaustionReason;
use crate::time::Timestamp;

/// One telemetry event, as subscribers receive it and the outbox stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// A UUIDv7, for downstream de-duplication.
    pub event_id: String,
    /// When it happened, on the engine's clock.
    pub timestamp: Timestamp,
    /// The instance it concerns.
    pub instance: InstanceKey,
    /// What happened.
    pub kind: EventKind,
}

/// The nine event types and their payloads.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// `job.started`: a continuous instance was created.
    Started {
        /// The start input.
        input: Value,
    },
    /// `job.executed`: user code completed successfully.
    Executed {
        /// Continuous: the run count; task: the execution count; debounce: 0.
        run_count: u64,
        /// Time spent in user code.
        duration_ms: u64,
        /// The attempt that succeeded.
        attempt: u32,
        /// The state before the run.
        pre_execution_state: Option<Value>,
    },
    /// `job.failed`: user code failed.
    Failed {
        /// The error's message.
        message: String,
        /// As in `Executed`.
        run_count: u64,
        /// The attempt that failed.
        attempt: u32,
        /// Whether a retry is scheduled.
        will_retry: bool,
        /// The state before the run.
        pre_execution_state: Option<Value>,
    },
    /// `job.retryExhausted`: the retry policy gave up; the instance is purged.
    RetryExhausted {
        /// Attempts made.
        attempts: u32,
        /// Why the policy gave up, as the `on_retry_exhausted` hook is told.
        reason: ExhaustionReason,
    },
    /// `job.terminated`: an instance was terminated by its client or by its own code.
    Terminated {
        /// The reason given.
        reason: Option<String>,
        /// Runs so far.
        run_count: u64,
    },
    /// `debounce.started`: the first event of a batch arrived.
    DebounceStarted {
        /// The latest time the batch will be flushed.
        flush_at: Timestamp,
    },
    /// `debounce.flushed`: a batch was processed.
    DebounceFlushed {
        /// Events in the batch.
        event_count: u64,
        /// Why it was flushed.
        reason: FlushReason,
        /// From the first event to the flush.
        duration_ms: u64,
    },
    /// `task.scheduled`: a task scheduled its `execute`.
    TaskScheduled {
        /// When `execute` will run.
        scheduled_at: Timestamp,
        /// `event`, `execute` or `idle`.
        trigger: &'static str,
    },
    /// `job.broken`: the instance's stored state does not decode (even after migration); it
    /// runs no more until a deploy that decodes it starts, or it is deleted. Emitted once, when
    /// it breaks.
    Broken {
        /// Why the state does not decode.
        message: String,
    },
}

impl EventKind {
    /// The wire name, such as `job.started`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "job.started",
            EventKind::Executed { .. } => "job.executed",
            EventKind::Failed { .. } => "job.failed",
            EventKind::RetryExhausted { .. } => "job.retryExhausted",
            EventKind::Terminated { .. } => "job.terminated",
            EventKind::DebounceStarted { .. } => "debounce.started",
            EventKind::DebounceFlushed { .. } => "debounce.flushed",
            EventKind::TaskScheduled { .. } => "task.scheduled",
            EventKind::Broken { .. } => "job.broken",
        }
    }
}

/// A UUIDv7 as text, made from a ULID (the engine's one id generator): both are 48 bits of
/// milliseconds since the epoch followed by random bits, so it is enough to set the version and
/// variant bits.
pub(crate) fn uuid_v7() -> String {
    let bits = ulid::Ulid::new().0;
    let bits = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x7 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

impl JobEvent {
    pub(crate) fn new(instance: &InstanceKey, timestamp: Timestamp, kind: EventKind) -> Self {
        JobEvent {
            event_id: uuid_v7(),
            timestamp,
            instance: instance.clone(),
            kind,
        }
    }

    /// The wire name, such as `job.started`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The wire form: the spec's base fields (`type`, `eventId`, `timestamp`, `source`,
    /// `instanceId`, `id`, `jobType`, `jobName`) plus the payload fields, camelCase.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.type_name()));
        m.insert("eventId".into(), json!(self.event_id));
        m.insert("timestamp".into(), json!(self.timestamp.to_rfc3339()));
        m.insert("source".into(), json!("job"));
        m.insert("instanceId".into(), json!(self.instance.to_string()));
        m.insert("id".into(), json!(self.instance.id()));
        m.insert("jobType".into(), json!(self.instance.kind().as_str()));
        m.insert("jobName".into(), json!(self.instance.job()));
        let payload = match &self.kind {
            EventKind::Started { input } => json!({ "input": input }),
            EventKind::Executed {
                run_count,
                duration_ms,
                attempt,
                pre_execution_state,
            } => json!({
                "runCount": run_count, "durationMs": duration_ms, "attempt": attempt,
                "preExecutionState": pre_execution_state,
            }),
            EventKind::Failed {
                message,
                run_count,
                attempt,
                will_retry,
                pre_execution_state,
            } => json!({
                "error": { "message": message }, "runCount": run_count, "attempt": attempt,
                "willRetry": will_retry, "preExecutionState": pre_execution_state,
            }),
            EventKind::RetryExhausted { attempts, reason } => {
                json!({ "attempts": attempts, "reason": reason.as_str() })
            }
            EventKind::Terminated { reason, run_count } => {
                json!({ "reason": reason, "runCount": run_count })
            }
            EventKind::DebounceStarted { flush_at } => json!({ "flushAt": flush_at.to_rfc3339() }),
            EventKind::DebounceFlushed {
                event_count,
                reason,
                duration_ms,
            } => json!({
                "eventCount": event_count, "reason": reason.as_str(), "durationMs": duration_ms,
            }),
            EventKind::TaskScheduled {
                scheduled_at,
                trigger,
            } => json!({
                "scheduledAt": scheduled_at.to_rfc3339(), "trigger": trigger,
            }),
            EventKind::Broken { message } => json!({ "error": { "message": message } }),
        };
        if let Value::Object(p) = payload {
            m.extend(p);
        }
        Value::Object(m)
    }

    /// The kind of the job concerned.
    pub fn job_kind(&self) -> JobKind {
        self.instance.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuid_v7_text_ordered_by_time() {
        let id = uuid_v7();
        let groups: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(id.as_bytes()[14], b'7', "version 7: {id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "RFC variant: {id}"
        );
        let millis = u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now.abs_diff(millis) < 60_000, "{millis} vs {now}");
    }
}
