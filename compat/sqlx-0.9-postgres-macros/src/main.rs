//! sqlx 0.9 with postgres and macros and durable-jobs in one binary. The pool is lazy: it needs
//! no server to exist.

#[path = "../../common.rs"]
mod common;

/// A row as the `FromRow` derive of sqlx's `macros` feature reads it.
#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)]
struct Count {
    n: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://postgres@127.0.0.1:5432/postgres")?;
    let _query = sqlx::query_as::<sqlx::Postgres, Count>("SELECT count(*) AS n FROM pg_class");
    let doubled = common::run_a_step_job(21).await?;
    assert_eq!(doubled, 42);
    println!("sqlx 0.9 with postgres and macros: built a PgPool ({} connections open) and ran a step job", pool.size());
    Ok(())
}
