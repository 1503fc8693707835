//! The fleet simulator (`tollgate simulate`) against a small fake controller
//! on 127.0.0.1 that serves rings and desired state and records every
//! request it gets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use serde_json::{json, Value};

use tollgate::cli::{Cli, Exit};
use tollgate::devices::sim::{self, DesiredFetch, RoundSummary, SimDevice, SimError, SimOptions, SimSummary};
use tollgate::devices::{DeviceReport, REPORT_SCHEMA};
use tollgate::ids::{Digest, Platform};

const TOKEN: &str = "tgk-sim-reporter-4d2a";

fn digest(s: &str) -> String {
    Digest::from_canonical_bytes(s.as_bytes()).to_string()
}

fn rings() -> Value {
    json!({"revision": "0123456789abcdef0123456789abcdef01234567", "rings": [
        {"name": "canary", "index": 0, "selector": {"groups": ["mdm-canary"]}, "soak_secs": 3600,
         "gate": {"min_applied": 0.95, "max_noncompliant_increase": 0.01}, "published": null},
        {"name": "pilot", "index": 1, "selector": {"groups": ["mdm-pilot", "pilot-extra"]}, "soak_secs": 86400,
         "gate": null, "published": null},
        {"name": "broad", "index": 2, "selector": {"all": true}, "soak_secs": 0, "gate": null, "published": null},
    ]})
}

fn baseline(name: &str, version: &str, platform: &str, priority: i64, targets: &[&str], settings: Value) -> Value {
    json!({"name": name, "revision": "0123456789abcdef0123456789abcdef01234567", "digest": digest(&format!("{name}@{version}")),
           "promotion": 1, "tier": 1, "platform": platform, "priority": priority, "owners": ["mdm-ios"],
           "target_groups": targets, "settings": settings})
}

fn desired(ring: &str, index: usize, baselines: Vec<Value>) -> Value {
    json!({"ring": ring, "ring_index": index, "published_at": "2026-11-22T09:00:00Z", "promotion": 1,
           "base_revision": "0123456789abcdef0123456789abcdef01234567", "baselines": baselines,
           "exceptions": [{"name": "legal-usb", "revision": "0123456789abcdef0123456789abcdef01234567",
                           "digest": digest("legal-usb"), "baseline": "corp-macos", "settings": ["usb.storage_blocked"],
                           "scope": {"groups": ["legal"]}, "reason": "forensics", "expires": "2026-12-31T00:00:00Z"}],
           "pins": {}})
}

fn corp_ios(version: &str, os_min: &str) -> Value {
    baseline(
        "corp-ios",
        version,
        "ios",
        100,
        &["all-iphones"],
        json!({"passcode.min_length": 8, "os.min_version": os_min, "encryption.required": true,
               "apps.blocked": ["com.dropbox.Dropbox"]}),
    )
}

/// canary: corp-ios v2 (os.min_version 17.5), a canary-only iOS baseline
/// that overrides the passcode length, corp-android.
/// pilot: corp-ios v1 (17.4), corp-android, and an iOS baseline that targets
/// the canary group (which pilot devices never carry).
/// broad: nothing published.
fn standard_desired() -> HashMap<String, Value> {
    let android = || {
        baseline(
            "corp-android",
            "1",
            "android",
            100,
            &["all-android"],
            json!({"passcode.min_length": 6, "os.min_version": "14"}),
        )
    };
    let canary = desired(
        "canary",
        0,
        vec![
            corp_ios("2", "17.5"),
            baseline(
                "ios-canary-extra",
                "1",
                "ios",
                200,
                &["mdm-canary"],
                json!({"passcode.min_length": 10, "os.auto_update": true}),
            ),
            android(),
        ],
    );
    let pilot = desired(
        "pilot",
        1,
        vec![
            corp_ios("1", "17.4"),
            android(),
            baseline(
                "ios-canary-test",
                "1",
                "ios",
                50,
                &["mdm-canary"],
                json!({"device.camera_allowed": false}),
            ),
        ],
    );
    HashMap::from([("canary".to_string(), canary), ("pilot".to_string(), pilot)])
}

#[derive(Debug, Clone)]
struct DesiredHit {
    ring: String,
    if_none_match: Option<String>,
    status: u16,
}

#[derive(Debug, Clone)]
struct Post {
    content_type: Option<String>,
    authorization: Option<String>,
    status: u16,
    body: Bytes,
}

#[derive(Default)]
struct Fake {
    desired: Mutex<HashMap<String, Value>>,
    desired_hits: Mutex<Vec<DesiredHit>>,
    posts: Mutex<Vec<Post>>,
    /// Answer this many ring requests with 503.
    rings_unavailable: AtomicUsize,
    /// Answer this many report posts with 429.
    throttle: AtomicUsize,
    /// Answer the next report post with 500 (once).
    fail_next: AtomicBool,
    /// Reject reports of this device.
    reject: Mutex<Option<String>>,
    /// Do not keep bodies: count reports only (throughput).
    count_only: bool,
    counted: AtomicU64,
    counted_bytes: AtomicU64,
}

impl Fake {
    fn new(desired: HashMap<String, Value>) -> Arc<Fake> {
        Arc::new(Fake {
            desired: Mutex::new(desired),
            ..Fake::default()
        })
    }

    fn set_desired(&self, ring: &str, body: Value) {
        self.desired.lock().unwrap().insert(ring.to_string(), body);
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Reports of the posts that were answered 200, per post.
    fn batches(&self) -> Vec<Vec<Value>> {
        self.posts()
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| lines(&p.body))
            .collect()
    }

    fn reports(&self) -> Vec<Value> {
        self.batches().into_iter().flatten().collect()
    }
}

fn lines(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The 401 for a request without the right bearer token.
fn refused(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {TOKEN}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == expected => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "unauthorized", "message": "a bearer token is required"}})),
            )
                .into_response(),
        ),
    }
}

async fn get_rings(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    let starting = fake
        .rings_unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if starting {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "unavailable", "message": "not ready"}})),
        )
            .into_response();
    }
    Json(rings()).into_response()
}

async fn get_desired(
    State(fake): State<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    let ring = q.get("ring").cloned().unwrap_or_default();
    let if_none_match = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = fake.desired.lock().unwrap().get(&ring).cloned();
    let (status, response) = match body {
        None => (
            404,
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "nothing published"}})),
            )
                .into_response(),
        ),
        Some(body) => {
            let text = serde_json::to_vec(&body).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            let etag = format!("\"{:016x}\"", h.finish());
            if if_none_match.as_deref() == Some(etag.as_str()) {
                (304, (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response())
            } else {
                (
                    200,
                    (
                        StatusCode::OK,
                        [("etag", etag), ("content-type", "application/json".into())],
                        text,
                    )
                        .into_response(),
                )
            }
        }
    };
    fake.desired_hits.lock().unwrap().push(DesiredHit {
        ring,
        if_none_match,
        status,
    });
    response
}

async fn post_reports(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if fake.count_only {
        let n = body.iter().filter(|&&b| b == b'\n').count() as u64;
        fake.counted.fetch_add(n, Ordering::Relaxed);
        fake.counted_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        return Json(json!({"accepted": n, "stale": 0, "rejected": []})).into_response();
    }
    let record = |status: u16| {
        fake.posts.lock().unwrap().push(Post {
            content_type: header("content-type"),
            authorization: header("authorization"),
            status,
            body: body.clone(),
        })
    };
    let throttled = fake
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttled {
        record(429);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"error": {"code": "overloaded", "message": "slow down"}})),
        )
            .into_response();
    }
    if fake.fail_next.swap(false, Ordering::SeqCst) {
        record(500);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "internal", "message": "the store is down"}})),
        )
            .into_response();
    }
    record(200);
    let reject = fake.reject.lock().unwrap().clone();
    let mut rejected = Vec::new();
    let mut accepted = 0;
    for (i, r) in lines(&body).iter().enumerate() {
        let id = r["device"]["id"].as_str().unwrap_or_default();
        if Some(id) == reject.as_deref() {
            rejected.push(json!({"index": i, "device": id, "reason": "device.groups[0]: empty"}));
        } else {
            accepted += 1;
        }
    }
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"accepted": accepted, "stale": 0, "rejected": rejected})),
    )
        .into_response()
}

/// Serves `fake` on 127.0.0.1 and returns its base URL.
fn serve(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route("/v1/rings", get(get_rings))
        .route("/v1/desired", get(get_desired))
        .route("/v1/reports", post(post_reports))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(fake);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn options(server: &str, devices: usize) -> SimOptions {
    let mut opts = SimOptions::new(server, devices);
    opts.token = Some(TOKEN.into());
    opts.interval = Duration::ZERO;
    opts.seed = 42;
    opts.clock = Some(Arc::new(now));
    opts
}

fn run(opts: &SimOptions) -> (SimSummary, Vec<RoundSummary>) {
    let mut rounds = Vec::new();
    let summary = sim::run(opts, &AtomicBool::new(false), |r| rounds.push(r.clone())).unwrap();
    (summary, rounds)
}

fn by_id(fleet: &[SimDevice]) -> HashMap<&str, &SimDevice> {
    fleet.iter().map(|d| (d.id.as_str(), d)).collect()
}

/// An `applied` entry: baseline, digest, status.
type Entry = (String, String, String);

fn applied(report: &Value) -> Vec<Entry> {
    report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["baseline"].as_str().unwrap().to_string(),
                a["digest"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn settings(report: &Value) -> BTreeMap<String, (String, Value)> {
    let list = report["settings"].as_array().unwrap();
    let map: BTreeMap<String, (String, Value)> = list
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                (s["state"].as_str().unwrap().to_string(), s["actual"].clone()),
            )
        })
        .collect();
    assert_eq!(map.len(), list.len(), "a key is reported twice: {report}");
    map
}

fn groups(report: &Value) -> Vec<&str> {
    report["device"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect()
}

/// Every report has exactly the fields of DESIGN 8 and decodes as a
/// `DeviceReport`; ids are `{prefix}-{platform}-{n:06}`.
fn check_schema(report: &Value, prefix: &str) {
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        keys(report),
        set(&[
            "schema",
            "device",
            "os",
            "enrollment",
            "checked_in_at",
            "applied",
            "settings"
        ])
    );
    assert_eq!(report["schema"], REPORT_SCHEMA);
    assert_eq!(
        keys(&report["device"]),
        set(&["id", "platform", "groups", "user", "ownership"])
    );
    assert_eq!(keys(&report["os"]), set(&["version"]));
    assert_eq!(report["enrollment"], "enrolled");
    assert_eq!(report["checked_in_at"], "2026-11-22T10:00:00Z");
    for a in report["applied"].as_array().unwrap() {
        assert_eq!(keys(a), set(&["baseline", "digest", "status"]));
        let d = a["digest"].as_str().unwrap();
        assert!(d.len() == 71 && d.starts_with("sha256:"), "{d}");
    }
    for s in report["settings"].as_array().unwrap() {
        assert_eq!(keys(s), set(&["key", "state", "actual"]));
    }
    let decoded: DeviceReport = serde_json::from_value(report.clone()).unwrap();
    let id = &decoded.device.id;
    let platform = decoded.device.platform.as_str();
    let n = id
        .strip_prefix(&format!("{prefix}-{platform}-"))
        .unwrap_or_else(|| panic!("{id}"));
    assert!(n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()), "{id}");
}

#[test]
fn fleet_is_split_over_rings_and_platforms_in_fixed_shares_determined_by_the_seed() {
    let mut opts = SimOptions::new("http://127.0.0.1:1", 10_000);
    opts.seed = 7;
    opts.stale_rate = 0.1;
    let fleet = sim::fleet(&opts, 3);
    let count = |f: &dyn Fn(&SimDevice) -> bool| fleet.iter().filter(|d| f(d)).count();
    assert_eq!(
        (
            count(&|d| d.ring == 0),
            count(&|d| d.ring == 1),
            count(&|d| d.ring == 2)
        ),
        (500, 2000, 7500)
    );
    let per_platform: Vec<usize> = Platform::ALL.iter().map(|p| count(&|d| d.platform == *p)).collect();
    // ios, ipados, macos, android, windows
    assert_eq!(per_platform, vec![4000, 500, 1500, 2500, 1500]);
    assert_eq!(count(&|d| d.stale), 1000);
    let ids: BTreeSet<&str> = fleet.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 10_000);
    for d in &fleet {
        assert_eq!(d.id, format!("sim-{}-{:06}", d.platform.as_str(), d.index));
    }

    // The same seed gives the same fleet; another seed another one.
    assert_eq!(sim::fleet(&opts, 3), fleet);
    opts.seed = 8;
    let other = sim::fleet(&opts, 3);
    assert_ne!(other, fleet);
    assert_eq!(other.iter().filter(|d| d.ring == 0).count(), 500);

    // Other ring counts: earlier rings stay small; every ring gets a device.
    let shares = |rings: usize, n: usize| {
        let mut o = SimOptions::new("http://127.0.0.1:1", n);
        o.seed = 3;
        let f = sim::fleet(&o, rings);
        (0..rings)
            .map(|r| f.iter().filter(|d| d.ring == r).count())
            .collect::<Vec<_>>()
    };
    assert_eq!(shares(1, 1000), vec![1000]);
    assert_eq!(shares(2, 1000), vec![50, 950]);
    assert_eq!(shares(4, 1000), vec![50, 100, 100, 750]);
    assert_eq!(shares(3, 10), vec![1, 2, 7]);
    assert_eq!(shares(3, 3), vec![1, 1, 1]);

    // OS versions spread over each platform's releases.
    let ios: BTreeSet<&str> = fleet
        .iter()
        .filter(|d| d.platform == Platform::Ios)
        .map(|d| d.os_version)
        .collect();
    assert_eq!(ios, BTreeSet::from(["16.7", "17.4", "17.5", "18.0", "18.1"]));
}

#[test]
fn with_no_failures_every_device_applies_its_rings_baselines_and_is_compliant() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let opts = options(&server, 2000);
    let (summary, rounds) = run(&opts);
    assert_eq!(rounds.len(), 1);
    assert_eq!(summary.counts.http_errors, 0, "{:?}", summary.counts.errors);
    assert_eq!(summary.counts.reported, 2000);
    assert_eq!(summary.counts.accepted, 2000);
    assert_eq!(summary.counts.apply_failed, 0);

    let fleet = sim::fleet(&opts, 3);
    let fleet = by_id(&fleet);
    let reports = fake.reports();
    assert_eq!(reports.len(), 2000);
    let (d_ios_1, d_ios_2) = (digest("corp-ios@1"), digest("corp-ios@2"));
    let mut seen_rings = BTreeSet::new();
    let mut applied_total = 0;
    for r in &reports {
        check_schema(r, "sim");
        let d = fleet[r["device"]["id"].as_str().unwrap()];
        assert_eq!(r["device"]["platform"], d.platform.as_str());
        assert_eq!(r["os"]["version"], d.os_version);
        seen_rings.insert(d.ring);
        let g = groups(r);
        // The ring's first selector group, and never an earlier ring's.
        match d.ring {
            0 => assert_eq!(g[0], "mdm-canary"),
            1 => {
                assert_eq!(g[0], "mdm-pilot");
                assert!(!g.contains(&"mdm-canary") && !g.contains(&"pilot-extra"), "{g:?}");
            }
            _ => assert!(!g.contains(&"mdm-canary") && !g.contains(&"mdm-pilot"), "{g:?}"),
        }
        // Target groups of the platform's baselines in any ring.
        match d.platform {
            Platform::Ios => assert!(g.contains(&"all-iphones"), "{g:?}"),
            Platform::Android => assert!(g.contains(&"all-android"), "{g:?}"),
            _ => assert!(!g.contains(&"all-iphones") && !g.contains(&"all-android"), "{g:?}"),
        }

        let a = applied(r);
        let s = settings(r);
        applied_total += a.len();
        assert!(a.iter().all(|(_, _, status)| status == "applied"), "{r}");
        let names: Vec<&str> = a.iter().map(|(n, _, _)| n.as_str()).collect();
        let expected: Vec<&str> = match (d.ring, d.platform) {
            // Highest priority first.
            (0, Platform::Ios) => vec!["ios-canary-extra", "corp-ios"],
            // ios-canary-test targets the canary group only.
            (1, Platform::Ios) => vec!["corp-ios"],
            (0 | 1, Platform::Android) => vec!["corp-android"],
            _ => vec![],
        };
        assert_eq!(names, expected, "{r}");
        match (d.ring, d.platform) {
            (0, Platform::Ios) => {
                assert_eq!(a[1].1, d_ios_2);
                // ios-canary-extra (priority 200) wins passcode.min_length.
                assert_eq!(s["passcode.min_length"], ("compliant".into(), json!(10)));
                assert_eq!(s["os.auto_update"], ("compliant".into(), json!(true)));
                assert_eq!(s["apps.blocked"], ("compliant".into(), json!(["com.dropbox.Dropbox"])));
                assert_eq!(s.len(), 5);
            }
            (1, Platform::Ios) => {
                assert_eq!(a[0].1, d_ios_1);
                assert_eq!(s["passcode.min_length"], ("compliant".into(), json!(8)));
                assert_eq!(s["encryption.required"], ("compliant".into(), json!(true)));
                assert_eq!(s.len(), 4);
            }
            (0 | 1, Platform::Android) => {
                assert_eq!(a[0].1, digest("corp-android@1"));
                assert_eq!(s["passcode.min_length"], ("compliant".into(), json!(6)));
            }
            _ => assert!(s.is_empty(), "{r}"),
        }
        // os.min_version: the device's own version, noncompliant below the minimum.
        if let Some((state, actual)) = s.get("os.min_version") {
            assert_eq!(actual, &json!(d.os_version));
            let min = match (d.ring, d.platform) {
                (0, Platform::Ios) => "17.5",
                (1, Platform::Ios) => "17.4",
                _ => "14",
            };
            let below = sim::compare_versions(d.os_version, min).is_lt();
            assert_eq!(state, if below { "noncompliant" } else { "compliant" }, "{r}");
        }
        for (key, (state, _)) in &s {
            if key != "os.min_version" {
                assert_eq!(state, "compliant", "{r}");
            }
        }
    }
    assert_eq!(seen_rings, BTreeSet::from([0, 1, 2]));
    assert_eq!(summary.counts.applied, applied_total as u64);
    assert_eq!(
        rounds[0].rings.iter().map(|r| r.desired).collect::<Vec<_>>(),
        vec![DesiredFetch::Updated, DesiredFetch::Updated, DesiredFetch::NotPublished]
    );
}

#[test]
fn os_min_version_above_what_devices_run_makes_them_noncompliant_with_their_version() {
    // Every ring raises iOS to 18.1; only devices on 18.1 comply.
    let mut desired = HashMap::new();
    for (i, ring) in ["canary", "pilot", "broad"].iter().enumerate() {
        desired.insert(ring.to_string(), crate::desired(ring, i, vec![corp_ios("3", "18.1")]));
    }
    let fake = Fake::new(desired);
    let server = serve(fake.clone());
    let opts = options(&server, 1000);
    let (summary, _) = run(&opts);
    let mut below = 0;
    for r in fake.reports() {
        let (state, actual) = settings(&r).get("os.min_version").cloned().unwrap_or_default();
        if r["device"]["platform"] != "ios" {
            assert!(state.is_empty());
            continue;
        }
        let version = r["os"]["version"].as_str().unwrap();
        assert_eq!(actual, json!(version));
        if version == "18.1" {
            assert_eq!(state, "compliant");
        } else {
            assert_eq!(state, "noncompliant", "{version}");
            below += 1;
        }
    }
    assert!(below > 200, "{below} of 400 iOS devices below 18.1");
    assert_eq!(summary.counts.noncompliant, below);
}

#[test]
fn a_fail_rate_share_of_devices_drift_on_one_fixed_setting() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 2000);
    opts.fail_rate = 0.2;
    opts.rounds = 2;
    opts.batch = 2000;
    opts.concurrency = 1;
    run(&opts);
    let fleet = sim::fleet(&opts, 3);
    let fleet = by_id(&fleet);
    assert_eq!(fleet.values().filter(|d| d.drifts).count(), 400);
    let desired = standard_desired();
    let value_of = |ring: usize, name: &str, key: &str| {
        let ring = ["canary", "pilot"][ring];
        desired[ring]["baselines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["settings"][key].clone())
            .unwrap()
    };
    let batches = fake.batches();
    assert_eq!(batches.len(), 2);
    let mut drifted_per_round = Vec::new();
    for batch in &batches {
        let mut drifted = BTreeMap::new();
        for r in batch {
            let d = fleet[r["device"]["id"].as_str().unwrap()];
            let off: Vec<(String, Value)> = settings(r)
                .into_iter()
                .filter(|(key, (state, _))| key != "os.min_version" && state == "noncompliant")
                .map(|(key, (_, actual))| (key, actual))
                .collect();
            let applied_names: Vec<String> = applied(r)
                .into_iter()
                .filter(|(_, _, status)| status == "applied")
                .map(|(n, _, _)| n)
                .collect();
            if !d.drifts || applied_names.is_empty() {
                assert!(off.is_empty(), "{r}");
                continue;
            }
            assert_eq!(off.len(), 1, "{r}");
            let (key, actual) = &off[0];
            // The drifted value differs from every applied baseline's value.
            for name in &applied_names {
                let desired = value_of(d.ring, name, key);
                assert_ne!(actual, &desired, "{r}");
            }
            drifted.insert(d.id.clone(), off[0].clone());
        }
        drifted_per_round.push(drifted);
    }
    assert!(drifted_per_round[0].len() > 20, "{}", drifted_per_round[0].len());
    assert_eq!(
        drifted_per_round[0], drifted_per_round[1],
        "the same setting every round"
    );
}

#[test]
fn with_fail_rate_one_every_apply_fails_and_no_setting_is_claimed() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 500);
    opts.fail_rate = 1.0;
    let (summary, _) = run(&opts);
    let reports = fake.reports();
    assert_eq!(reports.len(), 500);
    let mut entries = 0u64;
    for r in &reports {
        check_schema(r, "sim");
        for (name, digest, status) in applied(r) {
            entries += 1;
            assert_eq!(status, "failed", "{r}");
            // Nothing applied before: the failed digest is the desired one.
            let desired = fake.desired.lock().unwrap();
            let listed = desired
                .values()
                .flat_map(|d| d["baselines"].as_array().unwrap().iter())
                .any(|b| b["name"] == name.as_str() && b["digest"] == digest.as_str());
            assert!(listed, "{name} {digest}");
        }
        assert!(r["settings"].as_array().unwrap().is_empty(), "{r}");
    }
    // canary: two iOS baselines, one Android; pilot: one of each.
    let fleet = sim::fleet(&opts, 3);
    let expected: u64 = fleet
        .iter()
        .map(|d| match (d.ring, d.platform) {
            (0, Platform::Ios) => 2,
            (0 | 1, Platform::Ios | Platform::Android) => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(entries, expected);
    assert_eq!(summary.counts.apply_failed, entries);
    assert_eq!(summary.counts.applied, 0);
}

#[test]
fn a_failed_apply_keeps_reporting_the_digest_the_device_runs() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 3000);
    opts.fail_rate = 0.3;
    opts.rounds = 2;
    let posts_after_round_1 = Mutex::new(0);
    let stop = AtomicBool::new(false);
    sim::run(&opts, &stop, |r| {
        if r.round == 1 {
            // Pilot moves to corp-ios v2 between the rounds.
            let mut pilot = standard_desired()["pilot"].clone();
            pilot["baselines"][0] = corp_ios("2", "17.4");
            fake.set_desired("pilot", pilot);
            *posts_after_round_1.lock().unwrap() = fake.posts().len();
        }
    })
    .unwrap();
    let cut = *posts_after_round_1.lock().unwrap();
    let batches = fake.batches();
    let first: HashMap<String, Value> = batches[..cut]
        .iter()
        .flatten()
        .map(|r| (r["device"]["id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let second: Vec<&Value> = batches[cut..].iter().flatten().collect();
    assert_eq!(second.len(), 3000);
    let fleet = sim::fleet(&opts, 3);
    let fleet = by_id(&fleet);
    let (v1, v2) = (digest("corp-ios@1"), digest("corp-ios@2"));
    let (mut kept_old, mut failed_new, mut moved, mut failed_first) = (0, 0, 0, 0);
    for r in second {
        let id = r["device"]["id"].as_str().unwrap();
        let d = fleet[id];
        if d.ring != 1 || d.platform != Platform::Ios {
            continue;
        }
        let before = applied(&first[id]);
        let now = applied(r);
        let (_, digest_before, status_before) = &before[0];
        assert_eq!(digest_before, &v1);
        let (_, digest_now, status_now) = &now[0];
        match (status_before.as_str(), status_now.as_str()) {
            ("applied", "applied") => {
                assert_eq!(digest_now, &v2);
                moved += 1;
            }
            ("applied", "failed") => {
                assert_eq!(digest_now, &v1, "still runs v1");
                kept_old += 1;
            }
            ("failed", "failed") => {
                assert_eq!(digest_now, &v2, "never ran corp-ios: names the digest that failed");
                failed_first += 1;
            }
            ("failed", "applied") => {
                assert_eq!(digest_now, &v2);
                failed_new += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for (what, n) in [
        ("moved", moved),
        ("kept v1", kept_old),
        ("failed both", failed_first),
        ("failed v1 only", failed_new),
    ] {
        assert!(n > 0, "no pilot iOS device {what}");
    }
}

#[test]
fn stale_devices_are_the_same_every_round_and_never_report() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 600);
    opts.stale_rate = 0.1;
    opts.rounds = 3;
    opts.batch = 600;
    opts.concurrency = 1;
    let (summary, rounds) = run(&opts);
    let batches = fake.batches();
    assert_eq!(batches.len(), 3);
    let ids = |b: &Vec<Value>| {
        b.iter()
            .map(|r| r["device"]["id"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    let fleet = sim::fleet(&opts, 3);
    let fresh: BTreeSet<String> = fleet.iter().filter(|d| !d.stale).map(|d| d.id.clone()).collect();
    assert_eq!(fresh.len(), 540);
    for b in &batches {
        assert_eq!(ids(b), fresh);
    }
    assert!(rounds
        .iter()
        .all(|r| r.counts.skipped == 60 && r.counts.reported == 540));
    assert_eq!(summary.counts.skipped, 180);
}

#[test]
fn desired_state_is_fetched_again_with_if_none_match_and_304_keeps_the_cache() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 300);
    opts.rounds = 2;
    let (_, rounds) = run(&opts);
    let hits = fake.desired_hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 6, "{hits:?}");
    let (first, second) = hits.split_at(3);
    assert!(first.iter().all(|h| h.if_none_match.is_none()), "{first:?}");
    let statuses = |hs: &[DesiredHit]| hs.iter().map(|h| (h.ring.clone(), h.status)).collect::<Vec<_>>();
    assert_eq!(
        statuses(first),
        vec![("canary".into(), 200), ("pilot".into(), 200), ("broad".into(), 404)]
    );
    assert_eq!(
        statuses(second),
        vec![("canary".into(), 304), ("pilot".into(), 304), ("broad".into(), 404)]
    );
    assert!(second[..2].iter().all(|h| h.if_none_match.is_some()));
    assert_eq!(
        rounds[1].rings.iter().map(|r| r.desired).collect::<Vec<_>>(),
        vec![
            DesiredFetch::NotModified,
            DesiredFetch::NotModified,
            DesiredFetch::NotPublished
        ]
    );
    // The cached desired state still drives the reports.
    let batches = fake.batches();
    let per_round = |range: std::ops::Range<usize>| {
        let mut v: Vec<(String, Vec<Entry>)> = batches[range]
            .iter()
            .flatten()
            .map(|r| (r["device"]["id"].as_str().unwrap().to_string(), applied(r)))
            .collect();
        v.sort();
        v
    };
    let n = batches.len() / 2;
    let round_1 = per_round(0..n);
    assert!(round_1.iter().any(|(_, a)| !a.is_empty()));
    assert_eq!(round_1, per_round(n..batches.len()));
}

#[test]
fn a_throttled_batch_is_sent_again_unchanged_after_retry_after() {
    let fake = Fake::new(standard_desired());
    fake.throttle.store(1, Ordering::SeqCst);
    let server = serve(fake.clone());
    let mut opts = options(&server, 100);
    opts.batch = 100;
    opts.concurrency = 1;
    let started = Instant::now();
    let (summary, _) = run(&opts);
    let posts = fake.posts();
    assert_eq!(posts.iter().map(|p| p.status).collect::<Vec<_>>(), vec![429, 200]);
    assert_eq!(posts[0].body, posts[1].body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(summary.counts.throttled, 1);
    assert_eq!(summary.counts.batches, 1);
    assert_eq!(summary.counts.accepted, 100);
    assert_eq!(summary.counts.http_errors, 0);
    assert_eq!(summary.latency.requests, 2);
}

#[test]
fn batches_hold_at_most_the_batch_size_and_every_device_reports_once() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 2345);
    opts.batch = 500;
    opts.concurrency = 3;
    let (summary, _) = run(&opts);
    let posts = fake.posts();
    let mut sizes: Vec<usize> = posts.iter().map(|p| lines(&p.body).len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![345, 500, 500, 500, 500]);
    for p in &posts {
        assert_eq!(p.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(p.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
        assert!(p.body.ends_with(b"\n"));
    }
    let ids: BTreeSet<String> = fake
        .reports()
        .iter()
        .map(|r| r["device"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2345);
    assert_eq!(summary.counts.batches, 5);
    assert_eq!(summary.latency.requests, 5);
    assert!(summary.latency.p50_ms > 0.0 && summary.latency.max_ms >= summary.latency.p99_ms);
}

#[test]
fn rejections_and_failed_requests_are_counted_and_the_round_goes_on() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 1000);
    opts.batch = 250;
    opts.concurrency = 1;
    let victim = sim::fleet(&opts, 3)[17].id.clone();
    *fake.reject.lock().unwrap() = Some(victim.clone());
    fake.fail_next.store(true, Ordering::SeqCst);
    let (summary, rounds) = run(&opts);
    let c = &summary.counts;
    assert_eq!(c.http_errors, 1);
    assert!(
        c.errors[0].contains("HTTP 500") && c.errors[0].contains("the store is down"),
        "{:?}",
        c.errors
    );
    assert_eq!(c.unsent, 250);
    assert_eq!(c.batches, 4);
    // The victim was in the first batch, which failed; the simulator does
    // not resend it (only 429 is retried).
    assert_eq!(c.reported, 750);
    assert_eq!(rounds[0].counts, *c);

    // Next run: the victim's batch gets through and its rejection is kept.
    let (summary, _) = run(&opts);
    let c = &summary.counts;
    assert_eq!((c.accepted, c.rejected, c.http_errors), (999, 1, 0));
    assert_eq!(c.rejections[0].device, victim);
    assert_eq!(c.rejections[0].index, 17);
    assert_eq!(c.rejections[0].reason, "device.groups[0]: empty");
}

#[test]
fn a_wrong_token_or_no_server_fails_before_the_first_round() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 10);
    opts.token = Some("wrong".into());
    let err = sim::run(&opts, &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(matches!(err, SimError::Rings { .. }), "{err:?}");
    let text = format!("{:#}", anyhow::Error::new(err));
    assert!(text.contains("HTTP 401") && text.contains("unauthorized"), "{text}");
    assert!(fake.posts().is_empty());

    let mut opts = options("http://127.0.0.1:1", 10);
    opts.fail_rate = 1.5;
    assert!(matches!(
        sim::run(&opts, &AtomicBool::new(false), |_| {}),
        Err(SimError::Options(_))
    ));
}

#[test]
fn a_controller_that_knows_no_rings_yet_is_waited_for() {
    let fake = Fake::new(standard_desired());
    fake.rings_unavailable.store(1, Ordering::SeqCst);
    let server = serve(fake.clone());
    let mut opts = options(&server, 100);
    opts.rounds = 2;
    let (summary, rounds) = run(&opts);
    assert_eq!(rounds[0].counts.reported, 0);
    assert_eq!(rounds[0].counts.http_errors, 1);
    assert!(
        rounds[0].counts.errors[0].contains("no rings yet"),
        "{:?}",
        rounds[0].counts.errors
    );
    assert!(rounds[0].rings.is_empty());
    assert_eq!(rounds[1].counts.reported, 100);
    assert_eq!(rounds[1].counts.http_errors, 0);
    assert_eq!(summary.counts.reported, 100);
}

#[test]
fn stop_ends_an_endless_run_after_the_round_in_progress() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let mut opts = options(&server, 50);
    opts.rounds = 0;
    opts.interval = Duration::from_secs(3600);
    let stop = AtomicBool::new(false);
    let (summary, _) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut rounds = Vec::new();
            (sim::run(&opts, &stop, |r| rounds.push(r.clone())).unwrap(), rounds)
        });
        while fake.posts().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap()
    });
    assert_eq!(summary.rounds, 1);
    assert_eq!(summary.counts.reported, 50);
}

#[test]
fn cli_rejects_rates_outside_zero_to_one_as_usage_errors() {
    for args in [
        &["--fail-rate", "1.5"][..],
        &["--stale-rate", "-0.1"],
        &["--fail-rate", "x"],
        &["--batch", "10001"],
        &["--prefix", "has space"],
    ] {
        let mut argv = vec![
            "tollgate",
            "simulate",
            "--server",
            "http://127.0.0.1:1",
            "--devices",
            "10",
        ];
        argv.extend_from_slice(args);
        let err = Cli::try_parse_from(&argv).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
    assert_eq!(
        Cli::try_parse_from(["tollgate", "simulate", "--server", "http://x:1"])
            .unwrap_err()
            .exit_code(),
        2,
        "--devices is required"
    );
}

#[test]
fn cli_prints_a_line_per_round_or_the_summary_as_json() {
    let fake = Fake::new(standard_desired());
    let server = serve(fake.clone());
    let argv = |format: &str| {
        vec![
            "tollgate".to_string(),
            "-o".into(),
            format.into(),
            "simulate".into(),
            "--server".into(),
            server.clone(),
            "--token".into(),
            TOKEN.into(),
            "--devices".into(),
            "200".into(),
            "--rounds".into(),
            "2".into(),
            "--interval".into(),
            "0s".into(),
            "--stale-rate".into(),
            "0.25".into(),
            "--prefix".into(),
            "lab".into(),
        ]
    };
    let mut out = Vec::new();
    let exit = tollgate::cli::run(Cli::try_parse_from(argv("text")).unwrap(), &mut out).unwrap();
    assert_eq!(exit, Exit::Ok);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("round 1: 150 reported (150 accepted, 0 stale, 0 rejected), 50 skipped"),
        "{text}"
    );
    assert!(lines[1].contains("canary") && lines[1].contains("unchanged"), "{text}");
    assert!(
        lines[2].starts_with("total: 2 rounds of 200 devices: 300 reported"),
        "{text}"
    );

    let mut out = Vec::new();
    let exit = tollgate::cli::run(Cli::try_parse_from(argv("json")).unwrap(), &mut out).unwrap();
    assert_eq!(exit, Exit::Ok);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["devices"], 200);
    assert_eq!(v["reported"], 300);
    assert_eq!(v["accepted"], 300);
    assert_eq!(v["skipped"], 100);
    assert_eq!(v["per_round"].as_array().unwrap().len(), 2);
    assert_eq!(v["per_round"][1]["rings"][0]["desired"], "not_modified");
    for key in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(v["latency"][key].is_number(), "{key}");
    }
    assert!(fake
        .reports()
        .iter()
        .all(|r| r["device"]["id"].as_str().unwrap().starts_with("lab-")));
}

/// How fast the generator goes against a server that only counts lines:
/// `cargo test --release --test simulate -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_against_a_counting_server() {
    // Every ring has published: each device reports its baselines.
    let mut desired = standard_desired();
    let mut broad = desired["pilot"].clone();
    broad["ring"] = json!("broad");
    desired.insert("broad".into(), broad);
    let fake = Arc::new(Fake {
        desired: Mutex::new(desired),
        count_only: true,
        ..Fake::default()
    });
    let server = serve(fake.clone());
    let mut opts = options(&server, 100_000);
    opts.rounds = 5;
    opts.fail_rate = 0.05;
    let (summary, rounds) = run(&opts);
    for r in &rounds {
        println!(
            "round {}: {} reports in {:.3}s = {} reports/s, p50 {}ms p99 {}ms",
            r.round, r.counts.reported, r.elapsed_secs, r.reports_per_sec, r.latency.p50_ms, r.latency.p99_ms
        );
    }
    let reports = fake.counted.load(Ordering::Relaxed);
    println!(
        "total: {} reports/s over {} rounds, {} bytes per report",
        summary.reports_per_sec,
        summary.rounds,
        fake.counted_bytes.load(Ordering::Relaxed) / reports
    );
    assert_eq!(reports, 500_000);
}
