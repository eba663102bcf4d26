//! Calls to the HTTP API, and how their failures become exit codes.

use std::fmt;
use std::process::ExitCode;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// Why a command failed, with its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server could not be reached (exit 3).
    Unreachable(String),
    /// The server answered an error (exit 1, or 4 for 404, 5 for 401 and 403, 6 for 409).
    Api { status: StatusCode, message: String },
    /// Something else: a bad argument, an answer that is not what the API sends (exit 1).
    Other(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Unreachable(_) => 3,
            Failure::Api { status, .. } => match status.as_u16() {
                404 => 4,
                401 | 403 => 5,
                409 => 6,
                _ => 1,
            },
            Failure::Other(_) => 1,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "cannot reach the server: {why}"),
            Failure::Api { status, message } => write!(f, "{} {message}", status.as_u16()),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// The API at `base`, with an optional bearer token.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub(crate) fn new(base: &str, token: Option<String>) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
    ) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends a request and reads its JSON answer.
    pub(crate) async fn call(&self, req: RequestBuilder) -> Result<Value, Failure> {
        let res = req
            .send()
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let message = json
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .map(str::to_owned)
                .unwrap_or(text);
            return Err(Failure::Api { status, message });
        }
        json.ok_or_else(|| {
            Failure::Other(format!(
                "the server answered something that is not JSON: {text}"
            ))
        })
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        self.call(self.request(Method::GET, path, query)).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut req = self.request(Method::POST, path, query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.call(req).await
    }

    pub(crate) async fn delete(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, Failure> {
        self.call(self.request(Method::DELETE, path, query)).await
    }
}
