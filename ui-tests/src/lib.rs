//! Compile-error tests of durable-jobs; see `tests/ui.rs` and `README.md`.
//!
//! The library holds one job of each kind, shared by the cases in `ui/fail/`, so each case is
//! only the mistake it shows.

use durable_jobs::prelude::*;
use serde::{Deserialize, Serialize};
// Cases may use tokio too; naming it here keeps it linked into this library, which is how the
// ui driver finds its build (see `tests/ui/artifacts.rs`).
use tokio as _;

/// The application state handed to handlers.
#[derive(Debug, Default)]
pub struct App {
    /// A fake service.
    pub service: String,
}

/// An error of the jobs.
#[derive(Debug, thiserror::Error)]
#[error("job failed")]
pub struct JobFailed;

/// OAuth tokens kept fresh by [`TokenRefresher`].
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tokens {
    /// The refresh token.
    pub refresh_token: String,
}

/// Keeps OAuth tokens fresh.
#[durable_jobs::continuous(every = "30m")]
pub async fn token_refresher(
    ctx: &mut ContinuousContext<Tokens>,
    app: &App,
) -> Result<(), JobFailed> {
    if ctx.state().refresh_token.is_empty() || app.service.is_empty() {
        return ctx.terminate("no refresh token");
    }
    Ok(())
}

/// A webhook delivery.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Webhook {
    /// Its body.
    pub body: String,
}

/// Batches webhooks per contact.
#[derive(Debug)]
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "5s", max_events = 100)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = Webhook;
    type State = Vec<Webhook>;
    type Error = JobFailed;

    fn on_event(
        &self,
        state: Option<Vec<Webhook>>,
        event: Webhook,
        _ctx: &EventContext,
    ) -> Vec<Webhook> {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<Vec<Webhook>>,
        _app: &App,
    ) -> Result<(), JobFailed> {
        Ok(())
    }
}

/// What happens to an order.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum OrderEvent {
    /// It was placed.
    Placed,
    /// It was paid.
    Paid,
}

/// Drives an order through its states.
#[derive(Debug)]
pub struct OrderProcessor;

#[durable_jobs::task]
impl TaskJob<App> for OrderProcessor {
    type State = Vec<OrderEvent>;
    type Event = OrderEvent;
    type Error = JobFailed;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Vec<OrderEvent>>,
        event: OrderEvent,
        _app: &App,
    ) -> Result<(), JobFailed> {
        let mut events = ctx.state().cloned().unwrap_or_default();
        events.push(event);
        ctx.set_state(events);
        ctx.schedule_in(std::time::Duration::from_secs(60));
        Ok(())
    }

    async fn execute(
        &self,
        _ctx: &mut TaskContext<Vec<OrderEvent>>,
        _app: &App,
    ) -> Result<(), JobFailed> {
        Ok(())
    }
}

/// Input of [`SyncUsers`].
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SyncInput {
    /// The organisation to sync.
    pub org_id: String,
}

/// Copies an organisation's users.
#[durable_jobs::step_job(name = "sync-users", retry(max_attempts = 3))]
pub async fn sync_users(
    _step: &mut StepContext,
    input: SyncInput,
    _app: &App,
) -> Result<usize, JobFailed> {
    Ok(input.org_id.len())
}
