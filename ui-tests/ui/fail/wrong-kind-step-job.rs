use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, SyncUsers, TokenRefresher, WebhookBatcher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor, SyncUsers }
}

fn call(client: Client<Jobs>) {
    // `WebhookBatcher` is a #[debounce] job.
    client.step_job::<WebhookBatcher>();
}

fn main() {
    let _ = call;
}
