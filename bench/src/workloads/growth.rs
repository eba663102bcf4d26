//! `growth`: the costs of a service as its history grows. One SQLite file is grown to a small
//! size (10,000 finished runs, 1,000 instances) and measured, then to a large one (1,000,000
//! finished runs, 100,000 instances) and measured again, through the public API, and each
//! figure's large/small ratio is printed.
//!
//! Finished runs are seeded with SQL while no engine runs (completed, 1% failed, 0.5%
//! cancelled, two jobs, a `tenant` label of 100 values, created a millisecond apart a week
//! back); instances with `add` calls. The engine keeps runs forever here (retention would
//! otherwise delete the seeded history). At each size a fresh engine starts (cold caches), and
//! measures: the time until it knows every instance key; 10,000 debounce adds to new instances
//! and 10,000 to 1,000 existing ones (64 callers); the drain of 20,000 three-step runs;
//! `trigger_and_wait` p50/p99; the first page (50 runs) of each `get_runs` filter, median of 20
//! calls; the database and log size; the process's resident memory.
//!
//! With `--backend postgres` the same history grows in a fresh schema of the server (see
//! `growth_postgres`), and the database size is that of the schema's tables.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::bench_internals::{instance_keys_known, iso_timestamp};
use durable_jobs::prelude::*;
use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
use durable_jobs::steps::{RunCursor, RunFilter, RunStatus, StepOptions, TriggerOptions};
use durable_jobs::{Engine, JobSet, Registered, Registry};

use crate::report::{Metric, Report, Target};
use crate::stats::{median, percentile, rate, sorted_millis};
use crate::step_jobs::{Num, OneStep, StepApp, ThreeSteps};
use crate::{BenchResult, Config};

/// Where the history grows.
enum Place {
    /// A SQLite file.
    File(PathBuf),
    /// A schema of a PostgreSQL server.
    Postgres(crate::pg::Schema),
}

impl Place {
    /// The workload's name in the report: one per store.
    fn workload(&self) -> &'static str {
        match self {
            Place::File(_) => "growth",
            Place::Postgres(_) => "growth-postgres",
        }
    }

    /// An engine on the store, keeping every run.
    async fn start(&self, app: Arc<StepApp>) -> BenchResult<Engine<GrowthJobs>> {
        let builder = Engine::<GrowthJobs>::builder();
        let builder = match self {
            Place::File(path) => builder.sqlite(path),
            Place::Postgres(schema) => builder.postgres_options(schema.options()),
        };
        Ok(builder
            .step_options(StepOptions::default().keep_runs_forever())
            .app(app)
            .start()
            .await?)
    }

    /// Inserts finished runs until the store holds `target` runs.
    async fn seed_runs(&self, target: usize) -> BenchResult {
        match self {
            Place::File(path) => seed_runs(path, target),
            Place::Postgres(schema) => super::growth_postgres::seed_runs(schema, target).await,
        }
    }

    /// The store's size, while the engine runs (a shutdown checkpoints SQLite's log away).
    async fn sizes(&self) -> BenchResult<Figures> {
        Ok(match self {
            Place::File(path) => {
                let bytes =
                    |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1048576.0;
                vec![
                    ("database_mib", bytes(path), "MiB"),
                    ("log_mib", bytes(&path.with_extension("db-wal")), "MiB"),
                ]
            }
            Place::Postgres(schema) => vec![(
                "database_mib",
                super::growth_postgres::database_mib(schema).await?,
                "MiB",
            )],
        })
    }
}

/// Sums what it is sent; flushes a day after the first event (never during the benchmark).
pub(crate) struct Tally;

impl Job for Tally {
    const NAME: &'static str = "bench_tally";
    const KIND: JobKind = JobKind::Debounce;
}

impl DebounceJob<Arc<StepApp>> for Tally {
    type Event = u32;
    type State = u64;
    type Error = std::convert::Infallible;

    fn config(&self) -> DebounceConfig {
        DebounceConfig::new(Duration::from_secs(24 * 3600))
    }

    fn on_event(&self, state: Option<u64>, event: u32, _ctx: &EventContext) -> u64 {
        state.unwrap_or(0) + u64::from(event)
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<u64>,
        _app: &Arc<StepApp>,
    ) -> Result<(), std::convert::Infallible> {
        Ok(())
    }
}

/// The registry of the `growth` workload.
pub(crate) struct GrowthJobs;

impl Registered<GrowthJobs> for ThreeSteps {}
impl Registered<GrowthJobs> for OneStep {}
impl Registered<GrowthJobs> for Tally {}

impl Registry for GrowthJobs {
    type App = Arc<StepApp>;
    fn register(jobs: &mut JobSet<Arc<StepApp>>) {
        jobs.step_job(ThreeSteps).step_job(OneStep).debounce(Tally);
    }
}

/// The sizes of one measurement.
#[derive(Clone, Copy)]
struct Size {
    name: &'static str,
    runs: usize,
    instances: usize,
}

/// What one size measured: (metric, value, unit), in order.
type Figures = Vec<(&'static str, f64, &'static str)>;

/// The sizes measured: a small history, then a large one.
const SIZES: [Size; 2] = [
    Size {
        name: "small",
        runs: 10_000,
        instances: 1_000,
    },
    Size {
        name: "large",
        runs: 1_000_000,
        instances: 100_000,
    },
];

/// The sizes of `--quick`.
const QUICK_SIZES: [Size; 2] = [
    Size {
        name: "small",
        runs: 2_000,
        instances: 200,
    },
    Size {
        name: "large",
        runs: 50_000,
        instances: 5_000,
    },
];

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    let place = if cfg.backend == crate::Backend::Postgres {
        let schema = crate::pg::Schema::fresh().await?;
        report.note(format!(
            "growth-postgres: commits {}",
            schema.durability().await?
        ));
        Place::Postgres(schema)
    } else {
        let path = dir.join("growth.db");
        // Creates the schema.
        SqliteStore::open(SqliteOptions::file(&path))?.close_blocking();
        Place::File(path)
    };
    let result = grow_and_measure(cfg, &place, report).await;
    if let Place::Postgres(schema) = place {
        schema.drop_now().await?;
    }
    result
}

/// Grows the history of `place` to each size and measures it there.
async fn grow_and_measure(cfg: &Config, place: &Place, report: &mut Report) -> BenchResult {
    let sizes = if cfg.quick { QUICK_SIZES } else { SIZES };
    let per_phase = if cfg.quick { 2_000 } else { 10_000 };
    let drain_runs = if cfg.quick { 2_000 } else { 20_000 };
    let latency_calls = if cfg.quick { 100 } else { 1_000 };
    let workload = place.workload();
    if let Place::Postgres(_) = place {
        // Creates the schema.
        place
            .start(Arc::new(StepApp::new(true)))
            .await?
            .shutdown()
            .await?;
    }
    let mut measured: Vec<(Size, Figures)> = Vec::new();
    let mut instances = 0;
    for size in sizes {
        eprintln!(
            "growth: growing to {} runs and {} instances",
            size.runs, size.instances
        );
        place.seed_runs(size.runs).await?;
        {
            let engine = place.start(Arc::new(StepApp::new(true))).await?;
            let ids = (instances..size.instances)
                .map(|n| format!("i{n}"))
                .collect();
            adds(&engine, ids).await?;
            instances = instances.max(size.instances);
            engine.shutdown().await?;
        }
        let touched = sizes[0].instances.min(per_phase / 10);
        let figures = measure(place, size, per_phase, drain_runs, latency_calls, touched).await?;
        for &(metric, value, unit) in &figures {
            let mut m = Metric::new(workload, metric, value, unit).variant(size.name);
            // A first page under 5 ms at the large size; `offset` reads what it skips.
            if size.name == "large"
                && metric.starts_with("get_runs_")
                && metric != "get_runs_offset_10k_ms"
            {
                m = m.target(Target::Below(5.0));
            }
            report.push(m);
        }
        report.load(workload, size.name);
        measured.push((size, figures));
    }
    if let [(_, small), (_, large)] = measured.as_slice() {
        for &(metric, s, _) in small {
            let Some(&(_, l, _)) = large.iter().find(|f| f.0 == metric) else {
                continue;
            };
            if s == 0.0 || l == 0.0 {
                continue;
            }
            // Sizes, memory and the start's read of every key grow with history by design, and
            // so does `offset`, which reads the runs it skips in each status's range until
            // the ranges hold that many runs; the other figures must not. A rate falls as its
            // cost rises, so its ratio is small over large: every ratio reads "how much more
            // it costs".
            let m = if matches!(
                metric,
                "database_mib" | "log_mib" | "rss_mib" | "keys_known_ms" | "get_runs_offset_10k_ms"
            ) {
                Metric::new(workload, metric, l / s, "x").variant("large/small")
            } else {
                let ratio = if metric.ends_with("_per_s") {
                    s / l
                } else {
                    l / s
                };
                Metric::new(workload, metric, ratio, "x")
                    .variant("large/small cost")
                    .target(Target::Below(2.0))
            };
            report.push(m);
        }
        // Creating an instance against updating one, at the large size.
        let rate_of = |figures: &Figures, name: &str| {
            figures
                .iter()
                .find(|f| f.0 == name)
                .map_or(f64::NAN, |f| f.1)
        };
        report.push(
            Metric::new(
                workload,
                "existing_over_fresh_adds",
                rate_of(large, "adds_existing_per_s") / rate_of(large, "adds_fresh_per_s"),
                "x",
            )
            .variant("large")
            .target(Target::Below(1.5)),
        );
    }
    Ok(())
}

/// Inserts finished runs until the file holds `target` runs.
fn seed_runs(path: &Path, target: usize) -> BenchResult {
    let mut conn = rusqlite::Connection::open(path)?;
    let have: i64 = conn.query_row("SELECT COUNT(*) FROM durably_runs", [], |r| r.get(0))?;
    let have = have as usize;
    if have >= target {
        return Ok(());
    }
    // A millisecond apart, from a week back.
    let base = Timestamp::now_system() - Duration::from_secs(7 * 24 * 3600);
    let tx = conn.transaction()?;
    {
        let mut run = tx.prepare(
            "INSERT INTO durably_runs (id, job_name, input, status, labels, output, error,
                completed_step_count, current_step_index, started_at, completed_at, created_at,
                updated_at)
             VALUES (?1, ?2, '{\"i\":0}', ?3, ?4, ?5, ?6, 3, 3, ?7, ?7, ?7, ?7)",
        )?;
        let mut label = tx.prepare(
            "INSERT INTO durably_run_labels (run_id, key, value, created_at)
             VALUES (?1, 'tenant', ?2, ?3)",
        )?;
        for n in have..target {
            let at = iso_timestamp(base + Duration::from_millis(n as u64));
            let id = format!("seed-{n:012}");
            let job = if n % 2 == 0 {
                <ThreeSteps as Job>::NAME
            } else {
                <OneStep as Job>::NAME
            };
            let (status, output, error) = match n % 200 {
                0 | 1 => ("failed", None, Some("seeded failure")),
                2 => ("cancelled", None, None),
                _ => ("completed", Some("{\"sum\":3}"), None),
            };
            let tenant = format!("t{}", n % 100);
            run.execute(rusqlite::params![
                id,
                job,
                status,
                format!("{{\"tenant\":\"{tenant}\"}}"),
                output,
                error,
                at
            ])?;
            label.execute(rusqlite::params![id, tenant, at])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Makes the adds of `ids` from 64 callers; returns how long they took.
async fn adds(engine: &Engine<GrowthJobs>, ids: Vec<String>) -> BenchResult<Duration> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..64 {
        let client = engine.client();
        let (ids, next) = (ids.clone(), next.clone());
        callers.push(tokio::spawn(async move {
            let tally = client.debounce::<Tally>();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                tally.add(id, 1).await?;
            }
            Ok::<(), durable_jobs::Error>(())
        }));
    }
    for c in callers {
        c.await??;
    }
    Ok(start.elapsed())
}

/// The median time of `calls` calls of `f`, in milliseconds, after one unmeasured call.
async fn median_ms<F, Fut>(calls: usize, mut f: F) -> BenchResult<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BenchResult>,
{
    f().await?;
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        f().await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&samples))
}

/// One size's figures, on a fresh engine.
async fn measure(
    place: &Place,
    size: Size,
    per_phase: usize,
    drain_runs: usize,
    latency_calls: usize,
    touched: usize,
) -> BenchResult<Figures> {
    let mut figures: Figures = Vec::new();
    let started = Instant::now();
    let app = Arc::new(StepApp::new(false));
    let engine = place.start(app.clone()).await?;
    instance_keys_known(&engine).await;
    figures.push((
        "keys_known_ms",
        started.elapsed().as_secs_f64() * 1000.0,
        "ms",
    ));

    // Debounce adds: to new instances, then to existing ones not touched since the start.
    let fresh: Vec<String> = (0..per_phase)
        .map(|n| format!("new-{}-{n}", size.name))
        .collect();
    let took = adds(&engine, fresh).await?;
    figures.push(("adds_fresh_per_s", rate(per_phase, took), "adds/s"));
    // The same instances (the small size's, ten adds each) at every size: only the history
    // differs.
    let existing: Vec<String> = (0..per_phase)
        .map(|n| format!("i{}", n % touched.max(1)))
        .collect();
    let took = adds(&engine, existing).await?;
    figures.push(("adds_existing_per_s", rate(per_phase, took), "adds/s"));

    // The drain of three-step runs, triggered behind the closed gate.
    let client = engine.client();
    let three = client.step_job::<ThreeSteps>();
    let mut i = 0;
    while i < drain_runs {
        let end = (i + 500).min(drain_runs);
        three
            .batch_trigger((i..end).map(|i| Num { i: i as u64 }))
            .await?;
        i = end;
    }
    let start = Instant::now();
    app.open();
    super::steps::wait_drained(&three, &app, drain_runs, 100).await?;
    figures.push((
        "drain_runs_per_s",
        rate(drain_runs, start.elapsed()),
        "runs/s",
    ));

    // trigger_and_wait, in sequence.
    let one = client.step_job::<OneStep>();
    let timeout = Duration::from_secs(30);
    one.trigger_and_wait(Num { i: 0 }, TriggerOptions::new(), timeout)
        .await?;
    let mut samples = Vec::with_capacity(latency_calls);
    for i in 0..latency_calls as u64 {
        let t = Instant::now();
        one.trigger_and_wait(Num { i }, TriggerOptions::new(), timeout)
            .await?;
        samples.push(t.elapsed());
    }
    let sorted = sorted_millis(&samples);
    figures.push(("trigger_and_wait_p50_ms", percentile(&sorted, 50.0), "ms"));
    figures.push(("trigger_and_wait_p99_ms", percentile(&sorted, 99.0), "ms"));

    // The first page of each listing.
    let runs = client.runs();
    let deep = runs
        .get_runs(RunFilter::new().limit(1).offset(10_000))
        .await?
        .first()
        .map(RunCursor::of);
    let now = Timestamp::now_system();
    let page = || RunFilter::new().limit(50);
    let mut listings: Vec<(&'static str, RunFilter)> = vec![
        ("get_runs_all_ms", page()),
        ("get_runs_completed_ms", page().status(RunStatus::Completed)),
        (
            "get_runs_pending_none_ms",
            page().status(RunStatus::Pending),
        ),
        ("get_runs_failed_ms", page().status(RunStatus::Failed)),
        ("get_runs_job_ms", page().job_name(<OneStep as Job>::NAME)),
        (
            "get_runs_job_failed_ms",
            page()
                .job_name(<ThreeSteps as Job>::NAME)
                .status(RunStatus::Failed),
        ),
        ("get_runs_label_ms", page().label("tenant", "t7")),
        // The last ten minutes: the drain's runs, at both sizes.
        (
            "get_runs_time_range_ms",
            page()
                .created_since(now - Duration::from_secs(600))
                .created_until(now),
        ),
        ("get_runs_offset_10k_ms", page().offset(10_000)),
    ];
    if let Some(cursor) = deep {
        listings.push(("get_runs_cursor_10k_ms", page().before(cursor)));
    }
    let runs_ref = &runs;
    for (metric, filter) in listings {
        let ms = median_ms(20, || {
            let filter = filter.clone();
            async move {
                runs_ref.get_runs(filter).await?;
                Ok(())
            }
        })
        .await?;
        figures.push((metric, ms, "ms"));
    }
    figures.extend(place.sizes().await?);
    figures.push((
        "rss_mib",
        crate::sys::status_kb("VmRSS").map_or(0.0, |kb| kb as f64 / 1024.0),
        "MiB",
    ));
    drop((three, one, runs, client));
    engine.shutdown().await?;
    Ok(figures)
}
