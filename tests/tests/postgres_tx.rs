//! Actions inside the application's own transaction on the PostgreSQL store
//! (`trigger_in`, `batch_trigger_in`, `start_in`, `add_in`, `send_in`): what they write exists if
//! and only if the application's transaction commits, conflicts come back as outcomes that leave
//! the transaction usable, what would run job code inside the call runs after the commit, and a
//! transaction held open keeps the engine off the rows it wrote and nothing else.
//!
//! Each test works in a schema of its own on the server at `DURABLE_JOBS_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` provides one), dropped afterwards, with
//! the application's own table (`orders`) beside the engine's. Without a server the tests fail.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use durable_jobs::postgres::{EventOutcome, PostgresOptions, TriggerOutcome};
use durable_jobs::prelude::*;
use durable_jobs::steps::{BatchItem, Coalesce, Disposition, StepError, TriggerOptions};
use durable_jobs::testing::TestClock;
use durable_jobs::{
    ContinuousState, DebounceState, Engine, Error, Event, EventKind, EventStream, JobEvent,
    TaskState, ValidationTarget,
};
use durable_jobs_tests::{
    Batcher, Count, Hook, LazyRefresher, OrderEvent, Orders, Probe, Refresher,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

fn server_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// How long a test waits for what the engine does after a commit before it fails.
const WAIT: Duration = Duration::from_secs(30);

/// The input of the step job: an order to ship.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ship {
    /// The order.
    pub order: i64,
}

/// Every order the step job shipped, in this test binary (tests use orders of their own).
static SHIPPED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn shipped(order: i64) -> usize {
    SHIPPED
        .lock()
        .unwrap()
        .iter()
        .filter(|o| **o == order)
        .count()
}

/// Ships an order, once per run.
#[durable_jobs::step_job]
pub async fn ship_order(
    step: &mut StepContext,
    input: Ship,
    _app: &Probe,
) -> Result<i64, StepError> {
    let order = input.order;
    step.run("ship", |_| async move {
        SHIPPED.lock().unwrap().push(order);
        Ok(order)
    })
    .await
}

durable_jobs::registry! {
    /// The jobs of these tests: one of each kind.
    pub TxJobs<Probe> { Refresher, LazyRefresher, Batcher, Orders, ShipOrder }
}

/// A schema for one test, dropped with everything in it when the guard is.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Schema(format!(
            "dj_tx_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions::new(server_url())
            .schema(&self.0)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            // What another transaction committed is found by the poll until the store listens.
            .poll_interval(Duration::from_millis(20))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&server_url()).await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

/// An engine on a schema of its own, the application's pool on the same database, and the
/// application's `orders` table in that schema.
struct App {
    engine: Engine<TxJobs>,
    clock: TestClock,
    probe: Probe,
    pool: PgPool,
    // Last: dropped after the engine and the pool.
    schema: Schema,
}

impl App {
    async fn new() -> Self {
        let schema = Schema::new();
        let clock = TestClock::new();
        let probe = Probe::default();
        let engine = engine(&schema, &clock, &probe).await;
        let pool = PgPool::connect(&server_url()).await.unwrap();
        sqlx::query(&format!(
            "CREATE TABLE \"{}\".orders (id bigint PRIMARY KEY)",
            schema.0
        ))
        .execute(&pool)
        .await
        .unwrap();
        App {
            engine,
            clock,
            probe,
            pool,
            schema,
        }
    }

    /// The application's own write, in its transaction.
    async fn insert_order(&self, conn: &mut PgConnection, id: i64) {
        sqlx::query(&format!(
            "INSERT INTO \"{}\".orders (id) VALUES ($1)",
            self.schema.0
        ))
        .bind(id)
        .execute(conn)
        .await
        .unwrap();
    }

    async fn order_exists(&self, id: i64) -> bool {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{}\".orders WHERE id = $1)",
            self.schema.0
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn end(self) {
        self.engine.shutdown().await.unwrap();
        self.pool.close().await;
    }
}

async fn engine(schema: &Schema, clock: &TestClock, probe: &Probe) -> Engine<TxJobs> {
    TxJobs::builder()
        .postgres_options(schema.options())
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("an engine on PostgreSQL at {}: {e}", server_url()))
}

fn count(n: i64) -> Count {
    Count {
        count: n,
        max_runs: None,
    }
}

/// The next job event of `events` that `wanted` picks; fails the test after [`WAIT`].
async fn next_job_event(
    events: &mut EventStream,
    wanted: impl Fn(&JobEvent) -> bool,
) -> std::sync::Arc<JobEvent> {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Job(e)) if wanted(&e) => return e,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no such event within {WAIT:?}"))
}

fn executed(job: &'static str, id: &'static str) -> impl Fn(&JobEvent) -> bool {
    move |e| {
        e.instance.job() == job
            && e.instance.id() == id
            && matches!(e.kind, EventKind::Executed { .. })
    }
}

fn flushed(id: &'static str) -> impl Fn(&JobEvent) -> bool {
    move |e| e.instance.id() == id && matches!(e.kind, EventKind::DebounceFlushed { .. })
}

/// The batches `batcher` flushed, as the event numbers of each.
fn flushes(probe: &Probe) -> Vec<Vec<i64>> {
    probe
        .calls_of("execute")
        .into_iter()
        .filter(|c| c.job == "batcher")
        .map(|c| {
            serde_json::from_value::<durable_jobs_tests::Batch>(c.state)
                .unwrap()
                .events
        })
        .collect()
}

/// The amounts `on_event` of `orders` was given, in the order it was called.
fn delivered(probe: &Probe) -> Vec<serde_json::Value> {
    probe
        .calls_of("on_event")
        .into_iter()
        .map(|c| c.state)
        .collect()
}

#[tokio::test]
async fn a_run_triggered_in_a_transaction_exists_if_and_only_if_it_commits() {
    let app = App::new().await;
    let ship = app.engine.client().step_job::<ShipOrder>();

    let mut tx = app.pool.begin().await.unwrap();
    app.insert_order(&mut tx, 101).await;
    let run = ship
        .trigger_in(&mut tx, Ship { order: 101 }, TriggerOptions::new())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    assert_eq!(run.disposition, Disposition::Created);
    // Nobody else sees it before the commit, so no worker runs it.
    assert!(ship.get_run(&run.id).await.unwrap().is_none());
    tx.commit().await.unwrap();
    let done = ship.wait_for_run(&run.id, Some(WAIT)).await.unwrap();
    assert_eq!(done.output, Some(101));
    assert!(app.order_exists(101).await);

    let mut tx = app.pool.begin().await.unwrap();
    app.insert_order(&mut tx, 102).await;
    let rolled_back = ship
        .trigger_in(&mut tx, Ship { order: 102 }, TriggerOptions::new())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(ship.get_run(&rolled_back.run.id).await.unwrap().is_none());
    assert!(!app.order_exists(102).await);
    // Runs are claimed oldest first: once a later one ran, the rolled back one would have too.
    ship.trigger_and_wait(Ship { order: 103 }, TriggerOptions::new(), WAIT)
        .await
        .unwrap();
    let runs = ship.get_runs(Default::default()).await.unwrap();
    let orders: Vec<i64> = runs.iter().map(|r| r.input.order).collect();
    assert_eq!(orders, [103, 101]);
    assert_eq!((shipped(101), shipped(102), shipped(103)), (1, 0, 1));
    app.end().await;
}

#[tokio::test]
async fn trigger_conflicts_in_a_transaction_are_outcomes_and_it_still_commits() {
    let app = App::new().await;
    let ship = app.engine.client().step_job::<ShipOrder>();
    let first = ship
        .trigger(
            Ship { order: 201 },
            TriggerOptions::new().idempotency_key("k"),
        )
        .await
        .unwrap();

    let mut tx = app.pool.begin().await.unwrap();
    // An idempotency key another transaction committed.
    let again = ship
        .trigger_in(
            &mut tx,
            Ship { order: 202 },
            TriggerOptions::new().idempotency_key("k"),
        )
        .await
        .unwrap()
        .triggered()
        .unwrap();
    assert_eq!(again.disposition, Disposition::Idempotent);
    assert_eq!(again.run.id, first.run.id);
    // A concurrency key pending in this transaction: another run of it conflicts, or coalesces.
    let keyed = TriggerOptions::new().concurrency_key("c");
    let pending = ship
        .trigger_in(&mut tx, Ship { order: 203 }, keyed.clone())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    match ship
        .trigger_in(&mut tx, Ship { order: 204 }, keyed.clone())
        .await
        .unwrap()
    {
        TriggerOutcome::Conflict { index, pending: p } => {
            assert_eq!((index, p.id.as_str()), (0, pending.run.id.as_str()));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let coalesced = ship
        .trigger_in(
            &mut tx,
            Ship { order: 205 },
            keyed.clone().coalesce(Coalesce::Skip),
        )
        .await
        .unwrap()
        .triggered()
        .unwrap();
    assert_eq!(coalesced.disposition, Disposition::Coalesced);
    assert_eq!(coalesced.run.id, pending.run.id);
    // A batch whose second item conflicts writes neither.
    let batch = [
        BatchItem::new(Ship { order: 206 }).options(TriggerOptions::new().idempotency_key("k206")),
        BatchItem::new(Ship { order: 207 }).options(keyed.clone()),
    ];
    match ship.batch_trigger_in(&mut tx, batch).await.unwrap() {
        TriggerOutcome::Conflict { index, .. } => assert_eq!(index, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Idempotency within the transaction, in one batch and across calls.
    let twice = ship
        .batch_trigger_in(
            &mut tx,
            [
                BatchItem::new(Ship { order: 208 })
                    .options(TriggerOptions::new().idempotency_key("k208")),
                BatchItem::new(Ship { order: 209 })
                    .options(TriggerOptions::new().idempotency_key("k208")),
            ],
        )
        .await
        .unwrap()
        .triggered()
        .unwrap();
    assert_eq!(
        twice.iter().map(|t| t.disposition).collect::<Vec<_>>(),
        [Disposition::Created, Disposition::Idempotent]
    );
    // The transaction is still usable after every outcome, and commits.
    app.insert_order(&mut tx, 201).await;
    tx.commit().await.unwrap();

    let done = ship
        .wait_for_run(&pending.run.id, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(done.output, Some(203));
    ship.wait_for_run(&twice[0].run.id, Some(WAIT))
        .await
        .unwrap();
    let mut orders: Vec<i64> = ship
        .get_runs(Default::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.input.order)
        .collect();
    orders.sort_unstable();
    assert_eq!(orders, [201, 203, 208]);
    assert!(app.order_exists(201).await);
    app.end().await;
}

#[tokio::test]
async fn a_duplicate_event_id_in_a_transaction_is_an_outcome_and_it_still_commits() {
    let app = App::new().await;
    let client = app.engine.client();
    let batcher = client.debounce::<Batcher>();
    let orders = client.task::<Orders>();
    let mut events = app.engine.events();
    batcher.add_with_id("b", Hook { n: 1 }, "e1").await.unwrap();
    orders
        .send_with_id("o", OrderEvent::Add { amount: 1 }, "t1")
        .await
        .unwrap();

    let mut tx = app.pool.begin().await.unwrap();
    let seen = batcher
        .add_in_with_id(&mut tx, "b", Hook { n: 2 }, "e1")
        .await
        .unwrap();
    assert!(matches!(seen, EventOutcome::Duplicate { ref event_id, .. } if event_id == "e1"));
    let added = batcher
        .add_in_with_id(&mut tx, "b", Hook { n: 3 }, "e2")
        .await
        .unwrap()
        .accepted()
        .unwrap();
    assert_eq!(added.event_count, 2);
    // Seen earlier in this transaction.
    let seen = batcher
        .add_in_with_id(&mut tx, "b", Hook { n: 4 }, "e2")
        .await
        .unwrap();
    assert!(matches!(seen, EventOutcome::Duplicate { .. }));

    let seen = orders
        .send_in_with_id(&mut tx, "o", OrderEvent::Add { amount: 100 }, "t1")
        .await
        .unwrap();
    assert!(matches!(seen, EventOutcome::Duplicate { ref event_id, .. } if event_id == "t1"));
    let queued = orders
        .send_in_with_id(&mut tx, "o", OrderEvent::Add { amount: 2 }, "t2")
        .await
        .unwrap()
        .accepted()
        .unwrap();
    assert_eq!(queued.event_id, "t2");
    let seen = orders
        .send_in_with_id(&mut tx, "o", OrderEvent::Add { amount: 100 }, "t2")
        .await
        .unwrap();
    assert!(matches!(seen, EventOutcome::Duplicate { .. }));
    app.insert_order(&mut tx, 301).await;
    tx.commit().await.unwrap();

    // The event the transaction queued is delivered once the engine finds it.
    next_job_event(&mut events, executed("orders", "o")).await;
    next_job_event(&mut events, executed("orders", "o")).await;
    let order = orders.get_state("o").await.unwrap().unwrap();
    assert_eq!(order.total, 3);
    assert_eq!(
        delivered(&app.probe),
        [
            serde_json::json!({"type": "Add", "amount": 1}),
            serde_json::json!({"type": "Add", "amount": 2})
        ]
    );
    let batch = batcher.get_state("b").await.unwrap().unwrap();
    assert_eq!(batch.events, [1, 3]);
    assert!(app.order_exists(301).await);
    app.end().await;
}

#[tokio::test]
async fn an_add_in_a_transaction_takes_effect_with_it_or_not_at_all() {
    let app = App::new().await;
    let batcher = app.engine.client().debounce::<Batcher>();
    let start = app.clock.now();

    let mut tx = app.pool.begin().await.unwrap();
    let first = batcher.add_in(&mut tx, "d", Hook { n: 1 }).await.unwrap();
    assert!(first.created);
    assert_eq!(first.will_flush_at, Some(start + Duration::from_secs(5)));
    let second = batcher.add_in(&mut tx, "d", Hook { n: 2 }).await.unwrap();
    assert_eq!((second.created, second.event_count), (false, 2));
    assert!(batcher.status("d").await.unwrap().is_not_found());
    app.insert_order(&mut tx, 401).await;
    tx.commit().await.unwrap();
    let status = batcher.status("d").await.unwrap();
    assert_eq!(
        (status.status, status.event_count),
        (DebounceState::Debouncing, 2)
    );

    let mut tx = app.pool.begin().await.unwrap();
    batcher.add_in(&mut tx, "r", Hook { n: 9 }).await.unwrap();
    app.insert_order(&mut tx, 402).await;
    tx.rollback().await.unwrap();
    assert!(batcher.status("r").await.unwrap().is_not_found());
    assert!(!app.order_exists(402).await);

    app.clock.advance(Duration::from_secs(10)).await;
    assert_eq!(flushes(&app.probe), [vec![1, 2]]);
    assert!(app.order_exists(401).await);
    app.end().await;
}

#[tokio::test]
async fn an_add_reaching_max_events_in_a_transaction_flushes_after_the_commit() {
    let app = App::new().await;
    let batcher = app.engine.client().debounce::<Batcher>();
    let mut events = app.engine.events();
    let now = app.clock.now();

    let mut tx = app.pool.begin().await.unwrap();
    for n in 1..=2 {
        let added = batcher.add_in(&mut tx, "m", Hook { n }).await.unwrap();
        assert_eq!(added.will_flush_at, Some(now + Duration::from_secs(5)));
    }
    let third = batcher.add_in(&mut tx, "m", Hook { n: 3 }).await.unwrap();
    assert_eq!(
        (third.event_count, third.will_flush_at, third.flush),
        (3, Some(now), None)
    );
    tx.commit().await.unwrap();

    // Flushed once the engine sees the commit, without the clock moving.
    let flush = next_job_event(&mut events, flushed("m")).await;
    match &flush.kind {
        EventKind::DebounceFlushed {
            event_count,
            reason,
            ..
        } => assert_eq!((*event_count, *reason), (3, FlushReason::MaxEvents)),
        other => panic!("{other:?}"),
    }
    assert_eq!(flushes(&app.probe), [vec![1, 2, 3]]);
    assert_eq!(app.clock.now(), now);
    assert!(batcher.status("m").await.unwrap().is_not_found());
    app.end().await;
}

#[tokio::test]
async fn a_start_in_a_transaction_runs_after_the_commit() {
    let app = App::new().await;
    let client = app.engine.client();
    let mut events = app.engine.events();
    let now = app.clock.now();

    let mut tx = app.pool.begin().await.unwrap();
    let started = client
        .continuous::<Refresher>()
        .start_in(&mut tx, "c", count(0))
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(
        (started.status, started.next_run_at),
        (ContinuousState::Running, Some(now))
    );
    let lazy = client
        .continuous::<LazyRefresher>()
        .start_in(&mut tx, "l", count(0))
        .await
        .unwrap();
    assert_eq!(lazy.next_run_at, Some(now + durable_jobs_tests::HALF_HOUR));
    // The first run is not made inside the call.
    assert!(app.probe.calls_of("execute").is_empty());
    tx.commit().await.unwrap();

    next_job_event(&mut events, executed("refresher", "c")).await;
    let state = client
        .continuous::<Refresher>()
        .get_state("c")
        .await
        .unwrap();
    assert_eq!(state, Some(count(1)));

    // An instance that exists is left as it is.
    let mut tx = app.pool.begin().await.unwrap();
    let again = client
        .continuous::<Refresher>()
        .start_in(&mut tx, "c", count(50))
        .await
        .unwrap();
    assert!(!again.created);
    let gone = client
        .continuous::<Refresher>()
        .start_in(&mut tx, "gone", count(0))
        .await
        .unwrap();
    assert!(gone.created);
    tx.rollback().await.unwrap();
    assert!(client
        .continuous::<Refresher>()
        .status("gone")
        .await
        .unwrap()
        .is_not_found());

    app.clock.advance(durable_jobs_tests::HALF_HOUR).await;
    let mut runs: Vec<(String, u64)> = app
        .probe
        .calls_of("execute")
        .into_iter()
        .map(|c| (c.detail, c.count))
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        [
            ("continuous:lazy_refresher:l".to_owned(), 1),
            ("continuous:refresher:c".to_owned(), 1),
            ("continuous:refresher:c".to_owned(), 2),
        ]
    );
    app.end().await;
}

#[tokio::test]
async fn events_sent_in_a_transaction_are_delivered_after_the_commit_in_order() {
    let app = App::new().await;
    let orders = app.engine.client().task::<Orders>();
    let mut events = app.engine.events();

    let mut tx = app.pool.begin().await.unwrap();
    let sent = [
        OrderEvent::Add { amount: 1 },
        OrderEvent::Add { amount: 2 },
        OrderEvent::SetThenRead { total: 7 },
        OrderEvent::Add { amount: 4 },
    ];
    for event in sent.clone() {
        let queued = orders.send_in(&mut tx, "t", event).await.unwrap();
        assert!(queued.event_id.starts_with("tx-"), "{}", queued.event_id);
    }
    app.insert_order(&mut tx, 601).await;
    // The handlers do not run inside the call.
    assert!(delivered(&app.probe).is_empty());
    assert_eq!(
        orders.status("t").await.unwrap().status,
        TaskState::NotFound
    );
    tx.commit().await.unwrap();
    for _ in &sent {
        next_job_event(&mut events, executed("orders", "t")).await;
    }
    let order = orders.get_state("t").await.unwrap().unwrap();
    assert_eq!(order.total, 11, "1 + 2, set to 7, + 4: in the order sent");
    assert_eq!(
        delivered(&app.probe),
        sent.iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect::<Vec<_>>()
    );

    // Rolled back: never delivered. A later event of the instance, queued after it, is.
    let mut tx = app.pool.begin().await.unwrap();
    orders
        .send_in(&mut tx, "t", OrderEvent::Add { amount: 1000 })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    orders
        .send_in(&mut tx, "t", OrderEvent::Add { amount: 1 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    next_job_event(&mut events, executed("orders", "t")).await;
    assert_eq!(orders.get_state("t").await.unwrap().unwrap().total, 12);
    assert_eq!(delivered(&app.probe).len(), sent.len() + 1);
    assert!(app.order_exists(601).await);
    app.end().await;
}

#[tokio::test]
async fn an_open_transaction_holds_the_rows_it_wrote_and_nothing_else() {
    let app = App::new().await;
    let client = app.engine.client();
    let batcher = client.debounce::<Batcher>();
    let ship = client.step_job::<ShipOrder>();
    let orders = client.task::<Orders>();
    // One stream per wait: a wait passes over the events it is not waiting for.
    let (mut flushes_seen, mut deliveries) = (app.engine.events(), app.engine.events());
    batcher.add("held", Hook { n: 1 }).await.unwrap();
    batcher.add("free", Hook { n: 2 }).await.unwrap();

    let mut tx = app.pool.begin().await.unwrap();
    // Locks the batch's row until the commit.
    batcher
        .add_in(&mut tx, "held", Hook { n: 3 })
        .await
        .unwrap();
    let run = ship
        .trigger_in(&mut tx, Ship { order: 701 }, TriggerOptions::new())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    orders
        .send_in(&mut tx, "held-task", OrderEvent::Add { amount: 1 })
        .await
        .unwrap();

    // Meanwhile the engine goes on with everything else. Both batches are due; the held one is
    // passed over (its flush would wait for the transaction), the other flushes.
    app.clock.advance(Duration::from_secs(6)).await;
    assert_eq!(flushes(&app.probe), [vec![2]]);
    ship.trigger_and_wait(Ship { order: 702 }, TriggerOptions::new(), WAIT)
        .await
        .unwrap();
    orders
        .send("free-task", OrderEvent::Add { amount: 5 })
        .await
        .unwrap();
    client
        .continuous::<Refresher>()
        .start("free-continuous", count(0))
        .await
        .unwrap();
    assert_eq!((shipped(701), shipped(702)), (0, 1));

    tx.commit().await.unwrap();
    // The held batch, due since, flushes with both events once the engine looks again.
    next_job_event(&mut flushes_seen, flushed("held")).await;
    assert_eq!(flushes(&app.probe), [vec![2], vec![1, 3]]);
    ship.wait_for_run(&run.id, Some(WAIT)).await.unwrap();
    next_job_event(&mut deliveries, executed("orders", "held-task")).await;
    app.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_sharing_a_schema_deliver_each_queued_event_once_in_order() {
    let app = App::new().await;
    let other_probe = Probe::default();
    let other = engine(&app.schema, &app.clock, &other_probe).await;
    let orders = app.engine.client().task::<Orders>();
    let mut mine = app.engine.events();
    let mut theirs = other.events();

    // Instance i gets the amounts 100 i + 1, 100 i + 2, ...: the event it receives k-th (its
    // event count k) must be the one sent k-th.
    let (instances, per_instance) = (6_i64, 5_i64);
    let mut tx = app.pool.begin().await.unwrap();
    for k in 1..=per_instance {
        for i in 0..instances {
            orders
                .send_in(
                    &mut tx,
                    &format!("i{i}"),
                    OrderEvent::Add {
                        amount: 100 * i + k,
                    },
                )
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();

    let is_delivery =
        |e: &JobEvent| e.instance.job() == "orders" && matches!(e.kind, EventKind::Executed { .. });
    let mut seen = 0;
    tokio::time::timeout(WAIT, async {
        while seen < instances * per_instance {
            let event = tokio::select! {
                e = mine.next() => e,
                e = theirs.next() => e,
            };
            if let Some(Event::Job(e)) = event {
                if is_delivery(&e) {
                    seen += 1;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{seen} of {} delivered", instances * per_instance));

    let mut by_amount: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for call in app
        .probe
        .calls_of("on_event")
        .into_iter()
        .chain(other_probe.calls_of("on_event"))
    {
        let amount = call.state["amount"].as_i64().unwrap();
        by_amount.entry(amount).or_default().push(call.count);
    }
    assert_eq!(by_amount.len() as i64, instances * per_instance);
    for (amount, counts) in by_amount {
        assert_eq!(counts, [u64::try_from(amount % 100).unwrap()], "{amount}");
    }
    for i in 0..instances {
        let total = orders
            .get_state(&format!("i{i}"))
            .await
            .unwrap()
            .unwrap()
            .total;
        assert_eq!(total, (1..=per_instance).map(|k| 100 * i + k).sum::<i64>());
    }
    other.shutdown().await.unwrap();
    app.end().await;
}

#[tokio::test]
async fn actions_in_a_transaction_are_checked_before_any_sql_and_never_abort_it() {
    let app = App::new().await;
    let client = app.engine.client();
    let ship = client.step_job::<ShipOrder>();
    let orders = client.task::<Orders>();

    let mut tx = app.pool.begin().await.unwrap();
    // In a savepoint of the transaction: rolled back with the savepoint.
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await.unwrap();
    let undone = ship
        .trigger_in(&mut savepoint, Ship { order: 901 }, TriggerOptions::new())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    savepoint.rollback().await.unwrap();
    let kept = ship
        .trigger_in(&mut tx, Ship { order: 904 }, TriggerOptions::new())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    tx.commit().await.unwrap();
    assert!(ship.get_run(&undone.run.id).await.unwrap().is_none());
    ship.wait_for_run(&kept.run.id, Some(WAIT)).await.unwrap();

    let mut tx = app.pool.begin().await.unwrap();

    // Refused before any SQL.
    let err = orders
        .send_in(&mut tx, "", OrderEvent::Add { amount: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Id,
                ..
            }
        ),
        "{err}"
    );
    let err = ship
        .trigger_in(
            &mut tx,
            Ship { order: 902 },
            TriggerOptions::new().idempotency_key(""),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    tx.rollback().await.unwrap();

    // A statement that fails fails under a savepoint: the transaction goes on.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = orders
        .send_in(&mut tx, "t", OrderEvent::Add { amount: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let err = ship
        .trigger_in(&mut tx, Ship { order: 903 }, TriggerOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let err = client
        .debounce::<Batcher>()
        .add_in(&mut tx, "b", Hook { n: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let still: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(still, 1);
    tx.commit().await.unwrap();

    // On another store: refused.
    let sqlite = TxJobs::builder()
        .in_memory()
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    let err = sqlite
        .client()
        .debounce::<Batcher>()
        .add_in(&mut tx, "b", Hook { n: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Config,
                ..
            }
        ),
        "{err}"
    );
    tx.rollback().await.unwrap();
    sqlite.shutdown().await.unwrap();
    app.end().await;
}

#[tokio::test]
async fn work_is_announced_when_the_transaction_commits_and_not_when_it_rolls_back() {
    let app = App::new().await;
    let client = app.engine.client();
    let mut listener = sqlx::postgres::PgListener::connect(&server_url())
        .await
        .unwrap();
    // The schema's channel, on which the stores of the schema announce their writes too.
    listener.listen(&app.schema.0).await.unwrap();

    // A run, rolled back: its announcement goes with it.
    let mut tx = app.pool.begin().await.unwrap();
    client
        .step_job::<ShipOrder>()
        .trigger_in(&mut tx, Ship { order: 1001 }, TriggerOptions::new())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // A task event, committed: announced at the commit.
    let mut tx = app.pool.begin().await.unwrap();
    client
        .task::<Orders>()
        .send_in(&mut tx, "n", OrderEvent::Add { amount: 1 })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The first change announced (a store's probes carry other payloads) must be the
    // commit's: the rolled-back run's announcement went with its transaction.
    let heard = tokio::time::timeout(WAIT, async {
        loop {
            let heard = listener.recv().await.unwrap();
            if ["alarms", "runs", "ended"].contains(&heard.payload()) {
                return heard.payload().to_owned();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(heard, "alarms");
    app.end().await;
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Returns once the server's backend `pid` waits for a lock another transaction holds.
async fn until_waiting_for_a_lock(pool: &PgPool, pid: i32) {
    tokio::time::timeout(WAIT, async {
        loop {
            let waiting: Option<String> =
                sqlx::query_scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            if waiting.as_deref() == Some("Lock") {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("backend {pid} never waited for a lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_racing_for_a_key_wait_for_each_other_and_agree() {
    let app = App::new().await;
    let client = app.engine.client();
    // Both create one batch: the second's insert waits for the first's commit, loses, and the
    // second reads the batch again and adds to it.
    let mut first = app.pool.begin().await.unwrap();
    client
        .debounce::<Batcher>()
        .add_in(&mut first, "race", Hook { n: 1 })
        .await
        .unwrap();
    let mut second = app.pool.begin().await.unwrap();
    let pid = backend_pid(&mut second).await;
    let racing = tokio::spawn({
        let client = client.clone();
        async move {
            let added = client
                .debounce::<Batcher>()
                .add_in(&mut second, "race", Hook { n: 2 })
                .await
                .unwrap();
            second.commit().await.unwrap();
            added
        }
    });
    until_waiting_for_a_lock(&app.pool, pid).await;
    first.commit().await.unwrap();
    let added = racing.await.unwrap();
    assert_eq!((added.created, added.event_count), (false, 2));
    let batch = client
        .debounce::<Batcher>()
        .get_state("race")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.events, [1, 2]);

    // Both trigger with one idempotency key: the second finds the first's run.
    let keyed = || TriggerOptions::new().idempotency_key("race");
    let mut first = app.pool.begin().await.unwrap();
    let created = client
        .step_job::<ShipOrder>()
        .trigger_in(&mut first, Ship { order: 1101 }, keyed())
        .await
        .unwrap()
        .triggered()
        .unwrap();
    let mut second = app.pool.begin().await.unwrap();
    let pid = backend_pid(&mut second).await;
    let racing = tokio::spawn({
        let client = client.clone();
        async move {
            let run = client
                .step_job::<ShipOrder>()
                .trigger_in(&mut second, Ship { order: 1102 }, keyed())
                .await
                .unwrap()
                .triggered()
                .unwrap();
            second.commit().await.unwrap();
            run
        }
    });
    until_waiting_for_a_lock(&app.pool, pid).await;
    first.commit().await.unwrap();
    let run = racing.await.unwrap();
    assert_eq!(run.disposition, Disposition::Idempotent);
    assert_eq!(run.run.id, created.run.id);
    let runs = client
        .step_job::<ShipOrder>()
        .get_runs(Default::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    app.end().await;
}

#[tokio::test]
async fn an_event_its_handlers_refuse_after_the_commit_is_dropped_and_the_next_delivered() {
    let app = App::new().await;
    let orders = app.engine.client().task::<Orders>();
    let mut events = app.engine.events();
    // `on_event` fails once, and `on_error` does not rescue it.
    app.probe.fail_next(1, "the warehouse is closed");

    let mut tx = app.pool.begin().await.unwrap();
    for amount in [1, 2] {
        orders
            .send_in(&mut tx, "f", OrderEvent::Add { amount })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let failed = next_job_event(&mut events, |e| {
        e.instance.id() == "f" && matches!(e.kind, EventKind::Failed { .. })
    })
    .await;
    match &failed.kind {
        EventKind::Failed { message, .. } => assert_eq!(message, "the warehouse is closed"),
        other => panic!("{other:?}"),
    }
    // The next event waited behind it, and is delivered once it is dropped.
    next_job_event(&mut events, executed("orders", "f")).await;
    let order = orders.get_state("f").await.unwrap().unwrap();
    assert_eq!(order.total, 2, "the refused event changed nothing");
    assert_eq!(delivered(&app.probe).len(), 2);
    app.end().await;
}
