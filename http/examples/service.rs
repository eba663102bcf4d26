//! A small service with one job of each kind, its engine on a SQLite file and the HTTP API
//! with its dashboard mounted under `/api`: what the `durable-jobs` command line, the
//! dashboard's browser test and the OpenAPI fuzzing run against.
//!
//! ```sh
//! cargo run -p durable-jobs-http --example service -- --addr 127.0.0.1:8080 --token s3cret --seed
//! # then http://127.0.0.1:8080/api/dashboard/ and:
//! durable-jobs --url http://127.0.0.1:8080/api --token s3cret runs list
//! ```
//!
//! Options: `--addr ADDR` (default `127.0.0.1:8080`; port 0 picks one), `--db PATH` (default
//! a file in a temporary folder), `--token TOKEN` (operator token; also
//! `DURABLE_JOBS_TOKEN`), `--read-only-token TOKEN`, `--open` (no auth, writes allowed: local
//! use only), `--seed` (a few runs and instances to look at), `--page-dir DIR` (serves the
//! files of DIR under `/app/`, for a page that uses `@coji/durably-react`), `--postgres URL`
//! (the engine on PostgreSQL instead, joined to the store's shared feed: run several on one
//! schema and each serves every stream and lists the others), `--schema NAME` (default
//! `durable_jobs`), `--heartbeat-ms N` (the shared feed's heartbeat, default 5000; a node is
//! dropped four heartbeats after its last). It prints `listening on http://ADDR` once it
//! accepts requests, and stops gracefully on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use durable_jobs::postgres::PostgresOptions;
use durable_jobs::prelude::*;
use durable_jobs::steps::{StepError, StepOptions, TriggerOptions};
use durable_jobs::Engine;
use durable_jobs_http::postgres::{SharedFeed, SharedFeedOptions};
use durable_jobs_http::{Api, BearerTokens};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the jobs share: the files whose import already failed once (a failing import fails
/// once, as a flaky upstream would, and its retry succeeds).
#[derive(Default)]
pub struct App {
    failed_once: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What `import-csv` imports.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportInput {
    /// The file.
    pub file: String,
    /// Rows in it.
    pub rows: u64,
    /// Milliseconds per row (default 20).
    #[serde(default)]
    pub row_ms: Option<u64>,
    /// Fail at this row, the first time this file is imported.
    #[serde(default)]
    pub fail_at: Option<u64>,
}

/// What it returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportOutput {
    /// Rows imported.
    pub imported: u64,
}

/// Imports a CSV file row by row, reporting progress; cancellable between rows.
#[durable_jobs::step_job(name = "import-csv")]
pub async fn import_csv(
    step: &mut StepContext,
    input: ImportInput,
    app: &App,
) -> Result<ImportOutput, StepError> {
    let rows = input.rows.min(10_000);
    let row_ms = input.row_ms.unwrap_or(20).min(10_000);
    step.info(format!("importing {} ({rows} rows)", input.file));
    let header: String = step
        .run("read-header", |_| async { Ok("id,name,email".to_owned()) })
        .await?;
    for row in 1..=rows {
        let fails = input.fail_at == Some(row)
            && app
                .failed_once
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(input.file.clone());
        if fails {
            step.run("validate", |_| async move {
                Err::<(), _>(format!("row {row}: invalid email").into())
            })
            .await?;
        }
        step.run(&format!("row-{row}"), |scope| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(row_ms)) => Ok(()),
                _ = scope.cancelled() => Err("cancelled".into()),
            }
        })
        .await?;
        step.progress(
            durable_jobs::steps::Progress::new(row)
                .of(rows)
                .message(format!("row {row} of {rows}")),
        )
        .await;
    }
    step.info(format!("imported {rows} rows with columns {header}"));
    Ok(ImportOutput { imported: rows })
}

/// Tokens of one user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// Refreshes so far.
    #[serde(default)]
    pub refreshed: u64,
    /// Make refreshes fail (to see retries).
    #[serde(default)]
    pub broken: bool,
}

/// Refreshes a user's tokens every 30 minutes, retrying failures.
#[durable_jobs::continuous(every = "30m", retry(max_attempts = 5, backoff = exponential("10s", max = "5m")))]
pub async fn token_refresher(
    ctx: &mut ContinuousContext<Tokens>,
    _app: &App,
) -> Result<(), std::io::Error> {
    if ctx.state().broken {
        return Err(std::io::Error::other("the identity provider answered 503"));
    }
    ctx.update_state(|t| t.refreshed += 1);
    Ok(())
}

/// Sends the nightly report at 04:30 in Paris.
#[durable_jobs::continuous(cron = "30 4 * * *", tz = "Europe/Paris", start_immediately = false)]
pub async fn nightly_report(
    _ctx: &mut ContinuousContext<u64>,
    _app: &App,
) -> Result<(), std::io::Error> {
    Ok(())
}

/// Delivers a contact's webhooks in batches.
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "1m", quiet = "10s", max_events = 100)]
impl DebounceJob for WebhookBatcher {
    type Event = serde_json::Value;
    type State = Vec<serde_json::Value>;
    type Error = std::io::Error;

    fn on_event(
        &self,
        batch: Option<Self::State>,
        event: Self::Event,
        _ctx: &EventContext,
    ) -> Self::State {
        let mut batch = batch.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(&self, _ctx: &mut FlushContext<Self::State>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// An order's progress.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Order {
    /// Paid so far, in cents.
    pub paid: u64,
    /// Shipped yet.
    pub shipped: bool,
}

/// Ships an order an hour after it is paid.
pub struct OrderProcessor;

#[durable_jobs::task]
impl TaskJob for OrderProcessor {
    type State = Order;
    type Event = u64;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<Order>, cents: u64) -> Result<(), Self::Error> {
        let mut order = ctx.state().cloned().unwrap_or_default();
        order.paid += cents;
        ctx.set_state(order);
        ctx.schedule_in(Duration::from_secs(3600));
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<Order>) -> Result<(), Self::Error> {
        ctx.update_state(|o| o.shipped = true);
        Ok(())
    }
}

durable_jobs::registry! {
    /// The example service's jobs.
    pub Jobs<App> { ImportCsv, TokenRefresher, NightlyReport, WebhookBatcher, OrderProcessor }
}

struct Options {
    addr: String,
    db: Option<PathBuf>,
    token: Option<String>,
    read_only_token: Option<String>,
    open: bool,
    seed: bool,
    page_dir: Option<PathBuf>,
    postgres: Option<String>,
    schema: String,
    heartbeat: Duration,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:8080".into(),
        db: None,
        token: std::env::var("DURABLE_JOBS_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        read_only_token: None,
        open: false,
        seed: false,
        page_dir: None,
        postgres: None,
        schema: durable_jobs::postgres::DEFAULT_SCHEMA.to_owned(),
        heartbeat: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => o.addr = value()?,
            "--db" => o.db = Some(value()?.into()),
            "--token" => o.token = Some(value()?),
            "--read-only-token" => o.read_only_token = Some(value()?),
            "--page-dir" => o.page_dir = Some(value()?.into()),
            "--open" => o.open = true,
            "--seed" => o.seed = true,
            "--postgres" => o.postgres = Some(value()?),
            "--schema" => o.schema = value()?,
            "--heartbeat-ms" => {
                let ms = value()?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("--heartbeat-ms {ms}: not a number"))?;
                o.heartbeat = Duration::from_millis(ms.max(10));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// A few runs and instances, so the dashboard has something to show.
async fn seed(engine: &Engine<Jobs>) -> durable_jobs::Result<()> {
    let client = engine.client();
    let runs = client.runs();
    for (i, (rows, fail_at)) in [(20, None), (40, Some(7)), (10, None), (25, Some(3))]
        .into_iter()
        .enumerate()
    {
        let input = json!({"file": format!("contacts-{i}.csv"), "rows": rows, "rowMs": 5, "failAt": fail_at});
        runs.trigger(
            "import-csv",
            input,
            TriggerOptions::new().label("team", if i % 2 == 0 { "growth" } else { "billing" }),
        )
        .await?;
    }
    let refresher = client.continuous::<TokenRefresher>();
    refresher.start("user-1", Tokens::default()).await?;
    refresher.start("user-2", Tokens::default()).await?;
    let _ = refresher
        .start(
            "user-3",
            Tokens {
                refreshed: 0,
                broken: true,
            },
        )
        .await;
    client
        .continuous::<NightlyReport>()
        .start("all-customers", 0)
        .await?;
    let batcher = client.debounce::<WebhookBatcher>();
    batcher
        .add("contact-42", json!({"event": "contact.updated"}))
        .await?;
    batcher
        .add("contact-42", json!({"event": "contact.tagged"}))
        .await?;
    client
        .task::<OrderProcessor>()
        .send("order-1001", 4_200)
        .await?;
    Ok(())
}

async fn page(dir: Arc<PathBuf>, name: String) -> Response {
    let name = if name.is_empty() {
        "index.html".to_owned()
    } else {
        name
    };
    if name.contains("..") || name.starts_with('/') {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = dir.join(&name);
    let kind = match Path::new(&name).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css",
        _ => "application/octet-stream",
    };
    match std::fs::read(&path) {
        Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stopped() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options().map_err(|e| format!("{e}\nusage: service [--addr ADDR] [--db PATH] [--token T] [--read-only-token T] [--open] [--seed] [--page-dir DIR] [--postgres URL [--schema NAME] [--heartbeat-ms N]]"))?;
    let dir = tempfile::tempdir()?;
    let db = o.db.clone().unwrap_or_else(|| dir.path().join("jobs.db"));
    let builder = Engine::<Jobs>::builder();
    let builder = match &o.postgres {
        Some(url) => builder.postgres_options(PostgresOptions::new(url).schema(&o.schema)),
        None => builder.sqlite(&db),
    };
    let engine = builder
        .step_options(StepOptions::default().preserve_steps(true))
        .app(App::default())
        .start()
        .await?;
    let feed = match &o.postgres {
        Some(url) => {
            let options = SharedFeedOptions::new(url)
                .schema(&o.schema)
                .heartbeat(o.heartbeat)
                .node_lapse(o.heartbeat * 4);
            Some(SharedFeed::start(&engine, options).await?)
        }
        None => None,
    };
    if o.seed {
        seed(&engine).await?;
    }
    let mut api = Api::new(&engine);
    if let Some(feed) = &feed {
        api = api.feed(feed.clone());
    }
    let (router, closer) = if o.token.is_some() || o.read_only_token.is_some() {
        let mut tokens = BearerTokens::new();
        if let Some(t) = &o.token {
            tokens = tokens.operator(t.clone());
        }
        if let Some(t) = &o.read_only_token {
            tokens = tokens.read_only(t.clone());
        }
        let api = api.auth(tokens);
        let closer = api.closer();
        (api.router(), closer)
    } else if o.open {
        let api = api.allow_unauthenticated_writes();
        let closer = api.closer();
        (api.router(), closer)
    } else {
        let closer = api.closer();
        (api.router(), closer)
    };
    let mut app = axum::Router::new().nest("/api", router);
    if let Some(dir) = o.page_dir.clone() {
        let dir = Arc::new(dir);
        let d = dir.clone();
        app = app
            .route("/app/", get(move || page(d.clone(), String::new())))
            .route(
                "/app/{name}",
                get(move |UrlPath(name): UrlPath<String>| page(dir.clone(), name)),
            );
    }
    let listener = tokio::net::TcpListener::bind(&o.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stopped().await;
            closer.close();
        })
        .await?;
    if let Some(feed) = feed {
        feed.stop().await;
    }
    engine.shutdown().await?;
    Ok(())
}
