//! Quickstart: a token refresher, a webhook batcher and an order processor on an embedded
//! SQLite file, driven through the typed client. Runs for about three seconds and exits.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example quickstart
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use durable_jobs::prelude::*;
use serde::{Deserialize, Serialize};

/// What every handler receives: here a counter standing in for real services.
#[derive(Default)]
pub struct App {
    refreshes: AtomicU64,
}

/// The identity provider said no.
#[derive(Debug, thiserror::Error)]
#[error("the identity provider refused the refresh")]
pub struct RefreshError;

/// A user's OAuth tokens.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tokens {
    /// Short-lived.
    pub access_token: String,
    /// Long-lived.
    pub refresh_token: String,
}

/// Refreshes a user's access token every second.
#[durable_jobs::continuous(every = "1s", retry(max_attempts = 3, backoff = exponential("100ms")))]
pub async fn token_refresher(
    ctx: &mut ContinuousContext<Tokens>,
    app: &App,
) -> Result<(), RefreshError> {
    if ctx.state().refresh_token.is_empty() {
        return ctx.terminate("no refresh token");
    }
    let n = app.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
    let access_token = format!("access-{n}");
    println!(
        "[token_refresher] {}: run {} -> {access_token}",
        ctx.id(),
        ctx.run_count()
    );
    ctx.update_state(|t| t.access_token = access_token);
    Ok(())
}

/// An incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Webhook {
    /// What happened.
    pub kind: String,
}

/// Collects a contact's webhooks and delivers them in one batch.
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "1s", max_events = 10)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = Webhook;
    type State = Vec<Webhook>;
    type Error = std::convert::Infallible;

    fn on_event(
        &self,
        batch: Option<Vec<Webhook>>,
        event: Webhook,
        _ctx: &EventContext,
    ) -> Vec<Webhook> {
        let mut batch = batch.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<Webhook>>,
        _app: &App,
    ) -> Result<(), Self::Error> {
        let kinds: Vec<&str> = ctx.state().iter().map(|w| w.kind.as_str()).collect();
        println!(
            "[webhook_batcher] {}: delivering {} webhooks ({}): {kinds:?}",
            ctx.instance().id(),
            ctx.event_count(),
            ctx.flush_reason()
        );
        Ok(())
    }
}

/// An order's state.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Order {
    /// Total.
    pub amount: u64,
    /// Whether it left the warehouse.
    pub shipped: bool,
}

/// What happens to an order.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum OrderEvent {
    /// The customer ordered.
    Placed {
        /// Total.
        amount: u64,
    },
    /// The customer changed their mind.
    Cancelled,
}

/// Ships an order a second after it is placed, unless it is cancelled first.
pub struct OrderProcessor;

#[durable_jobs::task]
impl TaskJob<App> for OrderProcessor {
    type State = Order;
    type Event = OrderEvent;
    type Error = std::convert::Infallible;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Order>,
        event: OrderEvent,
        _app: &App,
    ) -> Result<(), Self::Error> {
        match event {
            OrderEvent::Placed { amount } => {
                println!(
                    "[order_processor] {}: placed for {amount}, shipping in 1s",
                    ctx.id()
                );
                ctx.set_state(Order {
                    amount,
                    shipped: false,
                });
                ctx.schedule_in(Duration::from_secs(1));
            }
            OrderEvent::Cancelled => {
                println!("[order_processor] {}: cancelled", ctx.id());
                return ctx.terminate();
            }
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<Order>, _app: &App) -> Result<(), Self::Error> {
        ctx.update_state(|o| o.shipped = true);
        println!("[order_processor] {}: shipped", ctx.id());
        Ok(())
    }

    async fn on_idle(&self, ctx: &mut TaskContext<Order>, reason: IdleReason, _app: &App) {
        println!("[order_processor] {}: idle after {reason:?}", ctx.id());
    }
}

durable_jobs::registry! {
    /// The jobs of the quickstart.
    pub Jobs<App> { TokenRefresher, WebhookBatcher, OrderProcessor }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("jobs.db");
    println!("database: {}", path.display());

    let engine = Jobs::builder()
        .sqlite(&path)
        .app(App::default())
        .start()
        .await?;
    let client = engine.client();

    let tokens = Tokens {
        access_token: String::new(),
        refresh_token: "rt_abc".into(),
    };
    let started = client
        .continuous::<TokenRefresher>()
        .start("user-123", tokens)
        .await?;
    println!(
        "started {} (created: {}), next run at {:?}",
        started.instance, started.created, started.next_run_at
    );

    for kind in ["contact.created", "contact.updated", "contact.tagged"] {
        let added = client
            .debounce::<WebhookBatcher>()
            .add("contact-456", Webhook { kind: kind.into() })
            .await?;
        println!(
            "added {kind}: {} in the batch, flush at {:?}",
            added.event_count, added.will_flush_at
        );
    }

    client
        .task::<OrderProcessor>()
        .send("order-789", OrderEvent::Placed { amount: 42 })
        .await?;
    client
        .task::<OrderProcessor>()
        .send("order-790", OrderEvent::Placed { amount: 7 })
        .await?;
    client
        .task::<OrderProcessor>()
        .send("order-790", OrderEvent::Cancelled)
        .await?;

    // Let the schedules play out in real time.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let refresher = client
        .continuous::<TokenRefresher>()
        .status("user-123")
        .await?;
    println!(
        "token_refresher: {:?}, {} runs, next at {:?}",
        refresher.status, refresher.run_count, refresher.next_run_at
    );
    println!(
        "tokens now: {:?}",
        client
            .continuous::<TokenRefresher>()
            .get_state("user-123")
            .await?
    );
    println!(
        "webhook batch: {:?}",
        client
            .debounce::<WebhookBatcher>()
            .status("contact-456")
            .await?
            .status
    );
    println!(
        "order-789: {:?}",
        client
            .task::<OrderProcessor>()
            .get_state("order-789")
            .await?
    );
    println!(
        "order-790: {:?}",
        client
            .task::<OrderProcessor>()
            .status("order-790")
            .await?
            .status
    );

    // The dynamic path, as an HTTP handler would use it.
    match client.by_name("webhook_batcher")? {
        durable_jobs::client::DynamicJob::Debounce(job) => {
            let added = job
                .add(
                    "contact-999",
                    serde_json::json!({ "kind": "contact.deleted" }),
                    None,
                )
                .await?;
            println!("added by name: {}", added.instance);
        }
        other => println!("unexpected kind {}", other.kind()),
    }

    client
        .continuous::<TokenRefresher>()
        .terminate("user-123", Some("quickstart done"))
        .await?;
    drop(client);
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("done");
    Ok(())
}
