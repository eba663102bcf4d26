//! `limit`: the ceiling. Raw rusqlite on a file in WAL mode writes the rows one `steps` run
//! writes (the run row inserted, claimed, three step rows, the run completed), with the store's
//! own schema and statements, 1,000 row writes per transaction, and nothing else: no engine, no
//! JSON, no channel, no async, no reads. The completion also deletes the run's step rows, as the
//! store does by default (`preserve_steps = false`); those deletes ride on the completion and
//! are not counted among the 1,000. `steps` is printed as a share of it.

use std::path::Path;
use std::time::Instant;

use durable_jobs::Synchronous;
use rusqlite::{params, Connection};

use crate::report::{Metric, Report};
use crate::{sync_name, BenchResult, Config};

/// Row writes per run: insert, claim, `steps` step rows, completion.
pub(crate) fn rows_per_run(steps: usize) -> usize {
    3 + steps
}

/// Writes `runs` runs' rows with `rows_per_tx` row writes per transaction; returns the seconds.
pub(crate) fn write_rows(
    path: &Path,
    mode: Synchronous,
    runs: usize,
    steps: usize,
    rows_per_tx: usize,
) -> BenchResult<f64> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync_name(mode))?;
    conn.execute_batch(&durable_jobs::__private::step_job_schema())?;

    // Every operation of every run, in the order a worker would do them.
    #[derive(Clone, Copy)]
    enum Op {
        Insert(usize),
        Claim(usize),
        Step(usize, usize),
        Complete(usize),
    }
    let ops = (0..runs).flat_map(|r| {
        std::iter::once(Op::Insert(r))
            .chain(std::iter::once(Op::Claim(r)))
            .chain((0..steps).map(move |s| Op::Step(r, s)))
            .chain(std::iter::once(Op::Complete(r)))
    });

    // The statements of `runtime/src/store/sqlite/runs.rs` (enqueue, claim, persist_step,
    // finish_run with the default cleanup of step rows), with its ISO-8601 text timestamps.
    let now = "2026-01-01T00:00:00.000Z";
    let until = "2026-01-01T00:00:30.000Z";
    let run_id = |r: usize| format!("01JRUN{r:020}");
    let start = Instant::now();
    let mut tx = conn.transaction()?;
    let mut in_tx = 0usize;
    for op in ops {
        match op {
            Op::Insert(r) => {
                tx.prepare_cached(
                    "INSERT INTO durably_runs (id, job_name, input, status, idempotency_key,
                     concurrency_key, labels, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7)",
                )?
                .execute(params![
                    run_id(r),
                    "bench_three_steps",
                    format!("{{\"i\":{r}}}"),
                    None::<String>,
                    None::<String>,
                    "{}",
                    now
                ])?;
            }
            Op::Claim(r) => {
                let generation: i64 = tx
                    .prepare_cached(
                        "SELECT r.lease_generation FROM durably_runs r WHERE r.id = ?1",
                    )?
                    .query_row([run_id(r)], |row| row.get(0))?;
                tx.prepare_cached(
                    "UPDATE durably_runs SET status = 'leased', lease_owner = ?2,
                     lease_expires_at = ?3, lease_generation = ?5 + 1,
                     started_at = COALESCE(started_at, ?4), not_before = NULL, updated_at = ?4
                     WHERE id = ?1 AND lease_generation = ?5
                       AND (status = 'pending' OR (status = 'leased' AND lease_expires_at <= ?4))",
                )?
                .execute(params![
                    run_id(r),
                    "worker-1",
                    until,
                    now,
                    generation
                ])?;
            }
            Op::Step(r, s) => {
                let holds = tx
                    .prepare_cached(
                        "SELECT 1 FROM durably_runs
                         WHERE id = ?1 AND status = 'leased' AND lease_generation = ?2",
                    )?
                    .exists(params![run_id(r), 1i64])?;
                if !holds {
                    return Err(format!("limit: run {r} lost its lease").into());
                }
                tx.prepare_cached(
                    r#"INSERT INTO durably_steps (id, run_id, name, "index", status, output,
                       error, started_at, completed_at)
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#,
                )?
                .execute(params![
                    format!("01JSTEP{r:018}{s:02}"),
                    run_id(r),
                    format!("s{s}"),
                    s as i64,
                    "completed",
                    (r + s).to_string(),
                    None::<String>,
                    now,
                    now,
                ])?;
            }
            Op::Complete(r) => {
                tx.prepare_cached(
                    "UPDATE durably_runs SET status = 'completed', output = ?1, error = NULL,
                     lease_owner = NULL, lease_expires_at = NULL, not_before = NULL,
                     completed_at = ?2, updated_at = ?2, completed_step_count = ?3,
                     current_step_index = ?4
                     WHERE id = ?5 AND status = 'leased' AND lease_generation = ?6",
                )?
                .execute(params![
                    format!("{{\"sum\":{}}}", 3 * r + 3),
                    now,
                    steps as i64,
                    steps as i64,
                    run_id(r),
                    1i64
                ])?;
                tx.prepare_cached("DELETE FROM durably_steps WHERE run_id = ?1")?
                    .execute([run_id(r)])?;
                tx.prepare_cached("DELETE FROM durably_logs WHERE run_id = ?1")?
                    .execute([run_id(r)])?;
            }
        }
        in_tx += 1;
        if in_tx == rows_per_tx {
            tx.commit()?;
            tx = conn.transaction()?;
            in_tx = 0;
        }
    }
    tx.commit()?;
    let secs = start.elapsed().as_secs_f64();
    let done: i64 = conn.query_row(
        "SELECT count(*) FROM durably_runs WHERE status = 'completed'",
        [],
        |r| r.get(0),
    )?;
    if done as usize != runs {
        return Err(format!("limit: {done} of {runs} runs completed").into());
    }
    Ok(secs)
}

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    for mode in &cfg.sync {
        let path = dir.join(format!("limit-{}.db", sync_name(*mode)));
        let (runs, steps) = (cfg.steps_runs, cfg.steps_per_run);
        let p = path.clone();
        let mode = *mode;
        let secs =
            tokio::task::spawn_blocking(move || write_rows(&p, mode, runs, steps, 1_000)).await??;
        let variant = format!("synchronous={}", sync_name(mode));
        let rows = runs * rows_per_run(steps);
        report.push(
            Metric::new("limit", "rows_per_s", rows as f64 / secs, "rows/s").variant(&variant),
        );
        report.push(
            Metric::new("limit", "runs_per_s", runs as f64 / secs, "runs/s").variant(&variant),
        );
        report.push(
            Metric::new(
                "limit",
                "steps_per_s",
                (runs * steps) as f64 / secs,
                "steps/s",
            )
            .variant(&variant),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_completes_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let secs = write_rows(&dir.path().join("l.db"), Synchronous::Normal, 50, 3, 7).unwrap();
        assert!(secs > 0.0);
    }
}
