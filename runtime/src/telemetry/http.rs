//! Delivery of outbox events to an HTTP endpoint, in batches, with retries.
//!
//! Events reach the endpoint from the outbox table, never from memory: a row is removed only
//! after the endpoint accepted the request that carried it (a 2xx answer), so an event whose
//! change committed is delivered at least once, even across crashes and outages. A request whose
//! answer is lost is sent again; receivers de-duplicate on `eventId`.
//!
//! Shutdown does not wait for delivery: the request in flight, if any, is let finish (within the
//! shutdown timeout), and nothing more is sent or retried. What was not delivered stays in the
//! outbox and is sent after the next start.
//!
//! Every engine on a store runs a sender. On a store several processes share (PostgreSQL), each
//! sender takes its batch for itself before posting it ([`Backend::outbox_claim`]), for at most
//! the claim's duration, and posts a batch for at most half of it: no two live senders post the
//! same event. A sender that stops gives back what it took; one that dies leaves it claimed
//! until the claim lapses, and another sender posts it then.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::retry::Backoff;
use crate::store::{Backend, OutboxEntry, StoreError};

/// Where and how to send telemetry over HTTP.
///
/// Events are posted as `{"events": [...]}` with JSON content type, each event carrying `env`
/// and `serviceKey` besides its own fields. A failed request is retried with exponential
/// backoff (from 100 ms, doubling, up to [`max_backoff`](Self::max_backoff)); events wait in
/// the database meanwhile, so none is dropped.
///
/// On a database several processes share (PostgreSQL), every engine's sender takes the events
/// it posts for itself, for [`claim_duration`](Self::claim_duration): while two engines live,
/// none posts an event the other took, and the events of an engine that died are posted by
/// another once its claim lapses.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::telemetry::HttpTelemetry;
///
/// let telemetry = HttpTelemetry::new("http://collector.internal/v1/events", "production", "billing")
///     .batch_size(50)
///     .header("authorization", "Bearer secret")
///     .max_backoff(Duration::from_secs(30));
/// # let _ = telemetry;
/// ```
#[derive(Clone, Debug)]
pub struct HttpTelemetry {
    pub(crate) endpoint: String,
    pub(crate) env: String,
    pub(crate) service_key: String,
    pub(crate) batch_size: usize,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) max_backoff: Duration,
    pub(crate) claim_duration: Duration,
    /// The first retry delay; tests shorten it.
    pub(crate) initial_backoff: Duration,
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
            claim_duration: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
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

    /// The longest wait between two attempts while the endpoint fails (default 60 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// On a store several processes share, how long the events a sender took for a request stay
    /// its own (default 60 s, at least 2 ms): after a crash, other engines post them this long
    /// after they were taken. A request is given half of it, and at most 30 s, then counts as
    /// failed, so that its answer never comes after the claim lapsed. Alone on its store
    /// (SQLite), an engine takes nothing and this changes only the request's time limit.
    pub fn claim_duration(mut self, claim: Duration) -> Self {
        self.claim_duration = claim.max(Duration::from_millis(2));
        self
    }

    /// How long a request may take: half the claim, at most [`REQUEST_TIMEOUT`].
    fn request_timeout(&self) -> Duration {
        (self.claim_duration / 2).min(REQUEST_TIMEOUT)
    }
}

/// Longest wait for an answer to one request; a hung endpoint counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The running sender task.
pub(crate) struct HttpSender {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    store: Arc<dyn Backend>,
    owner: String,
}

impl HttpSender {
    /// Stops: lets the request in flight finish (for at most `timeout`) and sends nothing more.
    /// What was not delivered stays in the outbox, given back for the other engines on the
    /// store to send, or for the next start.
    pub(crate) async fn shutdown(mut self, timeout: Duration) {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
            tracing::warn!(
                ?timeout,
                "a telemetry request was still in flight at shutdown; its events stay in the outbox for the next start"
            );
        }
        match self.store.outbox_release(&self.owner).await {
            Ok(()) | Err(StoreError::Closed) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "giving back undelivered telemetry failed; other engines send it once the claim lapses"
            ),
        }
    }
}

impl Drop for HttpSender {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Who a sender is, and when it looks at the outbox besides when it is woken.
pub(crate) struct SenderRole {
    /// Whose claims it makes: the engine's owner id.
    pub(crate) owner: String,
    /// The time of its claims: the engine's.
    pub(crate) clock: Clock,
    /// On a store other processes write too, how often it looks for what they left for it: rows
    /// of a process that died before sending them, or whose claim lapsed. `None` on a store
    /// this process owns, where every row is written by it, and wakes it.
    pub(crate) poll: Option<Duration>,
}

/// Starts delivering the outbox of `store` to the endpoint of `config`: at once (for rows left
/// by an earlier run), then whenever `wake` is notified (after a commit that wrote outbox rows),
/// and every `role.poll`.
pub(crate) fn spawn_sender(
    store: Arc<dyn Backend>,
    config: HttpTelemetry,
    wake: Arc<Notify>,
    role: SenderRole,
) -> HttpSender {
    let (stop, stopping) = watch::channel(false);
    let owner = role.owner.clone();
    let task = {
        let store = store.clone();
        tokio::spawn(async move {
            let poll = role.poll;
            let Some(sender) = Sender::new(store, config, role.owner, role.clock) else {
                return;
            };
            sender.run(&wake, poll, stopping).await;
        })
    };
    HttpSender {
        stop,
        task: Some(task),
        store,
        owner,
    }
}

struct Sender {
    store: Arc<dyn Backend>,
    client: reqwest::Client,
    headers: HeaderMap,
    config: HttpTelemetry,
    /// Whose claims these are.
    owner: String,
    clock: Clock,
}

/// Why a delivery round ended.
enum Ended {
    /// The outbox is empty.
    Drained,
    /// The store is closed: nothing more can be delivered.
    StoreClosed,
    /// The engine is shutting down: the rest waits in the outbox.
    Stopping,
}

impl Sender {
    fn new(
        store: Arc<dyn Backend>,
        config: HttpTelemetry,
        owner: String,
        clock: Clock,
    ) -> Option<Sender> {
        let timeout = config.request_timeout();
        let client = match reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the telemetry HTTP client; events stay in the outbox");
                return None;
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => tracing::warn!(header = %name, "invalid telemetry header; it is not sent"),
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Some(Sender {
            store,
            client,
            headers,
            config,
            owner,
            clock,
        })
    }

    async fn run(
        &self,
        wake: &Notify,
        poll: Option<Duration>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            match self.deliver_all(&mut stopping).await {
                Ended::StoreClosed | Ended::Stopping => return,
                Ended::Drained if *stopping.borrow() => return,
                Ended::Drained => {}
            }
            let polled = async {
                match poll {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                () = polled => {}
                _ = stopping.changed() => return,
            }
        }
    }

    /// Sends batches until the outbox is empty, retrying failures with backoff, or until the
    /// engine stops (checked between requests: a request in flight is let finish).
    async fn deliver_all(&self, stopping: &mut watch::Receiver<bool>) -> Ended {
        let mut backoff = Pauses::new(self.config.initial_backoff, self.config.max_backoff);
        loop {
            if *stopping.borrow() {
                return Ended::Stopping;
            }
            let now = self.clock.now();
            let until = now + self.config.claim_duration;
            let claimed = self
                .store
                .outbox_claim(&self.owner, now, until, self.config.batch_size)
                .await;
            let batch = match claimed {
                Ok(batch) => batch,
                Err(StoreError::Closed) => return Ended::StoreClosed,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the telemetry outbox failed; retrying");
                    if backoff.wait(stopping).await.is_err() {
                        return Ended::Stopping;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                return Ended::Drained;
            }
            if let Err(e) = self.post(&batch).await {
                tracing::warn!(
                    endpoint = %self.config.endpoint,
                    events = batch.len(),
                    retry_in = ?backoff.next(),
                    error = %e,
                    "sending telemetry failed; the events stay in the outbox"
                );
                if backoff.wait(stopping).await.is_err() {
                    return Ended::Stopping;
                }
                continue;
            }
            match self.store.outbox_delivered(&batch).await {
                Ok(()) => backoff.reset(),
                Err(StoreError::Closed) => return Ended::StoreClosed,
                Err(e) => {
                    // The batch will be sent again; receivers de-duplicate on `eventId`.
                    tracing::warn!(error = %e, "removing delivered telemetry from the outbox failed");
                    if backoff.wait(stopping).await.is_err() {
                        return Ended::Stopping;
                    }
                }
            }
        }
    }

    async fn post(&self, batch: &[OutboxEntry]) -> Result<(), String> {
        let response = self
            .client
            .post(&self.config.endpoint)
            .headers(self.headers.clone())
            .body(self.body(batch))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered {status}"))
        }
    }

    /// `{"events": [...]}`, each event with `env` and `serviceKey`.
    fn body(&self, batch: &[OutboxEntry]) -> String {
        let events: Vec<Value> = batch.iter().map(|entry| self.event(&entry.json)).collect();
        let mut body = Map::new();
        body.insert("events".into(), Value::Array(events));
        Value::Object(body).to_string()
    }

    fn event(&self, json: &str) -> Value {
        let mut event = match serde_json::from_str(json) {
            Ok(Value::Object(fields)) => fields,
            // The engine writes objects only; anything else is passed on rather than blocking
            // the outbox behind it.
            _ => {
                let mut fields = Map::new();
                fields.insert("raw".into(), Value::String(json.to_owned()));
                fields
            }
        };
        event.insert("env".into(), Value::String(self.config.env.clone()));
        event.insert(
            "serviceKey".into(),
            Value::String(self.config.service_key.clone()),
        );
        Value::Object(event)
    }
}

/// The engine is stopping.
struct Stopped;

/// The pauses between failed attempts, on real time: an exponential [`Backoff`] from the first
/// delay, doubling, up to the maximum, counted from the last success.
struct Pauses {
    backoff: Backoff,
    failures: u32,
}

impl Pauses {
    fn new(initial: Duration, max: Duration) -> Self {
        Pauses {
            backoff: Backoff::exponential(initial.min(max)).max(max),
            failures: 0,
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    /// The pause after the next failure.
    fn next(&self) -> Duration {
        self.backoff
            .delay_after_failure(self.failures.saturating_add(1))
    }

    /// Counts a failure and returns the pause after it.
    fn advance(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay_after_failure(self.failures)
    }

    /// Waits the current delay and doubles it; `Err` as soon as the engine stops, which does
    /// not wait for the endpoint to come back.
    async fn wait(&mut self, stopping: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        let delay = self.advance();
        if *stopping.borrow() {
            return Err(Stopped);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            _ = stopping.changed() => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use tokio::sync::mpsc;

    use super::*;
    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::Write;

    /// One request as the server saw it, and what it answered.
    struct Received {
        headers: HeaderMap,
        body: Value,
        status: StatusCode,
    }

    #[derive(Clone)]
    struct Server {
        received: mpsc::UnboundedSender<Received>,
        /// Answers for the next requests; 200 once empty.
        script: Arc<Mutex<VecDeque<StatusCode>>>,
    }

    async fn collect(
        State(server): State<Server>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> StatusCode {
        let status = server
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(StatusCode::OK);
        let _ = server.received.send(Received {
            headers,
            body,
            status,
        });
        status
    }

    /// A real HTTP server on a free loopback port; returns its URL and what it receives.
    async fn serve(
        script: impl IntoIterator<Item = StatusCode>,
    ) -> (String, mpsc::UnboundedReceiver<Received>) {
        let (received, rx) = mpsc::unbounded_channel();
        let state = Server {
            received,
            script: Arc::new(Mutex::new(script.into_iter().collect())),
        };
        let app = Router::new()
            .route("/events", post(collect))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    /// A sender alone on its store, as an engine on a store it owns runs it.
    fn start(store: Arc<dyn Backend>, config: HttpTelemetry, wake: Arc<Notify>) -> HttpSender {
        let role = SenderRole {
            owner: "engine-test".into(),
            clock: Clock::system(),
            poll: None,
        };
        spawn_sender(store, config, wake, role)
    }

    fn config(url: &str) -> HttpTelemetry {
        let mut config = HttpTelemetry::new(url, "test", "svc-key");
        config.initial_backoff = Duration::from_millis(1);
        config
    }

    async fn write_events(store: &SqliteStore, numbers: std::ops::Range<u32>) {
        let rows = numbers
            .map(|n| format!(r#"{{"type":"job.executed","n":{n}}}"#))
            .collect();
        store.commit(vec![Write::Outbox(rows)]).await.unwrap();
    }

    fn numbers(received: &Received) -> Vec<u64> {
        received.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn delivers_the_outbox_in_order_in_batches_with_env_and_service_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).unwrap();
        // Left over from an earlier run: sent at start-up.
        write_events(&store, 0..4).await;
        write_events(&store, 4..7).await;

        let (url, mut received) = serve([]).await;
        let wake = Arc::new(Notify::new());
        let backend: Arc<dyn Backend> = store.clone();
        let sender = start(
            backend,
            config(&url)
                .batch_size(3)
                .header("authorization", "Bearer t"),
            wake.clone(),
        );

        let mut batches = Vec::new();
        for _ in 0..3 {
            let request = received.recv().await.unwrap();
            assert_eq!(request.headers["content-type"], "application/json");
            assert_eq!(request.headers["authorization"], "Bearer t");
            for event in request.body["events"].as_array().unwrap() {
                assert_eq!(event["env"], "test");
                assert_eq!(event["serviceKey"], "svc-key");
                assert_eq!(event["type"], "job.executed");
            }
            batches.push(numbers(&request));
        }
        assert_eq!(batches, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);

        // A commit that wrote outbox rows wakes the sender.
        write_events(&store, 7..9).await;
        wake.notify_one();
        assert_eq!(numbers(&received.recv().await.unwrap()), [7, 8]);

        sender.shutdown(Duration::from_secs(10)).await;
        assert!(store.outbox_peek(10).await.unwrap().is_empty());
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_retried_until_every_event_is_accepted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).unwrap();
        write_events(&store, 0..5).await;
        let (url, mut received) = serve([
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
        ])
        .await;
        let backend: Arc<dyn Backend> = store.clone();
        let sender = start(backend, config(&url), Arc::new(Notify::new()));

        let mut attempts = Vec::new();
        while attempts
            .last()
            .is_none_or(|r: &Received| r.status != StatusCode::OK)
        {
            attempts.push(received.recv().await.unwrap());
        }
        sender.shutdown(Duration::from_secs(10)).await;

        let statuses: Vec<_> = attempts.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(statuses, [500, 500, 200]);
        assert!(attempts.iter().all(|r| numbers(r) == [0, 1, 2, 3, 4]));
        // Nothing was sent again after the accepted request, and nothing is left.
        assert!(received.try_recv().is_err());
        assert!(store.outbox_peek(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn shutdown_with_an_unreachable_endpoint_returns_in_time_and_keeps_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::file(dir.path().join("jobs.db"))).unwrap();
        write_events(&store, 0..3).await;
        // A port nobody listens on any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        drop(listener);

        let backend: Arc<dyn Backend> = store.clone();
        let sender = start(backend, config(&url), Arc::new(Notify::new()));
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        sender.shutdown(timeout).await;
        assert!(
            started.elapsed() < timeout + Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(store.outbox_peek(10).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_sender_stops_when_the_store_closes() {
        let store = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        let (url, _received) = serve([]).await;
        let backend: Arc<dyn Backend> = store.clone();
        let wake = Arc::new(Notify::new());
        let sender = start(backend, config(&url), wake.clone());
        store.close().await.unwrap();
        wake.notify_one();
        // The task ends by itself: shutdown does not need its timeout.
        let started = Instant::now();
        sender.shutdown(Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn events_get_env_and_service_key_and_odd_rows_are_passed_on() {
        let store: Arc<dyn Backend> = SqliteStore::open(SqliteOptions::in_memory()).unwrap();
        let sender = Sender::new(
            store,
            HttpTelemetry::new("http://127.0.0.1:1/", "prod", "svc"),
            "engine-test".into(),
            Clock::system(),
        )
        .unwrap();
        let body: Value = serde_json::from_str(&sender.body(&[
            OutboxEntry {
                seq: 1,
                json: r#"{"type":"job.started","env":"overridden"}"#.into(),
            },
            OutboxEntry {
                seq: 2,
                json: "not json".into(),
            },
        ]))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"events": [
                {"type": "job.started", "env": "prod", "serviceKey": "svc"},
                {"raw": "not json", "env": "prod", "serviceKey": "svc"},
            ]})
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut pauses = Pauses::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| pauses.advance().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(pauses.next(), Duration::from_millis(350));
        pauses.reset();
        assert_eq!(pauses.next(), Duration::from_millis(100));
    }
}
