//! The engine builder's shortcuts for the PostgreSQL store.

use std::any::Any;
use std::sync::Arc;

use super::{PostgresOptions, PostgresStore};
use crate::engine::{ConnectStore, EngineBuilder, Registry};
use crate::store::{BoxFuture, Store, StoreError};

impl ConnectStore for PostgresOptions {
    fn connect(self: Box<Self>) -> BoxFuture<'static, Result<Arc<dyn Store>, StoreError>> {
        Box::pin(async move {
            let store: Arc<dyn Store> = Arc::new(PostgresStore::open(*self).await?);
            Ok(store)
        })
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<R: Registry, S> EngineBuilder<R, S> {
    /// Keeps everything in the PostgreSQL database at `url`, in the schema `durable_jobs`,
    /// connected to (and migrated) when the engine starts. Several engines, in several
    /// processes on several machines, may run on one database: each execution is claimed by
    /// one of them at a time. Short for `.postgres_options(PostgresOptions::new(url))`
    /// (feature `postgres`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use durable_jobs::{Engine, JobSet, Registry};
    /// # struct Jobs;
    /// # impl Registry for Jobs { type App = (); fn register(_: &mut JobSet<()>) {} }
    /// # async fn run() -> durable_jobs::Result<()> {
    /// let engine = Engine::<Jobs>::builder()
    ///     .postgres("postgres://jobs@db.internal/app")
    ///     .start()
    ///     .await?;
    /// engine.shutdown().await
    /// # }
    /// ```
    pub fn postgres(self, url: impl Into<String>) -> Self {
        self.postgres_options(PostgresOptions::new(url))
    }

    /// Runs on the PostgreSQL store these options connect to when the engine starts: another
    /// schema, the application's own pool ([`PostgresOptions::from_pool`]), pool settings.
    pub fn postgres_options(self, options: PostgresOptions) -> Self {
        self.connect_store_at_start(options)
    }
}
