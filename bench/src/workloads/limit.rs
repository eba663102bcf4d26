//! `limit`: the ceilings. Raw rusqlite on a file in WAL mode writes the rows one `steps` run
//! writes (the run row inserted, claimed, three step rows, the run completed), with the store's
//! own schema and statements, 1,000 row writes per transaction, and nothing else: no engine, no
//! JSON, no channel, no async, no reads. The completion also deletes the run's step rows, as the
//! store does by default (`preserve_steps = false`); those deletes ride on the completion and
//! are not counted among the 1,000. `steps` is printed as a share of it.
//!
//! The no-op ceiling (variant `noop`) does the same for `burndown`'s jobs, which have no steps:
//! the inserts of the enqueue phase (1,000 a transaction), then the drain, each job claimed and
//! completed (two row writes, 1,000 a transaction; a run that wrote no step has nothing to clean
//! up). `burndown`'s drain is printed as a share of this drain.

use std::path::Path;
use std::time::Instant;

use durable_jobs::sqlite::Synchronous;
use rusqlite::{params, Connection};

use crate::durability::Durability;
use crate::report::{Metric, Report};
use crate::{sync_name, BenchResult, Config};

/// Row writes per run: insert, claim, `steps` step rows, completion.
pub(crate) fn rows_per_run(steps: usize) -> usize {
    3 + steps
}

/// A file in WAL mode at `mode`, with the store's step-job schema.
fn open(path: &Path, mode: Synchronous) -> BenchResult<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync_name(mode))?;
    conn.execute_batch(&durable_jobs::bench_internals::step_job_schema())?;
    Ok(conn)
}

/// The claim of a new run (generation 0) as the store writes it; the rows it changed.
fn claim(conn: &Connection, id: &str, rowid: i64) -> rusqlite::Result<usize> {
    use durable_jobs::bench_internals::step_job_statements as sql;
    let until = "2026-01-01T00:00:30.000Z";
    conn.prepare_cached(sql::CLAIM_RUN)?
        .execute(params![id, "worker-1", until, NOW, 0i64, rowid])
}

/// The completion of a run claimed by [`claim`] with `output` after `steps` steps; the rows it
/// changed.
fn complete(
    conn: &Connection,
    id: &str,
    rowid: i64,
    output: &str,
    steps: usize,
) -> rusqlite::Result<usize> {
    use durable_jobs::bench_internals::step_job_statements as sql;
    conn.prepare_cached(sql::COMPLETE_RUN)?.execute(params![
        output,
        NOW,
        steps as i64,
        steps as i64,
        id,
        1i64,
        rowid
    ])
}

/// The time every row of the ceilings is written at, as the store formats it.
const NOW: &str = "2026-01-01T00:00:00.000Z";

/// How many runs of `conn` are completed.
fn completed(conn: &Connection) -> BenchResult<usize> {
    let done: i64 = conn.query_row(
        "SELECT count(*) FROM durably_runs WHERE status = 'completed'",
        [],
        |r| r.get(0),
    )?;
    Ok(done.max(0) as usize)
}

/// Writes `runs` runs' rows with `rows_per_tx` row writes per transaction; returns the seconds
/// and what the connection committed with.
pub(crate) fn write_rows(
    path: &Path,
    mode: Synchronous,
    runs: usize,
    steps: usize,
    rows_per_tx: usize,
) -> BenchResult<(f64, Durability)> {
    let mut conn = open(path, mode)?;

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

    // The store's own statements (`runtime/src/sqlite/runs/`: enqueue, claim,
    // persist_step, finish_run with the default cleanup of step rows), with its ISO-8601 text
    // timestamps. The store reads each candidate's rowid and generation in one query per claim
    // of many runs; here they are known from the insert (a new run is at generation 0).
    use durable_jobs::bench_internals::step_job_statements as sql;
    let now = NOW;
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
                if claim(&tx, &run_id(r), rowids[r])? != 1 {
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
                complete(
                    &tx,
                    &run_id(r),
                    rowids[r],
                    &format!("{{\"sum\":{}}}", 3 * r + 3),
                    steps,
                )?;
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
    let done = completed(&conn)?;
    if done != runs {
        return Err(format!("limit: {done} of {runs} runs completed").into());
    }
    Ok((secs, crate::durability::of_connection(&conn)?))
}

/// The no-op ceiling: inserts `jobs` runs without steps (`rows_per_tx` a transaction), then
/// claims and completes each (`rows_per_tx` row writes a transaction).
pub(crate) fn write_noop(
    path: &Path,
    mode: Synchronous,
    jobs: usize,
    rows_per_tx: usize,
) -> BenchResult<NoopCeiling> {
    use durable_jobs::bench_internals::step_job_statements as sql;
    let mut conn = open(path, mode)?;
    let now = NOW;
    let run_id = |r: usize| format!("01JNOOP{r:019}");
    let rows_per_tx = rows_per_tx.max(2);

    // As `batch_trigger` writes them: the input and output of `()` are `null`.
    let start = Instant::now();
    let mut rowids = Vec::with_capacity(jobs);
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(rows_per_tx) {
        let tx = conn.transaction()?;
        for &r in chunk {
            tx.prepare_cached(sql::INSERT_RUN)?.execute(params![
                run_id(r),
                "bench_noop",
                "null",
                None::<String>,
                None::<String>,
                "{}",
                now
            ])?;
            rowids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
    }
    let enqueue = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let cpu = crate::sys::thread_cpu_ns();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(rows_per_tx / 2) {
        let tx = conn.transaction()?;
        for &r in chunk {
            let id = run_id(r);
            let claimed = claim(&tx, &id, rowids[r])?;
            if claimed != 1 || complete(&tx, &id, rowids[r], "null", 0)? != 1 {
                return Err(format!("limit: no-op run {r} was not claimed and completed").into());
            }
        }
        tx.commit()?;
    }
    let drain = start.elapsed().as_secs_f64();
    let drain_cpu_us_per_job = crate::sys::thread_cpu_ns()
        .zip(cpu)
        .map(|(after, before)| after.saturating_sub(before) as f64 / 1_000.0 / jobs.max(1) as f64);
    let done = completed(&conn)?;
    if done != jobs {
        return Err(format!("limit: {done} of {jobs} no-op runs completed").into());
    }
    Ok(NoopCeiling {
        enqueue,
        drain,
        drain_cpu_us_per_job,
        durability: crate::durability::of_connection(&conn)?,
    })
}

/// What the no-op ceiling measured.
pub(crate) struct NoopCeiling {
    /// Seconds of the inserts.
    enqueue: f64,
    /// Seconds of the claims and completions.
    drain: f64,
    /// CPU microseconds of the drain per job (the thread's own, whatever the machine's load).
    drain_cpu_us_per_job: Option<f64>,
    durability: Durability,
}

pub(crate) async fn run(cfg: &Config, dir: &Path, report: &mut Report) -> BenchResult {
    for mode in &cfg.sync {
        let path = dir.join(format!("limit-{}.db", sync_name(*mode)));
        let (runs, steps) = (cfg.steps_runs, cfg.steps_per_run);
        let p = path.clone();
        let mode = *mode;
        let (secs, durability) =
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
        report.durability("limit", &variant, durability);
        report.load("limit", &variant);

        let path = dir.join(format!("limit-noop-{}.db", sync_name(mode)));
        let jobs = cfg.burndown_jobs;
        let noop =
            tokio::task::spawn_blocking(move || write_noop(&path, mode, jobs, 1_000)).await??;
        let variant = format!("noop synchronous={}", sync_name(mode));
        report.push(
            Metric::new(
                "limit",
                "enqueue_per_s",
                jobs as f64 / noop.enqueue,
                "jobs/s",
            )
            .variant(&variant),
        );
        report.push(
            Metric::new("limit", "drain_per_s", jobs as f64 / noop.drain, "jobs/s")
                .variant(&variant),
        );
        if let Some(cpu) = noop.drain_cpu_us_per_job {
            report.push(Metric::new("limit", "drain_cpu_us_per_unit", cpu, "us").variant(&variant));
        }
        report.durability("limit", &variant, noop.durability);
        report.load("limit", &variant);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_completes_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let (secs, durability) =
            write_rows(&dir.path().join("l.db"), Synchronous::Normal, 50, 3, 7).unwrap();
        assert!(secs > 0.0);
        assert_eq!(durability.to_string(), "wal/NORMAL");
    }

    #[test]
    fn the_noop_ceiling_claims_and_completes_every_job() {
        let dir = tempfile::tempdir().unwrap();
        let noop = write_noop(&dir.path().join("n.db"), Synchronous::Full, 55, 10).unwrap();
        assert!(noop.enqueue > 0.0 && noop.drain > 0.0);
        assert!(noop.drain_cpu_us_per_job.unwrap() > 0.0);
        assert_eq!(noop.durability.to_string(), "wal/FULL");
    }
}
