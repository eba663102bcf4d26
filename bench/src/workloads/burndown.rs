//! `burndown`: 50,000 no-op step jobs (no steps) enqueued in batches of 1,000, then drained with
//! the worker at concurrency 20 and 100: the shape of the effectum peer benchmark. As in
//! `steps`, the runs wait at a gate until the enqueue phase is over.

use std::path::Path;
use std::time::Instant;

use durable_jobs::Synchronous;

use crate::peers::{field, Peers};
use crate::report::{Metric, Report};
use crate::stats::rate;
use crate::step_jobs::NoOp;
use crate::{BenchResult, Config};

pub(crate) async fn run(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
) -> BenchResult {
    let n = cfg.burndown_jobs;
    for &c in &cfg.burndown_concurrency {
        let variant = format!("concurrency={c}");
        let path = dir.join(format!("burndown-{c}.db"));
        let (engine, app) =
            super::steps::engine(&path, Synchronous::Normal, Some(c), false).await?;
        let client = engine.client();
        let jobs = client.step_job::<NoOp>();

        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + 1_000).min(n);
            jobs.batch_trigger(std::iter::repeat_n((), end - i)).await?;
            i = end;
        }
        let enqueued = start.elapsed();
        let drain = Instant::now();
        app.open();
        super::steps::wait_drained(&jobs, &app, n, c).await?;
        let drained = drain.elapsed();
        super::steps::check_all_completed(&jobs).await?;
        drop(jobs);
        drop(client);
        engine.shutdown().await?;

        report.push(
            Metric::new("burndown", "enqueue_per_s", rate(n, enqueued), "jobs/s").variant(&variant),
        );
        report.push(
            Metric::new("burndown", "drain_per_s", rate(n, drained), "jobs/s").variant(&variant),
        );

        if let Some(v) = peers.run("effectum", &[n.to_string(), c.to_string()], &[], report) {
            let variant = format!("effectum {variant}");
            if let Some(x) = field(&v, "enqueue_per_s") {
                report
                    .push(Metric::new("burndown", "enqueue_per_s", x, "jobs/s").variant(&variant));
            }
            if let Some(x) = field(&v, "drain_per_s") {
                report.push(Metric::new("burndown", "drain_per_s", x, "jobs/s").variant(&variant));
            }
        }
    }
    Ok(())
}
