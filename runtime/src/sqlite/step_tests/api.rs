//! Triggers, reads and run management (upstream `job.shared.ts`, `run-api.shared.ts`,
//! `recovery.shared.ts` management parts, `purge.shared.ts`).

use std::time::Duration;

use super::*;
use crate::error::{Error, Operation, ValidationTarget};

#[tokio::test]
async fn trigger_creates_a_pending_run() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    assert_eq!(double.name(), "double");
    let t = double
        .trigger(ValueIn { value: 21 }, TriggerOptions::new())
        .await
        .expect("trigger");
    assert_eq!(t.disposition, Disposition::Created);
    assert_eq!(
        (t.status, t.input.clone(), t.job_name.as_str()),
        (RunStatus::Pending, ValueIn { value: 21 }, "double")
    );
    assert_eq!(
        (t.lease_generation, t.attempt, t.output.clone()),
        (0, 1, None)
    );
    assert_eq!(t.lease_expires_at, None);
}

#[tokio::test]
async fn invalid_json_input_is_refused_and_creates_nothing() {
    let env = Env::builder().stopped().build().await;
    let bad = serde_json::json!({ "value": "not a number" });
    let e = assert_err!(
        env.rt
            .trigger_json("double", vec![(bad, TriggerOptions::new())])
            .await,
        Error::Validation { .. }
    );
    assert!(matches!(
        e,
        Error::Validation {
            target: ValidationTarget::Input,
            ..
        }
    ));
    let ok = env
        .rt
        .trigger_json(
            "double",
            vec![(serde_json::json!({ "value": 1 }), TriggerOptions::new())],
        )
        .await;
    assert_eq!(ok.expect("valid").len(), 1);
    assert_err!(
        env.rt.trigger_json("nope", vec![]).await,
        Error::JobNotFound { .. }
    );
}

#[tokio::test]
async fn batch_trigger_creates_runs_in_order_with_their_options() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    assert!(double
        .batch_trigger(Vec::<ValueIn>::new())
        .await
        .expect("empty")
        .is_empty());
    let runs = double
        .batch_trigger([
            ValueIn { value: 1 },
            ValueIn { value: 2 },
            ValueIn { value: 3 },
        ])
        .await
        .expect("batch");
    assert_eq!(
        runs.iter().map(|r| r.input.value).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(runs
        .iter()
        .all(|r| r.status == RunStatus::Pending && r.disposition == Disposition::Created));
    let items = [
        BatchItem::new(ValueIn { value: 4 })
            .options(TriggerOptions::new().idempotency_key("key-a")),
        BatchItem::new(ValueIn { value: 5 })
            .options(TriggerOptions::new().concurrency_key("group-1")),
    ];
    let runs = double.batch_trigger(items).await.expect("batch");
    assert_eq!(runs[0].idempotency_key.as_deref(), Some("key-a"));
    assert_eq!(runs[1].concurrency_key.as_deref(), Some("group-1"));
}

#[tokio::test]
async fn a_batch_with_one_invalid_item_creates_nothing() {
    let env = Env::builder().stopped().build().await;
    let items = vec![
        (serde_json::json!({ "value": 5 }), TriggerOptions::new()),
        (serde_json::json!({ "value": -0.5 }), TriggerOptions::new()),
        (serde_json::json!({ "value": 3 }), TriggerOptions::new()),
    ];
    let e = assert_err!(
        env.rt.trigger_json("double", items).await,
        Error::Validation { .. }
    );
    assert!(e.to_string().contains("at index 1"), "{e}");
    let bad_label = [
        BatchItem::new(ValueIn { value: 1 }),
        BatchItem::new(ValueIn { value: 2 }).options(TriggerOptions::new().label("bad key", "x")),
    ];
    let e = assert_err!(
        env.client::<Double>().batch_trigger(bad_label).await,
        Error::Validation { .. }
    );
    assert!(e.to_string().contains("at index 1"), "{e}");
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_runs"), 0);
}

#[tokio::test]
async fn labels_are_validated_and_stored() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    for bad in ["invalid key", "key\"injection", ""] {
        let e = assert_err!(
            double
                .trigger(ValueIn { value: 1 }, TriggerOptions::new().label(bad, "x"))
                .await,
            Error::Validation {
                target: ValidationTarget::Key,
                ..
            }
        );
        assert!(e.to_string().contains("label key"), "{e}");
    }
    let options = TriggerOptions::new()
        .label("organizationId", "org_1")
        .label("app.kubernetes.io/name", "web");
    let t = double
        .trigger(ValueIn { value: 1 }, options)
        .await
        .expect("trigger");
    let run = double.get_run(&t.id).await.expect("get").expect("exists");
    assert_eq!(
        run.labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("web")
    );
    let found = double
        .get_runs(RunFilter::new().label("organizationId", "org_1"))
        .await
        .expect("runs");
    assert_eq!(found.len(), 1);
    assert_err!(
        double
            .get_runs(RunFilter::new().label("bad key", "x"))
            .await,
        Error::Validation { .. }
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_runs"), 1);
}

#[tokio::test]
async fn bad_keys_are_refused() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let long = "k".repeat(crate::MAX_ID_BYTES + 1);
    for options in [
        TriggerOptions::new().idempotency_key(""),
        TriggerOptions::new().concurrency_key(long.clone()),
        TriggerOptions::new().idempotency_key("a\nb"),
        TriggerOptions::new().coalesce(Coalesce::Skip),
    ] {
        assert_err!(
            double.trigger(ValueIn { value: 1 }, options).await,
            Error::Validation {
                target: ValidationTarget::Key,
                ..
            }
        );
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_runs"), 0);
}

#[tokio::test]
async fn get_run_returns_fields_and_none_for_missing_or_other_jobs() {
    let env = Env::new().await;
    let double = env.client::<Double>();
    assert!(double.get_run("missing").await.expect("get").is_none());
    let t = double
        .trigger(ValueIn { value: 21 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    let run = double.get_run(&t.id).await.expect("get").expect("exists");
    assert_eq!(
        (run.status, run.output.clone()),
        (RunStatus::Completed, Some(ResultOut { result: 42 }))
    );
    assert!(run.started_at.is_some() && run.completed_at.is_some());
    assert_eq!(
        (
            run.completed_step_count,
            run.current_step_index,
            run.lease_owner.clone()
        ),
        (1, 1, None)
    );
    assert!(env
        .client::<Other>()
        .get_run(&t.id)
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn get_runs_filters_and_orders_newest_first() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let other = env.client::<Other>();
    for i in 1..=5 {
        double
            .trigger(ValueIn { value: i }, TriggerOptions::new())
            .await
            .expect("trigger");
    }
    other
        .trigger(ValueIn { value: 6 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let values = |runs: Vec<Run<ValueIn, ResultOut>>| {
        runs.into_iter().map(|r| r.input.value).collect::<Vec<_>>()
    };
    assert_eq!(
        values(double.get_runs(RunFilter::new()).await.expect("runs")),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        values(
            double
                .get_runs(RunFilter::new().limit(3))
                .await
                .expect("runs")
        ),
        [5, 4, 3]
    );
    assert_eq!(
        values(
            double
                .get_runs(RunFilter::new().offset(2))
                .await
                .expect("runs")
        ),
        [3, 2, 1]
    );
    assert_eq!(
        values(
            double
                .get_runs(RunFilter::new().limit(2).offset(1))
                .await
                .expect("runs")
        ),
        [4, 3]
    );
    assert!(double
        .get_runs(RunFilter::new().offset(10))
        .await
        .expect("runs")
        .is_empty());
    assert_eq!(
        env.rt.get_runs(RunFilter::new()).await.expect("all").len(),
        6
    );
    assert_eq!(
        env.rt
            .get_runs(RunFilter::new().job_name("other"))
            .await
            .expect("other")
            .len(),
        1
    );
    // The job client ignores other job names in the filter.
    assert_eq!(
        double
            .get_runs(RunFilter::new().job_name("other"))
            .await
            .expect("runs")
            .len(),
        5
    );
    assert_eq!(
        double
            .get_runs(RunFilter::new().status(RunStatus::Completed))
            .await
            .expect("runs")
            .len(),
        0
    );
}

#[tokio::test]
async fn get_runs_pages_through_ten_runs() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    for i in 1..=10 {
        double
            .trigger(ValueIn { value: i }, TriggerOptions::new())
            .await
            .expect("trigger");
    }
    let page = |l, o| {
        let double = double.clone();
        async move {
            double
                .get_runs(RunFilter::new().limit(l).offset(o))
                .await
                .expect("runs")
                .into_iter()
                .map(|r| r.input.value)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(3, 0).await, [10, 9, 8]);
    assert_eq!(page(3, 3).await, [7, 6, 5]);
    assert_eq!(page(3, 9).await, [1]);
}

#[tokio::test]
async fn trigger_and_wait_returns_the_output() {
    let env = Env::new().await;
    let done = env
        .client::<Double>()
        .trigger_and_wait(ValueIn { value: 21 }, TriggerOptions::new(), WAIT)
        .await
        .expect("done");
    assert_eq!(
        (done.output, done.disposition),
        (ResultOut { result: 42 }, Disposition::Created)
    );
    assert_eq!(env.run(&done.id).await.status, RunStatus::Completed);
}

#[tokio::test]
async fn trigger_and_wait_of_a_failing_run_is_an_execution_error() {
    let env = Env::new().await;
    let e = assert_err!(
        env.client::<Failing>()
            .trigger_and_wait(
                ValueIn { value: 1 },
                TriggerOptions::new().idempotency_key("k"),
                WAIT
            )
            .await,
        Error::Execution { .. }
    );
    let Error::Execution {
        source,
        operation,
        instance,
    } = e
    else {
        unreachable!()
    };
    assert_eq!(operation, Operation::WaitForRun);
    assert_eq!(instance.kind(), JobKind::Step);
    assert_eq!(source.to_string(), "Intentional failure");
    assert!(source.downcast_ref::<RunFailed>().is_some());
    let runs = env
        .client::<Failing>()
        .get_runs(RunFilter::new())
        .await
        .expect("runs");
    assert_eq!(runs[0].idempotency_key.as_deref(), Some("k"));
}

#[tokio::test]
async fn trigger_and_wait_times_out_without_a_worker() {
    let env = Env::builder().stopped().build().await;
    let e = assert_err!(
        env.client::<Double>()
            .trigger_and_wait(
                ValueIn { value: 1 },
                TriggerOptions::new(),
                Duration::from_millis(100)
            )
            .await,
        Error::Timeout { .. }
    );
    assert!(
        matches!(e, Error::Timeout { operation: Operation::WaitForRun, after } if after == Duration::from_millis(100))
    );
    // The run goes on.
    assert_eq!(
        env.rt.get_runs(RunFilter::new()).await.expect("runs")[0].status,
        RunStatus::Pending
    );
}

#[tokio::test]
async fn trigger_and_wait_of_an_idempotent_completed_run_returns_at_once() {
    let env = Env::new().await;
    let double = env.client::<Double>();
    let first = double
        .trigger_and_wait(
            ValueIn { value: 2 },
            TriggerOptions::new().idempotency_key("i"),
            WAIT,
        )
        .await
        .expect("done");
    env.rt.shutdown(WAIT).await;
    let again = double
        .trigger_and_wait(
            ValueIn { value: 9 },
            TriggerOptions::new().idempotency_key("i"),
            WAIT,
        )
        .await
        .expect("done");
    assert_eq!(
        (again.id, again.output, again.disposition),
        (first.id, ResultOut { result: 4 }, Disposition::Idempotent)
    );
}

#[tokio::test]
async fn cancel_while_awaited_is_invalid_state_cancelled() {
    let env = Env::new().await;
    env.app.block("s1");
    let script = env.client::<Script>();
    let waiting = tokio::spawn({
        let script = script.clone();
        async move {
            script
                .trigger_and_wait(super::script(&["s1"]), TriggerOptions::new(), WAIT)
                .await
        }
    });
    env.app.entered().await;
    let id = env.rt.get_runs(RunFilter::new()).await.expect("runs")[0]
        .id
        .clone();
    script.cancel(&id).await.expect("cancel");
    let e = assert_err!(waiting.await.expect("joined"), Error::InvalidState { .. });
    assert!(
        matches!(e, Error::InvalidState { ref state, operation: Operation::WaitForRun, .. } if state == "cancelled")
    );
    // A pending run cancelled while awaited, too.
    let stopped = Env::builder().stopped().build().await;
    let s = stopped.client::<Script>();
    let t = s
        .trigger(super::script(&["x"]), TriggerOptions::new())
        .await
        .expect("trigger");
    let waiting = tokio::spawn({
        let s = s.clone();
        let id = t.id.clone();
        async move { s.wait_for_run(&id, Some(WAIT)).await }
    });
    tokio::task::yield_now().await;
    s.cancel(&t.id).await.expect("cancel");
    assert_err!(waiting.await.expect("joined"), Error::InvalidState { .. });
}

#[tokio::test]
async fn wait_for_run_settles_for_every_outcome() {
    let env = Env::new().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 21 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let run = double
        .wait_for_run(&t.id, Some(WAIT))
        .await
        .expect("completed");
    assert_eq!(
        (run.status, run.output),
        (RunStatus::Completed, Some(ResultOut { result: 42 }))
    );
    // Already terminal: at once.
    assert!(double
        .wait_for_run(&t.id, Some(Duration::from_secs(1)))
        .await
        .is_ok());
    let e = assert_err!(
        double.wait_for_run("missing", Some(WAIT)).await,
        Error::InstanceNotFound { .. }
    );
    assert!(matches!(
        e,
        Error::InstanceNotFound {
            operation: Operation::WaitForRun,
            ..
        }
    ));
    let failing = env.client::<Failing>();
    let f = failing
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    assert_err!(
        failing.wait_for_run(&f.id, Some(WAIT)).await,
        Error::Execution { .. }
    );
    assert_err!(
        failing.wait_for_run(&f.id, None).await,
        Error::Execution { .. }
    );
    env.app.block("slow");
    let script = env.client::<Script>();
    let s = script
        .trigger(super::script(&["slow"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    assert_err!(
        script
            .wait_for_run(&s.id, Some(Duration::from_millis(80)))
            .await,
        Error::Timeout { .. }
    );
    env.app.release(1);
    assert!(script.wait_for_run(&s.id, Some(WAIT)).await.is_ok());
}

#[tokio::test]
async fn a_run_deleted_while_awaited_is_not_found() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    double.cancel(&t.id).await.expect("cancel");
    double.delete_run(&t.id).await.expect("delete");
    assert_err!(
        double.wait_for_run(&t.id, Some(WAIT)).await,
        Error::InstanceNotFound { .. }
    );
}

#[tokio::test]
async fn retrigger_makes_a_new_run_of_a_terminal_one() {
    let env = Env::new().await;
    let failing = env.client::<Failing>();
    let f = failing
        .trigger(
            ValueIn { value: 7 },
            TriggerOptions::new().idempotency_key("i").label("env", "x"),
        )
        .await
        .expect("trigger");
    env.wait(&f.id).await.expect_err("fails");
    env.rt.shutdown(WAIT).await;
    let again = failing.retrigger(&f.id).await.expect("retrigger");
    assert_ne!(again.id, f.id);
    assert_eq!(
        (
            again.status,
            again.input.value,
            again.idempotency_key.clone()
        ),
        (RunStatus::Pending, 7, None)
    );
    assert_eq!(again.labels.get("env").map(String::as_str), Some("x"));
    // Pending and leased runs cannot be retriggered; missing ones are not found.
    let e = assert_err!(
        failing.retrigger(&again.id).await,
        Error::InvalidState { .. }
    );
    assert!(
        matches!(e, Error::InvalidState { ref state, operation: Operation::Retrigger, .. } if state == "pending")
    );
    assert_err!(
        failing.retrigger("missing").await,
        Error::InstanceNotFound {
            operation: Operation::Retrigger,
            ..
        }
    );
}

#[tokio::test]
async fn retrigger_of_a_leased_run_is_refused() {
    let env = Env::new().await;
    env.app.block("s");
    let script = env.client::<Script>();
    let t = script
        .trigger(super::script(&["s"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    let e = assert_err!(script.retrigger(&t.id).await, Error::InvalidState { .. });
    assert!(matches!(e, Error::InvalidState { ref state, .. } if state == "leased"));
    env.app.release(1);
    env.wait(&t.id).await.expect("completes");
    let again = script.retrigger(&t.id).await.expect("retrigger");
    assert_eq!(again.input, super::script(&["s"]));
}

#[tokio::test]
async fn retrigger_with_input_that_no_longer_decodes_is_refused() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    double.cancel(&t.id).await.expect("cancel");
    env.exec(&format!(
        "UPDATE durably_runs SET input = '{{\"value\":\"x\"}}' WHERE id = '{}'",
        t.id
    ));
    let e = assert_err!(
        double.retrigger(&t.id).await,
        Error::Validation {
            target: ValidationTarget::Input,
            ..
        }
    );
    assert!(e.to_string().contains("cannot retrigger"), "{e}");
}

#[tokio::test]
async fn cancel_of_terminal_or_missing_runs_is_refused() {
    let env = Env::new().await;
    let double = env.client::<Double>();
    let failing = env.client::<Failing>();
    let done = double
        .trigger_and_wait(ValueIn { value: 1 }, TriggerOptions::new(), WAIT)
        .await
        .expect("done");
    let e = assert_err!(double.cancel(&done.id).await, Error::InvalidState { .. });
    assert!(
        matches!(e, Error::InvalidState { ref state, operation: Operation::Cancel, .. } if state == "completed")
    );
    let f = failing
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&f.id).await.expect_err("fails");
    let e = assert_err!(failing.cancel(&f.id).await, Error::InvalidState { .. });
    assert!(matches!(e, Error::InvalidState { ref state, .. } if state == "failed"));
    let e = assert_err!(
        double.cancel("missing").await,
        Error::InstanceNotFound { .. }
    );
    assert!(e.to_string().contains("not found"), "{e}");
    assert_err!(double.cancel(&f.id).await, Error::InstanceNotFound { .. });
}

#[tokio::test]
async fn cancel_of_a_pending_run() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    double.cancel(&t.id).await.expect("cancel");
    let run = env.run(&t.id).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.completed_at.is_some());
    let e = assert_err!(double.cancel(&t.id).await, Error::InvalidState { .. });
    assert!(matches!(e, Error::InvalidState { ref state, .. } if state == "cancelled"));
}

#[tokio::test]
async fn delete_run_follows_the_status() {
    let env = Env::builder()
        .options(StepOptions::default().preserve_steps(true))
        .build()
        .await;
    let double = env.client::<Double>();
    let done = double
        .trigger_and_wait(
            ValueIn { value: 1 },
            TriggerOptions::new().label("a", "b"),
            WAIT,
        )
        .await
        .expect("done");
    assert_eq!(env.steps(&done.id).await.len(), 1);
    double.delete_run(&done.id).await.expect("delete");
    assert!(double.get_run(&done.id).await.expect("get").is_none());
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_steps"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_run_labels"), 0);
    let f = env
        .client::<Failing>()
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&f.id).await.expect_err("fails");
    env.client::<Failing>()
        .delete_run(&f.id)
        .await
        .expect("delete failed");
    env.rt.shutdown(WAIT).await;
    let p = double
        .trigger(ValueIn { value: 2 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let e = assert_err!(double.delete_run(&p.id).await, Error::InvalidState { .. });
    assert!(
        matches!(e, Error::InvalidState { ref state, operation: Operation::DeleteRun, .. } if state == "pending")
    );
    double.cancel(&p.id).await.expect("cancel");
    double.delete_run(&p.id).await.expect("delete cancelled");
    assert_err!(
        double.delete_run(&p.id).await,
        Error::InstanceNotFound {
            operation: Operation::DeleteRun,
            ..
        }
    );
}

#[tokio::test]
async fn purge_runs_deletes_old_terminal_runs_only() {
    let env = Env::builder()
        .options(StepOptions::default().preserve_steps(true))
        .test_clock()
        .build()
        .await;
    let double = env.client::<Double>();
    assert_eq!(
        double
            .purge_runs(env.clock().now() + Duration::from_secs(60), None)
            .await
            .expect("purge"),
        0
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let t = double
            .trigger(ValueIn { value: i }, TriggerOptions::new())
            .await
            .expect("trigger");
        env.wait(&t.id).await.expect("completes");
        ids.push(t.id.clone());
    }
    env.rt.shutdown(WAIT).await;
    let pending = double
        .trigger(ValueIn { value: 9 }, TriggerOptions::new())
        .await
        .expect("trigger");
    let now = env.clock().now();
    assert_eq!(
        double
            .purge_runs(now - Duration::from_secs(1), None)
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        double
            .purge_runs(now + Duration::from_secs(60), Some(2))
            .await
            .expect("purge"),
        2
    );
    assert_eq!(
        double
            .purge_runs(now + Duration::from_secs(60), None)
            .await
            .expect("purge"),
        1
    );
    let left = double.get_runs(RunFilter::new()).await.expect("runs");
    assert_eq!(
        left.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [pending.id.as_str()]
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_steps"), 0);
}

#[tokio::test]
async fn retain_runs_purges_in_maintenance() {
    let env = Env::builder()
        .options(StepOptions::default().retain_runs(Duration::from_secs(60)))
        .test_clock()
        .build()
        .await;
    let double = env.client::<Double>();
    let t = double
        .trigger(ValueIn { value: 1 }, TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    env.clock().advance(Duration::from_secs(30)).await;
    assert!(
        double.get_run(&t.id).await.expect("get").is_some(),
        "a fresh run is kept"
    );
    env.clock().advance(Duration::from_secs(100)).await;
    assert!(
        double.get_run(&t.id).await.expect("get").is_none(),
        "a run older than retain_runs is purged"
    );
}

#[tokio::test]
async fn options_are_validated() {
    for n in [0, 1001] {
        let e = assert_err!(
            StepOptions::default().max_concurrent_runs(n).validate(),
            Error::Validation { .. }
        );
        assert!(e.to_string().contains("between 1 and 1000"), "{e}");
    }
    assert!(StepOptions::default()
        .lease_renew_interval(Duration::from_secs(30))
        .validate()
        .is_err());
    assert!(StepOptions::default()
        .lease_duration(Duration::ZERO)
        .validate()
        .is_err());
    assert!(StepOptions::default().validate().is_ok());
    let fixed = StepOptions::default()
        .max_concurrent_runs(0)
        .lease_renew_interval(Duration::from_secs(60))
        .normalised();
    assert!(fixed.validate().is_ok());
}
