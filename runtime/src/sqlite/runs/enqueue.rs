//! Creating runs: idempotency keys, the one-pending-run-per-key rule and coalescing.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::codec::*;
use super::statements;
use crate::store::runs::{EnqueueOutcome, Enqueued, NewRun, RunRecord, RunStatus};
use crate::store::StoreError;
use crate::time::Timestamp;

// In range: `created[i]` reads an index that `by_idempotency` and `pending_by_key` took from
// `created` when its run was pushed, and `created` only grows.
#[allow(clippy::indexing_slicing)]
pub(crate) fn enqueue(
    conn: &Connection,
    runs: &[NewRun],
    now: Timestamp,
) -> Result<EnqueueOutcome, StoreError> {
    // Plan first, against the stored runs and those created earlier in this call, so that a
    // conflict leaves nothing written; the writer is the only one writing, so nothing changes
    // between the checks and the inserts.
    #[allow(clippy::large_enum_variant)]
    enum Plan {
        Create,
        Existing(Enqueued),
    }
    let now_s = format_ts(now);
    let mut created: Vec<RunRecord> = Vec::new();
    let mut by_idempotency: HashMap<(&str, &str), usize> = HashMap::new();
    let mut pending_by_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut plans = Vec::with_capacity(runs.len());
    for (index, run) in runs.iter().enumerate() {
        if let Some(key) = &run.idempotency_key {
            if let Some(&i) = by_idempotency.get(&(run.job_name.as_str(), key.as_str())) {
                plans.push(Plan::Existing(Enqueued::Idempotent(created[i].clone())));
                continue;
            }
            let found = query_runs(
                conn,
                "WHERE r.job_name = ?1 AND r.idempotency_key = ?2",
                &[&run.job_name, key],
            )?;
            if let Some(existing) = found.into_iter().next() {
                plans.push(Plan::Existing(Enqueued::Idempotent(existing)));
                continue;
            }
        }
        if let Some(key) = &run.concurrency_key {
            let existing = match pending_by_key.get(&(run.job_name.as_str(), key.as_str())) {
                Some(&i) => Some(created[i].clone()),
                None => query_runs(
                    conn,
                    "WHERE r.job_name = ?1 AND r.concurrency_key = ?2 AND r.status = 'pending' ORDER BY r.created_at, r.id LIMIT 1",
                    &[&run.job_name, key],
                )?
                .pop(),
            };
            if let Some(existing) = existing {
                if run.coalesce {
                    plans.push(Plan::Existing(Enqueued::Coalesced(existing)));
                    continue;
                }
                return Ok(EnqueueOutcome::Conflict {
                    index,
                    existing: Box::new(existing),
                });
            }
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
        created.push(record);
        if let Some(key) = &run.idempotency_key {
            by_idempotency.insert((run.job_name.as_str(), key.as_str()), i);
        }
        if let Some(key) = &run.concurrency_key {
            pending_by_key.insert((run.job_name.as_str(), key.as_str()), i);
        }
        plans.push(Plan::Create);
    }

    let mut insert = conn.prepare_cached(statements::INSERT_RUN).map_err(db)?;
    let mut out = Vec::with_capacity(plans.len());
    let mut created = created.into_iter();
    for (run, plan) in runs.iter().zip(plans) {
        match plan {
            Plan::Existing(e) => out.push(e),
            Plan::Create => {
                insert
                    .execute(params![
                        run.id,
                        run.job_name,
                        run.input,
                        run.idempotency_key,
                        run.concurrency_key,
                        labels_json(&run.labels),
                        now_s
                    ])
                    .map_err(db)?;
                if !run.labels.is_empty() {
                    let mut label = conn
                        .prepare_cached(
                            "INSERT INTO durably_run_labels (run_id, key, value, created_at)
                             VALUES (?1, ?2, ?3, ?4)",
                        )
                        .map_err(db)?;
                    for (k, v) in &run.labels {
                        label.execute(params![run.id, k, v, now_s]).map_err(db)?;
                    }
                }
                let record = created
                    .next()
                    .ok_or_else(|| corrupt("enqueue plan out of step"))?;
                out.push(Enqueued::Created(record));
            }
        }
    }
    Ok(EnqueueOutcome::Done(out))
}
