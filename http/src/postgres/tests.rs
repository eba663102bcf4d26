//! The append order on the real server (`DURABLE_JOBS_PG_URL`): an append waits for the one
//! before it to commit, so `seq` values are in commit order.

use std::time::Duration;

use durable_jobs::postgres::{PostgresOptions, PostgresStore};
use durable_jobs::store::Backend;
use sqlx::postgres::PgPool;
use sqlx::Executor;

use super::tables::Tables;

fn pg_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn waiting_for_the_feed_lock(pool: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)",
    )
    .bind(format!("\"{schema}\".http_feed"))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_append_waits_for_the_one_before_it_to_commit() {
    let schema = format!(
        "http_lock_{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            & 0xffff_ffff_ffff
    );
    let pool = PgPool::connect(&pg_url()).await.unwrap();
    let store = PostgresStore::open(PostgresOptions::from_pool(pool.clone()).schema(&schema))
        .await
        .unwrap();
    let tables = Tables::new(&schema).unwrap();
    tables.create(&pool).await.unwrap();

    // An append in flight: its rows have their seq, and it has not committed.
    let first = tables
        .write_append(&pool, "a", &[("run", "{}".to_owned())])
        .await
        .unwrap();
    // The next append waits for it, where a tailer could otherwise read its row first.
    let second = {
        let pool = pool.clone();
        let tables = Tables::new(&schema).unwrap();
        tokio::spawn(async move {
            tables
                .append(
                    &pool,
                    "b",
                    &[("run", "{\"type\":\"run:trigger\"}".to_owned())],
                )
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting_for_the_feed_lock(&pool, &schema).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second append did not wait for the first"
        );
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    first.commit().await.unwrap();
    second.await.unwrap().unwrap();

    // Committed in seq order: the first append's row, then the second's.
    let rows = tables.read_after(&pool, 0).await.unwrap();
    let bodies: Vec<&str> = rows.iter().map(|(_, _, body)| body.as_str()).collect();
    assert_eq!(bodies, ["{}", "{\"type\":\"run:trigger\"}"]);

    store.close().await.unwrap();
    pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
        .await
        .unwrap();
}
