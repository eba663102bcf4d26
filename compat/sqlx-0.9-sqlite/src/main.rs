//! sqlx 0.9's SQLite driver and durable-jobs in one binary: both link the same SQLite.

#[path = "../../common.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect("sqlite::memory:")
        .await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let doubled = common::run_a_step_job(21).await?;
    assert_eq!(doubled, 42);
    println!("sqlx 0.9 with sqlite: queried SQLite {version} through sqlx and ran a step job");
    Ok(())
}
