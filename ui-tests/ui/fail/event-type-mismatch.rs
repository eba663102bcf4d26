use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, SyncUsers, TokenRefresher, WebhookBatcher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

async fn call(client: Client<Jobs>) {
    // `WebhookBatcher` folds `Webhook` events, not strings.
    let _ = client.debounce::<WebhookBatcher>().add("contact-1", "{}".to_owned()).await;
}

fn main() {
    let _ = call;
}
