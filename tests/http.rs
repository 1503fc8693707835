//! The HTTP API end to end: the real router on 127.0.0.1 over a real SQLite
//! store and a real git repo, driven through real HTTP requests, and the
//! `tollgate` binary's client commands against it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;

use tollgate::audit::{verify, verify_jsonl, AuditEvent};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;
use tollgate::controller::{Controller, NoDevices, Role, TokenConfig};
use tollgate::http::{ApiOptions, ApiState, Poller, Tokens};
use tollgate::store;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-security: {users: [sec1]}
  mdm-ios: {users: [ios1, ios2]}
  oncall: {users: [dana, eli]}
windows:
  business-hours: {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}
"#;

const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones, mdm-canary]}\n  settings:\n    passcode.min_length: 8\n";

/// Token names are identities (approvers in tollgate.yaml); the secrets are
/// distinctive so a leak into logs or output is easy to spot.
const TOKENS: &[(&str, Role, &str)] = &[
    ("vera", Role::Viewer, "tgk-viewer-8c1f2d4e"),
    ("mdm-reporter", Role::Reporter, "tgk-reporter-51aa90c3"),
    ("sec1", Role::Approver, "tgk-sec1-7e3b66f0"),
    ("ios1", Role::Approver, "tgk-ios1-0d9c4a12"),
    ("ios2", Role::Approver, "tgk-ios2-a4f7e8b9"),
    ("eli", Role::Approver, "tgk-eli-62b0f9d1"),
    ("dana", Role::Operator, "tgk-dana-3c5d1e07"),
];

fn token(name: &str) -> &'static str {
    TOKENS.iter().find(|(n, _, _)| *n == name).map(|(_, _, t)| *t).unwrap()
}

fn token_config() -> Vec<TokenConfig> {
    TOKENS
        .iter()
        .map(|(name, role, secret)| TokenConfig {
            name: name.to_string(),
            role: *role,
            sha256: token_hash(secret),
            scope: None,
        })
        .collect()
}

fn monday() -> DateTime<Utc> {
    // 10:00 in Berlin: inside the business-hours window.
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

struct Harness {
    dir: TempDir,
    base: String,
    state: ApiState,
    poller: Poller,
    clock: Arc<Mutex<DateTime<Utc>>>,
}

impl Harness {
    /// A governed repo with one commit, a store, and the API on a free port.
    async fn start() -> Harness {
        let dir = TempDir::new().unwrap();
        let repo = dir.path().join("repo");
        let history = [SampleCommit {
            author: "priya",
            message: "initial",
            files: &[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
            ],
        }];
        write_sample_repo(&repo, &history).unwrap();
        let url = format!("file://{}", repo.display());
        Self::serve(dir, url).await
    }

    async fn serve(dir: TempDir, source_url: String) -> Harness {
        let db = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = store::open(&db).await.unwrap();
        let controller = Controller::new(
            store,
            source_url,
            "main".into(),
            dir.path().join("mirror"),
            Arc::new(NoDevices),
        );
        let clock = Arc::new(Mutex::new(monday()));
        let c = clock.clone();
        let options = ApiOptions {
            clock: Arc::new(move || *c.lock().unwrap()),
            ..ApiOptions::default()
        };
        let state = ApiState::new(
            Arc::new(controller),
            Tokens::from_config(&token_config()).unwrap(),
            options,
        );
        state.refresh_metrics().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(tollgate::http::serve(listener, state.clone(), std::future::pending()));
        let poller = Poller::new(state.clone(), "test");
        Harness {
            dir,
            base,
            state,
            poller,
            clock,
        }
    }

    fn advance(&self, by: chrono::Duration) {
        *self.clock.lock().unwrap() += by;
    }

    async fn pass(&self) -> bool {
        self.poller.pass(self.state.now()).await
    }

    async fn get(&self, path: &str, who: Option<&str>) -> Reply {
        call("GET", format!("{}{path}", self.base), who.map(token), None, vec![]).await
    }

    async fn post(&self, path: &str, who: Option<&str>, body: Option<Value>) -> Reply {
        call(
            "POST",
            format!("{}{path}", self.base),
            who.map(token),
            body.map(|b| b.to_string()),
            vec![],
        )
        .await
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The code of a JSON error body (and a check that it has the shape).
    fn code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["error"]["code"].as_str().unwrap().to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn call(
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<String>,
    headers: Vec<(&str, &str)>,
) -> Reply {
    let method = method.to_string();
    let token = token.map(str::to_string);
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let mut response = agent.run(req.body(body.unwrap_or_default()).unwrap()).unwrap();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status: response.status().as_u16(),
            headers,
            body,
        }
    })
    .await
    .unwrap()
}

fn phase(view: &Value) -> String {
    view["promotion"]["phase"]["phase"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tokens_and_roles_guard_every_endpoint() {
    let h = Harness::start().await;
    assert!(h.pass().await);

    let r = h.get("/v1/promotions", None).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = call(
        "GET",
        format!("{}/v1/promotions", h.base),
        Some("not-a-token"),
        None,
        vec![],
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    let basic = call(
        "GET",
        format!("{}/v1/status", h.base),
        None,
        None,
        vec![("Authorization", "Basic dmVyYTp4")],
    )
    .await;
    assert_eq!(basic.status, 401);
    // The hash is not a token.
    let r = call(
        "GET",
        format!("{}/v1/status", h.base),
        Some(&token_hash(token("vera"))),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 401);

    // A viewer reads everything and changes nothing.
    for path in [
        "/v1/promotions",
        "/v1/promotions/1",
        "/v1/status",
        "/v1/audit",
        "/v1/audit/export",
    ] {
        assert_eq!(h.get(path, Some("vera")).await.status, 200, "{path}");
    }
    let r = h.post("/v1/promotions/1/approve", Some("vera"), None).await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r = h
        .post("/v1/promotions/1/halt", Some("vera"), Some(json!({"reason": "x"})))
        .await;
    assert_eq!(r.status, 403);

    // A reporter reads desired state only.
    let r = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "allowed, but nothing is promoted yet"
    );
    for path in ["/v1/promotions", "/v1/status", "/v1/audit"] {
        let r = h.get(path, Some("mdm-reporter")).await;
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{path}");
    }
    let r = h.post("/v1/promotions/1/approve", Some("mdm-reporter"), None).await;
    assert_eq!(r.status, 403);

    // Approvers approve but do not halt; operators halt but do not approve.
    let r = h
        .post("/v1/promotions/1/halt", Some("sec1"), Some(json!({"reason": "x"})))
        .await;
    assert_eq!(r.status, 403);
    let r = h.post("/v1/promotions/1/approve", Some("dana"), None).await;
    assert_eq!(r.status, 403);
    let r = h.post("/v1/trigger", Some("sec1"), None).await;
    assert_eq!(r.status, 403);
    let r = h.post("/v1/trigger", Some("dana"), None).await;
    assert_eq!(r.status, 202);

    // Probes and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(h.get(path, None).await.status, 200, "{path}");
    }
    let r = h.get("/v1/nothing-here", Some("vera")).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = h.post("/v1/status", Some("vera"), None).await;
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn approvals_through_http_publish_ring_by_ring() {
    let h = Harness::start().await;
    assert!(h.pass().await);

    let list = h
        .get("/v1/promotions?phase=pending_approval", Some("vera"))
        .await
        .json();
    let promotions = list["promotions"].as_array().unwrap();
    assert_eq!(promotions.len(), 1, "{list}");
    let id = promotions[0]["id"].as_i64().unwrap();
    assert_eq!(promotions[0]["tier"], 3);

    let view = h.get(&format!("/v1/promotions/{id}"), Some("vera")).await.json();
    assert_eq!(phase(&view), "pending_approval");
    assert_eq!(view["approvals"]["satisfied"], false, "{view}");
    assert_eq!(view["reviews"], json!([]));

    // One owner is not enough for T3; the reviewer is the token's name.
    let view = h
        .post(&format!("/v1/promotions/{id}/approve"), Some("ios1"), None)
        .await
        .json();
    assert_eq!(phase(&view), "pending_approval");
    assert_eq!(view["reviews"][0]["reviewer"], "ios1");
    let explained = &view["approvals"]["changes"];
    assert!(explained.as_array().is_some_and(|c| !c.is_empty()), "{view}");
    assert!(
        explained.to_string().contains("mdm-security"),
        "the missing group is named: {explained}"
    );

    // A request for changes is recorded as such; then sec1 approves.
    let view = h
        .post(
            &format!("/v1/promotions/{id}/approve"),
            Some("sec1"),
            Some(json!({"state": "changes_requested"})),
        )
        .await
        .json();
    assert_eq!(view["reviews"][1]["state"], "changes_requested");
    let r = h
        .post(
            &format!("/v1/promotions/{id}/approve"),
            Some("sec1"),
            Some(json!({"state": "dismissed"})),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"));
    let r = h
        .post(
            &format!("/v1/promotions/{id}/approve"),
            Some("sec1"),
            Some(json!({"state": "approved", "x": 1})),
        )
        .await;
    assert_eq!(r.status, 422, "unknown fields are refused");
    let view = h
        .post(
            &format!("/v1/promotions/{id}/approve"),
            Some("sec1"),
            Some(json!({"state": "approved"})),
        )
        .await
        .json();
    assert_eq!(phase(&view), "soaking", "{view}");
    assert_eq!(view["approvals"]["satisfied"], true);

    // The canary's desired state, with a validator.
    let canary = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!(canary.status, 200, "{}", canary.body);
    assert_eq!(canary.json()["promotion"], id);
    let etag = canary.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    let url = format!("{}/v1/desired?ring=canary", h.base);
    let again = call(
        "GET",
        url.clone(),
        Some(token("mdm-reporter")),
        None,
        vec![("If-None-Match", &etag)],
    )
    .await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let weak = format!("\"other\", W/{etag}");
    let again = call(
        "GET",
        url.clone(),
        Some(token("mdm-reporter")),
        None,
        vec![("If-None-Match", &weak)],
    )
    .await;
    assert_eq!(again.status, 304);
    let stale = call(
        "GET",
        url,
        Some(token("mdm-reporter")),
        None,
        vec![("If-None-Match", "\"stale\"")],
    )
    .await;
    assert_eq!((stale.status, stale.body.as_str()), (200, canary.body.as_str()));
    assert_eq!(
        h.get("/v1/desired?ring=broad", Some("vera")).await.status,
        404,
        "broad waits for the canary"
    );
    assert_eq!(h.get("/v1/desired", Some("vera")).await.status, 400);
    assert_eq!(h.get("/v1/desired?ring=Bad_Ring", Some("vera")).await.status, 400);

    // After the soak, the next ring needs fresh approvals (T3).
    h.advance(chrono::Duration::hours(2));
    assert!(h.pass().await);
    let view = h.get(&format!("/v1/promotions/{id}"), Some("vera")).await.json();
    assert_eq!(phase(&view), "pending_approval");
    assert_eq!(view["approvals"]["ring"], "broad", "{view}");
    h.post(&format!("/v1/promotions/{id}/approve"), Some("ios2"), None)
        .await;
    let view = h
        .post(&format!("/v1/promotions/{id}/approve"), Some("sec1"), None)
        .await
        .json();
    assert_eq!(phase(&view), "complete", "{view}");
    assert_eq!(h.get("/v1/desired?ring=broad", Some("vera")).await.status, 200);
    let canary_again = h.get("/v1/desired?ring=canary", Some("vera")).await;
    assert_eq!(
        canary_again.header("etag"),
        Some(etag.as_str()),
        "unchanged state keeps its tag"
    );

    // Finished promotions take no reviews; unknown ones are 404.
    let r = h
        .post(&format!("/v1/promotions/{id}/approve"), Some("ios1"), None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "not_live"));
    let r = h.post("/v1/promotions/999/approve", Some("ios1"), None).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = h.get("/v1/promotions/abc", Some("vera")).await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = h.get("/v1/promotions?phase=bogus", Some("vera")).await;
    assert_eq!(r.status, 400);
    let r = h.get("/v1/promotions?limit=0", Some("vera")).await;
    assert_eq!(r.status, 400);

    // Status shows the source, the rings and the loop.
    let s = h.get("/v1/status", Some("vera")).await.json();
    assert_eq!(s["source"]["branch"], "main");
    assert_eq!(s["source"]["tip"].as_str().map(str::len), Some(40), "{s}");
    assert_eq!(s["controller"]["ready"], true);
    assert_eq!(s["controller"]["loop"]["leader"], true);
    assert_eq!(s["promotions"]["pending_approval"], 0);
    let rings: Vec<&str> = s["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ring"].as_str().unwrap())
        .collect();
    assert_eq!(rings, ["canary", "broad"]);

    // Pages: newest first, `next_before` continues.
    let git = git2::Repository::open(h.repo()).unwrap();
    commit(
        &git,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 10"),
    );
    assert!(h.pass().await);
    let page = h.get("/v1/promotions?limit=1", Some("vera")).await.json();
    assert_eq!(page["promotions"][0]["tier"], 2);
    let before = page["next_before"].as_i64().unwrap();
    let page = h
        .get(&format!("/v1/promotions?limit=1&before={before}"), Some("vera"))
        .await
        .json();
    assert_eq!(page["promotions"][0]["id"], id);
}

fn commit(repo: &git2::Repository, author: &str, path: &str, text: &str) {
    let root = repo.workdir().unwrap();
    std::fs::write(root.join(path), text).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(path)).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now(author, "a@example.com").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "change", &tree, &[&parent])
        .unwrap();
}

#[tokio::test]
async fn halting_needs_an_operator_and_a_reason() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    let r = h.post("/v1/promotions/1/halt", Some("dana"), None).await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"));
    let r = h
        .post("/v1/promotions/1/halt", Some("dana"), Some(json!({"reason": "   "})))
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"));
    let r = h
        .post("/v1/promotions/1/halt", Some("dana"), Some(json!({"why": "x"})))
        .await;
    assert_eq!(r.status, 422);
    let r = call(
        "POST",
        format!("{}/v1/promotions/1/halt", h.base),
        Some(token("dana")),
        Some("{not json".into()),
        vec![],
    )
    .await;
    assert_eq!(r.status, 422);

    let view = h
        .post(
            "/v1/promotions/1/halt",
            Some("dana"),
            Some(json!({"reason": "wrong baseline"})),
        )
        .await
        .json();
    assert_eq!(phase(&view), "halted");
    let reason = view["promotion"]["phase"]["reason"].as_str().unwrap();
    assert!(reason.contains("dana") && reason.contains("wrong baseline"), "{reason}");

    let r = h
        .post("/v1/promotions/1/halt", Some("dana"), Some(json!({"reason": "again"})))
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "not_live"));
    let r = h
        .post("/v1/promotions/42/halt", Some("dana"), Some(json!({"reason": "x"})))
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));

    let audit = h.get("/v1/audit", Some("vera")).await.json();
    let halted = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "promotion_halted")
        .expect("a halt event");
    assert_eq!(halted["details"]["actor"], "dana");
}

/// Sends `head` and then `body` on a raw connection and returns what came back.
fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before taking everything.
    let _ = s.write_all(&body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_they_are_read() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    let addr = h.base.trim_start_matches("http://").to_string();
    let dana = token("dana");

    // A declared 100 MiB: refused at once, though not a byte of it was sent.
    let head = format!(
        "POST /v1/promotions/1/halt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {dana}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    let a = addr.clone();
    let reply = tokio::task::spawn_blocking(move || raw_exchange(&a, head, Vec::new()))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"code\":\"body_too_large\""), "{reply}");

    // A chunked body is read only until it passes the limit.
    let head = format!(
        "POST /v1/promotions/1/halt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {dana}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..5 {
        body.extend_from_slice(format!("{:x}\r\n", 16 * 1024).as_bytes());
        body.extend(std::iter::repeat_n(b' ', 16 * 1024));
        body.extend_from_slice(b"\r\n");
    }
    let a = addr.clone();
    let reply = tokio::task::spawn_blocking(move || raw_exchange(&a, head, body))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // Without a valid token the size does not matter: 401 first.
    let head = format!(
        "POST /v1/promotions/1/halt HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    let reply = tokio::task::spawn_blocking(move || raw_exchange(&addr, head, Vec::new()))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");

    // The promotion was not touched.
    let view = h.get("/v1/promotions/1", Some("vera")).await.json();
    assert_eq!(phase(&view), "pending_approval");
}

#[tokio::test]
async fn readiness_waits_for_the_first_pass_and_errors_are_reported() {
    let h = Harness::start().await;
    let r = h.get("/readyz", None).await;
    assert_eq!((r.status, r.code().as_str()), (503, "not_ready"));
    assert_eq!(h.get("/healthz", None).await.status, 200, "alive all the same");
    let s = h.get("/v1/status", Some("vera")).await.json();
    assert_eq!(s["controller"]["ready"], false);
    assert_eq!(s["controller"]["loop"]["leader"], Value::Null);
    let r = h.post("/v1/promotions/1/approve", Some("sec1"), None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "not_leader"),
        "no writes before leadership is known"
    );
    assert!(h.pass().await);
    let r = h.get("/readyz", None).await;
    assert_eq!((r.status, r.json()["ready"].clone()), (200, json!(true)));

    // A source that cannot be fetched: the pass fails, is counted and shown.
    let dir = TempDir::new().unwrap();
    let missing = format!("file://{}", dir.path().join("no-such-repo").display());
    let broken = Harness::serve(dir, missing).await;
    assert!(!broken.pass().await);
    let r = broken.get("/readyz", None).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("poll"),
        "{}",
        r.body
    );
    let s = broken.get("/v1/status", Some("vera")).await.json();
    let err = &s["controller"]["loop"]["last_error"];
    assert_eq!(err["stage"], "poll", "{s}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(s["controller"]["loop"]["consecutive_errors"], 1);
    let metrics = broken.get("/metrics", None).await.body;
    assert!(
        metrics.contains("tollgate_poll_errors_total{stage=\"poll\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_replica_that_does_not_lead_serves_reads_only() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    // A second process on the same database.
    let db = format!("sqlite://{}", h.dir.path().join("state.db").display());
    let store = store::open(&db).await.unwrap();
    let url = format!("file://{}", h.repo().display());
    let controller = Controller::new(
        store,
        url,
        "main".into(),
        h.dir.path().join("mirror2"),
        Arc::new(NoDevices),
    );
    let state = ApiState::new(
        Arc::new(controller),
        Tokens::from_config(&token_config()).unwrap(),
        ApiOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tollgate::http::serve(listener, state.clone(), std::future::pending()));
    assert!(
        Poller::new(state.clone(), "second").pass(monday()).await,
        "following is not a failure"
    );

    let get = |path: &str, who: &str| call("GET", format!("{base}{path}"), Some(token(who)), None, vec![]);
    assert_eq!(get("/readyz", "vera").await.status, 200);
    let s = get("/v1/status", "vera").await.json();
    assert_eq!(s["controller"]["loop"]["leader"], false, "{s}");
    assert_eq!(get("/v1/promotions/1", "vera").await.status, 200);
    let r = call(
        "POST",
        format!("{base}/v1/promotions/1/approve"),
        Some(token("sec1")),
        None,
        vec![],
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (503, "not_leader"));
    assert_eq!(r.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn metrics_cover_promotions_polls_gates_reviews_and_requests() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    h.post("/v1/promotions/1/approve", Some("ios1"), None).await;
    h.post(
        "/v1/promotions/1/approve",
        Some("sec1"),
        Some(json!({"state": "changes_requested"})),
    )
    .await;
    let m = h.get("/metrics", None).await;
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{m:?}"
    );
    for needle in [
        "tollgate_promotions{phase=\"pending_approval\"} 1",
        "tollgate_promotions{phase=\"soaking\"} 0",
        "tollgate_git_poll_duration_seconds_count 1",
        "# TYPE tollgate_poll_errors counter",
        "tollgate_approval_decisions_total{result=\"approved\"} 1",
        "tollgate_approval_decisions_total{result=\"changes_requested\"} 1",
        "tollgate_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/promotions/{id}/approve\",status=\"200\"} 2",
    ] {
        assert!(m.body.contains(needle), "{needle} missing from\n{}", m.body);
    }

    h.post("/v1/promotions/1/approve", Some("sec1"), None).await;
    h.advance(chrono::Duration::hours(2));
    assert!(h.pass().await);
    let m = h.get("/metrics", None).await.body;
    for needle in [
        "tollgate_gate_results_total{result=\"passed\"} 1",
        "tollgate_promotions{phase=\"pending_approval\"} 1",
        "tollgate_git_poll_duration_seconds_count 2",
        "tollgate_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\",status=\"200\"} 1",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    assert!(!m.contains("/v1/promotions/1/"), "routes are templates, not paths");
}

#[tokio::test]
async fn the_audit_log_pages_and_exports_a_verifiable_chain() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    h.post("/v1/promotions/1/approve", Some("ios1"), None).await;
    h.post("/v1/promotions/1/approve", Some("sec1"), None).await;

    let all: Vec<AuditEvent> = serde_json::from_str(&h.get("/v1/audit", Some("vera")).await.body).unwrap();
    assert!(all.len() >= 5, "{all:?}");
    let report = verify(all.clone()).unwrap();
    let first: Vec<AuditEvent> =
        serde_json::from_str(&h.get("/v1/audit?after=0&limit=2", Some("vera")).await.body).unwrap();
    let rest: Vec<AuditEvent> = serde_json::from_str(&h.get("/v1/audit?after=2", Some("vera")).await.body).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!([first, rest].concat(), all);
    assert_eq!(h.get("/v1/audit?limit=0", Some("vera")).await.status, 400);
    assert_eq!(h.get("/v1/audit?after=x", Some("vera")).await.status, 400);

    let export = h.get("/v1/audit/export", Some("vera")).await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        export.header("tollgate-audit-head-seq"),
        Some(report.last_seq.to_string().as_str())
    );
    assert_eq!(
        export.header("tollgate-audit-head-hash"),
        Some(report.head_hash.as_str())
    );
    let exported = verify_jsonl(&mut export.body.as_bytes()).unwrap();
    assert_eq!(exported, report);
}

/// Runs the built binary with the server and token in its environment.
async fn tollgate(args: &[&str], server: &str, who: Option<&str>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let server = server.to_string();
    let token = who.map(token);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(&args)
            .env("TOLLGATE_SERVER", &server)
            .env_remove("TOLLGATE_TOKEN")
            .env("NO_COLOR", "1");
        if let Some(t) = token {
            cmd.env("TOLLGATE_TOKEN", t);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_talks_to_the_api() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    let server = h.base.as_str();

    let o = tollgate(&["status"], server, Some("vera")).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("leader; ready") && out.contains("pending_approval 1"),
        "{out}"
    );
    let o = tollgate(&["-o", "json", "status"], server, Some("vera")).await;
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["promotions"]["pending_approval"], 1);

    // Refusals show the server's code and message, and exit 1.
    let o = tollgate(&["approve", "1"], server, Some("vera")).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("forbidden") && err.contains("vera"), "{out}{err}");
    let o = tollgate(&["-o", "json", "approve", "1"], server, None).await;
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");
    let o = tollgate(&["approve", "0"], server, Some("sec1")).await;
    assert_eq!(o.status.code(), Some(2), "ids are validated before any request");

    let o = tollgate(&["approve", "1"], server, Some("ios1")).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("pending_approval") && out.contains("missing"), "{out}");
    let o = tollgate(&["-o", "json", "approve", "1"], server, Some("sec1")).await;
    let view: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(phase(&view), "soaking");

    let o = tollgate(&["history", "corp-ios"], server, Some("vera")).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("1 ") && l.contains("soaking (canary)")),
        "{out}"
    );
    let o = tollgate(&["-o", "json", "history", "corp-android"], server, Some("vera")).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["promotions"], json!([]));

    let o = tollgate(&["halt", "1", "--reason", "bad canary"], server, Some("sec1")).await;
    assert_eq!(o.status.code(), Some(1), "approvers cannot halt");
    let o = tollgate(&["halt", "1", "--reason", "bad canary"], server, Some("dana")).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("halted") && out.contains("bad canary"), "{out}");

    let o = tollgate(&["audit", "verify"], server, Some("vera")).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.starts_with("audit log intact:"), "{out}");

    let file = h.dir.path().join("audit.jsonl");
    let o = tollgate(
        &["audit", "export", "--out", file.to_str().unwrap()],
        server,
        Some("vera"),
    )
    .await;
    assert!(o.status.success(), "{:?}", text(&o));
    let o = tollgate(
        &["-o", "json", "audit", "verify", "--file", file.to_str().unwrap()],
        server,
        None,
    )
    .await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["intact"], true, "{v}");

    // An altered export is caught, with exit 1.
    let exported = std::fs::read_to_string(&file).unwrap();
    let tampered = exported.replacen("\"actor\":\"ios1\"", "\"actor\":\"eve1\"", 1);
    assert_ne!(tampered, exported);
    std::fs::write(&file, tampered).unwrap();
    let o = tollgate(&["audit", "verify", "--file", file.to_str().unwrap()], server, None).await;
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("BROKEN"), "{out}");

    // Nothing the CLI printed holds a secret.
    for (_, _, secret) in TOKENS {
        assert!(!out.contains(secret));
    }
}

/// A buffer that a tracing subscriber writes into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn no_token_or_token_hash_reaches_the_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    // Global, not per thread: callsites are shared with the tests running
    // beside this one, whose output then lands here too (with the same
    // tokens, which must not show either). No other test sets a subscriber.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let h = Harness::start().await;
    assert!(h.pass().await);
    for (name, _, _) in TOKENS {
        h.get("/v1/promotions/1", Some(name)).await;
        h.get("/v1/desired?ring=canary", Some(name)).await;
        h.post("/v1/promotions/1/approve", Some(name), None).await;
    }
    h.post(
        "/v1/promotions/1/halt",
        Some("dana"),
        Some(json!({"reason": "log check"})),
    )
    .await;
    let wrong = "tgk-guess-99999999";
    call("GET", format!("{}/v1/status", h.base), Some(wrong), None, vec![]).await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("http_request") && logs.contains("/v1/promotions/{id}/approve"),
        "captured:\n{logs}"
    );
    assert!(logs.contains("caller=\"sec1\""), "the caller is known by name:\n{logs}");
    for secret in TOKENS.iter().map(|(_, _, s)| *s).chain([wrong]) {
        assert!(!logs.contains(secret), "token {secret} in the logs");
        assert!(!logs.contains(&token_hash(secret)), "hash of {secret} in the logs");
    }
    assert!(
        !logs.to_ascii_lowercase().contains("bearer"),
        "no Authorization header in the logs"
    );
}

#[tokio::test]
async fn an_operator_rolls_a_baseline_back_and_oncall_approves() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "corp-ios", "to": "previous"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "nothing promoted yet: {}",
        r.body
    );

    // Version 1 everywhere, version 2 in the canary.
    h.post("/v1/promotions/1/approve", Some("ios1"), None).await;
    h.post("/v1/promotions/1/approve", Some("sec1"), None).await;
    h.advance(chrono::Duration::hours(2));
    assert!(h.pass().await);
    h.post("/v1/promotions/1/approve", Some("ios2"), None).await;
    let view = h.post("/v1/promotions/1/approve", Some("sec1"), None).await.json();
    assert_eq!(phase(&view), "complete");
    let git = git2::Repository::open(h.repo()).unwrap();
    commit(
        &git,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 10"),
    );
    assert!(h.pass().await);
    let view = h.post("/v1/promotions/2/approve", Some("ios1"), None).await.json();
    assert_eq!(phase(&view), "soaking", "{view}");

    // Refusals first.
    let ok = json!({"baseline": "corp-ios", "to": "previous"});
    assert_eq!(
        h.post("/v1/rollbacks", Some("vera"), Some(ok.clone())).await.status,
        403
    );
    assert_eq!(
        h.post("/v1/rollbacks", Some("eli"), Some(ok.clone())).await.status,
        403,
        "approvers do not roll back"
    );
    let r = h.post("/v1/rollbacks", Some("dana"), None).await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"));
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "corp-ios", "to": "previous", "ring": "x"})),
        )
        .await;
    assert_eq!(r.status, 422, "a mistyped member is refused, not ignored: {}", r.body);
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "Corp_iOS", "to": "previous"})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "corp-ios", "to": {"revision": "no-such-rev"}})),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"), "{}", r.body);
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "corp-ios", "to": "previous", "break_glass_reason": " "})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = h
        .post(
            "/v1/rollbacks",
            Some("dana"),
            Some(json!({"baseline": "corp-android", "to": "previous"})),
        )
        .await;
    assert_eq!(r.status, 404);

    // The CLI shows the diff and tier first, and without a terminal it
    // refuses to act unless told --yes.
    let o = tollgate(
        &["rollback", "corp-ios", "--to-previous"],
        h.base.as_str(),
        Some("dana"),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("Rollback of baseline/corp-ios in canary to"),
        "broad already runs the target: {out}"
    );
    assert!(out.contains("(a verified version)"), "{out}");
    assert!(out.contains("passcode.min_length  10 -> 8  loosen"), "{out}");
    assert!(out.contains("tier T3"), "{out}");
    assert!(out.contains("needs: 1 approval(s) from oncall"), "{out}");
    assert!(err.contains("confirm with --yes"), "{err}");
    let none = h
        .get("/v1/promotions?phase=pending_approval", Some("vera"))
        .await
        .json();
    assert!(
        none["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["kind"] != "rollback"),
        "a refused rollback creates nothing"
    );

    // To the version that completed before: one oncall approval.
    let r = h.post("/v1/rollbacks", Some("dana"), Some(ok)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let view = r.json();
    assert_eq!(view["promotion"]["kind"], "rollback");
    assert_eq!(view["plan"]["verified"], true, "{view}");
    assert_eq!(view["plan"]["document"], "baseline/corp-ios");
    assert_eq!(phase(&view), "pending_approval");
    let id = view["promotion"]["id"].as_i64().unwrap();
    let view = h
        .post(&format!("/v1/promotions/{id}/approve"), Some("eli"), None)
        .await
        .json();
    assert_ne!(phase(&view), "pending_approval", "{view}");
    // The change still soaking in canary carried the rolled-back content: halted.
    let two = h.get("/v1/promotions/2", Some("vera")).await.json();
    assert_eq!(phase(&two), "halted", "{two}");
    let audit = h.get("/v1/audit", Some("vera")).await.json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "rollback_requested" && e["actor"] == "dana"));
}

/// A governed repo and a ControllerConfig for `tollgate run` in `dir`.
fn run_fixture(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    let history = [SampleCommit {
        author: "priya",
        message: "initial",
        files: &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(IOS)),
        ],
    }];
    write_sample_repo(&repo, &history).unwrap();
    let tokens: String = TOKENS
        .iter()
        .map(|(name, role, secret)| {
            let role = serde_json::to_value(role).unwrap();
            format!(
                "  - {{name: {name}, role: {}, sha256: \"{}\"}}\n",
                role.as_str().unwrap(),
                token_hash(secret)
            )
        })
        .collect();
    let config = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\n\
         source: {{url: \"file://{}\", branch: main, interval: 1h}}\n\
         store: \"sqlite://{}\"\nlisten: \"127.0.0.1:0\"\ntokens:\n{tokens}",
        repo.display(),
        dir.join("state.db").display()
    );
    let config_path = dir.join("controller.yaml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// A `tollgate run` process and the API it serves.
struct RunningController {
    child: std::process::Child,
    base: String,
    stderr: std::thread::JoinHandle<String>,
}

impl RunningController {
    async fn start(config: &Path, extra: &[&str]) -> RunningController {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("TOLLGATE_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain stderr as it comes so the child never blocks on a full pipe.
        let mut child_stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut err = String::new();
            child_stderr.read_to_string(&mut err).unwrap();
            err
        });
        let mut stdout = child.stdout.take().unwrap();
        let base = tokio::task::spawn_blocking(move || {
            let mut line = Vec::new();
            let mut byte = [0u8];
            while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            let line = String::from_utf8(line).unwrap();
            line.strip_prefix("tollgate: serving the API on ")
                .unwrap_or(&line)
                .to_string()
        })
        .await
        .unwrap();
        RunningController { child, base, stderr }
    }

    async fn ready(&self) -> bool {
        for _ in 0..100 {
            if call("GET", format!("{}/readyz", self.base), None, None, vec![])
                .await
                .status
                == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn status(&self) -> Value {
        call(
            "GET",
            format!("{}/v1/status", self.base),
            Some(token("vera")),
            None,
            vec![],
        )
        .await
        .json()
    }

    /// Sends SIGTERM (if still running) and waits for the exit.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        if self.child.try_wait().unwrap().is_none() {
            let killed = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
        tokio::task::spawn_blocking(move || {
            for _ in 0..150 {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return (status, self.stderr.join().unwrap());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            self.child.kill().unwrap();
            panic!("tollgate run did not stop on SIGTERM");
        })
        .await
        .unwrap()
    }
}

/// `tollgate run` as a process: serves, polls, wakes on trigger, stops on SIGTERM.
#[tokio::test]
async fn tollgate_run_serves_polls_and_stops_on_sigterm() {
    let dir = TempDir::new().unwrap();
    let config = run_fixture(dir.path());
    let run = RunningController::start(&config, &[]).await;
    let base = run.base.clone();
    assert_eq!(
        call("GET", format!("{base}/healthz"), None, None, vec![]).await.status,
        200
    );
    assert!(run.ready().await, "the first pass makes it ready");
    let s = run.status().await;
    assert_eq!(s["controller"]["loop"]["leader"], true, "{s}");
    assert_eq!(s["promotions"]["pending_approval"], 1, "{s}");
    let first_pass = s["controller"]["loop"]["last_pass_at"].clone();

    // The interval is an hour; a trigger wakes the loop at once.
    let r = call("POST", format!("{base}/v1/trigger"), Some(token("dana")), None, vec![]).await;
    assert_eq!(r.status, 202);
    let mut woke = false;
    for _ in 0..100 {
        if run.status().await["controller"]["loop"]["last_pass_at"] != first_pass {
            woke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(woke, "a triggered pass ran");

    let (status, stderr) = run.stop().await;
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    for (_, _, secret) in TOKENS {
        assert!(
            !stderr.contains(secret) && !stderr.contains(&token_hash(secret)),
            "{stderr}"
        );
    }
}

/// `--adopt REV` starts governance from a fleet that already runs REV, once.
#[tokio::test]
async fn tollgate_run_adopts_a_running_fleet_once() {
    let dir = TempDir::new().unwrap();
    let config = run_fixture(dir.path());
    let head = git2::Repository::open(dir.path().join("repo"))
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let run = RunningController::start(&config, &["--adopt", "HEAD"]).await;
    assert!(run.ready().await);
    let s = run.status().await;
    assert_eq!(
        s["promotions"]["pending_approval"], 0,
        "the adopted tip needs no promotion: {s}"
    );
    let rings = s["rings"].as_array().unwrap();
    assert_eq!(rings.len(), 2, "{s}");
    assert!(rings.iter().all(|r| r["base_revision"] == head.as_str()), "{s}");
    let audit = call(
        "GET",
        format!("{}/v1/audit", run.base),
        Some(token("vera")),
        None,
        vec![],
    )
    .await
    .json();
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["action"] == "adopted"),
        "{audit}"
    );
    let (status, stderr) = run.stop().await;
    assert!(status.success(), "{stderr}");

    // Adopting again would overwrite governed state: refused, nothing served.
    let again = RunningController::start(&config, &["--adopt", "HEAD"]).await;
    let (status, stderr) = again.stop().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already published"), "{stderr}");
}

/// `/v1/rings` with its revisions replaced by `[tip]` (checked first), for a snapshot.
fn rings_redacted(rings: &Value, tip: &str) -> Value {
    let mut v = rings.clone();
    assert_eq!(v["revision"], tip, "{rings}");
    v["revision"] = json!("[tip]");
    for ring in v["rings"].as_array_mut().unwrap() {
        if ring["published"].is_object() {
            assert_eq!(ring["published"]["revision"], tip, "{rings}");
            ring["published"]["revision"] = json!("[tip]");
        }
    }
    v
}

#[tokio::test]
async fn desired_serves_the_promoted_baselines_with_their_settings() {
    let h = Harness::start().await;
    let r = h.get("/v1/rings", Some("mdm-reporter")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "no config before the first fetch"
    );
    assert!(h.pass().await);
    let tip = h.get("/v1/status", Some("vera")).await.json()["source"]["tip"]
        .as_str()
        .unwrap()
        .to_string();

    // Before any promotion: the rings of the tip's config, none published.
    let rings = h.get("/v1/rings", Some("mdm-reporter")).await;
    assert_eq!(rings.status, 200, "{}", rings.body);
    let rings = rings.json();
    assert!(
        rings["rings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["published"].is_null()),
        "{rings}"
    );

    h.post("/v1/promotions/1/approve", Some("ios1"), None).await;
    let view = h.post("/v1/promotions/1/approve", Some("sec1"), None).await.json();
    assert_eq!(phase(&view), "soaking", "{view}");
    let tier = view["promotion"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "baseline/corp-ios")
        .map(|c| c["tier"].clone())
        .unwrap();

    let canary = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!(canary.status, 200, "{}", canary.body);
    assert_eq!(canary.header("content-type"), Some("application/json"));
    assert_eq!(canary.header("cache-control"), Some("no-cache"));
    let body = canary.json();
    assert_eq!(
        (&body["ring"], &body["ring_index"], &body["promotion"]),
        (&json!("canary"), &json!(0), &json!(1))
    );
    assert_eq!(body["base_revision"], tip.as_str());
    assert_eq!(body["pins"], json!({}));
    assert_eq!(body["exceptions"], json!([]));
    let baselines = body["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 1, "the governance change is not for devices: {body}");
    let ios = &baselines[0];
    assert_eq!(ios["name"], "corp-ios");
    assert_eq!(ios["revision"], tip.as_str());
    assert_eq!((&ios["promotion"], &ios["tier"]), (&json!(1), &tier));
    assert_eq!(ios["platform"], "ios");
    assert_eq!(ios["owners"], json!(["mdm-ios"]));
    assert_eq!(ios["target_groups"], json!(["phones", "mdm-canary"]));
    assert_eq!(
        ios["settings"],
        json!({"passcode.min_length": 8}),
        "the YAML's settings"
    );
    // The digest is the one the promotion approved.
    let approved = view["promotion"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "baseline/corp-ios")
        .map(|c| c["digest"].clone())
        .unwrap();
    assert_eq!(ios["digest"], approved);

    // Polls of the unchanged ring: the same tag, 304 when the client has it,
    // and git is not read again.
    let etag = canary.header("etag").unwrap().to_string();
    let resolved = h.state.desired().resolutions();
    let url = format!("{}/v1/desired?ring=canary", h.base);
    for _ in 0..3 {
        let again = h.get("/v1/desired?ring=canary", Some("vera")).await;
        assert_eq!(
            (again.header("etag"), again.body.as_str()),
            (Some(etag.as_str()), canary.body.as_str())
        );
        let not_modified = call(
            "GET",
            url.clone(),
            Some(token("mdm-reporter")),
            None,
            vec![("If-None-Match", &etag)],
        )
        .await;
        assert_eq!((not_modified.status, not_modified.body.as_str()), (304, ""));
    }
    assert_eq!(
        h.state.desired().resolutions(),
        resolved,
        "unchanged polls resolve nothing"
    );

    // The rings now say what the canary got.
    let rings = h.get("/v1/rings", Some("mdm-reporter")).await.json();
    insta::assert_json_snapshot!("rings_after_canary", rings_redacted(&rings, &tip));

    // A new promotion publishes: the tag changes and the settings follow git.
    let git = git2::Repository::open(h.repo()).unwrap();
    commit(
        &git,
        "sam",
        "baselines/ios/corp-ios.yaml",
        &IOS.replace("min_length: 8", "min_length: 10"),
    );
    assert!(h.pass().await);
    let view = h.post("/v1/promotions/2/approve", Some("ios1"), None).await.json();
    assert_eq!(phase(&view), "soaking", "{view}");
    let stale = call(
        "GET",
        url,
        Some(token("mdm-reporter")),
        None,
        vec![("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert_ne!(stale.header("etag"), Some(etag.as_str()));
    let body = stale.json();
    assert_eq!(body["promotion"], 2);
    assert_eq!(body["baselines"][0]["settings"]["passcode.min_length"], 10);
    assert_eq!(body["baselines"][0]["promotion"], 2);
    assert_eq!(body["baselines"][0]["tier"], view["promotion"]["changes"][0]["tier"]);
    assert_ne!(body["baselines"][0]["revision"], tip.as_str());
    assert_eq!(body["base_revision"], body["baselines"][0]["revision"]);
    let rings = h.get("/v1/rings", Some("vera")).await.json();
    assert_eq!(rings["revision"], body["baselines"][0]["revision"], "{rings}");
    assert_eq!(rings["rings"][0]["published"]["promotion"], 2);

    // Served from memory: even without the mirror, an unchanged ring answers.
    let tag = stale.header("etag").unwrap().to_string();
    std::fs::remove_dir_all(h.dir.path().join("mirror")).unwrap();
    let again = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!((again.status, again.header("etag")), (200, Some(tag.as_str())));
}

#[tokio::test]
async fn desired_state_that_git_does_not_hold_is_refused() {
    let h = Harness::start().await;
    assert!(h.pass().await);
    h.post("/v1/promotions/1/approve", Some("ios1"), None).await;
    h.post("/v1/promotions/1/approve", Some("sec1"), None).await;
    assert_eq!(h.get("/v1/desired?ring=canary", Some("vera")).await.status, 200);

    // Someone edits the stored state behind the controller's back.
    let store = h.state.controller().store().clone();
    let mut stored = store.kv_get("desired/canary").await.unwrap().unwrap();
    let forged = format!("sha256:{}", "ab".repeat(32));
    stored["documents"]["baseline/corp-ios"]["digest"] = json!(forged);
    let t = store::Transition {
        kv: vec![("desired/canary".into(), Some(stored))],
        ..Default::default()
    };
    store.commit(t).await.unwrap();
    let r = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!((r.status, r.code().as_str()), (500, "unresolvable"), "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    for part in ["canary", "baseline/corp-ios", forged.as_str(), "refusing"] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
    assert!(r.header("etag").is_none());

    // A revision the mirror does not hold: unavailable, retry later.
    let mut stored = store.kv_get("desired/canary").await.unwrap().unwrap();
    stored["documents"]["baseline/corp-ios"]["revision"] = json!("1".repeat(40));
    let t = store::Transition {
        kv: vec![("desired/canary".into(), Some(stored))],
        ..Default::default()
    };
    store.commit(t).await.unwrap();
    let r = h.get("/v1/desired?ring=canary", Some("mdm-reporter")).await;
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn rings_describe_selectors_soaks_and_gates() {
    const GATED: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary, mdm-canary-eu]}, soak: 2h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: pilot, selector: {groups: [mdm-pilot]}, soak: 24h, gate: {min_applied: 0.9, max_noncompliant_increase: 0.02}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-ios: {users: [ios1]}
"#;
    let dir = TempDir::new().unwrap();
    let repo = dir.path().join("repo");
    let history = [SampleCommit {
        author: "priya",
        message: "initial",
        files: &[
            ("tollgate.yaml", Some(GATED)),
            ("baselines/ios/corp-ios.yaml", Some(IOS)),
        ],
    }];
    write_sample_repo(&repo, &history).unwrap();
    let h = Harness::serve(dir, format!("file://{}", repo.display())).await;
    assert!(h.pass().await);
    let tip = h.get("/v1/status", Some("vera")).await.json()["source"]["tip"]
        .as_str()
        .unwrap()
        .to_string();
    for who in ["mdm-reporter", "vera", "ios1", "dana"] {
        assert_eq!(h.get("/v1/rings", Some(who)).await.status, 200, "{who}");
    }
    assert_eq!(h.get("/v1/rings", None).await.status, 401);
    let rings = h.get("/v1/rings", Some("mdm-reporter")).await.json();
    insta::assert_json_snapshot!("rings_of_the_tip", rings_redacted(&rings, &tip));
}
