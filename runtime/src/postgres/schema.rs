//! The tables, as migration 1 creates them (`{s}` is the schema).
//!
//! They hold what the SQLite store holds, with the same column meanings, so the engine and every
//! reader see the same rows whichever store they run on. What differs, for PostgreSQL:
//! - times are `timestamptz` (the engine's milliseconds, exactly);
//! - keys and names that listings sort by are `COLLATE "C"`: byte order, as in SQLite and in
//!   Rust, whatever the database's locale, and cheaper comparisons;
//! - the tables that are updated in place (`instances`, `runs`) leave room in their pages
//!   (`fillfactor`) so an update that changes no indexed column stays on its page and writes no
//!   index entry (a HOT update), and are vacuumed sooner than PostgreSQL's default;
//! - the uniqueness rules of step runs (one run per job and idempotency key, one pending run per
//!   job and concurrency key) are unique partial indexes, which hold across every process;
//! - the outbox's sequence is an identity column, never reused.
//!
//! Step-job tables are `runs`, `run_labels`, `run_steps` and `run_logs`: the schema is the
//! store's own, so they need no prefix.

/// Migration 1: every table.
pub(crate) const VERSION_1: &str = r#"
CREATE TABLE {s}.instances (
    kind             text COLLATE "C" NOT NULL,
    job              text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    state            text,
    state_version    bigint      NOT NULL DEFAULT 0,
    broken           text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    run_count        bigint      NOT NULL DEFAULT 0,
    event_count      bigint      NOT NULL DEFAULT 0,
    execute_count    bigint      NOT NULL DEFAULT 0,
    batch_started_at timestamptz,
    last_event_at    timestamptz,
    alarm_at         timestamptz,
    retry_attempt    bigint      NOT NULL DEFAULT 0,
    retry_started_at timestamptz,
    retry_last_error text,
    version          bigint      NOT NULL,
    lease_owner      text,
    lease_until      timestamptz,
    lease_generation bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, job, id)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);

-- Alarms per job, without broken instances: a scan asks only for the jobs an engine
-- registers and never walks the alarms of others.
CREATE INDEX instances_alarms ON {s}.instances (kind, job, alarm_at)
    WHERE alarm_at IS NOT NULL AND broken IS NULL;
CREATE INDEX instances_broken ON {s}.instances (kind, job) WHERE broken IS NOT NULL;
-- Leased rows only: renewing a node's leases reads its own.
CREATE INDEX instances_leased ON {s}.instances (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE {s}.event_ids (
    kind     text COLLATE "C" NOT NULL,
    job      text COLLATE "C" NOT NULL,
    id       text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    seen_at  timestamptz NOT NULL,
    PRIMARY KEY (kind, job, id, event_id)
);
CREATE INDEX event_ids_seen_at ON {s}.event_ids (seen_at);

CREATE TABLE {s}.outbox (
    seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    json text   NOT NULL
);

CREATE TABLE {s}.runs (
    id                   text COLLATE "C" PRIMARY KEY,
    job_name             text COLLATE "C" NOT NULL,
    input                text        NOT NULL,
    status               text        NOT NULL
        CHECK (status IN ('pending', 'leased', 'completed', 'failed', 'cancelled')),
    idempotency_key      text,
    concurrency_key      text,
    labels               text        NOT NULL DEFAULT '{}',
    current_step_index   bigint      NOT NULL DEFAULT 0,
    completed_step_count bigint      NOT NULL DEFAULT 0,
    progress             text,
    output               text,
    error                text,
    lease_owner          text,
    lease_expires_at     timestamptz,
    lease_generation     bigint      NOT NULL DEFAULT 0,
    attempt              bigint      NOT NULL DEFAULT 1,
    not_before           timestamptz,
    started_at           timestamptz,
    completed_at         timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);

CREATE UNIQUE INDEX runs_idempotency ON {s}.runs (job_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX runs_pending_concurrency ON {s}.runs (job_name, concurrency_key)
    WHERE status = 'pending' AND concurrency_key IS NOT NULL;
-- The FIFO claim (status 'pending'), and listings by status, newest first.
CREATE INDEX runs_status_created ON {s}.runs (status, created_at, id);
CREATE INDEX runs_job_created ON {s}.runs (job_name, created_at, id);
CREATE INDEX runs_created ON {s}.runs (created_at, id);
-- Leases: expired ones to reclaim, an owner's to renew, live ones holding a concurrency key.
CREATE INDEX runs_leased_expiry ON {s}.runs (lease_expires_at) WHERE status = 'leased';
CREATE INDEX runs_leased_owner ON {s}.runs (lease_owner) WHERE status = 'leased';
CREATE INDEX runs_leased_concurrency ON {s}.runs (concurrency_key)
    WHERE status = 'leased' AND concurrency_key IS NOT NULL;
CREATE INDEX runs_pending_not_before ON {s}.runs (not_before)
    WHERE status = 'pending' AND not_before IS NOT NULL;

CREATE TABLE {s}.run_labels (
    run_id     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      text COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);
-- A listing by label reads the label's runs newest first.
CREATE INDEX run_labels_listed ON {s}.run_labels (key, value, created_at, run_id);

CREATE TABLE {s}.run_steps (
    id           text COLLATE "C" NOT NULL,
    run_id       text COLLATE "C" NOT NULL,
    name         text        NOT NULL,
    "index"      bigint      NOT NULL,
    status       text        NOT NULL,
    output       text,
    error        text,
    started_at   timestamptz NOT NULL,
    completed_at timestamptz,
    PRIMARY KEY (run_id, "index", id)
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
-- A second guard behind the fence: one completed step per name and run.
CREATE UNIQUE INDEX run_steps_completed ON {s}.run_steps (run_id, name)
    WHERE status = 'completed';

CREATE TABLE {s}.run_logs (
    id         text COLLATE "C" PRIMARY KEY,
    run_id     text COLLATE "C" NOT NULL,
    step_name  text,
    level      text        NOT NULL,
    message    text        NOT NULL,
    data       text,
    created_at timestamptz NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX run_logs_run ON {s}.run_logs (run_id, created_at, id);
"#;

/// Migration 2: the inbox of events sent to task instances inside an application's own
/// transaction (`TaskClient::send_in`). An engine applies each after the transaction commits,
/// through the same `send` as any other event, and deletes it: per instance in `seq` order, one
/// entry at a time, each leased to the engine applying it. Every entry has an event id (the
/// caller's, or one made for it), recorded when it is applied, so an entry applied by an engine
/// that died before deleting it is not applied twice.
pub(crate) const VERSION_2: &str = r#"
CREATE TABLE {s}.inbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text COLLATE "C" NOT NULL,
    job         text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    event       text        NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    created_at  timestamptz NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    attempts    bigint      NOT NULL DEFAULT 0,
    last_error  text
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);

-- Each instance's entries in order (the head is the one applied next), and one entry per
-- event id and instance.
CREATE UNIQUE INDEX inbox_event_ids ON {s}.inbox (kind, job, id, event_id);
CREATE INDEX inbox_instances ON {s}.inbox (kind, job, id, seq);
"#;

/// Migration 3: claims on outbox rows. Every engine with HTTP telemetry runs a sender; on a
/// database several processes share, each sender takes a batch of rows for itself until
/// `claimed_until` (`FOR UPDATE SKIP LOCKED`), so no two live senders post the same row, and
/// rows a sender took and never deleted (it died) go to another once the claim lapses. Both
/// columns are null on a row nobody took. Adding nullable columns without a default rewrites
/// nothing. A claim updates its rows, which the sender deletes soon after: room left in the
/// pages (`fillfactor`, for pages written from now on) keeps that update on the row's page,
/// with no index entry (a HOT update).
pub(crate) const VERSION_3: &str = r#"
ALTER TABLE {s}.outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz;
ALTER TABLE {s}.outbox SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
"#;

/// Migration 4: failed runs newest first, the listing an operator opens first. With the
/// status named as one value (`status = $n`, as listings write it), `runs_status_created`
/// serves it too; this smaller index, which only failed runs enter (every other write leaves
/// it alone), keeps the page of failed runs, of all jobs or of one, a read of about a page
/// whichever plan the server settles on for the prepared statement.
pub(crate) const VERSION_4: &str = r#"
CREATE INDEX runs_failed_created ON {s}.runs (created_at, id) WHERE status = 'failed';
"#;
