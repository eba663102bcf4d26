//! The streams over real HTTP: durably's framing and headers, one run's stream from snapshot
//! to its terminal event, the slim all-runs stream, the job events, progress throttling, idle
//! pings, and reconnects with `Last-Event-ID` that lose nothing and repeat nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Events until one of the run's end and its trigger both came (the trigger is emitted by the
/// triggering task after its commit returns, so it may come after the worker's events).
async fn whole_run(r: &mut SseReader) -> Vec<(Option<String>, Value)> {
    let mut out: Vec<(Option<String>, Value)> = Vec::new();
    let has = |out: &[(Option<String>, Value)], t: &str| out.iter().any(|(_, d)| d["type"] == t);
    while !(has(&out, "run:trigger") && (has(&out, "run:complete") || has(&out, "run:fail"))) {
        out.push(r.event().await.expect("an open stream"));
    }
    out
}

async fn events_until(
    r: &mut SseReader,
    stop: impl Fn(&Value) -> bool,
) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    while let Some((id, data)) = r.event().await {
        let done = stop(&data);
        out.push((id, data));
        if done {
            break;
        }
    }
    out
}

#[tokio::test]
async fn one_run_streams_live_to_its_end_and_then_closes() {
    let s = open_server().await;
    let id = s.trigger("gated", json!({})).await;
    // Its progress is stored, and it waits at its gate.
    s.wait_for(&id, "step:start").await;
    let mut r = SseReader::open(&s.http, &s.url(&format!("/subscribe?runId={id}")), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.headers["cache-control"], "no-cache");
    // The snapshot of a leased run: run:leased and its progress, sequence 0.
    let (first_id, first) = r.event().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["sequence"].as_u64()),
        (Some("run:leased"), Some(0))
    );
    assert_eq!(first["runId"], id.as_str());
    assert!(first_id.is_some());
    let (_, progress) = r.event().await.unwrap();
    assert_eq!(progress["progress"], json!({"current": 0, "total": 1}));
    s.app.gate.notify_waiters();
    let rest = events_until(&mut r, |d| d["type"] == "run:complete").await;
    assert_eq!(
        types(&rest).last().map(String::as_str),
        Some("run:complete")
    );
    assert!(
        types(&rest).contains(&"step:complete".to_owned()),
        "{:?}",
        types(&rest)
    );
    // Ids increase.
    let seqs: Vec<u64> = rest
        .iter()
        .map(|(id, _)| {
            id.as_deref()
                .unwrap()
                .rsplit_once('-')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Then the stream ends.
    assert_eq!(r.event().await, None);
}

#[tokio::test]
async fn a_finished_run_gets_its_terminal_snapshot_and_a_missing_one_404() {
    let s = open_server().await;
    let id = s.trigger("import", json!({"rows": 1, "fail": true})).await;
    s.wait(&id).await;
    let mut r = SseReader::open(&s.http, &s.url(&format!("/subscribe?runId={id}")), None).await;
    let (_, e) = r.event().await.unwrap();
    assert_eq!(
        (
            e["type"].as_str(),
            e["error"].as_str(),
            e["failedStepName"].as_str()
        ),
        (Some("run:fail"), Some("disk full"), Some(""))
    );
    assert_eq!(r.event().await, None);
    let r = SseReader::open(&s.http, &s.url("/subscribe?runId=nope"), None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_reconnect_after_the_end_is_held_open_quietly_instead_of_repeating_it() {
    let s = serve(|api| {
        api.allow_unauthenticated_writes()
            .keep_alive(Duration::from_millis(50))
    })
    .await;
    let id = s.trigger("gated", json!({})).await;
    s.wait_leased(&id).await;
    let url = s.url(&format!("/subscribe?runId={id}"));
    let mut r = SseReader::open(&s.http, &url, None).await;
    r.event().await.unwrap();
    s.app.gate.notify_waiters();
    let seen = events_until(&mut r, |d| d["type"] == "run:complete").await;
    let last_id = seen.last().unwrap().0.clone().unwrap();
    assert_eq!(r.event().await, None);
    // EventSource reconnects with the id of the terminal event it got.
    let mut again = SseReader::open(&s.http, &url, Some(&last_id)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.next().await, Some(Sse::Comment("ping".into())));
}

#[tokio::test]
async fn the_all_runs_stream_is_slim_and_filtered() {
    let s = open_server().await;
    let mut all = SseReader::open(&s.http, &s.url("/runs/subscribe"), None).await;
    let mut gated_only =
        SseReader::open(&s.http, &s.url("/runs/subscribe?jobName=gated"), None).await;
    let mut labelled = SseReader::open(&s.http, &s.url("/runs/subscribe?label.team=a"), None).await;
    let import = s
        .post(
            "/trigger",
            json!({"jobName": "import", "input": {"rows": 1}, "labels": {"team": "a"}}),
        )
        .await;
    let import = import.json["runId"].as_str().unwrap().to_owned();
    let events = whole_run(&mut all).await;
    for (_, e) in &events {
        assert!(
            e.get("input").is_none() && e.get("output").is_none(),
            "slim: {e}"
        );
        assert_eq!(e["runId"], import.as_str());
        assert_eq!(e["labels"], json!({"team": "a"}));
    }
    let logs: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "log:write")
        .collect();
    assert_eq!(logs[0]["message"], "starting");
    let labelled_events = whole_run(&mut labelled).await;
    let sorted = |e: &[(Option<String>, Value)]| {
        let mut t = types(e);
        t.sort();
        t
    };
    assert_eq!(sorted(&labelled_events), sorted(&events));

    let gated = s.trigger("gated", json!({})).await;
    let (_, first) = gated_only.event().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["runId"].as_str()),
        (Some("run:trigger"), Some(gated.as_str()))
    );
    s.post_empty(&format!("/cancel?runId={gated}")).await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_loses_nothing_and_repeats_nothing() {
    let s = open_server().await;
    let url = s.url("/runs/subscribe?jobName=import");
    let mut r = SseReader::open(&s.http, &url, None).await;
    let first = s.trigger("import", json!({"rows": 1})).await;
    let before = whole_run(&mut r).await;
    let last_id = before.last().unwrap().0.clone().unwrap();
    drop(r);
    // While the client is away, two more runs go from trigger to end.
    let second = s.trigger("import", json!({"rows": 2})).await;
    let third = s.trigger("import", json!({"rows": 1, "fail": true})).await;
    s.wait(&second).await;
    s.wait(&third).await;
    let mut r = SseReader::open(&s.http, &url, Some(&last_id)).await;
    let mut after = Vec::new();
    // Until both runs ended and both triggers came (a trigger may come after its run's end,
    // see below).
    let seen = |after: &[(Option<String>, Value)], run: &str, t: &str| {
        after
            .iter()
            .any(|(_, d)| d["runId"] == run && d["type"] == t)
    };
    while !(seen(&after, &second, "run:complete")
        && seen(&after, &third, "run:fail")
        && seen(&after, &second, "run:trigger")
        && seen(&after, &third, "run:trigger"))
    {
        after.push(r.event().await.unwrap());
    }
    assert!(
        after.iter().all(|(_, d)| d["runId"] != first.as_str()),
        "nothing repeated"
    );
    for run in [&second, &third] {
        let of_run: Vec<String> = after
            .iter()
            .filter(|(_, d)| d["runId"] == run.as_str())
            .map(|(_, d)| d["type"].as_str().unwrap().to_owned())
            .collect();
        // Every event of the run, once. (`run:trigger` is emitted by the triggering task once
        // its commit returns, so a fast worker's `run:leased` may come first.)
        for t in [
            "run:trigger",
            "run:leased",
            "step:start",
            "step:complete",
            "log:write",
        ] {
            assert_eq!(
                of_run.iter().filter(|x| *x == t).count(),
                if t == "step:start" || (t == "step:complete" && *run == second) {
                    2
                } else {
                    1
                },
                "{run} {t}: {of_run:?}"
            );
        }
    }
    let ids: Vec<&str> = before
        .iter()
        .chain(&after)
        .map(|(id, _)| id.as_deref().unwrap())
        .collect();
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect();
    // No id twice (a held progress may come after later events: the throttle's trailing edge).
    let mut unique = seqs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "no repeats: {seqs:?}");

    // An id from another epoch (another process) starts afresh rather than guessing.
    let mut fresh = SseReader::open(&s.http, &url, Some("ffff-3")).await;
    let fourth = s.trigger("import", json!({"rows": 1})).await;
    let (_, e) = fresh.event().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["runId"].as_str()),
        (Some("run:trigger"), Some(fourth.as_str()))
    );
}

#[tokio::test]
async fn a_resumed_one_run_stream_gets_what_it_missed_then_ends() {
    let s = open_server().await;
    let id = s.trigger("gated", json!({})).await;
    s.wait_leased(&id).await;
    let url = s.url(&format!("/subscribe?runId={id}"));
    let mut r = SseReader::open(&s.http, &url, None).await;
    let (last, _) = r.event().await.unwrap();
    r.event().await.unwrap();
    drop(r);
    s.app.gate.notify_waiters();
    s.wait(&id).await;
    let mut r = SseReader::open(&s.http, &url, Some(last.as_deref().unwrap())).await;
    let rest = events_until(&mut r, |d| d["type"] == "run:complete").await;
    assert!(
        types(&rest).contains(&"step:complete".to_owned()),
        "{:?}",
        types(&rest)
    );
    assert!(
        !types(&rest).contains(&"run:leased".to_owned()),
        "no snapshot on resume: {:?}",
        types(&rest)
    );
    assert_eq!(r.event().await, None);
}

#[tokio::test]
async fn progress_is_throttled_per_run_keeping_the_first_and_the_last() {
    let throttled = serve(|api| {
        api.allow_unauthenticated_writes()
            .progress_throttle(Duration::from_secs(3600))
    })
    .await;
    let every = serve(|api| {
        api.allow_unauthenticated_writes()
            .progress_throttle(Duration::ZERO)
    })
    .await;
    for (s, expect_all) in [(&throttled, false), (&every, true)] {
        let mut r = SseReader::open(&s.http, &s.url("/runs/subscribe"), None).await;
        s.trigger("import", json!({"rows": 50})).await;
        let events = events_until(&mut r, |d| d["type"] == "run:complete").await;
        let progress: Vec<u64> = events
            .iter()
            .filter(|(_, d)| d["type"] == "run:progress")
            .map(|(_, d)| d["progress"]["current"].as_u64().unwrap())
            .collect();
        if expect_all {
            assert_eq!(progress, (1..=50).collect::<Vec<_>>());
        } else {
            // The leading edge, then the latest held one, flushed before the terminal event.
            assert_eq!(progress, [1, 50]);
            let n = events.len();
            assert_eq!(types(&events)[n - 2..], ["run:progress", "run:complete"]);
        }
    }
}

#[tokio::test]
async fn idle_streams_get_pings() {
    let s = serve(|api| api.keep_alive(Duration::from_millis(20))).await;
    let mut r = SseReader::open(&s.http, &s.url("/runs/subscribe"), None).await;
    assert_eq!(r.next().await, Some(Sse::Comment("ping".into())));
    assert_eq!(r.next().await, Some(Sse::Comment("ping".into())));
}

#[tokio::test]
async fn job_events_stream_filtered_and_resumable() {
    let s = open_server().await;
    let url = s.url("/events/subscribe?kind=debounce");
    let mut r = SseReader::open(&s.http, &url, None).await;
    s.post(
        "/instance/start",
        json!({"job": "refresher", "id": "u", "state": {"refreshed": 0}}),
    )
    .await;
    s.post(
        "/instance/event",
        json!({"job": "batcher", "id": "b", "event": 1}),
    )
    .await;
    let (id, e) = r.event().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["jobName"].as_str(), e["id"].as_str()),
        (Some("debounce.started"), Some("batcher"), Some("b"))
    );
    drop(r);
    s.post_empty("/instance/flush?job=batcher&id=b").await;
    let mut r = SseReader::open(&s.http, &url, id.as_deref()).await;
    let missed = events_until(&mut r, |d| d["type"] == "debounce.flushed").await;
    assert_eq!(types(&missed), ["job.executed", "debounce.flushed"]);
    assert_eq!(missed[1].1["eventCount"], 1);
    let bad = SseReader::open(&s.http, &s.url("/events/subscribe?kind=step"), None).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn closing_the_streams_ends_them() {
    let closer = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = closer.clone();
    let server = serve(move |api| {
        *slot.lock().unwrap() = Some(api.closer());
        api
    })
    .await;
    let closer = closer.lock().unwrap().take().unwrap();
    let mut r = SseReader::open(&server.http, &server.url("/runs/subscribe"), None).await;
    closer.close();
    assert_eq!(r.event().await, None);
}
