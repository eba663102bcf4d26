//! Events, subscriptions, progress and logs (upstream `events.shared.ts`, `log.shared.ts`,
//! `plugin.shared.ts`, `core-extensions.test.ts`, progress parts of `run-api.shared.ts`).

use super::*;

async fn collect_until_terminal(stream: &mut RunEventStream) -> Vec<Arc<RunEvent>> {
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
    {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn events_carry_sequence_timestamp_and_payload() {
    let env = Env::builder().test_clock().build().await;
    let mut all = env.rt.events(None);
    let t = env
        .client::<Double>()
        .trigger(ValueIn { value: 21 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(all.next().await.expect("event"));
    }
    let kinds: Vec<_> = got.iter().map(|e| e.type_name()).collect();
    assert_eq!(
        kinds,
        [
            "run:trigger",
            "run:leased",
            "step:start",
            "step:complete",
            "run:complete"
        ]
    );
    let seqs: Vec<u64> = got.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert!(got
        .iter()
        .all(|e| e.timestamp == env.clock().now() && e.run_id == t.id && e.job_name == "double"));
    let RunEventKind::StepComplete {
        step_name,
        step_index,
        output,
        ..
    } = &got[3].kind
    else {
        panic!()
    };
    assert_eq!(
        (step_name.as_str(), *step_index, output),
        ("compute", 0, &serde_json::json!(42))
    );
    let RunEventKind::Complete { output, .. } = &got[4].kind else {
        panic!()
    };
    assert_eq!(output, &serde_json::json!({ "result": 42 }));
    let wire = got[4].to_json();
    assert_eq!(wire["type"], "run:complete");
    assert_eq!(wire["runId"], serde_json::json!(t.id));
    assert_eq!(wire["jobName"], "double");
    assert_eq!(wire["output"]["result"], 42);
    assert_eq!(wire["sequence"], 5);
    assert_eq!(wire["timestamp"], "2026-01-01T00:00:00.000Z");
    assert_eq!(wire["labels"], serde_json::json!({}));
    let leased = got[1].to_json();
    assert_eq!(leased["leaseOwner"], serde_json::json!(env.rt.shared.owner));
    assert_eq!(leased["input"], serde_json::json!({ "value": 21 }));
}

#[tokio::test]
async fn run_trigger_comes_first_when_the_worker_starts_the_run_before_trigger_returns() {
    let wrap = Arc::new(Wrap::default());
    wrap.enqueue_waits_for_a_claim.store(true, Ordering::SeqCst);
    let env = Env::builder().wrap(wrap).build().await;
    let mut all = env.rt.events(None);
    let t = env
        .client::<Double>()
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(all.next().await.expect("event"));
    }
    let kinds: Vec<_> = got.iter().map(|e| e.type_name()).collect();
    assert_eq!(
        kinds,
        [
            "run:trigger",
            "run:leased",
            "step:start",
            "step:complete",
            "run:complete"
        ]
    );
    let seqs: Vec<u64> = got.iter().map(|e| e.sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn sequence_counts_events_nobody_listened_to() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let mut all = env.rt.events(None);
    double
        .trigger(ValueIn { value: 2 }, TriggerOptions::new())
        .await
        .expect("trigger");
    assert_eq!(all.next().await.expect("event").sequence, 2);
}

#[test]
fn domain_events_are_classified() {
    let domain = [
        RunEventKind::Trigger {
            input: serde_json::Value::Null,
        },
        RunEventKind::Coalesced {
            skipped_input: serde_json::Value::Null,
            skipped_labels: Labels::new(),
        },
        RunEventKind::Complete {
            output: serde_json::Value::Null,
            duration_ms: 0,
        },
        RunEventKind::Fail {
            error: String::new(),
            failed_step_name: None,
        },
        RunEventKind::Cancel,
        RunEventKind::Delete,
    ];
    assert!(domain.iter().all(RunEventKind::is_domain));
    let operational = [
        RunEventKind::Leased {
            input: serde_json::Value::Null,
            lease_owner: String::new(),
            lease_expires_at: Timestamp::EPOCH,
        },
        RunEventKind::LeaseRenewed {
            lease_owner: String::new(),
            lease_expires_at: Timestamp::EPOCH,
        },
        RunEventKind::Progress {
            progress: Progress::new(1),
        },
        RunEventKind::StepStart {
            step_name: String::new(),
            step_index: 0,
        },
        RunEventKind::StepComplete {
            step_name: String::new(),
            step_index: 0,
            output: serde_json::Value::Null,
            duration_ms: 0,
        },
        RunEventKind::StepFail {
            step_name: String::new(),
            step_index: 0,
            error: String::new(),
        },
        RunEventKind::StepCancel {
            step_name: String::new(),
            step_index: 0,
        },
        RunEventKind::LogWrite {
            step_name: None,
            level: LogLevel::Info,
            message: String::new(),
            data: None,
        },
        RunEventKind::WorkerError {
            error: String::new(),
            context: "claim",
        },
    ];
    assert!(operational.iter().all(|k| !k.is_domain()));
}

#[tokio::test]
async fn run_delete_and_cancel_events_are_delivered() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(
            ValueIn { value: 1 },
            TriggerOptions::new().label("env", "x"),
        )
        .await
        .expect("trigger");
    let mut all = env.rt.events(None);
    double.cancel(&t.id).await.expect("cancel");
    double.delete_run(&t.id).await.expect("delete");
    let cancel = all.next().await.expect("cancel");
    let delete = all.next().await.expect("delete");
    assert_eq!(
        (cancel.type_name(), delete.type_name()),
        ("run:cancel", "run:delete")
    );
    assert_eq!(delete.labels.get("env").map(String::as_str), Some("x"));
}

#[tokio::test]
async fn progress_and_logs_are_emitted_and_persisted() {
    let env = Env::builder()
        .options(StepOptions::default().preserve_steps(true))
        .build()
        .await;
    let chatty = env.client::<Chatty>();
    let mut all = chatty.events();
    let t = chatty
        .trigger(ValueIn { value: 0 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    let mut progress = Vec::new();
    let mut logs = Vec::new();
    loop {
        let e = all.next().await.expect("event");
        match &e.kind {
            RunEventKind::Progress { progress: p } => progress.push(p.clone()),
            RunEventKind::LogWrite {
                step_name,
                level,
                message,
                data,
            } => logs.push((step_name.clone(), *level, message.clone(), data.clone())),
            RunEventKind::Complete { .. } => break,
            _ => {}
        }
        assert_eq!(e.run_id, t.id);
    }
    assert_eq!(
        progress,
        [
            Progress::new(1).of(3).message("first"),
            Progress::new(2).of(3),
            Progress::new(3).of(3).message("done")
        ]
    );
    assert_eq!(
        logs,
        [
            (None, LogLevel::Info, "Starting".to_owned(), None),
            (
                Some("my-step".to_owned()),
                LogLevel::Info,
                "inside".to_owned(),
                None
            ),
            (None, LogLevel::Warn, "Almost done".to_owned(), None),
            (
                None,
                LogLevel::Error,
                "Failed item".to_owned(),
                Some(serde_json::json!({ "code": 42 }))
            ),
        ]
    );
    let run = env.run(&t.id).await;
    assert_eq!(
        run.progress.as_deref(),
        Some(r#"{"current":3,"total":3,"message":"done"}"#)
    );
    let stored = chatty.logs(&t.id).await.expect("logs");
    assert_eq!(
        stored
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>(),
        ["Starting", "inside", "Almost done", "Failed item"]
    );
    assert_eq!(stored[1].step_name.as_deref(), Some("my-step"));
    assert_eq!(stored[3].data, Some(serde_json::json!({ "code": 42 })));
}

#[tokio::test]
async fn logs_are_deleted_with_the_steps_unless_preserved() {
    let env = Env::new().await;
    let chatty = env.client::<Chatty>();
    let t = chatty
        .trigger(ValueIn { value: 0 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    assert!(chatty.logs(&t.id).await.expect("logs").is_empty());
    assert!(chatty.steps(&t.id).await.expect("steps").is_empty());
}

#[tokio::test]
async fn subscribe_streams_a_runs_events_and_ends() {
    let env = Env::new().await;
    env.app.block("s1");
    let script = env.client::<Script>();
    let t = script
        .trigger(super::script(&["s1", "s2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    // A leased run starts with a snapshot of sequence 0.
    let mut stream = script.subscribe(&t.id).await.expect("subscribe");
    let other = env
        .client::<Double>()
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("other");
    env.wait(&other.id).await.expect("other completes");
    env.app.release(1);
    let events = collect_until_terminal(&mut stream).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.type_name(), e.sequence == 0))
        .collect();
    assert_eq!(
        kinds,
        [
            ("run:leased", true),
            ("step:complete", false),
            ("step:start", false),
            ("step:complete", false),
            ("run:complete", false),
        ]
    );
    assert!(events.iter().all(|e| e.run_id == t.id));
    // A completed run gives its terminal snapshot and ends at once.
    let mut done = script.subscribe(&t.id).await.expect("subscribe");
    let snap = collect_until_terminal(&mut done).await;
    assert_eq!(snap.len(), 1);
    assert!(matches!(
        snap[0].kind,
        RunEventKind::Complete { duration_ms: 0, .. }
    ));
    assert_err!(
        script.subscribe("missing").await,
        crate::Error::InstanceNotFound { .. }
    );
}

#[tokio::test]
async fn subscribe_to_a_pending_run_ends_on_cancel() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let mut stream = double.subscribe(&t.id).await.expect("subscribe");
    double.cancel(&t.id).await.expect("cancel");
    let events = collect_until_terminal(&mut stream).await;
    assert_eq!(
        events.iter().map(|e| e.type_name()).collect::<Vec<_>>(),
        ["run:cancel"]
    );
}

#[tokio::test]
async fn a_failed_run_emits_run_fail_with_the_failed_step() {
    let env = Env::new().await;
    env.app.fail("s2", 1);
    let script = env.client::<Script>();
    let mut all = script.events();
    let t = script
        .trigger(super::script(&["s1", "s2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect_err("fails");
    let mut step_fail = None;
    loop {
        let e = all.next().await.expect("event");
        match &e.kind {
            RunEventKind::StepFail {
                step_name, error, ..
            } => step_fail = Some((step_name.clone(), error.clone())),
            RunEventKind::Fail {
                error,
                failed_step_name,
            } => {
                assert_eq!(error, "s2 failed!");
                assert_eq!(failed_step_name.as_deref(), Some("s2"));
                assert_eq!(e.to_json()["failedStepName"], "s2");
                break;
            }
            RunEventKind::StepCancel { .. } => panic!("no step:cancel for a plain failure"),
            _ => {}
        }
    }
    assert_eq!(step_fail, Some(("s2".to_owned(), "s2 failed!".to_owned())));
}
