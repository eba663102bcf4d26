//! Generated code passes the lints careful crates deny.

#![deny(
    missing_docs,
    unused_qualifications,
    unreachable_pub,
    missing_debug_implementations,
    unused,
    rust_2018_idioms,
    trivial_casts,
    unused_results
)]
#![forbid(unsafe_code)]

use durable_jobs::prelude::*;

/// The application state.
#[derive(Debug)]
pub struct App;

/// A private job in a binary: nothing generated for it may be reported as unused.
#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(ctx: &mut ContinuousContext<u64>, _app: &App) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    Ok(())
}

/// A public job keeps the function's documentation on its type.
#[durable_jobs::step_job]
pub async fn sync(_step: &mut StepContext, input: u64) -> Result<u64, std::io::Error> {
    Ok(input)
}

/// A task job.
#[derive(Debug)]
pub struct Orders;

#[durable_jobs::task]
impl TaskJob<App> for Orders {
    type State = u64;
    type Event = u64;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u64>, event: u64, _app: &App) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u64>, _app: &App) -> Result<(), std::io::Error> {
        Ok(())
    }
}

durable_jobs::registry! {
    /// The jobs.
    pub Jobs<App> { Heartbeat, Sync, Orders }
}

durable_jobs::registry! {
    Private<App> { Heartbeat }
}

fn main() {
    let _builder = Jobs::builder();
}
