use std::rc::Rc;

use durable_jobs::prelude::*;

async fn deliver() {}

pub struct Reminder;

// The same in a handler of a trait-impl job.
#[durable_jobs::task]
impl TaskJob for Reminder {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<u32>) -> Result<(), std::io::Error> {
        let count = Rc::new(ctx.execute_count());
        deliver().await;
        let _ = count;
        Ok(())
    }
}

fn main() {}
