//! Every step-job client operation through `Engine::client()`, with the `#[step_job]` macro and
//! the builder: `batch_trigger`, `cancel`, `delete_run`, `purge_runs` and `subscribe` (and
//! `retrigger` in `steps.rs`); the unit tests under `runtime/src/sqlite/step_tests/` cover the same
//! operations on a hand-built runtime.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{
    BatchItem, Disposition, RunEventKind, RunStatus, StepError, TriggerOptions,
};
use durable_jobs::{Engine, Error, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);

/// What a run is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Doubled.
    pub n: u32,
    /// Wait at the gate first.
    pub held: bool,
}

/// The gate held runs wait at.
pub struct Gate(Semaphore);

/// Doubles `n` in one step, after waiting at the gate when `held`; a held run that is
/// cancelled stops waiting.
#[durable_jobs::step_job(name = "doubler")]
pub async fn doubler(
    step: &mut StepContext,
    input: Work,
    app: &Arc<Gate>,
) -> Result<u32, StepError> {
    step.run("double", |scope| async move {
        if input.held {
            tokio::select! {
                permit = app.0.acquire() => permit?.forget(),
                () = scope.cancelled() => return Err("cancelled while held".into()),
            }
        }
        Ok::<_, durable_jobs::BoxError>(input.n * 2)
    })
    .await
}

durable_jobs::registry! {
    /// The step job of these tests.
    pub Doublers<Arc<Gate>> { Doubler }
}

async fn engine() -> (Engine<Doublers>, Arc<Gate>, durable_jobs_tests::TestDb) {
    let dir = durable_jobs_tests::TestDb::new().await;
    let gate = Arc::new(Gate(Semaphore::new(0)));
    let engine = Engine::<Doublers>::builder()
        .store_arc(dir.open().await)
        .app(gate.clone())
        .start()
        .await
        .unwrap();
    (engine, gate, dir)
}

fn work(n: u32) -> Work {
    Work { n, held: false }
}

#[tokio::test]
async fn batch_trigger_creates_every_run_in_one_call() {
    let (engine, _gate, _dir) = engine().await;
    let doubler = engine.client().step_job::<Doubler>();
    let runs = doubler
        .batch_trigger([
            BatchItem::new(work(1)),
            BatchItem::new(work(2)).options(TriggerOptions::new().idempotency_key("two")),
            BatchItem::new(work(3)),
        ])
        .await
        .unwrap();
    assert_eq!(runs.len(), 3);
    for (t, n) in runs.iter().zip([1, 2, 3]) {
        assert_eq!((t.disposition, t.input.n), (Disposition::Created, n));
        let done = doubler.wait_for_run(&t.id, Some(WAIT)).await.unwrap();
        assert_eq!(
            (done.status, done.output),
            (RunStatus::Completed, Some(n * 2))
        );
    }
    // In a later batch, an idempotency key already used returns that run.
    let again = doubler
        .batch_trigger([
            BatchItem::new(work(9)).options(TriggerOptions::new().idempotency_key("two"))
        ])
        .await
        .unwrap();
    assert_eq!(
        (again[0].id.as_str(), again[0].disposition),
        (runs[1].id.as_str(), Disposition::Idempotent)
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_running_run_and_keeps_nothing_of_its_step() {
    let (engine, _gate, _dir) = engine().await;
    let doubler = engine.client().step_job::<Doubler>();
    let mut events = doubler.events();
    let t = doubler
        .trigger(Work { n: 5, held: true }, TriggerOptions::new())
        .await
        .unwrap();
    // Wait until the worker holds it.
    let leased = async {
        while let Some(e) = events.next().await {
            if e.run_id == t.id && matches!(e.kind, RunEventKind::Leased { .. }) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, leased)
        .await
        .expect("the run starts");
    doubler.cancel(&t.id).await.unwrap();
    match doubler.wait_for_run(&t.id, Some(WAIT)).await {
        Err(Error::InvalidState { state, .. }) => assert_eq!(state, "cancelled"),
        other => panic!("expected the cancelled run, got {other:?}"),
    }
    let run = doubler.get_run(&t.id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.output, run.completed_step_count),
        (RunStatus::Cancelled, None, 0)
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_run_and_purge_runs_remove_ended_runs_and_free_their_keys() {
    let (engine, _gate, _dir) = engine().await;
    let doubler = engine.client().step_job::<Doubler>();
    let mut ids = Vec::new();
    for n in 0..3 {
        let done = doubler
            .trigger_and_wait(
                work(n),
                TriggerOptions::new().idempotency_key(format!("k{n}")),
                WAIT,
            )
            .await
            .unwrap();
        ids.push(done.id);
    }
    doubler.delete_run(&ids[0]).await.unwrap();
    assert!(doubler.get_run(&ids[0]).await.unwrap().is_none());
    // Its idempotency key is free again.
    let fresh = doubler
        .trigger(work(0), TriggerOptions::new().idempotency_key("k0"))
        .await
        .unwrap();
    assert_eq!(fresh.disposition, Disposition::Created);
    doubler.wait_for_run(&fresh.id, Some(WAIT)).await.unwrap();
    // Nothing ended before the epoch; everything ended before the far future.
    assert_eq!(doubler.purge_runs(Timestamp::EPOCH, None).await.unwrap(), 0);
    let far = Timestamp::from_millis(i64::MAX / 2);
    assert_eq!(doubler.purge_runs(far, Some(2)).await.unwrap(), 2);
    assert_eq!(doubler.purge_runs(far, None).await.unwrap(), 1);
    assert!(doubler
        .get_runs(Default::default())
        .await
        .unwrap()
        .is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribe_streams_one_runs_events_until_it_completes() {
    let (engine, gate, _dir) = engine().await;
    let doubler = engine.client().step_job::<Doubler>();
    let other = doubler
        .trigger(work(1), TriggerOptions::new())
        .await
        .unwrap();
    let t = doubler
        .trigger(Work { n: 21, held: true }, TriggerOptions::new())
        .await
        .unwrap();
    let mut events = doubler.subscribe(&t.id).await.unwrap();
    gate.0.add_permits(1);
    let mut kinds = Vec::new();
    let collect = async {
        while let Some(e) = events.next().await {
            assert_eq!(e.run_id, t.id, "only the subscribed run's events");
            let done = matches!(e.kind, RunEventKind::Complete { .. });
            kinds.push(e.kind.clone());
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("the run completes");
    // Subscribed while the step was held: its end and the run's end come after.
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, RunEventKind::StepComplete { .. })),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds.last(), Some(RunEventKind::Complete { .. })),
        "{kinds:?}"
    );
    assert_ne!(other.id, t.id);
    // A missing run cannot be subscribed to.
    assert!(matches!(
        doubler.subscribe("missing").await,
        Err(Error::InstanceNotFound { .. })
    ));
    engine.shutdown().await.unwrap();
}

/// Row `step job get_run, get_runs` of the error table: a stored input that no longer decodes
/// is `Validation`, not a panic or a silently skipped run.
#[tokio::test]
async fn a_stored_input_that_no_longer_decodes_is_a_validation_error() {
    let (engine, _gate, dir) = engine().await;
    let doubler = engine.client().step_job::<Doubler>();
    let done = doubler
        .trigger_and_wait(work(1), TriggerOptions::new(), WAIT)
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
    let runs = match durable_jobs_tests::backing() {
        durable_jobs_tests::Backing::Sqlite(_) => "durably_runs",
        durable_jobs_tests::Backing::Postgres => "runs",
    };
    dir.execute(&format!(
        "UPDATE {runs} SET input = '{{\"n\":\"one\"}}' WHERE id = '{}'",
        done.id
    ))
    .await;
    let engine = Engine::<Doublers>::builder()
        .store_arc(dir.open().await)
        .app(Arc::new(Gate(Semaphore::new(0))))
        .start()
        .await
        .unwrap();
    let doubler = engine.client().step_job::<Doubler>();
    for e in [
        doubler.get_run(&done.id).await.map(drop),
        doubler.get_runs(Default::default()).await.map(drop),
    ] {
        assert!(
            matches!(
                e,
                Err(Error::Validation {
                    target: durable_jobs::ValidationTarget::Input,
                    ..
                })
            ),
            "{e:?}"
        );
    }
    engine.shutdown().await.unwrap();
}
