//! sqlx 0.9 with postgres and durable-jobs in one binary. The pool is lazy: it needs
//! no server to exist.

#[path = "../../common.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://postgres@127.0.0.1:5432/postgres")?;
    let doubled = common::run_a_step_job(21).await?;
    assert_eq!(doubled, 42);
    println!(
        "sqlx 0.9 with postgres: built a PgPool ({} connections open) and ran a step job",
        pool.size()
    );
    Ok(())
}
