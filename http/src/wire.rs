//! The JSON the API speaks. The run, step and log shapes are `@coji/durably` 0.15's
//! (`ClientRun`, `Step`, `Log`, camelCase, ISO timestamps); the rest extend them in the same
//! style.

use std::collections::BTreeMap;
use std::time::Duration;

use durable_jobs::client::{InstanceInfo, JobInfo};
use durable_jobs::steps::{LogRecord, Run, StepRecord};
use durable_jobs::store::{InstanceCounts, Lease};
use durable_jobs::{Backoff, RetryPolicy, Schedule, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The body of `POST /trigger`, as `@coji/durably` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TriggerRequest {
    /// The step job to run.
    #[serde(default)]
    pub job_name: String,
    /// Its input, decoded into the job's input type.
    #[serde(default)]
    pub input: Value,
    /// Per job: a second trigger with this key returns the first run.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// At most one pending run per job and key.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// Labels to filter runs by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `"skip"`: return the pending run with the same concurrency key instead of failing.
    #[serde(default)]
    pub coalesce: Option<String>,
}

pub(crate) fn iso(t: Timestamp) -> String {
    t.to_rfc3339()
}

fn iso_opt(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(iso(t)))
}

/// `ClientRun`: the run without its keys and lease, plus `isTerminal` and `isActive`; with
/// `attempt` beyond upstream.
pub(crate) fn client_run(run: &Run) -> Value {
    json!({
        "id": run.id,
        "jobName": run.job_name,
        "input": run.input,
        "status": run.status.as_str(),
        "currentStepIndex": run.current_step_index,
        "completedStepCount": run.completed_step_count,
        "progress": run.progress,
        "output": run.output.clone().unwrap_or(Value::Null),
        "error": run.error,
        "labels": run.labels,
        "startedAt": iso_opt(run.started_at),
        "completedAt": iso_opt(run.completed_at),
        "createdAt": iso(run.created_at),
        "isTerminal": run.is_terminal(),
        "isActive": run.is_active(),
        "attempt": run.attempt,
    })
}

/// `Step`.
pub(crate) fn step(s: &StepRecord) -> Value {
    json!({
        "id": s.id,
        "runId": s.run_id,
        "name": s.name,
        "index": s.index,
        "status": s.status.as_str(),
        "output": s.output.clone().unwrap_or(Value::Null),
        "error": s.error,
        "startedAt": iso(s.started_at),
        "completedAt": iso_opt(s.completed_at),
    })
}

/// `Log`.
pub(crate) fn log(l: &LogRecord) -> Value {
    json!({
        "id": l.id,
        "runId": l.run_id,
        "stepName": l.step_name,
        "level": l.level.as_str(),
        "message": l.message,
        "data": l.data.clone().unwrap_or(Value::Null),
        "createdAt": iso(l.created_at),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn schedule(s: &Schedule) -> Value {
    match s {
        Schedule::Every(d) => json!({ "every": millis(*d) }),
        Schedule::Cron(c) => json!({ "cron": c.expression(), "timeZone": c.time_zone() }),
    }
}

fn backoff(b: &Backoff) -> Value {
    match b {
        Backoff::Constant(d) => json!({ "type": "constant", "delay": millis(*d) }),
        Backoff::Linear {
            initial,
            increment,
            max,
        } => json!({
            "type": "linear", "initial": millis(*initial), "increment": millis(*increment),
            "max": max.map(millis),
        }),
        Backoff::Exponential {
            initial,
            factor,
            max,
        } => json!({
            "type": "exponential", "initial": millis(*initial), "factor": factor,
            "max": max.map(millis),
        }),
    }
}

fn retry(r: &RetryPolicy) -> Value {
    json!({
        "maxAttempts": r.max_attempts(),
        "backoff": backoff(r.strategy()),
        "jitter": r.has_jitter(),
        "maxDuration": r.duration_limit().map(millis),
    })
}

/// A registered job and its settings; durations in milliseconds.
pub(crate) fn job(j: &JobInfo) -> Value {
    json!({
        "name": j.name,
        "kind": j.kind.as_str(),
        "schedule": j.schedule.as_ref().map(schedule),
        "startImmediately": j.start_immediately,
        "flushAfter": j.flush_after.map(millis),
        "quiet": j.quiet.map(millis),
        "maxEvents": j.max_events,
        "retry": j.retry.as_ref().map(retry),
    })
}

fn lease(l: &Lease) -> Value {
    json!({ "owner": l.owner, "until": iso(l.until) })
}

/// What state an instance is in: `broken` (its stored state no longer decodes), `running` (an
/// execution holds its alarm), `retrying`, `scheduled` (an alarm is set) or `idle`.
pub(crate) fn instance_status(i: &InstanceInfo) -> &'static str {
    if i.broken.is_some() {
        "broken"
    } else if i.running {
        "running"
    } else if i.retry_attempt > 0 {
        "retrying"
    } else if i.next_alarm.is_some() {
        "scheduled"
    } else {
        "idle"
    }
}

/// An instance, with or without its state.
pub(crate) fn instance(i: &InstanceInfo, with_state: bool) -> Value {
    let mut v = json!({
        "kind": i.key.kind().as_str(),
        "job": i.key.job(),
        "id": i.key.id(),
        "status": instance_status(i),
        "createdAt": iso(i.created_at),
        "updatedAt": iso(i.updated_at),
        "runCount": i.run_count,
        "eventCount": i.event_count,
        "executeCount": i.execute_count,
        "batchStartedAt": iso_opt(i.batch_started_at),
        "lastEventAt": iso_opt(i.last_event_at),
        "nextAlarm": iso_opt(i.next_alarm),
        "retryAttempt": i.retry_attempt,
        "retryStartedAt": iso_opt(i.retry_started_at),
        "lastError": i.last_error,
        "lease": i.lease.as_ref().map(lease),
        "broken": i.broken,
    });
    if with_state {
        v["state"] = i.state.clone().unwrap_or(Value::Null);
    }
    v
}

/// Per-job instance counts, with the alarm lag at `now` in milliseconds.
pub(crate) fn instance_counts(c: &InstanceCounts, now: Timestamp) -> Value {
    json!({
        "kind": c.kind.as_str(),
        "job": c.job,
        "total": c.total,
        "scheduled": c.scheduled,
        "retrying": c.retrying,
        "due": c.due,
        "alarmLag": c.oldest_due.map(|t| millis(now.saturating_duration_since(t))),
        "nextAlarm": iso_opt(c.next_alarm),
    })
}
