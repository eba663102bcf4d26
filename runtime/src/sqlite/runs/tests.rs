//! What is SQLite's own in the run store: the timestamp text, the rowid a claim hands out as
//! the fence's hint, claims racing on two connections to one file, the schema and its indexes,
//! and statement caching. The contract every backend keeps is checked by the conformance suite
//! (`store::conformance::runs`), which runs on this store in both ownership modes.

use std::time::Duration;

use rusqlite::Connection;

use super::codec::{format_ts, parse_ts};
use super::*;
use crate::store::runs::{EnqueueOutcome, Enqueued, Fence, Finish, FinishOutcome, NewRun, NewStep};
use crate::store::runs::{Labels, RunStatus, StepStatus};
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

fn add(conn: &Connection, run: NewRun, at: Timestamp) -> RunRecord {
    match enqueue(conn, &[run], at).expect("enqueue") {
        EnqueueOutcome::Done(mut done) => match done.pop() {
            Some(Enqueued::Created(r)) => r,
            other => panic!("expected created, got {other:?}"),
        },
        other => panic!("expected success, got {other:?}"),
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

/// The conformance suite races two claims through one store, whose writer thread takes them
/// in turn; here each worker has a connection of its own, so the claims race on the file's
/// lock, as the claims of several processes sharing the file do.
#[test]
fn claims_on_two_connections_to_one_file_have_one_winner() {
    let (dir, c) = db();
    for i in 0..200 {
        add(&c, new_run(&format!("r{i:03}"), "job"), T0);
    }
    drop(c);
    // Two workers claim at the same moment, round after round, until no run is left: every run
    // has exactly one winner.
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
fn schema_is_idempotent_and_has_the_named_indexes() {
    let (_d, c) = db();
    c.execute_batch(&super::schema_after_migrations())
        .expect("again");
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_durably_%' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for expected in [
        "idx_durably_logs_run_created",
        "idx_durably_run_labels_key_value",
        "idx_durably_run_labels_pk",
        "idx_durably_runs_job_created",
        "idx_durably_runs_job_idempotency",
        "idx_durably_runs_pending_concurrency",
        "idx_durably_runs_status_completed",
        "idx_durably_runs_status_concurrency",
        "idx_durably_runs_status_created",
        "idx_durably_runs_status_lease_expires",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Migration 4 dropped it.
    assert!(!names
        .iter()
        .any(|n| n == "idx_durably_steps_completed_unique"));
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
