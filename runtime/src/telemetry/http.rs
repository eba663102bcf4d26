//! Delivery of outbox events to an HTTP endpoint, in batches, with retries.

use std::time::Duration;

/// Where and how to send telemetry over HTTP.
///
/// Events are posted as `{"events": [...]}` with JSON content type, each event carrying `env`
/// and `serviceKey` besides its own fields.
#[derive(Clone, Debug)]
pub struct HttpTelemetry {
    pub(crate) endpoint: String,
    pub(crate) env: String,
    pub(crate) service_key: String,
    pub(crate) batch_size: usize,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) max_backoff: Duration,
}

impl HttpTelemetry {
    /// Sends to `endpoint`, tagging events with `env` and `service_key`; batches of 100.
    pub fn new(
        endpoint: impl Into<String>,
        env: impl Into<String>,
        service_key: impl Into<String>,
    ) -> Self {
        HttpTelemetry {
            endpoint: endpoint.into(),
            env: env.into(),
            service_key: service_key.into(),
            batch_size: 100,
            headers: Vec::new(),
            max_backoff: Duration::from_secs(60),
        }
    }

    /// Events per request (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Adds a header to every request (for authentication).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The running sender.
pub(crate) struct HttpSender;

impl HttpSender {
    pub(crate) async fn shutdown(self, _timeout: Duration) {}
}

pub(crate) fn spawn_sender(
    _store: std::sync::Arc<dyn crate::store::Backend>,
    _config: HttpTelemetry,
    _wake: std::sync::Arc<tokio::sync::Notify>,
) -> HttpSender {
    HttpSender
}
