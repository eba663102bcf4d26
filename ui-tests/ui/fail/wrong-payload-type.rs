use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, SyncUsers, TokenRefresher, WebhookBatcher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

async fn call(client: Client<Jobs>) {
    // `OrderProcessor` takes an `OrderEvent`, not a string.
    let _ = client.task::<OrderProcessor>().send("order-1", "placed").await;
}

fn main() {
    let _ = call;
}
