//! Stores hearing each other's writes through `LISTEN`/`NOTIFY`, and the database's clock.
//!
//! Two stores on one schema are two processes: each has its pool, its listening connection and
//! its announcing task. Waits for a notification are bounded by [`PATIENCE`], far longer than a
//! notification takes and far shorter than a store's fallback poll, which plays no part here.

use std::future::Future;
use std::time::Duration;

use super::*;
use crate::store::changes::Subscription;
use crate::store::runs::{CancelOutcome, NewRun, RunStore};

const PATIENCE: Duration = Duration::from_secs(20);

/// Whether a change was sent on `subscription` that it has not returned yet.
fn has_changed(subscription: &mut Subscription) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let changed = std::pin::pin!(subscription.changed());
    changed.poll(&mut cx).is_ready()
}

/// Waits for the next change on `subscription`, failing the test after [`PATIENCE`].
async fn heard(subscription: &mut Subscription, what: &str) {
    tokio::time::timeout(PATIENCE, subscription.changed())
        .await
        .unwrap_or_else(|_| panic!("{what} was never heard"));
}

fn new_run(id: &str) -> NewRun {
    NewRun {
        id: id.to_owned(),
        job_name: "job".into(),
        input: "{}".into(),
        idempotency_key: None,
        concurrency_key: None,
        labels: Default::default(),
        coalesce: false,
    }
}

#[tokio::test]
async fn a_store_that_hears_its_notifications_listens_and_polls_only_as_a_fallback() {
    let schema = TestSchema::new();
    let store = PostgresStore::open(
        schema
            .options()
            .poll_interval(Duration::from_millis(50))
            .fallback_poll_interval(Duration::from_secs(7)),
    )
    .await
    .unwrap();
    assert!(store.is_listening());
    assert!(store.changes().is_some());
    assert_eq!(store.poll_interval(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_store_told_not_to_listen_polls_at_its_poll_interval() {
    let schema = TestSchema::new();
    let store = PostgresStore::open(
        schema
            .options()
            .listen(false)
            .poll_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    assert!(!store.is_listening());
    assert!(store.changes().is_none());
    assert_eq!(store.poll_interval(), Some(Duration::from_millis(50)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_write_is_heard_by_the_other_process() {
    let (_schema, a, b) = two_stores().await;
    let feed = b.changes().expect("b listens");
    let mut alarms = feed.subscribe(Change::Alarms);
    let mut runs = feed.subscribe(Change::Runs);
    let mut ended = feed.subscribe(Change::RunEnded);
    let now = Timestamp::from_millis(1_000_000);

    // An alarm due now, set by a.
    let mut row = InstanceRecord::new(key("due"), now);
    row.alarm_at = Some(now);
    a.commit(vec![Write::Insert(row)]).await.unwrap();
    heard(&mut alarms, "an alarm due now").await;

    // A run enqueued by a.
    a.enqueue(vec![new_run("r1")], now).await.unwrap();
    heard(&mut runs, "an enqueued run").await;

    // The run ended (cancelled) by a: an end, and maybe a concurrency key freed.
    let cancelled = a.cancel_run("r1", now, false).await.unwrap();
    assert!(matches!(cancelled, CancelOutcome::Cancelled(_)));
    heard(&mut ended, "a run's end").await;
    heard(&mut runs, "a run's end, for workers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_beyond_the_fallback_poll_is_not_announced() {
    let (_schema, a, b) = two_stores().await;
    let feed = b.changes().expect("b listens");
    let mut alarms = feed.subscribe(Change::Alarms);
    let mut runs = feed.subscribe(Change::Runs);
    let now = Timestamp::from_millis(1_000_000);
    let mut row = InstanceRecord::new(key("later"), now);
    row.alarm_at = Some(now + Duration::from_secs(3600));
    a.commit(vec![Write::Insert(row)]).await.unwrap();
    // An announcement written after it: once it is heard, an announcement of the alarm would
    // have been heard too (a's notifications arrive in the order it sends them).
    a.enqueue(vec![new_run("r1")], now).await.unwrap();
    heard(&mut runs, "the enqueue").await;
    assert!(
        !has_changed(&mut alarms),
        "the alarm an hour ahead was announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_announced_at_most_once_per_period() {
    let (schema, a, b) = two_stores().await;
    let mut runs = b.changes().expect("b listens").subscribe(Change::Runs);
    // What reaches the server, counted by a listener of the test's own.
    let mut counted = sqlx::postgres::PgListener::connect(&server_url())
        .await
        .unwrap();
    counted.listen(schema.name()).await.unwrap();
    let now = Timestamp::from_millis(1_000_000);
    let began = std::time::Instant::now();
    let writes: Vec<_> = (0..100)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.enqueue(vec![new_run(&format!("r{i}"))], now).await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    // The last enqueue is followed by a notification sent after its commit.
    heard(&mut runs, "the burst").await;
    // Closing a sends what it has pending, and then nothing more.
    a.close().await.unwrap();
    let took = began.elapsed();
    sqlx::query("SELECT pg_notify($1, 'counted')")
        .bind(schema.name())
        .execute(b.pool())
        .await
        .unwrap();
    let mut notified = 0;
    loop {
        let notification = tokio::time::timeout(PATIENCE, counted.recv())
            .await
            .expect("the end of the count")
            .unwrap();
        match notification.payload() {
            "counted" => break,
            "runs" => notified += 1,
            _ => {}
        }
    }
    let periods = took.as_millis() / announce::ANNOUNCE_EVERY.as_millis();
    assert!(notified >= 1);
    assert!(
        notified <= periods + 2,
        "{notified} notifications of runs in {took:?} for 100 enqueues"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_cut_listens_again_and_wakes_every_engine() {
    let (schema, a, b) = two_stores().await;
    let feed = b.changes().expect("b listens");
    let mut ended = feed.subscribe(Change::RunEnded);
    let mut admin = schema.admin().await;
    // The listening connections of the schema's stores: their only statement is `LISTEN`.
    let listen = format!("LISTEN \"{}\"%", schema.name());
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
    )
    .bind(&listen)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, [true, true], "a's and b's listeners");
    // Nothing ended a run: only the listener, listening again, wakes this waiter.
    heard(&mut ended, "the reconnection").await;
    // And it hears what is written afterwards.
    let mut runs = feed.subscribe(Change::Runs);
    let now = Timestamp::from_millis(1_000_000);
    a.enqueue(vec![new_run("r1")], now).await.unwrap();
    heard(&mut runs, "an enqueue after the reconnection").await;
}

#[tokio::test]
async fn notifications_that_never_arrive_are_detected_at_start() {
    // The listener on another database than the pool's: notifications are per database, so
    // the probe sent through the pool never reaches it, as behind a transaction-mode pooler.
    let schema = TestSchema::new();
    let store = schema.open().await;
    let elsewhere = store
        .pool()
        .connect_options()
        .as_ref()
        .clone()
        .database("postgres");
    let started = listen::start(&elsewhere, store.pool(), schema.name()).await;
    assert!(
        matches!(started, Err(listen::Unheard::Silent)),
        "{:?}",
        started.err()
    );
    // On the pool's own database it is heard.
    let here = store.pool().connect_options().as_ref().clone();
    listen::start(&here, store.pool(), schema.name())
        .await
        .expect("the probe comes back");
}

#[tokio::test]
async fn the_database_clock_is_the_servers_time_when_read() {
    let schema = TestSchema::new();
    let store = schema.open().await;
    let before = Timestamp::now_system();
    let read = store
        .database_time()
        .expect("a server's clock")
        .await
        .unwrap();
    let after = Timestamp::now_system();
    // The server runs on this machine, on its clock.
    let slack = Duration::from_secs(1);
    assert!(
        read + slack >= before && read <= after + slack,
        "{before} <= {read} <= {after}"
    );
    store.close().await.unwrap();
    assert!(matches!(
        store.database_time().expect("a server's clock").await,
        Err(StoreError::Closed)
    ));
}
