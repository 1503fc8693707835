//! Device endpoints (DESIGN 8): reports in, drift and remediation out.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Authorized, Caller, Read, Report};
use super::body::{declared_length, read_body};
use super::error::ApiError;
use super::routes::ApiQuery;
use super::ApiState;
use tollgate_app::devices::service::{Devices, DevicesError, IngestOutcome, Received, Scoped};
use tollgate_core::catalog::Catalog;
use tollgate_core::devices::fleet::{DriftFilter, FindingKind};
use tollgate_core::devices::report::{check_device_id, ParsedBatch, Rejection};
use tollgate_core::devices::report::{parse_reports_shared, BatchError, BodyFormat, MAX_REPORTS, MAX_REPORTS_BODY};

/// Seconds a client told `429` should wait.
const RETRY_AFTER_SECS: &str = "1";

fn devices(state: &ApiState) -> Result<&std::sync::Arc<Devices>, ApiError> {
    state
        .devices()
        .ok_or_else(|| ApiError::unavailable("this controller does not track devices"))
}

fn overloaded() -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "overloaded",
        "too many report batches in flight; retry after the given seconds",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

impl From<DevicesError> for ApiError {
    fn from(e: DevicesError) -> Self {
        match e {
            DevicesError::Join(_) => ApiError::internal(&e),
            DevicesError::Store(e) => e.into(),
            DevicesError::Overloaded => ApiError::unavailable(e.to_string()),
            DevicesError::Resolve(m) => ApiError::unavailable(format!("resolving the desired state: {m}")),
            DevicesError::State(e) if e.is_transient() => {
                ApiError::unavailable("the store is unavailable; retry later")
            }
            DevicesError::State(_) => ApiError::internal(&e),
        }
    }
}

/// `POST /v1/reports`: a JSON array or NDJSON of device reports.
pub async fn reports(
    Authorized { caller, .. }: Authorized<Report>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.require_leader()?;
    let devices = devices(&state)?.clone();
    if declared_length(&headers).is_some_and(|n| n > MAX_REPORTS_BODY as u64) {
        return Err(ApiError::too_large(MAX_REPORTS_BODY));
    }
    // The body first, bounded in size and time; only then a slot: admission
    // counts batches being parsed and stored, not clients still sending, so
    // slow uploads cannot hold every slot. Under overload the client is told
    // to come back; nothing queues without bound.
    let bytes = read_body(body, MAX_REPORTS_BODY, &state.options().limits).await?;
    let Ok(_admitted) = devices.admit() else {
        return Ok(overloaded());
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = BodyFormat::detect(content_type, &bytes);
    let now = state.now();
    let parsed = tokio::task::spawn_blocking(move || parse_reports_shared(&bytes, format, now, Catalog::builtin()))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut parsed = match parsed {
        Ok(p) => p,
        Err(BatchError::TooMany { limit }) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_reports",
                format!("a request may carry at most {limit} reports (this limit is {MAX_REPORTS})"),
            ))
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let mut rejected = std::mem::take(&mut parsed.rejected);
    let (kept, outcome) = ingest_as(&caller, &devices, parsed, &mut rejected, now).await?;
    state
        .metrics()
        .observe_reports(outcome.accepted, outcome.stale, rejected.len());
    tracing::debug!(reporter = %caller.name, kept, rejected = rejected.len(), stale = outcome.stale, "reports");
    let status = if kept == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "accepted": outcome.accepted,
            "stale": outcome.stale,
            "rejected": rejected,
            "findings_opened": outcome.findings_opened,
            "findings_closed": outcome.findings_closed,
        })),
    )
        .into_response())
}

/// Stores the valid reports of `parsed` as `caller` may: reports outside
/// its token's scope join `rejected`, in batch order. Returns how many
/// reports were kept (stored or stale) and what storing did.
async fn ingest_as(
    caller: &Caller,
    devices: &Devices,
    parsed: ParsedBatch,
    rejected: &mut Vec<Rejection>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(usize, IngestOutcome), ApiError> {
    let indices: Vec<usize> = parsed.reports.iter().map(|&(index, _)| index).collect();
    let scope = caller.scope.as_deref().map(|scope| Scoped {
        token: &caller.name,
        scope,
    });
    let (outcome, refused) = devices.ingest_scoped(Received::from_parsed(parsed), scope, now).await?;
    let kept = indices.len() - refused.len();
    if !refused.is_empty() {
        rejected.extend(refused.into_iter().map(|r| Rejection {
            index: indices[r.position],
            device: Some(r.device),
            reason: r.reason,
        }));
        rejected.sort_by_key(|r| r.index);
    }
    Ok((kept, outcome))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriftQuery {
    ring: Option<String>,
    baseline: Option<String>,
    kind: Option<String>,
    setting: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

const DRIFT_PAGE: usize = 100;
const DRIFT_MAX_PAGE: usize = 1000;

/// `GET /v1/drift`: findings summarised by ring, baseline, setting and
/// kind, and the devices that have them (paged by device id).
pub(crate) async fn drift(
    _: Authorized<Read>,
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> Result<Response, ApiError> {
    let devices = devices(&state)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(FindingKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "kind {k:?} is not one of {}",
                FindingKind::ALL.map(FindingKind::as_str).join(", ")
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(DRIFT_PAGE);
    if limit == 0 || limit > DRIFT_MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be 1..={DRIFT_MAX_PAGE}")));
    }
    let filter = DriftFilter {
        ring: q.ring,
        baseline: q.baseline,
        kind,
        setting: q.setting,
    };
    let fleet = devices.fleet().read();
    let summary = fleet.summary(&filter);
    let listed = fleet.list(&filter, q.after.as_deref(), limit + 1);
    drop(fleet);
    let more = listed.len() > limit;
    let page: Vec<_> = listed.into_iter().take(limit).collect();
    let next_after = if more { page.last().map(|d| d.id.clone()) } else { None };
    Ok(Json(json!({
        "generated_at": state.now(),
        "summary": summary,
        "devices": page,
        "next_after": next_after,
    }))
    .into_response())
}

/// `GET /v1/devices/{id}`: one device's ring and open findings.
pub async fn device(
    _: Authorized<Read>,
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    // The id rule of reports: no stored device has an id it refuses.
    check_device_id(&id).map_err(|why| ApiError::bad_request(format!("device id: {why}")))?;
    let devices = devices(&state)?;
    let view = devices.fleet().read().device(&id);
    match view {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::not_found(format!("no report from device {id:?}"))),
    }
}

/// `GET /v1/remediation`: open remediation items, oldest first.
pub async fn remediation(_: Authorized<Read>, State(state): State<ApiState>) -> Result<Response, ApiError> {
    let items = devices(&state)?.remediation().await?;
    Ok(Json(json!({"items": items})).into_response())
}
