//! The auth rules over real HTTP: no auth means read-only unless opted out; tokens and roles;
//! durably's hooks (on_trigger, on_run_access, scope_runs, scope_runs_subscribe) and the audit
//! hook seeing every action.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use durable_jobs::steps::{Run, RunFilter};
use durable_jobs_http::{AuditRecord, BearerTokens, HttpAuth, Role, RunOperation, TriggerRequest};
use serde_json::json;

/// The writes every role test tries, with a body when they take one.
fn writes(run: &str) -> Vec<(&'static str, String, Option<serde_json::Value>)> {
    vec![
        (
            "POST",
            "/trigger".into(),
            Some(json!({"jobName": "import", "input": {"rows": 1}})),
        ),
        ("POST", format!("/cancel?runId={run}"), None),
        ("POST", format!("/retrigger?runId={run}"), None),
        ("DELETE", format!("/run?runId={run}"), None),
        (
            "POST",
            "/instance/start".into(),
            Some(json!({"job": "refresher", "id": "u", "state": {"refreshed": 0}})),
        ),
        (
            "POST",
            "/instance/event".into(),
            Some(json!({"job": "batcher", "id": "b", "event": 1})),
        ),
        ("POST", "/instance/trigger?job=refresher&id=u".into(), None),
        (
            "POST",
            "/runs/bulk".into(),
            Some(json!({"action": "cancel", "filter": {}})),
        ),
    ]
}

async fn call(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> Reply {
    let mut req = match method {
        "DELETE" => s.http.delete(s.url(path)),
        "GET" => s.http.get(s.url(path)),
        _ => s.http.post(s.url(path)),
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    s.send(req).await
}

#[tokio::test]
async fn without_an_auth_reads_are_answered_and_writes_refused() {
    let s = serve(|api| api).await;
    let run = s
        .engine
        .client()
        .runs()
        .trigger("import", json!({"rows": 1}), Default::default())
        .await
        .unwrap()
        .0
        .id;
    for path in [
        "/runs",
        "/jobs",
        "/instances",
        "/stats",
        &format!("/run?runId={run}"),
    ] {
        assert_eq!(s.get(path).await.status, 200, "{path}");
    }
    for (method, path, body) in writes(&run) {
        let r = call(&s, method, &path, body, None).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        assert!(
            r.json["error"].as_str().unwrap().contains("auth"),
            "{}",
            r.text
        );
    }
    // A dry run changes nothing: it is a read.
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "cancel", "filter": {}, "dryRun": true}),
        )
        .await;
    assert_eq!(r.status, 200);

    let open = serve(|api| api.allow_unauthenticated_writes()).await;
    let r = open
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 1}}),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tokens_give_roles_and_the_rest_is_unauthorized() {
    let s = serve(|api| {
        api.auth(
            BearerTokens::new()
                .operator("op-token")
                .read_only("ro-token"),
        )
    })
    .await;
    let run = s
        .engine
        .client()
        .runs()
        .trigger("import", json!({"rows": 1}), Default::default())
        .await
        .unwrap()
        .0
        .id;
    s.wait(&run).await;

    let r = call(&s, "GET", "/runs", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json["error"],
        "Unauthorized: send Authorization: Bearer <token>"
    );
    let raw = s.http.get(s.url("/runs")).send().await.unwrap();
    assert_eq!(raw.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        call(&s, "GET", "/runs", None, Some("wrong")).await.status,
        401
    );
    let sse = s.http.get(s.url("/runs/subscribe")).send().await.unwrap();
    assert_eq!(sse.status(), 401);
    // Which processes run where is for authenticated callers only.
    assert_eq!(call(&s, "GET", "/nodes", None, None).await.status, 401);
    // Public: the dashboard's files, the description and health.
    for path in [
        "/dashboard/",
        "/dashboard/app.js",
        "/openapi.json",
        "/health",
    ] {
        assert_eq!(s.get(path).await.status, 200, "{path}");
    }

    assert_eq!(
        call(&s, "GET", "/runs", None, Some("ro-token"))
            .await
            .status,
        200
    );
    for (method, path, body) in writes(&run) {
        let r = call(&s, method, &path, body, Some("ro-token")).await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (403, Some("This action needs the operator role")),
            "{method} {path}"
        );
    }
    // The dashboard's cookie works like the header.
    let r = s
        .send(
            s.http
                .get(s.url("/runs"))
                .header("cookie", "durable_jobs_token=ro-token"),
        )
        .await;
    assert_eq!(r.status, 200);

    let r = call(
        &s,
        "POST",
        "/trigger",
        Some(json!({"jobName": "import", "input": {"rows": 1}})),
        Some("op-token"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        &s,
        "POST",
        &format!("/retrigger?runId={run}"),
        None,
        Some("op-token"),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// End users of one organisation: they see, stream and act on their organisation's runs only,
/// and every action is recorded.
struct OrgAuth {
    audit: Arc<Mutex<Vec<(String, AuditRecord)>>>,
}

impl HttpAuth for OrgAuth {
    type Context = String;

    async fn authenticate(&self, parts: &Parts) -> Result<String, Response> {
        parts
            .headers
            .get("x-org")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| (StatusCode::UNAUTHORIZED, "who are you?").into_response())
    }

    fn role(&self, org: &String) -> Role {
        if org == "viewers" {
            Role::ReadOnly
        } else {
            Role::Operator
        }
    }

    async fn on_trigger(&self, org: &String, t: &TriggerRequest) -> Result<(), Response> {
        match t.labels.get("org") {
            Some(o) if o == org => Ok(()),
            _ => Err((StatusCode::FORBIDDEN, "label your runs with your org").into_response()),
        }
    }

    async fn on_run_access(
        &self,
        org: &String,
        run: &Run,
        op: RunOperation,
    ) -> Result<(), Response> {
        match run.labels.get("org") {
            Some(o) if o == org => Ok(()),
            _ => Err((
                StatusCode::NOT_FOUND,
                format!("no such run to {}", op.as_str()),
            )
                .into_response()),
        }
    }

    async fn scope_runs(&self, org: &String, filter: RunFilter) -> RunFilter {
        filter.label("org", org.clone())
    }

    async fn on_action(&self, org: &String, record: &AuditRecord) {
        self.audit
            .lock()
            .unwrap()
            .push((org.clone(), record.clone()));
    }
}

#[tokio::test]
async fn durably_hooks_scope_and_guard_runs_and_every_action_is_audited() {
    let audit = Arc::new(Mutex::new(Vec::new()));
    let log = audit.clone();
    let s = serve(move |api| api.auth(OrgAuth { audit: log })).await;
    let as_org = |org: &'static str| move |req: reqwest::RequestBuilder| req.header("x-org", org);
    let acme = as_org("acme");
    let globex = as_org("globex");

    let r = s.send(s.http.get(s.url("/runs"))).await;
    assert_eq!((r.status, r.text.as_str()), (401, "who are you?"));
    let r = s
        .send(acme(
            s.http
                .post(s.url("/trigger"))
                .json(&json!({"jobName": "import", "input": {"rows": 1}})),
        ))
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (403, "label your runs with your org")
    );
    let mut streams = Vec::new();
    for org in ["acme", "globex"] {
        streams.push(
            SseReader::open_with(&s.http, &s.url("/runs/subscribe"), |r| {
                r.header("x-org", org)
            })
            .await,
        );
    }
    let acme_run = s
        .send(acme(s.http.post(s.url("/trigger")).json(
            &json!({"jobName": "import", "input": {"rows": 1}, "labels": {"org": "acme"}}),
        )))
        .await
        .json["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let globex_run = s
        .send(globex(s.http.post(s.url("/trigger")).json(&json!({"jobName": "import", "input": {"rows": 1, "fail": true}, "labels": {"org": "globex"}}))))
        .await
        .json["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait(&acme_run).await;
    s.wait(&globex_run).await;

    let listed = s.send(acme(s.http.get(s.url("/runs")))).await;
    let ids: Vec<&str> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_run.as_str()]);
    let r = s
        .send(acme(s.http.get(s.url(&format!("/run?runId={globex_run}")))))
        .await;
    assert_eq!((r.status, r.text.as_str()), (404, "no such run to read"));
    let r = s
        .send(acme(
            s.http
                .post(s.url(&format!("/retrigger?runId={globex_run}"))),
        ))
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (404, "no such run to retrigger")
    );
    let r = s
        .send(acme(
            s.http.get(s.url(&format!("/subscribe?runId={globex_run}"))),
        ))
        .await;
    assert_eq!(r.status, 404);
    // A bulk action only touches what the caller may see.
    let r = s
        .send(acme(
            s.http
                .post(s.url("/runs/bulk"))
                .json(&json!({"action": "delete", "filter": {}})),
        ))
        .await;
    assert_eq!(
        (r.json["matched"].as_u64(), r.json["done"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        r.text
    );
    assert!(s
        .engine
        .client()
        .runs()
        .get_run(&globex_run)
        .await
        .unwrap()
        .is_some());
    let r = s
        .send(globex(
            s.http.post(s.url(&format!("/cancel?runId={globex_run}"))),
        ))
        .await;
    assert_eq!(r.status, 409);
    let r = s
        .send(
            s.http
                .post(s.url("/trigger"))
                .header("x-org", "viewers")
                .json(&json!({"jobName": "import"})),
        )
        .await;
    assert_eq!(r.status, 403);

    // Each organisation's stream saw its own runs only.
    for (stream, run) in streams.iter_mut().zip([&acme_run, &globex_run]) {
        let mut n = 0;
        while let Some((_, e)) = stream.event().await {
            assert_eq!(e["runId"], run.as_str());
            n += 1;
            if e["type"] == "run:complete" || e["type"] == "run:fail" {
                break;
            }
        }
        assert!(n > 2);
    }

    let records: Vec<(String, String, u16)> = audit
        .lock()
        .unwrap()
        .iter()
        .map(|(o, r)| (o.clone(), r.action.clone(), r.status))
        .collect();
    assert_eq!(
        records,
        [
            ("acme".to_owned(), "run.trigger".to_owned(), 200),
            ("globex".to_owned(), "run.trigger".to_owned(), 200),
            ("acme".to_owned(), "runs.bulk.delete".to_owned(), 200),
            ("globex".to_owned(), "run.cancel".to_owned(), 409),
        ]
    );
    let first = audit.lock().unwrap()[0].1.clone();
    assert_eq!(first.target, "import");
}
