//! Every refusal the API makes, as one JSON shape:
//! `{"error": {"code": "...", "message": "..."}}` with the matching status.
//!
//! Codes are a stable contract (clients branch on them); messages are for
//! people. Internal failures get a generic message: their detail goes to the
//! log only, where an operator can read it and a caller cannot.

use axum::extract::rejection::PathRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use tollgate_app::controller::ControllerError;
use tollgate_store::StoreError;

/// An API error: the status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// A body that did not arrive whole within `after`.
    pub fn body_timeout(after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {}s", after.as_secs()),
        )
    }

    /// A body that arrived slower than `rate` bytes per second.
    pub fn body_too_slow(rate: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            format!("the request body arrived slower than {rate} bytes per second"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn not_leader() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "this replica is not the leader and does not act; send writes to the leader",
        )
    }

    /// A failure the caller cannot fix; `detail` is logged, never returned.
    pub fn internal(detail: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(detail), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the controller's log has the detail",
        )
    }

    /// The JSON body, for callers that build their own response.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // Store busy or failing over, not the leader: worth another try soon.
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            // The rest of the body is not read: the connection cannot carry
            // another request.
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        match &e {
            ControllerError::NotFound(id) => ApiError::not_found(format!("promotion {id} does not exist")),
            ControllerError::NotLive { .. } => ApiError::new(StatusCode::CONFLICT, "not_live", e.to_string()),
            _ if e.is_transient() => {
                tracing::warn!(error = %chain(&e), "request failed, transient");
                ApiError::unavailable("the store or the git source is unavailable; retry later")
            }
            _ => ApiError::internal(&e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %chain(&e), "request failed, transient");
            ApiError::unavailable("the store is unavailable; retry later")
        } else {
            ApiError::internal(&e)
        }
    }
}

/// A path that does not decode (a percent-escape that is not UTF-8, a
/// segment of the wrong type): axum's own answer would be text/plain.
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(format!("the path does not decode: {}", e.body_text()))
    }
}

pub use tollgate_core::errors::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_errors_map_to_statuses() {
        let e: ApiError = ControllerError::NotFound(7).into();
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "not_found"));
        let e: ApiError = ControllerError::NotLive {
            id: 7,
            phase: "complete".into(),
            action: "a halt",
        }
        .into();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "not_live"));
        assert!(e.message.contains("complete"), "{}", e.message);
        let busy = StoreError::Timeout {
            backend: tollgate_store::Backend::Sqlite,
            op: "commit",
            after: Default::default(),
        };
        let e: ApiError = ControllerError::Store(busy).into();
        assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        let e: ApiError = ControllerError::Join("secret detail".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert!(!e.message.contains("secret detail"), "detail stays in the log");
    }
}
