//! `@coji/durably`'s run routes (trigger, list, read, steps, retrigger, cancel, delete) with
//! its messages and status codes, and `GET /logs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::steps::{Coalesce, RunCursor, RunFilter, RunStatus, TriggerOptions};
use durable_jobs::{Error, Registry, Timestamp};
use serde_json::{json, Value};

use super::{audited, run_access};
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::query::QueryPairs;
use crate::wire::{self, TriggerRequest};
use crate::{Caller, HttpAuth, RunOperation, Shared};

/// The most runs one page returns.
pub(crate) const MAX_LIMIT: u64 = 1000;

const STATUSES: &str = "pending, leased, completed, failed, cancelled";

/// The filter of `GET /runs`: `jobName`*, `status`*, `label.<k>`, `limit`, `offset`, with
/// `@coji/durably`'s messages, and `createdSince`, `createdUntil` (ISO 8601) and `cursor` (the
/// `x-next-cursor` of the previous page).
pub(crate) fn parse_filter(q: &QueryPairs) -> ApiResult<RunFilter> {
    let mut filter = RunFilter::new();
    filter.job_names = q.all("jobName");
    for s in q.all("status") {
        if s.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Invalid status: empty value. Must be one of: {STATUSES}"
            )));
        }
        let status: RunStatus = s.parse().map_err(|_| {
            ApiError::bad_request(format!("Invalid status: {s}. Must be one of: {STATUSES}"))
        })?;
        filter.statuses.push(status);
    }
    filter.labels = q.labels();
    filter.limit = q.bounded("limit", MAX_LIMIT)?.map(|n| n as u32);
    filter.offset = q.bounded("offset", u64::from(u32::MAX))?.map(|n| n as u32);
    let time = |name: &str| -> ApiResult<Option<Timestamp>> {
        match q.get(name).filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| Some(Timestamp::from_millis(t.timestamp_millis())))
                .map_err(|_| {
                    ApiError::bad_request(format!("Invalid {name}: must be an ISO 8601 time"))
                }),
        }
    };
    filter.created_since = time("createdSince")?;
    filter.created_until = time("createdUntil")?;
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        filter.before = Some(
            c.parse::<RunCursor>()
                .map_err(|_| ApiError::bad_request("Invalid cursor"))?,
        );
    }
    Ok(filter)
}

/// The response header that carries the cursor of the next page, when the page is full.
pub(crate) const NEXT_CURSOR: &str = "x-next-cursor";

pub(crate) async fn trigger<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    JsonBody(body): JsonBody<TriggerRequest>,
) -> Response {
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    if body.job_name.is_empty() {
        return ApiError::bad_request("jobName is required").into_response();
    }
    let runs = s.client.runs();
    if !runs.has_job(&body.job_name) {
        return ApiError::not_found(format!("Job not found: {}", body.job_name)).into_response();
    }
    if let Err(refused) = s.auth.on_trigger(&caller.ctx, &body).await {
        return refused;
    }
    let result = async {
        let mut options = TriggerOptions::new().labels(body.labels.clone());
        options.idempotency_key = body.idempotency_key.clone();
        options.concurrency_key = body.concurrency_key.clone();
        match body.coalesce.as_deref() {
            None => {}
            Some("skip") => options = options.coalesce(Coalesce::Skip),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid coalesce: {other}. Must be \"skip\""
                )))
            }
        }
        let (run, disposition) = runs
            .trigger(&body.job_name, body.input.clone(), options)
            .await?;
        Ok(Json(
            json!({ "runId": run.id, "disposition": disposition.as_str() }),
        ))
    }
    .await;
    audited(&s, &caller, "run.trigger", body.job_name.clone(), result).await
}

/// `GET /runs`: a page of runs as `@coji/durably` lists them (a JSON array). A full page also
/// carries the position of its last run in the `x-next-cursor` header, which `cursor=` continues
/// after: keyset pages, whose cost does not grow with their depth as `offset`'s does.
pub(crate) async fn list<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> ApiResult<Response> {
    let filter = parse_filter(&QueryPairs::parse(uri.query()))?;
    let filter = s.auth.scope_runs(&caller.ctx, filter).await;
    let limit = filter.limit;
    let runs = s.client.runs().get_runs(filter).await?;
    let next = match (limit, runs.last()) {
        (Some(l), Some(last)) if runs.len() >= l as usize && l > 0 => {
            Some(RunCursor::of(last).token())
        }
        _ => None,
    };
    let body = Json(runs.iter().map(wire::client_run).collect::<Vec<Value>>());
    Ok(match next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        Some(value) => ([(HeaderName::from_static(NEXT_CURSOR), value)], body).into_response(),
        None => body.into_response(),
    })
}

pub(crate) async fn get<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    match run_access(&s, &caller, &q, RunOperation::Read).await {
        Ok(run) => Json(wire::client_run(&run)).into_response(),
        Err(response) => response,
    }
}

pub(crate) async fn steps<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    let run = match run_access(&s, &caller, &q, RunOperation::Steps).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    match s.client.runs().steps(&run.id).await {
        Ok(steps) => Json(steps.iter().map(wire::step).collect::<Vec<_>>()).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /logs?runId=`: the run's persisted log entries (access checked as `steps`).
pub(crate) async fn logs<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    let run = match run_access(&s, &caller, &q, RunOperation::Steps).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    match s.client.runs().logs(&run.id).await {
        Ok(logs) => Json(logs.iter().map(wire::log).collect::<Vec<_>>()).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What refused a run-level action, in `@coji/durably`'s words where it has them.
fn refusal(e: Error, verb: &str, id: &str) -> ApiError {
    match &e {
        Error::InvalidState { state, .. } if verb == "cancel" && state == "cancelled" => {
            ApiError::conflict(format!("Cannot cancel already cancelled run: {id}"))
        }
        Error::InvalidState { state, .. }
            if ["pending", "leased", "completed", "failed", "cancelled"]
                .contains(&state.as_str()) =>
        {
            ApiError::conflict(format!("Cannot {verb} {state} run: {id}"))
        }
        Error::InstanceNotFound { .. } => ApiError::not_found("Run not found"),
        _ => ApiError::from(e),
    }
}

pub(crate) async fn retrigger<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let run = match run_access(&s, &caller, &q, RunOperation::Retrigger).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    let result = if run.is_active() {
        Err(ApiError::conflict(format!(
            "Cannot retrigger {} run: {}",
            run.status, run.id
        )))
    } else {
        s.client
            .runs()
            .retrigger(&run.id)
            .await
            .map(|new| Json(json!({ "success": true, "runId": new.id })))
            .map_err(ApiError::from)
    };
    audited(&s, &caller, "run.retrigger", run.id.clone(), result).await
}

pub(crate) async fn cancel<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let run = match run_access(&s, &caller, &q, RunOperation::Cancel).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    let result = s
        .client
        .runs()
        .cancel(&run.id)
        .await
        .map(|()| Json(json!({ "success": true })))
        .map_err(|e| refusal(e, "cancel", &run.id));
    audited(&s, &caller, "run.cancel", run.id.clone(), result).await
}

pub(crate) async fn delete<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    if let Err(e) = caller.may_write(&s) {
        return e.into_response();
    }
    let run = match run_access(&s, &caller, &q, RunOperation::Delete).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    let result = s
        .client
        .runs()
        .delete_run(&run.id)
        .await
        .map(|()| Json(json!({ "success": true })))
        .map_err(|e| refusal(e, "delete", &run.id));
    audited(&s, &caller, "run.delete", run.id.clone(), result).await
}
