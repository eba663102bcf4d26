//! The step-job tables: migration 2, migration 4 that drops an index, migration 6 that
//! indexes listings, and migration 7 that indexes them again at a lower write cost.

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

/// Migration 6: run listings answered from the runs they return. Every listing (by status, by
/// job, by both, or neither) reads one index range per (job, status) pair, newest first, and
/// stops at the page's end, however many runs of other statuses or jobs the table holds.
///
/// Migration 7 replaces its two run indexes (and `listed_status`) with indexes that cost a run
/// fewer writes; the label index stays.
///
/// The listing indexes are on `listed_status`, a virtual column equal to `status` except for
/// leased runs, which it leaves out (NULL, not indexed): a run's claim and its end each move
/// an entry in a status-led index, and leaving leased runs out halves that (the claim deletes
/// the pending entry, the end inserts the final one). Leased runs, as many as the workers
/// hold, are listed through `status_lease_expires` and sorted.
///
/// - `(listed_status, created_at, id)` replaces the pending-only `status_created`: it serves
///   the FIFO claim (`listed_status = 'pending'`) and every status listing;
/// - `(job_name, listed_status, created_at, id)` replaces `(job_name, created_at)`, which made
///   a listing of one job's failed runs walk all of that job's runs;
/// - `status_completed` (terminal runs by end time) goes: the pruner walks terminal runs by
///   creation time through `listed`, and a completion writes one index less;
/// - a label row gets its run's creation time, and `(key, value, created_at, run_id)` replaces
///   `(key, value)`: a listing by label reads the label's runs newest first and stops at the
///   page's end (it read every run carrying the label, and sorted them).
pub(crate) const LISTING_INDEXES: &str = "
ALTER TABLE durably_runs ADD COLUMN listed_status TEXT
    GENERATED ALWAYS AS (CASE status WHEN 'leased' THEN NULL ELSE status END) VIRTUAL;
DROP INDEX IF EXISTS idx_durably_runs_status_created;
DROP INDEX IF EXISTS idx_durably_runs_job_created;
DROP INDEX IF EXISTS idx_durably_runs_status_completed;
CREATE INDEX idx_durably_runs_listed
    ON durably_runs (listed_status, created_at, id) WHERE listed_status IS NOT NULL;
CREATE INDEX idx_durably_runs_job_listed
    ON durably_runs (job_name, listed_status, created_at, id) WHERE listed_status IS NOT NULL;
ALTER TABLE durably_run_labels ADD COLUMN created_at TEXT;
UPDATE durably_run_labels SET created_at =
    (SELECT r.created_at FROM durably_runs r WHERE r.id = durably_run_labels.run_id);
DROP INDEX IF EXISTS idx_durably_run_labels_key_value;
CREATE INDEX idx_durably_run_labels_listed
    ON durably_run_labels (key, value, created_at, run_id);
";

/// Migration 7: the listing indexes of migration 6, at the write cost of the indexes they
/// replaced. Each index holds the runs of one phase: a run enters the pending index at its
/// insert and leaves it at its claim, and enters the two ended indexes at its end, never to
/// move again. Migration 6's indexes held pending and ended runs alike, so a run left both at
/// its claim and entered both again at its end: six index writes a run where these take four,
/// each a tenth or so of the work of a run without steps.
///
/// - `pending` `(status, created_at, id)`, pending runs only (what `status_created` was): the
///   FIFO claim, and listings of pending runs, of all jobs or of one (the job then checked on
///   each run: pending runs are those not yet claimed, not the history);
/// - `ended` `(status, created_at, id)`, runs with an end time: listings of one ended status
///   across jobs, and the pruner's walk from the oldest;
/// - `job_ended` `(job_name, status, created_at, id)`, the same runs: one job's runs of one
///   ended status, however many runs of other jobs or statuses there are;
/// - leased runs, as many as the workers hold, are still listed through
///   `status_lease_expires` and sorted.
///
/// The ended indexes hold the runs whose `completed_at` is set, not those of an ended status:
/// every end (completion, failure, cancellation, pending or leased) sets `completed_at` in the
/// statement that sets the status, and nothing else does, so the two sets are the same. A
/// partial index's condition is evaluated on every write that changes a column the index
/// names, the claim's status among them, on the row before and after: `completed_at IS NOT
/// NULL` is one test of a column (a condition on the status would compare it with three
/// strings). Listings and the pruner say `completed_at IS NOT NULL` beside the status, which is
/// what lets SQLite read these indexes. Files written before carry an end time on every ended
/// run; the backfill below sets one (the run's last update) where one is missing and clears it
/// on runs that have not ended, so that each index holds exactly its phase.
///
/// `listed_status` goes with the indexes that were its only use: a virtual column is computed
/// on every write of a run, and dropping it rewrites no row.
pub(crate) const PENDING_AND_ENDED_INDEXES: &str = "
DROP INDEX IF EXISTS idx_durably_runs_listed;
DROP INDEX IF EXISTS idx_durably_runs_job_listed;
ALTER TABLE durably_runs DROP COLUMN listed_status;
UPDATE durably_runs SET completed_at = updated_at
 WHERE completed_at IS NULL AND status IN ('completed', 'failed', 'cancelled');
UPDATE durably_runs SET completed_at = NULL
 WHERE completed_at IS NOT NULL AND status IN ('pending', 'leased');
CREATE INDEX idx_durably_runs_pending
    ON durably_runs (status, created_at, id) WHERE status = 'pending';
CREATE INDEX idx_durably_runs_ended
    ON durably_runs (status, created_at, id) WHERE completed_at IS NOT NULL;
CREATE INDEX idx_durably_runs_job_ended
    ON durably_runs (job_name, status, created_at, id) WHERE completed_at IS NOT NULL;
";
