//! Debounce jobs: the upstream catalogue (7.2), the observed behaviours of 7.6, event ids and
//! the quiet period.

use std::time::Duration;

use durable_jobs::{DebounceState, Error, FlushOutcome, Operation};
use durable_jobs_tests::*;

fn hook(n: i64) -> Hook {
    Hook { n }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn the_first_add_schedules_a_flush_in_the_future() {
    let h = Harness::start().await;
    let added = h
        .client
        .debounce::<QuietBatcher>()
        .add("c", hook(1))
        .await
        .unwrap();
    assert!(added.created);
    assert_eq!(added.event_count, 1);
    assert_eq!(added.will_flush_at, Some(h.clock.now() + secs(5)));
    assert!(added.flush.is_none());
}

#[tokio::test]
async fn events_are_folded_in_order() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    let second = d.add("c", hook(2)).await.unwrap();
    assert!(!second.created);
    assert_eq!(
        d.get_state("c").await.unwrap(),
        Some(Batch { events: vec![1, 2] })
    );
}

#[tokio::test]
async fn status_counts_events_and_names_the_flush_time() {
    let h = Harness::start().await;
    let d = h.client.debounce::<RetryBatcher>();
    let t0 = h.clock.now();
    for n in 0..3 {
        d.add("c", hook(n)).await.unwrap();
    }
    let status = d.status("c").await.unwrap();
    assert_eq!(status.status, DebounceState::Debouncing);
    assert_eq!(status.event_count, 3);
    assert_eq!(status.started_at, Some(t0));
    assert_eq!(status.will_flush_at, Some(t0 + secs(5)));
}

#[tokio::test]
async fn reaching_max_events_flushes_inside_the_add() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    d.add("c", hook(2)).await.unwrap();
    let third = d.add("c", hook(3)).await.unwrap();
    assert_eq!(third.flush, Some(FlushOutcome::Flushed));
    assert_eq!(third.will_flush_at, None);
    assert_eq!(third.event_count, 3);
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 3);
    assert_eq!(calls[0].detail, "max_events");
    assert_eq!(calls[0].state["events"], serde_json::json!([1, 2, 3]));
    // The batch is gone; the next add starts a new one.
    assert!(d.status("c").await.unwrap().is_not_found());
    assert!(d.add("c", hook(4)).await.unwrap().created);
}

#[tokio::test]
async fn the_alarm_flushes_after_flush_after() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    let t0 = h.clock.now();
    d.add("c", hook(1)).await.unwrap();
    h.clock.advance(secs(4)).await;
    assert!(h.probe.calls_of("execute").is_empty());
    h.clock.advance(secs(1)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at, t0 + secs(5));
    assert_eq!(calls[0].detail, "flush_after");
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn later_events_do_not_extend_the_window() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    let first = d.add("c", hook(1)).await.unwrap();
    h.clock.advance(secs(3)).await;
    let second = d.add("c", hook(2)).await.unwrap();
    assert_eq!(second.will_flush_at, first.will_flush_at);
    // The flush comes at t0 + 5 s with both events, not 5 s after the second.
    h.clock.advance(secs(2)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(Some(calls[0].at), first.will_flush_at);
    assert_eq!(calls[0].count, 2);
}

#[tokio::test]
async fn manual_flush_runs_execute_and_deletes_the_batch() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    let flushed = d.flush("c").await.unwrap();
    assert!(flushed.flushed);
    assert_eq!(flushed.event_count, 1);
    let calls = h.probe.calls_of("execute");
    assert_eq!((calls[0].count, calls[0].detail.as_str()), (1, "manual"));
    assert!(d.status("c").await.unwrap().is_not_found());
    // The alarm of the flushed batch does not fire again.
    h.clock.advance(secs(10)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 1);
}

#[tokio::test]
async fn flush_and_clear_of_a_missing_batch_are_not_found() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    assert!(matches!(
        d.flush("none").await,
        Err(Error::InstanceNotFound {
            operation: Operation::Flush,
            ..
        })
    ));
    assert!(matches!(
        d.clear("none").await,
        Err(Error::InstanceNotFound {
            operation: Operation::Clear,
            ..
        })
    ));
    assert!(h.probe.calls().is_empty());
}

#[tokio::test]
async fn clear_drops_the_batch_without_execute() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    d.add("c", hook(2)).await.unwrap();
    let cleared = d.clear("c").await.unwrap();
    assert_eq!(cleared.discarded_events, 2);
    assert!(d.status("c").await.unwrap().is_not_found());
    h.clock.advance(secs(10)).await;
    assert!(h.probe.calls().is_empty());
}

#[tokio::test]
async fn a_failed_manual_flush_without_retry_keeps_the_batch_and_rearms() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    h.clock.advance(secs(2)).await;
    h.probe.fail_next(1, "crm down");
    let failed_at = h.clock.now();
    let err = d.flush("c").await.unwrap_err();
    assert!(matches!(
        err,
        Error::Execution {
            operation: Operation::Flush,
            ..
        }
    ));
    let status = d.status("c").await.unwrap();
    assert_eq!(status.event_count, 1);
    assert_eq!(status.will_flush_at, Some(failed_at + secs(5)));
    h.clock.advance(secs(5)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 2);
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn a_failed_max_events_flush_keeps_the_event_and_reports_it() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add("c", hook(1)).await.unwrap();
    d.add("c", hook(2)).await.unwrap();
    h.probe.fail_next(1, "crm down");
    let third = d.add("c", hook(3)).await.unwrap();
    match third.flush {
        Some(FlushOutcome::Failed {
            message,
            next_flush_at,
        }) => {
            assert_eq!(message, "crm down");
            assert_eq!(next_flush_at, h.clock.now() + secs(5));
        }
        other => panic!("expected a failed flush, got {other:?}"),
    }
    assert_eq!(
        d.get_state("c").await.unwrap(),
        Some(Batch {
            events: vec![1, 2, 3]
        })
    );
}

#[tokio::test]
async fn a_failed_flush_with_retry_is_retried_and_sees_events_added_meanwhile() {
    let h = Harness::start().await;
    let d = h.client.debounce::<RetryBatcher>();
    let t0 = h.clock.now();
    d.add("c", hook(1)).await.unwrap();
    h.probe.fail_next(1, "flaky");
    h.clock.advance(secs(5)).await;
    let status = d.status("c").await.unwrap();
    assert_eq!(status.status, DebounceState::Retrying);
    assert_eq!(status.will_flush_at, Some(t0 + secs(6)));
    // An add while the retry is pending is counted and keeps the retry time.
    let added = d.add("c", hook(2)).await.unwrap();
    assert_eq!(added.event_count, 2);
    assert_eq!(added.will_flush_at, Some(t0 + secs(6)));
    h.clock.advance(secs(1)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].attempt, 2);
    assert_eq!(calls[1].count, 2);
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn exhausted_flush_retries_drop_the_batch_after_the_hook() {
    let h = Harness::start().await;
    let d = h.client.debounce::<RetryBatcher>();
    d.add("c", hook(1)).await.unwrap();
    d.add("c", hook(2)).await.unwrap();
    h.probe.fail_always(Some("gone"));
    h.clock.advance(secs(30)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 3);
    let exhausted = h.probe.calls_of("exhausted");
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0].state["events"], serde_json::json!([1, 2]));
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn manual_flush_with_a_retry_policy_schedules_the_retry() {
    let h = Harness::start().await;
    let d = h.client.debounce::<RetryBatcher>();
    d.add("c", hook(1)).await.unwrap();
    h.probe.fail_next(1, "flaky");
    let f = d.flush("c").await.unwrap();
    assert!(!f.flushed);
    assert!(f.retry_scheduled);
    assert_eq!(f.will_flush_at, Some(h.clock.now() + secs(1)));
    assert_eq!(d.status("c").await.unwrap().status, DebounceState::Retrying);
}

#[tokio::test]
async fn the_quiet_period_flushes_once_events_stop() {
    let h = Harness::start().await;
    let d = h.client.debounce::<QuietBatcher>();
    let t0 = h.clock.now();
    d.add("c", hook(1)).await.unwrap();
    h.clock.advance(secs(3)).await;
    let second = d.add("c", hook(2)).await.unwrap();
    assert_eq!(second.will_flush_at, Some(t0 + secs(8)));
    h.clock.advance(secs(10)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at, t0 + secs(8));
    assert_eq!(calls[0].detail, "quiet");
}

#[tokio::test]
async fn a_steady_stream_cannot_postpone_the_flush_past_flush_after() {
    let h = Harness::start().await;
    let d = h.client.debounce::<QuietBatcher>();
    let t0 = h.clock.now();
    // An event every 4 s never leaves 5 s of quiet; flush_after (60 s) still bounds the wait.
    for i in 0..20 {
        d.add("c", hook(i)).await.unwrap();
        h.clock.advance(secs(4)).await;
    }
    let calls = h.probe.calls_of("execute");
    assert!(!calls.is_empty());
    assert_eq!(calls[0].at, t0 + secs(60));
    assert_eq!(calls[0].detail, "flush_after");
    assert_eq!(calls[0].count, 15);
}

#[tokio::test]
async fn a_repeated_event_id_is_refused_and_changes_nothing() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add_with_id("c", hook(1), "evt-1").await.unwrap();
    let dup = d.add_with_id("c", hook(1), "evt-1").await.unwrap_err();
    match dup {
        Error::DuplicateEvent { instance, event_id } => {
            assert_eq!(instance.id(), "c");
            assert_eq!(event_id, "evt-1");
        }
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(d.status("c").await.unwrap().event_count, 1);
    // Ids are per instance, and distinct ids are fine.
    d.add_with_id("c", hook(2), "evt-2").await.unwrap();
    d.add_with_id("other", hook(1), "evt-1").await.unwrap();
    assert_eq!(
        d.get_state("c").await.unwrap(),
        Some(Batch { events: vec![1, 2] })
    );
}

#[tokio::test]
async fn event_ids_outlive_the_flushed_batch() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add_with_id("c", hook(1), "a").await.unwrap();
    d.flush("c").await.unwrap();
    // A producer retrying after the flush does not get its event processed twice.
    assert!(matches!(
        d.add_with_id("c", hook(1), "a").await,
        Err(Error::DuplicateEvent { .. })
    ));
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn event_ids_do_not_collide_by_prefix_and_may_hold_any_printable_text() {
    let h = Harness::start().await;
    let d = h.client.debounce::<QuietBatcher>();
    for id in [
        "123",
        "123456",
        "12",
        "a:b/c?d=e&f",
        "ünïcödé ✓",
        "with space",
    ] {
        d.add_with_id("c", hook(1), id).await.unwrap();
    }
    assert_eq!(d.status("c").await.unwrap().event_count, 6);
}

#[tokio::test]
async fn an_add_after_a_failed_flush_keeps_the_rearmed_window() {
    let h = Harness::start().await;
    let d = h.client.debounce::<QuietBatcher>();
    let t0 = h.clock.now();
    d.add("c", hook(1)).await.unwrap();
    h.probe.fail_next(1, "crm down");
    h.clock.advance(secs(5)).await;
    // The quiet flush failed at t0+5 s; it is re-armed 60 s (flush_after) later.
    assert_eq!(
        d.status("c").await.unwrap().will_flush_at,
        Some(t0 + secs(65))
    );
    // A new event must not pull the flush back to the original deadline (which has passed).
    let added = d.add("c", hook(2)).await.unwrap();
    assert_eq!(added.will_flush_at, Some(h.clock.now() + secs(5)));
    assert_eq!(h.probe.calls_of("execute").len(), 1);
    h.clock.advance(secs(5)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 2);
    assert!(d.status("c").await.unwrap().is_not_found());
}

#[tokio::test]
async fn event_ids_are_forgotten_after_the_retention_period() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    d.add_with_id("c", hook(1), "once").await.unwrap();
    d.clear("c").await.unwrap();
    h.clock.advance(Duration::from_secs(6 * 24 * 3600)).await;
    assert!(matches!(
        d.add_with_id("c", hook(1), "once").await,
        Err(Error::DuplicateEvent { .. })
    ));
    // Past the default retention of 7 days the id is pruned and accepted again.
    h.clock.advance(Duration::from_secs(2 * 24 * 3600)).await;
    d.add_with_id("c", hook(1), "once").await.unwrap();
}

#[tokio::test]
async fn each_add_folds_onto_the_latest_committed_state() {
    let h = Harness::start().await;
    let d = h.client.debounce::<Batcher>();
    let events = |d: Option<Batch>| d.map(|b| b.events);
    d.add("c", hook(1)).await.unwrap();
    d.add("c", hook(2)).await.unwrap();
    assert_eq!(events(d.get_state("c").await.unwrap()), Some(vec![1, 2]));

    // A failed manual flush keeps the batch: the next add continues it (and, as the third
    // event, flushes it).
    h.probe.fail_next(1, "crm down");
    d.flush("c").await.unwrap_err();
    d.add("c", hook(3)).await.unwrap();
    assert_eq!(events(d.get_state("c").await.unwrap()), None);

    // Cleared, or flushed: the next add starts a new batch.
    d.add("c", hook(4)).await.unwrap();
    d.clear("c").await.unwrap();
    d.add("c", hook(5)).await.unwrap();
    assert_eq!(events(d.get_state("c").await.unwrap()), Some(vec![5]));
    d.flush("c").await.unwrap();
    d.add("c", hook(6)).await.unwrap();
    d.add("c", hook(7)).await.unwrap();
    assert_eq!(events(d.get_state("c").await.unwrap()), Some(vec![6, 7]));

    // The alarm's flush, too.
    h.clock.advance(secs(10)).await;
    d.add("c", hook(8)).await.unwrap();
    assert_eq!(events(d.get_state("c").await.unwrap()), Some(vec![8]));
    let flushed: Vec<serde_json::Value> = h
        .probe
        .calls_of("execute")
        .iter()
        .map(|c| c.state["events"].clone())
        .collect();
    assert_eq!(
        flushed,
        [
            serde_json::json!([1, 2]),
            serde_json::json!([1, 2, 3]),
            serde_json::json!([5]),
            serde_json::json!([6, 7])
        ]
    );
}
