//! `continuous --backend postgres`: the `continuous` workload (10,000 instances running every
//! second, lateness of each run measured for 10 s) on a fresh schema.

use std::sync::Arc;

use durable_jobs::Engine;

use super::Schema;
use crate::jobs::{TickApp, TickJobs};
use crate::report::Report;
use crate::workloads::continuous::measure;
use crate::{BenchResult, Config};

/// The variant of every figure.
const VARIANT: &str = "backend=postgres";

pub(crate) async fn run(cfg: &Config, report: &mut Report) -> BenchResult {
    let schema = Schema::fresh().await?;
    let result = async {
        let durability = schema.durability().await?;
        let app = Arc::new(TickApp::new(cfg.continuous_instances));
        let engine = Engine::<TickJobs>::builder()
            .postgres_options(schema.options())
            .app(app.clone())
            .start()
            .await?;
        measure(cfg, engine, &app, Some(VARIANT), report).await?;
        report.durability("continuous", VARIANT, durability);
        report.load("continuous", VARIANT);
        BenchResult::Ok(())
    }
    .await;
    schema.drop_now().await?;
    result
}
