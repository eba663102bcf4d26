//! Errors as the API answers them: a status code and `{"error": "<message>"}`, the shape of
//! `@coji/durably`'s handler, for every route and every failure, including bodies that are too
//! large or not JSON. Nothing a client sends ends in a panic.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::Error;

/// A failed request: its status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The error of an engine call: a missing job or instance is 404, a state that refuses
    /// the action 409, invalid input 400, a job's own failure 422, a timeout 504, an engine
    /// shutting down 503, a storage failure 500.
    pub fn from_engine(e: &Error) -> Self {
        let status = match e {
            Error::JobNotFound { .. } | Error::InstanceNotFound { .. } => StatusCode::NOT_FOUND,
            Error::InvalidState { .. } | Error::DuplicateEvent { .. } => StatusCode::CONFLICT,
            Error::Validation { .. } => StatusCode::BAD_REQUEST,
            Error::Execution { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Scheduler { .. } | Error::ShutDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed in the store");
        }
        let message = match e {
            Error::JobNotFound { name } => format!("Job not found: {name}"),
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from_engine(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// The result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
