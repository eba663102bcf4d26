//! `burndown`: 50,000 no-op step jobs (no steps) enqueued in batches of 1,000, then drained with
//! the worker at concurrency 20 and 100, with `synchronous=NORMAL` and `FULL`: the shape of the
//! effectum peer benchmark. As in `steps`, the runs wait at a gate until the enqueue phase is
//! over. Each of our drains is followed at once by effectum's, its file put in WAL and its
//! connection at the same `synchronous` level (the pair of a paired ratio), and with `NORMAL`
//! by effectum as shipped (rollback journal), which is shown but never divided by.

use std::path::Path;
use std::time::Instant;

use durable_jobs::sqlite::Synchronous;
use durable_jobs::store::Ownership;

use crate::compare::{burndown_variant, effectum_jobs};
use crate::peers::Peers;
use crate::report::{Metric, Report};
use crate::stats::rate;
use crate::step_jobs::NoOp;
use crate::sys::Usage;
use crate::workloads::steps::Place;
use crate::{sync_name, BenchResult, Config};

pub(crate) async fn run(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
) -> BenchResult {
    if cfg.backend == crate::Backend::Postgres {
        for &c in &cfg.burndown_concurrency {
            run_postgres(cfg, report, peers, c).await?;
        }
        return Ok(());
    }
    for &mode in &cfg.sync {
        for &c in &cfg.burndown_concurrency {
            for &ownership in &cfg.modes {
                run_one(cfg, dir, report, peers, mode, c, ownership).await?;
            }
        }
    }
    Ok(())
}

async fn run_one(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
    mode: Synchronous,
    c: usize,
    ownership: Ownership,
) -> BenchResult {
    let variant = burndown_variant(mode, c) + &crate::mode_suffix(cfg, ownership);
    let path = dir.join(format!("burndown-{}-{c}-{ownership:?}.db", sync_name(mode)));
    let place = Place::File {
        path,
        sync: mode,
        ownership,
    };
    let variant = measure(cfg, report, &place, &variant, c).await?;

    // Right after ours: effectum in WAL at the same level, the pair's other half
    // (exclusive mode only: effectum holds its file alone too).
    if ownership != Ownership::Exclusive {
        return Ok(());
    }
    let wal_jobs = effectum_jobs(cfg, Some(mode));
    if let Some(v) = peers.run(
        "effectum",
        &[wal_jobs.to_string(), c.to_string()],
        &[("JOURNAL", "wal"), ("SYNC", sync_name(mode))],
        report,
    ) {
        let variant = format!("effectum {variant}");
        crate::peers::record(report, "burndown", &variant, &v, &FIGURES);
    }
    // effectum as shipped sets NORMAL itself (and syncs at every commit all the same).
    if mode == Synchronous::Normal {
        if let Some(v) = peers.run(
            "effectum",
            &[effectum_jobs(cfg, None).to_string(), c.to_string()],
            &[("JOURNAL", "delete")],
            report,
        ) {
            let variant = format!("effectum as shipped concurrency={c}");
            crate::peers::record(report, "burndown", &variant, &v, &FIGURES);
        }
    }
    Ok(())
}

/// Enqueues and drains the jobs on an engine at `place`, and records the figures as `variant`.
async fn measure(
    cfg: &Config,
    report: &mut Report,
    place: &Place,
    variant: &str,
    c: usize,
) -> BenchResult<String> {
    let n = cfg.burndown_jobs;
    let variant = variant.to_owned();
    let (engine, app, durability) = place.start(Some(c)).await?;
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
    // Other processes drain a shared file or schema with this one when asked.
    let children = match place {
        Place::File {
            path,
            sync,
            ownership,
        } => super::steps::children(cfg, *ownership, path, *sync, c)?,
        Place::Postgres(schema) => crate::pg::processes::children(cfg, schema, c)?,
    };
    let usage = Usage::now();
    let drain = Instant::now();
    let children_ns = super::steps::drain(&jobs, &app, children, n, c).await?;
    let drained = drain.elapsed();
    Usage::now().report_since(
        &usage,
        n,
        |metric, value, unit| Metric::new("burndown", metric, value, unit).variant(&variant),
        report,
    );
    super::steps::report_children_cpu(report, "burndown", &variant, &usage, children_ns, n);
    super::steps::check_all_completed(&jobs).await?;
    drop(jobs);
    drop(client);
    engine.shutdown().await?;

    report.push(
        Metric::new("burndown", "enqueue_per_s", rate(n, enqueued), "jobs/s").variant(&variant),
    );
    report
        .push(Metric::new("burndown", "drain_per_s", rate(n, drained), "jobs/s").variant(&variant));
    report.durability("burndown", &variant, durability);
    report.load("burndown", &variant);
    Ok(variant)
}

/// `burndown` on PostgreSQL at concurrency `c`, then graphile-worker on the same server:
/// batched (the pair's other half) and with its defaults (shown, never divided by).
async fn run_postgres(
    cfg: &Config,
    report: &mut Report,
    peers: &mut Peers,
    c: usize,
) -> BenchResult {
    let place = Place::Postgres(crate::pg::Schema::fresh().await?);
    let variant = crate::compare::burndown_variant_postgres(cfg, c);
    let measured = measure(cfg, report, &place, &variant, c).await;
    place.clean_up().await?;
    let variant = measured?;
    for (mode, jobs) in [
        ("batched", crate::compare::graphile_jobs(cfg, true)),
        ("defaults", crate::compare::graphile_jobs(cfg, false)),
    ] {
        if let Some(v) = peers.run(
            "graphile-worker",
            &[jobs.to_string(), c.to_string(), mode.into()],
            &[],
            report,
        ) {
            let variant = format!("graphile {mode} {variant}");
            crate::peers::record(report, "burndown", &variant, &v, &FIGURES);
        }
    }
    Ok(())
}

/// The figures of the peers' JSON lines, and their units.
const FIGURES: [(&str, &str); 3] = [
    ("enqueue_per_s", "jobs/s"),
    ("drain_per_s", "jobs/s"),
    ("cpu_us_total_per_unit", "us"),
];
