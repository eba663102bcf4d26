//! Every error variant through the public API, and bad input that must change nothing.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::{Client, Engine, Error, JobSet, Limits, Registered, Registry, ValidationTarget};
use durable_jobs_tests::*;
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn an_unknown_name_on_the_dynamic_path_is_job_not_found() {
    let h = Harness::start().await;
    match h.client.by_name("no_such_job") {
        Err(Error::JobNotFound { name }) => assert_eq!(name, "no_such_job"),
        Err(other) => panic!("expected JobNotFound, got {other:?}"),
        Ok(_) => panic!("expected JobNotFound"),
    }
    let found = h.client.by_name("batcher").ok().unwrap();
    assert_eq!(found.kind(), JobKind::Debounce);
}

#[tokio::test]
async fn invalid_ids_are_refused_and_create_nothing() {
    let h = Harness::start().await;
    let long = "x".repeat(durable_jobs::MAX_ID_BYTES + 1);
    for bad in ["", "line\nbreak", "nul\0", long.as_str()] {
        let c = h.client.continuous::<Refresher>();
        let err = c.start(bad, Count::default()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Validation {
                    target: ValidationTarget::Id,
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
        let err = h
            .client
            .debounce::<Batcher>()
            .add(bad, Hook { n: 1 })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Id,
                ..
            }
        ));
        let err = h
            .client
            .task::<Orders>()
            .send(bad, OrderEvent::Add { amount: 1 })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Id,
                ..
            }
        ));
    }
    assert!(h.probe.calls().is_empty());
    let message = h
        .client
        .continuous::<Refresher>()
        .start("", Count::default())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "invalid id for job refresher: instance id must not be empty"
    );
}

#[tokio::test]
async fn invalid_event_ids_are_refused() {
    let h = Harness::start().await;
    let err = h
        .client
        .debounce::<Batcher>()
        .add_with_id("c", Hook { n: 1 }, "")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Validation {
            target: ValidationTarget::EventId,
            ..
        }
    ));
    assert!(h
        .client
        .debounce::<Batcher>()
        .status("c")
        .await
        .unwrap()
        .is_not_found());
}

#[tokio::test]
async fn payloads_over_the_limit_are_refused_and_create_nothing() {
    let dir = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<TestJobs>::builder()
        .store_arc(dir.open().await)
        .limits(Limits::default().max_payload_bytes(256))
        .app(Probe::default())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    let err = client
        .continuous::<LazyRefresher>()
        .start(
            "big",
            Count {
                count: 1,
                max_runs: Some(1),
            },
        )
        .await
        .map(|_| ());
    assert!(err.is_ok(), "a small input fits");
    let d = client.debounce::<QuietBatcher>();
    for n in 0..40 {
        if let Err(e) = d
            .add(
                "c",
                Hook {
                    n: 1_000_000_000 + n,
                },
            )
            .await
        {
            assert!(
                matches!(
                    e,
                    Error::Validation {
                        target: ValidationTarget::State,
                        ..
                    }
                ),
                "{e:?}"
            );
            // The refused add changed nothing: the batch holds every accepted event.
            let state = d.get_state("c").await.unwrap().unwrap();
            assert_eq!(state.events.len() as i64, n);
            assert!(serde_json::to_string(&state).unwrap().len() <= 256);
            engine.shutdown().await.unwrap();
            return;
        }
    }
    panic!("the batch never hit the size limit");
}

#[tokio::test]
async fn calls_after_shutdown_get_a_shut_down_error() {
    let h = Harness::start().await;
    let client = h.client.clone();
    h.engine.clone().shutdown().await.unwrap();
    let err = client
        .task::<Orders>()
        .send("o", OrderEvent::Add { amount: 1 })
        .await
        .unwrap_err();
    match err {
        Error::ShutDown { operation } => assert_eq!(operation, "send"),
        other => panic!("expected ShutDown, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_without_a_path_is_a_configuration_error() {
    let err = Engine::<TestJobs>::builder()
        .app(Probe::default())
        .start()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::Validation {
                target: ValidationTarget::Config,
                ..
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// State that no longer deserialises: the same job name with a changed state type.

mod v2 {
    use super::*;

    /// The order state after a breaking change: `total` became a string.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Order {
        pub(crate) total: String,
    }

    pub(crate) struct Orders;
    impl Job for Orders {
        const NAME: &'static str = "orders";
        const KIND: JobKind = JobKind::Task;
    }
    impl Registered<Jobs> for Orders {}
    impl TaskJob<()> for Orders {
        type State = Order;
        type Event = serde_json::Value;
        type Error = std::convert::Infallible;
        async fn on_event(
            &self,
            _: &mut TaskContext<Order>,
            _: serde_json::Value,
            _: &(),
        ) -> Result<(), Self::Error> {
            Ok(())
        }
        async fn execute(&self, _: &mut TaskContext<Order>, _: &()) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    pub(crate) struct Jobs;
    impl Registry for Jobs {
        type App = ();
        fn register(jobs: &mut JobSet<()>) {
            jobs.task(Orders);
        }
    }
}

#[tokio::test]
async fn state_that_no_longer_deserialises_is_a_validation_error() {
    let h = Harness::start().await;
    h.client
        .task::<Orders>()
        .send("o", OrderEvent::Add { amount: 5 })
        .await
        .unwrap();
    let Harness {
        engine, client, db, ..
    } = h;
    drop(client);
    engine.shutdown().await.unwrap();

    let engine = Engine::<v2::Jobs>::builder()
        .store_arc(db.open().await)
        .start()
        .await
        .unwrap();
    let client = engine.client();
    let err = client
        .task::<v2::Orders>()
        .get_state("o")
        .await
        .unwrap_err();
    match &err {
        Error::Validation {
            target,
            job,
            message,
        } => {
            assert_eq!(*target, ValidationTarget::State);
            assert_eq!(job.as_deref(), Some("orders"));
            assert!(message.contains("no longer deserialises"), "{message}");
        }
        other => panic!("expected Validation, got {other:?}"),
    }
    // The stored state is untouched and status still answers.
    assert_eq!(
        client
            .task::<v2::Orders>()
            .status("o")
            .await
            .unwrap()
            .event_count,
        1
    );
    // A handler cannot run on it either: the instance is broken, the error says why, and
    // nothing else changes.
    let err = client
        .task::<v2::Orders>()
        .send("o", serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err:?}");
    assert!(err.to_string().contains("no longer deserialises"));
    let status = client.task::<v2::Orders>().status("o").await.unwrap();
    assert_eq!(status.event_count, 1);
    assert_eq!(status.status, durable_jobs::TaskState::Broken);
    assert!(status.broken.unwrap().contains("no longer deserialises"));
    engine.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A handler calling its own instance: refused, not deadlocked.

#[derive(Default)]
struct Loopback {
    client: OnceLock<Client<LoopbackJobs>>,
    seen: Mutex<Vec<String>>,
}

struct Reentrant;
impl Job for Reentrant {
    const NAME: &'static str = "reentrant";
    const KIND: JobKind = JobKind::Task;
}
impl Registered<LoopbackJobs> for Reentrant {}
impl TaskJob<Arc<Loopback>> for Reentrant {
    type State = u32;
    type Event = u32;
    type Error = Error;
    async fn on_event(
        &self,
        ctx: &mut TaskContext<u32>,
        _: u32,
        app: &Arc<Loopback>,
    ) -> Result<(), Error> {
        let client = app.client.get().expect("client set before use");
        let own = client.task::<Reentrant>().trigger(ctx.id()).await;
        app.seen.lock().unwrap().push(format!("{:?}", own.err()));
        // Other instances are fine.
        client.task::<Reentrant>().status("someone-else").await?;
        Ok(())
    }
    async fn execute(&self, _: &mut TaskContext<u32>, _: &Arc<Loopback>) -> Result<(), Error> {
        Ok(())
    }
}

struct LoopbackJobs;
impl Registry for LoopbackJobs {
    type App = Arc<Loopback>;
    fn register(jobs: &mut JobSet<Arc<Loopback>>) {
        jobs.task(Reentrant);
    }
}

#[tokio::test]
async fn a_handler_calling_its_own_instance_gets_invalid_state() {
    let app = Arc::new(Loopback::default());
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<LoopbackJobs>::builder()
        .store_arc(db.open().await)
        .app(app.clone())
        .start()
        .await
        .unwrap();
    app.client.set(engine.client()).ok().unwrap();
    engine
        .client()
        .task::<Reentrant>()
        .send("me", 1)
        .await
        .unwrap();
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("InvalidState"), "{}", seen[0]);
    assert!(seen[0].contains("Trigger"), "{}", seen[0]);
    assert!(seen[0].contains("executing"), "{}", seen[0]);
    drop(app);
    tokio::time::timeout(Duration::from_secs(30), engine.shutdown())
        .await
        .unwrap()
        .unwrap();
}
