//! `continuous`: 10,000 instances of a job running every second, measured for 10 s. The
//! instances are started evenly over one second (so their runs are spread over each second, as
//! independent schedules are), run once more to settle, then executions and lateness are
//! recorded for the measured window.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::Engine;
use tokio::time::Instant;

use crate::jobs::{Tick, TickApp, TickJobs};
use crate::report::{Metric, Report, Target};
use crate::stats::percentile;
use crate::sys::Usage;
use crate::{BenchResult, Config};

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    let n = cfg.continuous_instances;
    let app = Arc::new(TickApp::new(n));
    let engine = Engine::<TickJobs>::builder()
        .sqlite(dir.join("continuous.db"))
        .app(app.clone())
        .start()
        .await?;
    measure(cfg, engine, &app, None, report).await
}

/// Starts `cfg.continuous_instances` instances through `engine` spread over one second, lets
/// each run once, then records executions and lateness over the measured window; shuts the
/// engine down. `variant` names the store when it is not the default SQLite file.
pub(crate) async fn measure(
    cfg: &Config,
    engine: Engine<TickJobs>,
    app: &TickApp,
    variant: Option<&str>,
    report: &mut Report,
) -> BenchResult {
    let n = cfg.continuous_instances;
    let metric = |name: &'static str, value: f64, unit: &'static str| {
        let m = Metric::new("continuous", name, value, unit);
        match variant {
            Some(v) => m.variant(v),
            None => m,
        }
    };
    let client = engine.client();

    // Start instance i at t0 + i/n s, from 64 callers.
    let t0 = Instant::now() + Duration::from_millis(20);
    let callers = 64.min(n.max(1));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let ticks = client.continuous::<Tick>();
            let mut i = c;
            while i < n {
                tokio::time::sleep_until(t0 + Duration::from_secs(1) * i as u32 / n as u32).await;
                ticks.start(&format!("c{i}"), ()).await?;
                i += callers;
            }
            Ok::<(), durable_jobs::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = t0.elapsed();
    if created > Duration::from_millis(1_500) {
        report.note(format!(
            "continuous: starting {n} instances took {created:.1?}, not about 1 s: the runs are \
             bunched, not spread over each second"
        ));
    }
    // Let every instance run once from its alarm before measuring.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let usage = Usage::now();
    let counted = app.executions.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(cfg.continuous_secs)).await;
    app.measuring.store(false, Ordering::Relaxed);
    let secs = window.elapsed().as_secs_f64();
    Usage::now().report_since(
        &usage,
        (app.executions.load(Ordering::Relaxed) - counted) as usize,
        metric,
        report,
    );
    drop(client);
    engine.shutdown().await?;

    let executions = app.executions.load(Ordering::Relaxed) as f64;
    let mut late: Vec<f64> = app
        .lateness_us
        .lock()
        .map(|l| l.iter().map(|us| *us as f64 / 1e3).collect())
        .unwrap_or_default();
    late.sort_by(f64::total_cmp);
    report.push(metric("executions_per_s", executions / secs, "exec/s"));
    report.push(metric("scheduled_per_s", n as f64, "exec/s"));
    report.push(metric("lateness_p50_ms", percentile(&late, 50.0), "ms"));
    report
        .push(metric("lateness_p99_ms", percentile(&late, 99.0), "ms").target(Target::Below(10.0)));
    report.push(metric(
        "lateness_max_ms",
        late.last().copied().unwrap_or(0.0),
        "ms",
    ));
    Ok(())
}
