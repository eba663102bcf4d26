use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, SyncUsers, TokenRefresher, WebhookBatcher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

fn call(client: Client<Jobs>) {
    // `OrderProcesor` is a typo of `OrderProcessor`.
    client.task::<OrderProcesor>();
}

fn main() {
    let _ = call;
}
