//! Crashes of a real process: a child (`crash_child`) runs jobs on a database file and is
//! killed with `SIGKILL`; the test then opens the same file and checks that everything the
//! child's engine acknowledged is there, in both synchronous modes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use durable_jobs::steps::RunStatus;
use durable_jobs::{Engine, Synchronous};
use durable_jobs_tests::crash::{
    tally_instance, CrashJobs, Ledger, Tally, Witness, LEDGER_STEPS, TALLY_CALLERS, TALLY_INSTANCES,
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

/// The child's run is killed inside step `two`, after step `one` was acknowledged: the run
/// resumes in this process at `two`, and `one` is not executed again.
async fn killed_inside_a_step_resumes_after_the_last_acknowledged_one(synchronous: Synchronous) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut victim = Victim::spawn(&db, "steps", synchronous);
    let mut run_id = None;
    let mut entered = Vec::new();
    while entered.last().map(String::as_str) != Some("two") {
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
    let run_id = run_id.expect("the child printed its run id before entering a step");

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
