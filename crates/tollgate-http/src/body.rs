//! Request bodies: bounded in size and in time before anything is buffered.
//!
//! A declared `Content-Length` over the limit is refused without reading a
//! byte; a chunked body is read only up to the limit. A body must also keep
//! arriving: whole within `limits.body_timeout`, and, once it has taken
//! [`RATE_GRACE`], at an average of at least `limits.body_min_rate` bytes
//! per second (so a client cannot hold a request open a byte at a time).
//! Refusals are the API's JSON errors (413 too large, 408 too slow, 422 not
//! the expected JSON).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use tokio::time::{timeout_at, Duration, Instant};

use super::error::ApiError;
use super::{ApiState, HttpLimits};

/// The largest body the API's write endpoints read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a body may arrive at any rate before the minimum applies:
/// room for a stalled start (a lost segment is resent after a second or
/// more).
pub const RATE_GRACE: Duration = Duration::from_secs(5);

/// The declared `Content-Length`, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads `body` whole: at most `max` bytes, within the time `limits` give.
pub async fn read_body(body: Body, max: usize, limits: &HttpLimits) -> Result<Bytes, ApiError> {
    let started = Instant::now();
    let deadline = started + limits.body_timeout;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received: usize = 0;
    loop {
        // By `t` after the start, rate * (t - grace) bytes must have come.
        let slow_at = (limits.body_min_rate > 0).then(|| {
            started + limits.body_rate_grace + Duration::from_secs_f64(received as f64 / limits.body_min_rate as f64)
        });
        let (until, too_slow) = match slow_at {
            Some(at) if at < deadline => (at, true),
            _ => (deadline, false),
        };
        let frame = match timeout_at(until, body.frame()).await {
            Err(_) if too_slow => return Err(ApiError::body_too_slow(limits.body_min_rate)),
            Err(_) => return Err(ApiError::body_timeout(limits.body_timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len();
        if received > max {
            return Err(ApiError::too_large(max));
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut whole = Vec::with_capacity(received);
            for c in &chunks {
                whole.extend_from_slice(c);
            }
            Bytes::from(whole)
        }
    })
}

/// A JSON body; `None` when the request has no body (or only whitespace).
pub struct JsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        if declared_length(req.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        let bytes = read_body(req.into_body(), MAX_BODY_BYTES, &state.options().limits).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|e| ApiError::invalid_body(format!("the body is not the JSON this endpoint takes: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// Real time, scaled down: the grace is 200 ms.
    fn limits(timeout_ms: u64, rate: u64) -> HttpLimits {
        HttpLimits {
            body_timeout: Duration::from_millis(timeout_ms),
            body_min_rate: rate,
            body_rate_grace: Duration::from_millis(200),
            ..HttpLimits::default()
        }
    }

    /// A body of `n` chunks of `size` bytes, one every `every`.
    fn paced(n: usize, size: usize, every: Duration) -> Body {
        let chunks = futures_util::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size]))
        });
        Body::from_stream(chunks)
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limits() {
        let got = read_body(paced(20, 100, Duration::from_millis(20)), 10_000, &limits(10_000, 1024))
            .await
            .unwrap();
        assert_eq!(got.len(), 2000);
        let got = read_body(Body::from("{}"), 10, &limits(1000, 1024)).await.unwrap();
        assert_eq!(&got[..], b"{}");
    }

    #[tokio::test]
    async fn too_large_too_slow_and_too_late_are_refused_with_their_code() {
        let e = read_body(paced(3, 100, Duration::ZERO), 250, &limits(10_000, 0))
            .await
            .unwrap_err();
        assert_eq!(e.code, "body_too_large");
        // A byte every 50 ms (20 B/s) against 1024 B/s: cut once the grace is over.
        let e = read_body(paced(1000, 1, Duration::from_millis(50)), 10_000, &limits(10_000, 1024))
            .await
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (408, "body_too_slow"));
        // Fast enough, but never done within the deadline.
        let e = read_body(
            paced(10_000, 1000, Duration::from_millis(10)),
            100_000_000,
            &limits(500, 64),
        )
        .await
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (408, "body_timeout"));
        // No minimum rate: only the deadline.
        let e = read_body(paced(1000, 1, Duration::from_millis(50)), 10_000, &limits(500, 0))
            .await
            .unwrap_err();
        assert_eq!(e.code, "body_timeout");
    }

    #[tokio::test]
    async fn the_rate_is_an_average_so_a_late_stall_is_covered_by_earlier_bytes() {
        // 4 KiB at once, then 1 s of nothing, then the rest: 1024 B/s was met
        // (4 KiB covers 4 s past the grace).
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 4096]))]);
        let rest = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Bytes::from_static(b"end"))
        });
        let got = read_body(Body::from_stream(first.chain(rest)), 10_000, &limits(10_000, 1024))
            .await
            .unwrap();
        assert_eq!(got.len(), 4099);
    }
}
