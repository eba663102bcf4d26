use durable_jobs::prelude::*;

pub struct Batcher;

// `#[debounce]` writes `fn config` from its arguments.
#[durable_jobs::debounce(flush_after = "5s")]
impl DebounceJob for Batcher {
    type Event = String;
    type State = Vec<String>;
    type Error = std::io::Error;

    fn config(&self) -> DebounceConfig {
        DebounceConfig::new(std::time::Duration::from_secs(5))
    }

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
