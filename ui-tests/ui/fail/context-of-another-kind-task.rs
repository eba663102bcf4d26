use durable_jobs::prelude::*;

pub struct Reminder;

// A task job's handlers receive a `TaskContext`; `FlushContext` belongs to debounce jobs.
#[durable_jobs::task]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut FlushContext<u32>, _event: u32) -> Result<(), std::io::Error> {
        let _ = ctx.flush_reason();
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u32>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
