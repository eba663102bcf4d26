//! The route table, and what every handler shares: reading the run a run-level route names,
//! and recording what an action did.

mod bulk;
mod instances;
mod meta;
mod runs;
mod streams;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use durable_jobs::steps::Run;
use durable_jobs::Registry;

use crate::error::{ApiError, ApiResult};
use crate::query::QueryPairs;
use crate::{AuditRecord, Caller, HttpAuth, RunOperation, Shared};

pub(crate) fn router<R: Registry, A: HttpAuth>(
    shared: Arc<Shared<R, A>>,
    extensions: bool,
) -> Router {
    let limit = shared.body_limit_layer();
    let mut r = Router::new()
        .route("/trigger", post(runs::trigger::<R, A>))
        .route("/runs", get(runs::list::<R, A>))
        .route("/run", get(runs::get::<R, A>).delete(runs::delete::<R, A>))
        .route("/steps", get(runs::steps::<R, A>))
        .route("/retrigger", post(runs::retrigger::<R, A>))
        .route("/cancel", post(runs::cancel::<R, A>))
        .route("/subscribe", get(streams::run::<R, A>))
        .route("/runs/subscribe", get(streams::runs::<R, A>));
    if extensions {
        r = r
            .route("/logs", get(runs::logs::<R, A>))
            .route("/runs/bulk", post(bulk::runs::<R, A>))
            .route("/jobs", get(meta::jobs::<R, A>))
            .route("/stats", get(meta::stats::<R, A>))
            .route("/health", get(meta::health::<R, A>))
            .route("/nodes", get(meta::nodes::<R, A>))
            .route("/metrics", get(meta::metrics::<R, A>))
            .route("/openapi.json", get(meta::openapi))
            .route("/instances", get(instances::list::<R, A>))
            .route("/instance", get(instances::get::<R, A>))
            .route("/instance/start", post(instances::start::<R, A>))
            .route("/instance/event", post(instances::event::<R, A>))
            .route("/instance/{action}", post(instances::act::<R, A>))
            .route("/events/subscribe", get(streams::job_events::<R, A>))
            .merge(crate::dashboard::routes());
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(limit)
        .with_state(shared)
}

/// Unknown routes, as `@coji/durably` answers them.
async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response()
}

/// Reads the run named by `runId` and asks the auth whether the caller may do `operation`
/// with it: 400 without a `runId`, 404 `Run not found`, or the auth's refusal.
pub(crate) async fn run_access<R: Registry, A: HttpAuth>(
    shared: &Shared<R, A>,
    caller: &Caller<A::Context>,
    query: &QueryPairs,
    operation: RunOperation,
) -> Result<Run, Response> {
    let id = query
        .required("runId")
        .map_err(IntoResponse::into_response)?;
    if id.len() > durable_jobs::MAX_ID_BYTES {
        return Err(ApiError::bad_request("Invalid runId: too long").into_response());
    }
    let run = shared
        .client
        .runs()
        .get_run(id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .ok_or_else(|| ApiError::not_found("Run not found").into_response())?;
    shared
        .auth
        .on_run_access(&caller.ctx, &run, operation)
        .await?;
    Ok(run)
}

/// Answers an action and tells the audit hook (and `tracing`) what it did.
pub(crate) async fn audited<R: Registry, A: HttpAuth, T: IntoResponse>(
    shared: &Shared<R, A>,
    caller: &Caller<A::Context>,
    action: &str,
    target: String,
    result: ApiResult<T>,
) -> Response {
    let (response, error) = match result {
        Ok(ok) => (ok.into_response(), None),
        Err(e) => {
            let message = e.message.clone();
            (e.into_response(), Some(message))
        }
    };
    let record = AuditRecord {
        action: action.to_owned(),
        target,
        status: response.status().as_u16(),
        error,
    };
    tracing::info!(
        target: "durable_jobs_http::audit",
        action = %record.action,
        subject = %record.target,
        status = record.status,
        error = record.error.as_deref(),
        "action"
    );
    shared.auth.on_action(&caller.ctx, &record).await;
    response
}
