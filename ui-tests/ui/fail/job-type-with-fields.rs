use durable_jobs::prelude::*;

// The registry creates each job from its type alone: a job type is a unit struct, and services
// belong in the app state.
pub struct Reminder {
    pub mailer_url: String,
}

#[durable_jobs::task]
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

durable_jobs::registry! {
    Jobs { Reminder }
}

fn main() {}
