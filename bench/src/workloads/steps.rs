//! `steps`: 20,000 runs of a three-step job, triggered in batches of 500 (`batch_trigger`), then
//! drained by the engine's step worker (default settings: 100 run bodies at once), for
//! `synchronous=NORMAL` and `FULL`. The worker starts with the engine, so the runs wait at a
//! gate in the job until the trigger phase is over (durably's harness calls `start()` only
//! then). The drain ends when every run's completion is committed.
//!
//! Also the helpers the other step-job workloads share.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::{SqliteOptions, Synchronous};
use durable_jobs::steps::{RunFilter, RunStatus, StepJobClient, StepOptions};
use durable_jobs::store::Ownership;
use durable_jobs::{Engine, StepJob};

use crate::peers::Peers;
use crate::report::{Metric, Report, Target};
use crate::stats::rate;
use crate::step_jobs::{Num, StepApp, StepJobs, ThreeSteps, STEPS_PER_RUN};
use crate::sys::Usage;
use crate::{sync_name, BenchResult, Config};

/// An engine running the step-job workloads' jobs, its gate closed unless `open`.
pub(crate) async fn engine(
    path: &Path,
    sync: Synchronous,
    ownership: Ownership,
    concurrency: Option<usize>,
    open: bool,
) -> BenchResult<(Engine<StepJobs>, Arc<StepApp>)> {
    let app = Arc::new(StepApp::new(open));
    let mut options = StepOptions::default();
    if let Some(c) = concurrency {
        options = options.max_concurrent_runs(c);
    }
    let engine = Engine::<StepJobs>::builder()
        .sqlite_options(SqliteOptions::file(path).ownership(ownership))
        .synchronous(sync)
        .step_options(options)
        .app(app.clone())
        .start()
        .await?;
    Ok((engine, app))
}

/// An engine running the step-job workloads' jobs on the PostgreSQL store `options` points
/// at, its gate closed.
pub(crate) async fn engine_postgres(
    options: durable_jobs::postgres::PostgresOptions,
    concurrency: Option<usize>,
) -> BenchResult<(Engine<StepJobs>, Arc<StepApp>)> {
    let app = Arc::new(StepApp::new(false));
    let mut step_options = StepOptions::default();
    if let Some(c) = concurrency {
        step_options = step_options.max_concurrent_runs(c);
    }
    let engine = Engine::<StepJobs>::builder()
        .postgres_options(options)
        .step_options(step_options)
        .app(app.clone())
        .start()
        .await?;
    Ok((engine, app))
}

/// Where one run of a workload keeps its engine's data.
pub(crate) enum Place {
    /// A SQLite file.
    File {
        path: std::path::PathBuf,
        sync: Synchronous,
        ownership: Ownership,
    },
    /// A fresh schema on the PostgreSQL server.
    Postgres(crate::pg::Schema),
}

impl Place {
    /// Starts the workloads' engine here (gate closed) and reads how it commits.
    pub(crate) async fn start(
        &self,
        concurrency: Option<usize>,
    ) -> BenchResult<(
        Engine<StepJobs>,
        Arc<StepApp>,
        crate::durability::Durability,
    )> {
        match self {
            Place::File {
                path,
                sync,
                ownership,
            } => {
                let (engine, app) = engine(path, *sync, *ownership, concurrency, false).await?;
                let durability = crate::durability::of_engine(&engine).await?;
                Ok((engine, app, durability))
            }
            Place::Postgres(schema) => {
                let (engine, app) = engine_postgres(schema.options(), concurrency).await?;
                Ok((engine, app, schema.durability().await?))
            }
        }
    }

    /// Removes what the run left (the schema; the temp dir goes with the workload).
    pub(crate) async fn clean_up(self) -> BenchResult {
        match self {
            Place::File { .. } => Ok(()),
            Place::Postgres(schema) => schema.drop_now().await,
        }
    }
}

/// Waits until `n` run bodies ended and the completions of the last of them are committed;
/// then checks that no run is left pending, leased or failed.
pub(crate) async fn wait_drained<J: StepJob<Arc<StepApp>>>(
    runs: &StepJobClient<Arc<StepApp>, J>,
    app: &StepApp,
    n: usize,
    concurrency: usize,
) -> BenchResult {
    if !app.wait_ended(n as u64, Duration::from_secs(600)).await {
        return Err(format!(
            "only {} of {n} runs ended after 10 minutes",
            app.ended.load(Ordering::Relaxed)
        )
        .into());
    }
    // Bodies end before their completion is committed; the writer commits in order, so the
    // last runs to end are the last to be committed.
    let last: Vec<String> = app
        .last_ended
        .lock()
        .map(|l| l.iter().rev().take(2 * concurrency).cloned().collect())
        .unwrap_or_default();
    for id in last {
        let run = runs
            .wait_for_run(&id, Some(Duration::from_secs(60)))
            .await?;
        if run.status != RunStatus::Completed {
            return Err(format!("run {id} ended {:?}", run.status).into());
        }
    }
    Ok(())
}

/// Opens the gates of this process and of `children` (when several processes drain the file)
/// and waits until the `n` runs are drained; returns the CPU the children used meanwhile.
pub(crate) async fn drain<J: StepJob<Arc<StepApp>>>(
    runs: &StepJobClient<Arc<StepApp>, J>,
    app: &StepApp,
    children: Option<crate::processes::Children>,
    n: usize,
    concurrency: usize,
) -> BenchResult<Option<u64>> {
    match children {
        None => {
            app.open();
            wait_drained(runs, app, n, concurrency).await?;
            Ok(None)
        }
        Some(mut children) => {
            children.go()?;
            app.open();
            crate::processes::wait_file_drained(runs).await?;
            Ok(Some(children.finish()?))
        }
    }
}

/// Starts the other processes of a drain when `--processes` asks for several (in shared
/// mode), each with its engine open and its gate closed.
pub(crate) fn children(
    cfg: &Config,
    ownership: Ownership,
    path: &Path,
    sync: Synchronous,
    concurrency: usize,
) -> BenchResult<Option<crate::processes::Children>> {
    if ownership == Ownership::Exclusive || cfg.processes < 2 {
        return Ok(None);
    }
    crate::processes::Children::spawn(cfg.processes - 1, path, sync, concurrency).map(Some)
}

/// Reports the CPU per unit of every process of a drain, when children took part.
pub(crate) fn report_children_cpu(
    report: &mut Report,
    workload: &'static str,
    variant: &str,
    parent: &Usage,
    children_ns: Option<u64>,
    n: usize,
) {
    if let Some(children_ns) = children_ns {
        let all = Usage::now().cpu_ns_since(parent) + children_ns;
        report.push(
            Metric::new(
                workload,
                "cpu_us_all_processes_per_unit",
                all as f64 / 1_000.0 / n.max(1) as f64,
                "us",
            )
            .variant(variant),
        );
    }
}

/// Checks that every run completed (after the timing).
pub(crate) async fn check_all_completed<J: StepJob<Arc<StepApp>>>(
    runs: &StepJobClient<Arc<StepApp>, J>,
) -> BenchResult {
    for status in [RunStatus::Pending, RunStatus::Leased, RunStatus::Failed] {
        let left = runs
            .get_runs(RunFilter::new().status(status).limit(5))
            .await?;
        if !left.is_empty() {
            return Err(format!("{} run(s) left {status:?} after the drain", left.len()).into());
        }
    }
    Ok(())
}

pub(crate) async fn run(
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut Peers,
) -> BenchResult {
    if cfg.backend == crate::Backend::Postgres {
        let schema = crate::pg::Schema::fresh().await?;
        return run_one(cfg, report, peers, Place::Postgres(schema)).await;
    }
    for &sync in &cfg.sync {
        for &ownership in &cfg.modes {
            let path = dir.join(format!("steps-{}-{ownership:?}.db", sync_name(sync)));
            let place = Place::File {
                path,
                sync,
                ownership,
            };
            run_one(cfg, report, peers, place).await?;
        }
    }
    Ok(())
}

async fn run_one(
    cfg: &Config,
    report: &mut Report,
    peers: &mut Peers,
    place: Place,
) -> BenchResult {
    let n = cfg.steps_runs;
    let steps = STEPS_PER_RUN as usize;
    let variant = match &place {
        Place::File {
            sync, ownership, ..
        } => crate::compare::steps_variant(cfg, *sync) + &crate::mode_suffix(cfg, *ownership),
        Place::Postgres(_) => crate::compare::steps_variant_postgres(cfg),
    };
    let (engine, app, durability) = place.start(cfg.step_concurrency).await?;
    let feed = match &place {
        Place::Postgres(schema) if cfg.shared_feed => Some(schema.join_feed(&engine).await?),
        _ => None,
    };
    let client = engine.client();
    let runs = client.step_job::<ThreeSteps>();

    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + cfg.steps_batch).min(n);
        runs.batch_trigger((i..end).map(|i| Num { i: i as u64 }))
            .await?;
        i = end;
    }
    let triggered = start.elapsed();
    let concurrency = cfg
        .step_concurrency
        .unwrap_or(StepOptions::default().max_concurrent_runs);
    let children = match &place {
        Place::File {
            path,
            sync,
            ownership,
        } => children(cfg, *ownership, path, *sync, concurrency)?,
        Place::Postgres(schema) => crate::pg::processes::children(cfg, schema, concurrency)?,
    };
    let usage = Usage::now();
    let drain = Instant::now();
    let children_ns = self::drain(&runs, &app, children, n, concurrency).await?;
    let drained = drain.elapsed();
    Usage::now().report_since(
        &usage,
        n,
        |metric, value, unit| Metric::new("steps", metric, value, unit).variant(&variant),
        report,
    );
    report_children_cpu(report, "steps", &variant, &usage, children_ns, n);
    check_all_completed(&runs).await?;
    drop(runs);
    drop(client);
    engine.shutdown().await?;

    report.push(
        Metric::new("steps", "trigger_per_s", rate(n, triggered), "runs/s").variant(&variant),
    );
    let m = Metric::new("steps", "drain_runs_per_s", rate(n, drained), "runs/s").variant(&variant);
    let full = matches!(
        place,
        Place::File {
            sync: Synchronous::Full,
            ..
        }
    );
    report.push(if full {
        m.target(Target::AtLeast(5_000.0))
    } else {
        m
    });
    report.push(
        Metric::new(
            "steps",
            "drain_steps_per_s",
            rate(n * steps, drained),
            "steps/s",
        )
        .variant(&variant),
    );
    report.durability("steps", &variant, durability);
    report.load("steps", &variant);

    let (mode, ownership) = match &place {
        Place::File {
            sync, ownership, ..
        } => (*sync, *ownership),
        Place::Postgres(_) => {
            if let Some(feed) = feed {
                feed.stop().await;
            }
            place.clean_up().await?;
            // Right after ours: durably on the same server, the pair's other half.
            if let Some(v) = peers.run(
                "durably-pg",
                &[
                    "steps".into(),
                    crate::compare::durably_postgres_runs(cfg).to_string(),
                    steps.to_string(),
                    "8".into(),
                    "10".into(),
                ],
                &[],
                report,
            ) {
                crate::peers::record(
                    report,
                    "steps",
                    &format!("durably {variant}"),
                    &v,
                    &PEER_FIGURES,
                );
            }
            return Ok(());
        }
    };
    // Right after ours: the pair's other half (exclusive mode only: the peers hold their
    // files alone too).
    if ownership != Ownership::Exclusive {
        return Ok(());
    }
    if let Some(v) = peers.run(
        "durably",
        &[
            "steps".into(),
            crate::compare::durably_runs(cfg).to_string(),
            steps.to_string(),
            "8".into(),
            "10".into(),
        ],
        &[("SYNC", sync_name(mode))],
        report,
    ) {
        crate::peers::record(
            report,
            "steps",
            &format!("durably {variant}"),
            &v,
            &PEER_FIGURES,
        );
    }
    Ok(())
}

/// The figures of the durably peers' JSON lines, and their units.
const PEER_FIGURES: [(&str, &str); 4] = [
    ("trigger_per_s", "runs/s"),
    ("drain_runs_per_s", "runs/s"),
    ("drain_steps_per_s", "steps/s"),
    ("cpu_us_total_per_unit", "us"),
];
