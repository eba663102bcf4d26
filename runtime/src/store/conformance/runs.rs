//! The step-job side of the contract ([`RunStore`]): enqueues that honour idempotency and
//! concurrency keys atomically, listings, FIFO claims under leases, writes fenced by the claimed
//! generation, retries, cancels, deletes, purges and counts.

use std::sync::Arc;
use std::time::Duration;

use super::{at, T0};
use crate::store::runs::{
    CancelOutcome, ClaimedRun, DeleteOutcome, EnqueueOutcome, Enqueued, Fence, Finish,
    FinishOutcome, Labels, LogLevel, NewLog, NewRun, NewStep, RunCursor, RunFilter, RunRecord,
    RunStatus, RunStore, StepStatus,
};
use crate::store::Store;
use crate::time::Timestamp;

/// The lease every claim of these checks takes.
const LEASE: Duration = Duration::from_secs(30);

/// A run of `job` with no keys and no labels.
pub(crate) fn new_run(id: &str, job: &str) -> NewRun {
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

/// A run of `job` with the concurrency key `k`.
fn keyed(id: &str, job: &str, coalesce: bool) -> NewRun {
    NewRun {
        concurrency_key: Some("k".into()),
        coalesce,
        ..new_run(id, job)
    }
}

fn created(outcome: EnqueueOutcome) -> Vec<Enqueued> {
    match outcome {
        EnqueueOutcome::Done(done) => done,
        other => panic!("expected success, got {other:?}"),
    }
}

async fn enqueue(store: &dyn Store, runs: Vec<NewRun>, now: Timestamp) -> EnqueueOutcome {
    store.enqueue(runs, now).await.expect("enqueue")
}

/// Creates `run` at `now`; it must be new.
async fn add(store: &dyn Store, run: NewRun, now: Timestamp) -> RunRecord {
    match created(enqueue(store, vec![run], now).await).pop() {
        Some(Enqueued::Created(r)) => r,
        other => panic!("expected created, got {other:?}"),
    }
}

/// A step `name` at `index` ending `status`, with an output if it completed, an error if not.
pub(crate) fn step(name: &str, index: u64, status: StepStatus) -> NewStep {
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

/// The fence of a claimed run, as its worker holds it.
fn fence(run: &ClaimedRun) -> Fence {
    Fence {
        run_id: run.id.clone(),
        generation: run.generation,
        hint: run.hint,
    }
}

/// The fence of `run` with another generation.
fn fence_at(run: &ClaimedRun, generation: u64) -> Fence {
    Fence {
        generation,
        ..fence(run)
    }
}

async fn claim(store: &dyn Store, owner: &str, now: Timestamp, limit: usize) -> Vec<ClaimedRun> {
    store
        .claim(owner, now, now + LEASE, limit)
        .await
        .expect("claim")
        .runs
}

async fn claim_one(store: &dyn Store, owner: &str, now: Timestamp) -> Option<ClaimedRun> {
    claim(store, owner, now, 1).await.pop()
}

async fn run(store: &dyn Store, id: &str) -> RunRecord {
    store.get_run(id).await.expect("get_run").expect("the run")
}

async fn ids(store: &dyn Store, filter: RunFilter) -> Vec<String> {
    store
        .get_runs(filter)
        .await
        .expect("get_runs")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

async fn persist(store: &dyn Store, fence: Fence, step: NewStep) -> bool {
    store
        .persist_step(fence, step, Vec::new())
        .await
        .expect("persist_step")
}

async fn finish(store: &dyn Store, fence: Fence, finish: Finish, now: Timestamp) -> FinishOutcome {
    store
        .finish_run(fence, finish, Vec::new(), false, now)
        .await
        .expect("finish_run")
}

fn completed(output: Option<&str>, steps: u64) -> Finish {
    Finish::Completed {
        output: output.map(str::to_owned),
        completed_step_count: steps,
        current_step_index: steps,
    }
}

/// A new run is pending, at generation 0 and attempt 1, and reads back as it was returned.
pub(crate) async fn enqueue_creates_a_pending_run_with_generation_zero(store: Arc<dyn Store>) {
    let r = add(&*store, new_run("r1", "test-job"), T0).await;
    assert_eq!(
        (r.status, r.lease_generation, r.attempt),
        (RunStatus::Pending, 0, 1)
    );
    let got = run(&*store, "r1").await;
    assert_eq!(got, r);
    assert_eq!(got.labels, Labels::new());
    assert_eq!(store.get_run("missing").await.unwrap(), None);
}

/// A second trigger of a job with the same idempotency key returns the first run (its input,
/// not the new one) and creates nothing; another job's key is its own.
pub(crate) async fn idempotency_key_is_per_job_and_returns_the_original_run(store: Arc<dyn Store>) {
    let mut a = new_run("r1", "job-a");
    a.idempotency_key = Some("k".into());
    add(&*store, a.clone(), T0).await;
    let again = NewRun {
        id: "r2".into(),
        input: r#"{"other":1}"#.into(),
        ..a.clone()
    };
    let out = created(enqueue(&*store, vec![again], at(1)).await);
    assert!(
        matches!(out.as_slice(), [Enqueued::Idempotent(r)] if r.id == "r1" && r.input == r#"{"test":true}"#),
        "{out:?}"
    );
    assert_eq!(store.get_run("r2").await.unwrap(), None);
    let other_job = NewRun {
        id: "r3".into(),
        job_name: "job-b".into(),
        ..a
    };
    let out = created(enqueue(&*store, vec![other_job], T0).await);
    assert!(matches!(out.as_slice(), [Enqueued::Created(_)]), "{out:?}");
}

/// At most one pending run per job and concurrency key: a second conflicts (or coalesces into
/// the first with `coalesce`); once the first is leased a new one may wait; another job with the
/// same key is independent at admission.
pub(crate) async fn one_pending_run_per_job_and_concurrency_key(store: Arc<dyn Store>) {
    add(&*store, keyed("r1", "job", false), T0).await;
    match enqueue(&*store, vec![keyed("r2", "job", false)], T0).await {
        EnqueueOutcome::Conflict { index: 0, existing } => assert_eq!(existing.id, "r1"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(store.get_run("r2").await.unwrap(), None);
    let out = created(enqueue(&*store, vec![keyed("r3", "job", true)], T0).await);
    assert!(
        matches!(out.as_slice(), [Enqueued::Coalesced(r)] if r.id == "r1"),
        "{out:?}"
    );
    claim_one(&*store, "w", T0).await.expect("claimed");
    add(&*store, keyed("r4", "job", false), T0).await;
    assert!(matches!(
        enqueue(&*store, vec![keyed("r5", "job", false)], T0).await,
        EnqueueOutcome::Conflict { .. }
    ));
    add(&*store, keyed("r6", "other", false), T0).await;
}

/// A trigger whose idempotency key matches returns that run even when its concurrency key
/// would conflict.
pub(crate) async fn idempotency_wins_over_a_concurrency_conflict(store: Arc<dyn Store>) {
    let first = NewRun {
        idempotency_key: Some("i".into()),
        ..keyed("r1", "job", false)
    };
    add(&*store, first.clone(), T0).await;
    let again = NewRun {
        id: "r2".into(),
        ..first
    };
    let out = created(enqueue(&*store, vec![again], T0).await);
    assert!(
        matches!(out.as_slice(), [Enqueued::Idempotent(r)] if r.id == "r1"),
        "{out:?}"
    );
}

/// A batch sees the runs created earlier in it (to coalesce with, to be idempotent to), and a
/// conflict anywhere in it leaves nothing written.
pub(crate) async fn batches_are_all_or_nothing_and_see_their_own_runs(store: Arc<dyn Store>) {
    assert_eq!(created(enqueue(&*store, Vec::new(), T0).await), vec![]);
    let out = created(
        enqueue(
            &*store,
            vec![keyed("a", "job", false), keyed("b", "job", true)],
            T0,
        )
        .await,
    );
    assert!(
        matches!(out.as_slice(), [Enqueued::Created(a), Enqueued::Coalesced(b)] if a.id == "a" && b.id == "a"),
        "{out:?}"
    );
    let idem = NewRun {
        idempotency_key: Some("i".into()),
        ..new_run("c", "job")
    };
    let twice = vec![
        idem.clone(),
        NewRun {
            id: "d".into(),
            ..idem
        },
    ];
    let out = created(enqueue(&*store, twice, T0).await);
    assert!(
        matches!(&out[1], Enqueued::Idempotent(r) if r.id == "c"),
        "{out:?}"
    );

    let before = ids(&*store, RunFilter::new()).await;
    let x = |id: &str| NewRun {
        concurrency_key: Some("x".into()),
        ..new_run(id, "job")
    };
    let batch = vec![new_run("e", "job"), x("f"), x("g")];
    assert!(matches!(
        enqueue(&*store, batch, T0).await,
        EnqueueOutcome::Conflict { index: 2, .. }
    ));
    assert_eq!(ids(&*store, RunFilter::new()).await, before);
}

/// Listings are newest first, paged by limit and offset, filtered by jobs (any of), labels
/// (all of) and statuses (any of); an invalid label key is refused.
pub(crate) async fn filters_order_and_paginate(store: Arc<dyn Store>) {
    for i in 1..=10u64 {
        let mut r = new_run(&format!("r{i:02}"), if i % 2 == 0 { "even" } else { "odd" });
        if i <= 3 {
            r.labels.insert("env".into(), "prod".into());
            r.labels
                .insert("app.kubernetes.io/name".into(), format!("app{i}"));
        }
        add(&*store, r, T0 + Duration::from_millis(i)).await;
    }
    let ids = |filter: RunFilter| ids(&*store, filter);
    assert_eq!(ids(RunFilter::new().limit(3)).await, ["r10", "r09", "r08"]);
    assert_eq!(
        ids(RunFilter::new().limit(3).offset(3)).await,
        ["r07", "r06", "r05"]
    );
    assert_eq!(ids(RunFilter::new().limit(3).offset(9)).await, ["r01"]);
    assert_eq!(ids(RunFilter::new().offset(20)).await, Vec::<String>::new());
    assert_eq!(ids(RunFilter::new().offset(8)).await, ["r02", "r01"]);
    assert_eq!(ids(RunFilter::new().job_name("even")).await.len(), 5);
    assert_eq!(
        ids(RunFilter::new().job_name("even").job_name("odd"))
            .await
            .len(),
        10
    );
    assert_eq!(
        ids(RunFilter::new().label("env", "prod")).await,
        ["r03", "r02", "r01"]
    );
    assert_eq!(
        ids(RunFilter::new()
            .label("env", "prod")
            .label("app.kubernetes.io/name", "app2"))
        .await,
        ["r02"]
    );
    claim_one(&*store, "w", at(1)).await.expect("claimed");
    assert_eq!(
        ids(RunFilter::new().status(RunStatus::Leased)).await,
        ["r01"]
    );
    assert_eq!(
        ids(RunFilter::new()
            .status(RunStatus::Pending)
            .status(RunStatus::Leased))
        .await
        .len(),
        10
    );
    assert!(store
        .get_runs(RunFilter::new().label("bad key", "x"))
        .await
        .is_err());
}

/// Keyset pages (after the last run of the previous page, ties on the creation time broken by
/// id) see every run once while the runs already seen are deleted and newer ones created.
pub(crate) async fn keyset_pages_stay_exact_while_runs_are_deleted_and_created(
    store: Arc<dyn Store>,
) {
    for i in 1..=7u64 {
        add(
            &*store,
            new_run(&format!("r{i:02}"), "job"),
            T0 + Duration::from_millis(i),
        )
        .await;
    }
    add(
        &*store,
        new_run("r08a", "job"),
        T0 + Duration::from_millis(8),
    )
    .await;
    add(
        &*store,
        new_run("r08b", "job"),
        T0 + Duration::from_millis(8),
    )
    .await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let mut filter = RunFilter::new().limit(3);
        if let Some(cursor) = cursor.take() {
            filter = filter.before(cursor);
        }
        let runs = store.get_runs(filter).await.expect("get_runs");
        let Some(last) = runs.last() else { break };
        cursor = Some(RunCursor::new(last.created_at, last.id.clone()));
        let last_id = last.id.clone();
        seen.extend(runs.into_iter().map(|r| r.id));
        store.cancel_run(&last_id, T0, true).await.expect("cancel");
        store.delete_run(&last_id).await.expect("delete");
        add(&*store, new_run(&format!("new-{last_id}"), "job"), at(60)).await;
    }
    assert_eq!(
        seen,
        ["r08b", "r08a", "r07", "r06", "r05", "r04", "r03", "r02", "r01"]
    );
}

/// Claims take the oldest run first and lease it; a live lease is not reclaimed, an expired one
/// is, with a new generation and its first start time, before younger pending runs.
pub(crate) async fn claim_leases_fifo_and_keeps_started_at_on_reclaim(store: Arc<dyn Store>) {
    assert!(claim_one(&*store, "w", T0).await.is_none());
    add(&*store, new_run("b", "job"), T0 + Duration::from_millis(1)).await;
    add(&*store, new_run("a", "job"), T0).await;
    let first = claim_one(&*store, "w1", T0).await.expect("claimed");
    assert_eq!(
        (first.id.as_str(), first.generation, first.started_at),
        ("a", 1, T0)
    );
    let got = run(&*store, "a").await;
    assert_eq!(
        (
            got.status,
            got.lease_owner.as_deref(),
            got.completed_step_count
        ),
        (RunStatus::Leased, Some("w1"), 0)
    );
    assert_eq!(got.lease_expires_at, Some(T0 + LEASE));
    let second = claim_one(&*store, "w2", T0).await;
    assert_eq!(second.map(|r| r.id).as_deref(), Some("b"));
    assert!(claim_one(&*store, "w2", at(1)).await.is_none());
    // Both leases lapse at the same time: which is reclaimed first is the backend's choice.
    let later = T0 + LEASE + Duration::from_secs(1);
    let mut again = claim(&*store, "w2", later, 2).await;
    again.sort_by(|x, y| x.id.cmp(&y.id));
    let again: Vec<_> = again
        .iter()
        .map(|r| (r.id.as_str(), r.generation, r.started_at))
        .collect();
    assert_eq!(again, [("a", 2, T0), ("b", 2, T0)]);
}

/// Two workers claiming from one store at the same moment, round after round until no run is
/// left: every run has exactly one winner.
pub(crate) async fn simultaneous_claims_have_one_winner(store: Arc<dyn Store>) {
    let runs = (0..200)
        .map(|i| new_run(&format!("r{i:03}"), "job"))
        .collect();
    assert_eq!(created(enqueue(&*store, runs, T0).await).len(), 200);
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let claimer = |owner: &'static str| {
        let store = Arc::clone(&store);
        let start = Arc::clone(&start);
        tokio::spawn(async move {
            let mut won = Vec::new();
            // Enough rounds for one worker to take every run alone; both always run them all,
            // so neither waits at the barrier for a worker that has stopped.
            for _ in 0..70 {
                start.wait().await;
                let runs = claim(&*store, owner, T0, 3).await;
                won.extend(runs.into_iter().map(|r| r.id));
            }
            won
        })
    };
    let (a, b) = (claimer("w1"), claimer("w2"));
    let (a, b) = (a.await.expect("w1"), b.await.expect("w2"));
    let mut all: Vec<&String> = a.iter().chain(&b).collect();
    all.sort();
    let claimed = all.len();
    all.dedup();
    assert_eq!(all.len(), claimed, "a run was claimed by both workers");
    assert_eq!(claimed, 200);
    assert!(!a.is_empty() && !b.is_empty(), "both workers won some runs");
}

/// A live lease holds its concurrency key across jobs: one claim takes one run per key, and
/// when the holder's lease expires it is reclaimed first while its sibling stays blocked.
pub(crate) async fn a_claim_takes_one_run_per_concurrency_key_across_jobs(store: Arc<dyn Store>) {
    let group = |id: &str, job: &str| NewRun {
        concurrency_key: Some("group-1".into()),
        ..new_run(id, job)
    };
    add(&*store, group("1", "same-key-a"), T0).await;
    add(
        &*store,
        group("2", "same-key-b"),
        T0 + Duration::from_millis(1),
    )
    .await;
    add(&*store, new_run("3", "free"), T0 + Duration::from_millis(2)).await;
    let claimed = |runs: Vec<ClaimedRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(claimed(claim(&*store, "w", T0, 10).await), ["1", "3"]);
    assert!(claim(&*store, "w", T0, 10).await.is_empty());
    let later = T0 + LEASE + Duration::from_secs(1);
    assert_eq!(claimed(claim(&*store, "w2", later, 10).await), ["1", "3"]);
}

/// Persisting a step, setting progress and finishing need the generation the worker claimed:
/// another one is refused and writes nothing, also after the run was reclaimed; the new
/// generation completes the run, which is then neither claimed nor cancelled.
pub(crate) async fn fenced_writes_need_the_claimed_generation(store: Arc<dyn Store>) {
    add(&*store, new_run("a", "job"), T0).await;
    let first = claim_one(&*store, "w1", T0).await.expect("claimed");
    assert!(persist(&*store, fence(&first), step("s1", 0, StepStatus::Completed)).await);
    let wrong = fence_at(&first, first.generation + 1);
    assert!(!persist(&*store, wrong, step("s2", 1, StepStatus::Completed)).await);
    assert_eq!(store.get_steps("a").await.unwrap().len(), 1);

    let progress = |fence, progress: Option<&str>| {
        let store = Arc::clone(&store);
        let progress = progress.map(str::to_owned);
        async move {
            store
                .update_progress(fence, progress, Vec::new(), T0)
                .await
                .expect("update_progress")
        }
    };
    assert!(progress(fence(&first), Some(r#"{"current":1}"#)).await);
    assert!(!progress(fence_at(&first, 9), Some(r#"{"current":2}"#)).await);
    assert_eq!(
        run(&*store, "a").await.progress.as_deref(),
        Some(r#"{"current":1}"#)
    );
    assert!(progress(fence(&first), None).await);
    assert_eq!(run(&*store, "a").await.progress, None);

    let later = T0 + LEASE + Duration::from_secs(1);
    let second = claim_one(&*store, "w2", later).await.expect("reclaimed");
    assert_eq!(second.generation, first.generation + 1);
    let done = completed(Some("1"), 1);
    assert_eq!(
        finish(&*store, fence(&first), done.clone(), later).await,
        FinishOutcome::Refused
    );
    assert!(!persist(&*store, fence(&first), step("s3", 2, StepStatus::Completed)).await);
    assert_eq!(
        finish(&*store, fence(&second), done, later).await,
        FinishOutcome::Completed
    );
    let got = run(&*store, "a").await;
    assert_eq!(
        (
            got.status,
            got.output.as_deref(),
            got.lease_owner.clone(),
            got.completed_at
        ),
        (RunStatus::Completed, Some("1"), None, Some(later))
    );
    let replayed = store.completed_steps("a").await.unwrap();
    assert_eq!(
        replayed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );
    assert!(claim_one(&*store, "w3", later + LEASE * 3).await.is_none());
    assert_eq!(
        store.cancel_run("a", later, false).await.unwrap(),
        CancelOutcome::Terminal(RunStatus::Completed)
    );
}

/// While a run executes, its step counts follow its completed steps (a failed attempt counts
/// for nothing); replay gets the completed steps in order.
pub(crate) async fn step_counts_follow_completed_steps(store: Arc<dyn Store>) {
    add(&*store, new_run("a", "job"), T0).await;
    let claimed = claim_one(&*store, "w", T0).await.expect("claimed");
    let counts = || {
        let store = Arc::clone(&store);
        async move {
            let r = run(&*store, "a").await;
            (r.completed_step_count, r.current_step_index)
        }
    };
    assert_eq!(counts().await, (0, 0));
    assert!(
        persist(
            &*store,
            fence(&claimed),
            step("one", 0, StepStatus::Completed)
        )
        .await
    );
    assert_eq!(counts().await, (1, 1));
    assert!(persist(&*store, fence(&claimed), step("two", 1, StepStatus::Failed)).await);
    assert_eq!(counts().await, (1, 1));
    assert!(
        persist(
            &*store,
            fence(&claimed),
            step("two", 1, StepStatus::Completed)
        )
        .await
    );
    assert!(
        persist(
            &*store,
            fence(&claimed),
            step("three", 2, StepStatus::Completed)
        )
        .await
    );
    assert_eq!(counts().await, (3, 3));
    let replayed = store.completed_steps("a").await.unwrap();
    assert_eq!(
        replayed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let listed = store.get_runs(RunFilter::new()).await.unwrap();
    assert_eq!(listed[0].completed_step_count, 3);
}

/// Renewal extends the live leases of one owner, returning their generations; other owners'
/// leases stay, and an expired lease is not renewed even if nobody reclaimed it.
pub(crate) async fn renewal_extends_live_leases_of_the_owner_only(store: Arc<dyn Store>) {
    add(&*store, new_run("a", "job"), T0).await;
    add(&*store, new_run("b", "job"), T0).await;
    let a = claim_one(&*store, "w1", T0).await.expect("claimed");
    claim_one(&*store, "w2", T0).await.expect("claimed");
    let t = at(10);
    assert_eq!(
        RunStore::renew_leases(&*store, "w1", t, t + LEASE)
            .await
            .unwrap(),
        vec![("a".to_owned(), a.generation)]
    );
    assert_eq!(run(&*store, "a").await.lease_expires_at, Some(t + LEASE));
    assert_eq!(run(&*store, "b").await.lease_expires_at, Some(T0 + LEASE));
    let late = T0 + LEASE * 3;
    assert!(RunStore::renew_leases(&*store, "w2", late, late + LEASE)
        .await
        .unwrap()
        .is_empty());
}

/// A failure with a retry goes back to pending for the next attempt, claimable from its
/// not-before time (reported as due); with a pending sibling of the same key it fails instead.
pub(crate) async fn failing_with_a_retry_goes_back_to_pending_unless_a_sibling_is_pending(
    store: Arc<dyn Store>,
) {
    add(&*store, keyed("a", "job", false), T0).await;
    let first = claim_one(&*store, "w", T0).await.expect("claimed");
    let retry = |attempt, not_before| Finish::Failed {
        error: "boom".into(),
        retry: Some((attempt, not_before)),
    };
    let t = at(5);
    let outcome = store
        .finish_run(fence(&first), retry(2, t), Vec::new(), true, T0)
        .await;
    assert_eq!(outcome.unwrap(), FinishOutcome::Retrying);
    let got = run(&*store, "a").await;
    assert_eq!(
        (
            got.status,
            got.attempt,
            got.not_before,
            got.error.as_deref()
        ),
        (RunStatus::Pending, 2, Some(t), Some("boom"))
    );
    let early = store.claim("w", T0, T0 + LEASE, 5).await.unwrap();
    assert!(early.runs.is_empty());
    assert_eq!(early.next_due, Some(t));
    let second = claim_one(&*store, "w", t).await.expect("due");
    add(&*store, keyed("b", "job", false), t).await;
    let outcome = store
        .finish_run(fence(&second), retry(3, t), Vec::new(), true, t)
        .await;
    assert_eq!(outcome.unwrap(), FinishOutcome::FailedRetryBlocked);
    assert_eq!(run(&*store, "a").await.status, RunStatus::Failed);
}

/// `next_due` reports when another owner's lease expires, and nothing for the owner's own.
pub(crate) async fn next_due_reports_retries_and_foreign_lease_expiries(store: Arc<dyn Store>) {
    assert_eq!(store.next_due("me", T0).await.unwrap(), None);
    add(&*store, new_run("a", "job"), T0).await;
    claim_one(&*store, "other", T0).await.expect("claimed");
    assert_eq!(store.next_due("me", T0).await.unwrap(), Some(T0 + LEASE));
    assert_eq!(store.next_due("other", T0).await.unwrap(), None);
}

/// Active runs cannot be deleted; pending and leased runs can be cancelled (which fences out
/// their worker), terminal ones not; a cancelled run's steps can be cleared and the run deleted.
pub(crate) async fn cancel_and_delete_follow_the_status(store: Arc<dyn Store>) {
    add(&*store, new_run("p", "job"), T0).await;
    add(&*store, new_run("l", "job"), T0 + Duration::from_millis(1)).await;
    assert_eq!(
        store.delete_run("p").await.unwrap(),
        DeleteOutcome::Active(RunStatus::Pending)
    );
    let p = claim_one(&*store, "w", T0).await.expect("p claimed");
    let l = claim_one(&*store, "w", T0).await.expect("l claimed");
    assert_eq!((p.id.as_str(), p.generation), ("p", 1));
    assert_eq!(l.id, "l");
    assert!(persist(&*store, fence(&l), step("s", 0, StepStatus::Completed)).await);
    assert_eq!(
        store.delete_run("l").await.unwrap(),
        DeleteOutcome::Active(RunStatus::Leased)
    );
    let cancelled = store.cancel_run("l", T0, true).await.unwrap();
    assert!(
        matches!(&cancelled, CancelOutcome::Cancelled(r) if r.status == RunStatus::Leased),
        "{cancelled:?}"
    );
    let got = run(&*store, "l").await;
    assert_eq!(
        (got.status, got.completed_at, got.lease_owner),
        (RunStatus::Cancelled, Some(T0), None)
    );
    assert_eq!(
        store.cancel_run("l", T0, true).await.unwrap(),
        CancelOutcome::Terminal(RunStatus::Cancelled)
    );
    assert_eq!(
        store.cancel_run("nope", T0, true).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert!(!persist(&*store, fence(&l), step("t", 1, StepStatus::Completed)).await);
    store
        .delete_cancelled_steps("l".into())
        .await
        .expect("cleanup");
    assert!(store.get_steps("l").await.unwrap().is_empty());
    assert!(matches!(
        store.delete_run("l").await.unwrap(),
        DeleteOutcome::Deleted(_)
    ));
    assert_eq!(
        store.delete_run("l").await.unwrap(),
        DeleteOutcome::NotFound
    );
}

/// Logs persisted with a step read back in order with their data; deleting the run deletes its
/// labels, steps and logs with it, so a run created later with the same id starts bare.
pub(crate) async fn delete_cascades_to_labels_steps_and_logs(store: Arc<dyn Store>) {
    let mut r = new_run("a", "job");
    r.labels.insert("env".into(), "x".into());
    add(&*store, r, T0).await;
    let claimed = claim_one(&*store, "w", T0).await.expect("claimed");
    let log = |id: &str, message: &str, created_at| NewLog {
        id: id.into(),
        step_name: None,
        level: LogLevel::Info,
        message: message.into(),
        data: Some(r#"{"k":"v"}"#.into()),
        created_at,
    };
    let logs = vec![
        log("l1", "first", T0),
        log("l2", "second", T0),
        log("l3", "third", T0 + Duration::from_millis(1)),
    ];
    let persisted = store
        .persist_step(fence(&claimed), step("s", 0, StepStatus::Completed), logs)
        .await;
    assert!(persisted.unwrap());
    let got = store.get_logs("a").await.unwrap();
    assert_eq!(
        got.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    assert_eq!(got[0].data.as_deref(), Some(r#"{"k":"v"}"#));
    assert_eq!(
        finish(&*store, fence(&claimed), completed(None, 1), T0).await,
        FinishOutcome::Completed
    );
    assert!(matches!(
        store.delete_run("a").await.unwrap(),
        DeleteOutcome::Deleted(_)
    ));

    assert_eq!(store.get_run("a").await.unwrap(), None);
    assert!(ids(&*store, RunFilter::new()).await.is_empty());
    assert!(ids(&*store, RunFilter::new().label("env", "x"))
        .await
        .is_empty());
    // Whatever was left of the deleted run would show on a new run with its id.
    let again = add(&*store, new_run("a", "job"), at(1)).await;
    assert_eq!(again.labels, Labels::new());
    assert_eq!(run(&*store, "a").await.labels, Labels::new());
    assert!(store.get_steps("a").await.unwrap().is_empty());
    assert!(store.get_logs("a").await.unwrap().is_empty());
    assert!(store.completed_steps("a").await.unwrap().is_empty());
}

/// Completing with cleanup deletes the run's steps but keeps its step counts.
pub(crate) async fn completion_with_cleanup_deletes_steps_and_logs(store: Arc<dyn Store>) {
    add(&*store, new_run("a", "job"), T0).await;
    let claimed = claim_one(&*store, "w", T0).await.expect("claimed");
    assert!(
        persist(
            &*store,
            fence(&claimed),
            step("s", 0, StepStatus::Completed)
        )
        .await
    );
    let outcome = store
        .finish_run(
            fence(&claimed),
            completed(Some("42"), 1),
            Vec::new(),
            true,
            T0,
        )
        .await;
    assert_eq!(outcome.unwrap(), FinishOutcome::Completed);
    assert!(store.get_steps("a").await.unwrap().is_empty());
    let got = run(&*store, "a").await;
    assert_eq!((got.completed_step_count, got.current_step_index), (1, 1));
}

/// Recovery expires every live lease, so the run is claimed again at once, with a new
/// generation.
pub(crate) async fn recover_expires_every_live_lease(store: Arc<dyn Store>) {
    add(&*store, new_run("a", "job"), T0).await;
    claim_one(&*store, "dead", T0).await.expect("claimed");
    assert_eq!(RunStore::recover(&*store, T0).await.unwrap(), 1);
    let again = claim_one(&*store, "new", T0).await.expect("reclaimed");
    assert_eq!(again.generation, 2);
}

/// A purge deletes terminal runs that ended before the cutoff (of the job asked for, at most
/// the limit at a time) with their steps, and never an active run.
pub(crate) async fn purge_removes_only_old_terminal_runs(store: Arc<dyn Store>) {
    assert_eq!(store.purge_runs(None, T0, 10).await.unwrap(), 0);
    for (i, id) in (0u64..).zip(["a", "b", "cc", "p"]) {
        add(&*store, new_run(id, "job"), T0 + Duration::from_millis(i)).await;
    }
    for _ in 0..3 {
        let r = claim_one(&*store, "w", T0).await.expect("claimed");
        assert!(persist(&*store, fence(&r), step("s", 0, StepStatus::Completed)).await);
        let end = if r.id == "b" {
            Finish::Failed {
                error: "x".into(),
                retry: None,
            }
        } else {
            completed(None, 1)
        };
        assert_ne!(
            finish(&*store, fence(&r), end, T0).await,
            FinishOutcome::Refused
        );
    }
    store.cancel_run("cc", T0, false).await.expect("cancel");
    assert_eq!(
        store.purge_runs(None, T0, 10).await.unwrap(),
        0,
        "a cutoff in the past deletes nothing"
    );
    let future = at(60);
    assert_eq!(store.purge_runs(None, future, 2).await.unwrap(), 2);
    assert_eq!(
        store
            .purge_runs(Some("other-job".into()), future, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.purge_runs(None, future, 10).await.unwrap(), 1);
    assert_eq!(ids(&*store, RunFilter::new()).await, ["p"]);
    for id in ["a", "b", "cc"] {
        assert!(store.get_steps(id).await.unwrap().is_empty(), "{id}");
    }
}

/// Counts per job: runs by status, those failed since a time, and the oldest pending run's
/// creation time.
pub(crate) async fn counts_runs_per_job_and_status(store: Arc<dyn Store>) {
    add(&*store, new_run("p1", "a"), T0).await;
    add(&*store, new_run("p2", "a"), T0 + Duration::from_millis(5)).await;
    add(&*store, new_run("l", "a"), T0 + Duration::from_millis(6)).await;
    add(&*store, new_run("x", "b"), T0 + Duration::from_millis(7)).await;
    let claimed = claim_one(&*store, "w", at(1)).await.expect("claimed");
    assert_eq!(claimed.id, "p1");
    store.cancel_run("x", at(2), true).await.expect("cancel");
    let p2 = claim_one(&*store, "w", at(3)).await.expect("claimed");
    assert_eq!(p2.id, "p2");
    let failed = Finish::Failed {
        error: "boom".into(),
        retry: None,
    };
    let t = at(3);
    let outcome = store
        .finish_run(fence(&p2), failed, Vec::new(), true, t)
        .await;
    assert_eq!(outcome.unwrap(), FinishOutcome::Failed);
    let failed_since = |since| {
        let store = Arc::clone(&store);
        async move { store.count_runs(since).await.expect("count")[0].failed_since }
    };
    assert_eq!(
        (
            failed_since(t).await,
            failed_since(t + Duration::from_millis(1)).await
        ),
        (1, 0)
    );
    add(&*store, new_run("p3", "a"), T0 + Duration::from_millis(9)).await;
    let counts = store.count_runs(T0).await.unwrap();
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

/// Listings are newest first, whatever mix of statuses and jobs they name, and a cursor
/// continues exactly after the run it names; a time range keeps the runs created inside it.
pub(crate) async fn runs_are_listed_newest_first_with_cursors(store: Arc<dyn Store>) {
    for i in 0..6u64 {
        let job = if i % 2 == 0 { "even" } else { "odd" };
        store
            .enqueue(vec![new_run(&format!("r{i}"), job)], at(i))
            .await
            .unwrap();
    }
    store.cancel_run("r2", at(10), true).await.unwrap();
    let ids = |runs: Vec<RunRecord>| -> Vec<String> { runs.into_iter().map(|r| r.id).collect() };
    let all = ids(store.get_runs(RunFilter::new()).await.unwrap());
    assert_eq!(all, ["r5", "r4", "r3", "r2", "r1", "r0"]);
    let even = RunFilter::new()
        .job_name("even")
        .status(RunStatus::Pending)
        .status(RunStatus::Cancelled);
    assert_eq!(
        ids(store.get_runs(even.clone()).await.unwrap()),
        ["r4", "r2", "r0"]
    );
    let after_r4 = even.limit(1).before(RunCursor::new(at(4), "r4"));
    assert_eq!(ids(store.get_runs(after_r4).await.unwrap()), ["r2"]);
    let window = RunFilter::new().created_since(at(1)).created_until(at(3));
    assert_eq!(ids(store.get_runs(window).await.unwrap()), ["r2", "r1"]);
}

/// A listing by label pages like any other: newest first with ties by id, after a cursor,
/// inside a time range, with a status, a job and a second label checked on each run, and
/// the runs without the label (or with another value) left out.
pub(crate) async fn label_listings_page_with_cursors_and_ranges(store: Arc<dyn Store>) {
    // Two runs at each instant, so the cursor's tie-break by id is exercised.
    for i in 0..8u64 {
        let mut r = new_run(&format!("r{i}"), if i % 2 == 0 { "even" } else { "odd" });
        if i != 5 {
            r.labels
                .insert("env".into(), if i == 6 { "dev" } else { "prod" }.into());
        }
        if i % 3 == 0 {
            r.labels.insert("tier".into(), "gold".into());
        }
        add(&*store, r, at(i / 2)).await;
    }
    store.cancel_run("r3", at(10), true).await.unwrap();
    let ids = |filter: RunFilter| ids(&*store, filter);
    let prod = RunFilter::new().label("env", "prod");
    assert_eq!(
        ids(prod.clone()).await,
        ["r7", "r4", "r3", "r2", "r1", "r0"]
    );
    let page = prod.clone().limit(2).before(RunCursor::new(at(2), "r4"));
    assert_eq!(ids(page).await, ["r3", "r2"]);
    let page = prod.clone().limit(2).before(RunCursor::new(at(1), "r3"));
    assert_eq!(ids(page).await, ["r2", "r1"]);
    let window = prod.clone().created_since(at(1)).created_until(at(3));
    assert_eq!(ids(window).await, ["r4", "r3", "r2"]);
    assert_eq!(ids(prod.clone().status(RunStatus::Cancelled)).await, ["r3"]);
    assert_eq!(ids(prod.clone().job_name("even")).await, ["r4", "r2", "r0"]);
    assert_eq!(ids(prod.clone().label("tier", "gold")).await, ["r3", "r0"]);
    assert_eq!(ids(prod.limit(2).offset(4)).await, ["r1", "r0"]);
    assert_eq!(ids(RunFilter::new().label("env", "dev")).await, ["r6"]);
}
