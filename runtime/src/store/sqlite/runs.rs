//! Step-job runs on SQLite: the schema (migration 2) and the [`RunStore`] operations as plain
//! functions over a connection, run through the store's group-committed writer (`write`) or its
//! read connections (`read`).
//!
//! Table, column and index names follow `@coji/durably` 0.15.0, and timestamps are the same
//! 24-character ISO strings (`YYYY-MM-DDTHH:MM:SS.sssZ`, compared as text). Differences, all for
//! speed or for features upstream lacks:
//! - `attempt` and `not_before` columns (retry policies);
//! - several indexes are partial, so a row only pays for the indexes its status uses
//!   (`status_created` holds pending runs only, `status_lease_expires` leased runs only,
//!   `status_completed` terminal runs only, the idempotency and concurrency indexes keyed rows
//!   only), and `status_created` ends with `id` so the FIFO claim order needs no sort;
//! - `durably_steps` is clustered on `(run_id, "index", id)` (`WITHOUT ROWID`), which replaces
//!   `idx_durably_steps_run_index`, and has no unique index on `(run_id, name)` of completed
//!   steps (dropped by migration 4): a step insert touches one b-tree instead of four. The
//!   uniqueness holds without it: a completed step is only persisted by the execution that holds
//!   the run's lease (the fence below), which never runs a step whose name it has completed;
//! - a step persist is a fence check on the run row and a single-row insert; the run's
//!   `completed_step_count` and `current_step_index` are written at the end of the execution and
//!   computed from the step rows while the run is active.

use std::collections::HashMap;
use std::future::Future;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::steps::run::{Labels, LogLevel, RunCounts, RunFilter, RunStatus, StepStatus};
use crate::steps::store::{
    CancelOutcome, Claimed, ClaimedRun, DeleteOutcome, EnqueueOutcome, Enqueued, Fence, Finish,
    FinishOutcome, LogRow, NewLog, NewRun, NewStep, RunRecord, RunStore, StepRow, StoredStep,
};
use crate::store::{BoxFuture, StoreError};
use crate::time::Timestamp;

/// The step-job tables, applied as migration 2.
pub(crate) const RUNS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS durably_runs (
    id TEXT PRIMARY KEY,
    job_name TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT,
    concurrency_key TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    current_step_index INTEGER NOT NULL DEFAULT 0,
    completed_step_count INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    output TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_expires_at TEXT,
    lease_generation INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    completed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    not_before TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_durably_runs_job_idempotency
    ON durably_runs (job_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_durably_runs_status_concurrency
    ON durably_runs (status, concurrency_key) WHERE concurrency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_durably_runs_status_created
    ON durably_runs (status, created_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_durably_runs_status_lease_expires
    ON durably_runs (status, lease_expires_at) WHERE status = 'leased';
CREATE INDEX IF NOT EXISTS idx_durably_runs_job_created
    ON durably_runs (job_name, created_at);
CREATE INDEX IF NOT EXISTS idx_durably_runs_status_completed
    ON durably_runs (status, completed_at) WHERE completed_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_durably_runs_pending_concurrency
    ON durably_runs (job_name, concurrency_key) WHERE status = 'pending' AND concurrency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_durably_runs_pending_not_before
    ON durably_runs (not_before) WHERE status = 'pending' AND not_before IS NOT NULL;

CREATE TABLE IF NOT EXISTS durably_run_labels (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_durably_run_labels_pk ON durably_run_labels (run_id, key);
CREATE INDEX IF NOT EXISTS idx_durably_run_labels_key_value ON durably_run_labels (key, value);

CREATE TABLE IF NOT EXISTS durably_steps (
    id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    "index" INTEGER NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    PRIMARY KEY (run_id, "index", id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS idx_durably_steps_completed_unique
    ON durably_steps (run_id, name) WHERE status = 'completed';

CREATE TABLE IF NOT EXISTS durably_logs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step_name TEXT,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_durably_logs_run_created ON durably_logs (run_id, created_at);
"#;

/// Migration 4: drops the unique index on completed step names. Maintaining it was a fifth of
/// the store's work per three-step run, and the fence already guarantees what it checked.
pub(crate) const DROP_STEP_NAME_INDEX: &str =
    "DROP INDEX IF EXISTS idx_durably_steps_completed_unique;";

/// The statements of a run's way through the store when all goes well, shared with the
/// benchmark's raw-SQLite ceiling so that it writes exactly what the store writes.
pub mod statements {
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
}

/// How the run store reaches SQLite: a group-committed writer and read connections.
pub(crate) trait SqlExecutor: Send + Sync + 'static {
    /// Runs `op` on the writer connection; an `Err` rolls back `op` alone. Resolves after the
    /// enclosing transaction committed. `op` may run twice (a group replayed after another
    /// write's failure), so it acts on the connection only.
    fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static;

    /// As [`write`](Self::write), for a write a power loss may undo without undoing anything a
    /// caller was told (a claim): with a synced log, its result need not wait for the sync.
    fn write_unsynced<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(op)
    }

    /// Runs `op` on a read connection (committed data).
    fn read<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static;
}

impl<S: SqlExecutor> RunStore for S {
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>> {
        Box::pin(self.write(move |c| enqueue(c, &runs, now)))
    }

    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.read(move |c| get_run(c, &id)))
    }

    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(self.read(move |c| get_runs(c, &filter)))
    }

    fn count_runs(&self, since: Timestamp) -> BoxFuture<'_, Result<Vec<RunCounts>, StoreError>> {
        Box::pin(self.read(move |c| count_runs(c, since)))
    }

    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        let owner = owner.to_owned();
        // Unsynced: a claim lost with the machine leaves its run pending, to be claimed again.
        Box::pin(self.write_unsynced(move |c| claim(c, &owner, now, lease_until, limit)))
    }

    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.read(move |c| next_due(c, &owner, now)))
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.write(move |c| renew_leases(c, &owner, now, lease_until)))
    }

    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| completed_steps(c, &run_id)))
    }

    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |c| persist_step(c, &fence, &step, &logs)))
    }

    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |c| update_progress(c, &fence, progress.as_deref(), &logs, now)))
    }

    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c| insert_logs(c, &run_id, &logs)))
    }

    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c| delete_cancelled_steps(c, &run_id)))
    }

    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>> {
        Box::pin(self.write(move |c| finish_run(c, &fence, &finish, &logs, cleanup, now)))
    }

    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.write(move |c| cancel_run(c, &id, now, cleanup)))
    }

    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.write(move |c| delete_run(c, &id)))
    }

    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c| purge_runs(c, job.as_deref(), before, limit)))
    }

    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| get_steps(c, &run_id)))
    }

    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        let run_id = run_id.to_owned();
        Box::pin(self.read(move |c| get_logs(c, &run_id)))
    }

    fn release_expired_leases(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c| release_expired_leases(c, now)))
    }

    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |c| recover(c, now)))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Database(what.into().into())
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`, as JavaScript's `toISOString` writes it.
pub(crate) fn format_ts(t: Timestamp) -> String {
    let ms = t.as_millis();
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return t.to_rfc3339();
    }
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    // Written by hand: this runs several times per step on the writer thread.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            if let Some(digit) = b.get_mut(at + i) {
                *digit = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, milli);
    String::from_utf8_lossy(&b).into_owned()
}

/// Parses what [`format_ts`] writes, and any other RFC 3339 form.
pub(crate) fn parse_ts(s: &str) -> Result<Timestamp, StoreError> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r.clone())?.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if b.len() == 24 && at(4, b'-') && at(7, b'-') && at(10, b'T') && at(19, b'.') && at(23, b'Z') {
        if let (Some(y), Some(m), Some(d), Some(h), Some(mi), Some(sec), Some(ms)) = (
            digits(0..4),
            digits(5..7),
            digits(8..10),
            digits(11..13),
            digits(14..16),
            digits(17..19),
            digits(20..23),
        ) {
            if (1..=12).contains(&m) && (1..=31).contains(&d) && h < 24 && mi < 60 && sec < 61 {
                let days = days_from_civil(y, m, d);
                return Ok(Timestamp::from_millis(
                    days * 86_400_000 + ((h * 60 + mi) * 60 + sec) * 1000 + ms,
                ));
            }
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|dt| Timestamp::from_chrono(&dt))
        .map_err(|e| corrupt(format!("stored timestamp {s:?} is invalid: {e}")))
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn opt_ts(s: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    s.as_deref().map(parse_ts).transpose()
}

fn labels_json(labels: &Labels) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// The columns [`run_from_row`] reads, in order. Counts of an active run are computed from its
/// step rows (they are only written to the run row when an execution ends).
const RUN_COLUMNS: &str = r#"r.id, r.job_name, r.input, r.status, r.idempotency_key, r.concurrency_key,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COALESCE(MAX(s."index") + 1, 0) FROM durably_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.current_step_index END,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COUNT(*) FROM durably_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.completed_step_count END,
    r.progress, r.output, r.error, r.labels, r.lease_owner, r.lease_expires_at, r.lease_generation,
    r.attempt, r.not_before, r.started_at, r.completed_at, r.created_at, r.updated_at"#;

struct RawRun {
    id: String,
    job_name: String,
    input: String,
    status: String,
    idempotency_key: Option<String>,
    concurrency_key: Option<String>,
    current_step_index: i64,
    completed_step_count: i64,
    progress: Option<String>,
    output: Option<String>,
    error: Option<String>,
    labels: String,
    lease_owner: Option<String>,
    lease_expires_at: Option<String>,
    lease_generation: i64,
    attempt: i64,
    not_before: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
    created_at: String,
    updated_at: String,
}

fn raw_run(row: &Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        id: row.get(0)?,
        job_name: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        idempotency_key: row.get(4)?,
        concurrency_key: row.get(5)?,
        current_step_index: row.get(6)?,
        completed_step_count: row.get(7)?,
        progress: row.get(8)?,
        output: row.get(9)?,
        error: row.get(10)?,
        labels: row.get(11)?,
        lease_owner: row.get(12)?,
        lease_expires_at: row.get(13)?,
        lease_generation: row.get(14)?,
        attempt: row.get(15)?,
        not_before: row.get(16)?,
        started_at: row.get(17)?,
        completed_at: row.get(18)?,
        created_at: row.get(19)?,
        updated_at: row.get(20)?,
    })
}

impl RawRun {
    fn decode(self) -> Result<RunRecord, StoreError> {
        let status = self.status.parse::<RunStatus>().map_err(corrupt)?;
        let labels: Labels = if self.labels.is_empty() {
            Labels::new()
        } else {
            serde_json::from_str(&self.labels)
                .map_err(|e| corrupt(format!("labels of run {}: {e}", self.id)))?
        };
        Ok(RunRecord {
            status,
            labels,
            current_step_index: self.current_step_index.max(0) as u64,
            completed_step_count: self.completed_step_count.max(0) as u64,
            lease_expires_at: opt_ts(self.lease_expires_at)?,
            lease_generation: self.lease_generation.max(0) as u64,
            attempt: u32::try_from(self.attempt.max(1)).unwrap_or(u32::MAX),
            not_before: opt_ts(self.not_before)?,
            started_at: opt_ts(self.started_at)?,
            completed_at: opt_ts(self.completed_at)?,
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            id: self.id,
            job_name: self.job_name,
            input: self.input,
            idempotency_key: self.idempotency_key,
            concurrency_key: self.concurrency_key,
            progress: self.progress.filter(|p| !p.is_empty()),
            output: self.output.filter(|o| !o.is_empty()),
            error: self.error,
            lease_owner: self.lease_owner,
        })
    }
}

fn query_runs(
    conn: &Connection,
    where_sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<RunRecord>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM durably_runs r {where_sql}");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let raws = stmt
        .query_map(params, raw_run)
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    raws.into_iter().map(RawRun::decode).collect()
}

// ---------------------------------------------------------------------------------------------
// Operations

pub(crate) fn get_run(conn: &Connection, id: &str) -> Result<Option<RunRecord>, StoreError> {
    Ok(query_runs(conn, "WHERE r.id = ?1", &[&id])?.pop())
}

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
                        .prepare_cached("INSERT INTO durably_run_labels (run_id, key, value) VALUES (?1, ?2, ?3)")
                        .map_err(db)?;
                    for (k, v) in &run.labels {
                        label.execute(params![run.id, k, v]).map_err(db)?;
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

pub(crate) fn get_runs(
    conn: &Connection,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut sql = String::from("WHERE 1 = 1");
    let mut values: Vec<String> = Vec::new();
    let placeholder = |values: &mut Vec<String>, v: String| {
        values.push(v);
        format!("?{}", values.len())
    };
    if !filter.statuses.is_empty() {
        let list: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| placeholder(&mut values, s.as_str().to_owned()))
            .collect();
        sql.push_str(&format!(" AND r.status IN ({})", list.join(", ")));
    }
    if !filter.job_names.is_empty() {
        let list: Vec<String> = filter
            .job_names
            .iter()
            .map(|j| placeholder(&mut values, j.clone()))
            .collect();
        sql.push_str(&format!(" AND r.job_name IN ({})", list.join(", ")));
    }
    for (k, v) in &filter.labels {
        if !crate::steps::run::is_valid_label_key(k) {
            return Err(corrupt(format!("invalid label key {k:?}")));
        }
        let pk = placeholder(&mut values, k.clone());
        let pv = placeholder(&mut values, v.clone());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM durably_run_labels l WHERE l.run_id = r.id AND l.key = {pk} AND l.value = {pv})"
        ));
    }
    if let Some(cursor) = &filter.before {
        let pc = placeholder(&mut values, format_ts(cursor.created_at));
        let pi = placeholder(&mut values, cursor.id.clone());
        sql.push_str(&format!(" AND (r.created_at, r.id) < ({pc}, {pi})"));
    }
    sql.push_str(" ORDER BY r.created_at DESC, r.id DESC");
    match (filter.limit, filter.offset) {
        (Some(l), Some(o)) => sql.push_str(&format!(" LIMIT {l} OFFSET {o}")),
        (Some(l), None) => sql.push_str(&format!(" LIMIT {l}")),
        (None, Some(o)) => sql.push_str(&format!(" LIMIT -1 OFFSET {o}")),
        (None, None) => {}
    }
    let params: Vec<&dyn rusqlite::ToSql> =
        values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
    query_runs(conn, &sql, &params)
}

/// Per job: runs by status, recent completions and failures, the oldest pending run.
pub(crate) fn count_runs(
    conn: &Connection,
    since: Timestamp,
) -> Result<Vec<RunCounts>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT job_name,
                    SUM(status = 'pending'), SUM(status = 'leased'), SUM(status = 'completed'),
                    SUM(status = 'failed'), SUM(status = 'cancelled'),
                    SUM(status = 'completed' AND completed_at >= ?1),
                    SUM(status = 'failed' AND completed_at >= ?1),
                    MIN(CASE WHEN status = 'pending' THEN created_at END)
               FROM durably_runs GROUP BY job_name ORDER BY job_name",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![format_ts(since)], |row| {
            let n = |i: usize| {
                row.get::<_, Option<i64>>(i)
                    .map(|v| v.unwrap_or(0).max(0) as u64)
            };
            Ok((
                RunCounts {
                    job_name: row.get(0)?,
                    pending: n(1)?,
                    leased: n(2)?,
                    completed: n(3)?,
                    failed: n(4)?,
                    cancelled: n(5)?,
                    completed_since: n(6)?,
                    failed_since: n(7)?,
                    oldest_pending: None,
                },
                row.get::<_, Option<String>>(8)?,
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    rows.into_iter()
        .map(|(mut counts, oldest)| {
            counts.oldest_pending = oldest.as_deref().map(parse_ts).transpose()?;
            Ok(counts)
        })
        .collect()
}

struct Candidate {
    id: String,
    job_name: String,
    input: String,
    labels: String,
    concurrency_key: Option<String>,
    created_at: String,
    lease_generation: i64,
    attempt: i64,
    started_at: Option<String>,
    rowid: i64,
    due_at: Option<String>,
}

/// The columns [`candidate`] reads, in order.
const CANDIDATE_COLUMNS: &str =
    "r.id, r.job_name, r.input, r.labels, r.concurrency_key, r.created_at,
    r.lease_generation, r.attempt, r.started_at, r.rowid,
    CASE r.status WHEN 'leased' THEN r.lease_expires_at ELSE COALESCE(r.not_before, r.created_at) END";

fn candidate(row: &Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        id: row.get(0)?,
        job_name: row.get(1)?,
        input: row.get(2)?,
        labels: row.get(3)?,
        concurrency_key: row.get(4)?,
        created_at: row.get(5)?,
        lease_generation: row.get(6)?,
        attempt: row.get(7)?,
        started_at: row.get(8)?,
        rowid: row.get(9)?,
        due_at: row.get(10)?,
    })
}

const KEY_FREE: &str = "(r.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM durably_runs a
    WHERE a.status = 'leased' AND a.concurrency_key = r.concurrency_key AND a.lease_expires_at > ?1))";

/// The FIFO scan of due pending runs whose concurrency key is free.
///
/// Its limit is a literal (the caller stops reading early): with `LIMIT ?`, SQLite re-prepares
/// the statement on every execution once it was re-prepared for any reason, because the bound
/// limit changes from one claim to the next.
pub(crate) fn claim_pending_sql() -> String {
    format!(
        "SELECT {CANDIDATE_COLUMNS} FROM durably_runs r
         WHERE r.status = 'pending' AND (r.not_before IS NULL OR r.not_before <= ?1) AND {KEY_FREE}
         ORDER BY r.created_at, r.id LIMIT 2000"
    )
}

pub(crate) fn claim(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Claimed, StoreError> {
    if limit == 0 {
        return Ok(Claimed::default());
    }
    let now_s = format_ts(now);
    let until_s = format_ts(lease_until);
    // Over-fetch a little: candidates sharing a concurrency key are skipped after the first.
    let fetch = (limit + limit / 4 + 1).min(2000);
    let mut candidates: Vec<Candidate> = Vec::new();
    {
        let mut pending = conn.prepare_cached(&claim_pending_sql()).map_err(db)?;
        for c in pending
            .query_map(params![now_s], candidate)
            .map_err(db)?
            .take(fetch)
        {
            candidates.push(c.map_err(db)?);
        }
        let mut expired = conn
            .prepare_cached(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM durably_runs r
                 WHERE r.status = 'leased' AND r.lease_expires_at <= ?1 AND {KEY_FREE}
                 ORDER BY r.lease_expires_at LIMIT 2000"
            ))
            .map_err(db)?;
        let before = candidates.len();
        for c in expired
            .query_map(params![now_s], candidate)
            .map_err(db)?
            .take(fetch)
        {
            candidates.push(c.map_err(db)?);
        }
        if candidates.len() > before && before > 0 {
            candidates.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        }
    }
    let mut update = conn.prepare_cached(statements::CLAIM_RUN).map_err(db)?;
    let mut keys: Vec<String> = Vec::new();
    let mut runs = Vec::with_capacity(limit.min(candidates.len()));
    // The candidates are moved into the claimed runs, not copied.
    for c in candidates {
        if runs.len() == limit {
            break;
        }
        if c.concurrency_key.as_ref().is_some_and(|k| keys.contains(k)) {
            continue;
        }
        // Decoded before the update, so a corrupt row fails the claim without changing a row.
        let labels = if c.labels.is_empty() || c.labels == "{}" {
            Labels::new()
        } else {
            serde_json::from_str(&c.labels)
                .map_err(|e| corrupt(format!("labels of run {}: {e}", c.id)))?
        };
        let started_at = c
            .started_at
            .as_deref()
            .map(parse_ts)
            .transpose()?
            .unwrap_or(now);
        let due_at = c
            .due_at
            .as_deref()
            .map(parse_ts)
            .transpose()?
            .unwrap_or(now);
        let claimed = update
            .execute(params![
                c.id,
                owner,
                until_s,
                now_s,
                c.lease_generation,
                c.rowid
            ])
            .map_err(db)?;
        if claimed != 1 {
            continue;
        }
        if let Some(k) = &c.concurrency_key {
            keys.push(k.clone());
        }
        runs.push(ClaimedRun {
            id: c.id,
            job_name: c.job_name,
            input: c.input,
            labels,
            concurrency_key: c.concurrency_key,
            generation: (c.lease_generation + 1).max(0) as u64,
            row: Some(c.rowid),
            attempt: u32::try_from(c.attempt.max(1)).unwrap_or(u32::MAX),
            started_at,
            due_at,
            lease_expires_at: lease_until,
        });
    }
    let next_due = if runs.len() < limit {
        next_due(conn, owner, now)?
    } else {
        None
    };
    Ok(Claimed { runs, next_due })
}

pub(crate) fn next_due(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let now_s = format_ts(now);
    let retry: Option<String> = conn
        .prepare_cached(
            "SELECT MIN(not_before) FROM durably_runs WHERE status = 'pending' AND not_before IS NOT NULL AND not_before > ?1",
        )
        .map_err(db)?
        .query_row(params![now_s], |r| r.get(0))
        .map_err(db)?;
    let lease: Option<String> = conn
        .prepare_cached(
            "SELECT lease_expires_at FROM durably_runs WHERE status = 'leased' AND lease_expires_at > ?1
               AND (lease_owner IS NULL OR lease_owner <> ?2)
             ORDER BY lease_expires_at LIMIT 1",
        )
        .map_err(db)?
        .query_row(params![now_s, owner], |r| r.get(0))
        .optional()
        .map_err(db)?;
    let a = opt_ts(retry)?;
    let b = opt_ts(lease)?;
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

pub(crate) fn renew_leases(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE durably_runs SET lease_expires_at = ?3, updated_at = ?2
             WHERE status = 'leased' AND lease_owner = ?1 AND lease_expires_at > ?2
             RETURNING id, lease_generation",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(
            params![owner, format_ts(now), format_ts(lease_until)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
        )
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(crate) fn completed_steps(
    conn: &Connection,
    run_id: &str,
) -> Result<Vec<StoredStep>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            r#"SELECT name, "index", output FROM durably_steps WHERE run_id = ?1 AND status = 'completed' ORDER BY "index""#,
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![run_id], |r| {
            Ok(StoredStep {
                name: r.get(0)?,
                index: r.get::<_, i64>(1)?.max(0) as u64,
                output: r.get::<_, Option<String>>(2)?.filter(|o| !o.is_empty()),
            })
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

fn insert_logs(conn: &Connection, run_id: &str, logs: &[NewLog]) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO durably_logs (id, run_id, step_name, level, message, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db)?;
    for l in logs {
        stmt.execute(params![
            l.id,
            run_id,
            l.step_name,
            l.level.as_str(),
            l.message,
            l.data,
            format_ts(l.created_at)
        ])
        .map_err(db)?;
    }
    Ok(())
}

pub(crate) fn persist_step(
    conn: &Connection,
    fence: &Fence,
    step: &NewStep,
    logs: &[NewLog],
) -> Result<bool, StoreError> {
    insert_logs(conn, &fence.run_id, logs)?;
    if !holds(conn, fence)? {
        return Ok(false);
    }
    conn.prepare_cached(statements::INSERT_STEP)
        .map_err(db)?
        .execute(params![
            step.id,
            fence.run_id,
            step.name,
            step.index as i64,
            step.status.as_str(),
            step.output,
            step.error,
            format_ts(step.started_at),
            format_ts(step.completed_at),
        ])
        .map_err(db)?;
    Ok(true)
}

/// Whether the execution `fence` names still owns its run: leased, at that generation.
fn holds(conn: &Connection, fence: &Fence) -> Result<bool, StoreError> {
    conn.prepare_cached(statements::HOLDS_RUN)
        .map_err(db)?
        .exists(params![
            fence.run_id,
            fence.generation as i64,
            fence_row(conn, fence)?
        ])
        .map_err(db)
}

/// The rowid of the fence's run: the one its claim read, or, for a fence made without a claim,
/// looked up by id (`None`: no such run, which no fenced statement then matches).
fn fence_row(conn: &Connection, fence: &Fence) -> Result<Option<i64>, StoreError> {
    match fence.row {
        Some(row) => Ok(Some(row)),
        None => conn
            .prepare_cached("SELECT rowid FROM durably_runs WHERE id = ?1")
            .map_err(db)?
            .query_row([&fence.run_id], |r| r.get(0))
            .optional()
            .map_err(db),
    }
}

pub(crate) fn update_progress(
    conn: &Connection,
    fence: &Fence,
    progress: Option<&str>,
    logs: &[NewLog],
    now: Timestamp,
) -> Result<bool, StoreError> {
    insert_logs(conn, &fence.run_id, logs)?;
    let n = conn
        .prepare_cached(
            "UPDATE durably_runs SET progress = ?1, updated_at = ?2
             WHERE id = ?3 AND status = 'leased' AND lease_generation = ?4",
        )
        .map_err(db)?
        .execute(params![
            progress,
            format_ts(now),
            fence.run_id,
            fence.generation as i64
        ])
        .map_err(db)?;
    Ok(n == 1)
}

fn delete_steps_and_logs(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(statements::DELETE_STEPS)
        .map_err(db)?
        .execute([run_id])
        .map_err(db)?;
    conn.prepare_cached(statements::DELETE_LOGS)
        .map_err(db)?
        .execute([run_id])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn delete_cancelled_steps(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    let cancelled = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM durably_runs WHERE id = ?1 AND status = 'cancelled')",
        )
        .map_err(db)?
        .query_row([run_id], |r| r.get::<_, bool>(0))
        .map_err(db)?;
    if cancelled {
        delete_steps_and_logs(conn, run_id)?;
    }
    Ok(())
}

pub(crate) fn finish_run(
    conn: &Connection,
    fence: &Fence,
    finish: &Finish,
    logs: &[NewLog],
    cleanup: bool,
    now: Timestamp,
) -> Result<FinishOutcome, StoreError> {
    let now_s = format_ts(now);
    let gen = fence.generation as i64;
    let (n, outcome) = match finish {
        Finish::Completed {
            output,
            completed_step_count,
            current_step_index,
        } => {
            let n = conn
                .prepare_cached(statements::COMPLETE_RUN)
                .map_err(db)?
                .execute(params![
                    output,
                    now_s,
                    *completed_step_count as i64,
                    *current_step_index as i64,
                    fence.run_id,
                    gen,
                    fence_row(conn, fence)?
                ])
                .map_err(db)?;
            (n, FinishOutcome::Completed)
        }
        Finish::Failed { error, retry } => {
            let blocked = match retry {
                Some(_) => conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM durably_runs r JOIN durably_runs p
                            ON p.job_name = r.job_name AND p.concurrency_key = r.concurrency_key
                            WHERE r.id = ?1 AND p.status = 'pending' AND p.id <> r.id)",
                    )
                    .map_err(db)?
                    .query_row([&fence.run_id], |r| r.get::<_, bool>(0))
                    .map_err(db)?,
                None => false,
            };
            match retry {
                Some((attempt, not_before)) if !blocked => {
                    let n = conn
                        .prepare_cached(
                            "UPDATE durably_runs SET status = 'pending', error = ?1, lease_owner = NULL,
                                lease_expires_at = NULL, attempt = ?2, not_before = ?3, updated_at = ?4
                             WHERE id = ?5 AND status = 'leased' AND lease_generation = ?6",
                        )
                        .map_err(db)?
                        .execute(params![error, i64::from(*attempt), format_ts(*not_before), now_s, fence.run_id, gen])
                        .map_err(db)?;
                    insert_logs(conn, &fence.run_id, logs)?;
                    return Ok(if n == 1 {
                        FinishOutcome::Retrying
                    } else {
                        FinishOutcome::Refused
                    });
                }
                _ => {}
            }
            let n = conn
                .prepare_cached(
                    r#"UPDATE durably_runs SET status = 'failed', error = ?1, lease_owner = NULL,
                        lease_expires_at = NULL, not_before = NULL, completed_at = ?2, updated_at = ?2,
                        completed_step_count = (SELECT COUNT(*) FROM durably_steps s WHERE s.run_id = ?3 AND s.status = 'completed'),
                        current_step_index = (SELECT COALESCE(MAX(s."index") + 1, 0) FROM durably_steps s WHERE s.run_id = ?3 AND s.status = 'completed')
                     WHERE id = ?3 AND status = 'leased' AND lease_generation = ?4"#,
                )
                .map_err(db)?
                .execute(params![error, now_s, fence.run_id, gen])
                .map_err(db)?;
            (
                n,
                if blocked {
                    FinishOutcome::FailedRetryBlocked
                } else {
                    FinishOutcome::Failed
                },
            )
        }
    };
    if n != 1 {
        insert_logs(conn, &fence.run_id, logs)?;
        return Ok(FinishOutcome::Refused);
    }
    if cleanup {
        delete_steps_and_logs(conn, &fence.run_id)?;
    } else {
        insert_logs(conn, &fence.run_id, logs)?;
    }
    Ok(outcome)
}

pub(crate) fn cancel_run(
    conn: &Connection,
    id: &str,
    now: Timestamp,
    cleanup: bool,
) -> Result<CancelOutcome, StoreError> {
    let Some(before) = get_run(conn, id)? else {
        return Ok(CancelOutcome::NotFound);
    };
    if before.status.is_terminal() {
        return Ok(CancelOutcome::Terminal(before.status));
    }
    let now_s = format_ts(now);
    conn.prepare_cached(
        "UPDATE durably_runs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
            not_before = NULL, completed_at = ?2, updated_at = ?2
         WHERE id = ?1 AND status IN ('pending', 'leased')",
    )
    .map_err(db)?
    .execute(params![id, now_s])
    .map_err(db)?;
    if cleanup && before.status == RunStatus::Pending {
        delete_steps_and_logs(conn, id)?;
    }
    Ok(CancelOutcome::Cancelled(Box::new(before)))
}

fn delete_cascade(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM durably_run_labels WHERE run_id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    delete_steps_and_logs(conn, id)?;
    conn.prepare_cached("DELETE FROM durably_runs WHERE id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn delete_run(conn: &Connection, id: &str) -> Result<DeleteOutcome, StoreError> {
    let Some(run) = get_run(conn, id)? else {
        return Ok(DeleteOutcome::NotFound);
    };
    if run.status.is_active() {
        return Ok(DeleteOutcome::Active(run.status));
    }
    delete_cascade(conn, id)?;
    Ok(DeleteOutcome::Deleted(Box::new(run)))
}

pub(crate) fn purge_runs(
    conn: &Connection,
    job: Option<&str>,
    before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM durably_runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at IS NOT NULL AND completed_at < ?1
                   AND (?2 IS NULL OR job_name = ?2)
                 ORDER BY completed_at LIMIT ?3",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![format_ts(before), job, i64::from(limit)], |r| {
                r.get(0)
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    for id in &ids {
        delete_cascade(conn, id)?;
    }
    Ok(ids.len() as u64)
}

pub(crate) fn get_steps(conn: &Connection, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            r#"SELECT id, run_id, name, "index", status, output, error, started_at, completed_at
               FROM durably_steps WHERE run_id = ?1 ORDER BY "index", started_at, id"#,
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, run_id, name, index, status, output, error, started_at, completed_at) =
            row.map_err(db)?;
        out.push(StepRow {
            id,
            run_id,
            name,
            index: index.max(0) as u64,
            status: status.parse::<StepStatus>().map_err(corrupt)?,
            output: output.filter(|o| !o.is_empty()),
            error,
            started_at: parse_ts(&started_at)?,
            completed_at: opt_ts(completed_at)?,
        });
    }
    Ok(out)
}

pub(crate) fn get_logs(conn: &Connection, run_id: &str) -> Result<Vec<LogRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, run_id, step_name, level, message, data, created_at
             FROM durably_logs WHERE run_id = ?1 ORDER BY created_at, id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, run_id, step_name, level, message, data, created_at) = row.map_err(db)?;
        out.push(LogRow {
            id,
            run_id,
            step_name,
            level: level.parse::<LogLevel>().map_err(corrupt)?,
            message,
            data,
            created_at: parse_ts(&created_at)?,
        });
    }
    Ok(out)
}

pub(crate) fn release_expired_leases(conn: &Connection, now: Timestamp) -> Result<u64, StoreError> {
    let now_s = format_ts(now);
    // Phase 1: an expired run whose job and key already have a pending run cannot go back to
    // pending (one pending run per job and key); it fails.
    let failed = conn
        .prepare_cached(
            "UPDATE durably_runs SET status = 'failed', error = 'Lease expired; pending run already exists',
                lease_owner = NULL, lease_expires_at = NULL, completed_at = ?1, updated_at = ?1
             WHERE status = 'leased' AND lease_expires_at <= ?1 AND concurrency_key IS NOT NULL
               AND EXISTS (SELECT 1 FROM durably_runs p WHERE p.status = 'pending'
                   AND p.job_name = durably_runs.job_name AND p.concurrency_key = durably_runs.concurrency_key)",
        )
        .map_err(db)?
        .execute([&now_s])
        .map_err(db)?;
    // Phase 2: the others go back to pending. Two expired runs of one job and key: the oldest
    // goes back, the others fail.
    let expired: Vec<(String, String, Option<String>)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, job_name, concurrency_key FROM durably_runs
                 WHERE status = 'leased' AND lease_expires_at <= ?1 ORDER BY created_at, id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([&now_s], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    let mut seen: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    let mut changed = failed as u64;
    for (id, job, key) in expired {
        let duplicate = key
            .as_ref()
            .is_some_and(|k| !seen.insert((job.clone(), k.clone())));
        if duplicate {
            conn.prepare_cached(
                "UPDATE durably_runs SET status = 'failed', error = 'Lease expired; pending run already exists',
                    lease_owner = NULL, lease_expires_at = NULL, completed_at = ?2, updated_at = ?2 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![id, now_s])
            .map_err(db)?;
        } else {
            conn.prepare_cached(
                "UPDATE durably_runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2
                 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![id, now_s])
            .map_err(db)?;
        }
        changed += 1;
    }
    Ok(changed)
}

pub(crate) fn recover(conn: &Connection, now: Timestamp) -> Result<u64, StoreError> {
    let now_s = format_ts(now);
    let n = conn
        .prepare_cached(
            "UPDATE durably_runs SET lease_expires_at = ?1 WHERE status = 'leased' AND lease_expires_at > ?1",
        )
        .map_err(db)?
        .execute([&now_s])
        .map_err(db)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests;

impl SqlExecutor for super::SqliteStore {
    fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::write(self, op)
    }

    fn write_unsynced<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::write_unsynced(self, op)
    }

    fn read<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        super::SqliteStore::read(self, op)
    }
}
