//! Restarting the engine on the same database file: schedules, state and pending batches carry
//! on, and alarms that fell due while it was down fire at start-up.

use std::time::Duration;

use durable_jobs::store::StoreError;
use durable_jobs::{Engine, TaskState};
use durable_jobs_tests::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn schedules_state_and_batches_survive_a_restart() {
    let h = Harness::start().await;
    let t0 = h.clock.now();
    h.client
        .continuous::<Refresher>()
        .start(
            "u",
            Count {
                count: 10,
                max_runs: None,
            },
        )
        .await
        .unwrap();
    h.client
        .debounce::<QuietBatcher>()
        .add("c", Hook { n: 1 })
        .await
        .unwrap();
    h.client
        .debounce::<QuietBatcher>()
        .add("c", Hook { n: 2 })
        .await
        .unwrap();
    h.client
        .task::<Orders>()
        .send(
            "o",
            OrderEvent::AddAndSchedule {
                amount: 7,
                secs: 600,
            },
        )
        .await
        .unwrap();
    h.clock.advance(secs(1)).await;

    let h = h.restart().await;
    // Nothing was due yet: nothing ran during the restart.
    assert_eq!(h.probe.calls_of("execute").len(), 1);
    let c = h.client.continuous::<Refresher>();
    assert_eq!(
        c.status("u").await.unwrap().next_run_at,
        Some(t0 + HALF_HOUR)
    );
    assert_eq!(c.get_state("u").await.unwrap().unwrap().count, 11);
    let d = h.client.debounce::<QuietBatcher>();
    assert_eq!(d.status("c").await.unwrap().event_count, 2);
    let t = h.client.task::<Orders>();
    assert_eq!(t.status("o").await.unwrap().status, TaskState::Active);

    h.clock.advance(HALF_HOUR).await;
    let executed: Vec<_> = h
        .probe
        .calls_of("execute")
        .into_iter()
        .map(|c| (c.job, c.at))
        .collect();
    assert_eq!(
        executed,
        vec![
            ("refresher", t0),
            ("quiet_batcher", t0 + secs(5)),
            ("orders", t0 + secs(600)),
            ("refresher", t0 + HALF_HOUR),
        ]
    );
    assert_eq!(c.get_state("u").await.unwrap().unwrap().count, 12);
    assert!(d.status("c").await.unwrap().is_not_found());
    assert_eq!(
        t.get_state("o").await.unwrap(),
        Some(Order {
            total: 7,
            executed: 1
        })
    );
}

#[tokio::test]
async fn alarms_that_fell_due_while_down_fire_at_start_up() {
    let h = Harness::start().await;
    let t0 = h.clock.now();
    h.client
        .debounce::<Batcher>()
        .add("c", Hook { n: 1 })
        .await
        .unwrap();
    let Harness {
        engine,
        client,
        clock,
        probe,
        db,
        ..
    } = h;
    drop(client);
    engine.shutdown().await.unwrap();
    // An hour passes with no engine running.
    clock.jump(secs(3600)).await;
    let engine = Engine::<TestJobs>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap();
    clock.settle().await;
    let calls = probe.calls_of("execute");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at, t0 + secs(3600));
    assert!(engine
        .client()
        .debounce::<Batcher>()
        .status("c")
        .await
        .unwrap()
        .is_not_found());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_engine_without_shutdown_releases_the_file() {
    let h = Harness::start().await;
    h.client
        .task::<Orders>()
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    let Harness {
        engine,
        client,
        clock,
        probe,
        db,
        ..
    } = h;
    drop(client);
    drop(engine);
    let engine = Engine::<TestJobs>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap();
    clock.advance(secs(5)).await;
    assert_eq!(probe.calls_of("execute").len(), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_engine_runs_on_a_store_handed_to_the_builder_and_closes_it_at_shutdown() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let clock = durable_jobs::testing::TestClock::new();
    let probe = Probe::default();
    let engine = Engine::<TestJobs>::builder()
        .store_arc(store.clone())
        .clock(clock.clone())
        .app(probe.clone())
        .start()
        .await
        .unwrap();
    engine
        .client()
        .task::<Orders>()
        .send("o", OrderEvent::AddAndSchedule { amount: 1, secs: 5 })
        .await
        .unwrap();
    clock.advance(secs(5)).await;
    assert_eq!(probe.calls_of("execute").len(), 1);
    engine.shutdown().await.unwrap();
    // The engine closed the store it was given, releasing the data (a file, a pool).
    assert!(matches!(
        store.outbox_peek(1).await,
        Err(StoreError::Closed)
    ));
    assert!(db.try_open().await.is_ok());
}
