//! One tracing span and one latency observation per request.
//!
//! The span carries the method, the route *template* (`/v1/promotions/{id}`,
//! so neither logs nor metric labels grow with ids), the caller's token name
//! once known, the status and the latency. Headers are never recorded: the
//! bearer token travels in one.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::ApiState;

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
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
    state.metrics().observe_request(&method, &route, status, took);
    response
}
