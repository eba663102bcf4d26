//! Telemetry: event payloads (7.4), in-process subscribers (job events and step-run events in
//! one stream, and what a subscriber that falls behind gets), and delivery to a real HTTP
//! server through the outbox, including across a restart while the endpoint was down, of job
//! events and of step-run events.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use durable_jobs::prelude::*;
use durable_jobs::steps::{RunEvent, RunEventKind, StepError, TriggerOptions};
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, Event, EventKind, ExhaustionReason, HttpTelemetry};
use durable_jobs_tests::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn count(n: i64) -> Count {
    Count {
        count: n,
        max_runs: None,
    }
}

#[tokio::test]
async fn executed_carries_the_state_before_the_run() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    h.client
        .continuous::<Refresher>()
        .start("u", count(10))
        .await
        .unwrap();
    h.client
        .continuous::<Refresher>()
        .start("zero", count(0))
        .await
        .unwrap();
    h.clock.advance(HALF_HOUR).await;
    let executed: Vec<Value> = events
        .drain()
        .iter()
        .filter(|e| e.type_name() == "job.executed")
        .map(|e| e.to_json())
        .collect();
    let of = |id: &str| {
        executed
            .iter()
            .filter(|e| e["id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let u = of("u");
    assert_eq!(
        u[0]["preExecutionState"],
        json!({"count": 10, "max_runs": null}),
        "pre-mutation state"
    );
    assert_eq!(
        (u[0]["runCount"].clone(), u[0]["attempt"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        u[1]["preExecutionState"]["count"], 11,
        "the alarm run sees the first run's state"
    );
    assert_eq!(u[1]["runCount"], 2);
    assert_eq!(
        of("zero")[0]["preExecutionState"]["count"],
        0,
        "a zero value is captured"
    );
}

#[tokio::test]
async fn a_failure_emits_exactly_one_failed_event_with_the_real_message() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    h.probe.fail_next(1, "upstream said 503");
    let started = h
        .client
        .continuous::<Refresher>()
        .start("u", count(3))
        .await;
    assert!(
        matches!(
            started,
            Err(durable_jobs::Error::Execution {
                operation: durable_jobs::Operation::Start,
                ..
            })
        ),
        "{started:?}"
    );
    let failed: Vec<Value> = events
        .drain()
        .iter()
        .filter(|e| e.type_name() == "job.failed")
        .map(|e| e.to_json())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["willRetry"], false);
    assert_eq!(failed[0]["error"]["message"], "upstream said 503");
    assert_eq!(failed[0]["preExecutionState"]["count"], 3);
}

#[tokio::test]
async fn every_event_has_the_base_fields() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    h.client
        .continuous::<Refresher>()
        .start("u", count(0))
        .await
        .unwrap();
    h.client
        .debounce::<Batcher>()
        .add("c", Hook { n: 1 })
        .await
        .unwrap();
    h.client
        .task::<Orders>()
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    h.client
        .continuous::<Refresher>()
        .terminate("u", Some("bye"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(5)).await;
    let all: Vec<Value> = events.drain().iter().map(|e| e.to_json()).collect();
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "job.started",
        "job.executed",
        "job.terminated",
        "debounce.started",
        "debounce.flushed",
        "task.scheduled",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    for e in &all {
        for field in [
            "eventId",
            "timestamp",
            "source",
            "instanceId",
            "id",
            "jobType",
            "jobName",
            "type",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert_eq!(e["source"], "job");
        if e["type"] == "job.executed" {
            assert!(e["durationMs"].is_u64());
        }
    }
    let terminated = all.iter().find(|e| e["type"] == "job.terminated").unwrap();
    assert_eq!(
        (terminated["reason"].clone(), terminated["runCount"].clone()),
        (json!("bye"), json!(1))
    );
    let flushed = all
        .iter()
        .find(|e| e["type"] == "debounce.flushed")
        .unwrap();
    assert_eq!(
        (flushed["reason"].clone(), flushed["eventCount"].clone()),
        (json!("timeout"), json!(1))
    );
    assert_eq!(flushed["durationMs"], 5000);
    let started = all
        .iter()
        .find(|e| e["type"] == "debounce.started")
        .unwrap();
    assert_eq!(started["instanceId"], "debounce:batcher:c");
    assert_eq!(started["flushAt"], "2026-01-01T00:00:05.000Z");
}

/// A real HTTP server on a loopback port that forwards every posted batch.
async fn collector() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn ingest(
        State(tx): State<Arc<mpsc::UnboundedSender<Value>>>,
        Json(body): Json<Value>,
    ) -> &'static str {
        tx.send(body).ok();
        "ok"
    }
    let app = Router::new()
        .route("/ingest", post(ingest))
        .with_state(Arc::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, rx)
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<Value>, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("delivery")
            .unwrap();
        events.extend(batch["events"].as_array().unwrap().iter().cloned());
    }
    events
}

#[tokio::test]
async fn events_reach_an_http_endpoint_with_env_and_service_key() {
    let (url, mut rx) = collector().await;
    let dir = durable_jobs_tests::TestDb::new().await;
    let probe = Probe::default();
    let engine = Engine::<TestJobs>::builder()
        .store_arc(dir.open().await)
        .telemetry(HttpTelemetry::new(&url, "test", "svc-key").batch_size(2))
        .app(probe)
        .start()
        .await
        .unwrap();
    let client = engine.client();
    client
        .continuous::<Refresher>()
        .start("u", count(0))
        .await
        .unwrap();
    client
        .continuous::<Refresher>()
        .terminate("u", None)
        .await
        .unwrap();
    let events = receive(&mut rx, 3).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["job.started", "job.executed", "job.terminated"]);
    for e in &events {
        assert_eq!(e["env"], "test");
        assert_eq!(e["serviceKey"], "svc-key");
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_written_while_the_endpoint_was_down_are_delivered_after_a_restart() {
    // A port that refuses connections: bind, note the address, close.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/ingest", dead.local_addr().unwrap());
    drop(dead);
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<TestJobs>::builder()
        .store_arc(db.open().await)
        .telemetry(HttpTelemetry::new(&dead_url, "test", "svc"))
        .shutdown_timeout(Duration::from_millis(200))
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    engine
        .client()
        .task::<Orders>()
        .send(
            "o",
            OrderEvent::AddAndSchedule {
                amount: 1,
                secs: 60,
            },
        )
        .await
        .unwrap();
    engine.shutdown().await.unwrap();

    let (url, mut rx) = collector().await;
    let engine = Engine::<TestJobs>::builder()
        .store_arc(db.open().await)
        .telemetry(HttpTelemetry::new(&url, "test", "svc"))
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    let events = receive(&mut rx, 2).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["job.executed", "task.scheduled"]);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_exhausted_gives_the_reason_the_hook_gets() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    h.probe.fail_always(Some("upstream down"));
    let _ = h
        .client
        .continuous::<RetryingRefresher>()
        .start("r", count(0))
        .await;
    h.clock.advance(Duration::from_secs(2)).await;
    let exhausted = events
        .drain()
        .into_iter()
        .find(|e| e.type_name() == "job.retryExhausted")
        .and_then(durable_jobs::Event::into_job)
        .expect("job.retryExhausted");
    let EventKind::RetryExhausted { attempts, reason } = exhausted.kind.clone() else {
        panic!("{exhausted:?}")
    };
    assert_eq!((attempts, reason), (3, ExhaustionReason::MaxAttempts));
    let hook = h.probe.calls_of("exhausted");
    assert_eq!(hook[0].detail, format!("{reason}: upstream down"));
    assert_eq!(exhausted.to_json()["reason"], "max_attempts");
}

/// Greets, in one step.
#[durable_jobs::step_job(name = "greeting")]
pub async fn greeting(step: &mut StepContext, name: String) -> Result<String, StepError> {
    step.run("greet", |_| async move {
        Ok::<_, durable_jobs::BoxError>(format!("hello {name}"))
    })
    .await
}

durable_jobs::registry! {
    /// A step job whose run events the outbox delivers.
    pub Greetings<()> { Greeting }
}

#[tokio::test]
async fn step_run_events_reach_the_http_endpoint_through_the_outbox() {
    let (url, mut rx) = collector().await;
    let dir = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<Greetings>::builder()
        .store_arc(dir.open().await)
        .telemetry(HttpTelemetry::new(&url, "test", "svc-key"))
        .start()
        .await
        .unwrap();
    let done = engine
        .client()
        .step_job::<Greeting>()
        .trigger_and_wait("ada".into(), TriggerOptions::new(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.output, "hello ada");
    let events = receive(&mut rx, 5).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "run:trigger",
            "run:leased",
            "step:start",
            "step:complete",
            "run:complete"
        ]
    );
    for e in &events {
        assert_eq!(e["runId"], done.id.as_str(), "{e}");
        assert_eq!(e["jobName"], "greeting");
        assert_eq!(
            (e["env"].as_str(), e["serviceKey"].as_str()),
            (Some("test"), Some("svc-key"))
        );
        assert_eq!(e["eventId"].as_str().map(str::len), Some(36), "{e}");
    }
    assert_eq!(events[4]["output"], "hello ada");
    engine.shutdown().await.unwrap();
}

/// Adds one, then doubles, in two steps.
#[durable_jobs::step_job(name = "tally")]
pub async fn tally(step: &mut StepContext, input: u32, _app: &Probe) -> Result<u32, StepError> {
    let added = step
        .run("add", |_| async move {
            Ok::<_, durable_jobs::BoxError>(input + 1)
        })
        .await?;
    step.run("double", |_| async move {
        Ok::<_, durable_jobs::BoxError>(added * 2)
    })
    .await
}

/// Logs `lines` lines, each a `log:write` event, then returns how many.
#[durable_jobs::step_job(name = "chatty")]
pub async fn chatty(step: &mut StepContext, lines: u32, _app: &Probe) -> Result<u32, StepError> {
    for line in 0..lines {
        step.info(format!("line {line}"));
    }
    Ok(lines)
}

durable_jobs::registry! {
    /// A task job beside step jobs, all publishing into the one event stream.
    pub Mixed<Probe> { Orders, Tally, Chatty }
}

/// An engine of [`Mixed`] on a file, driven by a test clock.
async fn mixed() -> (Engine<Mixed>, TestClock, durable_jobs_tests::TestDb) {
    let dir = durable_jobs_tests::TestDb::new().await;
    let clock = TestClock::new();
    let engine = Mixed::builder()
        .store_arc(dir.open().await)
        .clock(clock.clone())
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    (engine, clock, dir)
}

/// An event as `kind type [step]`, for comparing sequences.
fn describe(event: &Event) -> String {
    match (event.as_job(), event.as_run()) {
        (Some(job), _) => format!("job {} {}", job.type_name(), job.instance.id()),
        (_, Some(run)) => match &run.kind {
            RunEventKind::StepStart { step_name, .. }
            | RunEventKind::StepComplete { step_name, .. } => {
                format!("run {} {step_name}", run.type_name())
            }
            _ => format!("run {}", run.type_name()),
        },
        _ => panic!("an event of neither kind: {event:?}"),
    }
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn engine_events_carry_step_runs_in_order_between_job_events() {
    let (engine, clock, _dir) = mixed().await;
    let mut events = engine.events();
    let client = engine.client();
    client
        .task::<Orders>()
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    let done = client
        .step_job::<Tally>()
        .trigger_and_wait(3, TriggerOptions::new(), WAIT)
        .await
        .unwrap();
    assert_eq!(done.output, 8);
    clock.advance(Duration::from_secs(5)).await;

    let all = events.drain();
    let seen: Vec<String> = all.iter().map(describe).collect();
    assert_eq!(
        seen,
        [
            "job job.executed o",
            "job task.scheduled o",
            "run run:trigger",
            "run run:leased",
            "run step:start add",
            "run step:complete add",
            "run step:start double",
            "run step:complete double",
            "run run:complete",
            "job job.executed o",
        ]
    );
    let runs: Vec<&RunEvent> = all.iter().filter_map(Event::as_run).collect();
    assert!(runs
        .iter()
        .all(|e| e.run_id == done.id && e.job_name == "tally"));
    // The runtime's own numbering of run events is kept.
    let sequences: Vec<u64> = runs.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<u64>>());
    assert_eq!(runs[6].to_json()["output"], 8);
    assert_eq!(events.skipped(), 0);
}

#[tokio::test]
async fn a_lagging_events_subscriber_skips_the_oldest_and_holds_up_no_run() {
    const LINES: u32 = 5_000;
    let (engine, _clock, _dir) = mixed().await;
    // Never read while the run goes on: it falls behind by more than the 4,096 events kept.
    let mut slow = engine.events();
    let chatty = engine.client().step_job::<Chatty>();
    let done = chatty
        .trigger_and_wait(LINES, TriggerOptions::new(), WAIT)
        .await
        .unwrap();
    assert_eq!(done.output, LINES);

    // A run's own stream that lags ends all the same, with the run's end.
    let second = chatty.trigger(LINES, TriggerOptions::new()).await.unwrap();
    let mut one_run = chatty.subscribe(&second.id).await.unwrap();
    chatty.wait_for_run(&second.id, Some(WAIT)).await.unwrap();
    let mut last = None;
    while let Some(event) = tokio::time::timeout(WAIT, one_run.next()).await.unwrap() {
        assert_eq!(event.run_id, second.id);
        last = Some(event);
    }
    assert_eq!(last.map(|e| e.type_name()), Some("run:complete"));

    // The slow subscriber kept the newest events, in order, and counts what it skipped.
    let kept = slow.drain();
    let runs: Vec<&RunEvent> = kept.iter().filter_map(Event::as_run).collect();
    assert_eq!(runs.len(), kept.len(), "no job ran");
    // Each run: `run:trigger`, `run:leased`, one `log:write` per line, `run:complete`.
    let emitted = 2 * (u64::from(LINES) + 3);
    assert!(slow.skipped() > 0);
    assert_eq!(kept.len() as u64 + slow.skipped(), emitted);
    let sequences: Vec<u64> = runs.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (slow.skipped() + 1..=emitted).collect::<Vec<u64>>()
    );
    let end = runs.last().unwrap();
    assert_eq!(
        (end.type_name(), end.run_id.as_str()),
        ("run:complete", second.id.as_str())
    );

    // It goes on with what comes next.
    engine
        .client()
        .task::<Orders>()
        .send("o", OrderEvent::Add { amount: 1 })
        .await
        .unwrap();
    let next = slow.try_next().expect("the next event");
    assert_eq!(next.as_job().map(|e| e.type_name()), Some("job.executed"));
}
