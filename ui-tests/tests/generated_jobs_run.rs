//! The code the macros generate runs on the real engine: jobs defined with the attributes and
//! listed with `registry!` start, receive events and keep their state.

use durable_jobs::Job;
use durable_jobs_ui_tests::{
    App, OrderEvent, OrderProcessor, SyncUsers, TokenRefresher, Tokens, Webhook, WebhookBatcher,
};

durable_jobs::registry! {
    /// The jobs of the shared fixtures.
    pub Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

#[tokio::test]
async fn macro_jobs_run_on_the_engine() {
    let app = App {
        service: "crm".into(),
    };
    let engine = Jobs::builder()
        .in_memory()
        .app(app)
        .start()
        .await
        .expect("engine starts");
    let client = engine.client();

    let tokens = Tokens {
        refresh_token: "r".into(),
    };
    client
        .continuous::<TokenRefresher>()
        .start("user-1", tokens)
        .await
        .expect("start");
    let state = client
        .continuous::<TokenRefresher>()
        .get_state("user-1")
        .await
        .expect("state");
    assert_eq!(state.map(|t| t.refresh_token), Some("r".to_owned()));

    client
        .task::<OrderProcessor>()
        .send("order-1", OrderEvent::Placed)
        .await
        .expect("send");
    client
        .task::<OrderProcessor>()
        .send("order-1", OrderEvent::Paid)
        .await
        .expect("send");
    let events = client
        .task::<OrderProcessor>()
        .get_state("order-1")
        .await
        .expect("state");
    assert_eq!(events.map(|e| e.len()), Some(2));

    client
        .debounce::<WebhookBatcher>()
        .add("contact-1", Webhook { body: "{}".into() })
        .await
        .expect("add");
    let batch = client
        .debounce::<WebhookBatcher>()
        .get_state("contact-1")
        .await
        .expect("state");
    assert_eq!(batch.map(|b| b.len()), Some(1));

    // The dynamic path finds every job under the persisted name the name enum reports.
    for job in JobsName::ALL {
        assert!(client.by_name(job.as_str()).is_ok(), "{job}");
    }
    assert_eq!(JobsName::SyncUsers.as_str(), <SyncUsers as Job>::NAME);

    engine.shutdown().await.expect("shutdown");
}
