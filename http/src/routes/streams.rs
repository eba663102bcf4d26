//! The three streams: one run's events (`GET /subscribe`, closing after its terminal event),
//! every run's events in slim form (`GET /runs/subscribe`, never closing) and the eight job
//! events (`GET /events/subscribe`). A reconnect with `Last-Event-ID` (or `?lastEventId=`)
//! resumes after that event.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use durable_jobs::steps::{Run, RunStatus};
use durable_jobs::{JobKind, Registry};
use serde_json::{json, Map, Value};

use super::run_access;
use crate::error::ApiError;
use crate::query::QueryPairs;
use crate::sse::feed::{FeedEvent, Position, WireEvent};
use crate::sse::throttle::Frame;
use crate::sse::{self, plain_frame, run_frame};
use crate::wire::iso;
use crate::{Caller, HttpAuth, RunOperation, Shared, SubscribeFilter};

/// The events `@coji/durably`'s `subscribe(runId)` forwards, plus `run:retry`.
const ONE_RUN_TYPES: &[&str] = &[
    "run:leased",
    "run:progress",
    "run:retry",
    "run:complete",
    "run:fail",
    "run:cancel",
    "run:delete",
    "step:start",
    "step:complete",
    "step:fail",
    "log:write",
];

fn last_event_id(headers: &HeaderMap, q: &QueryPairs) -> Option<Position> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| q.get("lastEventId"))
        .and_then(Position::parse)
}

fn position(epoch: &str, seq: u64) -> Position {
    Position {
        epoch: epoch.to_owned(),
        seq,
    }
}

/// The events a new subscriber to `run` starts with (`sequence` 0), as `@coji/durably` sends
/// them: leased (and its progress), or the terminal event; nothing while pending.
fn snapshot(run: &Run) -> Vec<(&'static str, Value)> {
    let base = |kind: &str, extra: Value| {
        let mut m = Map::new();
        m.insert("type".into(), json!(kind));
        m.insert("runId".into(), json!(run.id));
        m.insert("jobName".into(), json!(run.job_name));
        m.insert("labels".into(), json!(run.labels));
        if let Value::Object(extra) = extra {
            m.extend(extra);
        }
        m.insert("timestamp".into(), json!(iso(run.updated_at)));
        m.insert("sequence".into(), json!(0));
        Value::Object(m)
    };
    match run.status {
        RunStatus::Pending => Vec::new(),
        RunStatus::Leased => {
            let mut out = vec![(
                "run:leased",
                base(
                    "run:leased",
                    json!({
                        "input": run.input,
                        "leaseOwner": run.lease_owner.clone().unwrap_or_default(),
                        "leaseExpiresAt": iso(run.lease_expires_at.unwrap_or(run.updated_at)),
                    }),
                ),
            )];
            if let Some(p) = &run.progress {
                out.push((
                    "run:progress",
                    base("run:progress", json!({ "progress": p })),
                ));
            }
            out
        }
        RunStatus::Completed => vec![(
            "run:complete",
            base(
                "run:complete",
                json!({ "output": run.output.clone().unwrap_or(Value::Null), "duration": 0 }),
            ),
        )],
        RunStatus::Failed => vec![(
            "run:fail",
            base(
                "run:fail",
                json!({ "error": run.error.clone().unwrap_or_default(), "failedStepName": "" }),
            ),
        )],
        RunStatus::Cancelled => vec![("run:cancel", base("run:cancel", json!({})))],
    }
}

/// `GET /subscribe?runId=`: a snapshot of the run, then its live events; the stream closes
/// after the run completes, fails, is cancelled or deleted. A reconnect gets what it missed;
/// one that already received the terminal event is held open quietly, so `EventSource` does
/// not reconnect every few seconds.
pub(crate) async fn run<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    let run = match run_access(&s, &caller, &q, RunOperation::Subscribe).await {
        Ok(run) => run,
        Err(response) => return response,
    };
    let after = last_event_id(&headers, &q);
    let sub = s.feed.subscribe(after.as_ref());
    let epoch = sub.head.epoch.clone();
    let run_id = run.id.clone();
    let map = move |e: &FeedEvent| -> Option<Frame> {
        let kind = e.item.type_name();
        (e.item.run_id() == Some(run_id.as_str()) && ONE_RUN_TYPES.contains(&kind))
            .then(|| run_frame(&position(&epoch, e.seq), e.item.json(), &run_id, kind))
    };
    let mut map = map;
    let mut options = s.stream_options(true);
    let first: Vec<Frame> = if sub.resumed {
        let replay: Vec<Frame> = sub.replay.iter().filter_map(&mut map).collect();
        if run.is_terminal() && !replay.iter().any(|f| f.terminal) {
            options.close_after_terminal = false;
        }
        replay
    } else {
        snapshot(&run)
            .into_iter()
            .map(|(kind, v)| run_frame(&sub.head, &v, &run.id, kind))
            .collect()
    };
    sse::stream(first, sub, map, options)
}

/// The slim form `GET /runs/subscribe` sends: no input or output, as `@coji/durably` does.
fn slim(ev: &WireEvent) -> Option<Value> {
    let full = ev.json();
    let keep: &[&str] = match ev.type_name() {
        "run:trigger" | "run:leased" | "run:complete" | "run:fail" | "run:cancel"
        | "run:delete" => &[],
        "run:coalesced" => &["skippedInput", "skippedLabels"],
        "run:progress" => &["progress"],
        "run:retry" => &["error", "nextAttempt", "notBefore"],
        "step:start" | "step:complete" | "step:cancel" => &["stepName", "stepIndex"],
        "step:fail" => &["stepName", "stepIndex", "error"],
        "log:write" => &["stepName", "level", "message", "data"],
        _ => return None,
    };
    let mut m = Map::new();
    for key in ["type", "runId", "jobName", "labels"].iter().chain(keep) {
        if let Some(v) = full.get(*key) {
            m.insert((*key).to_owned(), v.clone());
        }
    }
    Some(Value::Object(m))
}

fn matches(filter: &SubscribeFilter, ev: &WireEvent) -> bool {
    let labels = ev.labels();
    (filter.job_names.is_empty() || filter.job_names.iter().any(|j| j == ev.job_name()))
        && filter.labels.iter().all(|(k, v)| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .is_some_and(|have| have == v)
        })
}

/// `GET /runs/subscribe?jobName=&label.<k>=`: every run's events in slim form; never closes.
pub(crate) async fn runs<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    let filter = SubscribeFilter {
        job_names: q.all("jobName"),
        labels: q.labels(),
    };
    let filter = s.auth.scope_runs_subscribe(&caller.ctx, filter).await;
    let after = last_event_id(&headers, &q);
    let sub = s.feed.subscribe(after.as_ref());
    let epoch = sub.head.epoch.clone();
    let mut map = move |e: &FeedEvent| -> Option<Frame> {
        let ev = &e.item;
        let run_id = ev.run_id()?;
        if !matches(&filter, ev) {
            return None;
        }
        slim(ev).map(|v| run_frame(&position(&epoch, e.seq), &v, run_id, ev.type_name()))
    };
    let first = sub.replay.iter().filter_map(&mut map).collect();
    sse::stream(first, sub, map, s.stream_options(false))
}

/// `GET /events/subscribe?kind=&job=&type=` (each repeatable): the eight job events of
/// continuous, debounce and task jobs, as the telemetry sends them.
pub(crate) async fn job_events<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    _caller: Caller<A::Context>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = QueryPairs::parse(uri.query());
    let mut kinds = Vec::new();
    for k in q.all("kind") {
        match JobKind::parse(&k) {
            Some(kind) if kind != JobKind::Step => kinds.push(kind),
            _ => {
                return ApiError::bad_request(format!(
                    "Invalid kind: {k}. Must be one of: continuous, debounce, task"
                ))
                .into_response()
            }
        }
    }
    let jobs = q.all("job");
    let types = q.all("type");
    let after = last_event_id(&headers, &q);
    let sub = s.feed.subscribe(after.as_ref());
    let epoch = sub.head.epoch.clone();
    let mut map = move |e: &FeedEvent| -> Option<Frame> {
        let ev = &e.item;
        let kind = ev.job_kind()?;
        ((kinds.is_empty() || kinds.contains(&kind))
            && (jobs.is_empty() || jobs.iter().any(|j| j == ev.job_name()))
            && (types.is_empty() || types.iter().any(|t| t == ev.type_name())))
        .then(|| plain_frame(&position(&epoch, e.seq), ev.json()))
    };
    let first = sub.replay.iter().filter_map(&mut map).collect();
    sse::stream(first, sub, map, s.stream_options(false))
}
