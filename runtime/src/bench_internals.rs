//! What the benchmark compares against: the SQL the SQLite store runs for step-job runs, and
//! how an engine's store commits. Compiled with the `bench-internals` feature only; not covered
//! by semver.

use crate::store::{Durability, StoreError};

/// The step-job schema as the store's migrations leave it (2, 4, then 6), for the benchmark's
/// raw-SQLite ceiling (it writes the same rows).
pub fn step_job_schema() -> String {
    crate::sqlite::runs::schema_after_migrations()
}

/// The statements the store runs for a run that goes well, for the same ceiling.
pub use crate::sqlite::runs::statements as step_job_statements;

/// The PostgreSQL store's statements for step-job runs, for the benchmark's raw-SQL ceiling
/// on PostgreSQL (the same rows, the same statements, many runs a transaction, no engine).
#[cfg(feature = "postgres")]
pub use crate::postgres::bench::RunStatements as PostgresRunStatements;

/// How an engine's store commits, read from its write connection: the benchmark prints it next
/// to every figure it compares with another system.
pub async fn store_durability<R: crate::Registry>(
    engine: &crate::Engine<R>,
) -> Result<Option<Durability>, StoreError> {
    engine.inner().store.durability().await
}

/// A timestamp as the run store writes it (`YYYY-MM-DDTHH:MM:SS.sssZ`), for rows the benchmark
/// seeds directly.
pub fn iso_timestamp(at: crate::Timestamp) -> String {
    crate::sqlite::runs::format_ts(at)
}

/// Waits until the engine has read every instance key of its store (see `KnownKeys`): from
/// then on, first actions on new instances read nothing. Returns at once on a store the engine
/// does not cache (a shared one).
pub async fn instance_keys_known<R: crate::Registry>(engine: &crate::Engine<R>) {
    if let Some(cache) = &engine.inner().cache {
        cache.known.primed().await;
    }
}
