//! The jobs of the pause test (`tests/postgres_kill.rs`) and the child process that runs them
//! (`src/bin/pause_child.rs`): a process stopped with `SIGSTOP` past its leases, whose work
//! another process takes over and completes, then let go on with `SIGCONT`.
//!
//! In the holding child each job holds its first execution at a marker ([`PauseApp::hold`]):
//! it says `entered <what>`, waits until told to go on (`arm`), says `held <what>`, then keeps
//! the thread of its runtime until the file `release-<what>` exists. The holder runs a
//! current-thread runtime, so from `held` on nothing else of its engine runs, and the parent
//! stops the process right then. When the process goes on, the held execution is thus the
//! first thing it runs: its writes reach the store before the engine's own lease renewal, which
//! runs on that same thread, could tell it the lease was lost. What refuses them is the store's
//! fence, which is what the test is about.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;
use tokio::sync::Semaphore;

use crate::kill::say;
use crate::ProbeError;

/// The leases of both children: the holder's work is free this long after it stopped.
pub const LEASE: Duration = Duration::from_secs(2);

/// What the jobs see.
pub struct PauseApp {
    /// Where the parent creates the release files.
    pub dir: PathBuf,
    /// Whether this process holds the first execution of each job.
    pub holder: bool,
    /// One permit per `arm` the parent sent.
    armed: Semaphore,
    /// The executions held so far.
    held: Mutex<HashSet<String>>,
}

impl PauseApp {
    /// The app of a child that holds (`holder`) or not, with its release files in `dir`.
    pub fn new(dir: PathBuf, holder: bool) -> Arc<PauseApp> {
        Arc::new(PauseApp {
            dir,
            holder,
            armed: Semaphore::new(0),
            held: Mutex::new(HashSet::new()),
        })
    }

    /// Lets the execution waiting in [`hold`](Self::hold) go on to its hold.
    pub fn arm(&self) {
        self.armed.add_permits(1);
    }

    /// In the holder, the first time it is called with `what`: see the module documentation.
    /// Otherwise returns at once.
    pub async fn hold(&self, what: &str) {
        if !self.holder || !self.held.lock().unwrap().insert(what.to_owned()) {
            return;
        }
        say(&format!("entered {what} {}", std::process::id()));
        self.armed
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
        say(&format!("held {what}"));
        // Blocking on purpose: see the module documentation.
        let release = self.dir.join(format!("release-{what}"));
        while !release.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        say(&format!("released {what}"));
    }
}

/// Two steps, each returning the id of the process that ran it; returns both and the id of the
/// process that finished the run. The holder holds its first run of each `mode`: `in-step`
/// inside the second step, `at-end` after both.
#[durable_jobs::step_job(name = "pause-steps")]
pub async fn pause_steps(
    step: &mut StepContext,
    mode: String,
    app: &Arc<PauseApp>,
) -> Result<String, StepError> {
    let pid = std::process::id();
    let first = step
        .run("first", move |_| async move {
            Ok::<_, durable_jobs::BoxError>(pid)
        })
        .await?;
    let (in_step, holding) = (mode == "in-step", app.clone());
    let second = step
        .run("second", move |_| async move {
            if in_step {
                holding.hold("in-step").await;
            }
            Ok::<_, durable_jobs::BoxError>(pid)
        })
        .await;
    let second = match second {
        Ok(second) => second,
        Err(e) => {
            let what = match &e {
                StepError::LeaseLost { .. } => "lease-lost".to_owned(),
                other => format!("other {other}"),
            };
            say(&format!("step-error {mode} {pid} {what}"));
            return Err(e);
        }
    };
    if mode == "at-end" {
        app.hold("at-end").await;
    }
    say(&format!("finishing {mode} {pid}"));
    Ok(format!("first {first} second {second} finished by {pid}"))
}

/// Every second: appends its run's number and the id of the process that ran it to its state.
/// The holder holds its first run.
#[durable_jobs::continuous(every = "1s", start_immediately = false, name = "pause-tick")]
pub async fn pause_tick(
    ctx: &mut ContinuousContext<Vec<(u64, u32)>>,
    app: &Arc<PauseApp>,
) -> Result<(), ProbeError> {
    let (run, pid) = (ctx.run_count(), std::process::id());
    app.hold("tick").await;
    say(&format!("tick {run} {pid}"));
    ctx.update_state(|runs| runs.push((run, pid)));
    Ok(())
}

durable_jobs::registry! {
    /// The jobs of the pause test.
    pub PauseJobs<Arc<PauseApp>> { PauseSteps, PauseTick }
}
