//! `debounce`: 1,000 instances receiving 100 events each, `max_events = 100`, from 64
//! concurrent callers (100,000 durable `add` calls). Every add commits before it returns; the
//! add that brings a batch to 100 events flushes it inline. Afterwards every event must have
//! been flushed exactly once.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::SqliteOptions;
use durable_jobs::store::Ownership;
use durable_jobs::Engine;

use crate::jobs::{BatchApp, BatchJobs, Collect, MAX_EVENTS};
use crate::report::{Metric, Report, Target};
use crate::stats::{percentile, rate, sorted_millis};
use crate::sys::Usage;
use crate::{BenchResult, Config};

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    for &ownership in &cfg.modes {
        run_one(cfg, dir, report, ownership).await?;
    }
    Ok(())
}

async fn run_one(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    ownership: Ownership,
) -> BenchResult {
    let variant = crate::mode_suffix(cfg, ownership).trim().to_owned();
    let app = Arc::new(BatchApp::new(cfg.debounce_instances * cfg.debounce_events));
    let engine = Engine::<BatchJobs>::builder()
        .sqlite_options(
            SqliteOptions::file(dir.join(format!("debounce-{ownership:?}.db")))
                .ownership(ownership),
        )
        .app(app.clone())
        .start()
        .await?;
    drive(
        cfg,
        engine,
        &app,
        &variant,
        report,
        Targets {
            adds_per_s: 100_000.0,
            add_p99_ms: 10.0,
        },
    )
    .await
}

/// What `debounce` aims at on one store.
pub(crate) struct Targets {
    pub(crate) adds_per_s: f64,
    pub(crate) add_p99_ms: f64,
}

/// Sends every event through `engine` from the callers, shuts it down, and records the rates,
/// the latencies and whether every event was flushed exactly once.
pub(crate) async fn drive(
    cfg: &Config,
    engine: Engine<BatchJobs>,
    app: &BatchApp,
    variant: &str,
    report: &mut Report,
    targets: Targets,
) -> BenchResult {
    let instances = cfg.debounce_instances;
    let total = instances * cfg.debounce_events;
    let client = engine.client();
    let next = Arc::new(AtomicUsize::new(0));
    let usage = Usage::now();
    let start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..cfg.debounce_callers {
        let client = client.clone();
        let next = next.clone();
        callers.push(tokio::spawn(async move {
            let debounce = client.debounce::<Collect>();
            let mut latencies = Vec::with_capacity(total / 32);
            loop {
                let e = next.fetch_add(1, Ordering::Relaxed);
                if e >= total {
                    break;
                }
                let id = format!("d{}", e % instances);
                let t = Instant::now();
                debounce.add(&id, e as u32).await?;
                latencies.push(t.elapsed());
            }
            Ok::<Vec<Duration>, durable_jobs::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for c in callers {
        latencies.extend(c.await??);
    }
    let elapsed = start.elapsed();
    Usage::now().report_since(
        &usage,
        total,
        |metric, value, unit| Metric::new("debounce", metric, value, unit).variant(variant),
        report,
    );
    drop(client);
    engine.shutdown().await?;

    let sorted = sorted_millis(&latencies);
    report.push(
        Metric::new("debounce", "adds_per_s", rate(total, elapsed), "adds/s")
            .variant(variant)
            .target(Target::AtLeast(targets.adds_per_s)),
    );
    report.push(
        Metric::new("debounce", "add_p50_ms", percentile(&sorted, 50.0), "ms").variant(variant),
    );
    report.push(
        Metric::new("debounce", "add_p99_ms", percentile(&sorted, 99.0), "ms")
            .variant(variant)
            .target(Target::Below(targets.add_p99_ms)),
    );
    let (missing, repeated) = app.check();
    let flushes = app.flushes.load(Ordering::Relaxed) as usize;
    let expected_flushes = total / MAX_EVENTS as usize;
    report.push(
        Metric::new(
            "debounce",
            "events_not_flushed_exactly_once",
            (missing + repeated) as f64,
            "events",
        )
        .variant(variant)
        .target(Target::Below(1.0)),
    );
    if missing + repeated > 0 || flushes != expected_flushes {
        report.note(format!(
            "debounce: {missing} events never flushed, {repeated} flushed more than once, \
             {flushes} flushes for {expected_flushes} full batches"
        ));
    }
    Ok(())
}
