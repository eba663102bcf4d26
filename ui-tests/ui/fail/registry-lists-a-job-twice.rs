use durable_jobs_ui_tests::{App, OrderProcessor, TokenRefresher};

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, OrderProcessor, TokenRefresher }
}

fn main() {}
