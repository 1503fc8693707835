//! One tracing span and one latency observation per request.
//!
//! The span carries the method, the route *template* (`/v1/promotions/{id}`,
//! so neither logs nor metric labels grow with ids), the caller's token name
//! once known, the status and the latency. Headers are never recorded: the
//! bearer token travels in one.
//!
//! Every label is from a closed set whatever a client sends: the method is
//! one of [`METHODS`] or `other` (HTTP allows any token as a method, and a
//! label per token would grow `/metrics` without bound), the route one of
//! the router's templates or [`UNMATCHED`], the status a number.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::ApiState;

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The methods named in logs and labels; any other is [`OTHER_METHOD`].
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The method label of every method not in [`METHODS`].
pub const OTHER_METHOD: &str = "other";

/// The method as a label: one of [`METHODS`], else [`OTHER_METHOD`].
pub fn method_label(method: &axum::http::Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

pub async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "http_request",
        method = %method,
        route = %route,
        caller = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    span.record("latency_ms", took.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        // /readyz answers 503 until the first pass: expected, not a warning.
        if response.status().is_server_error() && route != "/readyz" {
            // The span may be filtered out at `warn`: name the request here too.
            tracing::warn!(%method, %route, status, latency_ms = took.as_secs_f64() * 1000.0, "request failed");
        } else if PROBES.contains(&route.as_str()) {
            // Probes and scrapes come every few seconds: not worth a line each.
            tracing::debug!("request served");
        } else {
            tracing::info!("request served");
        }
    });
    state.metrics().observe_request(method, &route, status, took);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn methods_outside_the_known_set_are_other() {
        for m in METHODS {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        for junk in ["get", "PROPFIND", "JUNK1", &"X".repeat(10_000)] {
            assert_eq!(
                method_label(&Method::from_bytes(junk.as_bytes()).unwrap()),
                OTHER_METHOD
            );
        }
    }
}
