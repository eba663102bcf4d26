//! Telemetry: the nine job events and the step-run events, delivered to in-process subscribers
//! through one fan-out (`fanout.rs`) and, when configured, to an HTTP endpoint through a durable
//! outbox (feature `http-telemetry`).
//!
//! Job events are produced inside the action or alarm they describe. When an HTTP endpoint is
//! configured they are written to the outbox table in the same transaction as the change, so an
//! event is sent if and only if its change committed, even across a crash. In-process
//! subscribers receive them after the commit. Run events are published by the step runtime
//! after their change committed, and reach the outbox from the fan-out (`runs.rs`).

mod event;
pub(crate) mod fanout;
#[cfg(feature = "http-telemetry")]
pub mod http;
pub(crate) mod runs;

use std::sync::Arc;

use tokio::sync::Notify;

pub use event::{EventKind, JobEvent};
pub use fanout::{Event, EventStream};
pub(crate) use fanout::{Fanout, Reads, Subscription};
#[cfg(feature = "http-telemetry")]
pub(crate) use http::HttpSender;
#[cfg(feature = "http-telemetry")]
pub use http::HttpTelemetry;

/// The outbox sender, which cannot exist without the `http-telemetry` feature: the engine's slot
/// for one stays empty.
#[cfg(not(feature = "http-telemetry"))]
pub(crate) enum HttpSender {}

#[cfg(not(feature = "http-telemetry"))]
impl HttpSender {
    pub(crate) async fn shutdown(self, _timeout: std::time::Duration) {
        match self {}
    }
}

/// Publishes job events after commit and wakes the outbox sender.
pub(crate) struct Telemetry {
    fanout: Arc<Fanout>,
    /// Set when an HTTP endpoint is configured: events then also go to the outbox.
    pub(crate) outbox: Option<Arc<Notify>>,
}

impl Telemetry {
    pub(crate) fn new(outbox: bool, fanout: Arc<Fanout>) -> Self {
        Telemetry {
            fanout,
            outbox: outbox.then(|| Arc::new(Notify::new())),
        }
    }

    /// Whether anyone would see a job event: an outbox or a live subscriber.
    pub(crate) fn enabled(&self) -> bool {
        self.outbox.is_some() || self.fanout.reads_jobs()
    }

    /// The events' outbox rows, when the outbox is in use.
    pub(crate) fn outbox_rows(&self, events: &[JobEvent]) -> Option<Vec<String>> {
        if self.outbox.is_none() || events.is_empty() {
            return None;
        }
        Some(events.iter().map(|e| e.to_json().to_string()).collect())
    }

    /// Called after the events' transaction committed.
    pub(crate) fn committed(&self, events: Vec<JobEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some(n) = &self.outbox {
            n.notify_one();
        }
        if !self.fanout.reads_jobs() {
            return;
        }
        for event in events {
            self.fanout.publish(Event::Job(Arc::new(event)));
        }
    }

    /// Every event, job and run, from now on.
    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream::new(self.fanout.subscribe(Reads::All))
    }
}
