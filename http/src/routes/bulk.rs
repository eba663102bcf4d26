//! `POST /runs/bulk`: cancel, retrigger or delete the runs a filter matches (or a list of
//! ids), after a dry run that counts them. Runs are walked newest first in pages with a keyset
//! cursor, so runs created meanwhile (a retrigger's own runs among them) are not visited and
//! none is visited twice; each run still goes through `on_run_access`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::steps::{Run, RunCursor, RunFilter, RunStatus};
use durable_jobs::Registry;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audited;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::{Caller, HttpAuth, RunOperation, Shared};

/// The most runs one bulk request acts on; the answer says when more matched.
const MAX_RUNS: u64 = 100_000;
const PAGE: u32 = 500;
/// Errors reported one by one; the rest are only counted.
const MAX_ERRORS: usize = 20;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Action {
    Cancel,
    Retrigger,
    Delete,
}

impl Action {
    fn operation(self) -> RunOperation {
        match self {
            Action::Cancel => RunOperation::Cancel,
            Action::Retrigger => RunOperation::Retrigger,
            Action::Delete => RunOperation::Delete,
        }
    }

    fn eligible(self, run: &Run) -> bool {
        match self {
            Action::Cancel => run.is_active(),
            Action::Retrigger | Action::Delete => run.is_terminal(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    job_name: Vec<String>,
    #[serde(default)]
    status: Vec<RunStatus>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BulkBody {
    action: Action,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    run_ids: Option<Vec<String>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Default)]
struct Tally {
    matched: u64,
    eligible: u64,
    done: u64,
    failed: u64,
    errors: Vec<Value>,
    truncated: bool,
}

impl Tally {
    async fn visit<R: Registry, A: HttpAuth>(
        &mut self,
        s: &Shared<R, A>,
        caller: &Caller<A::Context>,
        body: &BulkBody,
        run: &Run,
    ) {
        if s.auth
            .on_run_access(&caller.ctx, run, body.action.operation())
            .await
            .is_err()
        {
            return;
        }
        self.matched += 1;
        if !body.action.eligible(run) {
            return;
        }
        self.eligible += 1;
        if body.dry_run {
            return;
        }
        let runs = s.client.runs();
        let outcome = match body.action {
            Action::Cancel => runs.cancel(&run.id).await,
            Action::Retrigger => runs.retrigger(&run.id).await.map(|_| ()),
            Action::Delete => runs.delete_run(&run.id).await,
        };
        match outcome {
            Ok(()) => self.done += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors
                        .push(json!({ "runId": run.id, "error": ApiError::from(e).message }));
                }
            }
        }
    }
}

async fn apply<R: Registry, A: HttpAuth>(
    s: &Shared<R, A>,
    caller: &Caller<A::Context>,
    body: &BulkBody,
) -> ApiResult<Tally> {
    let mut tally = Tally::default();
    let runs = s.client.runs();
    match (&body.filter, &body.run_ids) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give either filter or runIds, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad_request("filter or runIds is required")),
        (None, Some(ids)) => {
            if ids.len() > 1000 {
                return Err(ApiError::bad_request("At most 1000 runIds per request"));
            }
            for id in ids {
                if id.len() > durable_jobs::MAX_ID_BYTES {
                    continue;
                }
                if let Some(run) = runs.get_run(id).await? {
                    tally.visit(s, caller, body, &run).await;
                }
            }
        }
        (Some(f), None) => {
            let mut filter = RunFilter::new();
            filter.job_names = f.job_name.clone();
            filter.statuses = f.status.clone();
            filter.labels = f.labels.clone();
            let mut filter = s.auth.scope_runs(&caller.ctx, filter).await;
            filter.offset = None;
            let mut seen = 0u64;
            loop {
                let page = runs.get_runs(filter.clone().limit(PAGE)).await?;
                let Some(last) = page.last() else { break };
                filter.before = Some(RunCursor::of(last));
                for run in &page {
                    if seen == MAX_RUNS {
                        tally.truncated = true;
                        return Ok(tally);
                    }
                    seen += 1;
                    tally.visit(s, caller, body, run).await;
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
    }
    Ok(tally)
}

pub(crate) async fn runs<R: Registry, A: HttpAuth>(
    State(s): State<Arc<Shared<R, A>>>,
    caller: Caller<A::Context>,
    JsonBody(body): JsonBody<BulkBody>,
) -> Response {
    if !body.dry_run {
        if let Err(e) = caller.may_write(&s) {
            return e.into_response();
        }
    }
    let result = apply(&s, &caller, &body).await.map(|t| {
        Json(json!({
            "dryRun": body.dry_run,
            "matched": t.matched,
            "eligible": t.eligible,
            "done": t.done,
            "failed": t.failed,
            "errors": t.errors,
            "truncated": t.truncated,
        }))
    });
    if body.dry_run {
        return result.into_response();
    }
    let action = match body.action {
        Action::Cancel => "runs.bulk.cancel",
        Action::Retrigger => "runs.bulk.retrigger",
        Action::Delete => "runs.bulk.delete",
    };
    let target = match (&body.filter, &body.run_ids) {
        (Some(f), _) => {
            json!({ "jobName": f.job_name, "status": f.status, "labels": f.labels }).to_string()
        }
        (_, Some(ids)) => format!("{} runs", ids.len()),
        _ => String::new(),
    };
    audited(&s, &caller, action, target, result).await
}
