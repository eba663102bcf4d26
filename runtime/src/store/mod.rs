//! The storage boundary: what the engine asks of a backend.
//!
//! A backend implements [`Store`], which is [`Backend`] (instances, alarms, leases, outbox,
//! event ids) plus [`RunStore`] (step-job runs, steps and logs), and says once, through
//! [`Store::ownership`], whether it is the only process on its data. This module depends on
//! nothing above it: the engine, the step runtime and the client use it, and drivers (the
//! embedded SQLite store, [`crate::sqlite`]) implement it.
//!
//! The engine never assumes it is the only process using the store. Every instance row carries a
//! `version` bumped by every write, so a write based on a stale read fails with
//! [`StoreError::Conflict`] instead of overwriting; on a [shared](Ownership::Shared) store an
//! alarm execution first *claims* its row with a lease (owner, expiry, generation), which moves
//! the row's alarm to the lease expiry so a crashed owner's work fires again when the lease runs
//! out. An [exclusive](Ownership::Exclusive) store is spared that write: no other engine can run
//! its alarms, and an alarm left due by a crash fires at the next start. Step-job runs are always
//! claimed with a lease, and every write of an executing run is fenced by its generation.

pub mod changes;
#[cfg(test)]
pub(crate) mod conformance;
mod instances;
pub mod runs;

use crate::error::BoxError;
use crate::id::InstanceKey;

pub use changes::{Change, ChangeFeed, ChangeSender};
pub use futures_core::future::BoxFuture;
pub use instances::{
    AlarmScan, Backend, Columns, Durability, InstanceCounts, InstanceQuery, InstanceRecord, Lease,
    OutboxEntry, UnregisteredJob, Write, WriteBatch,
};
pub use runs::RunStore;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A write's expected version (or an insert's absence) did not hold: someone else wrote the
    /// instance first. Nothing of the batch was applied.
    #[error("conflicting write to {0}")]
    Conflict(InstanceKey),
    /// The event id was already recorded for the instance. Nothing of the batch was applied.
    #[error("event {event_id} was already recorded for {key}")]
    DuplicateEvent {
        /// The instance.
        key: InstanceKey,
        /// The repeated id.
        event_id: String,
    },
    /// The database is held by another store whose ownership cannot share it: an
    /// [exclusive](Ownership::Exclusive) store refuses every other, and a
    /// [shared](Ownership::Shared) one refuses an exclusive one. Nothing was opened.
    #[error("database file {} is in use by another engine{}", .path.display(), held_by_words(.held_by))]
    InUse {
        /// The database, as the caller named it.
        path: std::path::PathBuf,
        /// How the other store holds it, when that could be told.
        held_by: Option<Ownership>,
    },
    /// The database failed.
    #[error("{0}")]
    Database(#[source] BoxError),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

fn held_by_words(held_by: &Option<Ownership>) -> &'static str {
    match *held_by {
        Some(Ownership::Exclusive) => " (held exclusively)",
        Some(Ownership::Shared) => " (held in shared mode)",
        None => "",
    }
}

/// How often an engine on a shared store looks for what other processes wrote, unless the
/// store says otherwise ([`Store::poll_interval`]).
pub const DEFAULT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a store is the only process on its data, as [`Store::ownership`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// No other process can change the data while the store is open (SQLite holding its file
    /// locked). The engine keeps committed rows in a cache, claims an alarm with a check
    /// instead of a write, and releases every lease at start: whatever holds one crashed.
    Exclusive,
    /// Other processes may run the same jobs on the same data. Every alarm execution claims its
    /// row with a durable lease that is renewed while it runs, nothing is cached, and leases
    /// left by others are taken over only once they lapse.
    Shared,
}

/// A store the engine can run on: every operation of instances and of step-job runs, and how
/// the store is owned.
///
/// Hand one to [`EngineBuilder::store`](crate::EngineBuilder::store);
/// [`sqlite(path)`](crate::EngineBuilder::sqlite) and
/// [`in_memory()`](crate::EngineBuilder::in_memory) are shortcuts for the embedded SQLite store.
///
/// A store is also [`Any`](std::any::Any), so that what only one driver can do (PostgreSQL's
/// enqueue inside the application's transaction) finds that driver behind `dyn Store`.
pub trait Store: Backend + RunStore + std::any::Any {
    /// Whether this store is the only process on its data. Asked once, when the engine starts:
    /// the engine picks its claim, cache and recovery strategy from the answer.
    fn ownership(&self) -> Ownership;

    /// How often an engine looks in the store for work that other processes made due (alarms,
    /// step runs) and for runs they ended: `None` when nobody else writes the store (an
    /// [exclusive](Ownership::Exclusive) one), whose own writes wake the engine. The default
    /// is [`DEFAULT_POLL_INTERVAL`] for a shared store and `None` for an exclusive one. Asked
    /// once, when the engine starts.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        match self.ownership() {
            Ownership::Shared => Some(DEFAULT_POLL_INTERVAL),
            Ownership::Exclusive => None,
        }
    }

    /// Where the engine hears that other processes wrote something it may have to act on, so
    /// that it need not wait for its next poll: `None` (the default) when the store cannot
    /// tell. Asked once, when the engine starts. See [`changes`].
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// The database's own clock, read now, when the store has one that every process on it
    /// shares (a database server's): the engine, unless it runs on a test clock, then keeps its
    /// clock in step with it, so that lease expiries and due times mean the same to every
    /// process whatever their own clocks say. `None` (the default): the system clock is used
    /// as it is, which is right for a database on the engine's own machine. Asked at start and
    /// every minute.
    fn database_time(&self) -> Option<BoxFuture<'_, Result<crate::time::Timestamp, StoreError>>> {
        None
    }

    /// As [`Backend::close`], blocking the calling thread instead of returning a future: for
    /// `Drop` impls, which cannot await, to release the database (and a file lock) at once.
    /// Does nothing if the store is closed.
    fn close_blocking(&self);
}
