use durable_jobs::prelude::*;

struct Reminder;

#[durable_jobs::task]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }
}

fn main() {}
