//! Leases, reclaims, crashes and retries (upstream `recovery.shared.ts`,
//! `stale-owner.e2e.test.ts`, `phase1-exploration.test.ts`; retries are beyond upstream).

use std::time::Duration;

use super::*;
use crate::error::Error;

#[tokio::test]
async fn the_lease_is_set_while_leased_and_renewed() {
    let options = StepOptions::default()
        .lease_duration(Duration::from_secs(30))
        .lease_renew_interval(Duration::from_secs(5));
    let env = Env::builder()
        .options(options)
        .test_clock()
        .stopped()
        .build()
        .await;
    env.app.block("s");
    let script = env.client::<Script>();
    let mut events = script.events();
    let t0 = env.clock().now();
    let t = script
        .trigger(super::script(&["s"]), TriggerOptions::new())
        .await
        .expect("trigger");
    assert_eq!(
        env.run(&t.id).await.lease_expires_at,
        None,
        "no lease while pending"
    );
    env.rt.start();
    env.app.entered().await;
    assert_eq!(
        env.run(&t.id).await.lease_expires_at,
        Some(t0 + Duration::from_secs(30))
    );
    // Time passes well beyond the first lease; renewals keep it alive.
    env.clock().advance(Duration::from_secs(62)).await;
    let run = env.run(&t.id).await;
    assert_eq!((run.status, run.lease_generation), (RunStatus::Leased, 1));
    assert_eq!(
        run.lease_expires_at,
        Some(t0 + Duration::from_secs(60 + 30))
    );
    let renewed = loop {
        let e = events.next().await.expect("event");
        if e.type_name() == "run:lease-renewed" {
            break e;
        }
    };
    assert_eq!(renewed.job_name, "script");
    env.app.release(1);
    env.wait(&t.id).await.expect("completes");
    assert_eq!(env.app.calls("s"), 1);
}

#[tokio::test]
async fn an_expired_lease_of_a_dead_worker_is_reclaimed_without_rerunning_its_steps() {
    let options = StepOptions::default().preserve_steps(true);
    let env = Env::builder().options(options).test_clock().build().await;
    env.settle().await;
    let now = env.clock().now();
    // A worker that died after persisting step1: its run is leased until now + 30 s.
    let run = NewRun {
        id: "01DEADRUN".into(),
        job_name: "script".into(),
        input: serde_json::to_string(&super::script(&["step1", "step2"])).expect("json"),
        idempotency_key: None,
        concurrency_key: None,
        labels: Labels::new(),
        coalesce: false,
    };
    env.store.enqueue(vec![run], now).await.expect("enqueue");
    let claimed = env
        .store
        .claim("dead-worker", now, now + Duration::from_secs(30), 1)
        .await
        .expect("claim");
    let generation = claimed.runs[0].generation;
    let fence = Fence {
        run_id: "01DEADRUN".into(),
        generation,
        hint: None,
    };
    let step1 = NewStep {
        id: "s1".into(),
        name: "step1".into(),
        index: 0,
        status: StepStatus::Completed,
        output: Some("\"result-1\"".into()),
        error: None,
        started_at: now,
        completed_at: now,
    };
    assert!(env
        .store
        .persist_step(fence.clone(), step1, Vec::new())
        .await
        .expect("persist"));
    env.settle().await;
    assert_eq!(
        env.run("01DEADRUN").await.lease_owner.as_deref(),
        Some("dead-worker"),
        "a live lease is respected"
    );
    // When the lease expires the worker reclaims the run by itself.
    env.clock().advance(Duration::from_secs(31)).await;
    let done = env.wait("01DEADRUN").await.expect("completes");
    assert_eq!(done.output.as_deref(), Some(r#"["result-1","step2-1"]"#));
    assert_eq!((env.app.calls("step1"), env.app.calls("step2")), (0, 1));
    assert_eq!(done.lease_generation, generation + 1);
    assert_eq!(done.started_at, Some(now), "a reclaim keeps started_at");
    // The dead worker's writes are refused from now on.
    let late = NewStep {
        id: "s9".into(),
        name: "late".into(),
        index: 9,
        status: StepStatus::Completed,
        output: None,
        error: None,
        started_at: now,
        completed_at: now,
    };
    assert!(!env
        .store
        .persist_step(fence, late, Vec::new())
        .await
        .expect("persist"));
    assert_eq!(
        env.steps("01DEADRUN")
            .await
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["step1", "step2"]
    );
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_stops_at_the_next_step() {
    let options = StepOptions::default().preserve_steps(true);
    let env = Env::builder().options(options).test_clock().build().await;
    env.app.block("step1");
    let script = env.client::<Script>();
    let t = script
        .trigger(super::script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    // Another worker takes the run over (its lease expired while this process stalled).
    let later = env.clock().now() + Duration::from_secs(31);
    env.exec(&format!(
        "UPDATE durably_runs SET lease_owner = 'thief', lease_generation = lease_generation + 1, lease_expires_at = '{}' WHERE id = '{}'",
        crate::sqlite::runs::format_ts(later + Duration::from_secs(3600)),
        t.id
    ));
    env.app.release(1);
    tokio::time::timeout(WAIT, async {
        while env
            .rt
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&t.id)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stale execution ends");
    assert_eq!(
        env.app.calls("step2"),
        0,
        "the stale worker does not start step2"
    );
    let run = env.run(&t.id).await;
    assert_eq!(
        (run.status, run.lease_owner.as_deref()),
        (RunStatus::Leased, Some("thief"))
    );
    assert!(
        env.steps(&t.id).await.is_empty(),
        "its step1 result was refused"
    );
}

#[tokio::test]
async fn renewal_detects_a_lost_lease_and_cancels_the_token() {
    let options = StepOptions::default()
        .lease_duration(Duration::from_secs(30))
        .lease_renew_interval(Duration::from_secs(5));
    let env = Env::builder().options(options).test_clock().build().await;
    env.app.block("s");
    let script = env.client::<Script>();
    let t = script
        .trigger(super::script(&["s", "after"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    env.exec(&format!(
        "UPDATE durably_runs SET lease_owner = 'thief' WHERE id = '{}'",
        t.id
    ));
    env.clock().advance(Duration::from_secs(5)).await;
    // The blocked step observes the lost lease through its token and stops.
    tokio::time::timeout(WAIT, async {
        while env
            .rt
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&t.id)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the execution ends");
    assert_eq!(env.app.saw_cancel(), ["s"]);
    assert_eq!(env.app.calls("after"), 0);
}

#[tokio::test]
async fn killing_the_worker_mid_run_resumes_after_reopening_without_rerunning_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let env = Env::builder().path(&path).build().await;
    env.app.block("c");
    let t = env
        .client::<Script>()
        .trigger(super::script(&["a", "b", "c", "d"]), TriggerOptions::new())
        .await
        .expect("trigger");
    assert_eq!(env.app.entered().await, "c");
    // Crash: no graceful stop, the step never finishes; the database keeps what committed.
    env.rt.abort();
    env.db.close_blocking();
    let first_app = env.app.clone();
    drop(env);

    let app = App::new();
    let env = Env::builder().path(&path).app(app.clone()).build().await;
    let done = env
        .wait(&t.id)
        .await
        .expect("the run completes after the restart");
    assert_eq!(done.output.as_deref(), Some(r#"["a-1","b-1","c-1","d-1"]"#));
    assert_eq!(
        (
            first_app.calls("a"),
            first_app.calls("b"),
            first_app.calls("c")
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            app.calls("a"),
            app.calls("b"),
            app.calls("c"),
            app.calls("d")
        ),
        (0, 0, 1, 1)
    );
    assert_eq!(done.lease_generation, 2);
}

#[tokio::test]
async fn a_retry_policy_sends_a_failed_attempt_back_to_pending() {
    let env = Env::builder().test_clock().build().await;
    env.app.fail("b", 1);
    let retrying = env.client::<Retrying>();
    let mut events = retrying.events();
    let t0 = env.clock().now();
    let t = retrying
        .trigger(super::script(&["a", "b"]), TriggerOptions::new())
        .await
        .expect("trigger");
    let retry = loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("in time")
            .expect("event");
        if let RunEventKind::Retry {
            error,
            next_attempt,
            not_before,
        } = &e.kind
        {
            break (error.clone(), *next_attempt, *not_before);
        }
    };
    assert_eq!(
        retry,
        ("b failed!".to_owned(), 2, t0 + Duration::from_secs(10))
    );
    let run = env.run(&t.id).await;
    assert_eq!(
        (
            run.status,
            run.attempt,
            run.not_before,
            run.error.as_deref()
        ),
        (
            RunStatus::Pending,
            2,
            Some(t0 + Duration::from_secs(10)),
            Some("b failed!")
        )
    );
    // Not before its time.
    env.clock().advance(Duration::from_secs(9)).await;
    assert_eq!(env.run(&t.id).await.status, RunStatus::Pending);
    env.clock().advance(Duration::from_secs(1)).await;
    let done = env.wait(&t.id).await.expect("the second attempt completes");
    assert_eq!(done.output.as_deref(), Some(r#"["a-1","b-2"]"#));
    assert_eq!(
        (env.app.calls("a"), env.app.calls("b")),
        (1, 2),
        "completed steps stay memoised"
    );
    assert_eq!(done.attempt, 2);
}

#[tokio::test]
async fn an_exhausted_retry_policy_fails_the_run() {
    let env = Env::builder().test_clock().build().await;
    env.app.fail("b", 10);
    let retrying = env.client::<Retrying>();
    let t = retrying
        .trigger(super::script(&["a", "b"]), TriggerOptions::new())
        .await
        .expect("trigger");
    for attempt in 2..=3 {
        tokio::time::timeout(WAIT, async {
            loop {
                let run = env.run(&t.id).await;
                if run.status == RunStatus::Pending && run.attempt == attempt {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("back to pending");
        env.clock().advance(Duration::from_secs(10)).await;
    }
    let e = assert_err!(env.wait(&t.id).await, Error::Execution { .. });
    assert!(e.to_string().contains("b failed!"), "{e}");
    let run = env.run(&t.id).await;
    assert_eq!((run.status, run.attempt), (RunStatus::Failed, 3));
    assert_eq!(env.app.calls("b"), 3);
}

#[tokio::test]
async fn an_unknown_job_fails_its_run() {
    let env = Env::builder().stopped().build().await;
    let run = NewRun {
        id: "01UNKNOWN".into(),
        job_name: "gone".into(),
        input: "{}".into(),
        idempotency_key: None,
        concurrency_key: None,
        labels: Labels::new(),
        coalesce: false,
    };
    env.store
        .enqueue(vec![run], Timestamp::now_system())
        .await
        .expect("enqueue");
    env.rt.start();
    let e = assert_err!(env.wait("01UNKNOWN").await, Error::Execution { .. });
    assert!(e.to_string().contains("Unknown job: gone"), "{e}");
}
