use durable_jobs::Client;
use durable_jobs_ui_tests::{App, OrderProcessor, TokenRefresher};

// `OrderProcessor` exists but is not listed.
durable_jobs::registry! {
    Jobs<App> { TokenRefresher }
}

fn call(client: Client<Jobs>) {
    client.task::<OrderProcessor>();
}

fn main() {
    let _ = call;
}
