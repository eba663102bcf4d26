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

    // The store's own statements (`runtime/src/store/sqlite/runs.rs`: enqueue, claim,
    // persist_step, finish_run with the default cleanup of step rows), with its ISO-8601 text
    // timestamps. The store reads each candidate's rowid and generation in one query per claim
    // of many runs; here they are known from the insert (a new run is at generation 0).
    use durable_jobs::__private::step_job_statements as sql;
    let now = "2026-01-01T00:00:00.000Z";
    let until = "2026-01-01T00:00:30.000Z";
    let run_id = |r: usize| format!("01JRUN{r:020}");
    let mut rowids = vec![0i64; runs];
    let start = Instant::now();
    let mut tx = conn.transaction()?;
    let mut in_tx = 0usize;
    for op in ops {
        match op {
            Op::Insert(r) => {
                tx.prepare_cached(sql::INSERT_RUN)?.execute(params![
                    run_id(r),
                    "bench_three_steps",
                    format!("{{\"i\":{r}}}"),
                    None::<String>,
                    None::<String>,
                    "{}",
                    now
                ])?;
                rowids[r] = tx.last_insert_rowid();
            }
            Op::Claim(r) => {
                let claimed = tx.prepare_cached(sql::CLAIM_RUN)?.execute(params![
                    run_id(r),
                    "worker-1",
                    until,
                    now,
                    0i64,
                    rowids[r]
                ])?;
                if claimed != 1 {
                    return Err(format!("limit: run {r} was not claimed").into());
                }
            }
            Op::Step(r, s) => {
                let holds = tx.prepare_cached(sql::HOLDS_RUN)?.exists(params![
                    run_id(r),
                    1i64,
                    rowids[r]
                ])?;
                if !holds {
                    return Err(format!("limit: run {r} lost its lease").into());
                }
                tx.prepare_cached(sql::INSERT_STEP)?.execute(params![
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
                tx.prepare_cached(sql::COMPLETE_RUN)?.execute(params![
                    format!("{{\"sum\":{}}}", 3 * r + 3),
                    now,
                    steps as i64,
                    steps as i64,
                    run_id(r),
                    1i64,
                    rowids[r]
                ])?;
                tx.prepare_cached(sql::DELETE_STEPS)?.execute([run_id(r)])?;
                tx.prepare_cached(sql::DELETE_LOGS)?.execute([run_id(r)])?;
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
