//! The instances of continuous, debounce and task jobs: listed across jobs with filters and
//! keyset pages, read one at a time with their state, and acted on with their client's
//! commands.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::client::DynamicJob;
use durable_jobs::store::InstanceQuery;
use durable_jobs::{
    ContinuousState, FlushOutcome, InstanceKey, JobKind, Registry, StartResult, Timestamp,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audited;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::query::QueryPairs;
use crate::wire::{self, iso};
use crate::{Caller, HttpAuth, Shared};

fn iso_opt(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(iso(t)))
}

/// A page cursor: the last key of the page, as hex of its JSON, so it survives any URL.
fn encode_cursor(key: &InstanceKey) -> String {
    let json = json!([key.kind().as_str(), key.job(), key.id()]).to_string();
    json.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(s: &str) -> Option<InstanceKey> {
    if !s.len().is_multiple_of(2) || s.len() > 4096 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    let (kind, job, id): (String, String, String) = serde_json::from_slice(&bytes?).ok()?;
    Some(InstanceKey::new(JobKind::parse(&kind)?, job, id))
}

fn parse_kind(s: &str) -> ApiResult<JobKind> {
    match JobKind::parse(s) {
        Some(kind) if kind != JobKind::Step => Ok(kind),
        _ => Err(ApiError::bad_request(format!(
            "Invalid kind: {s}. Must be one of: continuous, debounce, task"
        ))),
    }
}

fn parse_time(name: &str, s: &str, now: Timestamp) -> ApiResult<Timestamp> {
    if s == "now" {
        return Ok(now);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Timestamp::from_millis(t.timestamp_millis()))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid {name}: must be an ISO 8601 time or \"now\""
            ))
        })
}

/// The kind of a registered instance job, or 404 (400 for a step job).
fn job_kind<R: Registry, A: HttpAuth>(s: &Shared<R, A>, job: &str) -> ApiResult<JobKind> {
    match s.client.jobs().into_iter().find(|j| j.name == job) {
        Some(j) if j.kind == JobKind::Step => Err(ApiError::bad_request(format!(
            "{job} is a step job: it has runs, not instances"
        ))),
        Some(j) => Ok(j.kind),
        None => Err(ApiError::not_found(format!("Job not found: {job}"))),
    }
}

/// `GET /instances?kind=&job=&status=&dueBefore=&limit=&cursor=`.
pub(crate) async fn list<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let q = QueryPairs::parse(uri.query());
    let mut query = InstanceQuery::new();
    if let Some(kind) = q.get("kind").filter(|k| !k.is_empty()) {
        query = query.kind(parse_kind(kind)?);
    }
    if let Some(job) = q.get("job").filter(|j| !j.is_empty()) {
        let kind = job_kind(&s, job)?;
        if query.kind.is_some_and(|k| k != kind) {
            return Err(ApiError::bad_request(format!("{job} is a {kind} job")));
        }
        query = query.kind(kind).job(job);
    }
    match q.get("status") {
        None | Some("") => {}
        Some("idle") => query = query.has_alarm(false),
        Some("scheduled") => query = query.has_alarm(true).retrying(false),
        Some("retrying") => query = query.retrying(true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid status: {other}. Must be one of: idle, scheduled, retrying"
            )))
        }
    }
    if let Some(t) = q.get("dueBefore").filter(|t| !t.is_empty()) {
        query = query.due_before(parse_time("dueBefore", t, s.client.runs().now())?);
    }
    query = query.limit(q.bounded("limit", 1000)?.unwrap_or(50).max(1) as u32);
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        query =
            query.after(decode_cursor(c).ok_or_else(|| ApiError::bad_request("Invalid cursor"))?);
    }
    let page = s.client.list_instances(query).await?;
    Ok(Json(json!({
        "items": page.instances.iter().map(|i| wire::instance(i, false)).collect::<Vec<_>>(),
        "nextCursor": page.next.as_ref().map(encode_cursor),
    })))
}

/// The instance named by `job` and `id` (and `kind`, checked when given).
fn instance_key<R: Registry, A: HttpAuth>(
    s: &Shared<R, A>,
    q: &QueryPairs,
) -> ApiResult<InstanceKey> {
    let job = q.required("job")?;
    let id = q.required("id")?;
    let kind = job_kind(s, job)?;
    if let Some(k) = q.get("kind").filter(|k| !k.is_empty()) {
        if parse_kind(k)? != kind {
            return Err(ApiError::bad_request(format!("{job} is a {kind} job")));
        }
    }
    Ok(InstanceKey::new(kind, job, id))
}

/// `GET /instance?job=&id=`: the instance with its state.
pub(crate) async fn get<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let key = instance_key(&s, &QueryPairs::parse(uri.query()))?;
    match s.client.instance(&key).await? {
        Some(info) => Ok(Json(wire::instance(&info, true))),
        None => Err(ApiError::not_found(format!("Instance not found: {key}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    job: String,
    id: String,
    #[serde(default)]
    state: Value,
}

fn start_json(r: &StartResult) -> Value {
    json!({
        "created": r.created,
        "status": match r.status {
            ContinuousState::Running => "running",
            ContinuousState::Retrying => "retrying",
            ContinuousState::Terminated => "terminated",
            ContinuousState::NotFound => "notFound",
            ContinuousState::Broken => "broken",
        },
        "nextRunAt": iso_opt(r.next_run_at),
    })
}

/// `POST /instance/start {job, id, state}`: starts a continuous instance.
pub(crate) async fn start<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    JsonBody(body): JsonBody<StartBody>,
) -> Response {
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let target = format!("{}:{}", body.job, body.id);
    let result = async {
        match s.client.by_name(&body.job)? {
            DynamicJob::Continuous(job) => {
                Ok(Json(start_json(&job.start(&body.id, body.state).await?)))
            }
            other => Err(ApiError::bad_request(format!(
                "{} is a {} job: only continuous jobs are started",
                body.job,
                other.kind()
            ))),
        }
    }
    .await;
    audited(&s, &caller, "instance.start", target, result).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventBody {
    job: String,
    id: String,
    #[serde(default)]
    event: Value,
    #[serde(default)]
    event_id: Option<String>,
}

fn flush_outcome(f: &FlushOutcome) -> Value {
    match f {
        FlushOutcome::Flushed => json!({ "outcome": "flushed" }),
        FlushOutcome::RetryScheduled(at) => {
            json!({ "outcome": "retryScheduled", "retryAt": iso(*at) })
        }
        FlushOutcome::Failed {
            message,
            next_flush_at,
        } => {
            json!({ "outcome": "failed", "error": message, "nextFlushAt": iso(*next_flush_at) })
        }
        FlushOutcome::Exhausted { message } => json!({ "outcome": "exhausted", "error": message }),
        _ => json!({ "outcome": "unknown" }),
    }
}

/// `POST /instance/event {job, id, event, eventId?}`: a debounce `add` or a task `send`.
pub(crate) async fn event<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    JsonBody(body): JsonBody<EventBody>,
) -> Response {
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let target = format!("{}:{}", body.job, body.id);
    let result = async {
        let event_id = body.event_id.as_deref();
        match s.client.by_name(&body.job)? {
            DynamicJob::Debounce(job) => {
                let r = job.add(&body.id, body.event, event_id).await?;
                Ok(Json(json!({
                    "created": r.created,
                    "eventCount": r.event_count,
                    "willFlushAt": iso_opt(r.will_flush_at),
                    "flush": r.flush.as_ref().map(flush_outcome),
                })))
            }
            DynamicJob::Task(job) => {
                let r = job.send(&body.id, body.event, event_id).await?;
                Ok(Json(json!({
                    "created": r.created,
                    "scheduledAt": iso_opt(r.scheduled_at),
                    "terminated": r.terminated,
                })))
            }
            other => Err(ApiError::bad_request(format!(
                "{} is a {} job: events go to debounce and task jobs",
                body.job,
                other.kind()
            ))),
        }
    }
    .await;
    audited(&s, &caller, "instance.event", target, result).await
}

/// `POST /instance/{trigger,flush,clear,terminate}?job=&id=[&reason=]`.
pub(crate) async fn act<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    Path(action): Path<String>,
    uri: Uri,
) -> Response {
    if !["trigger", "flush", "clear", "terminate"].contains(&action.as_str()) {
        return (axum::http::StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let q = QueryPairs::parse(uri.query());
    let key = match instance_key(&s, &q) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let id = key.id().to_owned();
    let reason = q.get("reason").filter(|r| !r.is_empty());
    let result = async {
        let refused = |kind: JobKind| {
            Err(ApiError::bad_request(format!(
                "Cannot {action} a {kind} job's instance"
            )))
        };
        let job = s.client.by_name(key.job())?;
        match (job, action.as_str()) {
            (DynamicJob::Continuous(j), "trigger") => {
                let r = j.trigger(&id).await?;
                Ok(Json(json!({
                    "terminated": r.terminated,
                    "retryScheduled": r.retry_scheduled,
                    "nextRunAt": iso_opt(r.next_run_at),
                })))
            }
            (DynamicJob::Continuous(j), "terminate") => {
                let r = j.terminate(&id, reason).await?;
                Ok(Json(json!({ "terminated": true, "reason": r.reason })))
            }
            (DynamicJob::Task(j), "trigger") => {
                let r = j.trigger(&id).await?;
                Ok(Json(json!({
                    "scheduledAt": iso_opt(r.scheduled_at),
                    "terminated": r.terminated,
                })))
            }
            (DynamicJob::Task(j), "terminate") => {
                j.terminate(&id).await?;
                Ok(Json(json!({ "terminated": true })))
            }
            (DynamicJob::Debounce(j), "flush") => {
                let r = j.flush(&id).await?;
                Ok(Json(json!({
                    "flushed": r.flushed,
                    "eventCount": r.event_count,
                    "retryScheduled": r.retry_scheduled,
                    "willFlushAt": iso_opt(r.will_flush_at),
                })))
            }
            (DynamicJob::Debounce(j), "clear") => {
                let r = j.clear(&id).await?;
                Ok(Json(json!({ "discardedEvents": r.discarded_events })))
            }
            (job, _) => refused(job.kind()),
        }
    }
    .await;
    audited(
        &s,
        &caller,
        &format!("instance.{action}"),
        key.to_string(),
        result,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = InstanceKey::new(JobKind::Task, "orders", "a:b/é");
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        for bad in ["", "zz", "abc", "5b5d", "5b2278222c2279222c227a225d"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
