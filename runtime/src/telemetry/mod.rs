//! Telemetry: the eight job events, delivered to in-process subscribers and, when configured,
//! to an HTTP endpoint through a durable outbox.
//!
//! Events are produced inside the action or alarm they describe. When an HTTP endpoint is
//! configured they are written to the outbox table in the same transaction as the change, so an
//! event is sent if and only if its change committed, even across a crash. In-process
//! subscribers receive them after the commit.

mod event;
pub mod http;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{broadcast, Notify};

pub use event::{EventKind, JobEvent};
pub use http::HttpTelemetry;

/// Fans events out after commit and wakes the outbox sender.
pub(crate) struct Telemetry {
    subscribers: broadcast::Sender<Arc<JobEvent>>,
    /// Set when an HTTP endpoint is configured: events then also go to the outbox.
    pub(crate) outbox: Option<Arc<Notify>>,
}

impl Telemetry {
    pub(crate) fn new(outbox: bool) -> Self {
        let (subscribers, _) = broadcast::channel(4096);
        Telemetry {
            subscribers,
            outbox: outbox.then(|| Arc::new(Notify::new())),
        }
    }

    /// Whether anyone would see an event: an outbox or a live subscriber.
    pub(crate) fn enabled(&self) -> bool {
        self.outbox.is_some() || self.subscribers.receiver_count() > 0
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
        if self.subscribers.receiver_count() > 0 {
            for e in events {
                let _ = self.subscribers.send(Arc::new(e));
            }
        }
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream {
            inner: tokio_stream_shim::BroadcastStream::new(self.subscribers.subscribe()),
        }
    }
}

/// A stream of committed telemetry events, from [`Engine::events`](crate::Engine::events).
///
/// A subscriber that falls more than 4,096 events behind skips the oldest ones (a `tracing`
/// warning says how many); the HTTP outbox never skips.
pub struct EventStream {
    inner: tokio_stream_shim::BroadcastStream,
}

impl EventStream {
    /// The next event; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<Arc<JobEvent>> {
        std::future::poll_fn(|cx| Pin::new(&mut self.inner).poll_next(cx)).await
    }
}

impl futures_core::Stream for EventStream {
    type Item = Arc<JobEvent>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

mod tokio_stream_shim {
    //! A broadcast receiver as a stream, without another dependency.
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use tokio::sync::broadcast::{self, error::RecvError};

    use super::JobEvent;

    type Recv = Pin<
        Box<
            dyn Future<
                    Output = (
                        Result<Arc<JobEvent>, RecvError>,
                        broadcast::Receiver<Arc<JobEvent>>,
                    ),
                > + Send,
        >,
    >;

    pub(super) struct BroadcastStream {
        fut: Recv,
    }

    fn recv(mut rx: broadcast::Receiver<Arc<JobEvent>>) -> Recv {
        Box::pin(async move {
            let r = rx.recv().await;
            (r, rx)
        })
    }

    impl BroadcastStream {
        pub(super) fn new(rx: broadcast::Receiver<Arc<JobEvent>>) -> Self {
            BroadcastStream { fut: recv(rx) }
        }

        pub(super) fn poll_next(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Arc<JobEvent>>> {
            loop {
                let (result, rx) = match self.fut.as_mut().poll(cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => return Poll::Pending,
                };
                self.fut = recv(rx);
                match result {
                    Ok(e) => return Poll::Ready(Some(e)),
                    Err(RecvError::Closed) => return Poll::Ready(None),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            skipped = n,
                            "telemetry subscriber fell behind; events skipped"
                        );
                    }
                }
            }
        }
    }
}
