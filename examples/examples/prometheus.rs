//! Metrics for Prometheus: the engine records through the `metrics` facade (the `metrics`
//! feature of durable-jobs), and `metrics-exporter-prometheus` serves what it recorded on
//! `http://127.0.0.1:9000/metrics`.
//!
//! A few jobs of each kind run at start: two heartbeats, a sync that fails and is retried once,
//! a webhook batch, two order events and three imports (one of which fails). Then the example
//! serves until Ctrl-C, refreshing the step-run gauges every two seconds.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example prometheus
//! curl -s http://127.0.0.1:9000/metrics | grep durable_jobs_
//! ```
//!
//! `METRICS_ADDR` changes the listening address. With `DATABASE_PATH` set, the jobs are kept in
//! that SQLite file with `Synchronous::Full` (so the log-sync histogram has samples too) instead
//! of in memory. The metrics are listed in `docs/metrics.md`.

use std::net::SocketAddr;
use std::time::Duration;

use durable_jobs::metrics::SQLITE_WRITE_GROUP_SIZE;
use durable_jobs::prelude::*;
use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::{StepError, TriggerOptions};
use durable_jobs::Engine;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// What every handler receives; nothing here.
pub struct App;

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(&'static str);

/// Checks in with a monitoring service every hour.
#[durable_jobs::continuous(every = "1h")]
async fn heartbeat(_ctx: &mut ContinuousContext<String>, _app: &App) -> Result<(), JobError> {
    Ok(())
}

/// Syncs a calendar; the calendar service is down, so both attempts fail.
#[durable_jobs::continuous(
    every = "1h",
    retry(max_attempts = 2, backoff = constant("1s"), jitter = false)
)]
async fn calendar_sync(_ctx: &mut ContinuousContext<String>, _app: &App) -> Result<(), JobError> {
    Err(JobError("the calendar service is unavailable"))
}

/// Delivers webhooks three at a time, or a minute after the first.
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "1m", max_events = 3)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = String;
    type State = Vec<String>;
    type Error = JobError;

    fn on_event(
        &self,
        batch: Option<Vec<String>>,
        event: String,
        _ctx: &EventContext,
    ) -> Vec<String> {
        let mut batch = batch.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<Vec<String>>,
        _app: &App,
    ) -> Result<(), JobError> {
        Ok(())
    }
}

/// Adds up an order's payments.
pub struct OrderTotals;

#[durable_jobs::task]
impl TaskJob<App> for OrderTotals {
    type State = u64;
    type Event = u64;
    type Error = JobError;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<u64>,
        amount: u64,
        _app: &App,
    ) -> Result<(), JobError> {
        let total = ctx.state().copied().unwrap_or(0) + amount;
        ctx.set_state(total);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u64>, _app: &App) -> Result<(), JobError> {
        Ok(())
    }
}

/// Imports a file in two steps; an empty file name fails the first.
#[durable_jobs::step_job(name = "import")]
async fn import(step: &mut StepContext, file: String, _app: &App) -> Result<usize, StepError> {
    let rows: Vec<String> = step
        .run("read", |_| async {
            if file.is_empty() {
                return Err(JobError("no file name").into());
            }
            Ok(vec![format!("{file}:1"), format!("{file}:2")])
        })
        .await?;
    let stored = step.run("store", |_| async { Ok(rows.len()) }).await?;
    Ok(stored)
}

durable_jobs::registry! {
    /// Every job of this example.
    pub Jobs<App> { Heartbeat, CalendarSync, WebhookBatcher, OrderTotals, Import }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9000".into())
        .parse()?;
    // The recorder is installed before the engine starts, so it sees every metric from the
    // first. Durations get histogram buckets from a millisecond to five minutes; without
    // buckets the exporter renders histograms as summaries.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(SQLITE_WRITE_GROUP_SIZE.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )?
        .install()?;

    let builder = Jobs::builder().app(App);
    let builder = match std::env::var_os("DATABASE_PATH") {
        Some(path) => builder.sqlite(path).synchronous(Synchronous::Full),
        None => builder.in_memory(),
    };
    let engine = builder.start().await?;
    run_jobs(&engine).await?;
    println!("serving metrics on http://{addr}/metrics; Ctrl-C stops");

    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = refresh.tick() => engine.record_step_runs().await?,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    engine.shutdown().await?;
    Ok(())
}

/// A few executions of every kind, one failing job and one failing run.
async fn run_jobs(engine: &Engine<Jobs>) -> durable_jobs::Result<()> {
    let client = engine.client();
    for server in ["server-1", "server-2"] {
        client
            .continuous::<Heartbeat>()
            .start(server, "ok".into())
            .await?;
    }
    // Fails now and again a second later, when its retry policy gives up.
    client
        .continuous::<CalendarSync>()
        .start("team-calendar", "cal-1".into())
        .await?;
    for hook in ["contact.created", "contact.updated", "contact.deleted"] {
        client
            .debounce::<WebhookBatcher>()
            .add("contact-7", hook.into())
            .await?;
    }
    for amount in [1200, 800] {
        client
            .task::<OrderTotals>()
            .send("order-42", amount)
            .await?;
    }
    let imports = client.step_job::<Import>();
    for file in ["january.csv", "february.csv", ""] {
        imports
            .trigger(file.into(), TriggerOptions::default())
            .await?;
    }
    Ok(())
}
