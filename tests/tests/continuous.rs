//! Continuous jobs: the upstream catalogue (7.1) and the observed behaviours of 7.6, adapted
//! to this engine's decisions.

use std::time::Duration;

use durable_jobs::testing::TestClock;
use durable_jobs::{ContinuousState, Error, JobKind, Operation, Timestamp};
use durable_jobs_tests::*;

fn count(n: i64) -> Count {
    Count {
        count: n,
        max_runs: None,
    }
}

#[tokio::test]
async fn start_creates_and_runs_immediately_with_the_input_state() {
    let h = Harness::start().await;
    let started = h
        .client
        .continuous::<Refresher>()
        .start("user-1", count(5))
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(started.status, ContinuousState::Running);
    assert_eq!(started.instance.to_string(), "continuous:refresher:user-1");
    assert_eq!(started.next_run_at, Some(h.clock.now() + HALF_HOUR));
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 1);
    assert_eq!(calls[0].attempt, 1);
    assert_eq!(calls[0].state["count"], 5);
    assert_eq!(calls[0].detail, "continuous:refresher:user-1");
}

#[tokio::test]
async fn a_second_start_leaves_the_instance_unchanged() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(1)).await.unwrap();
    let again = c.start("u", count(100)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.status, ContinuousState::Running);
    assert_eq!(h.probe.calls_of("execute").len(), 1);
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(2)));
}

#[tokio::test]
async fn start_immediately_false_only_schedules() {
    let h = Harness::start().await;
    let started = h
        .client
        .continuous::<LazyRefresher>()
        .start("u", count(0))
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(started.next_run_at, Some(h.clock.now() + HALF_HOUR));
    assert!(h.probe.calls().is_empty());
    let status = h
        .client
        .continuous::<LazyRefresher>()
        .status("u")
        .await
        .unwrap();
    assert_eq!(status.run_count, 0);
}

#[tokio::test]
async fn terminate_deletes_the_instance_and_frees_the_id() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    let t = c.terminate("u", Some("user requested")).await.unwrap();
    assert_eq!(t.reason.as_deref(), Some("user requested"));
    assert!(c.status("u").await.unwrap().is_not_found());
    assert_eq!(c.get_state("u").await.unwrap(), None);
    // The same id starts afresh.
    assert!(c.start("u", count(7)).await.unwrap().created);
}

#[tokio::test]
async fn commands_on_a_missing_instance_return_instance_not_found() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    for (result, op) in [
        (
            c.terminate("nobody", None).await.map(|_| ()),
            Operation::Terminate,
        ),
        (c.trigger("nobody").await.map(|_| ()), Operation::Trigger),
    ] {
        match result {
            Err(Error::InstanceNotFound {
                instance,
                operation,
            }) => {
                assert_eq!(instance.kind(), JobKind::Continuous);
                assert_eq!(instance.id(), "nobody");
                assert_eq!(operation, op);
            }
            other => panic!("expected InstanceNotFound, got {other:?}"),
        }
    }
    // Queries answer instead of failing.
    assert!(c.status("nobody").await.unwrap().is_not_found());
    assert_eq!(c.get_state("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn terminate_twice_fails_the_second_time() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    c.terminate("u", None).await.unwrap();
    assert!(matches!(
        c.terminate("u", None).await,
        Err(Error::InstanceNotFound { .. })
    ));
}

#[tokio::test]
async fn trigger_runs_again_with_the_next_run_count() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    let t = c.trigger("u").await.unwrap();
    assert!(!t.terminated && !t.retry_scheduled);
    let calls = h.probe.calls_of("execute");
    assert_eq!(
        calls.iter().map(|c| c.count).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(c.status("u").await.unwrap().run_count, 2);
}

#[tokio::test]
async fn trigger_after_terminate_is_not_found() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    c.terminate("u", None).await.unwrap();
    assert!(matches!(
        c.trigger("u").await,
        Err(Error::InstanceNotFound { .. })
    ));
}

#[tokio::test]
async fn status_and_state_after_start() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(5)).await.unwrap();
    let status = c.status("u").await.unwrap();
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(status.run_count, 1);
    assert_eq!(status.attempt, 1);
    assert_eq!(status.created_at, Some(TestClock::DEFAULT_START));
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(6)));
}

#[tokio::test]
async fn the_alarm_runs_on_the_cadence_and_reschedules() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    let t0 = h.clock.now();
    c.start("u", count(0)).await.unwrap();
    h.clock.advance(HALF_HOUR).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].count, 2);
    assert_eq!(calls[1].at, t0 + HALF_HOUR);
    assert_eq!(
        c.status("u").await.unwrap().next_run_at,
        Some(t0 + HALF_HOUR * 2)
    );
    // Two more periods: two more runs, each exactly on time.
    h.clock.advance(HALF_HOUR * 2).await;
    let at: Vec<_> = h.probe.calls_of("execute").iter().map(|c| c.at).collect();
    assert_eq!(
        at,
        vec![t0, t0 + HALF_HOUR, t0 + HALF_HOUR * 2, t0 + HALF_HOUR * 3]
    );
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(4)));
}

#[tokio::test]
async fn no_alarm_runs_after_terminate() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    c.terminate("u", None).await.unwrap();
    h.clock.advance(HALF_HOUR * 4).await;
    assert_eq!(h.probe.calls_of("execute").len(), 1);
}

#[tokio::test]
async fn a_failing_first_run_without_retry_fails_start_but_keeps_the_cadence() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    h.probe.fail_next(1, "token endpoint down");
    let err = c.start("u", count(0)).await.unwrap_err();
    match &err {
        Error::Execution {
            instance,
            operation,
            source,
        } => {
            assert_eq!(instance.id(), "u");
            assert_eq!(*operation, Operation::Start);
            let probe = source
                .downcast_ref::<ProbeError>()
                .expect("the user's error is kept as the source");
            assert_eq!(probe.0, "token endpoint down");
        }
        other => panic!("expected Execution, got {other:?}"),
    }
    // Not a zombie: the instance exists, state unchanged, next run scheduled.
    let status = c.status("u").await.unwrap();
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(status.next_run_at, Some(h.clock.now() + HALF_HOUR));
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(0)));
    h.clock.advance(HALF_HOUR).await;
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(1)));
}

#[tokio::test]
async fn an_alarm_failure_without_retry_keeps_the_cadence() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    let t0 = h.clock.now();
    c.start("u", count(0)).await.unwrap();
    h.probe.fail_next(1, "boom");
    h.clock.advance(HALF_HOUR).await;
    let status = c.status("u").await.unwrap();
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(status.next_run_at, Some(t0 + HALF_HOUR * 2));
    h.clock.advance(HALF_HOUR).await;
    assert_eq!(h.probe.calls_of("execute").len(), 3);
    // The failed run's state change was discarded; the others were kept.
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(2)));
}

#[tokio::test]
async fn terminate_from_the_first_run() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    let s = c
        .start(
            "u",
            Count {
                count: 0,
                max_runs: Some(1),
            },
        )
        .await
        .unwrap();
    assert!(s.created);
    assert_eq!(s.status, ContinuousState::Terminated);
    assert!(c.status("u").await.unwrap().is_not_found());
    assert!(matches!(
        c.trigger("u").await,
        Err(Error::InstanceNotFound { .. })
    ));
    h.clock.advance(HALF_HOUR * 2).await;
    assert_eq!(h.probe.calls_of("execute").len(), 1);
    // The id is free again.
    assert!(c.start("u", count(0)).await.unwrap().created);
}

#[tokio::test]
async fn terminate_from_an_alarm_run() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start(
        "u",
        Count {
            count: 0,
            max_runs: Some(2),
        },
    )
    .await
    .unwrap();
    h.clock.advance(HALF_HOUR).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].count, 2);
    assert!(c.status("u").await.unwrap().is_not_found());
    h.clock.advance(HALF_HOUR * 3).await;
    assert_eq!(h.probe.calls_of("execute").len(), 2);
}

#[tokio::test]
async fn trigger_that_terminates() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start(
        "u",
        Count {
            count: 0,
            max_runs: Some(2),
        },
    )
    .await
    .unwrap();
    let t = c.trigger("u").await.unwrap();
    assert!(t.terminated);
    assert!(c.status("u").await.unwrap().is_not_found());
}

#[tokio::test]
async fn retries_count_attempts_not_runs_then_exhaust_and_purge() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    let c = h.client.continuous::<RetryingRefresher>();
    h.probe.fail_always(Some("still down"));
    let s = c.start("u", count(0)).await.unwrap();
    assert_eq!(s.status, ContinuousState::Retrying);
    let status = c.status("u").await.unwrap();
    assert_eq!(
        (status.status, status.attempt),
        (ContinuousState::Retrying, 2)
    );
    assert_eq!(
        status.next_run_at,
        Some(h.clock.now() + Duration::from_secs(1))
    );
    h.clock.advance(Duration::from_secs(10)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.count, c.attempt))
            .collect::<Vec<_>>(),
        vec![(1, 1), (1, 2), (1, 3)]
    );
    assert!(c.status("u").await.unwrap().is_not_found());
    let exhausted = h.probe.calls_of("exhausted");
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0].attempt, 3);
    assert_eq!(exhausted[0].detail, "max_attempts: still down");
    assert_eq!(exhausted[0].state["count"], 0);

    let kinds: Vec<String> = events
        .drain()
        .iter()
        .map(|e| {
            let j = e.to_json();
            match e.type_name() {
                "job.failed" => format!(
                    "failed({},{},{})",
                    j["attempt"],
                    j["willRetry"],
                    j["error"]["message"].as_str().unwrap()
                ),
                "job.retryExhausted" => format!(
                    "exhausted({},{})",
                    j["attempts"],
                    j["reason"].as_str().unwrap()
                ),
                other => other.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "job.started",
            "failed(1,true,still down)",
            "failed(2,true,still down)",
            "failed(3,false,still down)",
            "exhausted(3,max_attempts)",
        ]
    );
}

#[tokio::test]
async fn success_on_a_retry_restarts_the_cadence_from_the_success() {
    let h = Harness::start().await;
    let c = h.client.continuous::<RetryingRefresher>();
    let t0 = h.clock.now();
    h.probe.fail_next(2, "flaky");
    c.start("u", count(0)).await.unwrap();
    h.clock.advance(Duration::from_secs(5)).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let success_at = t0 + Duration::from_secs(2);
    assert_eq!(calls[2].at, success_at);
    let status = c.status("u").await.unwrap();
    assert_eq!(status.run_count, 1);
    assert_eq!(status.attempt, 1);
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(
        status.next_run_at,
        Some(success_at + Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn trigger_while_a_retry_is_pending_resets_the_attempt() {
    let h = Harness::start().await;
    let c = h.client.continuous::<RetryingRefresher>();
    h.probe.fail_next(1, "flaky");
    c.start("u", count(0)).await.unwrap();
    assert_eq!(c.status("u").await.unwrap().attempt, 2);
    c.trigger("u").await.unwrap();
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.last().unwrap().attempt, 1);
    assert_eq!(calls.last().unwrap().count, 2);
    assert_eq!(
        c.status("u").await.unwrap().status,
        ContinuousState::Running
    );
}

#[tokio::test]
async fn max_duration_exhaustion_reports_its_own_reason() {
    let h = Harness::start().await;
    let mut events = h.engine.events();
    let c = h.client.continuous::<PatientRefresher>();
    h.probe.fail_always(Some("down"));
    c.start("u", count(0)).await.unwrap();
    h.clock.advance(Duration::from_secs(600)).await;
    // Attempts at 0 s, 60 s, 120 s; the next would start at 180 s, past the 150 s limit.
    assert_eq!(h.probe.calls_of("execute").len(), 3);
    let exhausted = h.probe.calls_of("exhausted");
    assert_eq!(exhausted[0].detail, "max_duration: down");
    let last = events.drain().into_iter().last().unwrap();
    assert_eq!(last.type_name(), "job.retryExhausted");
    assert_eq!(last.to_json()["reason"], "max_duration");
}

#[tokio::test]
async fn cron_schedules_run_at_the_matching_time() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Nightly>();
    let s = c.start("r", count(0)).await.unwrap();
    let first = Timestamp::from_millis(
        durable_jobs::testing::TestClock::DEFAULT_START.as_millis() + (4 * 3600 + 30 * 60) * 1000,
    );
    assert_eq!(s.next_run_at, Some(first));
    h.clock.advance(Duration::from_secs(2 * 24 * 3600)).await;
    let at: Vec<_> = h.probe.calls_of("execute").iter().map(|c| c.at).collect();
    assert_eq!(at, vec![first, first + Duration::from_secs(24 * 3600)]);
}

#[tokio::test]
async fn missed_runs_after_a_clock_jump_collapse_into_one() {
    let h = Harness::start().await;
    let c = h.client.continuous::<Refresher>();
    c.start("u", count(0)).await.unwrap();
    // Three hours pass at once (a suspended laptop, an NTP step): six runs were missed.
    h.clock.jump(HALF_HOUR * 6).await;
    let calls = h.probe.calls_of("execute");
    assert_eq!(calls.len(), 2, "missed runs collapse into one run");
    assert_eq!(
        c.status("u").await.unwrap().next_run_at,
        Some(h.clock.now() + HALF_HOUR)
    );
}

#[tokio::test]
async fn a_run_whose_end_cannot_be_written_waits_a_lease_before_running_again() {
    let h = Harness::start().await;
    let c = h.client.continuous::<LazyRefresher>();
    c.start("u", count(0)).await.unwrap();
    // The store refuses every write of this instance from now on, as a failing disk would,
    // except a claim (which sets a lease; a shared store writes it).
    let (refuse, allow) = match backing() {
        Backing::Sqlite(_) => (
            "CREATE TRIGGER refuse_u BEFORE UPDATE ON instances
             WHEN old.id = 'u' AND new.lease_owner IS NULL
             BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END;",
            "DROP TRIGGER refuse_u",
        ),
        Backing::Postgres => (
            "CREATE FUNCTION refuse_u() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'the disk is on fire'; END $$;
             CREATE TRIGGER refuse_u BEFORE UPDATE ON instances FOR EACH ROW
                 WHEN (old.id = 'u' AND new.lease_owner IS NULL) EXECUTE FUNCTION refuse_u();",
            "DROP TRIGGER refuse_u ON instances",
        ),
    };
    h.db.execute(refuse).await;

    // The run falls due, runs, and cannot record its end. Its alarm is still due in the file,
    // but it does not fire again before a lease (60 s) has passed.
    h.clock.advance(HALF_HOUR + Duration::from_secs(50)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 1);

    h.db.execute(allow).await;
    h.clock.advance(Duration::from_secs(15)).await;
    assert_eq!(h.probe.calls_of("execute").len(), 2);
    assert_eq!(c.get_state("u").await.unwrap(), Some(count(1)));
}
