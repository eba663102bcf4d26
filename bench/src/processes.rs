//! `--processes N`: the step-job workloads drained by N engine processes on one file in shared
//! mode, this one and N-1 children (this program again, started with `__drain`).
//!
//! A child opens the file with its gate closed and says `ready`; when every child is ready the
//! parent writes `go` to each and opens its own gate, so that all processes start draining at
//! once; the parent then watches the file until no run is pending or leased, and closes the
//! children's input, on which each prints the CPU time it used since `go` and shuts down.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Duration;

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::{RunFilter, RunStatus, StepJobClient};
use durable_jobs::store::Ownership;
use durable_jobs::StepJob;

use crate::step_jobs::StepApp;
use crate::sys::Usage;
use crate::BenchResult;

/// The children of one drain.
pub(crate) struct Children {
    children: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Children {
    /// Starts `n` children on `path` (`sync`, worker `concurrency`) and waits until each has
    /// its engine open.
    pub(crate) fn spawn(
        n: usize,
        path: &Path,
        sync: Synchronous,
        concurrency: usize,
    ) -> BenchResult<Children> {
        let concurrency = concurrency.to_string();
        let args = [
            "__drain".as_ref(),
            path.as_os_str(),
            crate::sync_name(sync).as_ref(),
            concurrency.as_ref(),
        ];
        Self::spawn_with(n, &args)
    }

    /// Starts `n` children, this program with `args` (a child command that ends in
    /// [`serve`]), and waits until each has its engine open.
    pub(crate) fn spawn_with(n: usize, args: &[&std::ffi::OsStr]) -> BenchResult<Children> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("a drain child has no pipes".into());
            };
            children.push((child, stdin, BufReader::new(stdout)));
        }
        let mut spawned = Children { children };
        for (_, _, out) in &mut spawned.children {
            let line = read_line(out)?;
            if line != "ready" {
                return Err(format!("a drain child said `{line}` instead of `ready`").into());
            }
        }
        Ok(spawned)
    }

    /// Lets every child's runs go.
    pub(crate) fn go(&mut self) -> BenchResult {
        for (_, stdin, _) in &mut self.children {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Stops the children; returns the CPU nanoseconds they used since `go`, in all.
    pub(crate) fn finish(self) -> BenchResult<u64> {
        let mut cpu_ns = 0;
        for (mut child, stdin, mut out) in self.children {
            drop(stdin);
            let line = read_line(&mut out)?;
            cpu_ns += line
                .strip_prefix("cpu_ns ")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("a drain child said `{line}` instead of its CPU time"))?;
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("a drain child ended with {status}").into());
            }
        }
        Ok(cpu_ns)
    }
}

fn read_line(out: &mut BufReader<ChildStdout>) -> BenchResult<String> {
    let mut line = String::new();
    if out.read_line(&mut line)? == 0 {
        return Err("a drain child ended early".into());
    }
    Ok(line.trim().to_owned())
}

/// Waits until no run on the file is pending or leased, whichever process ran them.
pub(crate) async fn wait_file_drained<J: StepJob<std::sync::Arc<StepApp>>>(
    runs: &StepJobClient<std::sync::Arc<StepApp>, J>,
) -> BenchResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    // Pending first: a run leaves `pending` before it leaves `leased`, so two empty answers in
    // this order mean every run ended.
    'poll: loop {
        for status in [RunStatus::Pending, RunStatus::Leased] {
            if !runs
                .get_runs(RunFilter::new().status(status).limit(1))
                .await?
                .is_empty()
            {
                if tokio::time::Instant::now() > deadline {
                    return Err("runs were left after 10 minutes".into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue 'poll;
            }
        }
        return Ok(());
    }
}

/// A child: `__drain <path> <NORMAL|FULL> <concurrency>`.
pub(crate) fn child(args: &[String]) -> ExitCode {
    let run = || -> BenchResult {
        let [_, path, sync, concurrency] = args else {
            return Err("usage: __drain <path> <NORMAL|FULL> <concurrency>".into());
        };
        let sync = if sync == "FULL" {
            Synchronous::Full
        } else {
            Synchronous::Normal
        };
        let concurrency: usize = concurrency.parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (engine, app) = crate::workloads::steps::engine(
                Path::new(path),
                sync,
                Ownership::Shared,
                Some(concurrency),
                false,
            )
            .await?;
            serve(engine, app).await
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: drain child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A child's part once its engine is open, gate closed: says `ready`, opens the gate on `go`,
/// and when its input ends prints the CPU time it used since `go` and shuts the engine down.
pub(crate) async fn serve(
    engine: durable_jobs::Engine<crate::step_jobs::StepJobs>,
    app: std::sync::Arc<StepApp>,
) -> BenchResult {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    // The input says `go`, then ends: the gate opens on the first, the child stops on the
    // second.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let input_ended = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::stdin().lock().lines();
        let _ = go_tx.send(matches!(lines.next(), Some(Ok(line)) if line == "go"));
        lines.count()
    });
    if !go_rx.await.unwrap_or(false) {
        return Err("no `go` on the input".into());
    }
    let started = Usage::now();
    app.open();
    input_ended.await?;
    let used = Usage::now().cpu_ns_since(&started);
    writeln!(stdout, "cpu_ns {used}")?;
    stdout.flush()?;
    engine.shutdown().await?;
    Ok(())
}
