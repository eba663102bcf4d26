//! The parent's side of a kill run: a child's life (spawned, left to run until a random moment,
//! killed with `SIGKILL`), the drain of the file after the last kill, and the read-back of what
//! the file then holds. Shared by the kill harness (`tests/kill.rs`) and the power-cut tests
//! (`tests/powercut.rs`), which differ in what happens around the kill.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::{Run, RunFilter};
use durable_jobs::testing::TestClock;
use durable_jobs::{Client, Engine};

use super::ledger::Final;
use super::{
    resend, KillBatch, KillJobs, KillLedger, KillTask, KillTicker, Reporter, Rng, RunInput,
};
use super::{BATCHES, TASKS, TICKERS};

/// How long a child may stay silent (it prints within milliseconds; this bounds a hung one).
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the drain may take to settle everything the children left.
const DRAIN: Duration = Duration::from_secs(120);

/// A number from the environment variable `name`, if set.
///
/// # Panics
///
/// When it is set but not a number.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// The argument the child takes for `synchronous`.
fn sync_arg(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "full",
        _ => "normal",
    }
}

/// One running child (`kill_child`) and the lines it printed so far.
pub struct Life {
    child: Child,
    incarnation: u64,
    lines: Vec<String>,
    rx: mpsc::Receiver<String>,
    reader: JoinHandle<()>,
}

impl Life {
    /// Starts the child `bin` (the `kill_child` binary) on `db`; it first re-issues what
    /// `resend_file` lists. Its own random choices come from `seed`.
    pub fn spawn(
        bin: &Path,
        db: &Path,
        synchronous: Synchronous,
        incarnation: u64,
        seed: u64,
        resend_file: &Path,
    ) -> Life {
        Life::spawn_with(bin, db, synchronous, incarnation, seed, resend_file, &[])
    }

    /// As [`spawn`](Self::spawn), with `extra` arguments after the others (`shared <dir>`).
    pub fn spawn_with(
        bin: &Path,
        db: &Path,
        synchronous: Synchronous,
        incarnation: u64,
        seed: u64,
        resend_file: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> Life {
        let mut child = Command::new(bin)
            .arg(db)
            .arg(sync_arg(synchronous))
            .arg(incarnation.to_string())
            .arg(seed.to_string())
            .arg(resend_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Life {
            child,
            incarnation,
            lines: Vec::new(),
            rx,
            reader,
        }
    }

    /// Lets the child run until a random moment: a quarter of the time a random delay from the
    /// spawn (some during the start and its recovery), otherwise a random number of lines, in
    /// the middle of the load.
    pub fn run_until_random_moment(&mut self, rng: &mut Rng) {
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            return;
        }
        let target = 1 + rng.below(800) as usize;
        while self.lines.len() < target {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(line) => self.lines.push(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "child {} printed nothing for {PATIENCE:?} ({e}); exit {:?}; last lines {:?}",
                        self.incarnation,
                        self.child.wait(),
                        &self.lines[self.lines.len().saturating_sub(10)..]
                    );
                }
            }
        }
    }

    /// Kills the child with `SIGKILL`, runs `after_kill` (the child may not be able to exit
    /// before it), reaps the child and returns every line it printed.
    pub fn kill(mut self, after_kill: impl FnOnce()) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        after_kill();
        let status = self.child.wait().expect("the child is reaped");
        assert!(
            !status.success(),
            "child {} was killed, not finished: {status}",
            self.incarnation
        );
        self.reader.join().expect("the reader ends with the pipe");
        self.lines.extend(self.rx.try_iter());
        self.lines
    }
}

/// Starts this process's engine on the file, answers what was left unanswered, waits until
/// every run has ended, every batch is flushed and every task schedule has fired, and shuts
/// down. Returns what the jobs printed meanwhile.
pub async fn drain(db: &Path, synchronous: Synchronous, resends: &str) -> Vec<String> {
    let out = Reporter::memory();
    let engine = Engine::<KillJobs>::builder()
        .sqlite(db)
        .synchronous(synchronous)
        .app(out.clone())
        .start()
        .await
        .expect("the file reopens after the last kill");
    let client = engine.client();
    resend(&client, &out, resends).await;
    let runs = client.step_job::<KillLedger>();
    let deadline = Instant::now() + DRAIN;
    for run in all_runs(&client).await {
        if run.is_active() {
            let left = deadline.saturating_duration_since(Instant::now());
            // A failed run ends too (its waiters get `Execution`); its status is checked later.
            match runs.wait_for_run(&run.id, Some(left)).await {
                Ok(_) | Err(durable_jobs::Error::Execution { .. }) => {}
                Err(e) => panic!("run {} did not end: {e}", run.id),
            }
        }
    }
    let mut events = engine.events();
    loop {
        let mut busy = batches_left(&client).await;
        for t in 0..TASKS {
            let id = format!("t{t}");
            if client
                .task::<KillTask>()
                .status(&id)
                .await
                .unwrap()
                .scheduled_at
                .is_some()
            {
                busy.push(id);
            }
        }
        if busy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stuck after the drain: {busy:?}");
        // Each committed event is a reason to look again; the timeout only bounds the wait.
        let _ = tokio::time::timeout(Duration::from_millis(250), events.next()).await;
    }
    drop(client);
    engine.shutdown().await.expect("a clean shutdown");
    out.take()
}

async fn all_runs(client: &Client<KillJobs>) -> Vec<Run<RunInput, Vec<String>>> {
    let mut all = Vec::new();
    loop {
        let page = client
            .step_job::<KillLedger>()
            .get_runs(RunFilter::new().limit(1000).offset(all.len() as u32))
            .await
            .expect("runs are readable");
        let done = page.len() < 1000;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// The batches still stored.
async fn batches_left(client: &Client<KillJobs>) -> Vec<String> {
    let mut left = Vec::new();
    for b in 0..BATCHES {
        let id = format!("b{b}");
        if !client
            .debounce::<KillBatch>()
            .status(&id)
            .await
            .unwrap()
            .is_not_found()
        {
            left.push(id);
        }
    }
    left
}

/// What the file holds, read by an engine on a test clock far in the past of every alarm, so
/// no alarm fires while it is read. Step runs do not wait for the clock: read a drained file,
/// where none is left pending.
pub async fn read_final(db: &Path) -> Final {
    let engine = Engine::<KillJobs>::builder()
        .sqlite(db)
        .clock(TestClock::new())
        .app(Reporter::memory())
        .start()
        .await
        .expect("the file opens");
    let client = engine.client();
    let mut db_state = Final::default();
    for run in all_runs(&client).await {
        db_state
            .runs
            .push((run.id, run.input.op, run.status, run.output));
    }
    db_state.batches_left = batches_left(&client).await;
    for t in 0..TASKS {
        let id = format!("t{t}");
        let tasks = client.task::<KillTask>();
        let status = tasks.status(&id).await.unwrap();
        let state = tasks.get_state(&id).await.unwrap();
        db_state.tasks.insert(
            id,
            (state, status.execute_count, status.scheduled_at.is_some()),
        );
    }
    for c in 0..TICKERS {
        let id = format!("c{c}");
        let tickers = client.continuous::<KillTicker>();
        let status = tickers.status(&id).await.unwrap();
        let state = tickers.get_state(&id).await.unwrap();
        db_state
            .tickers
            .insert(id, (state, status.next_run_at.is_some()));
    }
    drop(client);
    engine.shutdown().await.unwrap();
    db_state
}
