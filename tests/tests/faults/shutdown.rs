//! Shutdown does not wait for telemetry delivery: with the endpoint down, it returns at once
//! and the undelivered events stay in the outbox for the next start.

use std::time::Duration;

use durable_jobs::{Engine, HttpTelemetry};
use durable_jobs_tests::{Batcher, Hook, Probe, TestJobs};

#[tokio::test]
async fn shutdown_does_not_wait_for_an_unreachable_telemetry_endpoint() {
    // A port nobody listens on: bound, noted, closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", dead.local_addr().unwrap());
    drop(dead);
    let db = durable_jobs_tests::TestDb::new().await;
    // The default shutdown timeout (30 s) stays: the shutdown must not need it.
    let engine = Engine::<TestJobs>::builder()
        .store_arc(db.open().await)
        .telemetry(HttpTelemetry::new(&url, "test", "svc"))
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    for n in 0..3 {
        engine
            .client()
            .debounce::<Batcher>()
            .add("b", Hook { n })
            .await
            .unwrap();
    }

    // A third of the timeout: a shutdown that waits for the endpoint fails here.
    tokio::time::timeout(Duration::from_secs(10), engine.shutdown())
        .await
        .expect("shutdown waited for the unreachable telemetry endpoint")
        .unwrap();

    let undelivered = db.int("SELECT count(*) FROM outbox").await;
    // `debounce.started`, the flush of the third `add` (`max_events = 3`): `job.executed` and
    // `debounce.flushed`.
    assert_eq!(undelivered, 3);
}
