//! Debounce jobs: a webhook batcher that collects a contact's webhooks and delivers them in one
//! batch, at the latest a second after the first one, earlier once no webhook came for 300 ms,
//! and at once when five are waiting.
//!
//! Shows a flush by count inside `add`, a flush by the quiet period, a flush by `flush_after`
//! despite a steady stream, `add_with_id` refusing a repeated event id, `status` and `clear`.
//! Runs on an embedded SQLite file for about two seconds and exits.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example debounce
//! ```

use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::Error;
use serde::{Deserialize, Serialize};

/// What every handler receives: here a stand-in for a CRM's HTTP client.
pub struct App {
    crm_url: String,
}

/// The CRM refused a delivery.
#[derive(Debug, thiserror::Error)]
#[error("the CRM refused the delivery")]
pub struct DeliveryError;

/// An incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Webhook {
    /// What happened, e.g. `contact.updated`.
    pub kind: String,
}

/// The batch waiting for delivery: the job's persisted state.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Batch {
    /// The webhooks, oldest first.
    pub webhooks: Vec<Webhook>,
}

/// Collects a contact's webhooks and delivers them in one batch.
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "1s", quiet = "300ms", max_events = 5)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = Webhook;
    type State = Batch;
    type Error = DeliveryError;

    fn on_event(&self, batch: Option<Batch>, event: Webhook, _ctx: &EventContext) -> Batch {
        let mut batch = batch.unwrap_or_default();
        batch.webhooks.push(event);
        batch
    }

    async fn execute(&self, ctx: &mut FlushContext<Batch>, app: &App) -> Result<(), DeliveryError> {
        let kinds: Vec<&str> = ctx
            .state()
            .webhooks
            .iter()
            .map(|w| w.kind.as_str())
            .collect();
        let waited = ctx.now().saturating_duration_since(ctx.started_at());
        println!(
            "[webhook_batcher] {}: {} webhooks to {} ({}, after {} ms): {kinds:?}",
            ctx.instance().id(),
            ctx.event_count(),
            app.crm_url,
            ctx.flush_reason(),
            waited.as_millis()
        );
        Ok(())
    }
}

durable_jobs::registry! {
    /// The jobs of this example.
    pub Jobs<App> { WebhookBatcher }
}

/// How far `at` is from now, for printing.
fn from_now(at: Option<Timestamp>) -> String {
    match at {
        Some(at) => {
            let ms = at.as_millis() - Timestamp::now_system().as_millis();
            format!("in {ms} ms")
        }
        None => "never".to_owned(),
    }
}

fn webhook(kind: &str) -> Webhook {
    Webhook { kind: kind.into() }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-debounce-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("jobs.db");
    println!("database: {}", path.display());

    let engine = Jobs::builder()
        .sqlite(&path)
        .app(App {
            crm_url: "https://crm.example.com/hooks".into(),
        })
        .start()
        .await?;
    let client = engine.client();
    let batcher = client.debounce::<WebhookBatcher>();

    // By count: the add that brings the batch to `max_events` flushes it before returning.
    println!("-- five webhooks at once for contact-1");
    for n in 1..=5 {
        let added = batcher
            .add("contact-1", webhook(&format!("contact.updated#{n}")))
            .await?;
        println!(
            "add #{}: created {}, flush {:?}",
            added.event_count, added.created, added.flush
        );
    }

    // By quiet period: two webhooks, then silence; 300 ms after the last one the batch goes.
    println!("-- two webhooks for contact-2, then silence");
    batcher.add("contact-2", webhook("contact.created")).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let added = batcher.add("contact-2", webhook("contact.tagged")).await?;
    println!(
        "contact-2: {} waiting, flush {}",
        added.event_count,
        from_now(added.will_flush_at)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "contact-2 after the quiet period: {:?}",
        batcher.status("contact-2").await?.status
    );

    // By `flush_after`: webhooks keep coming every 250 ms, so the batch is never quiet for
    // 300 ms, but it still goes one second after its first webhook.
    println!("-- a steady stream for contact-3");
    for n in 1..=4 {
        if n > 1 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let added = batcher
            .add("contact-3", webhook(&format!("contact.visited#{n}")))
            .await?;
        println!(
            "contact-3: {} waiting, flush {}",
            added.event_count,
            from_now(added.will_flush_at)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Event ids: a webhook delivered twice by its sender is folded in once.
    println!("-- contact-4 with event ids");
    let added = batcher
        .add_with_id("contact-4", webhook("contact.deleted"), "evt_001")
        .await?;
    println!("evt_001 added: {} in the batch", added.event_count);
    match batcher
        .add_with_id("contact-4", webhook("contact.deleted"), "evt_001")
        .await
    {
        Err(Error::DuplicateEvent { instance, event_id }) => {
            println!("evt_001 again: refused, {event_id} was already seen by {instance}")
        }
        other => println!("unexpected: {other:?}"),
    }
    let status = batcher.status("contact-4").await?;
    println!(
        "status: {:?}, {} event, flush {}",
        status.status,
        status.event_count,
        from_now(status.will_flush_at)
    );
    println!("state: {:?}", batcher.get_state("contact-4").await?);

    // `clear` drops the batch without delivering it.
    let cleared = batcher.clear("contact-4").await?;
    println!(
        "cleared {}: {} events dropped; status now {:?}",
        cleared.instance,
        cleared.discarded_events,
        batcher.status("contact-4").await?.status
    );
    // The event id outlives the batch it belonged to.
    let again = batcher
        .add_with_id("contact-4", webhook("contact.deleted"), "evt_001")
        .await;
    println!(
        "evt_001 after clear: {}",
        match again {
            Err(Error::DuplicateEvent { .. }) => "still refused",
            _ => "accepted",
        }
    );

    drop(client);
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("done");
    Ok(())
}
