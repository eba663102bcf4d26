//! Several processes on one SQLite file in shared mode: real child processes (`mp_child`,
//! `kill_child`) opening the same file, killed with real signals.
//!
//! - The file locks: shared stores open beside each other; an exclusive store and a shared one
//!   refuse each other, with a typed error saying how the other holds the file.
//! - A step run triggered in one process is executed by another, and `trigger_and_wait` in the
//!   first sees its end.
//! - A continuous job with two processes running it executes each run once.
//! - A process killed while it holds leases (a step run, an alarm execution): the other takes
//!   the work over once the leases lapse, and finishes it.
//! - Three processes under the kill harness's mixed load, killed at random and started again
//!   (`DURABLE_JOBS_SHARED_KILLS=N` kills, 12 by default; `DURABLE_JOBS_KILL_SEED=S` replays a
//!   run): nothing acknowledged is lost, no completed step runs again, and no instance or run
//!   is executed by two processes at once, which the jobs themselves check with markers.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use durable_jobs_tests::kill::harness::{env_number, processes_survive_random_kills, Db};
use durable_jobs_tests::multiprocess::{tick_file, Proc};

fn child(role: &str, db: &Path, dir: &Path, arg: Option<&str>) -> Proc {
    let mut args: Vec<&OsStr> = vec![OsStr::new(role), db.as_os_str(), dir.as_os_str()];
    if let Some(arg) = arg {
        args.push(OsStr::new(arg));
    }
    Proc::spawn(env!("CARGO_BIN_EXE_mp_child").as_ref(), &args)
}

#[test]
fn shared_stores_open_together_and_an_exclusive_one_refuses_them_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut first = child("open", &db, dir.path(), Some("shared"));
    assert_eq!(first.expect(""), "opened");
    let mut second = child("open", &db, dir.path(), Some("shared"));
    assert_eq!(second.expect(""), "opened", "a second shared store opens");
    let mut exclusive = child("open", &db, dir.path(), Some("exclusive"));
    assert_eq!(exclusive.expect(""), "refused in-use shared");
    exclusive.close();
    first.close();
    let mut exclusive = child("open", &db, dir.path(), Some("exclusive"));
    assert_eq!(
        exclusive.expect(""),
        "refused in-use shared",
        "one shared store left is enough to refuse"
    );
    exclusive.close();
    second.close();

    let mut exclusive = child("open", &db, dir.path(), Some("exclusive"));
    assert_eq!(exclusive.expect(""), "opened");
    let mut shared = child("open", &db, dir.path(), Some("shared"));
    assert_eq!(shared.expect(""), "refused in-use exclusive");
    shared.close();
    exclusive.close();
}

#[test]
fn a_run_triggered_in_one_process_is_run_by_another_and_its_end_seen_by_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    // Its only slot busy, the first process cannot run the echo itself.
    let mut a = child("blocked-trigger", &db, dir.path(), None);
    a.expect("blocked");
    let mut b = child("worker", &db, dir.path(), None);
    b.expect("ready");
    a.tell("go");
    let echo = a.expect("echo ");
    assert_eq!(echo, format!("echo hello by {}", b.pid()));
}

#[test]
fn with_two_processes_a_continuous_job_runs_once_per_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut a = child("ticker", &db, dir.path(), None);
    let mut b = child("ticker", &db, dir.path(), None);
    a.expect("ready");
    b.expect("ready");
    // Twelve runs, 250 ms apart: each creates its file once, or its job says `unexpected`.
    // Two more are waited for, so that the twelfth has said so by then.
    let runs = 12;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tick_file(dir.path(), runs + 2).exists() {
        assert!(
            Instant::now() < deadline,
            "run {runs} never came: {:?} {:?}",
            a.drain(),
            b.drain()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a_lines = a.drain().to_vec();
    let b_lines = b.drain().to_vec();
    let mut ticks = Vec::new();
    for line in a_lines.iter().chain(&b_lines) {
        assert!(!line.contains("unexpected"), "{line}");
        if let Some(rest) = line.strip_prefix("tick ") {
            ticks.push(rest.split(' ').next().unwrap().parse::<u64>().unwrap());
        }
    }
    let distinct: HashSet<u64> = ticks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "a run executed twice: {ticks:?}"
    );
    for run in 1..=runs {
        assert!(distinct.contains(&run), "run {run} missing: {ticks:?}");
    }
}

#[test]
fn a_killed_process_s_leases_are_taken_over_once_they_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut holder = child("holder", &db, dir.path(), None);
    let run = holder.expect("hang-run ");
    let run_id = run.trim_start_matches("hang-run ").to_owned();
    // Both executions hang in the holder, which holds their leases.
    holder.expect("hang-enter");
    let held = holder.expect("hold-enter ");
    assert_eq!(held, format!("hold-enter 1 {}", holder.pid()));
    let mut other = child("takeover", &db, dir.path(), Some(&run_id));
    other.expect("ready");
    holder.kill();
    let pid = other.pid();
    // The run the holder was executing: ended by the other, nothing of it lost.
    assert_eq!(other.expect("hang-done "), format!("hang-done {pid}"));
    assert_eq!(
        other.expect("run-completed "),
        format!("run-completed Some({pid})")
    );
    // The alarm execution the holder was in the middle of: its run, made again, is the first.
    assert_eq!(other.expect("hold-run "), format!("hold-run 1 {pid}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_random_kills() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::File(dir.path().join("jobs.db"));
    let kills = env_number("DURABLE_JOBS_SHARED_KILLS").unwrap_or(12);
    processes_survive_random_kills(
        env!("CARGO_BIN_EXE_kill_child").as_ref(),
        &db,
        dir.path(),
        kills,
        None,
    )
    .await;
}
