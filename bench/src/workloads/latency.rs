//! `latency`: `trigger_and_wait` of a one-step job on an otherwise idle engine, in sequence
//! (one warm-up call first, not measured). The time covers the trigger's commit, waking the
//! worker, the claim, the step's commit, the completion's commit and the waiter's wake-up.

use std::path::Path;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::TriggerOptions;
use durable_jobs::store::Ownership;

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
    for &ownership in &cfg.modes {
        run_one(cfg, dir, report, peers, ownership).await?;
    }
    Ok(())
}

async fn run_one(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
    ownership: Ownership,
) -> BenchResult {
    let n = cfg.latency_iterations;
    let variant = crate::mode_suffix(cfg, ownership).trim().to_owned();
    let path = dir.join(format!("latency-{ownership:?}.db"));
    let (engine, _app) =
        super::steps::engine(&path, Synchronous::Normal, ownership, None, true).await?;
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
            .variant(&variant)
            .target(Target::Below(1.0)),
    );
    report
        .push(Metric::new("latency", "p99_ms", percentile(&sorted, 99.0), "ms").variant(&variant));
    report.durability("latency", &variant, durability);
    report.load("latency", &variant);
    if ownership != Ownership::Exclusive {
        return Ok(());
    }

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
