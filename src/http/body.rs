//! Request bodies: JSON, bounded before anything is buffered.
//!
//! A declared `Content-Length` over the limit is refused without reading a
//! byte; a chunked body is read only up to the limit. Refusals are the API's
//! JSON errors (413 too large, 422 not the expected JSON).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest body the API's write endpoints read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body; `None` when the request has no body (or only whitespace).
pub struct JsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::too_large(MAX_BODY_BYTES)
            }
            other => ApiError::bad_request(format!("cannot read the request body: {other}")),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|e| ApiError::invalid_body(format!("the body is not the JSON this endpoint takes: {e}")))
    }
}
