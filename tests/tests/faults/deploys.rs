//! Deploys: a job's state type changes, its schedule changes, it disappears from one deploy and
//! comes back in the next, its stored state is corrupted. Each deploy is a registry of its own,
//! started on the same file and the same test clock as the one before.

use durable_jobs_tests::TestDb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::testing::TestClock;
use durable_jobs::{
    ContinuousState, DebounceState, Engine, Error, EventKind, Registry, TaskState, WithApp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Counts the executions of each job.
#[derive(Default)]
pub(crate) struct Runs(Mutex<HashMap<&'static str, u32>>);

impl Runs {
    fn ran(&self, job: &'static str) {
        *self.0.lock().unwrap().entry(job).or_default() += 1;
    }

    fn count(&self, job: &str) -> u32 {
        self.0.lock().unwrap().get(job).copied().unwrap_or(0)
    }
}

type App = Arc<Runs>;
const HOUR: Duration = Duration::from_secs(3600);

/// The body of a job that only counts its runs.
fn count_run<S>(
    _: &mut ContinuousContext<S>,
    app: &App,
    job: &'static str,
) -> Result<(), std::io::Error> {
    app.ran(job);
    Ok(())
}

/// The body of the meter, in its second shape.
fn label_run(ctx: &mut ContinuousContext<MeterV2>, app: &App) -> Result<(), std::io::Error> {
    app.ran("meter");
    ctx.state_mut().label.push('+');
    Ok(())
}

/// The first shape of the meter's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MeterV1 {
    count: u32,
}

/// The second shape: the count became a label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MeterV2 {
    label: String,
}

mod v1 {
    use super::*;

    /// Hourly; counts its runs in its state.
    #[durable_jobs::continuous(every = "1h", name = "meter")]
    pub(crate) async fn meter(
        ctx: &mut ContinuousContext<MeterV1>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        app.ran("meter");
        ctx.state_mut().count += 1;
        Ok(())
    }

    /// Daily.
    #[durable_jobs::continuous(every = "1d", name = "report")]
    pub(crate) async fn report(
        ctx: &mut ContinuousContext<u32>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        count_run(ctx, app, "report")
    }

    /// Hourly; removed by the next deploy.
    #[durable_jobs::continuous(every = "1h", name = "heartbeat")]
    pub(crate) async fn heartbeat(
        ctx: &mut ContinuousContext<u32>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        count_run(ctx, app, "heartbeat")
    }

    durable_jobs::registry! {
        /// The first deploy.
        pub(crate) Deploy<App> { Meter, Report, Heartbeat }
    }
}

mod v2 {
    use super::*;

    /// The state type changed, its version did not: old states no longer decode.
    #[durable_jobs::continuous(every = "1h", name = "meter")]
    pub(crate) async fn meter(
        ctx: &mut ContinuousContext<MeterV2>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        label_run(ctx, app)
    }

    /// Hourly now.
    #[durable_jobs::continuous(every = "1h", name = "report")]
    pub(crate) async fn report(
        ctx: &mut ContinuousContext<u32>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        count_run(ctx, app, "report")
    }

    durable_jobs::registry! {
        /// The second deploy: `heartbeat` is gone.
        pub(crate) Deploy<App> { Meter, Report }
    }
}

mod v3 {
    use super::*;

    fn migrate(stored: Value, version: u32) -> Result<MeterV2, String> {
        let old: MeterV1 = serde_json::from_value(stored).map_err(|e| e.to_string())?;
        assert_eq!(version, 0, "states before versions are version 0");
        Ok(MeterV2 {
            label: format!("count {}", old.count),
        })
    }

    /// The new state type, with a version and a migration from the old one.
    #[durable_jobs::continuous(every = "1h", name = "meter", state_version = 1, migrate = migrate)]
    pub(crate) async fn meter(
        ctx: &mut ContinuousContext<MeterV2>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        label_run(ctx, app)
    }

    /// Back again.
    #[durable_jobs::continuous(every = "1h", name = "heartbeat")]
    pub(crate) async fn heartbeat(
        ctx: &mut ContinuousContext<u32>,
        app: &App,
    ) -> Result<(), std::io::Error> {
        count_run(ctx, app, "heartbeat")
    }

    durable_jobs::registry! {
        /// The third deploy: a migration, and `heartbeat` is back.
        pub(crate) Deploy<App> { Meter, Heartbeat }
    }
}

/// An engine of registry `R` on `db`, with `clock`.
async fn deploy<R: Registry<App = App>>(db: &TestDb, clock: &TestClock, app: &App) -> Engine<R>
where
    durable_jobs::EngineBuilder<R, WithApp<App>>: Sized,
{
    let engine = Engine::<R>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone())
        .app(app.clone())
        .start()
        .await
        .unwrap();
    settle(clock).await;
    engine
}

/// Runs what is due, failing (instead of hanging) if an alarm fires again and again.
async fn settle(clock: &TestClock) {
    advance(clock, Duration::ZERO).await;
}

async fn advance(clock: &TestClock, by: Duration) {
    tokio::time::timeout(Duration::from_secs(30), clock.advance(by))
        .await
        .expect("the alarms never settled: an execution fires again and again");
}

fn broken_events(events: &mut durable_jobs::EventStream) -> Vec<String> {
    events
        .drain()
        .iter()
        .filter_map(|e| match &e.as_job()?.kind {
            EventKind::Broken { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_changed_state_type_leaves_the_instance_broken_until_a_migration_is_deployed() {
    let db = TestDb::new().await;
    let clock = TestClock::new();
    let app = App::default();

    let first = deploy::<v1::Deploy>(&db, &clock, &app).await;
    let meter = first.client().continuous::<v1::Meter>();
    meter.start("m", MeterV1 { count: 0 }).await.unwrap();
    meter.start("gone", MeterV1 { count: 0 }).await.unwrap();
    drop(meter);
    first.shutdown().await.unwrap();
    assert_eq!(app.count("meter"), 2);

    // The state type changed without a migration: the next run finds a state it cannot read.
    let second = deploy::<v2::Deploy>(&db, &clock, &app).await;
    let mut events = second.events();
    let meter = second.client().continuous::<v2::Meter>();
    advance(&clock, HOUR).await;
    let status = meter.status("m").await.unwrap();
    assert_eq!(status.status, ContinuousState::Broken);
    assert!(
        status
            .broken
            .as_deref()
            .unwrap()
            .contains("no longer deserialises"),
        "{status:?}"
    );
    assert_eq!(status.run_count, 1, "a run that did not run is not counted");
    assert_eq!(status.next_run_at, None);
    assert_eq!(app.count("meter"), 2);
    // Reported once per instance, and then nothing more happens: no run, no count, no event.
    assert_eq!(broken_events(&mut events).len(), 2);
    advance(&clock, HOUR * 5).await;
    assert_eq!(app.count("meter"), 2);
    assert_eq!(meter.status("m").await.unwrap().run_count, 1);
    assert!(broken_events(&mut events).is_empty());
    // Actions say why they cannot run; `terminate` clears it.
    let err = meter.trigger("m").await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidState { state, .. } if state.contains("broken")),
        "{err:?}"
    );
    assert!(matches!(
        meter.get_state("m").await,
        Err(Error::Validation { .. })
    ));
    meter.terminate("gone", None).await.unwrap();
    assert!(meter.status("gone").await.unwrap().is_not_found());
    drop(meter);
    second.shutdown().await.unwrap();

    // A deploy with a migration repairs it at start; the run it owes happens at once.
    let third = deploy::<v3::Deploy>(&db, &clock, &app).await;
    let meter = third.client().continuous::<v3::Meter>();
    assert_eq!(app.count("meter"), 3);
    let status = meter.status("m").await.unwrap();
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(status.broken, None);
    assert_eq!(status.run_count, 2);
    assert_eq!(status.next_run_at, Some(clock.now() + HOUR));
    assert_eq!(
        meter.get_state("m").await.unwrap(),
        Some(MeterV2 {
            label: "count 1+".into()
        })
    );
    // The state was written back in its new shape, at its new version.
    let stored = db
        .rows("SELECT state, state_version FROM instances WHERE id = 'm'")
        .await;
    assert_eq!(
        stored,
        [[
            Some(r#"{"label":"count 1+"}"#.to_owned()),
            Some("1".to_owned())
        ]]
    );
    drop(meter);
    third.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shortened_schedule_takes_effect_at_the_next_start() {
    let db = TestDb::new().await;
    let clock = TestClock::new();
    let app = App::default();

    let first = deploy::<v1::Deploy>(&db, &clock, &app).await;
    let report = first.client().continuous::<v1::Report>();
    report.start("r", 0).await.unwrap();
    let daily = report.status("r").await.unwrap().next_run_at.unwrap();
    assert_eq!(daily, clock.now() + HOUR * 24);
    drop(report);
    advance(&clock, Duration::from_secs(600)).await;
    first.shutdown().await.unwrap();

    // Hourly from this deploy on: the run planned for tomorrow moves to an hour from now.
    let restarted_at = clock.now();
    let second = deploy::<v2::Deploy>(&db, &clock, &app).await;
    let report = second.client().continuous::<v2::Report>();
    assert_eq!(
        report.status("r").await.unwrap().next_run_at,
        Some(restarted_at + HOUR)
    );
    advance(&clock, HOUR).await;
    assert_eq!(app.count("report"), 2);
    assert_eq!(report.status("r").await.unwrap().run_count, 2);
    assert_eq!(
        report.status("r").await.unwrap().next_run_at,
        Some(clock.now() + HOUR)
    );
    drop(report);
    second.shutdown().await.unwrap();

    // Back to daily: the hourly run already planned is not put off, the next one is daily.
    let third_at = clock.now();
    let third = deploy::<v1::Deploy>(&db, &clock, &app).await;
    let report = third.client().continuous::<v1::Report>();
    assert_eq!(
        report.status("r").await.unwrap().next_run_at,
        Some(third_at + HOUR)
    );
    advance(&clock, HOUR).await;
    assert_eq!(
        report.status("r").await.unwrap().next_run_at,
        Some(clock.now() + HOUR * 24)
    );
    drop(report);
    third.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_removed_and_added_back_runs_again() {
    let db = TestDb::new().await;
    let clock = TestClock::new();
    let app = App::default();

    let first = deploy::<v1::Deploy>(&db, &clock, &app).await;
    first
        .client()
        .continuous::<v1::Heartbeat>()
        .start("h", 0)
        .await
        .unwrap();
    assert!(first.unregistered_jobs().is_empty());
    first.shutdown().await.unwrap();
    assert_eq!(app.count("heartbeat"), 1);

    // A deploy without the job: its instance is left alone, reported, and nothing spins.
    let second = deploy::<v2::Deploy>(&db, &clock, &app).await;
    let unregistered = second.unregistered_jobs();
    assert_eq!(unregistered.len(), 1);
    assert_eq!(unregistered[0].name, "heartbeat");
    assert_eq!(unregistered[0].kind, JobKind::Continuous);
    assert_eq!(unregistered[0].instances, 1);
    advance(&clock, HOUR * 3).await;
    assert_eq!(app.count("heartbeat"), 1);
    second.shutdown().await.unwrap();

    // Registered again: it is where it was, and its overdue run happens at once.
    let third = deploy::<v3::Deploy>(&db, &clock, &app).await;
    assert!(third.unregistered_jobs().is_empty());
    let heartbeat = third.client().continuous::<v3::Heartbeat>();
    assert_eq!(app.count("heartbeat"), 2);
    let status = heartbeat.status("h").await.unwrap();
    assert_eq!(status.status, ContinuousState::Running);
    assert_eq!(status.run_count, 2);
    assert_eq!(status.next_run_at, Some(clock.now() + HOUR));
    advance(&clock, HOUR).await;
    assert_eq!(app.count("heartbeat"), 3);
    drop(heartbeat);
    third.shutdown().await.unwrap();
}

/// A batch of numbers, flushed a minute after the first.
pub(crate) struct Numbers;

#[durable_jobs::debounce(flush_after = "1m")]
impl DebounceJob<App> for Numbers {
    type Event = u32;
    type State = Vec<u32>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<u32>>, n: u32, _: &EventContext) -> Vec<u32> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        all
    }

    async fn execute(&self, _: &mut FlushContext<Vec<u32>>, app: &App) -> Result<(), Self::Error> {
        app.ran("numbers");
        Ok(())
    }
}

/// Keeps a total; executes ten seconds after each event.
pub(crate) struct Total;

#[durable_jobs::task]
impl TaskJob<App> for Total {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<u32>,
        n: u32,
        app: &App,
    ) -> Result<(), Self::Error> {
        app.ran("total");
        ctx.set_state(ctx.state().copied().unwrap_or(0) + n);
        ctx.schedule_in(Duration::from_secs(10));
        Ok(())
    }

    async fn execute(&self, _: &mut TaskContext<u32>, app: &App) -> Result<(), Self::Error> {
        app.ran("total");
        Ok(())
    }
}

mod corrupted {
    use super::*;

    durable_jobs::registry! {
        /// One job of each kind with state.
        pub(crate) Deploy<App> { v1::Meter, Numbers, Total }
    }
}

#[tokio::test]
async fn a_corrupted_state_is_broken_and_not_counted() {
    let db = TestDb::new().await;
    let clock = TestClock::new();
    let app = App::default();

    let first = deploy::<corrupted::Deploy>(&db, &clock, &app).await;
    let client = first.client();
    client
        .continuous::<v1::Meter>()
        .start("m", MeterV1 { count: 0 })
        .await
        .unwrap();
    client.debounce::<Numbers>().add("n", 1).await.unwrap();
    client.task::<Total>().send("t", 1).await.unwrap();
    drop(client);
    first.shutdown().await.unwrap();
    let runs = |app: &App| (app.count("meter"), app.count("numbers"), app.count("total"));
    assert_eq!(runs(&app), (1, 0, 1));

    // Every stored state is damaged outside the engine.
    db.execute("UPDATE instances SET state = '{\"trunc'").await;

    let second = deploy::<corrupted::Deploy>(&db, &clock, &app).await;
    let mut events = second.events();
    let client = second.client();
    // Every alarm comes due and finds a state it cannot read: nothing runs, nothing is counted.
    advance(&clock, HOUR * 3).await;
    assert_eq!(runs(&app), (1, 0, 1));
    let meter = client.continuous::<v1::Meter>().status("m").await.unwrap();
    assert_eq!(meter.status, ContinuousState::Broken);
    assert_eq!(meter.run_count, 1);
    let numbers = client.debounce::<Numbers>().status("n").await.unwrap();
    assert_eq!(numbers.status, DebounceState::Broken);
    assert_eq!(numbers.event_count, 1);
    let total = client.task::<Total>().status("t").await.unwrap();
    assert_eq!(total.status, TaskState::Broken);
    assert_eq!(total.execute_count, 0);
    for why in [meter.broken, numbers.broken, total.broken] {
        assert!(why.unwrap().contains("no longer deserialises"));
    }
    assert_eq!(broken_events(&mut events).len(), 3);

    // Events are refused with the reason, and change nothing.
    for refused in [
        client.debounce::<Numbers>().add("n", 2).await.map(|_| ()),
        client.debounce::<Numbers>().flush("n").await.map(|_| ()),
        client.task::<Total>().send("t", 2).await.map(|_| ()),
        client.task::<Total>().trigger("t").await.map(|_| ()),
    ] {
        assert!(
            matches!(&refused, Err(Error::InvalidState { state, .. }) if state.contains("broken")),
            "{refused:?}"
        );
    }
    assert_eq!(runs(&app), (1, 0, 1));
    assert!(broken_events(&mut events).is_empty());

    // An operator clears them; the ids can be used afresh.
    client.debounce::<Numbers>().clear("n").await.unwrap();
    client.task::<Total>().terminate("t").await.unwrap();
    client
        .continuous::<v1::Meter>()
        .terminate("m", None)
        .await
        .unwrap();
    client.debounce::<Numbers>().add("n", 3).await.unwrap();
    advance(&clock, Duration::from_secs(60)).await;
    assert_eq!(app.count("numbers"), 1);
    drop(client);
    second.shutdown().await.unwrap();
}

mod impls_v2 {
    use super::*;

    /// The task's state grew a field; the total is kept.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Ledger {
        pub(crate) sum: u32,
        pub(crate) entries: u32,
    }

    /// [`Total`] with a new state shape.
    pub(crate) struct Totals;

    #[durable_jobs::task(name = "total")]
    impl TaskJob<App> for Totals {
        type State = Ledger;
        type Event = u32;
        type Error = std::io::Error;

        const STATE_VERSION: u32 = 1;

        fn migrate_state(
            &self,
            stored: Value,
            version: u32,
        ) -> Result<Ledger, durable_jobs::BoxError> {
            assert_eq!(version, 0);
            let sum: u32 = serde_json::from_value(stored)?;
            Ok(Ledger { sum, entries: 0 })
        }

        async fn on_event(
            &self,
            ctx: &mut TaskContext<Ledger>,
            n: u32,
            _: &App,
        ) -> Result<(), Self::Error> {
            ctx.update_state(|l| {
                l.sum += n;
                l.entries += 1;
            });
            Ok(())
        }

        async fn execute(&self, _: &mut TaskContext<Ledger>, _: &App) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    /// A batch of numbers that became a struct.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Items {
        pub(crate) items: Vec<u32>,
    }

    /// [`Numbers`] with a new state shape.
    pub(crate) struct Batches;

    #[durable_jobs::debounce(flush_after = "1m", name = "numbers")]
    impl DebounceJob<App> for Batches {
        type Event = u32;
        type State = Items;
        type Error = std::io::Error;

        const STATE_VERSION: u32 = 1;

        fn migrate_state(&self, stored: Value, _: u32) -> Result<Items, durable_jobs::BoxError> {
            Ok(Items {
                items: serde_json::from_value(stored)?,
            })
        }

        fn on_event(&self, state: Option<Items>, n: u32, _: &EventContext) -> Items {
            let mut batch = state.unwrap_or_default();
            batch.items.push(n);
            batch
        }

        async fn execute(&self, _: &mut FlushContext<Items>, _: &App) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    durable_jobs::registry! {
        /// The task and the debounce job with their new state shapes.
        pub(crate) Deploy<App> { Totals, Batches }
    }
}

#[tokio::test]
async fn a_state_stored_by_an_older_version_is_migrated_before_a_handler_sees_it() {
    let db = TestDb::new().await;
    let clock = TestClock::new();
    let app = App::default();

    let first = deploy::<corrupted::Deploy>(&db, &clock, &app).await;
    first.client().task::<Total>().send("t", 5).await.unwrap();
    first
        .client()
        .debounce::<Numbers>()
        .add("n", 1)
        .await
        .unwrap();
    first.shutdown().await.unwrap();

    let second = deploy::<impls_v2::Deploy>(&db, &clock, &app).await;
    let client = second.client();
    // Read as the new shape, before any handler ran.
    assert_eq!(
        client
            .task::<impls_v2::Totals>()
            .get_state("t")
            .await
            .unwrap(),
        Some(impls_v2::Ledger { sum: 5, entries: 0 })
    );
    // Handlers see the migrated state, and their writes store the new shape.
    client
        .task::<impls_v2::Totals>()
        .send("t", 2)
        .await
        .unwrap();
    client
        .debounce::<impls_v2::Batches>()
        .add("n", 2)
        .await
        .unwrap();
    assert_eq!(
        client
            .task::<impls_v2::Totals>()
            .get_state("t")
            .await
            .unwrap(),
        Some(impls_v2::Ledger { sum: 7, entries: 1 })
    );
    assert_eq!(
        client
            .debounce::<impls_v2::Batches>()
            .get_state("n")
            .await
            .unwrap(),
        Some(impls_v2::Items { items: vec![1, 2] })
    );
    drop(client);
    second.shutdown().await.unwrap();
    let versions = db
        .rows("SELECT id, state_version FROM instances ORDER BY id")
        .await;
    let row = |id: &str| [Some(id.to_owned()), Some("1".to_owned())];
    assert_eq!(versions, [row("n"), row("t")]);
}
