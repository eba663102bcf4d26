//! durable-jobs' PostgreSQL store beside sqlx 0.8 with postgres and macros, in one binary: one
//! sqlx, so the application's pool is the very type the store takes. The pool is lazy: it needs
//! no server to exist.

#[path = "../../common.rs"]
mod common;

use durable_jobs::postgres::PostgresOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://postgres@127.0.0.1:5432/postgres")?;
    // Only compiles if durable-jobs and this program use the same sqlx.
    let options = PostgresOptions::from_pool(pool.clone()).schema("jobs");
    assert_eq!(options.schema_name(), "jobs");
    let doubled = common::run_a_step_job(21).await?;
    assert_eq!(doubled, 42);
    println!(
        "sqlx 0.8 with postgres and macros, durable-jobs with its PostgreSQL store: handed the application's PgPool ({} connections open) to the store's options and ran a step job",
        pool.size()
    );
    Ok(())
}
