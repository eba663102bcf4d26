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

use crate::id::InstanceKey;
use crate::store::{Backend, BoxFuture, InstanceRecord, Lease, Ownership, StoreError};
use crate::time::Timestamp;

use super::scheduler::Scheduler;

/// What a claim strategy reads and writes through: the engine's rows.
pub(crate) trait ClaimRows: Send + Sync {
    /// The instance as last committed (from the cache when there is one).
    fn load_row<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;

    /// The store.
    fn store(&self) -> &dyn Backend;
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

    /// Whether client actions share their instances with other processes' engines: then an
    /// action waits while another process's execution holds the instance, claims the instance
    /// durably before it runs user code on it (as an alarm execution does), and is made again
    /// when another process wrote the instance between its read and its commit. Otherwise the
    /// instance lock of this process is all an action needs.
    fn shares_instances(&self) -> bool;

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

    fn shares_instances(&self) -> bool {
        false
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

    fn shares_instances(&self) -> bool {
        true
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
