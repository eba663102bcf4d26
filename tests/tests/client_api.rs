//! The typed clients' conveniences: instance keys of every kind.

use durable_jobs::JobKind;
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
