//! Task jobs: the upstream catalogue (7.3) and the observed behaviours of 7.6, with the stale
//! schedule and snapshot-state bugs fixed.

use std::time::Duration;

use durable_jobs::{Error, Operation, TaskState, ValidationTarget};
use durable_jobs_tests::*;
use serde_json::json;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn an_invalid_event_is_refused_before_anything_is_created() {
    let h = Harness::start().await;
    let Ok(durable_jobs::client::DynamicJob::Task(t)) = h.client.by_name("orders") else {
        panic!("orders is a task")
    };
    let err = t
        .send("o", json!({"type": "Add", "amount": "lots"}), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Event,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(h
        .client
        .task::<Orders>()
        .status("o")
        .await
        .unwrap()
        .is_not_found());
    assert!(h.probe.calls().is_empty());
}

#[tokio::test]
async fn send_creates_once_and_counts_events() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    assert!(
        t.send("o", OrderEvent::Add { amount: 5 })
            .await
            .unwrap()
            .created
    );
    assert!(
        !t.send("o", OrderEvent::Add { amount: 7 })
            .await
            .unwrap()
            .created
    );
    let status = t.status("o").await.unwrap();
    assert_eq!(status.event_count, 2);
    assert_eq!(status.status, TaskState::Idle);
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 12,
            executed: 0
        })
    );
}

#[tokio::test]
async fn on_event_receives_the_decoded_event() {
    let h = Harness::start().await;
    h.client
        .task::<Orders>()
        .send("o", OrderEvent::Add { amount: 42 })
        .await
        .unwrap();
    let calls = h.probe.calls_of("on_event");
    assert_eq!(calls[0].state, json!({"type": "Add", "amount": 42}));
    assert_eq!(calls[0].detail, "first=true");
    assert_eq!(calls[0].count, 1);
}

#[tokio::test]
async fn trigger_runs_execute_now() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::Add { amount: 1 }).await.unwrap();
    t.trigger("o").await.unwrap();
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 1);
    assert_eq!(t.status("o").await.unwrap().execute_count, 1);
}

#[tokio::test]
async fn trigger_of_a_missing_task_is_not_found() {
    let h = Harness::start().await;
    let err = h.client.task::<Orders>().trigger("none").await.unwrap_err();
    assert!(matches!(
        err,
        Error::InstanceNotFound {
            operation: Operation::Trigger,
            ..
        }
    ));
}

#[tokio::test]
async fn schedule_in_on_event_sets_the_alarm() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    let sent = t
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    assert_eq!(sent.scheduled_at, Some(h.clock.now() + secs(5)));
    let status = t.status("o").await.unwrap();
    assert_eq!(status.status, TaskState::Active);
    assert_eq!(status.scheduled_at, Some(h.clock.now() + secs(5)));
    assert!(
        h.probe.calls_of("on_idle").is_empty(),
        "on_idle does not run while something is scheduled"
    );
}

#[tokio::test]
async fn schedule_then_cancel_leaves_no_alarm() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    let sent = t.send("o", OrderEvent::ScheduleThenCancel).await.unwrap();
    assert_eq!(sent.scheduled_at, None);
    assert_eq!(t.status("o").await.unwrap().status, TaskState::Idle);
}

#[tokio::test]
async fn the_alarm_runs_execute_then_the_task_is_idle_and_on_idle_runs() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    let t0 = h.clock.now();
    t.send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    h.clock.advance(secs(5)).await;
    let exec = h.probe.calls_of("execute");
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0].at, t0 + secs(5));
    // The schedule was consumed when it fired: idle, not "active" with a stale time.
    let status = t.status("o").await.unwrap();
    assert_eq!(status.status, TaskState::Idle);
    assert_eq!(status.scheduled_at, None);
    let idle = h.probe.calls_of("on_idle");
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].detail, "Execute");
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 1,
            executed: 1
        })
    );
}

#[tokio::test]
async fn on_idle_runs_after_on_event_when_nothing_is_scheduled() {
    let h = Harness::start().await;
    h.client
        .task::<Orders>()
        .send("o", OrderEvent::Add { amount: 1 })
        .await
        .unwrap();
    let idle = h.probe.calls_of("on_idle");
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].detail, "Event");
}

#[tokio::test]
async fn on_idle_can_schedule() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    let t = h.client.task::<Orders>();
    let sent = t.send("o", OrderEvent::Add { amount: 1000 }).await.unwrap();
    assert_eq!(sent.scheduled_at, Some(h.clock.now() + secs(10)));
    let scheduled: Vec<_> = events
        .drain()
        .into_iter()
        .filter(|e| e.type_name() == "task.scheduled")
        .collect();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].to_json()["trigger"], "idle");
}

#[tokio::test]
async fn terminate_deletes_the_task_and_its_alarm() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    let key = t.terminate("o").await.unwrap();
    assert_eq!(key.to_string(), "task:orders:o");
    assert!(t.status("o").await.unwrap().is_not_found());
    h.clock.advance(secs(10)).await;
    assert!(h.probe.calls_of("execute").is_empty());
    assert!(matches!(
        t.terminate("o").await,
        Err(Error::InstanceNotFound { .. })
    ));
}

#[tokio::test]
async fn on_error_rescues_and_keeps_partial_writes_and_its_schedule() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    let t = h.client.task::<Orders>();
    let sent = t
        .send("o", OrderEvent::SetThenFail { total: 5 })
        .await
        .unwrap();
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 105,
            executed: 0
        })
    );
    assert_eq!(sent.scheduled_at, Some(h.clock.now() + secs(30)));
    let errors = h.probe.calls_of("on_error");
    assert_eq!(errors[0].detail, "Event: rescue: failed after setting 5");
    let scheduled: Vec<_> = events
        .drain()
        .into_iter()
        .filter(|e| e.type_name() == "task.scheduled")
        .collect();
    assert_eq!(scheduled[0].to_json()["trigger"], "event");
}

#[tokio::test]
async fn an_unrescued_failure_changes_nothing_and_reaches_the_caller() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::Add { amount: 3 }).await.unwrap();
    h.probe.fail_next(1, "payment service down");
    let err = t
        .send(
            "o",
            OrderEvent::AddAndSchedule {
                amount: 10,
                secs: 5,
            },
        )
        .await
        .unwrap_err();
    match err {
        Error::Execution {
            operation, source, ..
        } => {
            assert_eq!(operation, Operation::Send);
            assert_eq!(
                source.downcast_ref::<ProbeError>().unwrap().0,
                "payment service down"
            );
        }
        other => panic!("expected Execution, got {other:?}"),
    }
    let status = t.status("o").await.unwrap();
    assert_eq!(
        status.status,
        TaskState::Idle,
        "the schedule of the failed invocation was not applied"
    );
    assert_eq!(status.event_count, 1);
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 3,
            executed: 0
        })
    );
}

#[tokio::test]
async fn a_failing_first_event_creates_nothing() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    h.probe.fail_next(1, "nope");
    let sent = t.send("o", OrderEvent::Add { amount: 3 }).await;
    assert!(
        matches!(
            sent,
            Err(durable_jobs::Error::Execution {
                operation: durable_jobs::Operation::Send,
                ..
            })
        ),
        "{sent:?}"
    );
    assert!(t.status("o").await.unwrap().is_not_found());
}

#[tokio::test]
async fn state_reads_see_earlier_writes_of_the_same_invocation() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::SetThenRead { total: 99 })
        .await
        .unwrap();
    assert_eq!(h.probe.calls_of("read")[0].state, json!(99));
    t.trigger("o").await.unwrap();
    // execute incremented `executed` and then read it back.
    let reads = h.probe.calls_of("read");
    assert_eq!(reads[1].count, 1);
}

#[tokio::test]
async fn terminate_from_on_event() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    let sent = t.send("o", OrderEvent::Terminate).await.unwrap();
    assert!(sent.terminated);
    assert_eq!(sent.scheduled_at, None);
    assert!(t.status("o").await.unwrap().is_not_found());
    h.clock.advance(secs(10)).await;
    assert!(h.probe.calls_of("execute").is_empty());
}

#[tokio::test]
async fn an_alarm_failure_leaves_the_task_idle_with_its_state() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send("o", OrderEvent::AddAndSchedule { amount: 4, secs: 5 })
        .await
        .unwrap();
    h.probe.fail_next(1, "boom");
    h.clock.advance(secs(5)).await;
    let status = t.status("o").await.unwrap();
    assert_eq!(status.status, TaskState::Idle);
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 4,
            executed: 0
        })
    );
}

#[tokio::test]
async fn a_repeated_event_id_is_refused() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    t.send_with_id("o", OrderEvent::Add { amount: 1 }, "e1")
        .await
        .unwrap();
    assert!(matches!(
        t.send_with_id("o", OrderEvent::Add { amount: 1 }, "e1")
            .await,
        Err(Error::DuplicateEvent { .. })
    ));
    assert_eq!(t.get_state("o").await.unwrap().unwrap().total, 1);
    assert_eq!(h.probe.calls_of("on_event").len(), 1);
}

#[tokio::test]
async fn a_later_schedule_replaces_the_earlier_one() {
    let h = Harness::start().await;
    let t = h.client.task::<Orders>();
    let t0 = h.clock.now();
    t.send(
        "o",
        OrderEvent::AddAndSchedule {
            amount: 1,
            secs: 60,
        },
    )
    .await
    .unwrap();
    h.clock.advance(secs(10)).await;
    // Relative to the current clock, and replacing the 60 s schedule (one alarm per instance).
    let sent = t
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    assert_eq!(sent.scheduled_at, Some(t0 + secs(15)));
    h.clock.advance(secs(60)).await;
    let exec = h.probe.calls_of("execute");
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0].at, t0 + secs(15));
}
