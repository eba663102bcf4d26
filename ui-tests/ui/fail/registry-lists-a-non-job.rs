use durable_jobs_ui_tests::{App, TokenRefresher};

/// A plain type, defined without a job attribute.
pub struct Mailer;

durable_jobs::registry! {
    Jobs<App> { TokenRefresher, Mailer }
}

fn main() {}
