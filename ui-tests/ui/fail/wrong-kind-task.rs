use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, SyncUsers, TokenRefresher, WebhookBatcher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

fn call(client: Client<Jobs>) {
    // `TokenRefresher` is a #[continuous] job.
    client.task::<TokenRefresher>();
}

fn main() {
    let _ = call;
}
