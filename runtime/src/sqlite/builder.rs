//! The engine builder's shortcuts for the SQLite store.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use super::{SqliteOptions, SqliteStore, Synchronous};
use crate::engine::{EngineBuilder, OpenStore, Registry};
use crate::store::{Store, StoreError};

impl OpenStore for SqliteOptions {
    fn open(self: Box<Self>) -> Result<Arc<dyn Store>, StoreError> {
        let store: Arc<dyn Store> = SqliteStore::open(*self)?;
        Ok(store)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<R: Registry, S> EngineBuilder<R, S> {
    /// Keeps everything in the SQLite database file at `path` (created if missing; WAL mode),
    /// opened when the engine starts. Short for `.sqlite_options(SqliteOptions::file(path))`.
    pub fn sqlite(self, path: impl Into<PathBuf>) -> Self {
        self.sqlite_options(SqliteOptions::file(path))
    }

    /// Keeps everything in memory: nothing survives the process. For tests. Short for
    /// `.sqlite_options(SqliteOptions::in_memory())`.
    pub fn in_memory(self) -> Self {
        self.sqlite_options(SqliteOptions::in_memory())
    }

    /// Runs on the SQLite store these options open when the engine starts.
    pub fn sqlite_options(self, options: SqliteOptions) -> Self {
        self.open_store_at_start(options)
    }

    /// SQLite's durability mode: `Normal` (default in WAL: a crash of the process loses
    /// nothing, a power loss may lose the last commits) or `Full` (a write is acknowledged only
    /// once the log holding it is synced; see [`Synchronous`]). Applies to the SQLite store
    /// chosen by `.sqlite(..)`, `.in_memory()` or `.sqlite_options(..)`, before or after this
    /// call; a store handed to `.store(..)` keeps its own.
    pub fn synchronous(self, mode: Synchronous) -> Self {
        self.adjust_store_options(move |options: &mut SqliteOptions| {
            *options = options.clone().synchronous(mode);
        })
    }
}
