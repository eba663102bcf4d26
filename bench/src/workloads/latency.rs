//! `latency`: `trigger_and_wait` of a one-step job on an otherwise idle engine, in sequence
//! (one warm-up call first, not measured). The time covers the trigger's commit, waking the
//! worker, the claim, the step's commit, the completion's commit and the waiter's wake-up.

use std::path::Path;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::TriggerOptions;

use crate::peers::Peers;
use crate::report::{Metric, Report, Target};
use crate::stats::{percentile, sorted_millis};
use crate::step_jobs::{Num, OneStep};
use crate::{BenchResult, Config};

pub(crate) async fn run(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
) -> BenchResult {
    let n = cfg.latency_iterations;
    let (engine, _app) =
        super::steps::engine(&dir.join("latency.db"), Synchronous::Normal, None, true).await?;
    let durability = crate::durability::of_engine(&engine).await?;
    let client = engine.client();
    let one = client.step_job::<OneStep>();
    let timeout = Duration::from_secs(30);
    one.trigger_and_wait(Num { i: 0 }, TriggerOptions::new(), timeout)
        .await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let done = one
            .trigger_and_wait(Num { i }, TriggerOptions::new(), timeout)
            .await?;
        samples.push(t.elapsed());
        if done.output.sum != i + 1 {
            return Err(format!("run {} returned {}", done.id, done.output.sum).into());
        }
    }
    drop(one);
    drop(client);
    engine.shutdown().await?;
    let sorted = sorted_millis(&samples);
    report.push(
        Metric::new("latency", "p50_ms", percentile(&sorted, 50.0), "ms")
            .target(Target::Below(1.0)),
    );
    report.push(Metric::new(
        "latency",
        "p99_ms",
        percentile(&sorted, 99.0),
        "ms",
    ));
    report.durability("latency", "", durability);
    report.load("latency", "");

    for (poll, variant) in [
        ("default", "durably poll=default"),
        ("1", "durably poll=1ms"),
    ] {
        if let Some(v) = peers.run(
            "durably",
            &["latency".into(), n.to_string(), poll.into()],
            &[("SYNC", "NORMAL")],
            report,
        ) {
            crate::peers::record(
                report,
                "latency",
                variant,
                &v,
                &[("p50_ms", "ms"), ("p99_ms", "ms")],
            );
        }
    }
    Ok(())
}
