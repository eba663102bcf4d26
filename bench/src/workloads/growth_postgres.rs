//! `growth --backend postgres`: the history seeded in a schema of the server, and its size.
//!
//! The seeded runs are the rows the SQLite seeding writes (the store's own columns, with the
//! same values), inserted by one set-based statement per table, then vacuumed and analyzed as
//! autovacuum leaves the tables of a service that has run for a while: the planner knows their
//! sizes and the visibility map lets index-only scans skip the heap.

use std::time::Duration;

use durable_jobs::prelude::*;

use crate::pg::Schema;
use crate::step_jobs::{OneStep, ThreeSteps};
use crate::BenchResult;

/// Inserts finished runs, with their `tenant` labels, until the schema holds `target` runs.
pub(crate) async fn seed_runs(schema: &Schema, target: usize) -> BenchResult {
    let s = schema.name();
    let admin = schema.admin();
    let have: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{s}\".runs"))
        .fetch_one(admin)
        .await?;
    let target = i64::try_from(target)?;
    if have >= target {
        return Ok(());
    }
    // A millisecond apart, from a week back, as milliseconds since the epoch: the engine's
    // precision, exactly.
    let base = (Timestamp::now_system() - Duration::from_secs(7 * 24 * 3600)).as_millis();
    let at = "(timestamptz 'epoch' + ($3 + n) * interval '1 millisecond')";
    let mut tx = admin.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO \"{s}\".runs (id, job_name, input, status, labels, output, error,
                completed_step_count, current_step_index, started_at, completed_at, created_at,
                updated_at)
         SELECT 'seed-' || lpad(n::text, 12, '0'),
                CASE WHEN n % 2 = 0 THEN $4 ELSE $5 END,
                '{{\"i\":0}}',
                CASE WHEN n % 200 < 2 THEN 'failed'
                     WHEN n % 200 = 2 THEN 'cancelled'
                     ELSE 'completed' END,
                '{{\"tenant\":\"t' || n % 100 || '\"}}',
                CASE WHEN n % 200 > 2 THEN '{{\"sum\":3}}' END,
                CASE WHEN n % 200 < 2 THEN 'seeded failure' END,
                3, 3, {at}, {at}, {at}, {at}
           FROM generate_series($1::bigint, $2::bigint - 1) AS n"
    ))
    .bind(have)
    .bind(target)
    .bind(base)
    .bind(<ThreeSteps as Job>::NAME)
    .bind(<OneStep as Job>::NAME)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO \"{s}\".run_labels (run_id, key, value, created_at)
         SELECT 'seed-' || lpad(n::text, 12, '0'), 'tenant', 't' || n % 100, {at}
           FROM generate_series($1::bigint, $2::bigint - 1) AS n"
    ))
    .bind(have)
    .bind(target)
    .bind(base)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for table in ["runs", "run_labels"] {
        sqlx::query(&format!("VACUUM ANALYZE \"{s}\".{table}"))
            .execute(admin)
            .await?;
    }
    Ok(())
}

/// The bytes of the schema's tables with their indexes and TOAST, in MiB.
pub(crate) async fn database_mib(schema: &Schema) -> BenchResult<f64> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(schema.name())
    .fetch_one(schema.admin())
    .await?;
    Ok(bytes as f64 / 1048576.0)
}
