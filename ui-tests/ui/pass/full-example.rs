//! All four kinds of jobs, a registry and the typed client, as an application writes them.

use std::str::FromStr;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::{Client, RetryExhausted};
use serde::{Deserialize, Serialize};

/// Application services, handed to every handler.
pub struct App {
    pub crm_url: String,
}

#[derive(Debug, thiserror::Error)]
#[error("request failed")]
pub struct RequestFailed;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// Keeps OAuth tokens fresh.
#[durable_jobs::continuous(
    every = "30m",
    start_immediately = false,
    retry(max_attempts = 5, backoff = exponential("1s", max = "30s"), jitter = false, max_duration = "10m"),
    on_retry_exhausted = alert_ops,
)]
pub async fn token_refresher(ctx: &mut ContinuousContext<Tokens>, app: &App) -> Result<(), RequestFailed> {
    if ctx.state().refresh_token.is_empty() {
        return ctx.terminate("no refresh token");
    }
    let tokens = Tokens { access_token: app.crm_url.clone(), ..ctx.state().clone() };
    ctx.set_state(tokens);
    Ok(())
}

async fn alert_ops(exhausted: RetryExhausted<Tokens>, _app: &App) {
    let _ = (exhausted.attempts, exhausted.last_error);
}

/// A nightly report in Paris time, for any app type.
#[durable_jobs::continuous(cron = "0 0 4 * * *", tz = "Europe/Paris", name = "nightly_report")]
async fn nightly(ctx: &mut ContinuousContext<u64>) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    Ok(())
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Webhook {
    pub body: String,
}

/// Batches webhooks per contact.
pub struct WebhookBatcher;

#[durable_jobs::debounce(
    flush_after = "5s",
    quiet = "1s",
    max_events = 100,
    retry(max_attempts = 3, backoff = linear("1s", "2s", max = "10s"))
)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = Webhook;
    type State = Vec<Webhook>;
    type Error = RequestFailed;

    fn on_event(&self, state: Option<Self::State>, event: Webhook, _ctx: &EventContext) -> Self::State {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(&self, ctx: &mut FlushContext<Self::State>, app: &App) -> Result<(), RequestFailed> {
        let _ = (ctx.state().len(), ctx.flush_reason(), &app.crm_url);
        Ok(())
    }

    async fn on_retry_exhausted(&self, exhausted: RetryExhausted<Self::State>, _app: &App) {
        let _ = exhausted.state;
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum OrderEvent {
    Placed { amount: u64 },
    Paid,
}

/// Drives one order.
pub struct OrderProcessor;

#[durable_jobs::task(name = "orders")]
impl TaskJob<App> for OrderProcessor {
    type State = Vec<OrderEvent>;
    type Event = OrderEvent;
    type Error = RequestFailed;

    async fn on_event(&self, ctx: &mut TaskContext<Self::State>, event: OrderEvent, _app: &App) -> Result<(), RequestFailed> {
        let mut events = ctx.state().cloned().unwrap_or_default();
        events.push(event);
        ctx.set_state(events);
        ctx.schedule_in(Duration::from_secs(60));
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<Self::State>, _app: &App) -> Result<(), RequestFailed> {
        Ok(())
    }

    async fn on_idle(&self, _ctx: &mut TaskContext<Self::State>, _reason: IdleReason, _app: &App) {}
}

/// A task job for any app: handlers take no `app` parameter.
pub struct Counter;

#[durable_jobs::task]
impl TaskJob for Counter {
    type State = u64;
    type Event = u64;
    type Error = std::convert::Infallible;

    async fn on_event(&self, ctx: &mut TaskContext<u64>, event: u64) -> Result<(), Self::Error> {
        let total = ctx.state().copied().unwrap_or(0) + event;
        ctx.set_state(total);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u64>) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SyncInput {
    pub org_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SyncOutput {
    pub synced: usize,
}

/// Copies an organisation's users, step by step.
#[durable_jobs::step_job(name = "sync-users", retry(max_attempts = 3, backoff = constant("5s")))]
pub async fn sync_users(_step: &mut StepContext, input: SyncInput, _app: &App) -> Result<SyncOutput, RequestFailed> {
    Ok(SyncOutput { synced: input.org_id.len() })
}

durable_jobs::registry! {
    /// Every job of this application.
    pub Jobs<App> { TokenRefresher, Nightly, WebhookBatcher, OrderProcessor, Counter, SyncUsers }
}

async fn use_the_client(client: Client<Jobs>) -> durable_jobs::Result<()> {
    let tokens = Tokens { access_token: String::new(), refresh_token: "r".into() };
    client.continuous::<TokenRefresher>().start("user-1", tokens).await?;
    client.continuous::<Nightly>().start("report", 0).await?;
    client.debounce::<WebhookBatcher>().add("contact-1", Webhook { body: "{}".into() }).await?;
    client.task::<OrderProcessor>().send("order-1", OrderEvent::Placed { amount: 10 }).await?;
    client.task::<Counter>().send("c", 1).await?;
    let _ = client.step_job::<SyncUsers>();
    let _ = client.by_name(JobsName::WebhookBatcher.as_str())?;
    Ok(())
}

fn main() {
    let _ = use_the_client;
    let _builder = Jobs::builder();
    assert_eq!(JobsName::from_str("orders").unwrap(), JobsName::OrderProcessor);
    assert_eq!(JobsName::ALL.len(), 6);
    assert_eq!(JobsName::Nightly.to_string(), "nightly_report");
}
