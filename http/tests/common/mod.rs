//! A real server for the API tests: an engine on a SQLite file in a temporary folder, the
//! router mounted under `/api` on 127.0.0.1 with an ephemeral port, and helpers to call it and
//! read its event streams.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{StepError, StepOptions};
use durable_jobs::{Engine, Registry};
use durable_jobs_http::{Api, HttpAuth};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

/// The application the jobs share: a gate that holds `gated` runs until opened.
#[derive(Default)]
pub struct App {
    pub gate: Notify,
    pub flushed: AtomicU64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportInput {
    pub rows: u64,
    #[serde(default)]
    pub fail: bool,
}

/// Reports progress per row, logs, and fails when asked to.
#[durable_jobs::step_job(name = "import")]
pub async fn import(
    step: &mut StepContext,
    input: ImportInput,
    _app: &Arc<App>,
) -> Result<u64, StepError> {
    let rows = input.rows;
    step.info("starting");
    let read: u64 = step.run("read", |_| async move { Ok(rows) }).await?;
    for i in 1..=rows {
        step.progress((i, rows)).await;
    }
    step.run("write", |_| async move {
        if input.fail {
            Err::<(), _>("disk full".into())
        } else {
            Ok(())
        }
    })
    .await?;
    Ok(read)
}

/// Waits at its gate: a run that stays leased until the test opens the gate or cancels it.
#[durable_jobs::step_job(name = "gated")]
pub async fn gated(step: &mut StepContext, _input: Value, app: &Arc<App>) -> Result<(), StepError> {
    step.progress((0, 1)).await;
    step.run("wait", |scope| async move {
        tokio::select! {
            _ = app.gate.notified() => Ok(()),
            _ = scope.cancelled() => Err("cancelled".into()),
        }
    })
    .await
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    pub refreshed: u64,
    #[serde(default)]
    pub fail: bool,
}

/// Every 30 minutes; fails when its state says so.
#[durable_jobs::continuous(every = "30m")]
pub async fn refresher(
    ctx: &mut ContinuousContext<Tokens>,
    _app: &Arc<App>,
) -> Result<(), std::io::Error> {
    if ctx.state().fail {
        return Err(std::io::Error::other("token endpoint down"));
    }
    ctx.update_state(|t| t.refreshed += 1);
    Ok(())
}

/// Batches numbers for 5 s.
pub struct Batcher;

#[durable_jobs::debounce(flush_after = "5s", max_events = 100)]
impl DebounceJob<Arc<App>> for Batcher {
    type Event = i64;
    type State = Vec<i64>;
    type Error = std::io::Error;

    fn on_event(&self, batch: Option<Vec<i64>>, n: i64, _ctx: &EventContext) -> Vec<i64> {
        let mut batch = batch.unwrap_or_default();
        batch.push(n);
        batch
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<Vec<i64>>,
        app: &Arc<App>,
    ) -> Result<(), Self::Error> {
        app.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Order {
    pub total: i64,
}

/// Sums amounts and ships an hour later.
pub struct Orders;

#[durable_jobs::task]
impl TaskJob<Arc<App>> for Orders {
    type State = Order;
    type Event = i64;
    type Error = std::io::Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Order>,
        amount: i64,
        _app: &Arc<App>,
    ) -> Result<(), Self::Error> {
        let mut order = ctx.state().cloned().unwrap_or_default();
        order.total += amount;
        ctx.set_state(order);
        ctx.schedule_in(Duration::from_secs(3600));
        Ok(())
    }

    async fn execute(
        &self,
        _ctx: &mut TaskContext<Order>,
        _app: &Arc<App>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

durable_jobs::registry! {
    /// The test service's jobs.
    pub Jobs<Arc<App>> { Import, Gated, Refresher, Batcher, Orders }
}

pub struct Server {
    pub base: String,
    pub engine: Engine<Jobs>,
    pub app: Arc<App>,
    pub http: reqwest::Client,
    pub clock: durable_jobs::testing::TestClock,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

/// Starts an engine and serves `configure(Api::new(&engine))` under `/api`.
pub async fn serve<A: HttpAuth>(configure: impl FnOnce(Api<Jobs>) -> Api<Jobs, A>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(App::default());
    let clock = durable_jobs::testing::TestClock::new();
    let engine = Engine::<Jobs>::builder()
        .sqlite(dir.path().join("jobs.db"))
        .clock(clock.clone())
        .step_options(StepOptions::default().preserve_steps(true))
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let api = configure(Api::new(&engine));
    let router = axum::Router::new().nest("/api", api.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server {
        base,
        engine,
        app,
        http: reqwest::Client::new(),
        clock,
        _dir: dir,
        _server: server,
    }
}

/// A server whose anonymous callers may change things.
pub async fn open_server() -> Server {
    serve(|api| api.allow_unauthenticated_writes()).await
}

pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            json,
            text,
            content_type,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.http.post(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Triggers a run and returns its id.
    pub async fn trigger(&self, job: &str, input: Value) -> String {
        let r = self
            .post(
                "/trigger",
                serde_json::json!({ "jobName": job, "input": input }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["runId"].as_str().unwrap().to_owned()
    }

    /// Waits (at most 10 s) until the run ends.
    pub async fn wait(&self, run_id: &str) {
        let _ = self
            .engine
            .client()
            .runs()
            .wait_for_run(run_id, Some(Duration::from_secs(10)))
            .await;
    }

    /// Waits (at most 10 s) until the run is leased.
    pub async fn wait_leased(&self, run_id: &str) {
        self.wait_for(run_id, "run:leased").await;
    }

    /// Waits (at most 10 s) until the runtime emits event `kind` for the run, or has already
    /// emitted it as far as the stored run shows (leased: `run:leased`; a gated run's
    /// progress is stored before its `step:start`).
    pub async fn wait_for(&self, run_id: &str, kind: &str) {
        let runs = self.engine.client().runs();
        let mut events = runs.events();
        let run = runs.get_run(run_id).await.unwrap().unwrap();
        let already = match kind {
            "run:leased" => run.status != durable_jobs::steps::RunStatus::Pending,
            "step:start" => run.progress.is_some(),
            _ => false,
        };
        if already {
            return;
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = events.next().await {
                if e.run_id == run_id && e.type_name() == kind {
                    return;
                }
            }
        })
        .await
        .expect("the event came");
    }
}

/// One server-sent event, or a comment.
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event { id: Option<String>, data: Value },
    Comment(String),
}

/// Reads a `text/event-stream` response event by event.
pub struct SseReader {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> SseReader {
        Self::open_with(http, url, |req| match last_event_id {
            Some(id) => req.header("Last-Event-ID", id),
            None => req,
        })
        .await
    }

    pub async fn open_with(
        http: &reqwest::Client,
        url: &str,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> SseReader {
        let response = with(http.get(url)).send().await.unwrap();
        SseReader {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
        }
    }

    /// The next event or comment; `None` when the stream ended. Panics after 10 s.
    pub async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(10), self.next_inner())
            .await
            .expect("an event within 10 s")
    }

    async fn next_inner(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        return Some(Sse::Comment(c.trim().to_owned()));
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                return Some(Sse::Event {
                    id,
                    data: serde_json::from_str(&data).expect("JSON data"),
                });
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next event, skipping comments; `None` when the stream ended.
    pub async fn event(&mut self) -> Option<(Option<String>, Value)> {
        loop {
            match self.next().await? {
                Sse::Event { id, data } => return Some((id, data)),
                Sse::Comment(_) => continue,
            }
        }
    }
}

pub fn types(events: &[(Option<String>, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

pub fn registry_name<R: Registry>() -> &'static str {
    std::any::type_name::<R>()
}
