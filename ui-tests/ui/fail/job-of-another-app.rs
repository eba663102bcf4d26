use durable_jobs::prelude::*;
use durable_jobs_ui_tests::TokenRefresher;

/// Another application's state.
pub struct OtherApp;

#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>, _app: &OtherApp) -> Result<(), std::io::Error> {
    Ok(())
}

// `TokenRefresher` takes `&durable_jobs_ui_tests::App`, this registry runs with `OtherApp`.
durable_jobs::registry! {
    Jobs<OtherApp> { Heartbeat, TokenRefresher }
}

fn main() {}
