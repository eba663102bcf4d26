//! The shared feed on the real PostgreSQL server (`DURABLE_JOBS_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): two engines on one schema, each with its own
//! pool and its own router on a real port. A stream on node A carries the runs node B
//! executes, byte for byte as B's engine built them; a client that reconnects to node B with
//! the last id A sent resumes with nothing lost and nothing twice; `GET /nodes` lists the nodes
//! with what each holds, and drops one whose heartbeat lapsed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use durable_jobs::postgres::PostgresOptions;
use durable_jobs::Engine;
use durable_jobs_http::postgres::{SharedFeed, SharedFeedOptions};
use durable_jobs_http::sse::feed::EventFeed;
use durable_jobs_http::Api;
use serde_json::{json, Value};

fn pg_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

durable_jobs::registry! {
    /// A node that executes no step job: every run it streams was executed by another.
    pub Watcher<Arc<App>> { Refresher }
}

/// A schema of the test's own, dropped when the test ends.
struct Schema {
    name: String,
}

impl Schema {
    fn new(test: &str) -> Schema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Schema {
            name: format!("http_{test}_{:x}", nanos & 0xffff_ffff_ffff),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: the test's runtime is shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&pg_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A node: an engine on the schema with its own pool, its part in the feed, and its router
/// under `/api` on a port of its own.
struct Node<R: durable_jobs::Registry> {
    engine: Engine<R>,
    feed: SharedFeed,
    app: Arc<App>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl<R: durable_jobs::Registry<App = Arc<App>>> Node<R> {
    async fn start(schema: &Schema) -> Node<R> {
        let app = Arc::new(App::default());
        let engine = Engine::<R>::builder()
            .postgres_options(PostgresOptions::new(pg_url()).schema(&schema.name))
            .app(app.clone())
            .start()
            .await
            .unwrap();
        let feed = SharedFeed::start(&engine, feed_options(schema))
            .await
            .unwrap();
        // No progress throttle: what a stream sends after a resume is then exactly what it
        // would have sent without one.
        let api = Api::new(&engine)
            .allow_unauthenticated_writes()
            .progress_throttle(Duration::ZERO)
            .feed(feed.clone());
        let router = axum::Router::new().nest("/api", api.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Node {
            engine,
            feed,
            app,
            base,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// Quick heartbeats, so a lapse shows within the test's deadlines.
fn feed_options(schema: &Schema) -> SharedFeedOptions {
    SharedFeedOptions::new(pg_url())
        .schema(&schema.name)
        .heartbeat(Duration::from_millis(100))
        .node_lapse(Duration::from_millis(800))
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let res = http.get(url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{url}");
    res.json().await.unwrap()
}

async fn trigger(http: &reqwest::Client, url: &str, job: &str, input: Value) -> String {
    let res = http
        .post(url)
        .json(&json!({ "jobName": job, "input": input }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    body["runId"].as_str().unwrap().to_owned()
}

/// A stream's events until `run`'s `run:complete` (and its `run:trigger`, which the
/// triggering task emits after its commit, so it may come after the worker's events).
async fn run_events(r: &mut SseReader, run: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let seen = |out: &[(String, Value)], t: &str| out.iter().any(|(_, d)| d["type"] == t);
    while !(seen(&out, "run:trigger") && seen(&out, "run:complete")) {
        let (id, data) = r.event().await.expect("an open stream");
        assert_eq!(data["runId"], run, "{data}");
        out.push((id.expect("an id"), data));
    }
    out
}

fn seq(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_node_carries_another_nodes_runs_and_resumes_on_it() {
    let schema = Schema::new("resume");
    let b = Node::<Jobs>::start(&schema).await;
    let a = Node::<Watcher>::start(&schema).await;
    let http = reqwest::Client::new();

    let mut on_a = SseReader::open(&http, &a.url("/runs/subscribe"), None).await;
    assert_eq!(on_a.status, 200);
    let run = trigger(&http, &b.url("/trigger"), "import", json!({ "rows": 3 })).await;
    let from_a = run_events(&mut on_a, &run).await;
    let types: Vec<&str> = from_a
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap())
        .collect();
    for expected in [
        "run:trigger",
        "run:leased",
        "step:start",
        "step:complete",
        "run:progress",
        "log:write",
        "run:complete",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let seqs: Vec<u64> = from_a.iter().map(|(id, _)| seq(id)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The client loses node A after the third event and reconnects to node B with its id.
    let (resume_at, _) = &from_a[2];
    let mut on_b = SseReader::open(&http, &b.url("/runs/subscribe"), Some(resume_at)).await;
    assert_eq!(on_b.status, 200);
    let mut from_b = Vec::new();
    while from_b.len() < from_a.len() - 3 {
        let (id, data) = on_b.event().await.expect("an open stream");
        from_b.push((id.expect("an id"), data));
    }
    // The same ids and the same data: nothing lost, nothing twice.
    assert_eq!(from_b, from_a[3..].to_vec());

    // A node that joins later fills its memory from the table: it resumes the same position.
    let c = Node::<Watcher>::start(&schema).await;
    let mut on_c = SseReader::open(&http, &c.url("/runs/subscribe"), Some(resume_at)).await;
    let mut from_c = Vec::new();
    while from_c.len() < from_a.len() - 3 {
        let (id, data) = on_c.event().await.expect("an open stream");
        from_c.push((id.expect("an id"), data));
    }
    assert_eq!(from_c, from_a[3..].to_vec());
    c.feed.stop().await;
    c.engine.shutdown().await.unwrap();
    c.server.abort();

    // Later events arrive on both, under the same ids.
    let second = trigger(&http, &b.url("/trigger"), "import", json!({ "rows": 1 })).await;
    let later_a = run_events(&mut on_a, &second).await;
    let later_b = run_events(&mut on_b, &second).await;
    assert_eq!(later_a, later_b);
    assert!(seq(&later_a[0].0) > seq(&from_a.last().unwrap().0));

    a.feed.stop().await;
    b.feed.stop().await;
    a.engine.shutdown().await.unwrap();
    b.engine.shutdown().await.unwrap();
    a.server.abort();
    b.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_exactly_as_the_engine_built_them() {
    let schema = Schema::new("lossless");
    let b = Node::<Jobs>::start(&schema).await;
    let a = Node::<Watcher>::start(&schema).await;
    let http = reqwest::Client::new();
    let mut sub = a.feed.subscribe(None);
    let mut local = b.engine.events();
    // What JSON text may lose on a careless trip: big integers, floats, escapes, non-ASCII.
    let input = json!({
        "big": u64::MAX, "negative": i64::MIN, "float": 0.1, "tiny": 5e-324,
        "text": "nul \u{0} tab \t quote \" é 😀", "nested": { "z": [1, 2.5, null, true], "a": {} },
    });
    let run = trigger(&http, &b.url("/trigger"), "gated", input.clone()).await;
    // A permit the gate's next wait takes.
    b.app.gate.notify_one();
    let mut expected = Vec::new();
    while !expected.iter().any(|e: &Value| e["type"] == "run:complete") {
        let event = tokio::time::timeout(Duration::from_secs(10), local.next())
            .await
            .expect("an event within 10 s")
            .expect("an engine");
        if event.as_run().is_some_and(|r| r.run_id == run) {
            expected.push(event.to_json());
        }
    }
    assert_eq!(expected[0]["type"], "run:trigger");
    assert_eq!(expected[0]["input"], input);
    let mut crossed = Vec::new();
    while crossed.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), sub.live.recv())
            .await
            .expect("an event within 10 s")
            .unwrap();
        if event.item.run_id() == Some(run.as_str()) {
            crossed.push(event.item.json().clone());
        }
    }
    assert_eq!(crossed, expected);
    a.feed.stop().await;
    b.feed.stop().await;
    a.engine.shutdown().await.unwrap();
    b.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_every_live_node_with_its_leases_and_drops_a_lapsed_one() {
    let schema = Schema::new("nodes");
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let b = Node::<Jobs>::start(&schema).await;
    let a = Node::<Watcher>::start(&schema).await;
    let http = reqwest::Client::new();

    // A run held at its gate on B.
    let run = trigger(&http, &b.url("/trigger"), "gated", json!({})).await;
    let mut events = b.engine.client().runs().events();
    let leased = b
        .engine
        .client()
        .runs()
        .get_run(&run)
        .await
        .unwrap()
        .unwrap();
    if leased.status == durable_jobs::steps::RunStatus::Pending {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = events.next().await {
                if e.run_id == run && e.type_name() == "run:leased" {
                    return;
                }
            }
        })
        .await
        .expect("the run is leased");
    }
    let nodes = get(&http, &a.url("/nodes")).await;
    assert_eq!(nodes["shared"], true);
    let listed = nodes["nodes"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{nodes}");
    assert!(ids.contains(&a.engine.lease_owner()) && ids.contains(&b.engine.lease_owner()));
    let node = |id: &str| listed.iter().find(|n| n["id"] == id).unwrap().clone();
    let (node_a, node_b) = (node(a.engine.lease_owner()), node(b.engine.lease_owner()));
    assert_eq!(
        (node_a["self"].clone(), node_b["self"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(node_b["leasedRuns"], 1, "{node_b}");
    assert_eq!(node_a["leasedRuns"], 0, "{node_a}");
    assert_eq!(node_b["pid"], std::process::id());
    assert!(node_b["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(node_b["lastSeen"].as_str().unwrap() >= node_b["startedAt"].as_str().unwrap());
    assert_eq!(nodes["otherHolders"], json!([]));

    // A third node whose process dies: its tasks stop with its last handle, its row stays
    // until its heartbeat lapses.
    let c_engine = Engine::<Watcher>::builder()
        .postgres_options(PostgresOptions::new(pg_url()).schema(&schema.name))
        .app(Arc::new(App::default()))
        .start()
        .await
        .unwrap();
    let c_feed = SharedFeed::start(&c_engine, feed_options(&schema))
        .await
        .unwrap();
    let c_id = c_feed.node_id().to_owned();
    let listed_ids = |nodes: &Value| -> Vec<String> {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(listed_ids(&get(&http, &a.url("/nodes")).await).contains(&c_id));
    drop(c_feed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids = listed_ids(&get(&http, &b.url("/nodes")).await);
        if !ids.contains(&c_id) {
            assert_eq!(ids.len(), 2, "{ids:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node C is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node whose engine shut down leaves, even while its feed is still held.
    let d_engine = Engine::<Watcher>::builder()
        .postgres_options(PostgresOptions::new(pg_url()).schema(&schema.name))
        .app(Arc::new(App::default()))
        .start()
        .await
        .unwrap();
    let d_feed = SharedFeed::start(&d_engine, feed_options(&schema))
        .await
        .unwrap();
    let d_id = d_feed.node_id().to_owned();
    assert!(listed_ids(&get(&http, &b.url("/nodes")).await).contains(&d_id));
    d_engine.shutdown().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{}\".http_nodes WHERE id = $1",
            schema.name
        ))
        .bind(&d_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if rows == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node D's row stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(d_feed);

    // A node that stops leaves at once.
    a.feed.stop().await;
    let ids = listed_ids(&get(&http, &b.url("/nodes")).await);
    assert_eq!(ids, vec![b.engine.lease_owner().to_owned()]);

    b.app.gate.notify_one();
    b.feed.stop().await;
    c_engine.shutdown().await.unwrap();
    a.engine.shutdown().await.unwrap();
    b.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_keeps_a_bounded_tail_and_a_pruned_position_starts_afresh() {
    let schema = Schema::new("prune");
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let app = Arc::new(App::default());
    let engine = Engine::<Jobs>::builder()
        .postgres_options(PostgresOptions::new(pg_url()).schema(&schema.name))
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let feed = SharedFeed::start(&engine, feed_options(&schema).keep(4))
        .await
        .unwrap();
    let mut sub = feed.subscribe(None);
    let (run, _) = engine
        .client()
        .runs()
        .trigger("import", json!({ "rows": 3 }), Default::default())
        .await
        .unwrap();
    let run = run.id;
    let mut first = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), sub.live.recv())
            .await
            .expect("an event within 10 s")
            .unwrap();
        first.get_or_insert(event.seq);
        if event.item.run_id() == Some(run.as_str()) && event.item.type_name() == "run:complete" {
            break;
        }
    }
    let first = first.unwrap();
    let count = format!("SELECT count(*) FROM \"{}\".http_feed", schema.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows: i64 = sqlx::query_scalar(&count).fetch_one(&pool).await.unwrap();
        if rows <= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} rows are kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A node that joins now cannot resume from the first event: it says so, and replays
    // nothing rather than a part.
    let late = SharedFeed::start(&engine, feed_options(&schema))
        .await
        .unwrap();
    let epoch = late.subscribe(None).head.epoch;
    let old = durable_jobs_http::sse::feed::Position {
        epoch: epoch.clone(),
        seq: first,
    };
    let resumed = late.subscribe(Some(&old));
    assert!(!resumed.resumed && resumed.replay.is_empty());
    // ... while a position it holds resumes.
    let recent = late.subscribe(None).head;
    assert!(late.subscribe(Some(&recent)).resumed);
    late.stop().await;
    feed.stop().await;
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_reach_every_node_each_once_in_seq_order() {
    let schema = Schema::new("order");
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let b1 = Node::<Jobs>::start(&schema).await;
    let b2 = Node::<Jobs>::start(&schema).await;
    let a = Node::<Watcher>::start(&schema).await;
    // Read as they come (the feed's channel holds 1,024 events for a slow reader).
    let mut sub = a.feed.subscribe(None);
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Ok(event) = sub.live.recv().await {
                received
                    .lock()
                    .unwrap()
                    .push(i64::try_from(event.seq).unwrap());
            }
        })
    };
    // Both producers append at once, many times over.
    let runs = |engine: Engine<Jobs>| async move {
        let client = engine.client();
        let mut ids = Vec::new();
        for _ in 0..40 {
            let (run, _) = client
                .runs()
                .trigger("import", json!({ "rows": 2 }), Default::default())
                .await
                .unwrap();
            ids.push(run.id);
        }
        for id in &ids {
            client
                .runs()
                .wait_for_run(id, Some(Duration::from_secs(30)))
                .await
                .unwrap();
        }
    };
    tokio::join!(runs(b1.engine.clone()), runs(b2.engine.clone()));
    b1.feed.stop().await;
    b2.feed.stop().await;
    let table: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT seq FROM \"{}\".http_feed ORDER BY seq",
        schema.name
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(table.len() > 600, "{} events", table.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < table.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*received.lock().unwrap(), table);
    reader.abort();
    a.feed.stop().await;
    for engine in [b1.engine, b2.engine] {
        engine.shutdown().await.unwrap();
    }
    a.engine.shutdown().await.unwrap();
}
