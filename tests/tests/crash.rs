//! Crashes of a real process: a child (`crash_child`) runs jobs on a database file and is
//! killed with `SIGKILL`; the test then opens the same file and checks that everything the
//! child's engine acknowledged is there, in both synchronous modes: inside a step, during a
//! stream of `add`s, inside a continuous run, a debounce flush and a task `execute` fired by
//! their alarms, and with a retry pending. (`kill.rs` kills a mixed load at random moments.)

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::RunStatus;
use durable_jobs::testing::TestClock;
use durable_jobs::{ContinuousState, Engine};
use durable_jobs_tests::crash::{
    tally_instance, CrashBatch, CrashJobs, CrashRetrier, CrashTask, CrashTicker, Ledger, Tally,
    Witness, LEDGER_STEPS, TALLY_CALLERS, TALLY_INSTANCES,
};

/// How long a child may take to print its next line (it prints within milliseconds; this only
/// bounds a broken child).
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `crash_child` and the lines it printed so far.
struct Victim {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Victim {
    fn spawn(db: &Path, scenario: &str, synchronous: Synchronous) -> Victim {
        let sync = match synchronous {
            Synchronous::Full => "full",
            _ => "normal",
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_child"))
            .arg(db)
            .arg(scenario)
            .arg(sync)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Victim { child, lines }
    }

    /// The next line the child printed.
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "the child printed nothing more ({e}); exit: {:?}",
                    self.child.wait()
                );
            }
        }
    }

    /// `SIGKILL`, then every line it printed before dying.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("the child is killed");
        let status = self.child.wait().expect("the child is reaped");
        assert!(!status.success(), "the child was killed, not finished");
        // The reader thread ends at the end of the pipe, after the lines written before the kill.
        self.lines.into_iter().collect()
    }
}

/// An engine of this process on the file the child died on, and what its jobs do here.
async fn reopen(db: &Path, synchronous: Synchronous) -> (Engine<CrashJobs>, Arc<Witness>) {
    let witness = Arc::<Witness>::default();
    let engine = Engine::<CrashJobs>::builder()
        .sqlite(db)
        .synchronous(synchronous)
        .app(witness.clone())
        .start()
        .await
        .expect("the file reopens after the crash");
    (engine, witness)
}

/// An engine on a test clock at 2026-01-01, long before every alarm the child stored: it runs
/// nothing, so what it reads is what the file holds.
async fn inspect(db: &Path) -> Engine<CrashJobs> {
    Engine::<CrashJobs>::builder()
        .sqlite(db)
        .clock(TestClock::new())
        .app(Arc::<Witness>::default())
        .start()
        .await
        .expect("the file opens")
}

/// Kills the child of `scenario` once it printed `until`; returns every line it printed.
fn kill_at(db: &Path, scenario: &str, synchronous: Synchronous, until: &str) -> Vec<String> {
    let mut victim = Victim::spawn(db, scenario, synchronous);
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some(until) {
        lines.push(victim.next_line());
    }
    lines.extend(victim.kill());
    lines
}

/// Runs the file on the system clock until this process entered `step`, then shuts down
/// (which waits for that execution to commit).
async fn run_until_entered(db: &Path, synchronous: Synchronous, step: &str) {
    let (engine, witness) = reopen(db, synchronous).await;
    assert!(
        witness.until_entered(step, 1, PATIENCE).await,
        "{step} did not run again after the restart"
    );
    engine.shutdown().await.unwrap();
}

/// Killed inside a continuous run fired by its alarm: nothing of the run was committed, and the
/// alarm, still due, fires again at the next start.
async fn killed_inside_a_scheduled_run_runs_it_again_at_start(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let lines = kill_at(&db, "continuous", synchronous, "entered tick");
    assert_eq!(lines[0], "acked start Running");

    let engine = inspect(&db).await;
    let tickers = engine.client().continuous::<CrashTicker>();
    let status = tickers.status("ticker").await.unwrap();
    assert_eq!(
        (status.run_count, status.status),
        (0, ContinuousState::Running)
    );
    assert!(
        status.next_run_at.is_some(),
        "the run's alarm is still there"
    );
    assert_eq!(tickers.get_state("ticker").await.unwrap(), Some(0));
    engine.shutdown().await.unwrap();

    run_until_entered(&db, synchronous, "tick").await;
    let engine = inspect(&db).await;
    let tickers = engine.client().continuous::<CrashTicker>();
    let runs = tickers.get_state("ticker").await.unwrap().unwrap();
    assert!(runs >= 1);
    assert_eq!(tickers.status("ticker").await.unwrap().run_count, runs);
    engine.shutdown().await.unwrap();
}

/// Killed inside a flush fired by its alarm: the batch, all three events, is still there, and
/// is flushed at the next start.
async fn killed_inside_a_flush_flushes_the_whole_batch_at_start(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let lines = kill_at(&db, "flush", synchronous, "entered flush-3");
    assert_eq!(lines[..3], ["acked 0", "acked 1", "acked 2"]);

    let engine = inspect(&db).await;
    let batches = engine.client().debounce::<CrashBatch>();
    assert_eq!(
        batches.get_state("batch").await.unwrap(),
        Some(vec![0, 1, 2])
    );
    engine.shutdown().await.unwrap();

    run_until_entered(&db, synchronous, "flush-3").await;
    let engine = inspect(&db).await;
    let batches = engine.client().debounce::<CrashBatch>();
    assert!(batches.status("batch").await.unwrap().is_not_found());
    engine.shutdown().await.unwrap();
}

/// Killed inside a task `execute` fired by its schedule: the schedule is still there and fires
/// at the next start; the execution is counted once.
async fn killed_inside_a_task_execution_runs_it_again_at_start(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let lines = kill_at(&db, "task", synchronous, "entered task-execute");
    assert_eq!(lines[0], "acked send");

    let engine = inspect(&db).await;
    let tasks = engine.client().task::<CrashTask>();
    let status = tasks.status("task").await.unwrap();
    assert_eq!(status.execute_count, 0);
    assert!(status.scheduled_at.is_some(), "the schedule is still there");
    assert_eq!(tasks.get_state("task").await.unwrap(), Some(0));
    engine.shutdown().await.unwrap();

    run_until_entered(&db, synchronous, "task-execute").await;
    let engine = inspect(&db).await;
    let tasks = engine.client().task::<CrashTask>();
    let status = tasks.status("task").await.unwrap();
    assert_eq!((status.execute_count, status.scheduled_at), (1, None));
    assert_eq!(tasks.get_state("task").await.unwrap(), Some(1));
    engine.shutdown().await.unwrap();
}

/// Killed with a retry pending: the retry, written with the failure, survives and runs on the
/// system clock after the restart.
async fn killed_with_a_retry_pending_retries_after_the_restart(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    kill_at(&db, "retry", synchronous, "acked start Retrying");

    let engine = inspect(&db).await;
    let retrier = engine.client().continuous::<CrashRetrier>();
    let status = retrier.status("retrier").await.unwrap();
    assert_eq!(
        (status.status, status.attempt),
        (ContinuousState::Retrying, 2)
    );
    assert!(status.next_run_at.is_some());
    assert_eq!(retrier.get_state("retrier").await.unwrap(), Some(0));
    engine.shutdown().await.unwrap();

    run_until_entered(&db, synchronous, "retry").await;
    let engine = inspect(&db).await;
    let retrier = engine.client().continuous::<CrashRetrier>();
    let status = retrier.status("retrier").await.unwrap();
    assert_eq!(
        (status.status, status.run_count),
        (ContinuousState::Running, 1)
    );
    assert_eq!(retrier.get_state("retrier").await.unwrap(), Some(1));
    engine.shutdown().await.unwrap();
}

/// The child's run is killed inside step `two`, after step `one` was acknowledged: the run
/// resumes in this process at `two`, and `one` is not executed again.
async fn killed_inside_a_step_resumes_after_the_last_acknowledged_one(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut victim = Victim::spawn(&db, "steps", synchronous);
    let mut run_id = None;
    let mut entered = Vec::new();
    // The worker may enter the steps before `trigger` returns and the child prints the id.
    while run_id.is_none() || entered.last().map(String::as_str) != Some("two") {
        let line = victim.next_line();
        if let Some(id) = line.strip_prefix("run ") {
            run_id = Some(id.to_owned());
        } else if let Some(step) = line.strip_prefix("entered ") {
            entered.push(step.to_owned());
        }
    }
    // Step `two` starts only once `one` is acknowledged, so killing now must keep `one`.
    victim.kill();
    assert_eq!(entered, ["one", "two"]);
    let run_id = run_id.expect("the loop ends only once the child printed its run id");

    let (engine, witness) = reopen(&db, synchronous).await;
    let run = engine
        .client()
        .step_job::<Ledger>()
        .wait_for_run(&run_id, Some(PATIENCE))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        run.output.unwrap(),
        ["crash", "one-done", "two-done", "three-done"]
    );
    let resumed: Vec<u32> = LEDGER_STEPS.iter().map(|s| witness.entered(s)).collect();
    assert_eq!(
        resumed,
        [0, 1, 1],
        "only the unacknowledged steps ran again"
    );
    engine.shutdown().await.unwrap();
}

/// Eight callers add to four debounce instances until the child is killed: every add that
/// returned is in its batch after the reopen, and no number is in a batch twice.
async fn killed_while_adding_keeps_every_acknowledged_event(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut victim = Victim::spawn(&db, "debounce", synchronous);
    let mut acked = HashSet::new();
    while acked.len() < 2_000 {
        if let Some(n) = victim.next_line().strip_prefix("acked ") {
            acked.insert(n.parse::<u64>().unwrap());
        }
    }
    for line in victim.kill() {
        if let Some(n) = line.strip_prefix("acked ") {
            acked.insert(n.parse::<u64>().unwrap());
        }
    }

    let (engine, _) = reopen(&db, synchronous).await;
    let tally = engine.client().debounce::<Tally>();
    let mut stored = HashSet::new();
    for i in 0..TALLY_INSTANCES {
        let numbers = tally.get_state(&format!("tally-{i}")).await.unwrap();
        let numbers = numbers.expect("every instance got adds before the kill");
        for n in numbers {
            assert_eq!(tally_instance(n), format!("tally-{i}"));
            assert!(stored.insert(n), "{n} is stored twice");
        }
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged adds lost: {lost:?}");
    // Adds in flight at the kill may have committed without being acknowledged, never more
    // than one per caller.
    assert!(stored.len() - acked.len() <= TALLY_CALLERS as usize);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_killed_inside_a_step_resumes_after_the_last_acknowledged_one() {
    killed_inside_a_step_resumes_after_the_last_acknowledged_one(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_step_run_killed_inside_a_step_resumes_after_the_last_acknowledged_one(
) {
    killed_inside_a_step_resumes_after_the_last_acknowledged_one(Synchronous::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_adding_keeps_every_acknowledged_event() {
    killed_while_adding_keeps_every_acknowledged_event(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_process_killed_while_adding_keeps_every_acknowledged_event() {
    killed_while_adding_keeps_every_acknowledged_event(Synchronous::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_inside_a_scheduled_continuous_run_runs_it_again_at_start() {
    killed_inside_a_scheduled_run_runs_it_again_at_start(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_process_killed_inside_a_scheduled_continuous_run_runs_it_again_at_start(
) {
    killed_inside_a_scheduled_run_runs_it_again_at_start(Synchronous::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_inside_a_debounce_flush_flushes_the_whole_batch_at_start() {
    killed_inside_a_flush_flushes_the_whole_batch_at_start(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_process_killed_inside_a_debounce_flush_flushes_the_whole_batch_at_start(
) {
    killed_inside_a_flush_flushes_the_whole_batch_at_start(Synchronous::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_inside_a_task_execution_runs_it_again_at_start() {
    killed_inside_a_task_execution_runs_it_again_at_start(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_process_killed_inside_a_task_execution_runs_it_again_at_start() {
    killed_inside_a_task_execution_runs_it_again_at_start(Synchronous::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_with_a_retry_pending_retries_after_the_restart() {
    killed_with_a_retry_pending_retries_after_the_restart(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_a_process_killed_with_a_retry_pending_retries_after_the_restart() {
    killed_with_a_retry_pending_retries_after_the_restart(Synchronous::Full).await;
}
