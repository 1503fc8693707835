//! The Prometheus metrics of a controller process: one prometheus-client
//! registry, served as OpenMetrics text on `/metrics`.
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `tollgate_promotions` | gauge: live promotions | `phase` |
//! | `tollgate_gate_results_total` | counter | `result` = passed, failed |
//! | `tollgate_approval_decisions_total` | counter: reviews recorded | `result` = approved, changes_requested, dismissed |
//! | `tollgate_git_poll_duration_seconds` | histogram: fetch and plan | |
//! | `tollgate_poll_errors_total` | counter | `stage` = leadership, poll, reconcile; `class` = transient, stalled |
//! | `tollgate_http_request_duration_seconds` | histogram | `method` (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE, else `other`), `route` (the route template, else `unmatched`), `status` |
//! | `tollgate_http_connections` | gauge: connections open | |
//! | `tollgate_http_connection_limit` | gauge: the connection cap in force | |
//! | `tollgate_http_connections_refused_total` | counter: connections over the cap, closed at once | |
//! | `tollgate_device_reports_total` | counter | `result` = accepted, stale, rejected |
//! | `tollgate_devices` | gauge: devices in the index | |
//! | `tollgate_findings` | gauge: open findings | `kind` |
//! | `tollgate_audit_head_seq` | gauge: seq of the newest audit event in the store | |
//! | `tollgate_audit_anchor_seq` | gauge: seq the store anchored outside its database; -1 when it keeps no anchor or cannot read it | |
//!
//! Gate results and approval decisions are read from the audit log as it
//! grows (every decision is an audit event, whoever made it), counted from
//! the log's head when the process started. Terminal phases are not gauged:
//! they only grow; the audit log and `/v1/promotions` hold them.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use tollgate_store::{AuditRow, Store, StoreError};

/// Phases a promotion can be in while it still moves.
pub const LIVE_PHASES: [&str; 5] = tollgate_core::promotion::Phase::LIVE_NAMES;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    stage: String,
    class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

pub struct Metrics {
    registry: Registry,
    promotions: Family<PhaseLabels, Gauge>,
    gate_results: Family<ResultLabels, Counter>,
    approval_decisions: Family<ResultLabels, Counter>,
    poll_duration: Histogram,
    poll_errors: Family<ErrorLabels, Counter>,
    http: HistogramFamily<HttpLabels>,
    connections: Gauge,
    connection_limit: Gauge,
    connections_refused: Counter,
    reports: Family<ResultLabels, Counter>,
    devices: Gauge,
    findings: Family<KindLabels, Gauge>,
    audit_head_seq: Gauge,
    audit_anchor_seq: Gauge,
    /// The last audit seq counted; `None` until the log's head is known.
    audit_cursor: Mutex<Option<i64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let promotions = Family::<PhaseLabels, Gauge>::default();
        registry.register("promotions", "Live promotions by phase", promotions.clone());
        let gate_results = Family::<ResultLabels, Counter>::default();
        registry.register(
            "gate_results",
            "Ring health gate verdicts by result",
            gate_results.clone(),
        );
        let approval_decisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "approval_decisions",
            "Reviews recorded for promotions, by result",
            approval_decisions.clone(),
        );
        let poll_duration = Histogram::new(exponential_buckets(0.01, 2.5, 10));
        registry.register(
            "git_poll_duration_seconds",
            "Time to fetch the governed repo and plan a new revision",
            poll_duration.clone(),
        );
        let poll_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "poll_errors",
            "Failed controller loop stages, by stage and class",
            poll_errors.clone(),
        );
        let http: HistogramFamily<HttpLabels> = Family::new_with_constructor(http_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP API request latency by method, route and status",
            http.clone(),
        );
        let connections = Gauge::default();
        registry.register("http_connections", "HTTP connections open", connections.clone());
        let connection_limit = Gauge::default();
        registry.register(
            "http_connection_limit",
            "HTTP connections served at once; more are refused",
            connection_limit.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused because the connection limit was reached",
            connections_refused.clone(),
        );
        let reports = Family::<ResultLabels, Counter>::default();
        registry.register("device_reports", "Device reports received, by result", reports.clone());
        let devices = Gauge::default();
        registry.register("devices", "Devices in the device index", devices.clone());
        let findings = Family::<KindLabels, Gauge>::default();
        registry.register("findings", "Open findings by kind", findings.clone());
        // Scraped and kept elsewhere, these two witness the log's length: a
        // head that goes down, or an anchor above the head, is a deleted tail.
        let audit_head_seq = Gauge::default();
        registry.register(
            "audit_head_seq",
            "Seq of the newest audit event in the store",
            audit_head_seq.clone(),
        );
        let audit_anchor_seq = Gauge::default();
        audit_anchor_seq.set(-1);
        registry.register(
            "audit_anchor_seq",
            "Seq of the audit head anchored outside the store (-1: no anchor kept, or unreadable)",
            audit_anchor_seq.clone(),
        );
        for result in ["accepted", "stale", "rejected"] {
            reports.get_or_create(&ResultLabels { result: result.into() }).inc_by(0);
        }
        for kind in tollgate_core::devices::fleet::FindingKind::ALL {
            findings
                .get_or_create(&KindLabels {
                    kind: kind.as_str().into(),
                })
                .set(0);
        }
        // Every series exists from the start, so `rate()` and alerts see
        // the first increase rather than a series appearing.
        for phase in LIVE_PHASES {
            promotions.get_or_create(&PhaseLabels { phase: phase.into() }).set(0);
        }
        for result in ["passed", "failed"] {
            gate_results
                .get_or_create(&ResultLabels { result: result.into() })
                .inc_by(0);
        }
        for result in ["approved", "changes_requested"] {
            approval_decisions
                .get_or_create(&ResultLabels { result: result.into() })
                .inc_by(0);
        }
        for stage in ["leadership", "poll", "reconcile"] {
            for class in ["transient", "stalled"] {
                poll_errors
                    .get_or_create(&ErrorLabels {
                        stage: stage.into(),
                        class: class.into(),
                    })
                    .inc_by(0);
            }
        }
        Metrics {
            registry,
            promotions,
            gate_results,
            approval_decisions,
            poll_duration,
            poll_errors,
            http,
            connections,
            connection_limit,
            connections_refused,
            reports,
            devices,
            findings,
            audit_head_seq,
            audit_anchor_seq,
            audit_cursor: Mutex::new(None),
        }
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts one batch of device reports.
    pub fn observe_reports(&self, accepted: usize, stale: usize, rejected: usize) {
        for (result, n) in [("accepted", accepted), ("stale", stale), ("rejected", rejected)] {
            self.reports
                .get_or_create(&ResultLabels { result: result.into() })
                .inc_by(n as u64);
        }
    }

    /// Sets the device and open-finding gauges.
    pub fn set_fleet(&self, devices: u64, findings: &std::collections::BTreeMap<String, u64>) {
        self.devices.set(devices as i64);
        for kind in tollgate_core::devices::fleet::FindingKind::ALL {
            let n = findings.get(kind.as_str()).copied().unwrap_or(0);
            self.findings
                .get_or_create(&KindLabels {
                    kind: kind.as_str().into(),
                })
                .set(n as i64);
        }
    }

    pub fn observe_poll(&self, took: Duration) {
        self.poll_duration.observe(took.as_secs_f64());
    }

    pub fn poll_error(&self, stage: &str, class: tollgate_app::reconcile::ErrorClass) {
        self.poll_errors
            .get_or_create(&ErrorLabels {
                stage: stage.into(),
                class: class.as_str().into(),
            })
            .inc();
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: method.into(),
            route: route.into(),
            status: status.to_string(),
        };
        self.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub(crate) fn set_connection_limit(&self, cap: usize) {
        self.connection_limit.set(i64::try_from(cap).unwrap_or(i64::MAX));
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Sets the live-promotion gauge; phases missing from `counts` are 0.
    pub fn set_live_promotions(&self, counts: &std::collections::BTreeMap<String, u64>) {
        for phase in LIVE_PHASES {
            let n = counts.get(phase).copied().unwrap_or(0);
            self.promotions
                .get_or_create(&PhaseLabels { phase: phase.into() })
                .set(n as i64);
        }
    }

    /// Counts the audit events appended since the last call. The first call
    /// only finds the head: history from before this process is not counted.
    /// Also sets the audit head and anchor gauges.
    pub async fn observe_audit(&self, store: &dyn Store) -> Result<(), StoreError> {
        // The anchor first: read before the head, it is never above it
        // unless events were deleted.
        let anchor = store.audit_anchor().await;
        self.audit_anchor_seq.set(anchor.ok().flatten().map_or(-1, |a| a.seq));
        self.audit_head_seq.set(store.audit_head().await?.map_or(0, |h| h.seq));
        let cursor = *self.audit_cursor.lock().expect("metrics lock");
        let Some(mut after) = cursor else {
            let head = store.audit_head().await?.map_or(0, |h| h.seq);
            let mut guard = self.audit_cursor.lock().expect("metrics lock");
            guard.get_or_insert(head);
            return Ok(());
        };
        loop {
            let rows = store.audit_after(after, 1000).await?;
            let Some(last) = rows.last().map(|r| r.seq) else { break };
            {
                // Another caller may have counted these meanwhile: count only
                // rows past the cursor as it is now.
                let mut guard = self.audit_cursor.lock().expect("metrics lock");
                let seen = guard.unwrap_or(0);
                for row in rows.iter().filter(|r| r.seq > seen) {
                    self.count(row);
                }
                *guard = Some(seen.max(last));
            }
            after = last;
        }
        Ok(())
    }

    fn count(&self, row: &AuditRow) {
        match row.action.as_str() {
            "gate_passed" => self
                .gate_results
                .get_or_create(&ResultLabels {
                    result: "passed".into(),
                })
                .inc(),
            "gate_failed" => self
                .gate_results
                .get_or_create(&ResultLabels {
                    result: "failed".into(),
                })
                .inc(),
            "review_recorded" => {
                let result = row.details.get("state").and_then(|s| s.as_str()).unwrap_or("unknown");
                self.approval_decisions
                    .get_or_create(&ResultLabels { result: result.into() })
                    .inc()
            }
            _ => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_family() {
        let m = Metrics::new();
        m.observe_poll(Duration::from_millis(30));
        m.poll_error("poll", tollgate_app::reconcile::ErrorClass::Transient);
        m.observe_request("GET", "/v1/promotions/{id}", 404, Duration::from_millis(2));
        let text = m.encode();
        for needle in [
            "tollgate_promotions{phase=\"pending_approval\"} 0",
            "tollgate_git_poll_duration_seconds_count 1",
            "tollgate_poll_errors_total{stage=\"poll\",class=\"transient\"} 1",
            "tollgate_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/promotions/{id}\",status=\"404\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
