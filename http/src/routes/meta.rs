//! What an operator reads before acting: the job registry, per-job statistics, health, the
//! OpenAPI description, and metrics when the application provides them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::store::InstanceQuery;
use durable_jobs::Registry;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::query::QueryPairs;
use crate::wire::{self, iso};
use crate::{Caller, HttpAuth, Shared};

/// `GET /jobs`: every registered job with its kind, schedule, batching and retry settings.
pub(crate) async fn jobs<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
) -> Json<Vec<Value>> {
    Json(s.client.jobs().iter().map(wire::job).collect())
}

/// `GET /stats?window=<seconds>`: per step job, runs by status, completions and failures in
/// the window (one hour by default) with the throughput per minute, and the age of the oldest
/// pending run; per instance job, instances by state, due alarms and the alarm lag (how late
/// the most overdue alarm is).
pub(crate) async fn stats<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let q = QueryPairs::parse(uri.query());
    let window = q.bounded("window", 30 * 24 * 3600)?.unwrap_or(3600).max(60);
    let runs = s.client.runs();
    let now = runs.now();
    let since = now - Duration::from_secs(window);
    let minutes = window as f64 / 60.0;
    let run_counts = runs.count_runs(since).await?;
    let instance_counts = s.client.count_instances().await?;
    let mut step_jobs: Vec<Value> = run_counts
        .iter()
        .map(|c| {
            json!({
                "jobName": c.job_name,
                "pending": c.pending,
                "leased": c.leased,
                "completed": c.completed,
                "failed": c.failed,
                "cancelled": c.cancelled,
                "completedInWindow": c.completed_since,
                "failedInWindow": c.failed_since,
                "throughputPerMinute": (c.completed_since + c.failed_since) as f64 / minutes,
                "oldestPendingAge": c.oldest_pending.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            })
        })
        .collect();
    // Step jobs with no runs yet still get a row.
    for job in s.client.jobs() {
        if job.kind == durable_jobs::JobKind::Step
            && !run_counts.iter().any(|c| c.job_name == job.name)
        {
            step_jobs.push(json!({
                "jobName": job.name, "pending": 0, "leased": 0, "completed": 0, "failed": 0,
                "cancelled": 0, "completedInWindow": 0, "failedInWindow": 0,
                "throughputPerMinute": 0.0, "oldestPendingAge": null,
            }));
        }
    }
    step_jobs.sort_by(|a, b| a["jobName"].as_str().cmp(&b["jobName"].as_str()));
    Ok(Json(json!({
        "now": iso(now),
        "windowSeconds": window,
        "runs": step_jobs,
        "instances": instance_counts.iter().map(|c| wire::instance_counts(c, now)).collect::<Vec<_>>(),
    })))
}

/// `GET /health`: 200 `{"status":"ok"}` when the store answers a read, 503 otherwise. Not
/// authenticated, for load balancers and orchestrators.
pub(crate) async fn health<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
) -> Response {
    match s.client.list_instances(InstanceQuery::new().limit(1)).await {
        Ok(_) => Json(json!({ "status": "ok", "store": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": e.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /nodes`: on a feed shared by several processes, the nodes heard from lately (id =
/// their engine's lease owner, host, pid, when they joined and were last heard of) with the
/// step runs and instances each holds, and the leases held by owners that are not live nodes;
/// `{"shared": false, "nodes": []}` for one process.
pub(crate) async fn nodes<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
) -> ApiResult<Json<Value>> {
    let Some(reading) = s.feed.nodes() else {
        return Ok(Json(crate::nodes::to_json(None)));
    };
    match reading.await {
        Ok(nodes) => Ok(Json(crate::nodes::to_json(Some(&nodes)))),
        Err(e) => {
            tracing::warn!(error = %e, "reading the nodes failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Reading the nodes failed: {e}"),
            ))
        }
    }
}

/// `GET /metrics`: the application's metrics, 404 when it has none.
pub(crate) async fn metrics<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
) -> Response {
    match &s.metrics {
        Some(m) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            m.render(),
        )
            .into_response(),
        None => ApiError::not_found("No metrics are configured").into_response(),
    }
}

/// `GET /openapi.json`: the API's OpenAPI 3.0 description.
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../assets/openapi.json"),
    )
        .into_response()
}
