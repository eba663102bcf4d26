//! Telemetry: the nine job events, delivered to in-process subscribers and, when configured,
//! to an HTTP endpoint through a durable outbox (feature `http-telemetry`), which step-run
//! events reach too (see `runs.rs`).
//!
//! Events are produced inside the action or alarm they describe. When an HTTP endpoint is
//! configured they are written to the outbox table in the same transaction as the change, so an
//! event is sent if and only if its change committed, even across a crash. In-process
//! subscribers receive them after the commit.

mod event;
#[cfg(feature = "http-telemetry")]
pub mod http;
pub(crate) mod runs;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

pub use event::{EventKind, JobEvent};
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

/// Fans events out after commit and wakes the outbox sender.
pub(crate) struct Telemetry {
    subscribers: Mutex<Vec<mpsc::Sender<Arc<JobEvent>>>>,
    has_subscribers: AtomicBool,
    /// Set when an HTTP endpoint is configured: events then also go to the outbox.
    pub(crate) outbox: Option<Arc<Notify>>,
}

/// Events a subscriber may fall behind by before the oldest are skipped.
const SUBSCRIBER_BUFFER: usize = 4096;

impl Telemetry {
    pub(crate) fn new(outbox: bool) -> Self {
        Telemetry {
            subscribers: Mutex::new(Vec::new()),
            has_subscribers: AtomicBool::new(false),
            outbox: outbox.then(|| Arc::new(Notify::new())),
        }
    }

    /// Whether anyone would see an event: an outbox or a live subscriber.
    pub(crate) fn enabled(&self) -> bool {
        self.outbox.is_some() || self.has_subscribers.load(Ordering::Relaxed)
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
        if !self.has_subscribers.load(Ordering::Relaxed) {
            return;
        }
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let event = Arc::new(event);
            subscribers.retain(|tx| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("a telemetry subscriber fell {SUBSCRIBER_BUFFER} events behind; event skipped");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        self.has_subscribers
            .store(!subscribers.is_empty(), Ordering::Relaxed);
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.push(tx);
        self.has_subscribers.store(true, Ordering::Relaxed);
        EventStream { rx }
    }
}

/// A stream of committed telemetry events, from [`Engine::events`](crate::Engine::events).
///
/// A subscriber that falls more than 4,096 events behind skips the newest ones (a `tracing`
/// warning says so); the HTTP outbox never skips. Events are only produced while someone
/// subscribes or an HTTP endpoint is configured.
pub struct EventStream {
    rx: mpsc::Receiver<Arc<JobEvent>>,
}

impl EventStream {
    /// The next event; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<Arc<JobEvent>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Arc<JobEvent>> {
        self.rx.try_recv().ok()
    }

    /// Every event waiting now.
    pub fn drain(&mut self) -> Vec<Arc<JobEvent>> {
        std::iter::from_fn(|| self.try_next()).collect()
    }
}

impl futures_core::Stream for EventStream {
    type Item = Arc<JobEvent>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}
