//! The embedded SQLite backend.

use std::path::PathBuf;
use std::sync::Arc;

use super::{AlarmScan, Backend, BoxFuture, InstanceRecord, OutboxEntry, StoreError, WriteBatch};
use crate::id::InstanceKey;
use crate::time::Timestamp;

/// SQLite's durability mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at checkpoints only.
    #[default]
    Normal,
    /// fsync on every commit.
    Full,
}

/// Where and how to open the database.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    path: Option<PathBuf>,
    synchronous: Synchronous,
}

impl SqliteOptions {
    /// A database file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: Some(path.into()),
            synchronous: Synchronous::Normal,
        }
    }

    /// An in-memory database.
    pub fn in_memory() -> Self {
        SqliteOptions {
            path: None,
            synchronous: Synchronous::Normal,
        }
    }

    /// The durability mode.
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = mode;
        self
    }
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    _options: SqliteOptions,
}

impl SqliteStore {
    /// Opens the database.
    ///
    /// # Errors
    ///
    /// When it cannot be opened.
    pub fn open(options: SqliteOptions) -> Result<Arc<SqliteStore>, StoreError> {
        Ok(Arc::new(SqliteStore { _options: options }))
    }

    /// Closes at once.
    pub fn close_blocking(&self) {}
}

impl Backend for SqliteStore {
    fn load<'a>(
        &'a self,
        _key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn has_event_id<'a>(
        &'a self,
        _key: &'a InstanceKey,
        _event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn commit(&self, _batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn claim_alarm<'a>(
        &'a self,
        _key: &'a InstanceKey,
        _now: Timestamp,
        _owner: &'a str,
        _lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn renew_leases<'a>(
        &'a self,
        _owner: &'a str,
        _lease_until: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn scan_alarms(
        &self,
        _now: Timestamp,
        _limit: usize,
    ) -> BoxFuture<'_, Result<AlarmScan, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn recover(&self, _owner: &str, _now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn outbox_peek(&self, _limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn outbox_ack(&self, _seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn prune_event_ids(&self, _before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

pub(crate) mod runs;
