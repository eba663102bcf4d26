use durable_jobs::prelude::*;

pub struct App;
pub struct Reminder;

// `impl TaskJob for Reminder` runs with any app type, so handlers cannot name one.
#[durable_jobs::task]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u32>, _app: &App) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
