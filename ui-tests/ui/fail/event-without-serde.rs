use durable_jobs::prelude::*;

/// Stored until the batch flushes, but it only derives `Serialize`, not `Deserialize`.
#[derive(serde::Serialize)]
pub struct Webhook {
    pub body: String,
}

pub struct Batcher;

#[durable_jobs::debounce(flush_after = "5s")]
impl DebounceJob for Batcher {
    type Event = Webhook;
    type State = Vec<String>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<String>>, event: Webhook, _ctx: &EventContext) -> Vec<String> {
        let mut batch = state.unwrap_or_default();
        batch.push(event.body);
        batch
    }

    async fn execute(&self, _ctx: &mut FlushContext<Vec<String>>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
