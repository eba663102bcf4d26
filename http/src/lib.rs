//! An HTTP API, live event streams and an operator dashboard for a
//! [durable-jobs](durable_jobs) engine, as an [`axum::Router`] to mount under any path.
//!
//! - **`@coji/durably` 0.15's routes, byte for byte**: `POST /trigger`, `GET /runs`, `GET
//!   /run`, `GET /steps`, `POST /retrigger`, `POST /cancel`, `DELETE /run`, `GET /subscribe`,
//!   `GET /runs/subscribe`, with its payloads (`ClientRun`), error bodies (`{"error": ...}`),
//!   status codes and auth hooks, so the React hooks of `@coji/durably-react` work against
//!   this server unchanged.
//! - **Beyond it**: `GET /logs`, `GET /jobs` (the registry), the instances of continuous,
//!   debounce and task jobs (`GET /instances` with filters and keyset pages, `GET /instance`
//!   with its state, and `POST /instance/{start,event,trigger,flush,clear,terminate}`),
//!   `GET /events/subscribe` (the eight job events), `POST /runs/bulk` (cancel, retrigger or
//!   delete by filter, with a dry run), `GET /stats`, `GET /health`, `GET /nodes`, `GET
//!   /openapi.json` and the dashboard under `/dashboard/`.
//! - **Several processes on PostgreSQL** (feature `postgres`): `postgres::SharedFeed` makes
//!   every stream carry the events of every process on the store and resume on any of them,
//!   and lists the processes (`GET /nodes`, the dashboard's Nodes view).
//! - **Streams** carry an `id:` per event and resume after a reconnect from `Last-Event-ID`
//!   without losing events; idle streams get a `: ping` every 15 s; `run:progress` is
//!   throttled per run as `@coji/durably` does (100 ms).
//! - **Auth** is an async [`HttpAuth`] with durably's hooks, a [`Role`] (read-only or
//!   operator) and an audit hook. Without one, every route that changes something answers 403
//!   unless [`Api::allow_unauthenticated_writes`] says otherwise.
//! - **Bad requests** (unknown job, wrong JSON, a body over the limit, bad ids, bad paging)
//!   get 400, 404, 409 or 413 with a JSON error, never a 500.
//!
//! # Mounting it
//!
//! ```no_run
//! # use durable_jobs::Engine;
//! # async fn serve<R: durable_jobs::Registry>(engine: Engine<R>) -> std::io::Result<()> {
//! use durable_jobs_http::{Api, BearerTokens};
//!
//! let api = Api::new(&engine).auth(BearerTokens::new().operator("s3cret"));
//! let app = axum::Router::new().nest("/jobs-api", api.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! The dashboard is then at `/jobs-api/dashboard/`, and `@coji/durably-react` hooks take
//! `api: "/jobs-api"`.
//!
//! # Status codes
//!
//! | status | when |
//! |---|---|
//! | 200 | done; SSE streams too |
//! | 400 | a missing or invalid parameter or body field, a body that is not JSON, an input or key the engine refuses |
//! | 401 | the auth refused the caller (the auth's own response) |
//! | 403 | a read-only caller, or no auth configured, on a route that changes something |
//! | 404 | an unknown route (`Not Found`, as text), job, run or instance |
//! | 409 | the run or instance is not in a state that allows the action (cancel a completed run, delete a pending one, a concurrency-key conflict, a duplicate event id) |
//! | 413 | a body over the limit (1 MiB by default) |
//! | 422 | the job's own code failed during an instance action (`trigger`, `flush`, `send`, ...) |
//! | 503 | the engine is shutting down; `/health` when the store does not answer |
//! | 500 | the store failed |

mod auth;
mod body;
mod dashboard;
mod error;
pub mod nodes;
#[cfg(feature = "postgres")]
pub mod postgres;
mod query;
mod routes;
pub mod sse;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Router;
use durable_jobs::{Client, Engine, Registry};
use tokio::sync::watch;

pub use auth::{
    AuditRecord, BearerTokens, HttpAuth, NoAuth, Role, RunOperation, SubscribeFilter, TOKEN_COOKIE,
};
pub use error::ApiError;
pub use wire::TriggerRequest;

/// The repository's README.md, whose Rust examples are compiled (and run, unless marked
/// `no_run`) as this crate's doctests: it shows the engine and this API together, and this
/// crate depends on both.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

/// docs/http.md, whose Rust examples (joining the shared feed on PostgreSQL) are compiled as
/// this crate's doctests.
#[cfg(all(doctest, feature = "postgres"))]
#[doc = include_str!("../../docs/http.md")]
pub struct HttpGuideExamples;

use crate::sse::feed::{EventFeed, LocalFeed};

/// Renders metrics for `GET /metrics` (Prometheus text), when the application has them.
pub trait MetricsSource: Send + Sync + 'static {
    /// The metrics, in the Prometheus text format.
    fn render(&self) -> String;
}

/// The API of one engine; [`router`](Self::router) turns it into routes.
pub struct Api<R: Registry, A: HttpAuth = NoAuth> {
    client: Client<R>,
    feed: Arc<dyn EventFeed>,
    auth: A,
    auth_configured: bool,
    allow_unauthenticated_writes: bool,
    body_limit: usize,
    throttle: Duration,
    keep_alive: Duration,
    metrics: Option<Arc<dyn MetricsSource>>,
    shutdown: watch::Sender<bool>,
}

impl<R: Registry> Api<R, NoAuth> {
    /// The API of `engine`: reads only, until an auth is configured.
    pub fn new(engine: &Engine<R>) -> Self {
        let client = engine.client();
        let events = engine.clone();
        let feed = LocalFeed::new(move || events.events(), 10_000, Duration::from_secs(60));
        Api {
            client,
            feed: Arc::new(feed),
            auth: NoAuth,
            auth_configured: false,
            allow_unauthenticated_writes: false,
            body_limit: 1024 * 1024,
            throttle: Duration::from_millis(100),
            keep_alive: Duration::from_secs(15),
            metrics: None,
            shutdown: watch::channel(false).0,
        }
    }

    /// Lets anonymous callers change things (trigger, cancel, instance and bulk actions). For
    /// a service bound to localhost during development only.
    pub fn allow_unauthenticated_writes(mut self) -> Self {
        self.allow_unauthenticated_writes = true;
        self
    }
}

impl<R: Registry, A: HttpAuth> Api<R, A> {
    /// Authenticates and authorises requests with `auth`.
    pub fn auth<B: HttpAuth>(self, auth: B) -> Api<R, B> {
        Api {
            client: self.client,
            feed: self.feed,
            auth,
            auth_configured: true,
            allow_unauthenticated_writes: false,
            body_limit: self.body_limit,
            throttle: self.throttle,
            keep_alive: self.keep_alive,
            metrics: self.metrics,
            shutdown: self.shutdown,
        }
    }

    /// The largest request body accepted, in bytes (default 1 MiB); larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The `run:progress` throttle per run and stream (default 100 ms, as `@coji/durably`'s
    /// `sseThrottleMs`); zero sends every progress event.
    pub fn progress_throttle(mut self, window: Duration) -> Self {
        self.throttle = window;
        self
    }

    /// How often an idle stream gets a `: ping` comment (default 15 s).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// Where the streams get their events (default: this process's engine, through a
    /// [`LocalFeed`]).
    pub fn feed(mut self, feed: impl EventFeed) -> Self {
        self.feed = Arc::new(feed);
        self
    }

    /// Serves `GET /metrics` from `source`.
    pub fn metrics(mut self, source: impl MetricsSource) -> Self {
        self.metrics = Some(Arc::new(source));
        self
    }

    /// A handle that ends every open stream, for a graceful shutdown (servers wait for open
    /// responses, and a stream never ends by itself).
    pub fn closer(&self) -> StreamCloser {
        StreamCloser(self.shutdown.clone())
    }

    /// Every route: durably's, the extensions, the dashboard and the OpenAPI description.
    pub fn router(self) -> Router {
        routes::router(self.shared(), true)
    }

    /// `@coji/durably`'s routes only, for an application that serves its own users through
    /// the React hooks and keeps the operator routes elsewhere.
    pub fn durably_router(self) -> Router {
        routes::router(self.shared(), false)
    }

    fn shared(self) -> Arc<Shared<R, A>> {
        Arc::new(Shared {
            client: self.client,
            feed: self.feed,
            auth: self.auth,
            writes_allowed: self.auth_configured || self.allow_unauthenticated_writes,
            body_limit: self.body_limit,
            throttle: self.throttle,
            keep_alive: self.keep_alive,
            metrics: self.metrics,
            shutdown: self.shutdown,
        })
    }
}

/// Ends the open streams of an [`Api`]; see [`Api::closer`].
#[derive(Clone, Debug)]
pub struct StreamCloser(watch::Sender<bool>);

impl StreamCloser {
    /// Ends every open stream; new ones end at once.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

/// What every handler shares.
pub(crate) struct Shared<R: Registry, A: HttpAuth> {
    pub(crate) client: Client<R>,
    pub(crate) feed: Arc<dyn EventFeed>,
    pub(crate) auth: A,
    pub(crate) writes_allowed: bool,
    pub(crate) body_limit: usize,
    pub(crate) throttle: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) metrics: Option<Arc<dyn MetricsSource>>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl<R: Registry, A: HttpAuth> Shared<R, A> {
    pub(crate) fn body_limit_layer(&self) -> DefaultBodyLimit {
        DefaultBodyLimit::max(self.body_limit)
    }

    pub(crate) fn stream_options(&self, close_after_terminal: bool) -> sse::StreamOptions {
        sse::StreamOptions {
            throttle: self.throttle,
            keep_alive: self.keep_alive,
            close_after_terminal,
            shutdown: self.shutdown.subscribe(),
        }
    }
}

/// An authenticated caller.
pub(crate) struct Caller<C> {
    pub(crate) ctx: C,
    pub(crate) role: Role,
}

impl<R: Registry, A: HttpAuth> FromRequestParts<Arc<Shared<R, A>>> for Caller<A::Context> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared<R, A>>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = state.auth.authenticate(parts).await?;
        let role = state.auth.role(&ctx);
        Ok(Caller { ctx, role })
    }
}

impl<C> Caller<C> {
    /// Refuses a caller that may not change anything.
    pub(crate) fn may_write<R: Registry, A: HttpAuth>(
        &self,
        shared: &Shared<R, A>,
    ) -> Result<(), ApiError> {
        if !shared.writes_allowed {
            return Err(ApiError::forbidden(
                "This API changes nothing until an auth is configured (Api::auth), or \
                 Api::allow_unauthenticated_writes is set for local use",
            ));
        }
        if self.role != Role::Operator {
            return Err(ApiError::forbidden("This action needs the operator role"));
        }
        Ok(())
    }
}
