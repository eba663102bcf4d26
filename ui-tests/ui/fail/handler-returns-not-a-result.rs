use durable_jobs::prelude::*;

pub struct Reminder;

// A handler says whether it failed: `execute` returns `Result<(), Self::Error>`.
#[durable_jobs::task]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<u32>) -> u32 {
        ctx.state().copied().unwrap_or(0)
    }
}

fn main() {}
