//! The statements of a run's way through the store when all goes well, shared with the
//! benchmark's raw-SQLite ceiling so that it writes exactly what the store writes.

/// Creates a pending run: id, job, input, idempotency key, concurrency key, labels, time.
pub const INSERT_RUN: &str = "INSERT INTO durably_runs (id, job_name, input, status, idempotency_key, concurrency_key, labels, created_at, updated_at)
     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7)";

/// Leases a claim candidate (id ?1, rowid ?6) to owner ?2 until ?3 at time ?4, fenced on
/// the generation ?5 read with the candidate, so it needs no `RETURNING`.
pub const CLAIM_RUN: &str =
    "UPDATE durably_runs SET status = 'leased', lease_owner = ?2, lease_expires_at = ?3,
        lease_generation = ?5 + 1, started_at = COALESCE(started_at, ?4),
        not_before = NULL, updated_at = ?4
     WHERE rowid = ?6 AND id = ?1 AND lease_generation = ?5
       AND (status = 'pending' OR (status = 'leased' AND lease_expires_at <= ?4))";

/// Whether the execution of generation ?2 still holds run ?1 (rowid ?3): one seek of the
/// table by rowid, the id checked all the same.
pub const HOLDS_RUN: &str = "SELECT 1 FROM durably_runs
     WHERE rowid = ?3 AND id = ?1 AND status = 'leased' AND lease_generation = ?2";

/// A step row: id, run, name, index, status, output, error, started, completed. A
/// single-row `INSERT ... VALUES`: unlike `INSERT ... SELECT`, SQLite runs it without a
/// statement journal (a copy of every page it touches).
pub const INSERT_STEP: &str = r#"INSERT INTO durably_steps (id, run_id, name, "index", status, output, error, started_at, completed_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#;

/// Completes run ?5 (rowid ?7) held at generation ?6 with output ?1 at ?2, step count ?3
/// and index ?4.
pub const COMPLETE_RUN: &str =
    "UPDATE durably_runs SET status = 'completed', output = ?1, error = NULL,
        lease_owner = NULL, lease_expires_at = NULL, not_before = NULL,
        completed_at = ?2, updated_at = ?2, completed_step_count = ?3,
        current_step_index = ?4
     WHERE rowid = ?7 AND id = ?5 AND status = 'leased' AND lease_generation = ?6";

/// The step rows of run ?1 (the cleanup at its end).
pub const DELETE_STEPS: &str = "DELETE FROM durably_steps WHERE run_id = ?1";

/// The log rows of run ?1 (the cleanup at its end).
pub const DELETE_LOGS: &str = "DELETE FROM durably_logs WHERE run_id = ?1";
