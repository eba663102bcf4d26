//! How an alarm execution claims its instance, chosen once from the store's
//! [`Ownership`]: the only place where the engine's behaviour depends on it.
//!
//! With an [exclusive](Ownership::Exclusive) store (SQLite holding its file) a claim is a check,
//! not a write: no other engine can run the alarm, the instance lock keeps this one's actions
//! out, and after a crash the alarm, still due, fires again at start, once every lease was
//! released. An alarm execution then costs one write, committed rows can be cached, and an
//! execution whose end could not be committed is held back in memory for a lease.
//!
//! With a [shared](Ownership::Shared) store a claim is a durable lease
//! ([`Backend::claim_alarm`]) that moves the alarm to the lease's expiry, so another engine takes
//! over if this one dies; leases of executions in flight are renewed, nothing is cached (another
//! process may have written the row), and nothing is released at start: a lease found there may
//! belong to a live process. The lease is then also what keeps two processes off one instance
//! (the instance lock only covers this one): a client action waits while another process holds
//! it, takes it itself ([`Backend::claim_instance`]) before running an execution, and is made
//! again when another process wrote the instance first.

use std::sync::Arc;
use std::time::Duration;

use crate::id::InstanceKey;
use crate::store::{
    Backend, BoxFuture, InstanceRecord, Lease, Ownership, StoreError, Write, WriteBatch,
};
use crate::time::Timestamp;

use super::scheduler::{InlineClaim, Scheduler};

/// How many times a client action that lost a race for its instance to another process is made
/// in all, before the conflict is returned.
const ACTION_ATTEMPTS: u32 = 32;

/// What a claim strategy works through: the engine's rows and its scheduler.
pub(crate) trait ClaimRows: Send + Sync {
    /// The instance as last committed (from the cache when there is one).
    fn load_row<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// The store.
    fn store(&self) -> &dyn Backend;

    /// The scheduler, which renews the leases of the executions it counts.
    fn scheduler(&self) -> &Arc<Scheduler>;
}

/// A claim strategy: [`ExclusiveClaims`] or [`LeasedClaims`].
pub(crate) trait Claims: Send + Sync {
    /// Whether committed rows may be kept in memory instead of read back before each write.
    fn wants_cache(&self) -> bool;

    /// Whether every lease is released when the engine starts (and every step-run lease
    /// expired), so interrupted work resumes at once.
    fn recovers_at_start(&self) -> bool;

    /// Whether the leases of executions in flight must be renewed while they run.
    fn renews_leases(&self) -> bool;

    /// How many times a client action is made in all when it loses a race for its instance
    /// (its commit finds the instance written since it read it) before it ran user code under
    /// a claim: 1 when no other process writes the instances, so the action is made once and
    /// its payload need not be kept for a second attempt.
    fn action_attempts(&self) -> u32;

    /// How long a client action waits before reading `rec` again because another engine's
    /// live lease holds it (looking at most every `poll`); `None` when the action may go on.
    /// `owner` is this engine: its own leases are left by its executions that have ended,
    /// since the instance lock is held.
    fn held_elsewhere(
        &self,
        rec: Option<&InstanceRecord>,
        owner: &str,
        now: Timestamp,
        poll: Duration,
    ) -> Option<Duration>;

    /// Before a client action runs user code on `rec`, read at `expected` (`None` for a row
    /// not stored yet): claims the instance for `owner` until `until` so that no other process runs it
    /// meanwhile, and makes `rec` and `expected` those of the claimed row. The guard returned
    /// keeps the lease renewed until dropped. `None` when there is nothing to claim: the
    /// instance lock of this process is all the action needs.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when another process wrote the instance since it was read.
    fn claim_for_action<'a>(
        &'a self,
        rows: &'a dyn ClaimRows,
        rec: &'a mut InstanceRecord,
        expected: &'a mut Option<u64>,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InlineClaim>, StoreError>>;

    /// Gives the rows `batch` inserts, about to be committed at `now`, the version they start
    /// at.
    fn version_inserts(&self, batch: &mut WriteBatch, now: Timestamp);

    /// Claims `key`'s alarm if it is due at `now` and not held: the row to run it on, carrying
    /// `lease`, or `None`.
    fn claim<'a>(
        &'a self,
        rows: &'a dyn ClaimRows,
        key: &'a InstanceKey,
        now: Timestamp,
        lease: Lease,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// An execution of `key` ended but its end could not be committed: keeps its alarm from
    /// firing again before `until`, so a failing store does not run the job in a loop.
    fn failed_end(&self, scheduler: &Scheduler, key: InstanceKey, until: Timestamp);

    /// The alarm `rec` is waiting for, as a status reports it: none while an execution holds
    /// it (`in_flight`: the scheduler runs it in this process), since its next time is not
    /// known yet, and none while the instance is broken, since it does not fire.
    fn pending_alarm(&self, rec: &InstanceRecord, in_flight: bool) -> Option<Timestamp>;
}

/// The strategy for a store of this ownership.
pub(crate) fn for_ownership(ownership: Ownership) -> Box<dyn Claims> {
    match ownership {
        Ownership::Exclusive => Box::new(ExclusiveClaims),
        Ownership::Shared => Box::new(LeasedClaims),
    }
}

/// Claims checked in memory: see the module documentation.
pub(crate) struct ExclusiveClaims;

impl Claims for ExclusiveClaims {
    fn wants_cache(&self) -> bool {
        true
    }

    fn recovers_at_start(&self) -> bool {
        true
    }

    fn renews_leases(&self) -> bool {
        // The claim is not written, so there is nothing to renew.
        false
    }

    fn action_attempts(&self) -> u32 {
        // Every write of an instance is made under this process's instance lock.
        1
    }

    fn held_elsewhere(
        &self,
        _rec: Option<&InstanceRecord>,
        _owner: &str,
        _now: Timestamp,
        _poll: Duration,
    ) -> Option<Duration> {
        // There is no elsewhere.
        None
    }

    fn claim_for_action<'a>(
        &'a self,
        _rows: &'a dyn ClaimRows,
        _rec: &'a mut InstanceRecord,
        _expected: &'a mut Option<u64>,
        _owner: &'a str,
        _now: Timestamp,
        _until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InlineClaim>, StoreError>> {
        // The instance lock keeps this process's alarm executions out, and there is no other.
        Box::pin(std::future::ready(Ok(None)))
    }

    fn version_inserts(&self, _batch: &mut WriteBatch, _now: Timestamp) {
        // Rows start at the version they were built with, 0: an instance is read and written
        // under this process's lock only, so no read of a deleted row can outlive it.
    }

    fn claim<'a>(
        &'a self,
        rows: &'a dyn ClaimRows,
        key: &'a InstanceKey,
        now: Timestamp,
        lease: Lease,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let Some(mut rec) = rows.load_row(key).await? else {
                return Ok(None);
            };
            let due = rec.alarm_at.is_some_and(|at| at <= now);
            let held = rec.lease.as_ref().is_some_and(|lease| lease.until > now);
            if !due || held {
                return Ok(None);
            }
            rec.lease = Some(lease);
            Ok(Some(rec))
        })
    }

    fn failed_end(&self, scheduler: &Scheduler, key: InstanceKey, until: Timestamp) {
        // The claim is not in the row: the alarm is still due and would fire again at once.
        scheduler.hold(key, until);
    }

    fn pending_alarm(&self, rec: &InstanceRecord, in_flight: bool) -> Option<Timestamp> {
        // A running execution's claim is not in the row: the scheduler knows of it.
        if rec.lease.is_some() || rec.broken.is_some() || in_flight {
            None
        } else {
            rec.alarm_at
        }
    }
}

/// Durable, renewed claims: see the module documentation.
pub(crate) struct LeasedClaims;

impl Claims for LeasedClaims {
    fn wants_cache(&self) -> bool {
        false
    }

    fn recovers_at_start(&self) -> bool {
        false
    }

    fn renews_leases(&self) -> bool {
        true
    }

    fn action_attempts(&self) -> u32 {
        ACTION_ATTEMPTS
    }

    fn held_elsewhere(
        &self,
        rec: Option<&InstanceRecord>,
        owner: &str,
        now: Timestamp,
        poll: Duration,
    ) -> Option<Duration> {
        let lease = rec?.lease.as_ref()?;
        if lease.owner == owner || lease.until <= now {
            // Ours is left by an execution of this process that has ended (the instance lock
            // is held); a lapsed one is free.
            return None;
        }
        let until_lapsed = lease
            .until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        Some(poll.min(until_lapsed))
    }

    fn claim_for_action<'a>(
        &'a self,
        rows: &'a dyn ClaimRows,
        rec: &'a mut InstanceRecord,
        expected: &'a mut Option<u64>,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InlineClaim>, StoreError>> {
        Box::pin(async move {
            // Counted before the lease is written, so that the renewals cover it from the start.
            let guard = rows.scheduler().inline_claim();
            match *expected {
                Some(version) => {
                    let claimed = rows
                        .store()
                        .claim_instance(&rec.key, version, owner, until)
                        .await?
                        .ok_or_else(|| StoreError::Conflict(rec.key.clone()))?;
                    rec.version = claimed.version;
                    rec.lease = claimed.lease;
                    rec.lease_generation = claimed.lease_generation;
                }
                None => {
                    // Inserted claimed, with an alarm at the lease's expiry if it has none, so
                    // that an execution interrupted with its process runs again there.
                    let mut row = rec.clone();
                    row.version = first_version(now);
                    row.updated_at = now;
                    row.alarm_at = row.alarm_at.or(Some(until));
                    row.lease = Some(Lease {
                        owner: owner.to_owned(),
                        until,
                    });
                    rows.store()
                        .commit(vec![Write::Insert(row.clone())])
                        .await?;
                    *rec = row;
                }
            }
            *expected = Some(rec.version);
            Ok(Some(guard))
        })
    }

    fn version_inserts(&self, batch: &mut WriteBatch, now: Timestamp) {
        for write in batch {
            if let Write::Insert(rec) = write {
                rec.version = first_version(now);
            }
        }
    }

    fn claim<'a>(
        &'a self,
        rows: &'a dyn ClaimRows,
        key: &'a InstanceKey,
        now: Timestamp,
        lease: Lease,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        // Moves the alarm to the lease's expiry: if this engine dies, or its execution's end
        // cannot be committed, the alarm fires again once the lease lapses.
        Box::pin(async move {
            rows.store()
                .claim_alarm(key, now, &lease.owner, lease.until)
                .await
        })
    }

    fn failed_end(&self, _scheduler: &Scheduler, _key: InstanceKey, _until: Timestamp) {
        // The claim moved the alarm to the lease's expiry, which is the pause.
    }

    fn pending_alarm(&self, rec: &InstanceRecord, _in_flight: bool) -> Option<Timestamp> {
        // The claim is in the row, whichever process made it.
        if rec.lease.is_some() || rec.broken.is_some() {
            None
        } else {
            rec.alarm_at
        }
    }
}

/// The version of a row inserted into a store shared with other processes: from the time and
/// chance, not 0. A row deleted and created again while another process holds a read of it
/// must not come back at a version that read carries, or that process's write, checked
/// against the version alone, would land on the new row (an engine alone on its store reads
/// and writes an instance under its lock, and starts rows at 0). A row would have to be
/// written 65,536 times per millisecond of its life to reach the first version of a later one.
fn first_version(now: Timestamp) -> u64 {
    let millis = u64::try_from(now.as_millis()).unwrap_or(0) & ((1 << 46) - 1);
    (millis << 16) | fastrand::u64(..1 << 16)
}
