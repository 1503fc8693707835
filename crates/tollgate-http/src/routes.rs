//! The routes of the API and their handlers. Handlers check who may call
//! them through their [`Authorized`] argument (before the body is read),
//! validate input into typed values, call the [`Controller`] or the store,
//! and answer JSON.
//!
//! [`Controller`]: tollgate_app::controller::Controller

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Approve, Authorized, Operate, Read, ReadDesired};
use super::body::{JsonBody, MAX_BODY_BYTES};
use super::error::ApiError;
use super::{metrics, observe, ApiState};
use tollgate_app::controller::rollback::{RollbackError, RollbackRequest};
use tollgate_app::controller::ControllerError;
use tollgate_app::devices::resolve::ResolveError;
use tollgate_core::audit::{write_jsonl, Action, AuditEvent, GENESIS_PREV};
use tollgate_core::format::RingSelector;
use tollgate_core::promotion::{Promotion, ReviewState};
use tollgate_git::git::GitError;
use tollgate_store::{AuditRow, PromotionFilter};

/// Every phase a promotion can be in, for `?phase=`.
pub const PHASES: [&str; 8] = tollgate_core::promotion::Phase::NAMES;

/// Headers of `/v1/audit/export` naming the last event it holds.
pub const AUDIT_HEAD_SEQ: &str = "tollgate-audit-head-seq";
pub const AUDIT_HEAD_HASH: &str = "tollgate-audit-head-hash";
/// Headers of `/v1/audit/export` naming the anchored head the log must hold
/// (see [`tollgate_store::anchor`]), or why the anchor cannot be read.
pub const AUDIT_ANCHOR_SEQ: &str = "tollgate-audit-anchor-seq";
pub const AUDIT_ANCHOR_HASH: &str = "tollgate-audit-anchor-hash";
pub const AUDIT_ANCHOR_ERROR: &str = "tollgate-audit-anchor-error";

const MAX_REASON_CHARS: usize = 2000;
const AUDIT_PAGE: u32 = 1000;

/// The API's router over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/promotions", get(list_promotions))
        .route("/v1/promotions/{id}", get(get_promotion))
        .route("/v1/promotions/{id}/approve", post(approve))
        .route("/v1/promotions/{id}/halt", post(halt))
        .route("/v1/promotions/{id}/break-glass", post(break_glass))
        .route("/v1/rollbacks", post(rollback))
        .route("/v1/trigger", post(trigger))
        .route("/v1/desired", get(desired))
        .route("/v1/rings", get(rings))
        .route("/v1/reports", post(super::devices::reports))
        .route("/v1/drift", get(super::devices::drift))
        .route("/v1/devices/{id}", get(super::devices::device))
        .route("/v1/remediation", get(super::devices::remediation))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe::track))
        .with_state(state)
}

/// A query string as `T`; a malformed one is a JSON 400.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The `{id}` of a promotion path.
struct PromotionId(i64);

impl<S: Send + Sync> FromRequestParts<S> for PromotionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(PromotionId)
            .ok_or_else(|| ApiError::bad_request(format!("{raw:?} is not a promotion id (a positive integer)")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// One phase or several, comma-separated.
    phase: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
}

async fn list_promotions(
    _: Authorized<Read>,
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut phases = Vec::new();
    for phase in q
        .phase
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !PHASES.contains(&phase) {
            return Err(ApiError::bad_request(format!(
                "unknown phase {phase:?}; phases are {}",
                PHASES.join(", ")
            )));
        }
        phases.push(phase.to_string());
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let filter = PromotionFilter {
        source: Some(state.controller().state().source().to_string()),
        phases,
        revision: None,
        before_id: q.before,
        limit,
    };
    let promotions = state.controller().list(filter).await?;
    let next_before = (promotions.len() == limit as usize)
        .then(|| promotions.last().map(|p| p.id))
        .flatten();
    Ok(Json(json!({"promotions": promotions, "next_before": next_before})))
}

async fn get_promotion(
    _: Authorized<Read>,
    State(state): State<ApiState>,
    PromotionId(id): PromotionId,
) -> Result<Json<Value>, ApiError> {
    promotion_view(&state, id).await.map(Json)
}

/// A promotion, its reviews and why its approvals do or do not suffice.
async fn promotion_view(state: &ApiState, id: i64) -> Result<Value, ApiError> {
    let (_, stored) = state.controller().load(id).await?;
    let reviews = state.controller().reviews(id).await?;
    let approvals = explain_approvals(&stored.promotion);
    Ok(json!({"promotion": stored.promotion, "reviews": reviews, "approvals": approvals}))
}

/// The last approval evaluation, per change, for the ring it was made for.
fn explain_approvals(p: &Promotion) -> Value {
    let ring = p.phase.ring().and_then(|r| p.rings.get(r)).map(|r| r.name.clone());
    let changes: Vec<Value> = p
        .changes
        .iter()
        .zip(&p.approvals)
        .map(|(change, result)| {
            let mut v = json!({"change": change.key, "tier": change.tier});
            if let (Value::Object(out), Ok(Value::Object(r))) = (&mut v, serde_json::to_value(result)) {
                out.extend(r);
            }
            v
        })
        .collect();
    let satisfied = !p.approvals.is_empty() && p.approvals.iter().all(|r| r.satisfied);
    json!({"ring": ring, "satisfied": satisfied, "changes": changes})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    state: Option<ReviewState>,
}

async fn approve(
    Authorized { caller, .. }: Authorized<Approve>,
    State(state): State<ApiState>,
    PromotionId(id): PromotionId,
    JsonBody(body): JsonBody<ApproveBody>,
) -> Result<Json<Value>, ApiError> {
    let review = body.and_then(|b| b.state).unwrap_or(ReviewState::Approved);
    if !matches!(review, ReviewState::Approved | ReviewState::ChangesRequested) {
        return Err(ApiError::invalid_body(
            "state must be \"approved\" or \"changes_requested\"",
        ));
    }
    state.require_leader()?;
    let p = state.controller().review(id, &caller.name, review, state.now()).await?;
    tracing::info!(promotion = id, reviewer = %caller.name, state = ?review, phase = p.phase.name(), "review recorded");
    refresh_quietly(&state).await;
    promotion_view(&state, id).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltBody {
    reason: String,
}

async fn halt(
    Authorized { caller, .. }: Authorized<Operate>,
    State(state): State<ApiState>,
    PromotionId(id): PromotionId,
    JsonBody(body): JsonBody<HaltBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(HaltBody { reason }) = body else {
        return Err(ApiError::invalid_body(
            "a body {\"reason\": \"...\"} is required: say why the promotion stops",
        ));
    };
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid_body("reason must not be empty"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_body(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    state.require_leader()?;
    let p = state.controller().halt(id, &caller.name, reason, state.now()).await?;
    tracing::info!(promotion = id, actor = %caller.name, phase = p.phase.name(), "halt requested");
    refresh_quietly(&state).await;
    promotion_view(&state, id).await.map(Json)
}

/// Break-glass on a live promotion (operator): it moves without approvals,
/// windows or freezes. The reason is mandatory; the audit log records it with
/// a follow-up review request.
async fn break_glass(
    Authorized { caller, .. }: Authorized<Operate>,
    State(state): State<ApiState>,
    PromotionId(id): PromotionId,
    JsonBody(body): JsonBody<HaltBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(HaltBody { reason }) = body else {
        return Err(ApiError::invalid_body(
            "a body {\"reason\": \"...\"} is required: say why approvals are skipped",
        ));
    };
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_body(format!(
            "reason must say why approvals are skipped, in at most {MAX_REASON_CHARS} characters"
        )));
    }
    state.require_leader()?;
    let p = state
        .controller()
        .break_glass(id, &caller.name, reason, state.now())
        .await?;
    tracing::warn!(promotion = id, actor = %caller.name, phase = p.phase.name(), "break-glass");
    refresh_quietly(&state).await;
    promotion_view(&state, id).await.map(Json)
}

/// The body of `POST /v1/rollbacks`: the controller's [`RollbackRequest`],
/// spelled out here so that an unknown (mistyped) member is refused rather
/// than ignored. `to` is `"previous"` or `{"revision": "REV"}`.
const ROLLBACK_FIELDS: [&str; 5] = ["baseline", "to", "rings", "break_glass_reason", "dry_run"];

/// Plans a rollback of one baseline and starts it as a rollback promotion
/// (DESIGN 7); it moves once `oncall` approves, or at once with break-glass.
/// Answers 201 with the promotion, its approvals and the plan (the diff, its
/// tier, whether the target was verified, settings a rollback cannot undo).
async fn rollback(
    Authorized { caller, .. }: Authorized<Operate>,
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::invalid_body(
            "a body {\"baseline\": \"NAME\", \"to\": \"previous\" | {\"revision\": \"REV\"}} is required",
        ));
    };
    let unknown: Vec<&str> = body
        .as_object()
        .map(|o| {
            o.keys()
                .map(String::as_str)
                .filter(|k| !ROLLBACK_FIELDS.contains(k))
                .collect()
        })
        .unwrap_or_default();
    if !unknown.is_empty() {
        return Err(ApiError::invalid_body(format!(
            "unknown member(s) {}; a rollback takes {}",
            unknown.join(", "),
            ROLLBACK_FIELDS.join(", ")
        )));
    }
    let req: RollbackRequest =
        serde_json::from_value(body).map_err(|e| ApiError::invalid_body(format!("not a rollback request: {e}")))?;
    tollgate_core::ids::check_dns_label(&req.baseline).map_err(|e| ApiError::invalid_body(format!("baseline {e}")))?;
    for ring in &req.rings {
        tollgate_core::ids::check_dns_label(ring).map_err(|e| ApiError::invalid_body(format!("ring {e}")))?;
    }
    if req.break_glass_reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(ApiError::invalid_body(
            "break_glass_reason must say why approvals are skipped",
        ));
    }
    if req.dry_run {
        let plan = state
            .controller()
            .plan_rollback(&req, state.now())
            .await
            .map_err(rollback_error)?;
        return Ok(Json(json!({"plan": plan})).into_response());
    }
    state.require_leader()?;
    let (p, plan) = state
        .controller()
        .rollback(&req, &caller.name, state.now())
        .await
        .map_err(rollback_error)?;
    tracing::info!(
        promotion = p.id,
        baseline = %req.baseline,
        actor = %caller.name,
        break_glass = req.break_glass_reason.is_some(),
        phase = p.phase.name(),
        "rollback requested"
    );
    refresh_quietly(&state).await;
    let mut view = promotion_view(&state, p.id).await?;
    view["plan"] = serde_json::to_value(&plan).expect("plans serialise");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn rollback_error(e: RollbackError) -> ApiError {
    let message = e.to_string();
    match e {
        RollbackError::Controller(ControllerError::Git(GitError::Resolve { rev, .. })) => {
            ApiError::invalid_body(format!("revision {rev:?} is not in the governed repo"))
        }
        RollbackError::Controller(inner) => inner.into(),
        RollbackError::NotPromoted(_) => ApiError::not_found(message),
        RollbackError::UnknownRing { .. } | RollbackError::NoReason => ApiError::invalid_body(message),
        RollbackError::NoPrevious(_) => ApiError::new(StatusCode::CONFLICT, "no_previous_version", message),
        RollbackError::NothingToDo { .. } => ApiError::new(StatusCode::CONFLICT, "nothing_to_do", message),
    }
}

async fn trigger(Authorized { caller, .. }: Authorized<Operate>, State(state): State<ApiState>) -> Response {
    tracing::info!(actor = %caller.name, "pass triggered");
    state.trigger();
    (StatusCode::ACCEPTED, Json(json!({"triggered": true}))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredQuery {
    ring: Option<String>,
}

/// The ring's promoted baselines and exceptions with their settings (DESIGN
/// 8), resolved from the git mirror and checked against the published
/// digests; see [`tollgate_app::devices::resolve`]. Polls of an unchanged ring are
/// answered from a cache, and with 304 when the client has the tag.
async fn desired(
    _: Authorized<ReadDesired>,
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<DesiredQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ring = q.ring.ok_or_else(|| ApiError::bad_request("?ring=NAME is required"))?;
    tollgate_core::ids::check_dns_label(&ring).map_err(|e| ApiError::bad_request(format!("ring {e}")))?;
    let store = state.controller().store().as_ref();
    let Some(rendered) = state.desired().ring(store, &ring).await.map_err(resolve_error)? else {
        return Err(ApiError::not_found(format!(
            "nothing has been promoted to ring {ring:?}"
        )));
    };
    let etag = HeaderValue::from_str(&rendered.etag).expect("a quoted hex tag is a valid header value");
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response());
    }
    let json_type = HeaderValue::from_static("application/json");
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag), cache, (header::CONTENT_TYPE, json_type)],
        rendered.body.clone(),
    )
        .into_response())
}

/// The rings of the config in force (the first ring's base revision, or the
/// source tip before anything was published): how devices are assigned to
/// rings, and what each ring last received.
async fn rings(_: Authorized<ReadDesired>, State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let store = state.controller().store().as_ref();
    let Some((revision, config)) = state.desired().config(store).await.map_err(resolve_error)? else {
        return Err(ApiError::not_found(
            "no repo config is known yet: the controller has not fetched the governed repo",
        ));
    };
    let published = state.desired().published(store).await.map_err(resolve_error)?;
    let rings: Vec<Value> = config
        .rings
        .iter()
        .enumerate()
        .map(|(index, ring)| {
            let selector = match &ring.selector {
                RingSelector::Groups(groups) => json!({"groups": groups}),
                RingSelector::All => json!({"all": true}),
            };
            let gate = ring.gate.map(
                |g| json!({"min_applied": g.min_applied, "max_noncompliant_increase": g.max_noncompliant_increase}),
            );
            let published = published.iter().find(|p| p.ring == ring.name).map(
                |p| json!({"revision": p.base_revision, "promotion": p.promotion, "published_at": p.published_at}),
            );
            json!({
                "name": ring.name,
                "index": index,
                "selector": selector,
                "soak_secs": ring.soak_secs,
                "gate": gate,
                "published": published,
            })
        })
        .collect();
    Ok(Json(json!({"revision": revision, "rings": rings})))
}

/// A resolution failure as the API reports it. Content that does not match
/// what was published is named (ring, document, digests: nothing secret) so
/// that whoever polls can report it; store and git detail goes to the log.
fn resolve_error(e: ResolveError) -> ApiError {
    match e {
        ResolveError::Store(e) => e.into(),
        e if e.mirror_lacks_revision() => {
            tracing::warn!(error = %super::error::chain(&e), "desired state: the mirror lacks a published revision");
            ApiError::unavailable("the controller's git mirror does not hold the published revision yet; retry later")
        }
        // The cache logged it when it found it; every poll would repeat it.
        e if e.is_content_mismatch() => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unresolvable", e.to_string()),
        e => ApiError::internal(&e),
    }
}

/// Whether `If-None-Match` names `etag` (weak comparison, `*` matches).
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

fn event_of(row: AuditRow) -> AuditEvent {
    AuditEvent {
        seq: row.seq as u64,
        at: row.at,
        actor: row.actor,
        action: Action::parse(&row.action),
        subject: row.subject,
        details: row.details,
        prev: row.prev,
        hash: row.hash,
    }
}

async fn audit(
    _: Authorized<Read>,
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEvent>>, ApiError> {
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("after must be 0 or a seq"));
    }
    let limit = q.limit.unwrap_or(AUDIT_PAGE);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let rows = state.controller().store().audit_after(after, limit).await?;
    Ok(Json(rows.into_iter().map(event_of).collect()))
}

/// The whole log as JSONL, streamed page by page up to the head it had when
/// the request came. A store failure mid-way aborts the response, so a
/// client sees a failed transfer, never a shorter log that looks complete.
async fn audit_export(_: Authorized<Read>, State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = state.controller().store().clone();
    // Before the head: the anchor is written after each commit, so, read
    // first, it never names an event past the head read next.
    let anchor = store.audit_anchor().await;
    let (head_seq, head_hash) = match store.audit_head().await? {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS_PREV.to_string()),
    };
    let pages = futures_util::stream::unfold(Some(0i64), move |after| {
        let store = store.clone();
        async move {
            let after = after.filter(|a| *a < head_seq)?;
            match store.audit_after(after, AUDIT_PAGE).await {
                Ok(rows) => {
                    let events: Vec<AuditEvent> =
                        rows.into_iter().filter(|r| r.seq <= head_seq).map(event_of).collect();
                    let last = events.last()?.seq as i64;
                    let mut buf = Vec::new();
                    let page = write_jsonl(&events, &mut buf)
                        .map(|_| Bytes::from(buf))
                        .map_err(std::io::Error::other);
                    Some((page, Some(last)))
                }
                Err(e) => {
                    tracing::error!(error = %super::error::chain(&e), "audit export aborted");
                    Some((Err(std::io::Error::other("the store failed during the export")), None))
                }
            }
        }
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson")),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"tollgate-audit.jsonl\""),
        ),
        (
            header::HeaderName::from_static(AUDIT_HEAD_SEQ),
            HeaderValue::from(head_seq),
        ),
        (
            header::HeaderName::from_static(AUDIT_HEAD_HASH),
            HeaderValue::from_str(&head_hash).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the stored audit head is unreadable",
                )
            })?,
        ),
    ];
    let mut response = (headers, Body::from_stream(pages)).into_response();
    let extra = response.headers_mut();
    match anchor {
        Ok(None) => {}
        Ok(Some(a)) => match HeaderValue::from_str(&a.hash) {
            Ok(hash) => {
                extra.insert(AUDIT_ANCHOR_SEQ, HeaderValue::from(a.seq));
                extra.insert(AUDIT_ANCHOR_HASH, hash);
            }
            Err(_) => anchor_error(extra, "the anchored hash cannot be sent"),
        },
        Err(e) => anchor_error(extra, &super::error::chain(&e)),
    }
    Ok(response)
}

/// Tells the client the anchor exists but cannot be read: a verifier must
/// not take that for a log without an anchor.
fn anchor_error(headers: &mut header::HeaderMap, message: &str) {
    tracing::error!(error = %message, "the audit anchor cannot be read");
    let printable: String = message
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    let value = HeaderValue::from_str(&printable).unwrap_or(HeaderValue::from_static("unreadable"));
    headers.insert(AUDIT_ANCHOR_ERROR, value);
}

async fn status(_: Authorized<Read>, State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let store = state.controller().store();
    let keys = state.controller().state().keys();
    // Stored records as they are, readable or not: status is where an
    // unreadable record shows (the loop reports it stalled).
    let tip = store.kv_get(&keys.tip()).await?;
    let counts = state.live_promotions().await?;
    let promotions: BTreeMap<&str, u64> = metrics::LIVE_PHASES
        .iter()
        .map(|p| (*p, counts.get(*p).copied().unwrap_or(0)))
        .collect();
    // The desired state of each ring as published, in ring order.
    let mut rings: Vec<Value> = store
        .kv_prefix(&keys.desired_prefix())
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    rings.sort_by_key(|v| {
        (
            v["ring_index"].as_u64().unwrap_or(u64::MAX),
            v["ring"].as_str().unwrap_or("").to_string(),
        )
    });
    let split = split_rings(&rings);
    let refused = store.kv_get(&keys.refused()).await?;
    let ready = readiness(&state).await;
    let options = state.options();
    Ok(Json(json!({
        "source": {"branch": options.branch, "tip": tip, "refused": refused},
        "split": split,
        "controller": {
            "ready": ready.is_ok(),
            "not_ready_reason": ready.err(),
            "interval_seconds": options.interval.as_secs(),
            "loop": state.status(),
        },
        "promotions": promotions,
        "rings": rings,
    })))
}

/// Rings that run other content than the first ring (an earlier promotion
/// reached only the first rings): per ring, the documents whose digest
/// differs, so an operator sees the split rather than guessing it.
fn split_rings(rings: &[Value]) -> Vec<Value> {
    let Some(first) = rings.first() else {
        return Vec::new();
    };
    let digests = |r: &Value| -> BTreeMap<String, Option<String>> {
        r["documents"]
            .as_object()
            .map(|d| {
                d.iter()
                    .map(|(k, v)| (k.clone(), v["digest"].as_str().map(String::from)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ahead = digests(first);
    rings[1..]
        .iter()
        .filter_map(|r| {
            let here = digests(r);
            let differ: Vec<&String> = ahead
                .keys()
                .chain(here.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| ahead.get(*k) != here.get(*k))
                .collect();
            (!differ.is_empty()).then(|| json!({"ring": r["ring"], "differs_from": first["ring"], "documents": differ}))
        })
        .collect()
}

/// Ready once the first pass succeeded and the store answers now.
///
/// A later failing poll does not make the process unready: reads from the
/// store stay right, and the failure shows on `/v1/status` and in metrics.
async fn readiness(state: &ApiState) -> Result<(), String> {
    let loop_status = state.status();
    if loop_status.first_sync_at.is_none() {
        let last = loop_status
            .last_error
            .map(|e| format!(" (the last attempt failed at the {} stage: {})", e.stage, e.class))
            .unwrap_or_default();
        return Err(format!("waiting for the first successful controller pass{last}"));
    }
    if let Err(e) = state.controller().store().ping().await {
        tracing::warn!(error = %super::error::chain(&e), "readiness: store ping failed");
        return Err("the store does not answer".into());
    }
    Ok(())
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match readiness(&state).await {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(reason) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response(),
    }
}

async fn prometheus(State(state): State<ApiState>) -> Response {
    refresh_quietly(&state).await;
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}

/// Store-derived metrics are a convenience: a failure to refresh them must
/// not fail the request that asked.
async fn refresh_quietly(state: &ApiState) {
    if let Err(e) = state.refresh_metrics().await {
        tracing::debug!(error = %super::error::chain(&e), "metrics not refreshed");
    }
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
