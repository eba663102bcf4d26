//! Creating runs: idempotency keys, the one-pending-run-per-key rule and coalescing.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::codec::{fetch_runs, labels_json, run_columns};
use crate::postgres::codec::{Context, DbTime, Sql};
use crate::store::runs::{EnqueueOutcome, Enqueued, NewRun, RunRecord, RunStatus};
use crate::store::StoreError;
use crate::time::Timestamp;

/// What one attempt at an enqueue found.
pub(crate) enum Attempt {
    /// Every run created or found: commit.
    Done(Vec<Enqueued>),
    /// A run conflicted: roll back, nothing was written.
    Conflict(EnqueueOutcome),
    /// Another transaction created a run with the same idempotency key or pending concurrency
    /// key (or id) between this one's check and its insert: roll back and run again, to find it.
    Raced,
}

/// Creates `runs` inside the caller's transaction, against the stored runs and those created
/// earlier in the same call. The unique indexes on idempotency keys and pending concurrency
/// keys decide between concurrent enqueues: an insert that one of them refuses means another
/// process got there first, and the attempt is made again.
// In range: `created[i]` reads an index that the maps took from `created` when its run was
// pushed, and `created` only grows.
#[allow(clippy::indexing_slicing)]
pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    sql: &Sql,
    runs: &[NewRun],
    now: Timestamp,
) -> Result<Attempt, StoreError> {
    let mut created: Vec<RunRecord> = Vec::new();
    let mut out: Vec<Enqueued> = Vec::with_capacity(runs.len());
    let mut by_idempotency: HashMap<(&str, &str), usize> = HashMap::new();
    let mut pending_by_key: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, run) in runs.iter().enumerate() {
        if let Some(key) = &run.idempotency_key {
            if let Some(&i) = by_idempotency.get(&(run.job_name.as_str(), key.as_str())) {
                out.push(Enqueued::Idempotent(created[i].clone()));
                continue;
            }
            let statement = sql.get(concat!(
                "SELECT ",
                run_columns!(),
                " FROM {s}.runs r WHERE r.job_name = $1 AND r.idempotency_key = $2"
            ));
            let found = fetch_runs(
                &mut *conn,
                sqlx::query(&statement).bind(&run.job_name).bind(key),
            )
            .await?;
            if let Some(existing) = found.into_iter().next() {
                out.push(Enqueued::Idempotent(existing));
                continue;
            }
        }
        if let Some(key) = &run.concurrency_key {
            let existing = match pending_by_key.get(&(run.job_name.as_str(), key.as_str())) {
                Some(&i) => Some(created[i].clone()),
                None => {
                    let statement = sql.get(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM {s}.runs r WHERE r.job_name = $1 AND r.concurrency_key = $2
                            AND r.status = 'pending' ORDER BY r.created_at, r.id LIMIT 1"
                    ));
                    fetch_runs(
                        &mut *conn,
                        sqlx::query(&statement).bind(&run.job_name).bind(key),
                    )
                    .await?
                    .pop()
                }
            };
            if let Some(existing) = existing {
                if run.coalesce {
                    out.push(Enqueued::Coalesced(existing));
                    continue;
                }
                return Ok(Attempt::Conflict(EnqueueOutcome::Conflict {
                    index,
                    existing: Box::new(existing),
                }));
            }
        }
        let inserted = sqlx::query(&sql.get(
            "INSERT INTO {s}.runs (id, job_name, input, status, idempotency_key, concurrency_key,
                                   labels, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7)
             ON CONFLICT DO NOTHING",
        ))
        .bind(&run.id)
        .bind(&run.job_name)
        .bind(&run.input)
        .bind(&run.idempotency_key)
        .bind(&run.concurrency_key)
        .bind(labels_json(&run.labels))
        .bind(DbTime(now))
        .execute(&mut *conn)
        .await
        .context_with(|| format!("creating run {}", run.id))?;
        if inserted.rows_affected() == 0 {
            return Ok(Attempt::Raced);
        }
        if !run.labels.is_empty() {
            let (keys, values): (Vec<&str>, Vec<&str>) = run
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .unzip();
            sqlx::query(&sql.get(
                "INSERT INTO {s}.run_labels (run_id, key, value, created_at)
                 SELECT $1, l.key, l.value, $4 FROM unnest($2::text[], $3::text[]) AS l(key, value)",
            ))
            .bind(&run.id)
            .bind(&keys)
            .bind(&values)
            .bind(DbTime(now))
            .execute(&mut *conn)
            .await
            .context_with(|| format!("labelling run {}", run.id))?;
        }
        let record = RunRecord {
            id: run.id.clone(),
            job_name: run.job_name.clone(),
            input: run.input.clone(),
            status: RunStatus::Pending,
            idempotency_key: run.idempotency_key.clone(),
            concurrency_key: run.concurrency_key.clone(),
            current_step_index: 0,
            completed_step_count: 0,
            progress: None,
            output: None,
            error: None,
            labels: run.labels.clone(),
            lease_owner: None,
            lease_expires_at: None,
            lease_generation: 0,
            attempt: 1,
            not_before: None,
            started_at: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
        };
        let i = created.len();
        if let Some(key) = &run.idempotency_key {
            by_idempotency.insert((run.job_name.as_str(), key.as_str()), i);
        }
        if let Some(key) = &run.concurrency_key {
            pending_by_key.insert((run.job_name.as_str(), key.as_str()), i);
        }
        out.push(Enqueued::Created(record.clone()));
        created.push(record);
    }
    Ok(Attempt::Done(out))
}
