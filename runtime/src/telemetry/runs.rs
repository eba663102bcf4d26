//! Step-run events into the outbox: with an HTTP endpoint configured, every [`RunEvent`] the
//! step runtime emits is written to the same outbox as the job events and delivered by the same
//! sender, with an `eventId` of its own.
//!
//! Run events are emitted as things happen, after the change they describe committed; this task
//! reads them from the engine's fan-out and writes them to the outbox in batches, one write per
//! batch. So, unlike a job event, a run event is not in the transaction of its change: one
//! emitted just before a crash (or a shutdown that gave up waiting) may be lost, never one whose
//! change did not commit. Job events pass through the fan-out only while someone else reads
//! them; this task skips them, as they are in the outbox already.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use super::event::uuid_v7;
use super::fanout::{Event, Subscription};
use crate::steps::RunEvent;
use crate::store::{Backend, StoreError, Write};

/// Most events written in one outbox write.
const BATCH: usize = 256;

/// The outbox row of `event`: its upstream wire form plus an `eventId`.
pub(crate) fn outbox_row(event: &RunEvent) -> String {
    let mut json = event.to_json();
    if let Some(fields) = json.as_object_mut() {
        fields.insert("eventId".into(), serde_json::Value::String(uuid_v7()));
    }
    json.to_string()
}

/// Writes the run events `events` receives to the outbox until the store closes or the engine
/// is gone, and wakes the sender after each write.
pub(crate) async fn forward(store: Arc<dyn Backend>, mut events: Subscription, wake: Arc<Notify>) {
    loop {
        let first = match events.recv().await {
            Ok(Event::Run(event)) => event,
            Ok(_) => continue,
            Err(RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "run events fell behind the outbox; events skipped");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut rows = vec![outbox_row(&first)];
        while rows.len() < BATCH {
            match events.try_recv() {
                Ok(Event::Run(event)) => rows.push(outbox_row(&event)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        match store.commit(vec![Write::Outbox(rows)]).await {
            Ok(()) => wake.notify_one(),
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "writing run events to the outbox failed"),
        }
    }
}
