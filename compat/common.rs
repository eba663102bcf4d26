//! What every compatibility program runs: a step job, triggered and awaited through an engine
//! on an SQLite file, so each program links and runs durable-jobs' SQLite beside the sqlx (or
//! the lack of it) of its own combination.

use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::TriggerOptions;
use durable_jobs::BoxError;

/// What the step job receives as `&App`.
pub struct App;

/// Doubles its input in one memoised step.
#[durable_jobs::step_job(name = "double")]
pub async fn double(step: &mut StepContext, input: u64, _app: &App) -> Result<u64, BoxError> {
    Ok(step.run("double", |_| async move { Ok(input * 2) }).await?)
}

durable_jobs::registry! {
    /// The one job of a compatibility program.
    pub Jobs<App> { Double }
}

/// Runs `double(input)` on a fresh SQLite file and returns its output.
pub async fn run_a_step_job(input: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-compat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let engine = Jobs::builder()
        .sqlite(dir.join("jobs.db"))
        .app(App)
        .start()
        .await?;
    let done = engine
        .client()
        .step_job::<Double>()
        .trigger_and_wait(input, TriggerOptions::new(), Duration::from_secs(30))
        .await?;
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(done.output)
}
