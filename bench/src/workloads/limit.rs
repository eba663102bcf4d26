//! `limit`: the ceiling. Raw rusqlite on a file in WAL mode writes the rows one `steps` run
//! writes (the run row inserted, claimed, three step rows, the run completed), 1,000 row writes
//! per transaction, with prepared statements and nothing else: no engine, no JSON, no channel,
//! no async. `steps` is printed as a share of it.

use std::path::Path;
use std::time::Instant;

use durable_jobs::Synchronous;
use rusqlite::{params, Connection};

use crate::report::{Metric, Report};
use crate::{sync_name, BenchResult, Config};

/// The tables and indexes of step runs, as the store's migration creates them (kept in step
/// with `runtime/src/store/sqlite/` by hand: compare when the schema changes).
pub(crate) const SCHEMA: &str = "
CREATE TABLE runs (
    id                   TEXT    PRIMARY KEY,
    job_name             TEXT    NOT NULL,
    input                TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    idempotency_key      TEXT,
    concurrency_key      TEXT,
    current_step_index   INTEGER NOT NULL DEFAULT 0,
    completed_step_count INTEGER NOT NULL DEFAULT 0,
    progress             TEXT,
    output               TEXT,
    error                TEXT,
    lease_owner          TEXT,
    lease_expires_at     INTEGER,
    lease_generation     INTEGER NOT NULL DEFAULT 0,
    attempt              INTEGER NOT NULL DEFAULT 1,
    not_before           INTEGER,
    started_at           INTEGER,
    completed_at         INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_claim ON runs (status, created_at, id);
CREATE TABLE steps (
    id           TEXT    PRIMARY KEY,
    run_id       TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    idx          INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    output       TEXT,
    error        TEXT,
    started_at   INTEGER NOT NULL,
    completed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX steps_run ON steps (run_id, idx);
";

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
    conn.execute_batch(SCHEMA)?;

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

    let now: i64 = 1_767_225_600_000;
    let run_id = |r: usize| format!("01JRUN{r:020}");
    let start = Instant::now();
    let mut tx = conn.transaction()?;
    let mut in_tx = 0usize;
    for op in ops {
        {
            match op {
                Op::Insert(r) => {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO runs (id, job_name, input, status, created_at, updated_at)
                         VALUES (?1, 'bench_steps', ?2, 'pending', ?3, ?3)",
                    )?;
                    st.execute(params![run_id(r), format!("{{\"i\":{r}}}"), now])?;
                }
                Op::Claim(r) => {
                    let mut st = tx.prepare_cached(
                        "UPDATE runs SET status = 'leased', lease_owner = 'worker-1',
                         lease_expires_at = ?2, lease_generation = lease_generation + 1,
                         started_at = COALESCE(started_at, ?3), updated_at = ?3
                         WHERE id = ?1 AND status = 'pending'",
                    )?;
                    st.execute(params![run_id(r), now + 30_000, now])?;
                }
                Op::Step(r, s) => {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO steps (id, run_id, name, idx, status, output, started_at,
                         completed_at) VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?6)",
                    )?;
                    st.execute(params![
                        format!("01JSTEP{r:018}{s:02}"),
                        run_id(r),
                        format!("s{s}"),
                        s as i64,
                        (r + s).to_string(),
                        now
                    ])?;
                }
                Op::Complete(r) => {
                    let mut st = tx.prepare_cached(
                        "UPDATE runs SET status = 'completed', output = ?2,
                         completed_step_count = ?3, current_step_index = ?3, completed_at = ?4,
                         updated_at = ?4, lease_owner = NULL, lease_expires_at = NULL
                         WHERE id = ?1 AND status = 'leased' AND lease_generation = 1",
                    )?;
                    st.execute(params![
                        run_id(r),
                        format!("{{\"sum\":{}}}", 3 * r + 3),
                        steps as i64,
                        now
                    ])?;
                }
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
        "SELECT count(*) FROM runs WHERE status = 'completed'",
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
