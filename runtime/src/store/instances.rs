//! The instance side of the boundary: instance rows, alarms, leases, the outbox and event ids.

use crate::id::{InstanceKey, JobKind};
use crate::time::Timestamp;

use super::{BoxFuture, StoreError};

/// One instance, as one row. Fields a kind does not use stay at their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRecord {
    /// Kind, job and user id.
    pub key: InstanceKey,
    /// The state as JSON, when there is one.
    pub state: Option<String>,
    /// The version of the state's shape the job declared when it wrote `state` (its
    /// `STATE_VERSION`; 0 for rows written before versions existed).
    pub state_version: u32,
    /// Why the instance is broken, when it is: its stored state does not decode into the job's
    /// state type, even after migration. A broken instance's alarm does not fire.
    pub broken: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last write.
    pub updated_at: Timestamp,
    /// Continuous: runs so far (retries do not count).
    pub run_count: u64,
    /// Debounce: events in the current batch. Task: events received.
    pub event_count: u64,
    /// Task: executions so far.
    pub execute_count: u64,
    /// Debounce: when the first event of the batch arrived.
    pub batch_started_at: Option<Timestamp>,
    /// Debounce: when the last event arrived (for the quiet period).
    pub last_event_at: Option<Timestamp>,
    /// The one alarm of the instance. While an execution holds a lease, the lease expiry.
    pub alarm_at: Option<Timestamp>,
    /// Retry bookkeeping: the attempt the next alarm makes (0 when no retry is pending).
    pub retry_attempt: u32,
    /// When the first failed attempt of the current retry sequence started.
    pub retry_started_at: Option<Timestamp>,
    /// Message of the last failed attempt.
    pub retry_last_error: Option<String>,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
    /// The lease of the execution that claimed the alarm, if any.
    pub lease: Option<Lease>,
    /// Bumped by every claim; fences the claimed execution's writes.
    pub lease_generation: u64,
}

impl InstanceRecord {
    /// A fresh record for `key`, created at `now`, version 0.
    pub fn new(key: InstanceKey, now: Timestamp) -> Self {
        InstanceRecord {
            key,
            state: None,
            state_version: 0,
            broken: None,
            created_at: now,
            updated_at: now,
            run_count: 0,
            event_count: 0,
            execute_count: 0,
            batch_started_at: None,
            last_event_at: None,
            alarm_at: None,
            retry_attempt: 0,
            retry_started_at: None,
            retry_last_error: None,
            version: 0,
            lease: None,
            lease_generation: 0,
        }
    }
}

/// Who holds a claimed alarm, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The engine that claimed it.
    pub owner: String,
    /// When the claim lapses.
    pub until: Timestamp,
}

/// Columns of an instance row, as a set: the ones an [`Write::Update`] changes.
///
/// `updated_at` and `version` change with every update and are always in the set.
///
/// # Examples
///
/// ```
/// use durable_jobs::store::{Columns, InstanceRecord};
/// use durable_jobs::{InstanceKey, JobKind, Timestamp};
///
/// let key = InstanceKey::new(JobKind::Debounce, "batcher", "c1");
/// let old = InstanceRecord::new(key, Timestamp::EPOCH);
/// let mut new = old.clone();
/// new.event_count += 1;
/// let changed = Columns::between(&old, &new);
/// assert!(changed.contains(Columns::EVENT_COUNT));
/// assert!(!changed.contains(Columns::ALARM_AT));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Columns(u16);

impl Columns {
    /// `state` and `state_version`.
    pub const STATE: Columns = Columns(1);
    /// `created_at`.
    pub const CREATED_AT: Columns = Columns(1 << 1);
    /// `run_count`.
    pub const RUN_COUNT: Columns = Columns(1 << 2);
    /// `event_count`.
    pub const EVENT_COUNT: Columns = Columns(1 << 3);
    /// `execute_count`.
    pub const EXECUTE_COUNT: Columns = Columns(1 << 4);
    /// `batch_started_at`.
    pub const BATCH_STARTED_AT: Columns = Columns(1 << 5);
    /// `last_event_at`.
    pub const LAST_EVENT_AT: Columns = Columns(1 << 6);
    /// `alarm_at`.
    pub const ALARM_AT: Columns = Columns(1 << 7);
    /// `retry_attempt`, `retry_started_at` and `retry_last_error`.
    pub const RETRY: Columns = Columns(1 << 8);
    /// The lease (owner and expiry) and `lease_generation`.
    pub const LEASE: Columns = Columns(1 << 9);
    /// `updated_at` and `version`: in every update.
    pub const UPDATED: Columns = Columns(1 << 10);
    /// `broken`.
    pub const BROKEN: Columns = Columns(1 << 11);
    /// Every column.
    pub const ALL: Columns = Columns((1 << 12) - 1);

    /// The columns of both sets.
    #[must_use]
    pub fn union(self, other: Columns) -> Columns {
        Columns(self.0 | other.0)
    }

    /// Whether every column of `other` is in `self`.
    pub fn contains(self, other: Columns) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits, for backends that key prepared statements by the set.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// The columns in which `new` differs from `old`, plus [`Columns::UPDATED`].
    pub fn between(old: &InstanceRecord, new: &InstanceRecord) -> Columns {
        let mut set = Columns::UPDATED;
        let mut mark = |differs: bool, column: Columns| {
            if differs {
                set = set.union(column);
            }
        };
        mark(
            old.state != new.state || old.state_version != new.state_version,
            Columns::STATE,
        );
        mark(old.broken != new.broken, Columns::BROKEN);
        mark(old.created_at != new.created_at, Columns::CREATED_AT);
        mark(old.run_count != new.run_count, Columns::RUN_COUNT);
        mark(old.event_count != new.event_count, Columns::EVENT_COUNT);
        mark(
            old.execute_count != new.execute_count,
            Columns::EXECUTE_COUNT,
        );
        mark(
            old.batch_started_at != new.batch_started_at,
            Columns::BATCH_STARTED_AT,
        );
        mark(
            old.last_event_at != new.last_event_at,
            Columns::LAST_EVENT_AT,
        );
        mark(old.alarm_at != new.alarm_at, Columns::ALARM_AT);
        mark(
            old.retry_attempt != new.retry_attempt
                || old.retry_started_at != new.retry_started_at
                || old.retry_last_error != new.retry_last_error,
            Columns::RETRY,
        );
        mark(
            old.lease != new.lease || old.lease_generation != new.lease_generation,
            Columns::LEASE,
        );
        set
    }
}

/// One write of a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum Write {
    /// Creates an instance; [`StoreError::Conflict`] if it exists.
    Insert(InstanceRecord),
    /// Makes the stored row `record` (lease included) if its stored version is
    /// `expected_version`; [`StoreError::Conflict`] otherwise.
    Update {
        /// The new row (its `version` is the new version).
        record: InstanceRecord,
        /// The version the write was computed from.
        expected_version: u64,
        /// The columns in which `record` differs from the stored row: the others already hold
        /// `record`'s values, so a backend may write only these (or every column). Always
        /// [`Columns::ALL`] when the engine does not know the stored row.
        changed: Columns,
    },
    /// Deletes an instance if its stored version is `expected_version`.
    Delete {
        /// The instance.
        key: InstanceKey,
        /// The version the delete was decided on.
        expected_version: u64,
    },
    /// Records that `event_id` was processed for `key`; [`StoreError::DuplicateEvent`] if it was
    /// recorded before. Records outlive the instance (see [`Backend::prune_event_ids`]).
    RecordEvent {
        /// The instance.
        key: InstanceKey,
        /// The caller's event id.
        event_id: String,
        /// When it was processed.
        at: Timestamp,
    },
    /// Appends telemetry events (JSON objects) to the outbox.
    Outbox(Vec<String>),
}

/// Writes applied atomically: all of them or none.
pub type WriteBatch = Vec<Write>;

/// What [`Backend::scan_alarms`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlarmScan {
    /// Due alarms (at or before `now`), earliest first, at most `limit`.
    pub due: Vec<(InstanceKey, Timestamp)>,
    /// The earliest alarm after `now`, if any.
    pub next: Option<Timestamp>,
}

/// A job that has instances in the store but is not registered in the engine: its instances
/// are left as they are and run again once a deploy registers it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnregisteredJob {
    /// The kind the instances were stored under.
    pub kind: JobKind,
    /// The job's persisted name.
    pub name: String,
    /// Its instances.
    pub instances: u64,
}

/// One telemetry event waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Position in the outbox, increasing.
    pub seq: i64,
    /// The event as a JSON object.
    pub json: String,
}

/// Which instances [`Backend::list_instances`] returns: every condition set must hold. Pages
/// follow the key order (kind, job, id); `after` continues after the last key of a page.
///
/// # Examples
///
/// ```
/// use durable_jobs::store::InstanceQuery;
/// use durable_jobs::JobKind;
///
/// let due_retries = InstanceQuery::new()
///     .kind(JobKind::Continuous)
///     .job("token-refresher")
///     .retrying(true)
///     .limit(50);
/// assert_eq!(due_retries.limit, 50);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstanceQuery {
    /// Only instances of this kind.
    pub kind: Option<JobKind>,
    /// Only instances of this job.
    pub job: Option<String>,
    /// `true`: only instances with an alarm; `false`: only instances without one.
    pub has_alarm: Option<bool>,
    /// `true`: only instances waiting for a retry; `false`: only the others.
    pub retrying: Option<bool>,
    /// Only instances whose alarm is at or before this time (due, or late, by then).
    pub due_before: Option<Timestamp>,
    /// Only instances after this key, in key order (the last key of the previous page).
    pub after: Option<InstanceKey>,
    /// At most this many (default 100).
    pub limit: u32,
}

impl Default for InstanceQuery {
    fn default() -> Self {
        InstanceQuery {
            kind: None,
            job: None,
            has_alarm: None,
            retrying: None,
            due_before: None,
            after: None,
            limit: 100,
        }
    }
}

/// How a store commits, read from its database connection: what a benchmark prints next to each
/// figure it compares with another system. Not covered by semver.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode` of the write connection, lower-case (`wal`, `memory`, ...).
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the write connection (`OFF`, `NORMAL`, `FULL`, `EXTRA`).
    pub connection_synchronous: String,
    /// Whether every write is acknowledged only after the log holding it is synced by a thread
    /// of the store's own (SQLite's `Synchronous::Full`, whose connection runs `NORMAL`).
    pub log_synced_before_reply: bool,
}

impl Durability {
    /// The `synchronous` level acknowledged writes have: `FULL` when the log is synced before
    /// each reply, otherwise the connection's.
    pub fn synchronous(&self) -> &str {
        if self.log_synced_before_reply {
            "FULL"
        } else {
            &self.connection_synchronous
        }
    }
}

impl InstanceQuery {
    /// Every instance, 100 at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only instances of `kind`.
    pub fn kind(mut self, kind: JobKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only instances of `job`.
    pub fn job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    /// Only instances with (`true`) or without (`false`) an alarm.
    pub fn has_alarm(mut self, yes: bool) -> Self {
        self.has_alarm = Some(yes);
        self
    }

    /// Only instances waiting (`true`) or not waiting (`false`) for a retry.
    pub fn retrying(mut self, yes: bool) -> Self {
        self.retrying = Some(yes);
        self
    }

    /// Only instances whose alarm is at or before `at`.
    pub fn due_before(mut self, at: Timestamp) -> Self {
        self.due_before = Some(at);
        self
    }

    /// Continues after `key`.
    pub fn after(mut self, key: InstanceKey) -> Self {
        self.after = Some(key);
        self
    }

    /// At most `limit` instances.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// How many instances a job has, as [`Backend::count_instances`] reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceCounts {
    /// The job's kind.
    pub kind: JobKind,
    /// The job's persisted name.
    pub job: String,
    /// Instances in all.
    pub total: u64,
    /// Instances with an alarm.
    pub scheduled: u64,
    /// Instances waiting for a retry.
    pub retrying: u64,
    /// Instances whose alarm is due (at or before the time asked about).
    pub due: u64,
    /// The earliest due alarm: how late the most overdue instance is.
    pub oldest_due: Option<Timestamp>,
    /// The earliest alarm after the time asked about.
    pub next_alarm: Option<Timestamp>,
}

/// A store the engine can run on.
pub trait Backend: Send + Sync + 'static {
    /// Reads one instance as last committed.
    fn load<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// Whether `event_id` was recorded for `key`.
    fn has_event_id<'a>(
        &'a self,
        key: &'a InstanceKey,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Applies a batch atomically and durably (per the configured synchronous mode). Returns
    /// only after it is committed.
    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Claims the alarm of `key` if it is due at `now` and not leased by a live lease: sets the
    /// lease to `owner` until `lease_until`, moves `alarm_at` to `lease_until`, bumps
    /// `lease_generation` and `version`, and returns the claimed row. `None` when the alarm is
    /// not due any more or someone else holds it.
    fn claim_alarm<'a>(
        &'a self,
        key: &'a InstanceKey,
        now: Timestamp,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// Claims `key` for an execution that a client action runs (a `trigger`, a flush at
    /// `max_events`, a task event) if its stored version is still `expected_version`: sets the
    /// lease to `owner` until `lease_until`, bumps `lease_generation` and `version`, leaves
    /// `alarm_at` alone, and returns the claimed row. `None` when the version moved. Used on
    /// [shared](super::Ownership::Shared) stores only, where it keeps other processes' alarm
    /// executions and actions off the instance while the action's execution runs.
    fn claim_instance<'a>(
        &'a self,
        key: &'a InstanceKey,
        expected_version: u64,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// Extends every lease held by `owner` to `lease_until`, and the alarms that stand for them
    /// (an alarm set to its lease's expiry by [`claim_alarm`](Self::claim_alarm)); other alarms
    /// stay.
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Due alarms of the instances of `jobs` (kind and persisted name) that are not broken,
    /// and the next such alarm. Alarms of other jobs (removed, renamed, not deployed here) and
    /// of broken instances are not looked at, however many there are. Uses an index: the cost
    /// grows with the number of jobs, not of scheduled instances.
    fn scan_alarms<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        jobs: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<AlarmScan, StoreError>>;

    /// The broken instances of a job (see [`InstanceRecord::broken`]).
    fn load_broken<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InstanceRecord>, StoreError>>;

    /// The jobs that have instances but are not among `registered`, with how many instances
    /// each has.
    fn unregistered_jobs<'a>(
        &'a self,
        registered: &'a [(JobKind, &'static str)],
    ) -> BoxFuture<'a, Result<Vec<UnregisteredJob>, StoreError>>;

    /// Moves every alarm of `job`'s instances that is later than `at` to `at`, leaving broken
    /// instances, leased ones and retries alone; returns how many moved. For a schedule that
    /// changed: no instance waits longer than the new schedule allows.
    fn pull_alarms_to<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Releases every lease so that interrupted executions fire at once. Called once at
    /// start-up by `owner`, on an [exclusive](super::Ownership::Exclusive) store only: there,
    /// whatever holds a lease crashed. Never called on a shared store.
    fn recover(&self, owner: &str, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `limit` outbox events, oldest first.
    fn outbox_peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>>;

    /// Removes outbox events up to and including `seq`.
    fn outbox_ack(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `limit` outbox events, oldest first, taken by the sender `owner` until `until`
    /// to deliver, then [remove](Backend::outbox_delivered). A store that several processes
    /// share hands each event to one sender at a time: it leaves out the events another sender
    /// took, unless their claim has lapsed at `now` (that sender died, or stalled), and hands a
    /// sender its own again, claimed anew. The default, for a store one process owns and so one
    /// sender reads, is [`outbox_peek`](Backend::outbox_peek).
    fn outbox_claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
        let _ = (owner, now, until);
        self.outbox_peek(limit)
    }

    /// Removes the outbox events of `batch`, which [`outbox_claim`](Backend::outbox_claim)
    /// handed out and the endpoint accepted. The default removes every event up to the
    /// batch's last, as [`outbox_ack`](Backend::outbox_ack) does: with one sender, the batch
    /// is the head of the outbox.
    fn outbox_delivered<'a>(
        &'a self,
        batch: &'a [OutboxEntry],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        match batch.iter().map(|entry| entry.seq).max() {
            Some(last) => self.outbox_ack(last),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    /// Gives back the events `owner` took and did not deliver, for another sender to take at
    /// once rather than after the claim lapses: a sender that stops calls it. The default has
    /// nothing to give back.
    fn outbox_release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = owner;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Deletes up to `limit` event-id records older than `before`, oldest first; returns how
    /// many. The engine prunes in batches, so no one write holds the store for long.
    fn prune_event_ids(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Instances matching `query`, in key order (kind, job, id), at most `query.limit`. A
    /// backend answers from its primary key: a page costs its size, not the table's.
    fn list_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, Result<Vec<InstanceRecord>, StoreError>>;

    /// Up to `limit` instance keys after `after` (from the first when `None`), in key order.
    /// An engine on an [exclusive](super::Ownership::Exclusive) store reads every key once at
    /// start, so that creating an instance it knows is absent costs no read. The default pages
    /// through [`list_instances`](Backend::list_instances); a backend that can list keys without
    /// reading states should.
    fn instance_keys(
        &self,
        after: Option<InstanceKey>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<InstanceKey>, StoreError>> {
        let mut query = InstanceQuery::new().limit(limit);
        query.after = after;
        Box::pin(async move {
            let page = self.list_instances(query).await?;
            Ok(page.into_iter().map(|r| r.key).collect())
        })
    }

    /// Counts per job (total, scheduled, retrying, due at `now`) with the most overdue and the
    /// next alarm, for dashboards. Reads every instance row: an operator's query, not one for
    /// a hot path.
    fn count_instances(
        &self,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<InstanceCounts>, StoreError>>;

    /// Fails when the store can no longer be trusted with reads and writes: it was closed
    /// ([`StoreError::Closed`]), or its file was deleted or replaced under it, say. Cheap (no query); the engine calls it before
    /// answering from its cache of committed rows, which would otherwise keep answering. The
    /// default never fails.
    fn verify(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How this store commits, read from its database when asked (not the options it was
    /// opened with); `None`, the default, for a store without such settings. For benchmarks.
    #[doc(hidden)]
    fn durability(&self) -> BoxFuture<'_, Result<Option<Durability>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Stops accepting work, finishes queued writes and closes the database.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
