//! Who may call the API, and what they may do: `@coji/durably`'s five auth hooks as an async
//! trait, a read-only or operator role per caller, and an audit hook that sees every action.
//!
//! Without an [`HttpAuth`] the API answers reads and refuses every route that changes
//! something (403), unless the application opts out with
//! [`Api::allow_unauthenticated_writes`](crate::Api::allow_unauthenticated_writes), for a
//! service bound to localhost during development.

use std::future::Future;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use durable_jobs::steps::{Run, RunFilter};
use serde::{Deserialize, Serialize};

use crate::wire::TriggerRequest;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Read runs, instances, jobs and streams; change nothing.
    ReadOnly,
    /// Everything: trigger, cancel, retrigger, delete, instance actions, bulk actions.
    Operator,
}

/// The run-level operations `on_run_access` is asked about, as `@coji/durably` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunOperation {
    /// `GET /run`.
    Read,
    /// `GET /subscribe`.
    Subscribe,
    /// `GET /steps` (and `GET /logs`).
    Steps,
    /// `POST /retrigger`, and bulk retrigger.
    Retrigger,
    /// `POST /cancel`, and bulk cancel.
    Cancel,
    /// `DELETE /run`, and bulk delete.
    Delete,
}

impl RunOperation {
    /// `read`, `subscribe`, `steps`, `retrigger`, `cancel` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOperation::Read => "read",
            RunOperation::Subscribe => "subscribe",
            RunOperation::Steps => "steps",
            RunOperation::Retrigger => "retrigger",
            RunOperation::Cancel => "cancel",
            RunOperation::Delete => "delete",
        }
    }
}

/// The filter of `GET /runs/subscribe`: only job names and labels, as in `@coji/durably`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeFilter {
    /// Any of these jobs (all when empty).
    pub job_names: Vec<String>,
    /// All of these labels.
    pub labels: durable_jobs::steps::Labels,
}

/// One action taken through the API, as the audit hook sees it after it ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AuditRecord {
    /// What was asked: `run.trigger`, `run.cancel`, `run.retrigger`, `run.delete`,
    /// `runs.bulk.<action>`, `instance.start`, `instance.event`, `instance.trigger`,
    /// `instance.flush`, `instance.clear`, `instance.terminate`.
    pub action: String,
    /// What it was asked of: a run id, a job name, `kind:job:id`, or a bulk filter.
    pub target: String,
    /// The status code answered.
    pub status: u16,
    /// The error message, when it failed.
    pub error: Option<String>,
}

/// How requests are authenticated and authorised: `@coji/durably`'s `auth` hooks, async, plus
/// a [`Role`] per caller and an audit hook.
///
/// Every request but the dashboard's static files, `GET /openapi.json` and `GET /health` is
/// authenticated first; a rejection is answered as it is. A [`Role::ReadOnly`] caller gets 403
/// on every route that changes something. The other hooks are called as in `@coji/durably`:
/// `on_trigger` after the body was validated and the job found, `on_run_access` with the run
/// already read (404 first when there is none), `scope_runs` on every run listing and
/// `scope_runs_subscribe` (by default `scope_runs`) on the all-runs stream. Every hook but
/// `authenticate` has a default that allows everything.
///
/// # Examples
///
/// A service whose end users see and trigger only their own runs, labelled with their
/// organisation:
///
/// ```
/// use axum::http::request::Parts;
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Response};
/// use durable_jobs::steps::{Run, RunFilter};
/// use durable_jobs_http::{HttpAuth, Role, RunOperation, TriggerRequest};
///
/// struct OrgAuth;
///
/// impl HttpAuth for OrgAuth {
///     type Context = String; // the organisation
///
///     async fn authenticate(&self, parts: &Parts) -> Result<String, Response> {
///         parts
///             .headers
///             .get("x-org")
///             .and_then(|v| v.to_str().ok())
///             .map(str::to_owned)
///             .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
///     }
///
///     fn role(&self, _org: &String) -> Role {
///         Role::Operator
///     }
///
///     async fn on_trigger(&self, org: &String, t: &TriggerRequest) -> Result<(), Response> {
///         match t.labels.get("org") {
///             Some(o) if o == org => Ok(()),
///             _ => Err(StatusCode::FORBIDDEN.into_response()),
///         }
///     }
///
///     async fn on_run_access(&self, org: &String, run: &Run, _: RunOperation) -> Result<(), Response> {
///         match run.labels.get("org") {
///             Some(o) if o == org => Ok(()),
///             _ => Err(StatusCode::NOT_FOUND.into_response()),
///         }
///     }
///
///     async fn scope_runs(&self, org: &String, filter: RunFilter) -> RunFilter {
///         filter.label("org", org.clone())
///     }
/// }
/// ```
pub trait HttpAuth: Send + Sync + 'static {
    /// What `authenticate` learns about the caller, handed to every other hook.
    type Context: Send + Sync + 'static;

    /// Authenticates a request from its head (method, URI, headers). An `Err` is sent back as
    /// it is (typically 401).
    fn authenticate(
        &self,
        parts: &Parts,
    ) -> impl Future<Output = Result<Self::Context, Response>> + Send;

    /// The caller's role. The default is [`Role::Operator`].
    fn role(&self, ctx: &Self::Context) -> Role {
        let _ = ctx;
        Role::Operator
    }

    /// Checks a trigger before it is made.
    fn on_trigger(
        &self,
        ctx: &Self::Context,
        trigger: &TriggerRequest,
    ) -> impl Future<Output = Result<(), Response>> + Send {
        let _ = (ctx, trigger);
        async { Ok(()) }
    }

    /// Checks an operation on one run, read before the check.
    fn on_run_access(
        &self,
        ctx: &Self::Context,
        run: &Run,
        operation: RunOperation,
    ) -> impl Future<Output = Result<(), Response>> + Send {
        let _ = (ctx, run, operation);
        async { Ok(()) }
    }

    /// Narrows a run listing (and the runs a bulk action may touch).
    fn scope_runs(
        &self,
        ctx: &Self::Context,
        filter: RunFilter,
    ) -> impl Future<Output = RunFilter> + Send {
        let _ = ctx;
        async { filter }
    }

    /// Narrows the all-runs stream. The default applies [`scope_runs`](Self::scope_runs) to
    /// the stream's job names and labels.
    fn scope_runs_subscribe(
        &self,
        ctx: &Self::Context,
        filter: SubscribeFilter,
    ) -> impl Future<Output = SubscribeFilter> + Send {
        async move {
            let mut runs = RunFilter::new();
            runs.job_names = filter.job_names;
            runs.labels = filter.labels;
            let scoped = self.scope_runs(ctx, runs).await;
            SubscribeFilter {
                job_names: scoped.job_names,
                labels: scoped.labels,
            }
        }
    }

    /// Sees every action after it ran (or was refused by the engine), with its outcome. The
    /// API also logs each one with `tracing` (target `durable_jobs_http::audit`).
    fn on_action(
        &self,
        ctx: &Self::Context,
        record: &AuditRecord,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, record);
        async {}
    }
}

/// No authentication: every caller is anonymous. Reads are answered; routes that change
/// something are refused unless the API was built with
/// [`allow_unauthenticated_writes`](crate::Api::allow_unauthenticated_writes).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl HttpAuth for NoAuth {
    type Context = ();

    async fn authenticate(&self, _parts: &Parts) -> Result<(), Response> {
        Ok(())
    }
}

/// Bearer tokens, each with a role: `Authorization: Bearer <token>`, or the cookie
/// `durable_jobs_token=<token>` that the dashboard sets (a browser's `EventSource` cannot send
/// headers). An unknown or missing token is answered 401.
///
/// # Examples
///
/// ```
/// use durable_jobs_http::BearerTokens;
///
/// let auth = BearerTokens::new()
///     .operator(std::env::var("OPS_TOKEN").unwrap_or_else(|_| "change-me".into()))
///     .read_only("dashboard-viewer-token");
/// # let _ = auth;
/// ```
#[derive(Clone, Default)]
pub struct BearerTokens {
    tokens: Vec<(String, Role)>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The cookie the dashboard stores its token in.
pub const TOKEN_COOKIE: &str = "durable_jobs_token";

impl BearerTokens {
    /// No tokens yet: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` with the operator role. Empty tokens are ignored.
    pub fn operator(mut self, token: impl Into<String>) -> Self {
        self.add(token.into(), Role::Operator);
        self
    }

    /// Accepts `token` with the read-only role. Empty tokens are ignored.
    pub fn read_only(mut self, token: impl Into<String>) -> Self {
        self.add(token.into(), Role::ReadOnly);
        self
    }

    fn add(&mut self, token: String, role: Role) {
        if !token.is_empty() {
            self.tokens.push((token, role));
        }
    }

    fn presented(parts: &Parts) -> Option<String> {
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let value = auth.to_str().ok()?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))?;
            return Some(token.trim().to_owned());
        }
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == TOKEN_COOKIE).then(|| {
                    form_urlencoded::parse(format!("t={value}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                })
            })
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HttpAuth for BearerTokens {
    type Context = Role;

    async fn authenticate(&self, parts: &Parts) -> Result<Role, Response> {
        let presented = Self::presented(parts);
        let role = presented.as_deref().and_then(|p| {
            self.tokens
                .iter()
                .find(|(t, _)| same(t.as_bytes(), p.as_bytes()))
                .map(|(_, role)| *role)
        });
        role.ok_or_else(|| {
            let mut response = crate::error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: send Authorization: Bearer <token>",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        })
    }

    fn role(&self, role: &Role) -> Role {
        *role
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(header: Option<(&str, &str)>) -> Parts {
        let mut b = Request::builder().uri("/runs");
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn tokens_come_from_the_header_or_the_cookie() {
        let auth = BearerTokens::new()
            .operator("op")
            .read_only("ro")
            .operator("");
        let auth = &auth;
        let role = |p: Parts| async move { auth.authenticate(&p).await.ok() };
        assert_eq!(
            role(parts(Some(("authorization", "Bearer op")))).await,
            Some(Role::Operator)
        );
        assert_eq!(
            role(parts(Some(("cookie", "a=b; durable_jobs_token=ro")))).await,
            Some(Role::ReadOnly)
        );
        assert_eq!(
            role(parts(Some(("authorization", "Bearer nope")))).await,
            None
        );
        assert_eq!(role(parts(Some(("authorization", "Bearer ")))).await, None);
        assert_eq!(role(parts(None)).await, None);
        assert!(!same(b"op", b"o"));
    }
}
