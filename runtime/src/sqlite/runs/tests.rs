//! The run store's contract (upstream `storage.shared.ts`, `db-semantics.shared.ts`,
//! `coalesce.shared.ts` storage parts, `purge.shared.ts`), on a real SQLite file.

use std::time::Duration;

use rusqlite::Connection;

use super::codec::{format_ts, parse_ts};
use super::*;
use crate::store::runs::{
    CancelOutcome, DeleteOutcome, EnqueueOutcome, Enqueued, Fence, Finish, FinishOutcome, NewLog,
    NewRun, NewStep,
};
use crate::store::runs::{Labels, LogLevel, RunFilter, RunStatus, StepStatus};
use crate::time::Timestamp;

const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);
const LEASE: Duration = Duration::from_secs(30);

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.path().join("runs.db")).expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL;")
        .expect("wal");
    conn.execute_batch(&super::schema_after_migrations())
        .expect("schema");
    (dir, conn)
}

fn new_run(id: &str, job: &str) -> NewRun {
    NewRun {
        id: id.into(),
        job_name: job.into(),
        input: r#"{"test":true}"#.into(),
        idempotency_key: None,
        concurrency_key: None,
        labels: Labels::new(),
        coalesce: false,
    }
}

fn created(outcome: EnqueueOutcome) -> Vec<Enqueued> {
    match outcome {
        EnqueueOutcome::Done(d) => d,
        other => panic!("expected success, got {other:?}"),
    }
}

fn add(conn: &Connection, run: NewRun, at: Timestamp) -> RunRecord {
    match created(enqueue(conn, &[run], at).expect("enqueue")).pop() {
        Some(Enqueued::Created(r)) => r,
        other => panic!("expected created, got {other:?}"),
    }
}

fn step(name: &str, index: u64, status: StepStatus) -> NewStep {
    NewStep {
        id: ulid::Ulid::new().to_string(),
        name: name.into(),
        index,
        status,
        output: (status == StepStatus::Completed).then(|| format!("\"{name}-out\"")),
        error: (status != StepStatus::Completed).then(|| "boom".to_owned()),
        started_at: T0,
        completed_at: T0,
    }
}

fn fence(id: &str, generation: u64) -> Fence {
    Fence {
        run_id: id.into(),
        generation,
        hint: None,
    }
}

fn claim_one(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
) -> Option<crate::store::runs::ClaimedRun> {
    claim(conn, owner, now, now + LEASE, 1)
        .expect("claim")
        .runs
        .pop()
}

#[test]
fn timestamps_use_the_javascript_iso_form() {
    assert_eq!(format_ts(T0), "2026-01-01T00:00:00.000Z");
    let t = Timestamp::from_millis(951_782_400_123); // 2000-02-29
    assert_eq!(format_ts(t), "2000-02-29T00:00:00.123Z");
    for ms in [
        0,
        1,
        86_399_999,
        951_782_400_123,
        1_767_225_600_000,
        4_102_444_799_999,
    ] {
        let t = Timestamp::from_millis(ms);
        assert_eq!(format_ts(t), t.to_rfc3339());
        assert_eq!(parse_ts(&format_ts(t)).ok(), Some(t));
    }
    assert!(parse_ts("2026-01-01T01:00:00+01:00").is_ok_and(|t| t == T0));
    assert!(parse_ts("nonsense").is_err());
}

#[test]
fn enqueue_creates_a_pending_run_with_generation_zero() {
    let (_d, c) = db();
    let r = add(&c, new_run("r1", "test-job"), T0);
    assert_eq!(
        (r.status, r.lease_generation, r.attempt),
        (RunStatus::Pending, 0, 1)
    );
    let got = get_run(&c, "r1").expect("get").expect("exists");
    assert_eq!(got, r);
    assert_eq!(got.labels, Labels::new());
    assert!(get_run(&c, "missing").expect("get").is_none());
}

#[test]
fn idempotency_key_is_per_job_and_returns_the_original_run() {
    let (_d, c) = db();
    let mut a = new_run("r1", "job-a");
    a.idempotency_key = Some("k".into());
    add(&c, a.clone(), T0);
    let mut again = a.clone();
    again.id = "r2".into();
    again.input = r#"{"other":1}"#.into();
    let out = created(enqueue(&c, &[again], T0).expect("enqueue"));
    assert!(
        matches!(&out[0], Enqueued::Idempotent(r) if r.id == "r1" && r.input == r#"{"test":true}"#)
    );
    let mut other_job = a;
    other_job.id = "r3".into();
    other_job.job_name = "job-b".into();
    assert!(matches!(
        created(enqueue(&c, &[other_job], T0).expect("enqueue"))[0],
        Enqueued::Created(_)
    ));
}

#[test]
fn one_pending_run_per_job_and_concurrency_key() {
    let (_d, c) = db();
    let keyed = |id: &str, coalesce: bool| NewRun {
        concurrency_key: Some("k".into()),
        coalesce,
        ..new_run(id, "job")
    };
    add(&c, keyed("r1", false), T0);
    match enqueue(&c, &[keyed("r2", false)], T0).expect("enqueue") {
        EnqueueOutcome::Conflict { index: 0, existing } => assert_eq!(existing.id, "r1"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(
        matches!(&created(enqueue(&c, &[keyed("r3", true)], T0).expect("enqueue"))[0], Enqueued::Coalesced(r) if r.id == "r1")
    );
    // Once r1 is leased a new pending run is allowed; with one leased and one pending, a third
    // conflicts.
    claim_one(&c, "w", T0).expect("claimed");
    add(&c, keyed("r4", false), T0);
    assert!(matches!(
        enqueue(&c, &[keyed("r5", false)], T0).expect("enqueue"),
        EnqueueOutcome::Conflict { .. }
    ));
    // Another job with the same key is independent at admission.
    add(
        &c,
        NewRun {
            job_name: "other".into(),
            ..keyed("r6", false)
        },
        T0,
    );
}

#[test]
fn idempotency_wins_over_a_concurrency_conflict() {
    let (_d, c) = db();
    let run = NewRun {
        idempotency_key: Some("i".into()),
        concurrency_key: Some("k".into()),
        ..new_run("r1", "job")
    };
    add(&c, run.clone(), T0);
    let out = created(
        enqueue(
            &c,
            &[NewRun {
                id: "r2".into(),
                ..run
            }],
            T0,
        )
        .expect("enqueue"),
    );
    assert!(matches!(&out[0], Enqueued::Idempotent(r) if r.id == "r1"));
}

#[test]
fn batches_are_all_or_nothing_and_see_their_own_runs() {
    let (_d, c) = db();
    assert_eq!(created(enqueue(&c, &[], T0).expect("empty")), vec![]);
    let keyed = |id: &str, coalesce: bool| NewRun {
        concurrency_key: Some("k".into()),
        coalesce,
        ..new_run(id, "job")
    };
    let out = created(enqueue(&c, &[keyed("a", false), keyed("b", true)], T0).expect("enqueue"));
    assert!(
        matches!((&out[0], &out[1]), (Enqueued::Created(a), Enqueued::Coalesced(b)) if a.id == "a" && b.id == "a")
    );
    let idem = NewRun {
        idempotency_key: Some("i".into()),
        ..new_run("c", "job")
    };
    let out = created(
        enqueue(
            &c,
            &[
                idem.clone(),
                NewRun {
                    id: "d".into(),
                    ..idem
                },
            ],
            T0,
        )
        .expect("enqueue"),
    );
    assert!(matches!(&out[1], Enqueued::Idempotent(r) if r.id == "c"));
    // A conflict anywhere leaves nothing written.
    let before: i64 = c
        .query_row("SELECT COUNT(*) FROM durably_runs", [], |r| r.get(0))
        .expect("count");
    let batch = [
        new_run("e", "job"),
        NewRun {
            concurrency_key: Some("x".into()),
            ..new_run("f", "job")
        },
        NewRun {
            concurrency_key: Some("x".into()),
            ..new_run("g", "job")
        },
    ];
    assert!(matches!(
        enqueue(&c, &batch, T0).expect("enqueue"),
        EnqueueOutcome::Conflict { index: 2, .. }
    ));
    let after: i64 = c
        .query_row("SELECT COUNT(*) FROM durably_runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(before, after);
}

#[test]
fn filters_order_and_paginate() {
    let (_d, c) = db();
    for i in 1..=10i64 {
        let mut r = new_run(&format!("r{i:02}"), if i % 2 == 0 { "even" } else { "odd" });
        if i <= 3 {
            r.labels.insert("env".into(), "prod".into());
            r.labels
                .insert("app.kubernetes.io/name".into(), format!("app{i}"));
        }
        add(&c, r, T0 + Duration::from_millis(i as u64));
    }
    let ids = |f: RunFilter| {
        get_runs(&c, &f)
            .expect("get_runs")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(RunFilter::new().limit(3)), ["r10", "r09", "r08"]);
    assert_eq!(
        ids(RunFilter::new().limit(3).offset(3)),
        ["r07", "r06", "r05"]
    );
    assert_eq!(ids(RunFilter::new().limit(3).offset(9)), ["r01"]);
    assert_eq!(ids(RunFilter::new().offset(20)), Vec::<String>::new());
    assert_eq!(ids(RunFilter::new().offset(8)), ["r02", "r01"]);
    assert_eq!(ids(RunFilter::new().job_name("even")).len(), 5);
    assert_eq!(
        ids(RunFilter::new().job_name("even").job_name("odd")).len(),
        10
    );
    assert_eq!(
        ids(RunFilter::new().label("env", "prod")),
        ["r03", "r02", "r01"]
    );
    assert_eq!(
        ids(RunFilter::new()
            .label("env", "prod")
            .label("app.kubernetes.io/name", "app2")),
        ["r02"]
    );
    claim_one(&c, "w", T0 + Duration::from_secs(1));
    assert_eq!(ids(RunFilter::new().status(RunStatus::Leased)), ["r01"]);
    assert_eq!(
        ids(RunFilter::new()
            .status(RunStatus::Pending)
            .status(RunStatus::Leased))
        .len(),
        10
    );
    assert!(get_runs(&c, &RunFilter::new().label("bad key", "x")).is_err());
}

#[test]
fn claim_leases_fifo_and_keeps_started_at_on_reclaim() {
    let (_d, c) = db();
    assert!(claim_one(&c, "w", T0).is_none());
    add(&c, new_run("b", "job"), T0 + Duration::from_millis(1));
    add(&c, new_run("a", "job"), T0);
    let first = claim_one(&c, "w1", T0).expect("claimed");
    assert_eq!(
        (first.id.as_str(), first.generation, first.started_at),
        ("a", 1, T0)
    );
    let got = get_run(&c, "a").expect("get").expect("exists");
    assert_eq!(
        (
            got.status,
            got.lease_owner.as_deref(),
            got.completed_step_count
        ),
        (RunStatus::Leased, Some("w1"), 0)
    );
    assert_eq!(got.lease_expires_at, Some(T0 + LEASE));
    // A live lease is not reclaimed; an expired one is, with a new generation and the same
    // start time, before younger pending runs.
    assert_eq!(claim_one(&c, "w2", T0).map(|r| r.id).as_deref(), Some("b"));
    assert!(claim_one(&c, "w2", T0 + Duration::from_secs(1)).is_none());
    let later = T0 + LEASE + Duration::from_secs(1);
    let again = claim_one(&c, "w2", later).expect("reclaimed");
    assert_eq!(
        (again.id.as_str(), again.generation, again.started_at),
        ("b", 2, T0)
    );
}

#[test]
fn simultaneous_claims_have_one_winner() {
    let (dir, c) = db();
    for i in 0..200 {
        add(&c, new_run(&format!("r{i:03}"), "job"), T0);
    }
    drop(c);
    // Two workers on two connections claim at the same moment, round after round, until no
    // run is left: every run has exactly one winner.
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let claimer = |owner: &'static str| {
        let path = dir.path().join("runs.db");
        let start = start.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(path).expect("open");
            conn.busy_timeout(Duration::from_secs(30)).expect("busy");
            let mut won = Vec::new();
            // Enough rounds for one worker to take every run alone; both always run them
            // all, so neither waits at the barrier for a worker that has stopped.
            for _ in 0..70 {
                start.wait();
                let runs = claim(&conn, owner, T0, T0 + LEASE, 3).expect("claim").runs;
                won.extend(runs.into_iter().map(|r| r.id));
            }
            won
        })
    };
    let (a, b) = (claimer("w1"), claimer("w2"));
    let (a, b) = (a.join().expect("w1"), b.join().expect("w2"));
    let mut all: Vec<&String> = a.iter().chain(&b).collect();
    all.sort();
    let claimed = all.len();
    all.dedup();
    assert_eq!(all.len(), claimed, "a run was claimed by both workers");
    assert_eq!(claimed, 200);
    assert!(!a.is_empty() && !b.is_empty(), "both workers won some runs");
}

#[test]
fn a_claim_takes_one_run_per_concurrency_key_across_jobs() {
    let (_d, c) = db();
    add(
        &c,
        NewRun {
            concurrency_key: Some("group-1".into()),
            ..new_run("1", "same-key-a")
        },
        T0,
    );
    add(
        &c,
        NewRun {
            concurrency_key: Some("group-1".into()),
            ..new_run("2", "same-key-b")
        },
        T0 + Duration::from_millis(1),
    );
    add(&c, new_run("3", "free"), T0 + Duration::from_millis(2));
    let claimed: Vec<String> = claim(&c, "w", T0, T0 + LEASE, 10)
        .expect("claim")
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(claimed, ["1", "3"]);
    assert!(claim(&c, "w", T0, T0 + LEASE, 10)
        .expect("claim")
        .runs
        .is_empty());
    // When the key holder's lease expires it is reclaimed first; the sibling stays blocked.
    let later = T0 + LEASE + Duration::from_secs(1);
    let claimed: Vec<String> = claim(&c, "w2", later, later + LEASE, 10)
        .expect("claim")
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(claimed, ["1", "3"]);
}

#[test]
fn a_fence_is_found_by_the_claims_rowid_and_still_checked_by_id() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    add(&c, new_run("b", "job"), T0);
    let a = claim_one(&c, "w1", T0).expect("a claimed");
    let b = claim_one(&c, "w1", T0).expect("b claimed");
    assert_eq!((a.id.as_str(), b.id.as_str()), ("a", "b"));
    let fence_of = |run: &crate::store::runs::ClaimedRun, hint| Fence {
        run_id: run.id.clone(),
        generation: run.generation,
        hint,
    };
    assert!(persist_step(
        &c,
        &fence_of(&a, a.hint),
        &step("s1", 0, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    // The rowid of another run: refused, whatever the generation.
    assert!(!persist_step(
        &c,
        &fence_of(&a, b.hint),
        &step("s2", 1, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    let completed = Finish::Completed {
        output: None,
        completed_step_count: 1,
        current_step_index: 1,
    };
    assert_eq!(
        finish_run(&c, &fence_of(&a, b.hint), &completed, &[], false, T0).expect("finish"),
        FinishOutcome::Refused
    );
    assert_eq!(
        get_run(&c, "b").expect("get").expect("b").status,
        RunStatus::Leased
    );
    assert_eq!(
        finish_run(&c, &fence_of(&a, a.hint), &completed, &[], false, T0).expect("finish"),
        FinishOutcome::Completed
    );
    assert_eq!(get_steps(&c, "a").expect("steps").len(), 1);
}

#[test]
fn fenced_writes_need_the_claimed_generation() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    let run = claim_one(&c, "w1", T0).expect("claimed");
    assert!(persist_step(
        &c,
        &fence("a", run.generation),
        &step("s1", 0, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert!(!persist_step(
        &c,
        &fence("a", run.generation + 1),
        &step("s2", 1, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert_eq!(get_steps(&c, "a").expect("steps").len(), 1);
    assert!(update_progress(
        &c,
        &fence("a", run.generation),
        Some(r#"{"current":1}"#),
        &[],
        T0
    )
    .expect("progress"));
    assert!(
        !update_progress(&c, &fence("a", 9), Some(r#"{"current":2}"#), &[], T0).expect("progress")
    );
    assert_eq!(
        get_run(&c, "a")
            .expect("get")
            .and_then(|r| r.progress)
            .as_deref(),
        Some(r#"{"current":1}"#)
    );
    assert!(update_progress(&c, &fence("a", run.generation), None, &[], T0).expect("progress"));
    assert_eq!(
        get_run(&c, "a").expect("get").and_then(|r| r.progress),
        None
    );

    // After a reclaim the stale generation can neither persist nor complete; the new one can.
    let later = T0 + LEASE + Duration::from_secs(1);
    let re = claim_one(&c, "w2", later).expect("reclaimed");
    let done = Finish::Completed {
        output: Some("1".into()),
        completed_step_count: 1,
        current_step_index: 1,
    };
    assert_eq!(
        finish_run(&c, &fence("a", run.generation), &done, &[], false, later).expect("finish"),
        FinishOutcome::Refused
    );
    assert!(!persist_step(
        &c,
        &fence("a", run.generation),
        &step("s3", 2, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert_eq!(
        finish_run(&c, &fence("a", re.generation), &done, &[], false, later).expect("finish"),
        FinishOutcome::Completed
    );
    let got = get_run(&c, "a").expect("get").expect("exists");
    assert_eq!(
        (
            got.status,
            got.output.as_deref(),
            got.lease_owner.clone(),
            got.completed_at
        ),
        (RunStatus::Completed, Some("1"), None, Some(later))
    );
    assert!(claim_one(&c, "w3", later + LEASE * 3).is_none());
    assert_eq!(
        cancel_run(&c, "a", later, false).expect("cancel"),
        CancelOutcome::Terminal(RunStatus::Completed)
    );
}

#[test]
fn step_counts_follow_completed_steps() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    let g = claim_one(&c, "w", T0).expect("claimed").generation;
    let count = |c: &Connection| {
        get_run(c, "a")
            .expect("get")
            .map(|r| (r.completed_step_count, r.current_step_index))
    };
    assert_eq!(count(&c), Some((0, 0)));
    assert!(persist_step(
        &c,
        &fence("a", g),
        &step("one", 0, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert_eq!(count(&c), Some((1, 1)));
    assert!(
        persist_step(&c, &fence("a", g), &step("two", 1, StepStatus::Failed), &[])
            .expect("persist")
    );
    assert_eq!(count(&c), Some((1, 1)));
    assert!(persist_step(
        &c,
        &fence("a", g),
        &step("two", 1, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert!(persist_step(
        &c,
        &fence("a", g),
        &step("three", 2, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert_eq!(count(&c), Some((3, 3)));
    assert_eq!(
        completed_steps(&c, "a")
            .expect("steps")
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let runs = get_runs(&c, &RunFilter::new()).expect("runs");
    assert_eq!(runs[0].completed_step_count, 3);
}

#[test]
fn renewal_extends_live_leases_of_the_owner_only() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    add(&c, new_run("b", "job"), T0);
    let a = claim_one(&c, "w1", T0).expect("claimed");
    claim_one(&c, "w2", T0).expect("claimed");
    let t = T0 + Duration::from_secs(10);
    assert_eq!(
        renew_leases(&c, "w1", t, t + LEASE).expect("renew"),
        vec![("a".to_owned(), a.generation)]
    );
    assert_eq!(
        get_run(&c, "a")
            .expect("get")
            .and_then(|r| r.lease_expires_at),
        Some(t + LEASE)
    );
    assert_eq!(
        get_run(&c, "b")
            .expect("get")
            .and_then(|r| r.lease_expires_at),
        Some(T0 + LEASE)
    );
    // An expired lease cannot be renewed, even if nobody reclaimed it.
    let late = T0 + LEASE * 3;
    assert!(renew_leases(&c, "w2", late, late + LEASE)
        .expect("renew")
        .is_empty());
}

#[test]
fn failing_with_a_retry_goes_back_to_pending_unless_a_sibling_is_pending() {
    let (_d, c) = db();
    add(
        &c,
        NewRun {
            concurrency_key: Some("k".into()),
            ..new_run("a", "job")
        },
        T0,
    );
    let g = claim_one(&c, "w", T0).expect("claimed").generation;
    let retry = Finish::Failed {
        error: "boom".into(),
        retry: Some((2, T0 + Duration::from_secs(5))),
    };
    assert_eq!(
        finish_run(&c, &fence("a", g), &retry, &[], true, T0).expect("finish"),
        FinishOutcome::Retrying
    );
    let got = get_run(&c, "a").expect("get").expect("exists");
    assert_eq!(
        (
            got.status,
            got.attempt,
            got.not_before,
            got.error.as_deref()
        ),
        (
            RunStatus::Pending,
            2,
            Some(T0 + Duration::from_secs(5)),
            Some("boom")
        )
    );
    // Not claimable before its time; due later, with the time reported.
    let claimed = claim(&c, "w", T0, T0 + LEASE, 5).expect("claim");
    assert!(claimed.runs.is_empty());
    assert_eq!(claimed.next_due, Some(T0 + Duration::from_secs(5)));
    let t = T0 + Duration::from_secs(5);
    let g = claim_one(&c, "w", t).expect("due").generation;
    // With a pending sibling of the same key the retry cannot go back to pending: it fails.
    add(
        &c,
        NewRun {
            concurrency_key: Some("k".into()),
            ..new_run("b", "job")
        },
        t,
    );
    let retry = Finish::Failed {
        error: "boom".into(),
        retry: Some((3, t)),
    };
    assert_eq!(
        finish_run(&c, &fence("a", g), &retry, &[], true, t).expect("finish"),
        FinishOutcome::FailedRetryBlocked
    );
    assert_eq!(
        get_run(&c, "a").expect("get").map(|r| r.status),
        Some(RunStatus::Failed)
    );
}

#[test]
fn next_due_reports_retries_and_foreign_lease_expiries() {
    let (_d, c) = db();
    assert_eq!(next_due(&c, "me", T0).expect("due"), None);
    add(&c, new_run("a", "job"), T0);
    claim_one(&c, "other", T0).expect("claimed");
    assert_eq!(next_due(&c, "me", T0).expect("due"), Some(T0 + LEASE));
    assert_eq!(next_due(&c, "other", T0).expect("due"), None);
}

#[test]
fn cancel_and_delete_follow_the_status() {
    let (_d, c) = db();
    add(&c, new_run("p", "job"), T0);
    add(&c, new_run("l", "job"), T0 + Duration::from_millis(1));
    assert!(matches!(
        delete_run(&c, "p").expect("delete"),
        DeleteOutcome::Active(RunStatus::Pending)
    ));
    let g = claim(&c, "w", T0, T0 + LEASE, 1).expect("claim").runs[0].generation;
    let gl = claim(&c, "w", T0, T0 + LEASE, 1).expect("claim").runs[0].generation;
    assert_eq!(g, 1);
    assert!(persist_step(
        &c,
        &fence("l", gl),
        &step("s", 0, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    assert!(matches!(
        delete_run(&c, "l").expect("delete"),
        DeleteOutcome::Active(RunStatus::Leased)
    ));
    assert!(
        matches!(cancel_run(&c, "l", T0, true).expect("cancel"), CancelOutcome::Cancelled(r) if r.status == RunStatus::Leased)
    );
    let got = get_run(&c, "l").expect("get").expect("exists");
    assert_eq!(
        (got.status, got.completed_at, got.lease_owner),
        (RunStatus::Cancelled, Some(T0), None)
    );
    assert_eq!(
        cancel_run(&c, "l", T0, true).expect("cancel"),
        CancelOutcome::Terminal(RunStatus::Cancelled)
    );
    assert_eq!(
        cancel_run(&c, "nope", T0, true).expect("cancel"),
        CancelOutcome::NotFound
    );
    // The fenced writes of the cancelled run's worker are refused.
    assert!(!persist_step(
        &c,
        &fence("l", gl),
        &step("t", 1, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    delete_cancelled_steps(&c, "l").expect("cleanup");
    assert!(get_steps(&c, "l").expect("steps").is_empty());
    assert!(matches!(
        delete_run(&c, "l").expect("delete"),
        DeleteOutcome::Deleted(_)
    ));
    assert!(matches!(
        delete_run(&c, "l").expect("delete"),
        DeleteOutcome::NotFound
    ));
}

#[test]
fn delete_cascades_to_labels_steps_and_logs() {
    let (_d, c) = db();
    let mut r = new_run("a", "job");
    r.labels.insert("env".into(), "x".into());
    add(&c, r, T0);
    let g = claim_one(&c, "w", T0).expect("claimed").generation;
    let log = |id: &str, msg: &str, at: Timestamp| NewLog {
        id: id.into(),
        step_name: None,
        level: LogLevel::Info,
        message: msg.into(),
        data: Some(r#"{"k":"v"}"#.into()),
        created_at: at,
    };
    let logs = [
        log("l1", "first", T0),
        log("l2", "second", T0),
        log("l3", "third", T0 + Duration::from_millis(1)),
    ];
    assert!(persist_step(
        &c,
        &fence("a", g),
        &step("s", 0, StepStatus::Completed),
        &logs
    )
    .expect("persist"));
    let got = get_logs(&c, "a").expect("logs");
    assert_eq!(
        got.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    assert_eq!(got[0].data.as_deref(), Some(r#"{"k":"v"}"#));
    let done = Finish::Completed {
        output: None,
        completed_step_count: 1,
        current_step_index: 1,
    };
    assert_eq!(
        finish_run(&c, &fence("a", g), &done, &[], false, T0).expect("finish"),
        FinishOutcome::Completed
    );
    assert!(matches!(
        delete_run(&c, "a").expect("delete"),
        DeleteOutcome::Deleted(_)
    ));
    for table in [
        "durably_runs",
        "durably_run_labels",
        "durably_steps",
        "durably_logs",
    ] {
        let n: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "{table}");
    }
}

#[test]
fn completion_with_cleanup_deletes_steps_and_logs() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    let g = claim_one(&c, "w", T0).expect("claimed").generation;
    assert!(persist_step(
        &c,
        &fence("a", g),
        &step("s", 0, StepStatus::Completed),
        &[]
    )
    .expect("persist"));
    let done = Finish::Completed {
        output: Some("42".into()),
        completed_step_count: 1,
        current_step_index: 1,
    };
    assert_eq!(
        finish_run(&c, &fence("a", g), &done, &[], true, T0).expect("finish"),
        FinishOutcome::Completed
    );
    assert!(get_steps(&c, "a").expect("steps").is_empty());
    let got = get_run(&c, "a").expect("get").expect("exists");
    assert_eq!((got.completed_step_count, got.current_step_index), (1, 1));
}

#[test]
fn recover_expires_every_live_lease() {
    let (_d, c) = db();
    add(&c, new_run("a", "job"), T0);
    claim_one(&c, "dead", T0).expect("claimed");
    assert_eq!(recover(&c, T0).expect("recover"), 1);
    let re = claim_one(&c, "new", T0).expect("reclaimed");
    assert_eq!(re.generation, 2);
}

#[test]
fn purge_removes_only_old_terminal_runs() {
    let (_d, c) = db();
    assert_eq!(purge_runs(&c, None, T0, 10).expect("purge"), 0);
    for (i, id) in ["a", "b", "cc", "p"].iter().enumerate() {
        add(&c, new_run(id, "job"), T0 + Duration::from_millis(i as u64));
    }
    for _ in 0..3 {
        let r = claim_one(&c, "w", T0).expect("claimed");
        assert!(persist_step(
            &c,
            &fence(&r.id, r.generation),
            &step("s", 0, StepStatus::Completed),
            &[]
        )
        .expect("persist"));
        let f = if r.id == "b" {
            Finish::Failed {
                error: "x".into(),
                retry: None,
            }
        } else {
            Finish::Completed {
                output: None,
                completed_step_count: 1,
                current_step_index: 1,
            }
        };
        finish_run(&c, &fence(&r.id, r.generation), &f, &[], false, T0).expect("finish");
    }
    cancel_run(&c, "cc", T0, false).expect("cancel");
    assert_eq!(
        purge_runs(&c, None, T0, 10).expect("purge"),
        0,
        "a cutoff in the past deletes nothing"
    );
    let future = T0 + Duration::from_secs(60);
    assert_eq!(purge_runs(&c, None, future, 2).expect("purge"), 2);
    assert_eq!(
        purge_runs(&c, Some("other-job"), future, 10).expect("purge"),
        0
    );
    assert_eq!(purge_runs(&c, None, future, 10).expect("purge"), 1);
    assert_eq!(
        get_runs(&c, &RunFilter::new())
            .expect("runs")
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["p"]
    );
    let steps: i64 = c
        .query_row("SELECT COUNT(*) FROM durably_steps", [], |r| r.get(0))
        .expect("count");
    assert_eq!(steps, 0);
}

#[test]
fn the_schema_has_the_named_indexes() {
    let (_d, c) = db();
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_durably_%' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for expected in [
        "idx_durably_logs_run_created",
        "idx_durably_run_labels_listed",
        "idx_durably_run_labels_pk",
        "idx_durably_runs_job_idempotency",
        "idx_durably_runs_job_listed",
        "idx_durably_runs_listed",
        "idx_durably_runs_pending_concurrency",
        "idx_durably_runs_status_concurrency",
        "idx_durably_runs_status_lease_expires",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Migration 4 dropped the first, migration 6 the others.
    for dropped in [
        "idx_durably_steps_completed_unique",
        "idx_durably_runs_job_created",
        "idx_durably_runs_status_completed",
        "idx_durably_runs_status_created",
        "idx_durably_run_labels_key_value",
    ] {
        assert!(
            !names.iter().any(|n| n == dropped),
            "{dropped} in {names:?}"
        );
    }
}

#[test]
fn the_claim_query_is_not_re_prepared_on_every_claim() {
    let (_d, c) = db();
    // Enough runs that every claim below is full and takes the same path.
    for i in 0..100 {
        add(&c, new_run(&format!("r{i:03}"), "job"), T0);
    }
    // SQLite calls the authorizer whenever it compiles a statement, so it counts every prepare
    // and re-prepare the claim makes, whatever SQL it uses. Setting it also expires every
    // cached statement, which makes each re-prepare once, as a schema change would.
    let compiled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = compiled.clone();
    c.authorizer(Some(move |_: rusqlite::hooks::AuthContext<'_>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rusqlite::hooks::Authorization::Allow
    }))
    .expect("authorizer");
    for k in 0..3u64 {
        let now = T0 + Duration::from_millis(k);
        claim(&c, "w", now, now + LEASE, 5).expect("claim");
    }
    let warm = compiled.load(std::sync::atomic::Ordering::SeqCst);
    assert!(warm > 0, "the warm-up claims compiled their statements");
    for k in 3..13u64 {
        let now = T0 + Duration::from_millis(k);
        claim(&c, "w", now, now + LEASE, 5).expect("claim");
    }
    assert_eq!(
        compiled.load(std::sync::atomic::Ordering::SeqCst),
        warm,
        "a claim compiled a statement again"
    );
}

#[test]
fn keyset_pages_stay_exact_while_runs_are_deleted_and_created() {
    let (_d, c) = db();
    for i in 1..=7i64 {
        add(
            &c,
            new_run(&format!("r{i:02}"), "job"),
            T0 + Duration::from_millis(i as u64),
        );
    }
    // Two runs share a creation time: the id breaks the tie.
    add(&c, new_run("r08a", "job"), T0 + Duration::from_millis(8));
    add(&c, new_run("r08b", "job"), T0 + Duration::from_millis(8));
    let page = |f: RunFilter| get_runs(&c, &f).expect("get_runs");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let mut f = RunFilter::new().limit(3);
        if let Some(cur) = cursor.take() {
            f = f.before(cur);
        }
        let runs = page(f);
        let Some(last) = runs.last() else { break };
        cursor = Some(crate::store::runs::RunCursor::new(
            last.created_at,
            last.id.clone(),
        ));
        // Between pages: the last run seen is deleted and a newer one is created.
        let last_id = last.id.clone();
        seen.extend(runs.into_iter().map(|r| r.id));
        cancel_run(&c, &last_id, T0, true).expect("cancel");
        delete_run(&c, &last_id).expect("delete");
        add(
            &c,
            new_run(&format!("new-{last_id}"), "job"),
            T0 + Duration::from_secs(60),
        );
    }
    assert_eq!(
        seen,
        ["r08b", "r08a", "r07", "r06", "r05", "r04", "r03", "r02", "r01"]
    );
}

#[test]
fn counts_runs_per_job_and_status() {
    let (_d, c) = db();
    add(&c, new_run("p1", "a"), T0);
    add(&c, new_run("p2", "a"), T0 + Duration::from_millis(5));
    add(&c, new_run("l", "a"), T0 + Duration::from_millis(6));
    add(&c, new_run("x", "b"), T0 + Duration::from_millis(7));
    // The claim takes the oldest pending run: p1.
    let claimed = claim_one(&c, "w", T0 + Duration::from_secs(1)).expect("claimed");
    assert_eq!(claimed.id, "p1");
    cancel_run(&c, "x", T0 + Duration::from_secs(2), true).expect("cancel");
    let p2 = claim_one(&c, "w", T0 + Duration::from_secs(3)).expect("claimed");
    let failed = Finish::Failed {
        error: "boom".into(),
        retry: None,
    };
    let at = T0 + Duration::from_secs(3);
    finish_run(&c, &fence("p2", p2.generation), &failed, &[], true, at).expect("finish");
    let recent = |since: Timestamp| count_runs(&c, since).expect("count")[0].failed_since;
    assert_eq!((recent(at), recent(at + Duration::from_millis(1))), (1, 0));
    add(&c, new_run("p3", "a"), T0 + Duration::from_millis(9));
    let counts = count_runs(&c, T0).expect("count");
    assert_eq!(counts.len(), 2);
    assert_eq!(
        (
            counts[0].job_name.as_str(),
            counts[0].pending,
            counts[0].leased,
            counts[0].oldest_pending
        ),
        ("a", 2, 1, Some(T0 + Duration::from_millis(6)))
    );
    assert_eq!(
        (
            counts[1].job_name.as_str(),
            counts[1].cancelled,
            counts[1].pending,
            counts[1].oldest_pending
        ),
        ("b", 1, 0, None)
    );
}

/// The SQL of every statement `f` runs on `c`, as written (parameters unbound).
fn statements_run_by(c: &Connection, f: impl FnOnce(&Connection)) -> Vec<String> {
    // rusqlite's trace callback is a function pointer, so statements are collected per
    // thread: `f` runs on this one.
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    fn record(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event {
            SEEN.with_borrow_mut(|seen| seen.push(stmt.sql().into_owned()));
        }
    }
    SEEN.with_borrow_mut(Vec::clear);
    c.trace_v2(
        rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
        Some(record),
    );
    f(c);
    c.trace_v2(rusqlite::trace::TraceEventCodes::empty(), None);
    SEEN.with_borrow_mut(std::mem::take)
}

/// The query plan of `sql`, one step a line.
fn plan(c: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let mut rows = stmt.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("plan row") {
        steps.push(row.get::<_, String>(3).expect("detail"));
    }
    steps
}

#[test]
fn every_run_listing_reads_index_ranges_and_never_walks_the_table() {
    let (_d, c) = db();
    let status_index = "idx_durably_runs_listed (listed_status=?";
    let job_index = "idx_durably_runs_job_listed (job_name=? AND listed_status=?";
    let leased_index = "idx_durably_runs_status_lease_expires (status=?)";
    let label_index = "idx_durably_run_labels_listed (key=? AND value=?)";
    let cursor = crate::store::runs::RunCursor::new(T0, "r1");
    for (what, filter, index) in [
        ("every run", RunFilter::new().limit(50), status_index),
        (
            "one status",
            RunFilter::new().status(RunStatus::Failed).limit(50),
            status_index,
        ),
        (
            "two statuses",
            RunFilter::new()
                .status(RunStatus::Pending)
                .status(RunStatus::Failed)
                .limit(50),
            status_index,
        ),
        (
            "one job",
            RunFilter::new().job_name("a").limit(50),
            job_index,
        ),
        (
            "a job's failed runs",
            RunFilter::new()
                .job_name("a")
                .status(RunStatus::Failed)
                .limit(50),
            job_index,
        ),
        (
            "a time range",
            RunFilter::new()
                .created_since(T0)
                .created_until(T0 + Duration::from_secs(3600))
                .limit(50),
            status_index,
        ),
        (
            "a keyset page",
            RunFilter::new()
                .status(RunStatus::Completed)
                .before(cursor.clone())
                .limit(50),
            status_index,
        ),
        (
            "an offset page",
            RunFilter::new()
                .status(RunStatus::Cancelled)
                .limit(50)
                .offset(200),
            status_index,
        ),
        (
            "a label",
            RunFilter::new()
                .label("tenant", "acme")
                .status(RunStatus::Failed)
                .limit(50),
            label_index,
        ),
        (
            "no limit",
            RunFilter::new().status(RunStatus::Cancelled),
            status_index,
        ),
        // Leased runs, as many as the workers hold, are sorted.
        (
            "leased runs",
            RunFilter::new().status(RunStatus::Leased).limit(50),
            leased_index,
        ),
    ] {
        let statements = statements_run_by(&c, |c| {
            get_runs(c, &filter).expect("get_runs");
        });
        assert_eq!(statements.len(), 1, "{what}: {statements:?}");
        let steps = plan(&c, &statements[0]);
        let all = steps.join("\n");
        assert!(
            steps.iter().any(|s| s.contains(index)),
            "{what}: expected {index} in\n{all}"
        );
        for step in &steps {
            // A scan of the runs or labels, or a search of the runs through another index
            // (walking a job's runs to check their status, say), reads runs the page does
            // not return.
            assert!(
                !step.starts_with("SCAN r") && !step.starts_with("SCAN l"),
                "{what}: a table scan in\n{all}"
            );
            if step.starts_with("SEARCH r ") {
                assert!(
                    step.contains(status_index)
                        || step.contains(job_index)
                        || step.contains(leased_index)
                        || step.contains("INTEGER PRIMARY KEY (rowid=?)")
                        || step.contains("sqlite_autoindex_durably_runs_1 (id=?)"),
                    "{what}: runs searched by another index in\n{all}"
                );
            }
        }
    }
}

/// Inserts `n` runs of job `job` in status `status`, created from `from` on, one a
/// millisecond, each carrying the label `tenant` = `tenant`.
fn insert_many(
    c: &Connection,
    n: u64,
    job: &str,
    status: RunStatus,
    from: Timestamp,
    tenant: &str,
) {
    let tx = c.unchecked_transaction().expect("tx");
    {
        let mut run = tx
            .prepare(
                "INSERT INTO durably_runs (id, job_name, input, status, labels, created_at,
                    updated_at, completed_at)
                 VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?5, CASE WHEN ?3 IN ('pending', 'leased')
                    THEN NULL ELSE ?5 END)",
            )
            .expect("prepare");
        let mut label = tx
            .prepare(
                "INSERT INTO durably_run_labels (run_id, key, value, created_at)
                 VALUES (?1, 'tenant', ?2, ?3)",
            )
            .expect("prepare");
        let labels = format!(r#"{{"tenant":"{tenant}"}}"#);
        for i in 0..n {
            let at = from + Duration::from_millis(i);
            let id = format!("{}-{job}-{status}-{i:08}", format_ts(at));
            run.execute(rusqlite::params![
                id,
                job,
                status.as_str(),
                labels,
                format_ts(at)
            ])
            .expect("insert run");
            label
                .execute(rusqlite::params![id, tenant, format_ts(at)])
                .expect("insert label");
        }
    }
    tx.commit().expect("commit");
}

/// SQLite virtual-machine instructions `f` executes on `c`: the work of a query, whatever
/// the machine's speed.
fn instructions(c: &Connection, f: impl FnOnce(&Connection)) -> u64 {
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = counted.clone();
    c.progress_handler(
        10,
        Some(move || {
            counter.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
            false
        }),
    )
    .expect("progress handler");
    f(c);
    c.progress_handler(10, None::<fn() -> bool>)
        .expect("progress handler");
    counted.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_page_of_rare_runs_costs_the_same_among_ten_times_more_other_runs() {
    let (_d, c) = db();
    // The runs asked for are the oldest: a listing that walks runs newest first and checks
    // each one's status, job or label reads every other run before it finds them.
    insert_many(&c, 20, "a", RunStatus::Failed, T0, "acme");
    insert_many(&c, 20, "b", RunStatus::Pending, T0, "acme");
    let later = T0 + Duration::from_secs(3600);
    let filters = [
        RunFilter::new().status(RunStatus::Failed).limit(10),
        RunFilter::new().status(RunStatus::Pending).limit(10),
        RunFilter::new()
            .job_name("a")
            .status(RunStatus::Failed)
            .limit(10),
        RunFilter::new().job_name("b").limit(10),
        RunFilter::new().label("tenant", "acme").limit(10),
        RunFilter::new()
            .status(RunStatus::Failed)
            .created_until(T0 + Duration::from_secs(1))
            .limit(10),
        RunFilter::new().limit(10),
    ];
    let cost = |c: &Connection| -> Vec<u64> {
        filters
            .iter()
            .map(|f| {
                instructions(c, |c| {
                    assert_eq!(get_runs(c, f).expect("get_runs").len(), 10, "{f:?}");
                })
            })
            .collect()
    };
    insert_many(&c, 1_000, "a", RunStatus::Completed, later, "other");
    let small = cost(&c);
    insert_many(
        &c,
        9_000,
        "a",
        RunStatus::Completed,
        later + Duration::from_secs(10),
        "other",
    );
    let large = cost(&c);
    for ((filter, small), large) in filters.iter().zip(&small).zip(&large) {
        assert!(
            *large <= small + small / 4 + 100,
            "{filter:?}: {small} instructions among 1,000 other runs, {large} among 10,000"
        );
    }
}

#[test]
fn listings_merge_their_ranges_in_order_with_offsets_cursors_and_time_ranges() {
    let (_d, c) = db();
    // Interleaved creation times across jobs and statuses.
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let job = if i % 3 == 0 { "a" } else { "b" };
        let at = T0 + Duration::from_millis(i * 10);
        let run = add(&c, new_run(&format!("r{i:02}"), job), at);
        expected.push((run.id.clone(), job, i));
    }
    // Half the runs of job b are cancelled.
    for (id, job, i) in &expected {
        if *job == "b" && i % 2 == 0 {
            cancel_run(&c, id, T0, true).expect("cancel");
        }
    }
    let ids = |f: RunFilter| -> Vec<String> {
        get_runs(&c, &f)
            .expect("get_runs")
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    let newest_first: Vec<String> = expected.iter().rev().map(|e| e.0.clone()).collect();
    assert_eq!(ids(RunFilter::new()), newest_first);
    assert_eq!(
        ids(RunFilter::new().limit(7).offset(5)),
        newest_first[5..12]
    );
    let window = RunFilter::new()
        .created_since(T0 + Duration::from_millis(50))
        .created_until(T0 + Duration::from_millis(120));
    assert_eq!(
        ids(window),
        ["r11", "r10", "r09", "r08", "r07", "r06", "r05"]
    );
    // Keyset pages over two statuses of one job give the same runs as one listing.
    let base = RunFilter::new()
        .job_name("b")
        .status(RunStatus::Cancelled)
        .status(RunStatus::Pending);
    let whole = ids(base.clone());
    assert_eq!(whole.len(), 20);
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let mut f = base.clone().limit(6);
        if let Some(c) = cursor.take() {
            f = f.before(c);
        }
        let page = get_runs(&c, &f).expect("page");
        let Some(last) = page.last() else { break };
        cursor = Some(crate::store::runs::RunCursor::new(
            last.created_at,
            last.id.clone(),
        ));
        paged.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, whole);
    // A repeated status or job does not repeat runs.
    assert_eq!(
        ids(RunFilter::new()
            .job_name("a")
            .job_name("a")
            .status(RunStatus::Pending)
            .status(RunStatus::Pending)),
        expected
            .iter()
            .rev()
            .filter(|e| e.1 == "a")
            .map(|e| e.0.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_cursor_token_reads_back_and_a_bad_one_is_refused() {
    let cursor = crate::store::runs::RunCursor::new(T0, "01J.with.dots");
    assert_eq!(cursor.token().parse(), Ok(cursor));
    for bad in ["", "12", "x.id", "12.", "1.2"] {
        let parsed = bad.parse::<crate::store::runs::RunCursor>();
        assert_eq!(parsed.is_err(), bad != "1.2", "{bad:?}: {parsed:?}");
    }
}
