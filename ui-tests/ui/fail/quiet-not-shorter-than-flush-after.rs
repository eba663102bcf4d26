use durable_jobs::prelude::*;

pub struct Batcher;

// A quiet period as long as the window can never flush first.
#[durable_jobs::debounce(flush_after = "5s", quiet = "5s")]
impl DebounceJob for Batcher {
    type Event = String;
    type State = Vec<String>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<String>>, event: String, _ctx: &EventContext) -> Vec<String> {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(&self, _ctx: &mut FlushContext<Vec<String>>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
