use durable_jobs::prelude::*;

pub struct Batcher;

// A debounce job's `execute` receives a `FlushContext`; `TaskContext` belongs to task jobs.
#[durable_jobs::debounce(flush_after = "5s")]
impl DebounceJob for Batcher {
    type Event = String;
    type State = Vec<String>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<String>>, event: String, _ctx: &EventContext) -> Vec<String> {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(&self, ctx: &mut TaskContext<Vec<String>>) -> Result<(), std::io::Error> {
        ctx.schedule_in(std::time::Duration::from_secs(1));
        Ok(())
    }
}

fn main() {}
