//! Generated code must not depend on what the user has in scope.

#![allow(dead_code, non_camel_case_types)]

use durable_jobs::prelude::{ContinuousContext, EventContext, FlushContext, StepContext, TaskContext};
use durable_jobs::{DebounceJob, TaskJob};

type Result<T> = std::result::Result<T, std::io::Error>;
struct Option;
struct Some;
struct None;
struct Ok;
struct Err;
struct Box;
struct String;
struct Vec;
struct Send;
struct Sync;
struct Clone;
struct Copy;
struct Debug;
struct Default;
struct Future;
struct Duration;
struct str;
mod core {}
mod std_shadow {}
mod durable {}

pub struct App;

#[durable_jobs::continuous(every = "1m", retry(max_attempts = 2))]
async fn heartbeat(ctx: &mut ContinuousContext<u64>, _app: &App) -> Result<()> {
    *ctx.state_mut() += 1;
    Result::Ok(())
}

pub struct Batcher;

#[durable_jobs::debounce(flush_after = "5s")]
impl DebounceJob<App> for Batcher {
    type Event = u64;
    type State = u64;
    type Error = std::io::Error;

    fn on_event(&self, state: std::option::Option<u64>, event: u64, _ctx: &EventContext) -> u64 {
        state.unwrap_or(0) + event
    }

    async fn execute(&self, _ctx: &mut FlushContext<u64>, _app: &App) -> Result<()> {
        Result::Ok(())
    }
}

pub struct Orders;

#[durable_jobs::task]
impl TaskJob<App> for Orders {
    type State = u64;
    type Event = u64;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u64>, event: u64, _app: &App) -> Result<()> {
        ctx.set_state(event);
        Result::Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u64>, _app: &App) -> Result<()> {
        Result::Ok(())
    }
}

#[durable_jobs::step_job]
async fn sync_users(_step: &mut StepContext, input: u64, _app: &App) -> Result<u64> {
    Result::Ok(input)
}

durable_jobs::registry! {
    Jobs<App> { Heartbeat, Batcher, Orders, SyncUsers }
}

fn main() {
    let _ = Jobs::builder();
    let _ = JobsName::ALL;
}

/// Without any prelude at all, as serde tests its derives.
#[no_implicit_prelude]
mod without_prelude {
    #[::durable_jobs::continuous(cron = "0 4 * * *", tz = "UTC", retry(max_attempts = 2, backoff = constant("1s")))]
    async fn nightly(
        ctx: &mut ::durable_jobs::ContinuousContext<u64>,
    ) -> ::std::result::Result<(), ::std::io::Error> {
        *ctx.state_mut() += 1;
        ::std::result::Result::Ok(())
    }

    pub struct Counter;

    #[::durable_jobs::task(name = "counter")]
    impl ::durable_jobs::TaskJob for Counter {
        type State = u64;
        type Event = u64;
        type Error = ::std::convert::Infallible;

        async fn on_event(
            &self,
            ctx: &mut ::durable_jobs::TaskContext<u64>,
            event: u64,
        ) -> ::std::result::Result<(), ::std::convert::Infallible> {
            ctx.set_state(event);
            ::std::result::Result::Ok(())
        }

        async fn execute(
            &self,
            _ctx: &mut ::durable_jobs::TaskContext<u64>,
        ) -> ::std::result::Result<(), ::std::convert::Infallible> {
            ::std::result::Result::Ok(())
        }
    }

    ::durable_jobs::registry! {
        pub Jobs { Nightly, Counter }
    }
}
