//! Every route over real HTTP: its success case, and its documented errors with their status
//! codes and JSON bodies.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn trigger_then_read_the_run_its_steps_and_logs_as_durably_shapes_them() {
    let s = open_server().await;
    let r = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 2}, "idempotencyKey": "imp-1", "labels": {"env": "test"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["disposition"].as_str()),
        (200, Some("created"))
    );
    let id = r.json["runId"].as_str().unwrap().to_owned();
    let again = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 9}, "idempotencyKey": "imp-1"}),
        )
        .await;
    assert_eq!(
        again.json,
        json!({"runId": id, "disposition": "idempotent"})
    );
    s.wait(&id).await;

    let run = s.get(&format!("/run?runId={id}")).await;
    assert_eq!(run.status, 200);
    assert!(run.content_type.starts_with("application/json"));
    let keys: Vec<&str> = run
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "jobName",
        "input",
        "status",
        "currentStepIndex",
        "completedStepCount",
        "progress",
        "output",
        "error",
        "labels",
        "startedAt",
        "completedAt",
        "createdAt",
        "isTerminal",
        "isActive",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    for k in [
        "idempotencyKey",
        "concurrencyKey",
        "leaseOwner",
        "leaseExpiresAt",
        "leaseGeneration",
        "updatedAt",
    ] {
        assert!(!keys.contains(&k), "{k} must not be in a ClientRun");
    }
    assert_eq!(run.json["status"], "completed");
    assert_eq!(run.json["output"], 2);
    assert_eq!(run.json["progress"], json!({"current": 2, "total": 2}));
    assert_eq!(run.json["labels"], json!({"env": "test"}));
    assert_eq!(
        (
            run.json["isTerminal"].as_bool(),
            run.json["isActive"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert!(run.json["createdAt"].as_str().unwrap().ends_with('Z'));

    let steps = s.get(&format!("/steps?runId={id}")).await;
    assert_eq!(steps.status, 200);
    let names: Vec<&str> = steps
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["read", "write"]);
    assert_eq!(steps.json[0]["output"], 2);
    assert_eq!(steps.json[0]["status"], "completed");
    assert_eq!(steps.json[0]["runId"], id.as_str());

    let logs = s.get(&format!("/logs?runId={id}")).await;
    assert_eq!(logs.status, 200);
    assert_eq!(logs.json[0]["message"], "starting");
    assert_eq!(logs.json[0]["level"], "info");
}

#[tokio::test]
async fn runs_are_filtered_and_paged_newest_first() {
    let s = open_server().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = s
            .post("/trigger", json!({"jobName": "import", "input": {"rows": 1, "fail": i == 4}, "labels": {"n": i.to_string()}}))
            .await;
        ids.push(r.json["runId"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        s.wait(id).await;
    }
    let listed = |r: Reply| -> Vec<String> {
        r.json
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = listed(s.get("/runs?jobName=import").await);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);
    assert_eq!(
        listed(s.get("/runs?limit=2&offset=1").await),
        newest_first[1..3]
    );
    assert_eq!(listed(s.get("/runs?status=failed").await), [ids[4].clone()]);
    assert_eq!(
        listed(s.get("/runs?status=failed&status=completed").await).len(),
        5
    );
    assert_eq!(listed(s.get("/runs?label.n=2").await), [ids[2].clone()]);
    assert_eq!(listed(s.get("/runs?jobName=gated").await).len(), 0);
    assert_eq!(listed(s.get("/runs?limit=0").await).len(), 0);

    // Keyset pages: a full page names the position of its last run, which `cursor` continues
    // after; a short page names none.
    let next = |r: &Reply| {
        r.headers
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let first = s.get("/runs?jobName=import&limit=2").await;
    let cursor = next(&first).expect("a full page names the next");
    assert_eq!(listed(first), newest_first[..2]);
    let second = s
        .get(&format!("/runs?jobName=import&limit=2&cursor={cursor}"))
        .await;
    assert!(next(&second).is_some());
    assert_eq!(listed(second), newest_first[2..4]);
    let rest = s
        .get(&format!("/runs?jobName=import&limit=10&cursor={cursor}"))
        .await;
    assert_eq!(next(&rest), None);
    assert_eq!(listed(rest), newest_first[2..]);
    // A time range: nothing was created before the first run, everything before the future.
    assert_eq!(
        listed(s.get("/runs?createdUntil=2000-01-01T00:00:00Z").await).len(),
        0
    );
    assert_eq!(
        listed(
            s.get("/runs?jobName=import&createdSince=2000-01-01T00:00:00Z")
                .await
        ),
        newest_first
    );
}

#[tokio::test]
async fn retrigger_cancel_and_delete_follow_the_run_status_with_durably_messages() {
    let s = open_server().await;
    let failed = s.trigger("import", json!({"rows": 1, "fail": true})).await;
    s.wait(&failed).await;
    let r = s.post_empty(&format!("/retrigger?runId={failed}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true);
    let fresh = r.json["runId"].as_str().unwrap().to_owned();
    assert_ne!(fresh, failed);
    s.wait(&fresh).await;

    let held = s.trigger("gated", json!({})).await;
    s.wait_leased(&held).await;
    let r = s.post_empty(&format!("/retrigger?runId={held}")).await;
    assert_eq!(
        (r.status, r.json["error"].as_str().unwrap()),
        (409, format!("Cannot retrigger leased run: {held}").as_str())
    );
    let r = s.delete(&format!("/run?runId={held}")).await;
    assert_eq!(
        (r.status, r.json["error"].as_str().unwrap()),
        (409, format!("Cannot delete leased run: {held}").as_str())
    );
    let r = s.post_empty(&format!("/cancel?runId={held}")).await;
    assert_eq!((r.status, r.json.clone()), (200, json!({"success": true})));
    let r = s.post_empty(&format!("/cancel?runId={held}")).await;
    assert_eq!(
        (r.status, r.json["error"].as_str().unwrap()),
        (
            409,
            format!("Cannot cancel already cancelled run: {held}").as_str()
        )
    );
    let r = s.post_empty(&format!("/cancel?runId={failed}")).await;
    assert_eq!(
        (r.status, r.json["error"].as_str().unwrap()),
        (409, format!("Cannot cancel failed run: {failed}").as_str())
    );

    let r = s.delete(&format!("/run?runId={held}")).await;
    assert_eq!((r.status, r.json.clone()), (200, json!({"success": true})));
    let r = s.get(&format!("/run?runId={held}")).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (404, json!({"error": "Run not found"}))
    );
    for path in ["/steps", "/logs", "/retrigger", "/cancel"] {
        let url = format!("{path}?runId={held}");
        let r = if matches!(path, "/retrigger" | "/cancel") {
            s.post_empty(&url).await
        } else {
            s.get(&url).await
        };
        assert_eq!(
            (r.status, r.json.clone()),
            (404, json!({"error": "Run not found"})),
            "{path}"
        );
    }
    let r = s.delete(&format!("/run?runId={held}")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn bad_requests_get_their_status_and_a_json_error() {
    let s = serve(|api| api.allow_unauthenticated_writes().body_limit(1024)).await;
    let error = |r: &Reply| r.json["error"].as_str().unwrap_or_default().to_owned();

    let r = s.get("/nope").await;
    assert_eq!((r.status, r.text.as_str()), (404, "Not Found"));
    let r = s.send(s.http.put(s.url("/trigger"))).await;
    assert_eq!((r.status, error(&r).as_str()), (405, "Method Not Allowed"));

    for path in ["/run", "/steps", "/logs", "/subscribe", "/run?runId="] {
        let r = s.get(path).await;
        assert_eq!(
            (r.status, error(&r).as_str()),
            (400, "runId query parameter is required"),
            "{path}"
        );
    }
    let r = s.get(&format!("/run?runId={}", "x".repeat(600))).await;
    assert_eq!(r.status, 400);

    let r = s.post("/trigger", json!({"input": {}})).await;
    assert_eq!((r.status, error(&r).as_str()), (400, "jobName is required"));
    let r = s.post("/trigger", json!({"jobName": "nope"})).await;
    assert_eq!((r.status, error(&r).as_str()), (404, "Job not found: nope"));
    let r = s.post("/trigger", json!({"jobName": "refresher"})).await;
    assert_eq!(r.status, 404, "a continuous job has no runs");
    let r = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": "many"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("invalid input"), "{}", error(&r));
    let r = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 1}, "coalesce": "merge"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 1}, "coalesce": "skip"}),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "coalesce needs a concurrency key: {}",
        r.text
    );
    let r = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 1}, "labels": {"bad key": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .send(s.http.post(s.url("/trigger")).body("{not json"))
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).starts_with("Invalid JSON body"));
    let r = s.send(s.http.post(s.url("/trigger")).body("[1, 2]")).await;
    assert_eq!(r.status, 400);
    let big = json!({"jobName": "import", "input": {"rows": 1, "pad": "x".repeat(2000)}});
    let r = s.post("/trigger", big).await;
    assert_eq!(
        (r.status, error(&r).as_str()),
        (413, "Request body is too large")
    );

    let r = s.get("/runs?status=").await;
    assert_eq!(error(&r), "Invalid status: empty value. Must be one of: pending, leased, completed, failed, cancelled");
    let r = s.get("/runs?status=done").await;
    assert_eq!(
        (r.status, error(&r).as_str()),
        (
            400,
            "Invalid status: done. Must be one of: pending, leased, completed, failed, cancelled"
        )
    );
    for q in [
        "limit=-1",
        "limit=abc",
        "limit=1001",
        "offset=-5",
        "offset=1.5",
        "cursor=nope",
        "cursor=12.",
        "createdSince=yesterday",
        "createdUntil=2026-13-01T00:00:00Z",
    ] {
        let r = s.get(&format!("/runs?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(error(&r).starts_with("Invalid "), "{q}: {}", error(&r));
    }
    let r = s.get("/runs?label.bad%20key=x").await;
    assert_eq!(r.status, 400);

    // A concurrency-key conflict is a 409.
    let first = s
        .post(
            "/trigger",
            json!({"jobName": "gated", "input": {}, "concurrencyKey": "k"}),
        )
        .await;
    assert_eq!(first.status, 200);
    let second = s
        .post(
            "/trigger",
            json!({"jobName": "gated", "input": {}, "concurrencyKey": "k"}),
        )
        .await;
    let third = s
        .post(
            "/trigger",
            json!({"jobName": "gated", "input": {}, "concurrencyKey": "k"}),
        )
        .await;
    assert!(
        second.status == 409 || third.status == 409,
        "{} {}",
        second.text,
        third.text
    );
    s.app.gate.notify_waiters();
}

#[tokio::test]
async fn instances_are_listed_read_and_acted_on() {
    let s = open_server().await;
    for i in 0..3 {
        let r = s
            .post(
                "/instance/start",
                json!({"job": "refresher", "id": format!("u{i}"), "state": {"refreshed": 0}}),
            )
            .await;
        assert_eq!(
            (r.status, r.json["created"].as_bool()),
            (200, Some(true)),
            "{}",
            r.text
        );
    }
    let r = s
        .post(
            "/instance/start",
            json!({"job": "refresher", "id": "u0", "state": {"refreshed": 0}}),
        )
        .await;
    assert_eq!(r.json["created"], false);
    let r = s
        .post(
            "/instance/event",
            json!({"job": "batcher", "id": "b1", "event": 5, "eventId": "e1"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["eventCount"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text
    );
    let r = s
        .post(
            "/instance/event",
            json!({"job": "batcher", "id": "b1", "event": 6, "eventId": "e1"}),
        )
        .await;
    assert_eq!(r.status, 409, "a repeated event id: {}", r.text);
    let r = s
        .post(
            "/instance/event",
            json!({"job": "orders", "id": "o1", "event": 40}),
        )
        .await;
    assert_eq!((r.status, r.json["created"].as_bool()), (200, Some(true)));

    // Pages of two across jobs, with a cursor.
    let mut seen = Vec::new();
    let mut url = "/instances?limit=2".to_owned();
    loop {
        let r = s.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for i in r.json["items"].as_array().unwrap() {
            seen.push(format!(
                "{}:{}:{}",
                i["kind"].as_str().unwrap(),
                i["job"].as_str().unwrap(),
                i["id"].as_str().unwrap()
            ));
        }
        match r.json["nextCursor"].as_str() {
            Some(c) => url = format!("/instances?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "continuous:refresher:u0",
            "continuous:refresher:u1",
            "continuous:refresher:u2",
            "debounce:batcher:b1",
            "task:orders:o1"
        ]
    );
    let r = s.get("/instances?kind=task").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["items"][0]["status"], "scheduled");
    let r = s
        .get("/instances?job=refresher&status=scheduled&dueBefore=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 3);
    let r = s.get("/instances?status=idle").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 0);

    let r = s.get("/instance?job=orders&id=o1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["state"], json!({"total": 40}));
    assert_eq!(r.json["eventCount"], 1);
    assert!(r.json["nextAlarm"].as_str().is_some());
    let r = s.get("/instance?kind=continuous&job=refresher&id=u1").await;
    assert_eq!(r.json["state"], json!({"refreshed": 1, "fail": false}));

    let r = s.post_empty("/instance/trigger?job=refresher&id=u1").await;
    assert_eq!(
        (r.status, r.json["terminated"].as_bool()),
        (200, Some(false)),
        "{}",
        r.text
    );
    let r = s.get("/instance?job=refresher&id=u1").await;
    assert_eq!(r.json["runCount"], 2);
    let r = s.post_empty("/instance/flush?job=batcher&id=b1").await;
    assert_eq!(
        (r.status, r.json["flushed"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text
    );
    let r = s
        .post(
            "/instance/event",
            json!({"job": "batcher", "id": "b2", "event": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s.post_empty("/instance/clear?job=batcher&id=b2").await;
    assert_eq!(
        (r.status, r.json["discardedEvents"].as_u64()),
        (200, Some(1))
    );
    let r = s.post_empty("/instance/trigger?job=orders&id=o1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post_empty("/instance/terminate?job=orders&id=o1&reason=test")
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .post_empty("/instance/terminate?job=refresher&id=u2&reason=bye")
        .await;
    assert_eq!((r.status, r.json["reason"].as_str()), (200, Some("bye")));
    let r = s.get("/instance?job=refresher&id=u2").await;
    assert_eq!(r.status, 404);

    // A job's own failure during an action is a 422.
    let r = s
        .post(
            "/instance/start",
            json!({"job": "refresher", "id": "bad", "state": {"refreshed": 0, "fail": true}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.json["error"]
        .as_str()
        .unwrap()
        .contains("token endpoint down"));
}

#[tokio::test]
async fn instance_routes_refuse_what_does_not_fit() {
    let s = open_server().await;
    let bad = [
        ("/instances?kind=step", 400),
        ("/instances?kind=nope", 400),
        ("/instances?job=nope", 404),
        ("/instances?job=import", 400),
        ("/instances?kind=task&job=refresher", 400),
        ("/instances?status=running", 400),
        ("/instances?dueBefore=yesterday", 400),
        ("/instances?limit=5000", 400),
        ("/instances?cursor=zz", 400),
        ("/instance?job=refresher", 400),
        ("/instance?id=x", 400),
        ("/instance?job=nope&id=x", 404),
        ("/instance?job=refresher&id=missing", 404),
        ("/instance?kind=task&job=refresher&id=x", 400),
    ];
    for (path, status) in bad {
        let r = s.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.json["error"].is_string(), "{path}");
    }
    let r = s
        .get(&format!("/instance?job=refresher&id={}", "x".repeat(600)))
        .await;
    assert_eq!(r.status, 400);
    let r = s.post_empty("/instance/flush?job=refresher&id=u").await;
    assert_eq!(r.status, 400);
    let r = s
        .post_empty("/instance/trigger?job=refresher&id=missing")
        .await;
    assert_eq!(r.status, 404);
    let r = s.post_empty("/instance/explode?job=refresher&id=u").await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            "/instance/start",
            json!({"job": "orders", "id": "x", "state": {}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/instance/start",
            json!({"job": "refresher", "id": "x", "state": {"refreshed": "a lot"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s.post("/instance/start", json!({"job": "refresher"})).await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/instance/event",
            json!({"job": "refresher", "id": "x", "event": 1}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/instance/event",
            json!({"job": "batcher", "id": "", "event": 1}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn jobs_stats_health_openapi_and_the_dashboard_files() {
    let s = open_server().await;
    let r = s.get("/jobs").await;
    let jobs = r.json.as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["batcher", "gated", "import", "orders", "refresher"]);
    let refresher = &jobs[4];
    assert_eq!(
        (refresher["kind"].as_str(), refresher["schedule"].clone()),
        (Some("continuous"), json!({"every": 1_800_000}))
    );
    assert_eq!(
        (
            jobs[0]["flushAfter"].as_u64(),
            jobs[0]["maxEvents"].as_u64()
        ),
        (Some(5000), Some(100))
    );

    let ok = s.trigger("import", json!({"rows": 1})).await;
    let bad = s.trigger("import", json!({"rows": 1, "fail": true})).await;
    s.wait(&ok).await;
    s.wait(&bad).await;
    s.post(
        "/instance/start",
        json!({"job": "refresher", "id": "u", "state": {"refreshed": 0}}),
    )
    .await;
    let r = s.get("/stats").await;
    assert_eq!(r.status, 200);
    let import = r.json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobName"] == "import")
        .unwrap()
        .clone();
    assert_eq!(
        (import["completed"].as_u64(), import["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (
            import["completedInWindow"].as_u64(),
            import["failedInWindow"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(r.json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["jobName"] == "gated"));
    let refresher = r.json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "refresher")
        .unwrap()
        .clone();
    assert_eq!(
        (refresher["total"].as_u64(), refresher["due"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(s.get("/stats?window=abc").await.status, 400);

    let r = s.get("/health").await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("ok")));
    assert_eq!(s.get("/metrics").await.status, 404);
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3."));
    assert!(r.json["paths"]["/trigger"].is_object());

    let r = s.get("/dashboard/").await;
    assert!(r.content_type.starts_with("text/html") && r.text.contains("app.js"));
    assert!(s
        .get("/dashboard/app.js")
        .await
        .content_type
        .starts_with("text/javascript"));
    assert!(s
        .get("/dashboard/app.css")
        .await
        .content_type
        .starts_with("text/css"));
    let r = s
        .send(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(s.url("/dashboard")),
        )
        .await;
    assert_eq!(r.status, 308);
}

#[tokio::test]
async fn nodes_says_one_process_without_a_shared_feed() {
    let s = open_server().await;
    let r = s.get("/nodes").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({ "shared": false, "nodes": [], "otherHolders": [] })
    );
    let spec = s.get("/openapi.json").await.json;
    assert_eq!(spec["paths"]["/nodes"]["get"]["operationId"], "listNodes");
    assert_eq!(s.post_empty("/nodes").await.status, 405);
}

#[tokio::test]
async fn bulk_actions_count_first_then_act_on_what_the_filter_matches() {
    let s = open_server().await;
    let mut failed = Vec::new();
    for i in 0..4 {
        let id = s
            .trigger("import", json!({"rows": 1, "fail": i % 2 == 0}))
            .await;
        s.wait(&id).await;
        if i % 2 == 0 {
            failed.push(id);
        }
    }
    let filter = json!({"jobName": ["import"], "status": ["failed"]});
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "retrigger", "filter": filter, "dryRun": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.json["matched"].as_u64(),
            r.json["eligible"].as_u64(),
            r.json["done"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    // Nothing changed.
    assert_eq!(s.get("/runs").await.json.as_array().unwrap().len(), 4);
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "retrigger", "filter": filter}),
        )
        .await;
    assert_eq!(
        (r.json["done"].as_u64(), r.json["failed"].as_u64()),
        (Some(2), Some(0)),
        "{}",
        r.text
    );
    assert_eq!(s.get("/runs").await.json.as_array().unwrap().len(), 6);

    // Cancel is only eligible for active runs.
    let held: Vec<String> = futures_ids(&s, 3).await;
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "cancel", "filter": {"jobName": ["gated"]}, "dryRun": true}),
        )
        .await;
    assert_eq!(r.json["eligible"], 3);
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "cancel", "filter": {"jobName": ["gated"]}}),
        )
        .await;
    assert_eq!(r.json["done"], 3, "{}", r.text);
    for id in &held {
        assert_eq!(
            s.get(&format!("/run?runId={id}")).await.json["status"],
            "cancelled"
        );
    }
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "delete", "runIds": [held[0], "missing"]}),
        )
        .await;
    assert_eq!(
        (r.json["matched"].as_u64(), r.json["done"].as_u64()),
        (Some(1), Some(1))
    );
    let r = s
        .post(
            "/runs/bulk",
            json!({"action": "delete", "filter": {"status": ["pending"]}, "dryRun": true}),
        )
        .await;
    assert_eq!(r.json["eligible"], 0);

    for body in [
        json!({"action": "cancel"}),
        json!({"action": "cancel", "filter": {}, "runIds": []}),
        json!({"action": "explode", "filter": {}}),
        json!({"action": "cancel", "filter": {"status": ["done"]}}),
        json!({"action": "cancel", "filter": {"surprise": 1}}),
    ] {
        let r = s.post("/runs/bulk", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
}

/// Triggers `n` gated runs (they wait at their gate) and returns their ids.
async fn futures_ids(s: &Server, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.trigger("gated", Value::Null).await);
    }
    ids
}

#[tokio::test]
async fn a_run_of_the_gated_job_is_leased_until_cancelled() {
    let s = open_server().await;
    let id = s.trigger("gated", json!({})).await;
    s.wait_leased(&id).await;
    assert_eq!(
        s.get(&format!("/run?runId={id}")).await.json["status"],
        "leased"
    );
    assert_eq!(
        s.post_empty(&format!("/cancel?runId={id}")).await.status,
        200
    );
    tokio::time::timeout(Duration::from_secs(10), s.wait(&id))
        .await
        .unwrap();
}
