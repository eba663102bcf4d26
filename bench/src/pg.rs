//! `--backend postgres`: each run of a workload keeps its engine's tables in a
//! fresh schema of the server `DURABLE_JOBS_PG_URL` names (default the local test server),
//! dropped afterwards, and reads the durability of its commits from the server.

pub(crate) mod continuous;
pub(crate) mod debounce;
pub(crate) mod latency;
pub(crate) mod limit;
pub(crate) mod processes;

use std::sync::atomic::{AtomicUsize, Ordering};

use durable_jobs::postgres::PostgresOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::durability::Durability;
use crate::BenchResult;

/// The server used when `DURABLE_JOBS_PG_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server's URL.
pub(crate) fn url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of one run, dropped by [`Schema::drop_now`].
pub(crate) struct Schema {
    name: String,
    admin: PgPool,
}

impl Schema {
    /// A schema no earlier run used (the store creates it when the engine starts).
    pub(crate) async fn fresh() -> BenchResult<Schema> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url())
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at {}: {e}", url()))?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .execute(&admin)
            .await?;
        Ok(Schema { name, admin })
    }

    /// Joins `engine` to the HTTP API's shared event feed on this schema.
    pub(crate) async fn join_feed<R: durable_jobs::Registry>(
        &self,
        engine: &durable_jobs::Engine<R>,
    ) -> BenchResult<durable_jobs_http::postgres::SharedFeed> {
        let options = durable_jobs_http::postgres::SharedFeedOptions::new(url()).schema(&self.name);
        Ok(durable_jobs_http::postgres::SharedFeed::start(engine, options).await?)
    }

    /// The store's options: this schema on the server.
    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions::new(url()).schema(&self.name)
    }

    /// The schema's name, safe to quote in a statement (letters, digits and `_`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the server outside any engine, for seeding and measuring.
    pub(crate) fn admin(&self) -> &PgPool {
        &self.admin
    }

    /// What every commit of the server is acknowledged with: its `synchronous_commit`, as a
    /// session of the server reads it (the store's sessions set none of their own).
    pub(crate) async fn durability(&self) -> BenchResult<Durability> {
        let level: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&self.admin)
            .await?;
        Ok(Durability::postgres(&level))
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop_now(self) -> BenchResult {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .execute(&self.admin)
            .await?;
        self.admin.close().await;
        Ok(())
    }
}
