//! The jobs of the multi-process tests (`tests/multiprocess.rs`), the child process that runs
//! them (`src/bin/mp_child.rs`), and the parent's handle on a child.
//!
//! Every child opens the same file in shared mode with short leases ([`LEASE`]), so that what a
//! killed child held is taken over within about a second. The jobs print what they do on the
//! child's standard output, tagged with the process id, and check across processes what a
//! single process could not: [`MpTicker`] creates one file per run it executes with `O_EXCL`,
//! so a run executed twice (by two processes at one due time) is seen by the second.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::prelude::*;
use durable_jobs::sqlite::SqliteOptions;
use durable_jobs::steps::{StepError, StepOptions};
use durable_jobs::EngineBuilder;

use crate::kill::{say, Reporter};
use crate::ProbeError;

/// The lease of every child's engine and step worker.
pub const LEASE: Duration = Duration::from_secs(1);

/// What the children's jobs see: where to report, and whether this child is the one whose
/// executions hang (to be killed while it holds their leases).
pub struct MpApp {
    /// Lines and execution markers.
    pub out: Arc<Reporter>,
    /// The folder of the per-run files of [`MpTicker`].
    pub dir: PathBuf,
    /// Executions of [`mp_hang`] and [`MpHold`] hang here.
    pub hang: bool,
}

/// Returns its input and the id of the process that ran it.
#[durable_jobs::step_job(name = "mp-echo")]
pub async fn mp_echo(
    step: &mut StepContext,
    input: String,
    _app: &Arc<MpApp>,
) -> Result<String, StepError> {
    let pid = std::process::id();
    step.run("echo", move |_| async move {
        Ok::<_, durable_jobs::BoxError>(format!("{input} by {pid}"))
    })
    .await
}

/// Never ends: keeps a slot of the step worker that runs it busy.
#[durable_jobs::step_job(name = "mp-block")]
pub async fn mp_block(
    _step: &mut StepContext,
    input: String,
    _app: &Arc<MpApp>,
) -> Result<(), StepError> {
    say(&format!("blocking {input} {}", std::process::id()));
    std::future::pending::<()>().await;
    Ok(())
}

/// Hangs in a child that hangs; elsewhere returns the id of its process.
#[durable_jobs::step_job(name = "mp-hang")]
pub async fn mp_hang(
    step: &mut StepContext,
    _input: String,
    app: &Arc<MpApp>,
) -> Result<u32, StepError> {
    let pid = std::process::id();
    let _running = app.out.enter("mp-hang");
    if app.hang {
        say(&format!("hang-enter {pid}"));
        std::future::pending::<()>().await;
    }
    let done = step
        .run("done", move |_| async move {
            Ok::<_, durable_jobs::BoxError>(pid)
        })
        .await?;
    say(&format!("hang-done {done}"));
    Ok(done)
}

/// Counts its runs in its state; its first run hangs in a child that hangs.
#[durable_jobs::continuous(every = "200ms", start_immediately = false)]
pub async fn mp_hold(ctx: &mut ContinuousContext<u64>, app: &Arc<MpApp>) -> Result<(), ProbeError> {
    let pid = std::process::id();
    let _running = app.out.enter(&format!("hold-{}", ctx.id()));
    if app.hang {
        say(&format!("hold-enter {} {pid}", ctx.run_count()));
        std::future::pending::<()>().await;
    }
    say(&format!("hold-run {} {pid}", ctx.run_count()));
    ctx.update_state(|runs| *runs += 1);
    Ok(())
}

/// Every 250 ms: creates the file of its run (`tick-<run>`) with `O_EXCL`; a run executed twice
/// finds it and says `unexpected`.
#[durable_jobs::continuous(every = "250ms", name = "mp-ticker")]
pub async fn mp_ticker(
    ctx: &mut ContinuousContext<u64>,
    app: &Arc<MpApp>,
) -> Result<(), ProbeError> {
    let pid = std::process::id();
    let _running = app.out.enter(&format!("ticker-{}", ctx.id()));
    let run = ctx.run_count();
    let file = app.dir.join(format!("tick-{run}"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    {
        Ok(mut f) => {
            let _ = write!(f, "{pid}");
            say(&format!("tick {run} {pid}"));
        }
        Err(e) => say(&format!("unexpected tick {run} again in {pid}: {e}")),
    }
    ctx.update_state(|runs| *runs += 1);
    Ok(())
}

/// The file [`mp_ticker`] creates for its run `run` (runs are numbered from 1).
pub fn tick_file(dir: &Path, run: u64) -> PathBuf {
    dir.join(format!("tick-{run}"))
}

durable_jobs::registry! {
    /// The jobs of the multi-process tests.
    pub MpJobs<Arc<MpApp>> { MpEcho, MpBlock, MpHang, MpHold, MpTicker }
}

/// An engine builder on `db` in shared mode, with [`LEASE`] for instances and step runs and at
/// most `runs` step runs at once.
pub fn shared_engine(db: &Path, runs: usize) -> EngineBuilder<MpJobs> {
    durable_jobs::Engine::<MpJobs>::builder()
        .sqlite_options(SqliteOptions::file(db).shared())
        .lease_duration(LEASE)
        .step_options(
            StepOptions::default()
                .max_concurrent_runs(runs)
                .lease_duration(LEASE)
                .lease_renew_interval(LEASE / 4),
        )
}

/// How long a child may take to print what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A child process (`mp_child`) and the lines it printed.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<String>,
    /// Every line read so far.
    pub lines: Vec<String>,
}

impl Proc {
    /// Starts `mp_child <args>`.
    pub fn spawn(bin: &Path, args: &[&std::ffi::OsStr]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            rx,
            lines: Vec::new(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits, at most [`PATIENCE`], for a line that starts with `prefix`, and returns it.
    ///
    /// # Panics
    ///
    /// When none comes in time, or the child says `unexpected`.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        if let Some(line) = self.lines.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    assert!(!line.contains("unexpected"), "child {}: {line}", self.pid());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "child {} printed no `{prefix}` line in {PATIENCE:?} ({e}); it printed {:?}",
                    self.pid(),
                    self.lines
                ),
            }
        }
    }

    /// Reads what the child printed so far without waiting.
    pub fn drain(&mut self) -> &[String] {
        self.lines.extend(self.rx.try_iter());
        &self.lines
    }

    /// Sends one line to the child's standard input.
    pub fn tell(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            writeln!(stdin, "{line}").expect("the child reads its input");
        }
    }

    /// Closes the child's standard input (a child waiting for its end exits) and waits for it
    /// to exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// Kills the child with `SIGKILL` and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that failed half-way leaves no child behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
