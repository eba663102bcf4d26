//! `limit --backend postgres`: the raw-SQL ceilings on PostgreSQL. The PostgreSQL store's own
//! statements (through `bench_internals`), on one connection, for the rows the workloads write,
//! about 1,000 row writes per transaction, and nothing else: no engine, no writer queue, no
//! channel, no JSON beyond the rows'. In a fresh schema that a store migrated, dropped after.
//!
//! `steps`: per run, its insert (the enqueue), its claim, three fenced step rows and its
//! completion (which deletes its step rows, as the store does by default), runs taken 166 at a
//! time: one enqueue of them, one claim of them, then each run's steps and completion. `noop`:
//! `burndown`'s jobs, the inserts (1,000 a transaction), then the drain, 500 jobs claimed by one
//! claim and completed one by one per transaction (with nothing to clean up, as the engine).

use std::time::Instant;

use durable_jobs::bench_internals::PostgresRunStatements;
use durable_jobs::postgres::PostgresStore;
use durable_jobs::steps::StepStatus;
use durable_jobs::store::runs::{Fence, Finish, FinishOutcome, NewRun, NewStep};
use durable_jobs::store::Backend;
use durable_jobs::Timestamp;
use sqlx::{Connection, PgConnection};

use super::{url, Schema};
use crate::report::{Metric, Report};
use crate::{BenchResult, Config};

/// Row writes per transaction, as the SQLite ceiling.
const ROWS_PER_TX: usize = 1_000;

/// The owner the ceiling claims as.
const OWNER: &str = "ceiling";

pub(crate) async fn run(cfg: &Config, report: &mut Report) -> BenchResult {
    let schema = Schema::fresh().await?;
    let durability = schema.durability().await?;
    let store = PostgresStore::open(schema.options()).await?;
    store.close().await?;
    let statements = PostgresRunStatements::new(schema.name())?;
    let mut conn = PgConnection::connect(&url()).await?;
    let variant = durability.to_string();

    let (runs, steps) = (cfg.steps_runs, cfg.steps_per_run);
    let secs = steps_rows(&mut conn, &statements, runs, steps).await?;
    let rows = runs * crate::workloads::limit::rows_per_run(steps);
    report.push(Metric::new("limit", "rows_per_s", rows as f64 / secs, "rows/s").variant(&variant));
    report.push(Metric::new("limit", "runs_per_s", runs as f64 / secs, "runs/s").variant(&variant));
    report.push(
        Metric::new(
            "limit",
            "steps_per_s",
            (runs * steps) as f64 / secs,
            "steps/s",
        )
        .variant(&variant),
    );
    report.durability("limit", &variant, durability.clone());
    report.load("limit", &variant);

    let jobs = cfg.burndown_jobs;
    let (enqueue, drain) = noop_rows(&mut conn, &statements, jobs).await?;
    let variant = format!("noop {durability}");
    report.push(
        Metric::new("limit", "enqueue_per_s", jobs as f64 / enqueue, "jobs/s").variant(&variant),
    );
    report
        .push(Metric::new("limit", "drain_per_s", jobs as f64 / drain, "jobs/s").variant(&variant));
    report.durability("limit", &variant, durability);
    report.load("limit", &variant);

    conn.close().await?;
    schema.drop_now().await
}

/// The time every row of the ceilings is written at.
fn now() -> Timestamp {
    Timestamp::from_millis(1_767_225_600_000)
}

fn new_run(id: String, job: &str, input: String) -> NewRun {
    NewRun {
        id,
        job_name: job.to_owned(),
        input,
        idempotency_key: None,
        concurrency_key: None,
        labels: Default::default(),
        coalesce: false,
    }
}

/// Claims every one of `ids` (the oldest pending runs); their fences.
async fn claim_all(
    conn: &mut PgConnection,
    statements: &PostgresRunStatements,
    count: usize,
) -> BenchResult<Vec<Fence>> {
    let until = Timestamp::from_millis(now().as_millis() + 30_000);
    let claimed = statements.claim(conn, OWNER, now(), until, count).await?;
    if claimed.runs.len() != count {
        return Err(format!("limit: claimed {} of {count} runs", claimed.runs.len()).into());
    }
    Ok(claimed
        .runs
        .into_iter()
        .map(|run| Fence {
            run_id: run.id,
            generation: run.generation,
            hint: run.hint,
        })
        .collect())
}

async fn complete(
    conn: &mut PgConnection,
    statements: &PostgresRunStatements,
    fence: &Fence,
    output: Option<String>,
    steps: usize,
) -> BenchResult {
    // As the engine: a run that wrote no step or log has nothing to clean up.
    let cleanup = steps > 0;
    let finish = Finish::Completed {
        output,
        completed_step_count: steps as u64,
        current_step_index: steps as u64,
    };
    match statements
        .finish_run(conn, fence, &finish, cleanup, now())
        .await?
    {
        FinishOutcome::Completed => Ok(()),
        other => Err(format!("limit: run {} ended {other:?}", fence.run_id).into()),
    }
}

async fn enqueue(
    conn: &mut PgConnection,
    statements: &PostgresRunStatements,
    runs: &[NewRun],
) -> BenchResult {
    match statements.enqueue(conn, runs, now()).await? {
        Some(_) => Ok(()),
        None => Err("limit: an enqueue conflicted".into()),
    }
}

/// Writes `runs` runs of `steps` steps each; returns the seconds.
async fn steps_rows(
    conn: &mut PgConnection,
    statements: &PostgresRunStatements,
    runs: usize,
    steps: usize,
) -> BenchResult<f64> {
    let per_tx = (ROWS_PER_TX / crate::workloads::limit::rows_per_run(steps)).max(1);
    let start = Instant::now();
    let mut next = 0;
    while next < runs {
        let chunk: Vec<NewRun> = (next..runs.min(next + per_tx))
            .map(|r| {
                new_run(
                    format!("01JRUN{r:020}"),
                    "bench_three_steps",
                    format!("{{\"i\":{r}}}"),
                )
            })
            .collect();
        next += chunk.len();
        let mut tx = conn.begin().await?;
        enqueue(&mut tx, statements, &chunk).await?;
        for (i, fence) in claim_all(&mut tx, statements, chunk.len())
            .await?
            .iter()
            .enumerate()
        {
            for s in 0..steps {
                let step = NewStep {
                    id: format!("{}S{s:02}", fence.run_id),
                    name: format!("s{s}"),
                    index: s as u64,
                    status: StepStatus::Completed,
                    output: Some((i + s).to_string()),
                    error: None,
                    started_at: now(),
                    completed_at: now(),
                };
                if !statements.persist_step(&mut tx, fence, &step, &[]).await? {
                    return Err(format!("limit: run {} lost its lease", fence.run_id).into());
                }
            }
            let output = Some(format!("{{\"sum\":{}}}", 3 * i + 3));
            complete(&mut tx, statements, fence, output, steps).await?;
        }
        tx.commit().await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Inserts `jobs` runs without steps, then claims and completes them; returns the seconds of
/// each phase.
async fn noop_rows(
    conn: &mut PgConnection,
    statements: &PostgresRunStatements,
    jobs: usize,
) -> BenchResult<(f64, f64)> {
    let start = Instant::now();
    let mut next = 0;
    while next < jobs {
        let chunk: Vec<NewRun> = (next..jobs.min(next + ROWS_PER_TX))
            .map(|r| new_run(format!("01JNOOP{r:019}"), "bench_noop", "null".to_owned()))
            .collect();
        next += chunk.len();
        let mut tx = conn.begin().await?;
        enqueue(&mut tx, statements, &chunk).await?;
        tx.commit().await?;
    }
    let enqueue = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let count = left.min(ROWS_PER_TX / 2);
        left -= count;
        let mut tx = conn.begin().await?;
        for fence in claim_all(&mut tx, statements, count).await? {
            complete(&mut tx, statements, &fence, Some("null".to_owned()), 0).await?;
        }
        tx.commit().await?;
    }
    Ok((enqueue, start.elapsed().as_secs_f64()))
}
