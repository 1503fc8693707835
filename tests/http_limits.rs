//! The API under hostile and careless clients, against the real `tollgate
//! run` binary: metric labels that stay a closed set whatever the method and
//! path, JSON refusals for undecodable paths, header and idle timeouts, the
//! connection cap below the descriptor limit, shutdown with a deadline, and
//! request bodies that must keep arriving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;

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
"#;

const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones, mdm-canary]}\n  settings:\n    passcode.min_length: 8\n";

const VIEWER: &str = "tgk-limits-viewer-5e1d";
const REPORTER: &str = "tgk-limits-reporter-77c0";
const OPERATOR: &str = "tgk-limits-operator-a9f3";

/// Known generously: anything that has not happened by then is not going to.
const PATIENCE: Duration = Duration::from_secs(15);

/// A governed repo and a controller config; `limits` is the YAML of the
/// config's `limits:` block, if any.
fn fixture(dir: &Path, limits: Option<&str>) -> PathBuf {
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
    let mut config = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\n\
         source: {{url: \"file://{}\", branch: main, interval: 1h}}\n\
         store: \"sqlite://{}\"\nlisten: \"127.0.0.1:0\"\ntokens:\n\
         \x20 - {{name: vera, role: viewer, sha256: \"{}\"}}\n\
         \x20 - {{name: mdm, role: reporter, sha256: \"{}\"}}\n\
         \x20 - {{name: dana, role: operator, sha256: \"{}\"}}\n",
        repo.display(),
        dir.join("state.db").display(),
        token_hash(VIEWER),
        token_hash(REPORTER),
        token_hash(OPERATOR),
    );
    if let Some(limits) = limits {
        config.push_str(&format!("limits: {limits}\n"));
    }
    let path = dir.join("controller.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A `tollgate run` process, adopting the repo's tip so that rings have a
/// desired state and reports are judged against it.
struct Controller {
    _dir: TempDir,
    child: Child,
    addr: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Controller {
    fn start(limits: Option<&str>) -> Controller {
        Self::start_with(limits, None)
    }

    /// `nofile`: the soft descriptor limit the process starts under.
    fn start_with(limits: Option<&str>, nofile: Option<u32>) -> Controller {
        let dir = TempDir::new().unwrap();
        let config = fixture(dir.path(), limits);
        let bin = env!("CARGO_BIN_EXE_tollgate");
        let args = ["run", "--config", config.to_str().unwrap(), "--adopt", "HEAD"];
        let mut command = match nofile {
            None => {
                let mut c = Command::new(bin);
                c.args(args);
                c
            }
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin)
                    .args(args);
                c
            }
        };
        let mut child = command
            .env("TOLLGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child_stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut err = String::new();
            child_stderr.read_to_string(&mut err).unwrap();
            err
        });
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let Some(addr) = line.strip_prefix("tollgate: serving the API on http://") else {
            let _ = child.kill();
            panic!("tollgate run did not start: {line}\n{}", stderr.join().unwrap());
        };
        let c = Controller {
            _dir: dir,
            child,
            addr: addr.to_string(),
            stderr: Some(stderr),
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        let until = Instant::now() + PATIENCE;
        while Instant::now() < until {
            if get(&self.addr, "/readyz", None).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tollgate run did not become ready");
    }

    /// Sends SIGTERM and waits up to `within` for the exit.
    fn stop_within(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.stderr.take().unwrap().join().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        let _ = self.child.wait();
        panic!(
            "tollgate run did not exit within {within:?} of SIGTERM\n{}",
            self.stderr.take().unwrap().join().unwrap()
        );
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads until the server closes; `None` when it kept the connection open
/// for all of [`PATIENCE`].
fn read_until_closed(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            // Reset: closed too.
            Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

/// One request on a connection of its own: status and body.
fn exchange(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String, String) {
    let mut s = connect(addr);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let reply = read_until_closed(&mut s).expect("the server answers and closes");
    parse_reply(&reply)
}

/// Status, headers and body of a raw HTTP/1.1 answer (status 0 if none).
fn parse_reply(reply: &str) -> (u16, String, String) {
    let status = reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((reply, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = exchange(addr, "GET", path, token, "");
    (status, body)
}

/// The code of a JSON error body, checking its shape.
fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

/// The label sets of the request-duration histogram, from `/metrics`.
fn request_series(addr: &str) -> (Vec<String>, usize) {
    let (status, text) = get(addr, "/metrics", None);
    assert_eq!(status, 200);
    let series = text
        .lines()
        .filter_map(|l| l.strip_prefix("tollgate_http_request_duration_seconds_count{"))
        .map(|l| l.split_once('}').unwrap().0.to_string())
        .collect();
    (series, text.len())
}

fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let start = series.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let len = series[start..].find('"').unwrap();
    &series[start..start + len]
}

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// Junk methods and paths, sent raw (no client library tidies them up).
fn send_junk(addr: &str, round: usize) {
    for i in 0..25 {
        let method = format!("JUNK{round}X{i}");
        exchange(addr, &method, "/healthz", None, "");
        exchange(addr, &method, &format!("/no/such/{round}/{i}"), None, "");
        exchange(addr, "GET", &format!("/v1/{round}-{i}/nothing"), None, "");
    }
    // One method of 20 KB: a label of its own before.
    let long = "X".repeat(20_000) + &round.to_string();
    exchange(addr, &long, "/metrics", None, "");
}

#[test]
fn junk_methods_and_paths_leave_the_request_metric_a_closed_set() {
    let c = Controller::start(None);
    send_junk(&c.addr, 0);
    // The first scrape counts itself only after it is served.
    request_series(&c.addr);
    let (before, size_before) = request_series(&c.addr);
    for series in &before {
        let method = label(series, "method");
        assert!(
            METHODS.contains(&method),
            "method label {method:.40}... in {series:.200}"
        );
        let route = label(series, "route");
        assert!(
            route == "unmatched" || route.starts_with('/') && !route.contains("no/such") && !route.contains('-'),
            "route label {route}"
        );
    }
    assert!(
        before.iter().any(|s| label(s, "method") == "other"),
        "junk methods count as other: {before:?}"
    );
    assert!(before.iter().any(|s| label(s, "route") == "unmatched"), "{before:?}");

    // Many more junk requests add no series, and the page does not grow
    // but for the digits of the counts.
    send_junk(&c.addr, 1);
    send_junk(&c.addr, 2);
    let (after, size_after) = request_series(&c.addr);
    assert_eq!(before, after, "no new series");
    assert!(size_after < size_before + 2_000, "{size_before} -> {size_after}");
}

#[test]
fn undecodable_paths_and_queries_are_json_errors() {
    let c = Controller::start(None);
    for path in [
        "/v1/devices/%FF%FE",
        "/v1/devices/caf%C3",
        "/v1/promotions/%FF",
        "/v1/promotions?limit=lots",
    ] {
        let (status, head, body) = exchange(&c.addr, "GET", path, Some(VIEWER), "");
        assert_eq!(status, 400, "{path}: {body}");
        assert!(head.contains("content-type: application/json"), "{path}: {head}");
        assert_eq!(code(&body), "bad_request", "{path}");
    }
    // A valid id still answers as before.
    let (status, _, body) = exchange(&c.addr, "GET", "/v1/devices/serial:ABC", Some(VIEWER), "");
    assert_eq!((status, code(&body).as_str()), (404, "not_found"));
}

#[test]
fn a_request_head_must_arrive_within_the_header_timeout() {
    let c = Controller::start(Some("{header_timeout: 1s, idle_timeout: 60s}"));

    // Half a head, then nothing.
    let mut half = connect(&c.addr);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Wait: ").unwrap();

    // A head trickled a byte at a time, never finished (slowloris).
    let trickled = connect(&c.addr);
    let closed = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut s = trickled.try_clone().unwrap();
        let closed = closed.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                if closed.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() || written > 2_000 {
                    return written;
                }
                written += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            written
        })
    };

    assert!(read_until_closed(&mut half).is_some(), "a half-sent head is closed");
    let mut t = trickled;
    assert!(read_until_closed(&mut t).is_some(), "a trickled head is closed");
    closed.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // A head sent whole is answered.
    assert_eq!(get(&c.addr, "/healthz", None).0, 200);
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let c = Controller::start(Some("{idle_timeout: 1s, header_timeout: 30s}"));

    // Connected, never a byte.
    let mut silent = connect(&c.addr);
    assert!(
        read_until_closed(&mut silent).is_some(),
        "a silent connection is closed"
    );

    // One request answered, then the connection is kept alive and idle.
    let mut kept = connect(&c.addr);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let reply = read_until_closed(&mut kept).expect("closed once idle");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("{\"status\":\"ok\"}"), "{reply}");
}

/// Opens `n` connections that each complete one keep-alive request and then
/// stay open; returns those the server answered (and so holds).
fn open_held(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = connect(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("{\"status\":\"ok\"}") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200") {
            held.push(s);
        }
    }
    held
}

/// `/healthz` on fresh connections until it answers 200.
fn healthz_answers(addr: &str) -> bool {
    let until = Instant::now() + PATIENCE;
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if read_until_closed(&mut s).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn connections_past_the_configured_cap_are_refused_at_once() {
    let c = Controller::start(Some("{max_connections: 4, header_timeout: 60s, idle_timeout: 60s}"));
    let held = open_held(&c.addr, 4);
    assert_eq!(held.len(), 4, "four connections fit");

    // A fifth is refused at once, with a JSON 503 when it can be sent.
    let mut fifth = connect(&c.addr);
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = read_until_closed(&mut fifth).expect("the excess connection is closed, not queued");
    assert!(!reply.contains("{\"status\":\"ok\"}"), "{reply}");
    if !reply.is_empty() {
        let (status, _, body) = parse_reply(&reply);
        assert_eq!((status, code(&body).as_str()), (503, "too_many_connections"), "{reply}");
    }

    // Once they are gone, fresh clients are served again.
    drop(held);
    assert!(healthz_answers(&c.addr));
    let (status, text) = get(&c.addr, "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate_http_connections_refused_total") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[test]
fn the_default_cap_keeps_descriptors_for_the_store_git_and_the_loop() {
    const NOFILE: u32 = 256;
    let c = Controller::start_with(Some("{header_timeout: 60s, idle_timeout: 60s}"), Some(NOFILE));

    // More connections than the descriptor limit leaves room for: the
    // server holds some, refuses the rest at once, and keeps at least a
    // quarter of its descriptors for everything else.
    let held = open_held(&c.addr, 200);
    let cap = held.len();
    assert!((16..=NOFILE as usize * 3 / 4).contains(&cap), "{cap} held");

    // Once they are gone, fresh clients are served again.
    drop(held);
    assert!(healthz_answers(&c.addr));

    // With the connections all but full, the loop still runs a pass: the
    // store and git have their descriptors. (Two slots stay free for the
    // trigger and the status reads.)
    let (_, before) = get(&c.addr, "/v1/status", Some(VIEWER));
    let before: Value = serde_json::from_str(&before).unwrap();
    let held = open_held(&c.addr, cap - 2);
    assert_eq!(held.len(), cap - 2);
    let (status, _, body) = exchange(&c.addr, "POST", "/v1/trigger", Some(OPERATOR), "");
    assert_eq!(status, 202, "{body}");
    let until = Instant::now() + PATIENCE;
    let mut passed = false;
    while Instant::now() < until && !passed {
        std::thread::sleep(Duration::from_millis(200));
        let (status, now) = get(&c.addr, "/v1/status", Some(VIEWER));
        assert_eq!(status, 200, "{now}");
        let now: Value = serde_json::from_str(&now).unwrap();
        passed = now["controller"]["loop"]["last_pass_at"] != before["controller"]["loop"]["last_pass_at"];
        assert!(now["controller"]["loop"]["last_error"].is_null(), "{now}");
    }
    assert!(passed, "a pass ran with the connections held");
    drop(held);
    let (status, stderr) = c.stop_within(PATIENCE);
    assert!(status.success(), "{stderr}");
}

#[test]
fn sigterm_exits_within_the_grace_despite_half_sent_requests() {
    let c = Controller::start(Some(
        "{shutdown_grace: 1s, header_timeout: 5m, idle_timeout: 5m, body_timeout: 5m, body_min_rate: 0}",
    ));
    // Half a head.
    let mut head = connect(&c.addr);
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A request in flight, waiting for the rest of its body.
    let mut body = connect(&c.addr);
    body.write_all(
        format!(
            "POST /v1/promotions/1/halt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"reason\": "
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let (status, stderr) = c.stop_within(PATIENCE);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    // Both were closed by the exit.
    assert!(read_until_closed(&mut head).is_some());
    assert!(read_until_closed(&mut body).is_some());
}

/// A report of one device, checked in now.
fn report(id: &str) -> String {
    json!({
        "schema": "tollgate.device-report/v1",
        "device": {"id": id, "platform": "ios", "groups": ["phones"], "user": "a@corp.example", "ownership": "corporate"},
        "os": {"version": "18.0"},
        "enrollment": "enrolled",
        "checked_in_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "applied": [],
        "settings": [],
    })
    .to_string()
}

/// Sends `head`, then the body a byte every `every` (at most `max` bytes, the
/// rest never), and returns the answer once the server closes.
fn trickle(addr: &str, head: String, every: Duration, max: usize) -> std::thread::JoinHandle<String> {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let answered = Arc::new(AtomicBool::new(false));
        let writer = {
            let mut w = s.try_clone().unwrap();
            let answered = answered.clone();
            std::thread::spawn(move || {
                for _ in 0..max {
                    std::thread::sleep(every);
                    if answered.load(Ordering::SeqCst) || w.write_all(b" ").is_err() {
                        return;
                    }
                }
            })
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answered.store(true, Ordering::SeqCst);
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
        answered.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        String::from_utf8_lossy(&got).into_owned()
    })
}

fn report_head(addr: &str, len: usize) -> String {
    format!(
        "POST /v1/reports HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {REPORTER}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[test]
fn slow_report_uploads_do_not_hold_admission_and_are_cut_off() {
    let c = Controller::start(Some("{body_timeout: 60s, body_min_rate: 64}"));
    // More slow uploaders than there are admission slots, a byte every 400 ms.
    let slow: Vec<_> = (0..12)
        .map(|_| trickle(&c.addr, report_head(&c.addr, 10_000), Duration::from_millis(400), 9_000))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A normal batch is taken meanwhile.
    let batch = format!("[{}, {}]", report("serial:FAST1"), report("serial:FAST2"));
    let (status, _, body) = exchange(&c.addr, "POST", "/v1/reports", Some(REPORTER), &batch);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 2, "{v}");

    // The slow ones are refused with their code, not left hanging.
    for s in slow {
        let reply = s.join().unwrap();
        let (status, head, body) = parse_reply(&reply);
        assert_eq!((status, code(&body).as_str()), (408, "body_too_slow"), "{reply}");
        assert!(head.contains("connection: close"), "{head}");
    }
    let (_, device) = get(&c.addr, "/v1/devices/serial:FAST1", Some(VIEWER));
    assert!(device.contains("serial:FAST1"), "{device}");
}

#[test]
fn a_body_that_outlasts_the_deadline_is_refused() {
    let c = Controller::start(Some("{body_timeout: 2s, body_min_rate: 0}"));
    let halt = format!(
        "POST /v1/promotions/1/halt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let reports = report_head(&c.addr, 1000);
    for head in [halt, reports] {
        let reply = trickle(&c.addr, head, Duration::from_millis(100), 900).join().unwrap();
        let (status, _, body) = parse_reply(&reply);
        assert_eq!((status, code(&body).as_str()), (408, "body_timeout"), "{reply}");
    }
    // Bodies that arrive in time are read as before.
    let (status, _, body) = exchange(&c.addr, "POST", "/v1/promotions/1/halt", Some(OPERATOR), "{}");
    assert_eq!((status, code(&body).as_str()), (422, "invalid_body"), "{body}");
}
