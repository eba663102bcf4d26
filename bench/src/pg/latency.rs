//! `latency --backend postgres`: `trigger_and_wait` of a one-step job on a fresh schema, in
//! sequence (one warm-up call first, not measured), twice:
//!
//! - `in-process`: the engine that triggers also runs the job;
//! - `across-processes`: this process only triggers and waits; a child process of the bench
//!   (`__pg-stamp <schema>`) on the same schema runs the job. This process's worker runs one
//!   run at a time and claims one ahead: two runs held at its closed gate fill it, so it
//!   claims none of the measured runs. The run's start reaches the child through the store's
//!   `LISTEN`, and its end reaches the waiter the same way.
//!
//! Besides the whole round trip, each run notes when its body started (wall clock, the same
//! machine's), so `start_*` is the time from the trigger call to the body's start: the figure
//! queues such as graphile-worker report.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::prelude::*;
use durable_jobs::steps::{RunFilter, RunStatus, StepJobClient, StepOptions, TriggerOptions};
use durable_jobs::{Engine, JobSet, Registered, Registry};

use super::{url, Schema};
use crate::jobs::wall_us;
use crate::report::{Metric, Report, Target};
use crate::stats::{percentile, sorted_millis};
use crate::step_jobs::{NoOp, StepApp};
use crate::{BenchResult, Config};

/// Input of [`Stamp`]: when the trigger was called (wall clock, µs).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Sent {
    sent_us: u64,
}

/// Output of [`Stamp`]: when its body started (wall clock, µs).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Started {
    started_us: u64,
}

/// One step that returns when the body started.
pub(crate) struct Stamp;

impl Job for Stamp {
    const NAME: &'static str = "bench_pg_stamp";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<Arc<StepApp>> for Stamp {
    type Input = Sent;
    type Output = Started;
    type Error = durable_jobs::steps::StepError;

    async fn run(
        &self,
        step: &mut StepContext,
        _input: Sent,
        _app: &Arc<StepApp>,
    ) -> Result<Started, Self::Error> {
        let started_us = wall_us();
        step.run("only", move |_| async move {
            Ok::<Started, durable_jobs::BoxError>(Started { started_us })
        })
        .await
    }
}

/// The registry of the process that runs [`Stamp`].
pub(crate) struct StampJobs;

impl Registry for StampJobs {
    type App = Arc<StepApp>;
    fn register(jobs: &mut JobSet<Arc<StepApp>>) {
        jobs.step_job(Stamp);
    }
}

impl Registered<StampJobs> for Stamp {}

/// The registry of the process that triggers across processes: [`Stamp`], and [`NoOp`] whose
/// runs, held at the gate, keep this process's worker full.
pub(crate) struct TriggerSide;

impl Registry for TriggerSide {
    type App = Arc<StepApp>;
    fn register(jobs: &mut JobSet<Arc<StepApp>>) {
        jobs.step_job(Stamp).step_job(NoOp);
    }
}

impl Registered<TriggerSide> for Stamp {}
impl Registered<TriggerSide> for NoOp {}

pub(crate) async fn run(cfg: &Config, report: &mut Report) -> BenchResult {
    let schema = Schema::fresh().await?;
    let result = measure_both(cfg, &schema, report).await;
    schema.drop_now().await?;
    result
}

async fn measure_both(cfg: &Config, schema: &Schema, report: &mut Report) -> BenchResult {
    let durability = schema.durability().await?;

    let engine = Engine::<StampJobs>::builder()
        .postgres_options(schema.options())
        .app(Arc::new(StepApp::new(true)))
        .start()
        .await?;
    let samples = measure(&engine, cfg.latency_iterations).await;
    engine.shutdown().await?;
    record(report, "backend=postgres in-process", samples?, &durability);

    let app = Arc::new(StepApp::new(false));
    let engine = Engine::<TriggerSide>::builder()
        .postgres_options(schema.options())
        .step_options(StepOptions::default().max_concurrent_runs(1))
        .app(app.clone())
        .start()
        .await?;
    let held = engine.client().step_job::<NoOp>();
    held.batch_trigger([(), ()]).await?;
    wait_leased(&held, 2).await?;
    // The child only now, so that the held runs are this process's.
    let child = StampChild::spawn(schema.name())?;
    let samples = measure(&engine, cfg.latency_iterations).await;
    app.open();
    drop(held);
    engine.shutdown().await?;
    child.finish()?;
    record(
        report,
        "backend=postgres across-processes",
        samples?,
        &durability,
    );
    Ok(())
}

/// Waits until `n` runs of `runs` are leased (claimed by this process's worker).
async fn wait_leased(runs: &StepJobClient<Arc<StepApp>, NoOp>, n: u32) -> BenchResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs
        .get_runs(RunFilter::new().status(RunStatus::Leased).limit(n))
        .await?
        .len()
        < n as usize
    {
        if Instant::now() > deadline {
            return Err(format!("{n} held runs were not claimed within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Round trips and trigger-to-start times of `n` calls, after one warm-up call.
async fn measure<R: Registry<App = Arc<StepApp>>>(
    engine: &Engine<R>,
    n: usize,
) -> BenchResult<(Vec<Duration>, Vec<Duration>)>
where
    Stamp: Registered<R>,
{
    let client = engine.client();
    let stamp = client.step_job::<Stamp>();
    let timeout = Duration::from_secs(30);
    let sent = || Sent { sent_us: wall_us() };
    stamp
        .trigger_and_wait(sent(), TriggerOptions::new(), timeout)
        .await?;
    let mut round_trips = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    for _ in 0..n {
        let input = sent();
        let sent_us = input.sent_us;
        let t = Instant::now();
        let done = stamp
            .trigger_and_wait(input, TriggerOptions::new(), timeout)
            .await?;
        round_trips.push(t.elapsed());
        starts.push(Duration::from_micros(
            done.output.started_us.saturating_sub(sent_us),
        ));
    }
    Ok((round_trips, starts))
}

fn record(
    report: &mut Report,
    variant: &str,
    (round_trips, starts): (Vec<Duration>, Vec<Duration>),
    durability: &crate::durability::Durability,
) {
    let across = variant.ends_with("across-processes");
    let round_trips = sorted_millis(&round_trips);
    let starts = sorted_millis(&starts);
    for (metric, sorted, p) in [
        ("p50_ms", &round_trips, 50.0),
        ("p99_ms", &round_trips, 99.0),
        ("start_p50_ms", &starts, 50.0),
        ("start_p99_ms", &starts, 99.0),
    ] {
        let mut m = Metric::new("latency", metric, percentile(sorted, p), "ms").variant(variant);
        // The target: a run triggered on one process starts on another within 3 ms
        // (p50).
        if across && metric == "start_p50_ms" {
            m = m.target(Target::Below(3.0));
        }
        report.push(m);
    }
    report.durability("latency", variant, durability.clone());
    report.load("latency", variant);
}

/// The child process that runs [`Stamp`] on a schema.
struct StampChild {
    child: Child,
    stdin: ChildStdin,
}

impl StampChild {
    /// Starts the child on `schema` and waits until its engine runs.
    fn spawn(schema: &str) -> BenchResult<StampChild> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__pg-stamp")
            .arg(schema)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the stamp child has no pipes".into());
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(
                format!("the stamp child said `{}` instead of `ready`", line.trim()).into(),
            );
        }
        Ok(StampChild { child, stdin })
    }

    /// Ends the child's input, on which it shuts its engine down, and waits for it.
    fn finish(mut self) -> BenchResult {
        drop(self.stdin);
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the stamp child ended with {status}").into());
        }
        Ok(())
    }
}

/// The child: `__pg-stamp <schema>`. Runs [`Stamp`] on the schema until its input ends.
pub(crate) fn child(args: &[String]) -> ExitCode {
    let run = || -> BenchResult {
        let [_, schema] = args else {
            return Err("usage: __pg-stamp <schema>".into());
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let engine = Engine::<StampJobs>::builder()
                .postgres_options(
                    durable_jobs::postgres::PostgresOptions::new(url()).schema(schema),
                )
                .app(Arc::new(StepApp::new(true)))
                .start()
                .await?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "ready")?;
            stdout.flush()?;
            tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await?;
            engine.shutdown().await?;
            BenchResult::Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: stamp child: {e}");
            ExitCode::FAILURE
        }
    }
}
