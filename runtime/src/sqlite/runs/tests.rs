//! What is SQLite's own in the run store: the timestamp text, the rowid a claim hands out as
//! the fence's hint, claims racing on two connections to one file, the schema and its indexes,
//! statement caching, and the query plans and costs of run listings. The contract every backend keeps is checked by the conformance suite
//! (`store::conformance::runs`), which runs on this store in both ownership modes.

use std::time::Duration;

use rusqlite::Connection;

use super::codec::{format_ts, parse_ts};
use super::*;
use crate::store::conformance::runs::{new_run, step};
use crate::store::runs::{EnqueueOutcome, Enqueued, Fence, Finish, FinishOutcome, NewRun};
use crate::store::runs::{RunFilter, RunStatus, StepStatus};
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

fn add(conn: &Connection, run: NewRun, at: Timestamp) -> RunRecord {
    match enqueue(conn, &[run], at).expect("enqueue") {
        EnqueueOutcome::Done(mut done) => match done.pop() {
            Some(Enqueued::Created(r)) => r,
            other => panic!("expected created, got {other:?}"),
        },
        other => panic!("expected success, got {other:?}"),
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
        "idx_durably_runs_ended",
        "idx_durably_runs_job_ended",
        "idx_durably_runs_job_idempotency",
        "idx_durably_runs_pending",
        "idx_durably_runs_pending_concurrency",
        "idx_durably_runs_status_concurrency",
        "idx_durably_runs_status_lease_expires",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Migration 4 dropped the first, migration 6 the next four, migration 7 the last two.
    for dropped in [
        "idx_durably_steps_completed_unique",
        "idx_durably_runs_job_created",
        "idx_durably_runs_status_completed",
        "idx_durably_runs_status_created",
        "idx_durably_run_labels_key_value",
        "idx_durably_runs_listed",
        "idx_durably_runs_job_listed",
    ] {
        assert!(
            !names.iter().any(|n| n == dropped),
            "{dropped} in {names:?}"
        );
    }
    // And the virtual column only they used: it was computed on every write of a run.
    let listed: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_xinfo('durably_runs') WHERE name = 'listed_status'",
            [],
            |r| r.get(0),
        )
        .expect("columns");
    assert_eq!(listed, 0);
}

/// The ended indexes hold the runs with an end time, so every way a run ends must set it and
/// nothing else may: a run missing from them is missing from every listing of its status.
#[test]
fn every_end_and_nothing_else_enters_the_ended_indexes() {
    let (_d, c) = db();
    let held = ["done", "failed", "leased", "retried", "stopped"];
    for id in held {
        add(&c, new_run(id, "job"), T0);
    }
    let claimed = claim(&c, "w", T0, T0 + LEASE, held.len())
        .expect("claim")
        .runs;
    assert_eq!(claimed.len(), held.len());
    let fence = |id: &str| {
        let run = claimed.iter().find(|r| r.id == id).expect("claimed");
        Fence {
            run_id: run.id.clone(),
            generation: run.generation,
            hint: run.hint,
        }
    };
    add(&c, new_run("pending", "job"), T0);
    add(&c, new_run("withdrawn", "job"), T0);
    let later = T0 + Duration::from_secs(1);
    let completed = Finish::Completed {
        output: Some("1".into()),
        completed_step_count: 0,
        current_step_index: 0,
    };
    let finish = |id: &str, how: &Finish| {
        finish_run(&c, &fence(id), how, &[], false, later).expect("finish")
    };
    assert_eq!(finish("done", &completed), FinishOutcome::Completed);
    let failed = |retry| Finish::Failed {
        error: "boom".into(),
        retry,
    };
    assert_eq!(finish("failed", &failed(None)), FinishOutcome::Failed);
    assert_eq!(
        finish("retried", &failed(Some((2, later)))),
        FinishOutcome::Retrying
    );
    // A leased run reporting progress and renewing its lease has not ended.
    assert!(update_progress(&c, &fence("leased"), Some("{}"), &[], later).expect("progress"));
    assert_eq!(
        renew_leases(&c, "w", later, later + LEASE)
            .expect("renew")
            .len(),
        2
    );
    for id in ["stopped", "withdrawn"] {
        assert!(matches!(
            cancel_run(&c, id, later, false).expect("cancel"),
            crate::store::runs::CancelOutcome::Cancelled(_)
        ));
    }
    let ids = |sql: &str| -> Vec<String> {
        c.prepare(sql)
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let ended = ["done", "failed", "stopped", "withdrawn"];
    assert_eq!(
        ids("SELECT id FROM durably_runs
              WHERE status IN ('completed', 'failed', 'cancelled') ORDER BY id"),
        ended
    );
    for index in ["idx_durably_runs_ended", "idx_durably_runs_job_ended"] {
        assert_eq!(
            ids(&format!(
                "SELECT id FROM durably_runs INDEXED BY {index}
                  WHERE completed_at IS NOT NULL ORDER BY id"
            )),
            ended,
            "{index}"
        );
    }
    assert_eq!(
        ids("SELECT completed_at FROM durably_runs WHERE completed_at IS NOT NULL"),
        vec![format_ts(later); 4]
    );
}

/// The claim reads pending runs oldest first through the pending-only index, in its order:
/// no sort, and no other run read.
#[test]
fn the_claim_reads_the_pending_index_in_order() {
    let (_d, c) = db();
    let steps = plan(&c, &claim_pending_sql());
    let all = steps.join("\n");
    assert!(
        steps
            .first()
            .is_some_and(|s| s == "SEARCH r USING INDEX idx_durably_runs_pending (status=?)"),
        "{all}"
    );
    assert!(!all.contains("TEMP B-TREE"), "{all}");
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

#[test]
fn a_cursor_token_reads_back_and_a_bad_one_is_refused() {
    let cursor = crate::store::runs::RunCursor::new(T0, "01J.with.dots");
    assert_eq!(cursor.token().parse(), Ok(cursor));
    for bad in ["", "12", "x.id", "12.", "1.2"] {
        let parsed = bad.parse::<crate::store::runs::RunCursor>();
        assert_eq!(parsed.is_err(), bad != "1.2", "{bad:?}: {parsed:?}");
    }
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
        // A keyset page below every other run.
        RunFilter::new()
            .before(crate::store::runs::RunCursor::new(
                T0 + Duration::from_secs(1),
                "",
            ))
            .limit(10),
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
fn every_run_listing_reads_index_ranges_and_never_walks_the_table() {
    let (_d, c) = db();
    let pending = "idx_durably_runs_pending (status=?";
    let ended = "idx_durably_runs_ended (status=?";
    let job_ended = "idx_durably_runs_job_ended (job_name=? AND status=?";
    let leased = "idx_durably_runs_status_lease_expires (status=?)";
    let label = "idx_durably_run_labels_listed (key=? AND value=?)";
    let cursor = crate::store::runs::RunCursor::new(T0, "r1");
    for (what, filter, indexes) in [
        (
            "every run",
            RunFilter::new().limit(50),
            &[pending, leased, ended][..],
        ),
        (
            "one ended status",
            RunFilter::new().status(RunStatus::Failed).limit(50),
            &[ended],
        ),
        (
            "two statuses",
            RunFilter::new()
                .status(RunStatus::Pending)
                .status(RunStatus::Failed)
                .limit(50),
            &[pending, ended],
        ),
        (
            "pending runs",
            RunFilter::new().status(RunStatus::Pending).limit(50),
            &[pending],
        ),
        (
            "one job",
            RunFilter::new().job_name("a").limit(50),
            &[pending, leased, job_ended],
        ),
        (
            "a job's failed runs",
            RunFilter::new()
                .job_name("a")
                .status(RunStatus::Failed)
                .limit(50),
            &[job_ended],
        ),
        (
            "a job's pending runs",
            RunFilter::new()
                .job_name("a")
                .status(RunStatus::Pending)
                .limit(50),
            &[pending],
        ),
        (
            "a time range",
            RunFilter::new()
                .created_since(T0)
                .created_until(T0 + Duration::from_secs(3600))
                .limit(50),
            &[pending, leased, ended],
        ),
        (
            "a keyset page",
            RunFilter::new()
                .status(RunStatus::Completed)
                .before(cursor.clone())
                .limit(50),
            &[ended],
        ),
        (
            "an offset page",
            RunFilter::new()
                .status(RunStatus::Cancelled)
                .limit(50)
                .offset(200),
            &[ended],
        ),
        (
            "a label",
            RunFilter::new()
                .label("tenant", "acme")
                .status(RunStatus::Failed)
                .limit(50),
            &[label],
        ),
        (
            "no limit",
            RunFilter::new().status(RunStatus::Cancelled),
            &[ended],
        ),
        // Leased runs, as many as the workers hold, are sorted.
        (
            "leased runs",
            RunFilter::new().status(RunStatus::Leased).limit(50),
            &[leased],
        ),
    ] {
        let statements = statements_run_by(&c, |c| {
            get_runs(c, &filter).expect("get_runs");
        });
        assert_eq!(statements.len(), 1, "{what}: {statements:?}");
        let steps = plan(&c, &statements[0]);
        let all = steps.join("\n");
        for index in indexes {
            assert!(
                steps.iter().any(|s| s.contains(index)),
                "{what}: expected {index} in\n{all}"
            );
        }
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
                    indexes.iter().any(|index| step.contains(index))
                        || step.contains("INTEGER PRIMARY KEY (rowid=?)")
                        || step.contains("sqlite_autoindex_durably_runs_1 (id=?)"),
                    "{what}: runs searched by another index in\n{all}"
                );
            }
        }
    }
}

/// The pruner reads each ended status from its oldest run through an ended index, one job's
/// through the job's: no scan of the runs, no sort, and no run of another status read.
#[test]
fn the_pruner_reads_ended_runs_through_the_ended_indexes() {
    let (_d, c) = db();
    for (job, index) in [
        (None, "idx_durably_runs_ended (status=? AND created_at<?)"),
        (
            Some("a"),
            "idx_durably_runs_job_ended (job_name=? AND status=? AND created_at<?)",
        ),
    ] {
        let statements = statements_run_by(&c, |c| {
            purge_runs(c, job, T0, 100).expect("purge");
        });
        let selects: Vec<&String> = statements
            .iter()
            .filter(|s| s.trim_start().starts_with("SELECT"))
            .collect();
        assert_eq!(selects.len(), 3, "one per ended status: {statements:?}");
        for select in selects {
            let steps = plan(&c, select);
            let all = steps.join("\n");
            assert_eq!(steps.len(), 1, "{job:?}: {all}");
            assert!(
                steps[0].contains(index),
                "{job:?}: expected {index} in\n{all}"
            );
        }
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
