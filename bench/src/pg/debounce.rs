//! `debounce --backend postgres`: the `debounce` workload (1,000 instances x 100 events from 64
//! callers, `max_events = 100`, every add committed before it returns) on a fresh schema.

use std::sync::Arc;

use durable_jobs::Engine;

use super::Schema;
use crate::jobs::{BatchApp, BatchJobs};
use crate::report::Report;
use crate::workloads::debounce::{drive, Targets};
use crate::{BenchResult, Config};

/// The variant of every figure.
const VARIANT: &str = "backend=postgres";

pub(crate) async fn run(cfg: &Config, report: &mut Report) -> BenchResult {
    let schema = Schema::fresh().await?;
    let result = async {
        let durability = schema.durability().await?;
        let app = Arc::new(BatchApp::new(cfg.debounce_instances * cfg.debounce_events));
        let engine = Engine::<BatchJobs>::builder()
            .postgres_options(schema.options())
            .app(app.clone())
            .start()
            .await?;
        // The targets on PostgreSQL: a quarter of SQLite's rate, twice its p99.
        let targets = Targets {
            adds_per_s: 25_000.0,
            add_p99_ms: 20.0,
        };
        drive(cfg, engine, &app, VARIANT, report, targets).await?;
        report.durability("debounce", VARIANT, durability);
        report.load("debounce", VARIANT);
        BenchResult::Ok(())
    }
    .await;
    schema.drop_now().await?;
    result
}
