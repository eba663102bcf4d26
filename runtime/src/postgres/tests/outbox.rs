//! The outbox shared by the telemetry senders of several processes: two stores on one schema
//! are two processes. Claims hand each row to one sender at a time, a lapsed or given-back claim
//! hands it to another, and two senders posting to one real HTTP receiver post every row once.

use std::time::Duration;

use serde_json::Value;

use super::*;

/// Appends the events numbered `numbers`, in one write.
async fn write_events(store: &PostgresStore, numbers: std::ops::Range<u64>) {
    let rows = numbers.map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    store.commit(vec![Write::Outbox(rows)]).await.unwrap();
}

fn numbers_of(batch: &[OutboxEntry]) -> Vec<u64> {
    batch
        .iter()
        .map(|entry| {
            serde_json::from_str::<Value>(&entry.json).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn live_claims_keep_senders_apart_and_lapsed_or_released_ones_pass_on() {
    let schema = TestSchema::new();
    let a = schema.open().await;
    let b = schema.open().await;
    write_events(&a, 0..10).await;
    let now = Timestamp::from_millis(1_000_000);
    let until = now + Duration::from_secs(10);

    let first = a.outbox_claim("a", now, until, 4).await.unwrap();
    assert_eq!(numbers_of(&first), [0, 1, 2, 3]);
    // The other process passes over them while the claim lives.
    let second = b.outbox_claim("b", now, until, 4).await.unwrap();
    assert_eq!(numbers_of(&second), [4, 5, 6, 7]);
    // A sender gets its own again (a retry), and what nobody holds.
    let again = a.outbox_claim("a", now, until, 6).await.unwrap();
    assert_eq!(numbers_of(&again), [0, 1, 2, 3, 8, 9]);
    assert_eq!(
        numbers_of(&b.outbox_claim("b", now, until, 10).await.unwrap()),
        [4, 5, 6, 7],
        "nothing of the other's before its claim lapses"
    );

    // b's batch delivered: exactly its rows go, not those before it that a holds.
    b.outbox_delivered(&second).await.unwrap();
    assert_eq!(
        numbers_of(&a.outbox_peek(10).await.unwrap()),
        [0, 1, 2, 3, 8, 9]
    );

    // a dies holding its rows: once its claim lapses, b takes them.
    let later = until;
    let taken = b
        .outbox_claim("b", later, later + Duration::from_secs(10), 10)
        .await
        .unwrap();
    assert_eq!(numbers_of(&taken), [0, 1, 2, 3, 8, 9]);
    // b stops: it gives them back, and a third sender takes them at once.
    b.outbox_release("b").await.unwrap();
    let c = schema.open().await;
    let given_back = c
        .outbox_claim("c", later, later + Duration::from_secs(10), 10)
        .await
        .unwrap();
    assert_eq!(numbers_of(&given_back), [0, 1, 2, 3, 8, 9]);
    c.outbox_delivered(&given_back).await.unwrap();
    assert!(a.outbox_peek(10).await.unwrap().is_empty());
    for store in [a, b, c] {
        store.close().await.unwrap();
    }
}

/// The senders themselves, posting to a real HTTP server.
#[cfg(feature = "http-telemetry")]
mod senders {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::{Json, Router};
    use tokio::sync::{mpsc, Notify};

    use super::*;
    use crate::clock::Clock;
    use crate::telemetry::http::{spawn_sender, HttpSender, SenderRole};
    use crate::telemetry::HttpTelemetry;

    /// Longest wait for deliveries the tests expect.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// What the receiver saw: the events' numbers per request, by the sender that posted them
    /// (its `x-node` header).
    struct Request {
        node: String,
        numbers: Vec<u64>,
        /// When it arrived, in ms since the epoch.
        at_ms: i64,
    }

    #[derive(Clone)]
    struct Receiver {
        requests: mpsc::UnboundedSender<Request>,
        /// How long each answer takes, per node; a node not listed is never answered.
        delays: Arc<Mutex<HashMap<String, Duration>>>,
    }

    async fn receive(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> &'static str {
        let node = headers["x-node"].to_str().unwrap().to_owned();
        let numbers = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let delay = receiver.delays.lock().unwrap().get(&node).copied();
        let _ = receiver.requests.send(Request {
            node,
            numbers,
            at_ms,
        });
        match delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
        "ok"
    }

    /// A real HTTP server on a free loopback port: its URL, its answer delays, and its requests.
    async fn serve() -> (
        String,
        Arc<Mutex<HashMap<String, Duration>>>,
        mpsc::UnboundedReceiver<Request>,
    ) {
        let (requests, rx) = mpsc::unbounded_channel();
        let delays = Arc::new(Mutex::new(HashMap::new()));
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(Receiver {
                requests,
                delays: delays.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, delays, rx)
    }

    /// The sender of the engine `node` on `store`, as an engine on a shared store runs it.
    fn sender(
        store: &Arc<PostgresStore>,
        url: &str,
        node: &str,
        claim: Duration,
    ) -> (HttpSender, Arc<Notify>) {
        let mut config = HttpTelemetry::new(url, "test", "svc")
            .batch_size(10)
            .header("x-node", node)
            .claim_duration(claim);
        config.initial_backoff = Duration::from_millis(10);
        let wake = Arc::new(Notify::new());
        let backend: Arc<dyn Backend> = store.clone();
        let role = SenderRole {
            owner: format!("engine-{node}"),
            clock: Clock::system(),
            poll: store.poll_interval(),
        };
        (spawn_sender(backend, config, wake.clone(), role), wake)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_live_senders_post_every_event_once() {
        let schema = TestSchema::new();
        let a = Arc::new(schema.open().await);
        let b = Arc::new(schema.open().await);
        let (url, delays, mut requests) = serve().await;
        // Slow answers, so that the two senders' requests overlap.
        for node in ["a", "b"] {
            delays
                .lock()
                .unwrap()
                .insert(node.into(), Duration::from_millis(20));
        }
        // A backlog both find at start, then more written by both while they send.
        for n in 0..40 {
            write_events(&a, n * 10..n * 10 + 10).await;
        }
        let (sender_a, wake_a) = sender(&a, &url, "a", Duration::from_secs(60));
        let (sender_b, wake_b) = sender(&b, &url, "b", Duration::from_secs(60));
        for n in 40..60 {
            let (store, wake) = if n % 2 == 0 {
                (&a, &wake_a)
            } else {
                (&b, &wake_b)
            };
            write_events(store, n * 10..n * 10 + 10).await;
            wake.notify_one();
        }
        let total = 600;

        let mut seen: HashMap<u64, String> = HashMap::new();
        let mut by_node: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + PATIENCE;
        while seen.len() < total {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = tokio::time::timeout(left, requests.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {total} events arrived", seen.len()))
                .unwrap();
            *by_node.entry(request.node.clone()).or_default() += 1;
            for n in request.numbers {
                if let Some(first) = seen.insert(n, request.node.clone()) {
                    panic!(
                        "event {n} posted twice: by {first}, then by {}",
                        request.node
                    );
                }
            }
        }
        sender_a.shutdown(Duration::from_secs(10)).await;
        sender_b.shutdown(Duration::from_secs(10)).await;
        // Nothing more came after the last event, and nothing is left.
        if let Ok(request) = requests.try_recv() {
            panic!(
                "{} posted {:?} again after all arrived",
                request.node, request.numbers
            );
        }
        assert!(a.outbox_peek(10).await.unwrap().is_empty());
        assert!(
            by_node.get("a").is_some_and(|&n| n > 0) && by_node.get("b").is_some_and(|&n| n > 0),
            "both senders posted: {by_node:?}"
        );
        a.close().await.unwrap();
        b.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_events_a_dead_sender_held_are_posted_by_another_once_its_claim_lapses() {
        let schema = TestSchema::new();
        let a = Arc::new(schema.open().await);
        let b = Arc::new(schema.open().await);
        let (url, delays, mut requests) = serve().await;
        // a's requests are never answered; b's at once.
        delays.lock().unwrap().insert("b".into(), Duration::ZERO);
        write_events(&a, 0..30).await;

        let claim = Duration::from_secs(2);
        let (sender_a, _wake_a) = sender(&a, &url, "a", claim);
        let held = tokio::time::timeout(PATIENCE, requests.recv())
            .await
            .expect("a posts")
            .unwrap();
        assert_eq!(
            (held.node.as_str(), held.numbers.clone()),
            ("a", (0..10).collect())
        );
        // a dies with its request in flight: its task ends, and nothing is given back.
        drop(sender_a);
        let (lapses_at,): (DbTime,) = sqlx::query_as(&format!(
            "SELECT max(claimed_until) FROM \"{}\".outbox WHERE claimed_by = 'engine-a'",
            schema.name()
        ))
        .fetch_one(&mut schema.admin().await)
        .await
        .unwrap();

        let (sender_b, _wake_b) = sender(&b, &url, "b", claim);
        let mut delivered: Vec<(u64, i64)> = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while delivered.len() < 30 {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = tokio::time::timeout(left, requests.recv())
                .await
                .unwrap_or_else(|_| panic!("only {:?} arrived", delivered))
                .unwrap();
            assert_eq!(request.node, "b", "the dead sender posted again");
            delivered.extend(request.numbers.iter().map(|&n| (n, request.at_ms)));
        }
        sender_b.shutdown(Duration::from_secs(10)).await;
        let mut numbers: Vec<u64> = delivered.iter().map(|(n, _)| *n).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..30).collect::<Vec<_>>(), "each event once");
        for (n, at_ms) in &delivered {
            if *n < 10 {
                assert!(
                    *at_ms >= lapses_at.0.as_millis(),
                    "event {n} held by the dead sender was posted at {at_ms}, before its claim \
                     lapsed at {}",
                    lapses_at.0.as_millis()
                );
            }
        }
        assert!(a.outbox_peek(10).await.unwrap().is_empty());
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}
