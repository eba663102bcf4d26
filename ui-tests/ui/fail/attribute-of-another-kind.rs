use durable_jobs::prelude::*;

pub struct Reminder;

// `#[debounce]` goes on an impl of `DebounceJob`; an impl of `TaskJob` takes `#[task]`.
#[durable_jobs::debounce(flush_after = "5s")]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u32>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
