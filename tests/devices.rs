//! Device reports through the real API: ingestion limits and edge cases,
//! findings and their audit events, persistence across a restart, and ring
//! gates fed by device evidence. Real SQLite, real git, real HTTP.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;

use tollgate::catalog::Catalog;
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;
use tollgate::controller::{Controller, Role, TokenConfig};
use tollgate::devices::fleet::FleetOptions;
use tollgate::devices::resolve::DesiredCache;
use tollgate::devices::service::{Devices, SharedFleet};
use tollgate::http::{ApiOptions, ApiState, Poller, Tokens};
use tollgate::store;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h, gate: {min_applied: 0.9, max_noncompliant_increase: 0.05}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
  mdm-ios: {users: [ios1, ios2]}
  oncall: {users: [dana, eli]}
"#;

fn ios(min_length: u32, min_os: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {{name: corp-ios, owners: [mdm-ios]}}\nspec:\n  platform: ios\n  targets: {{groups: [phones]}}\n  settings:\n    passcode.min_length: {min_length}\n    os.min_version: \"{min_os}\"\n"
    )
}

const TOKENS: &[(&str, Role, &str)] = &[
    ("vera", Role::Viewer, "tgk-viewer-1"),
    ("mdm", Role::Reporter, "tgk-reporter-1"),
    ("ios1", Role::Approver, "tgk-ios1-1"),
    ("eli", Role::Approver, "tgk-eli-1"),
    ("dana", Role::Operator, "tgk-dana-1"),
];

fn token(name: &str) -> &'static str {
    TOKENS.iter().find(|(n, _, _)| *n == name).map(|(_, _, t)| *t).unwrap()
}

fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

struct Harness {
    base: String,
    state: ApiState,
    devices: Arc<Devices>,
    poller: Poller,
    clock: Arc<Mutex<DateTime<Utc>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(dir: &Path, clock: Arc<Mutex<DateTime<Utc>>>) -> Harness {
    let db = format!("sqlite://{}", dir.join("state.db").display());
    let store = store::open(&db).await.unwrap();
    let fleet = SharedFleet::new(FleetOptions::default(), store.clone());
    let mirror = dir.join("mirror");
    let controller = Arc::new(Controller::new(
        store,
        format!("file://{}", dir.join("repo").display()),
        "main".into(),
        mirror.clone(),
        fleet.clone(),
    ));
    let cache = Arc::new(DesiredCache::new(mirror, Catalog::builtin()));
    let devices = Devices::new(fleet, controller.ledger().clone(), cache);
    devices.load().await.unwrap();
    let c = clock.clone();
    let options = ApiOptions {
        clock: Arc::new(move || *c.lock().unwrap()),
        ..ApiOptions::default()
    };
    let tokens: Vec<TokenConfig> = TOKENS
        .iter()
        .map(|(n, r, t)| TokenConfig {
            name: n.to_string(),
            role: *r,
            sha256: token_hash(t),
            scope: None,
        })
        .collect();
    let state = ApiState::with_devices(
        controller,
        Tokens::from_config(&tokens).unwrap(),
        options,
        devices.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate::http::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let poller = Poller::new(state.clone(), "test");
    Harness {
        base,
        state,
        devices,
        poller,
        clock,
        stop,
        server,
    }
}

impl Harness {
    /// Stops serving and lets go of the store (and its leadership lock).
    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }

    fn now(&self) -> DateTime<Utc> {
        *self.clock.lock().unwrap()
    }

    fn advance(&self, by: Duration) {
        *self.clock.lock().unwrap() += by;
    }

    async fn pass(&self) {
        assert!(self.poller.pass(self.now()).await, "{:?}", self.state.status());
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        who: &str,
        body: Option<(String, &str)>,
    ) -> (u16, Value, Vec<(String, String)>) {
        let url = format!("{}{path}", self.base);
        let token = token(who).to_string();
        let method = method.to_string();
        let body = body.map(|(b, t)| (b, t.to_string()));
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut req = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url)
                .header("Authorization", format!("Bearer {token}"));
            let payload = match body {
                Some((b, content_type)) => {
                    req = req.header("Content-Type", content_type);
                    b
                }
                None => String::new(),
            };
            let mut response = agent.run(req.body(payload).unwrap()).unwrap();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            (response.status().as_u16(), value, headers)
        })
        .await
        .unwrap()
    }

    async fn report(&self, reports: &[Value]) -> (u16, Value) {
        let body: String = reports.iter().map(|r| format!("{r}\n")).collect();
        let (status, v, _) = self
            .call("POST", "/v1/reports", "mdm", Some((body, "application/x-ndjson")))
            .await;
        (status, v)
    }

    async fn desired_digest(&self, ring: &str) -> String {
        let (status, v, _) = self.call("GET", &format!("/v1/desired?ring={ring}"), "mdm", None).await;
        assert_eq!(status, 200, "{v}");
        v["baselines"][0]["digest"].as_str().unwrap().to_string()
    }

    async fn audit_actions(&self) -> Vec<(String, String)> {
        let (_, v, _) = self.call("GET", "/v1/audit?limit=1000", "vera", None).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn commit(dir: &Path, history: &[(&str, Option<&str>)], message: &str) {
    let files: Vec<(&str, Option<&str>)> = history.to_vec();
    let repo = dir.join("repo");
    if repo.exists() {
        let sh = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        for (path, content) in &files {
            let p = repo.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, c).unwrap();
                }
                None => std::fs::remove_file(&p).unwrap(),
            }
        }
        sh(&["add", "-A"]);
        sh(&[
            "-c",
            "user.name=sam",
            "-c",
            "user.email=sam@example.com",
            "commit",
            "-qm",
            message,
        ]);
    } else {
        let history = [SampleCommit {
            author: "priya",
            message,
            files: &files,
        }];
        write_sample_repo(&repo, &history).unwrap();
    }
}

fn device(id: &str, groups: &[&str], os: &str, at: DateTime<Utc>, digest: &str, status: &str, bad: &[&str]) -> Value {
    let settings: Vec<Value> = ["passcode.min_length", "os.min_version"]
        .iter()
        .map(|k| {
            let state = if bad.contains(k) { "noncompliant" } else { "compliant" };
            json!({"key": k, "state": state})
        })
        .collect();
    json!({
        "schema": "tollgate.device-report/v1",
        "device": {"id": id, "platform": "ios", "groups": groups, "user": "a@corp.example", "ownership": "corporate"},
        "os": {"version": os},
        "enrollment": "enrolled",
        "checked_in_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "applied": [{"baseline": "corp-ios", "digest": digest, "status": status}],
        "settings": settings,
    })
}

/// The Prometheus text of `/metrics` (no token needed).
async fn metrics_text(h: &Harness) -> String {
    let url = format!("{}/metrics", h.base);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(&url).call().unwrap().body_mut().read_to_string().unwrap()
    })
    .await
    .unwrap()
}

/// A repo with one baseline, adopted as the state of every ring.
async fn adopted() -> (TempDir, Harness) {
    let dir = TempDir::new().unwrap();
    let v1 = ios(6, "17.0");
    commit(
        dir.path(),
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&v1)),
        ],
        "initial",
    );
    let h = serve(dir.path(), Arc::new(Mutex::new(monday()))).await;
    h.state.controller().adopt("HEAD", "test", h.now()).await.unwrap();
    h.pass().await;
    (dir, h)
}

#[tokio::test]
async fn reports_open_findings_that_are_audited_and_survive_a_restart() {
    let (dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let at = h.now();
    let (status, v) = h
        .report(&[
            device("ok-1", &["phones"], "18.0", at, &digest, "applied", &[]),
            device("failed-1", &["phones"], "18.0", at, &digest, "failed", &[]),
            device(
                "drift-1",
                &["phones"],
                "18.0",
                at,
                &digest,
                "applied",
                &["passcode.min_length"],
            ),
        ])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["stale"].as_u64(),
            v["findings_opened"].as_u64()
        ),
        (Some(3), Some(0), Some(2))
    );
    let (_, drift, _) = h.call("GET", "/v1/drift", "vera", None).await;
    assert_eq!(drift["summary"]["devices"], 3);
    assert_eq!(drift["summary"]["by_kind"]["apply_failed"], 1);
    assert_eq!(drift["summary"]["by_setting"]["passcode.min_length"], 1);
    let ids: Vec<&str> = drift["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["drift-1", "failed-1"]);
    let metrics = metrics_text(&h).await;
    assert!(
        metrics.contains("tollgate_device_reports_total{result=\"accepted\"} 3"),
        "{metrics}"
    );
    let opened: Vec<String> = h
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _)| a == "finding_opened")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(opened, vec!["device/failed-1", "device/drift-1"]);

    // Restart over the same store: the same devices and findings, and a
    // resent batch is recognised as already stored.
    h.shut_down().await;
    let h = serve(dir.path(), Arc::new(Mutex::new(monday()))).await;
    h.pass().await;
    let metrics = metrics_text(&h).await;
    assert!(metrics.contains("tollgate_devices 3"), "{metrics}");
    assert!(
        metrics.contains("tollgate_findings{kind=\"apply_failed\"} 1"),
        "{metrics}"
    );
    let (status, d, _) = h.call("GET", "/v1/devices/drift-1", "vera", None).await;
    assert_eq!(status, 200);
    assert_eq!(d["findings"][0]["kind"], "setting_drift");
    assert_eq!(d["findings"][0]["opened_at"], "2026-11-23T09:00:00Z");
    let before = h.audit_actions().await.len();
    let (status, v) = h
        .report(&[device(
            "drift-1",
            &["phones"],
            "18.0",
            at,
            &digest,
            "applied",
            &["passcode.min_length"],
        )])
        .await;
    assert_eq!(
        (status, v["accepted"].as_u64(), v["stale"].as_u64()),
        (200, Some(0), Some(1)),
        "{v}"
    );
    assert_eq!(h.audit_actions().await.len(), before, "a duplicate changes nothing");

    // A newer report fixing the setting closes the finding, audited.
    h.advance(Duration::minutes(5));
    let (_, v) = h
        .report(&[device("drift-1", &["phones"], "18.0", h.now(), &digest, "applied", &[])])
        .await;
    assert_eq!(v["findings_closed"], 1);
    assert!(h
        .audit_actions()
        .await
        .contains(&("finding_closed".into(), "device/drift-1".into())));
}

#[tokio::test]
async fn one_bad_report_does_not_sink_the_batch_and_limits_hold() {
    let (_dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let good = device("good", &["phones"], "18.0", h.now(), &digest, "applied", &[]);
    let mut future = device(
        "skewed",
        &["phones"],
        "18.0",
        h.now() + Duration::hours(2),
        &digest,
        "applied",
        &[],
    );
    future["device"]["id"] = json!("skewed");
    let body = format!("{good}\n{{\"schema\": \"tollgate.device-report/v2\"}}\nnot json\n{future}\n");
    let (status, v, _) = h
        .call("POST", "/v1/reports", "mdm", Some((body, "application/x-ndjson")))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1);
    let rejected: Vec<u64> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![1, 2, 3]);
    assert!(
        v["rejected"][2]["reason"].as_str().unwrap().contains("checked_in_at"),
        "{v}"
    );

    // Nothing valid: 422 with the reasons.
    let (status, v, _) = h
        .call(
            "POST",
            "/v1/reports",
            "mdm",
            Some(("[{\"schema\": 1}]".into(), "application/json")),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["rejected"][0]["index"], 0);

    // Too many reports in one request.
    let many: String = (0..10_001).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    let (status, v, _) = h
        .call("POST", "/v1/reports", "mdm", Some((many, "application/x-ndjson")))
        .await;
    assert_eq!(status, 413, "{v}");

    // A body declared over 16 MiB is refused before any of it is sent.
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        token("mdm"),
        16 * 1024 * 1024 + 1
    );
    let addr = h.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    // A streamed body (no length) is cut off as it passes the limit.
    let chunked = "x".repeat(16 * 1024 * 1024 + 1);
    let (status, v) = post_chunked(&h, chunked).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );

    // Only reporters report.
    let (status, _, _) = h
        .call(
            "POST",
            "/v1/reports",
            "vera",
            Some((format!("{good}\n"), "application/x-ndjson")),
        )
        .await;
    assert_eq!(status, 403);
}

/// Posts `body` with `Transfer-Encoding: chunked`, so the server cannot know
/// its length up front; tolerates the server closing early.
async fn post_chunked(h: &Harness, body: String) -> (u16, Value) {
    let addr = h.base.trim_start_matches("http://").to_string();
    let token = token("mdm");
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for chunk in body.as_bytes().chunks(1 << 20) {
            if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                || s.write_all(chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        // Until the server closes, or its answer is complete, or time runs out.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"}") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let json = text
            .find("\r\n\r\n")
            .and_then(|i| text[i + 4..].find('{').map(|j| &text[i + 4 + j..]))
            .and_then(|b| b.rfind('}').map(|e| &b[..=e]))
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, json)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    let (_dir, h) = adopted().await;
    let permits: Vec<_> = (0..Devices::MAX_ADMITTED).map(|_| h.devices.admit().unwrap()).collect();
    let (status, v, headers) = h
        .call("POST", "/v1/reports", "mdm", Some(("[]".into(), "application/json")))
        .await;
    assert_eq!(status, 429, "{v}");
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v == "1"));
    drop(permits);
    let (status, _, _) = h
        .call("POST", "/v1/reports", "mdm", Some(("[]".into(), "application/json")))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn gate_passes_on_healthy_evidence_then_a_bad_change_halts_and_rollback_restores_compliance() {
    let (dir, h) = adopted().await;
    let canary: Vec<String> = (0..10).map(|i| format!("canary-{i}")).collect();
    let broad: Vec<String> = (0..10).map(|i| format!("broad-{i}")).collect();
    let old_os = |i: usize| if i < 5 { "17.2" } else { "18.1" };
    let v1 = h.desired_digest("canary").await;
    let everyone = |digest: &str, at: DateTime<Utc>, bad_os_min: Option<&str>| -> Vec<Value> {
        let mut out = Vec::new();
        for (i, id) in canary.iter().enumerate() {
            let bad: &[&str] = if bad_os_min.is_some_and(|m| old_os(i) < m) {
                &["os.min_version"]
            } else {
                &[]
            };
            out.push(device(
                id,
                &["phones", "mdm-canary"],
                old_os(i),
                at,
                digest,
                "applied",
                bad,
            ));
        }
        for id in &broad {
            out.push(device(id, &["phones"], "18.1", at, digest, "applied", &[]));
        }
        out
    };
    let (status, _) = h.report(&everyone(&v1, h.now(), None)).await;
    assert_eq!(status, 200);

    // A tightening change: T2, one owner approval and the canary soak.
    let v2 = ios(8, "17.0");
    commit(
        dir.path(),
        &[("baselines/ios/corp-ios.yaml", Some(&v2))],
        "iOS: 8-character passcodes",
    );
    h.pass().await;
    let (_, list, _) = h.call("GET", "/v1/promotions", "vera", None).await;
    let id = list["promotions"][0]["id"].as_i64().unwrap();
    let (status, v, _) = h
        .call("POST", &format!("/v1/promotions/{id}/approve"), "ios1", None)
        .await;
    assert_eq!(status, 200, "{v}");
    h.pass().await;
    let digest2 = h.desired_digest("canary").await;
    assert_ne!(digest2, v1);
    // Soak passes with the canary devices running the new digest.
    h.advance(Duration::minutes(10));
    h.report(&everyone(&digest2, h.now(), None)[..10]).await;
    h.advance(Duration::hours(1));
    h.pass().await;
    h.pass().await;
    let (_, p, _) = h.call("GET", &format!("/v1/promotions/{id}"), "vera", None).await;
    assert_eq!(p["promotion"]["phase"]["phase"], "complete", "{p}");
    let events = h.audit_actions().await;
    assert!(events.iter().any(|(a, _)| a == "gate_passed"), "{events:?}");
    h.report(&everyone(&digest2, h.now(), None)).await;

    // A bad change: half the canary runs an OS below the new minimum.
    let v3 = ios(8, "18.0");
    commit(
        dir.path(),
        &[("baselines/ios/corp-ios.yaml", Some(&v3))],
        "iOS: require iOS 18",
    );
    h.pass().await;
    let (_, list, _) = h.call("GET", "/v1/promotions", "vera", None).await;
    let bad_id = list["promotions"][0]["id"].as_i64().unwrap();
    h.call("POST", &format!("/v1/promotions/{bad_id}/approve"), "ios1", None)
        .await;
    h.pass().await;
    let digest3 = h.desired_digest("canary").await;
    h.advance(Duration::minutes(10));
    h.report(&everyone(&digest3, h.now(), Some("18.0"))[..10]).await;
    h.advance(Duration::hours(1));
    h.pass().await;
    let (_, p, _) = h.call("GET", &format!("/v1/promotions/{bad_id}"), "vera", None).await;
    assert_eq!(p["promotion"]["phase"]["phase"], "halted", "{p}");
    assert_eq!(
        h.desired_digest("broad").await,
        digest2,
        "the bad change never left the canary"
    );
    let (_, drift, _) = h.call("GET", "/v1/drift?ring=canary", "vera", None).await;
    assert_eq!(drift["summary"]["by_ring"]["canary"]["noncompliant"], 5, "{drift}");

    // Roll the canary back; on-call approves; devices re-apply; compliance is back.
    let (status, rb, _) = h
        .call(
            "POST",
            "/v1/rollbacks",
            "dana",
            Some((
                json!({"baseline": "corp-ios", "to": "previous", "rings": ["canary"]}).to_string(),
                "application/json",
            )),
        )
        .await;
    assert_eq!(status, 201, "{rb}");
    let rid = rb["promotion"]["id"].as_i64().unwrap();
    let (status, v, _) = h
        .call("POST", &format!("/v1/promotions/{rid}/approve"), "eli", None)
        .await;
    assert_eq!(status, 200, "{v}");
    h.pass().await;
    assert_eq!(h.desired_digest("canary").await, digest2);
    h.advance(Duration::minutes(5));
    h.report(&everyone(&digest2, h.now(), None)[..10]).await;
    let (_, drift, _) = h.call("GET", "/v1/drift?ring=canary", "vera", None).await;
    assert_eq!(drift["summary"]["by_ring"]["canary"]["noncompliant"], 0, "{drift}");
    assert_eq!(drift["summary"]["findings"], 0, "{drift}");
}

const EXCEPTION: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Exception\nmetadata: {name: legal-short-pin}\nspec:\n  baseline: corp-ios\n  settings: [passcode.min_length]\n  scope: {groups: [legal]}\n  reason: Legacy forensic handsets\n  expires: 2026-11-24T09:00:00Z\n";

#[tokio::test]
async fn exceptions_suppress_until_expiry_and_persistent_findings_become_remediation() {
    let dir = TempDir::new().unwrap();
    let v1 = ios(6, "17.0");
    commit(
        dir.path(),
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(&v1)),
            ("exceptions/legal-short-pin.yaml", Some(EXCEPTION)),
        ],
        "initial",
    );
    let h = serve(dir.path(), Arc::new(Mutex::new(monday()))).await;
    h.state.controller().adopt("HEAD", "test", h.now()).await.unwrap();
    h.pass().await;
    let (_, desired, _) = h.call("GET", "/v1/desired?ring=broad", "mdm", None).await;
    assert_eq!(desired["exceptions"][0]["name"], "legal-short-pin", "{desired}");
    let digest = h.desired_digest("broad").await;
    let bad = ["passcode.min_length"];
    let (_, v) = h
        .report(&[
            device(
                "legal-1",
                &["phones", "legal"],
                "18.0",
                h.now(),
                &digest,
                "applied",
                &bad,
            ),
            device("sales-1", &["phones"], "18.0", h.now(), &digest, "applied", &bad),
        ])
        .await;
    assert_eq!(v["findings_opened"], 1, "only the device outside the exception: {v}");
    let (_, drift, _) = h.call("GET", "/v1/drift", "vera", None).await;
    assert_eq!(drift["summary"]["suppressed"], 1);

    // The exception expires: audited once, and the device still out of line gets its finding.
    // Fresh check-ins shortly before expiry, so nothing but the expiry changes.
    h.advance(Duration::hours(23));
    let at = h.now();
    h.report(&[
        device("legal-1", &["phones", "legal"], "18.0", at, &digest, "applied", &bad),
        device("sales-1", &["phones"], "18.0", at, &digest, "applied", &bad),
    ])
    .await;
    h.advance(Duration::hours(1) + Duration::minutes(1));
    h.pass().await;
    h.pass().await;
    let events = h.audit_actions().await;
    let expired: Vec<_> = events.iter().filter(|(a, _)| a == "exception_expired").collect();
    assert_eq!(
        expired,
        vec![&("exception_expired".to_string(), "exception/legal-short-pin".to_string())]
    );
    let legal_opened = events
        .iter()
        .filter(|e| *e == &("finding_opened".to_string(), "device/legal-1".to_string()))
        .count();
    assert_eq!(legal_opened, 1);
    let expiry_at = events.iter().position(|(a, _)| a == "exception_expired").unwrap();
    let finding_at = events
        .iter()
        .rposition(|e| e == &("finding_opened".to_string(), "device/legal-1".to_string()))
        .unwrap();
    assert!(
        expiry_at < finding_at,
        "the expiry is recorded before the finding it reopens"
    );

    // Setting drift persists past the T2 deadline (3 days): one remediation
    // item for the baseline's owners, due one deadline later.
    // sales-1's finding is now 3 days old, legal-1's (reopened at expiry) 2 days.
    h.advance(Duration::days(2));
    let at = h.now();
    h.report(&[
        device("legal-1", &["phones", "legal"], "18.0", at, &digest, "applied", &bad),
        device("sales-1", &["phones"], "18.0", at, &digest, "applied", &bad),
    ])
    .await;
    h.pass().await;
    let (status, r, _) = h.call("GET", "/v1/remediation", "vera", None).await;
    assert_eq!(status, 200);
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{r}");
    let item = &items[0];
    assert_eq!(item["id"], "corp-ios/setting_drift/passcode.min_length");
    assert_eq!(item["owners"], json!(["mdm-ios"]));
    assert_eq!(item["devices"], 1, "only sales-1 is past the deadline: {item}");
    let opened_at: DateTime<Utc> = item["opened_at"].as_str().unwrap().parse().unwrap();
    let due: DateTime<Utc> = item["due"].as_str().unwrap().parse().unwrap();
    assert_eq!(due - opened_at, Duration::days(3));
    assert!(h
        .audit_actions()
        .await
        .iter()
        .any(|(a, s)| a == "remediation_opened" && s == "remediation/corp-ios/setting_drift/passcode.min_length"));

    // Both devices comply again: the findings and the item close.
    h.advance(Duration::minutes(5));
    let at = h.now();
    h.report(&[
        device("legal-1", &["phones", "legal"], "18.0", at, &digest, "applied", &[]),
        device("sales-1", &["phones"], "18.0", at, &digest, "applied", &[]),
    ])
    .await;
    h.pass().await;
    let (_, r, _) = h.call("GET", "/v1/remediation", "vera", None).await;
    assert_eq!(r["items"], json!([]));
    assert!(h.audit_actions().await.iter().any(|(a, _)| a == "remediation_closed"));
}

#[tokio::test]
async fn devices_that_stop_reporting_go_stale_and_a_report_from_one_device_never_touches_another() {
    let (_dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let at = h.now();
    h.report(&[
        device("a", &["phones"], "18.0", at, &digest, "applied", &[]),
        device("b", &["phones"], "18.0", at, &digest, "applied", &[]),
    ])
    .await;
    h.advance(Duration::hours(25));
    // Only "a" reports again; a replayed old report of "b" changes nothing.
    let (_, v) = h
        .report(&[
            device("a", &["phones"], "18.0", h.now(), &digest, "applied", &[]),
            device(
                "b",
                &["phones"],
                "18.0",
                at,
                &digest,
                "failed",
                &["passcode.min_length"],
            ),
        ])
        .await;
    assert_eq!((v["accepted"].as_u64(), v["stale"].as_u64()), (Some(1), Some(1)), "{v}");
    h.pass().await;
    let (_, a, _) = h.call("GET", "/v1/devices/a", "vera", None).await;
    let (_, b, _) = h.call("GET", "/v1/devices/b", "vera", None).await;
    assert_eq!(a["findings"], json!([]));
    let kinds: Vec<&str> = b["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["stale_checkin"]);
    let (status, _, _) = h.call("GET", "/v1/devices/nobody", "vera", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_policy_can_roll_a_ring_back_by_itself_when_its_gate_fails() {
    // The shipped policy, asking for an automatic rollback on gate failure.
    let policy = tollgate::risk::BUILTIN_POLICY.replace(
        "\"fresh_approval_per_ring\": false,",
        "\"fresh_approval_per_ring\": false,\n\t\"on_gate_failure\": \"rollback\",",
    );
    assert!(policy.contains("on_gate_failure"));
    let dir = TempDir::new().unwrap();
    let v1 = ios(6, "17.0");
    commit(
        dir.path(),
        &[
            ("tollgate.yaml", Some(CONFIG)),
            ("policy/risk.rego", Some(&policy)),
            ("baselines/ios/corp-ios.yaml", Some(&v1)),
        ],
        "initial",
    );
    let h = serve(dir.path(), Arc::new(Mutex::new(monday()))).await;
    h.state.controller().adopt("HEAD", "test", h.now()).await.unwrap();
    h.pass().await;
    let v1_digest = h.desired_digest("canary").await;
    let canary = |digest: &str, at: DateTime<Utc>, bad: &[&str]| -> Vec<Value> {
        (0..10)
            .map(|i| {
                let b: &[&str] = if i < 5 { bad } else { &[] };
                device(
                    &format!("c{i}"),
                    &["phones", "mdm-canary"],
                    "17.2",
                    at,
                    digest,
                    "applied",
                    b,
                )
            })
            .collect()
    };
    h.report(&canary(&v1_digest, h.now(), &[])).await;

    let v2 = ios(6, "18.0");
    commit(
        dir.path(),
        &[("baselines/ios/corp-ios.yaml", Some(&v2))],
        "iOS: require iOS 18",
    );
    h.pass().await;
    let (_, list, _) = h.call("GET", "/v1/promotions", "vera", None).await;
    let id = list["promotions"][0]["id"].as_i64().unwrap();
    let (_, p, _) = h.call("GET", &format!("/v1/promotions/{id}"), "vera", None).await;
    assert_eq!(
        p["promotion"]["changes"][0]["requirements"]["on_gate_failure"], "rollback",
        "{p}"
    );
    h.call("POST", &format!("/v1/promotions/{id}/approve"), "ios1", None)
        .await;
    h.pass().await;
    let bad_digest = h.desired_digest("canary").await;
    assert_ne!(bad_digest, v1_digest);
    h.advance(Duration::minutes(10));
    h.report(&canary(&bad_digest, h.now(), &["os.min_version"])).await;
    h.advance(Duration::hours(1));
    h.pass().await;
    let (_, p, _) = h.call("GET", &format!("/v1/promotions/{id}"), "vera", None).await;
    assert_eq!(p["promotion"]["phase"]["phase"], "halted", "{p}");
    // The policy's rollback is requested with the halt and carried out
    // without waiting for a person, loudly audited.
    h.pass().await;
    assert_eq!(
        h.desired_digest("canary").await,
        v1_digest,
        "the canary runs the previous version again"
    );
    let events = h.audit_actions().await;
    for action in ["gate_failed", "auto_rollback_requested", "break_glass"] {
        assert!(events.iter().any(|(a, _)| a == action), "{action} missing: {events:?}");
    }
    let (_, list, _) = h.call("GET", "/v1/promotions", "vera", None).await;
    let rollbacks = list["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "rollback")
        .count();
    assert_eq!(rollbacks, 1, "exactly one rollback: {list}");
    h.pass().await;
    let (_, list, _) = h.call("GET", "/v1/promotions", "vera", None).await;
    let again = list["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "rollback")
        .count();
    assert_eq!(again, 1, "later passes do not roll back again");
}

#[tokio::test]
async fn tollgate_drift_renders_the_summary_and_the_devices() {
    use std::str::FromStr;
    use tollgate::cli::client::{ApiToken, ServerArgs};
    use tollgate::cli::drift::{drift_cmd, DriftArgs};
    use tollgate::cli::Format;

    let (_dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let at = h.now();
    h.report(&[
        device("phone-1", &["phones", "mdm-canary"], "18.0", at, &digest, "failed", &[]),
        device(
            "phone-2",
            &["phones"],
            "18.0",
            at,
            &digest,
            "applied",
            &["passcode.min_length"],
        ),
        device("phone-3", &["phones"], "18.0", at, &digest, "applied", &[]),
    ])
    .await;
    let render = |format: Format, kind: Option<&str>| {
        let args = DriftArgs {
            server: ServerArgs {
                server: h.base.clone(),
                token: Some(ApiToken::from_str(token("vera")).unwrap()),
            },
            ring: None,
            baseline: None,
            kind: kind.map(String::from),
            setting: None,
            limit: 20,
            after: None,
        };
        async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let exit = drift_cmd(&args, &mut out, format).unwrap();
                (exit, String::from_utf8(out).unwrap())
            })
            .await
            .unwrap()
        }
    };
    let (exit, text) = render(Format::Text, None).await;
    assert_eq!(exit, tollgate::cli::Exit::Ok);
    insta::assert_snapshot!("drift_text", text);
    let (_, json) = render(Format::Json, Some("setting_drift")).await;
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["devices"][0]["id"], "phone-2");
    assert_eq!(v["devices"].as_array().unwrap().len(), 1);
    let (_, bad) = render(Format::Json, Some("no_such_kind")).await;
    let v: Value = serde_json::from_str(&bad).unwrap();
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
}

#[tokio::test]
async fn a_check_in_that_changes_nothing_else_stores_only_its_time() {
    let (dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let stored = || async {
        let db = store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
            .await
            .unwrap();
        (
            db.kv_get("device/same-1").await.unwrap().unwrap(),
            db.kv_get("checkin/same-1").await.unwrap(),
        )
    };
    let t1 = h.now();
    let (status, v) = h
        .report(&[device("same-1", &["phones"], "18.0", t1, &digest, "applied", &[])])
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let (row, checkin) = stored().await;
    assert_eq!(
        (row["checked_in_at"].as_str(), checkin),
        (Some(secs(t1).as_str()), None)
    );

    // The same report, later: only the time is written.
    h.advance(Duration::minutes(5));
    let t2 = h.now();
    let (_, v) = h
        .report(&[device("same-1", &["phones"], "18.0", t2, &digest, "applied", &[])])
        .await;
    assert_eq!(v["accepted"], 1, "{v}");
    let (row, checkin) = stored().await;
    assert_eq!(
        row["checked_in_at"],
        json!(secs(t1)),
        "the report row is left as it was"
    );
    assert_eq!(checkin, Some(json!(secs(t2))));

    // After a restart the device is as of its last check-in: the same
    // report again is a duplicate, and its time is the later one.
    h.shut_down().await;
    let h = serve(dir.path(), Arc::new(Mutex::new(t2 + Duration::minutes(1)))).await;
    h.pass().await;
    let (status, d, _) = h.call("GET", "/v1/devices/same-1", "vera", None).await;
    assert_eq!(
        (status, d["checked_in_at"].as_str()),
        (200, Some(secs(t2).as_str())),
        "{d}"
    );
    let (_, v) = h
        .report(&[device("same-1", &["phones"], "18.0", t2, &digest, "applied", &[])])
        .await;
    assert_eq!((v["accepted"].as_u64(), v["stale"].as_u64()), (Some(0), Some(1)), "{v}");

    // The first report after a restart, and any report that changes
    // something, is written whole.
    h.advance(Duration::minutes(5));
    let t3 = h.now();
    h.report(&[device("same-1", &["phones"], "18.0", t3, &digest, "applied", &[])])
        .await;
    assert_eq!(stored().await.0["checked_in_at"], json!(secs(t3)));
    h.advance(Duration::minutes(5));
    let t4 = h.now();
    h.report(&[device("same-1", &["phones"], "18.0", t4, &digest, "applied", &[])])
        .await;
    assert_eq!(stored().await.0["checked_in_at"], json!(secs(t3)));
    h.advance(Duration::minutes(5));
    let t5 = h.now();
    h.report(&[device("same-1", &["phones"], "18.1", t5, &digest, "applied", &[])])
        .await;
    let (row, _) = stored().await;
    assert_eq!(
        (row["checked_in_at"].as_str(), row["os"]["version"].as_str()),
        (Some(secs(t5).as_str()), Some("18.1"))
    );
}

#[tokio::test]
async fn stored_rows_that_no_longer_read_are_skipped_and_the_earlier_form_still_reads() {
    let (dir, h) = adopted().await;
    let digest = h.desired_digest("broad").await;
    let at = h.now();
    let (status, v) = h
        .report(&[
            device("kept-1", &["phones"], "18.0", at, &digest, "applied", &[]),
            device("older-1", &["phones"], "18.0", at, &digest, "applied", &[]),
            device("broken-1", &["phones"], "18.0", at, &digest, "applied", &[]),
        ])
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(3)), "{v}");
    h.shut_down().await;

    // Rewrite two rows behind the controller's back: one in the form earlier
    // versions stored (no `schema`), one that breaks today's rules.
    let db = store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap();
    let mut older = db.kv_get("device/older-1").await.unwrap().unwrap();
    older.as_object_mut().unwrap().remove("schema");
    let mut broken = db.kv_get("device/broken-1").await.unwrap().unwrap();
    broken["os"]["version"] = json!("");
    db.commit(store::Transition {
        kv: vec![
            ("device/older-1".into(), Some(older)),
            ("device/broken-1".into(), Some(broken)),
        ],
        ..store::Transition::default()
    })
    .await
    .unwrap();
    drop(db);

    let h = serve(dir.path(), Arc::new(Mutex::new(at + Duration::minutes(1)))).await;
    h.pass().await;
    let metrics = metrics_text(&h).await;
    assert!(metrics.contains("tollgate_devices 2"), "{metrics}");
    for (id, want) in [("kept-1", 200), ("older-1", 200), ("broken-1", 404)] {
        let (status, d, _) = h.call("GET", &format!("/v1/devices/{id}"), "vera", None).await;
        assert_eq!(status, want, "{id}: {d}");
    }
    // The skipped device is back with its next report, even an old one.
    let (_, v) = h
        .report(&[device("broken-1", &["phones"], "18.0", at, &digest, "applied", &[])])
        .await;
    assert_eq!(v["accepted"], 1, "{v}");
    let (status, _, _) = h.call("GET", "/v1/devices/broken-1", "vera", None).await;
    assert_eq!(status, 200);
}
