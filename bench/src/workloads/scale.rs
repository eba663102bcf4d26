//! `scale`: 1,000,000 continuous instances scheduled an hour ahead.
//!
//! Each phase runs in a fresh child process of this program, so its peak RSS (`VmHWM` of
//! `/proc/self/status`) is its own and not that of earlier workloads:
//! - `__scale-create DIR N`: starts an engine on `DIR/scale.db`, creates N instances from 256
//!   concurrent callers, reports the creation rate and its peak RSS, shuts down.
//! - `__scale-reopen DIR`: reopens the file: the time from just before `start()` until the engine
//!   has started and answered a first `status` (ready), and the peak RSS after 2 s of idling.
//!
//! The parent also times the reopen from spawning the child to reading its "ready" line, which
//! adds process start-up. The file was just written, so its pages are in the OS page cache.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::{ContinuousState, Engine};
use serde_json::{json, Value};

use crate::jobs::{Hourly, HourlyJobs};
use crate::report::{Metric, Report, Target};
use crate::sys::peak_rss_mib;
use crate::{BenchResult, Config};

const CALLERS: usize = 256;

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    let n = cfg.scale_instances;
    let exe = std::env::current_exe()?;
    let created = child_result(
        Command::new(&exe)
            .arg("__scale-create")
            .arg(dir)
            .arg(n.to_string()),
        None,
    )?;
    let db = dir.join("scale.db");
    let size_mib = ["", "-wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", db.display())).ok())
        .map(|m| m.len() as f64 / 1024.0 / 1024.0)
        .sum::<f64>();
    let spawned = Instant::now();
    let mut process_ready = None;
    let reopened = child_result(
        Command::new(&exe).arg("__scale-reopen").arg(dir),
        Some((&spawned, &mut process_ready)),
    )?;

    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    report.push(Metric::new("scale", "instances", n as f64, "instances"));
    report.push(Metric::new(
        "scale",
        "create_per_s",
        f(&created, "create_per_s"),
        "instances/s",
    ));
    report.push(
        Metric::new(
            "scale",
            "peak_rss_create_mib",
            f(&created, "peak_rss_mib"),
            "MiB",
        )
        .target(Target::Below(300.0)),
    );
    report.push(Metric::new("scale", "db_size_mib", size_mib, "MiB"));
    report.push(
        Metric::new(
            "scale",
            "reopen_to_ready_ms",
            f(&reopened, "ready_ms"),
            "ms",
        )
        .target(Target::Below(1_000.0)),
    );
    if let Some(d) = process_ready {
        report.push(Metric::new("scale", "process_spawn_to_ready_ms", d, "ms"));
    }
    report.push(
        Metric::new(
            "scale",
            "peak_rss_reopen_mib",
            f(&reopened, "peak_rss_mib"),
            "MiB",
        )
        .target(Target::Below(300.0)),
    );
    Ok(())
}

/// Runs a child, returns the JSON of its `RESULT` line; records when it printed `READY`.
fn child_result(
    cmd: &mut Command,
    mut ready: Option<(&Instant, &mut Option<f64>)>,
) -> BenchResult<Value> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "READY" {
            if let Some((since, slot)) = ready.as_mut() {
                **slot = Some(since.elapsed().as_secs_f64() * 1e3);
            }
        } else if let Some(rest) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str(rest)?);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("scale child failed: {status}").into());
    }
    result.ok_or_else(|| "scale child printed no result".into())
}

/// Entry point of the child processes (`__scale-create`, `__scale-reopen`).
pub(crate) fn child(args: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = PathBuf::from(args.get(1).cloned().unwrap_or_default());
    let result = match args[0].as_str() {
        "__scale-create" => {
            let n = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            runtime.block_on(create(&dir, n))
        }
        "__scale-reopen" => runtime.block_on(reopen(&dir)),
        other => Err(format!("unknown child {other}").into()),
    };
    match result {
        Ok(v) => {
            println!("RESULT {v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn create(dir: &Path, n: usize) -> BenchResult<Value> {
    let engine = Engine::<HourlyJobs>::builder()
        .sqlite(dir.join("scale.db"))
        .start()
        .await?;
    let client = engine.client();
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        let next = next.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let hourly = client.continuous::<Hourly>();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                hourly.start(&format!("s{i}"), ()).await?;
                let done = progress.fetch_add(1, Ordering::Relaxed) + 1;
                if done.is_multiple_of(100_000) {
                    eprintln!(
                        "   {done} instances, {:.0}/s",
                        done as f64 / start.elapsed().as_secs_f64()
                    );
                }
            }
            Ok::<(), durable_jobs::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    drop(client);
    engine.shutdown().await?;
    Ok(json!({ "create_per_s": n as f64 / secs, "secs": secs, "peak_rss_mib": peak }))
}

async fn reopen(dir: &Path) -> BenchResult<Value> {
    let start = Instant::now();
    let engine = Engine::<HourlyJobs>::builder()
        .sqlite(dir.join("scale.db"))
        .start()
        .await?;
    let client = engine.client();
    let status = client.continuous::<Hourly>().status("s0").await?;
    let ready_ms = start.elapsed().as_secs_f64() * 1e3;
    println!("READY");
    if status.status != ContinuousState::Running {
        return Err(format!("instance s0 is {:?} after the reopen", status.status).into());
    }
    // Idle a little: the scheduler's first scans and any start-up work count towards the peak.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = peak_rss_mib();
    drop(client);
    engine.shutdown().await?;
    Ok(json!({ "ready_ms": ready_ms, "peak_rss_mib": peak }))
}
