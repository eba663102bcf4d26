//! The typed clients' conveniences: instance keys of every kind, and dynamic access by name.

use durable_jobs::client::DynamicJob;
use durable_jobs::{Error, JobKind};
use durable_jobs_tests::*;

#[tokio::test]
async fn every_typed_client_names_its_instances_as_its_results_do() {
    let h = Harness::start().await;

    let continuous = h.client.continuous::<Refresher>();
    let started = continuous.start("c", Count::default()).await.unwrap();
    assert_eq!(continuous.instance("c"), started.instance);

    let debounce = h.client.debounce::<Batcher>();
    let added = debounce.add("d", Hook { n: 1 }).await.unwrap();
    assert_eq!(debounce.instance("d"), added.instance);
    assert_eq!(added.instance.kind(), JobKind::Debounce);

    let task = h.client.task::<Orders>();
    let sent = task.send("t", OrderEvent::Add { amount: 1 }).await.unwrap();
    assert_eq!(task.instance("t"), sent.instance);
    assert_eq!(sent.instance.kind(), JobKind::Task);
}

#[tokio::test]
async fn an_unknown_name_is_an_error_that_unwrap_err_can_show() {
    let h = Harness::start().await;
    // `unwrap_err` needs the `Ok` side to be `Debug`.
    let err = h.client.by_name("no_such_job").unwrap_err();
    assert!(
        matches!(err, Error::JobNotFound { ref name } if name == "no_such_job"),
        "{err:?}"
    );

    let found = h.client.by_name("orders").unwrap();
    assert!(matches!(found, DynamicJob::Task(_)));
    assert_eq!(format!("{found:?}"), "Task(DynamicTask(orders))");
}
