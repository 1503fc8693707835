//! Reporter-token scopes and input hygiene against the real binary: a
//! `tollgate run` process over a real git repo and SQLite store, driven
//! through real HTTP. A scoped token's reports outside its scope are refused
//! one by one with reasons while the others are kept; an unscoped token is
//! fleet-wide as before; a token scoped to one ring cannot move another
//! ring's gate; bad scopes stop the controller at start, naming the key;
//! device ids and group names with hidden characters are refused; a leading
//! byte-order mark in the config and in governed files is ignored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, gate: {min_applied: 0.9, max_noncompliant_increase: 0.05}}
  - {name: pilot, selector: {groups: [mdm-pilot]}, gate: {min_applied: 0.9, max_noncompliant_increase: 0.05}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-ios: {users: [ios1]}
"#;

fn ios(message: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {{name: corp-ios, owners: [mdm-ios]}}\nspec:\n  \
         platform: ios\n  targets: {{groups: [phones, mdm-canary, mdm-pilot]}}\n  settings:\n    \
         passcode.min_length: 8\n    cosmetic.lock_screen_message: \"{message}\"\n"
    )
}

/// Token entries of the controller config: name, secret and the rest of
/// the entry. Secrets are distinctive so a leak is easy to spot.
const TOKENS: &[(&str, &str, &str)] = &[
    ("op", "tgk-op-5e1d", "role: operator"),
    ("vera", "tgk-vera-2b7c", "role: viewer"),
    ("mdm-all", "tgk-all-9f30", "role: reporter"),
    (
        "mdm-ios",
        "tgk-ios-41aa",
        "role: reporter, scope: {platforms: [ios, ipados], rings: [pilot, broad], device_prefixes: [\"serial:\"]}",
    ),
    ("mdm-pilot", "tgk-pilot-c3d8", "role: reporter, scope: {rings: [pilot]}"),
    (
        "mdm-canary",
        "tgk-canary-77e2",
        "role: reporter, scope: {rings: [canary]}",
    ),
];

/// The tokens of a controller config from before scopes existed.
const UNSCOPED: &[(&str, &str, &str)] = &[TOKENS[0], TOKENS[1], TOKENS[2]];

fn secret(name: &str) -> &'static str {
    TOKENS.iter().find(|(n, _, _)| *n == name).map(|(_, s, _)| *s).unwrap()
}

fn tokens_yaml(tokens: &[(&str, &str, &str)]) -> String {
    tokens
        .iter()
        .map(|(name, secret, rest)| format!("  - {{name: {name}, {rest}, sha256: \"{}\"}}\n", token_hash(secret)))
        .collect()
}

/// A governed repo (tollgate.yaml and one iOS baseline) and a controller
/// config in `dir`; with `bom`, every file starts with a UTF-8 byte-order mark.
fn fixture(dir: &Path, tokens: &str, bom: bool) -> PathBuf {
    let mark = if bom { "\u{FEFF}" } else { "" };
    let repo = dir.join("repo");
    let config = format!("{mark}{CONFIG}");
    let baseline = format!("{mark}{}", ios("Property of Acme"));
    write_sample_repo(
        &repo,
        &[SampleCommit {
            author: "priya",
            message: "initial",
            files: &[
                ("tollgate.yaml", Some(&config)),
                ("baselines/ios/corp-ios.yaml", Some(&baseline)),
            ],
        }],
    )
    .unwrap();
    let path = dir.join("controller.yaml");
    std::fs::write(
        &path,
        format!(
            "{mark}apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\n\
             source: {{url: \"file://{}\", branch: main, interval: 1h}}\n\
             store: \"sqlite://{}\"\nlisten: \"127.0.0.1:0\"\ntokens:\n{tokens}",
            repo.display(),
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    path
}

/// A `tollgate run` process and the API it serves.
struct Running {
    child: Child,
    base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(config: &Path, extra: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("TOLLGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let base = line
            .strip_prefix("tollgate: serving the API on ")
            .unwrap_or(&line)
            .to_string();
        let mut running = Running {
            child,
            base,
            stderr: Some(stderr),
        };
        if !running.ready() {
            let _ = running.child.kill();
            let _ = running.child.wait();
            panic!(
                "the controller never became ready:\n{}",
                running.stderr.take().unwrap().join().unwrap()
            );
        }
        running
    }

    fn ready(&mut self) -> bool {
        for _ in 0..200 {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if self.base.starts_with("http://") && self.call("GET", "/readyz", None, None).0 == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn call(&self, method: &str, path: &str, who: Option<&str>, body: Option<String>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(who) = who {
            req = req.header("Authorization", format!("Bearer {}", secret(who)));
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/x-ndjson");
        }
        let mut response = agent.run(req.body(body.unwrap_or_default()).unwrap()).unwrap();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            response.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Posts reports as NDJSON with `who`'s token.
    fn report(&self, who: &str, reports: &[Value]) -> (u16, Value) {
        let body: String = reports.iter().map(|r| format!("{r}\n")).collect();
        self.call("POST", "/v1/reports", Some(who), Some(body))
    }

    fn device(&self, id: &str) -> (u16, Value) {
        self.call("GET", &format!("/v1/devices/{}", encode(id)), Some("vera"), None)
    }

    fn last_pass(&self) -> Value {
        self.call("GET", "/v1/status", Some("vera"), None).1["controller"]["loop"]["last_pass_at"].clone()
    }

    /// Runs a controller pass now and waits until it has finished.
    fn pass(&self) {
        let before = self.last_pass();
        assert_eq!(self.call("POST", "/v1/trigger", Some("op"), None).0, 202);
        for _ in 0..200 {
            if self.last_pass() != before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("a triggered pass did not run");
    }

    /// Stops the process with SIGTERM and returns what it logged.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..150 {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Percent-encodes a path segment (every byte but unreserved ASCII).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn report(id: &str, platform: &str, groups: &[&str], checked_in: DateTime<Utc>, applied: Value) -> Value {
    json!({
        "schema": "tollgate.device-report/v1",
        "device": {"id": id, "platform": platform, "groups": groups},
        "os": {"version": "18.1"},
        "enrollment": "enrolled",
        "checked_in_at": at(checked_in),
        "applied": applied,
        "settings": [],
    })
}

/// `(index, reason)` of each rejection of an answer.
fn rejections(answer: &Value) -> Vec<(u64, String)> {
    answer["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejections in {answer}"))
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_scoped_token_keeps_in_scope_reports_and_rejects_the_others_with_reasons() {
    let dir = TempDir::new().unwrap();
    let config = fixture(dir.path(), &tokens_yaml(TOKENS), false);
    let run = Running::start(&config, &[]);
    let t0 = Utc::now() - chrono::Duration::minutes(10);

    // A device the fleet-wide token stores as a Mac first.
    let (status, answer) = run.report(
        "mdm-all",
        &[report("serial:OWNED", "macos", &["mdm-pilot"], t0, json!([]))],
    );
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");

    let t1 = t0 + chrono::Duration::seconds(60);
    let batch = [
        report("serial:P1", "ios", &["mdm-pilot"], t1, json!([])),
        report("serial:M1", "macos", &["mdm-pilot"], t1, json!([])),
        report("imei:3520990017614", "ios", &["mdm-pilot"], t1, json!([])),
        report("serial:C1", "ios", &["mdm-canary"], t1, json!([])),
        report("serial:B1", "ipados", &["phones"], t1, json!([])),
        // Refused by validation, before any scope is looked at.
        report("serial:\u{202E}1X", "ios", &["mdm-pilot"], t1, json!([])),
        report("imei:77", "android", &["mdm-canary", "lab"], t1, json!([])),
        report("serial:OWNED", "ios", &["mdm-pilot"], t1, json!([])),
    ];
    let (status, answer) = run.report("mdm-ios", &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let got = rejections(&answer);
    let expected: [(u64, &str); 6] = [
        (
            1,
            "device.platform: macos is outside token `mdm-ios`'s scope (platforms: ios, ipados)",
        ),
        (
            2,
            "device.id: \"imei:3520990017614\" does not start with a prefix of token `mdm-ios`'s scope \
             (device_prefixes: \"serial:\")",
        ),
        (
            3,
            "device.groups: [\"mdm-canary\"] put the device in ring canary, outside token `mdm-ios`'s scope \
             (rings: pilot, broad)",
        ),
        (
            5,
            "device.id: \"serial:\\u{202e}1X\" holds U+202E (a bidirectional override) at character 8",
        ),
        (
            6,
            "device.platform: android is outside token `mdm-ios`'s scope (platforms: ios, ipados); \
             device.id: \"imei:77\" does not start with a prefix of token `mdm-ios`'s scope \
             (device_prefixes: \"serial:\"); \
             device.groups: [\"lab\", \"mdm-canary\"] put the device in ring canary, outside token `mdm-ios`'s \
             scope (rings: pilot, broad)",
        ),
        (
            7,
            "device.platform: device \"serial:OWNED\" is stored as a macos device; token `mdm-ios` has a scope \
             and may not move a device it does not own to ios",
        ),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(i, r)| (*i, r.to_string())).collect();
    assert_eq!(got, expected, "{answer}");
    let devices: Vec<&Value> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["device"])
        .collect();
    assert_eq!(devices[0], "serial:M1", "a scope rejection names its device");
    assert_eq!(devices[3], &Value::Null, "an invalid id is not echoed as a device");

    // The kept reports are stored; the refused ones changed nothing.
    let (status, p1) = run.device("serial:P1");
    assert_eq!((status, p1["ring"].as_str()), (200, Some("pilot")), "{p1}");
    assert_eq!(run.device("serial:B1").1["ring"], "broad");
    for refused in ["serial:M1", "imei:3520990017614", "serial:C1", "imei:77"] {
        assert_eq!(run.device(refused).0, 404, "{refused} was stored");
    }
    assert_eq!(run.device("serial:OWNED").1["platform"], "macos");

    // A batch with nothing in scope is a 422 with the same shape.
    let (status, answer) = run.report("mdm-ios", &[report("serial:C2", "ios", &["mdm-canary"], t1, json!([]))]);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(rejections(&answer).len(), 1);

    let stderr = run.stop();
    assert!(
        stderr.contains("reporter token without a scope") && stderr.contains("mdm-all"),
        "an unscoped reporter token is warned about at start:\n{stderr}"
    );
    for scoped in ["mdm-ios", "mdm-pilot", "mdm-canary"] {
        assert!(
            !stderr
                .lines()
                .any(|l| l.contains("without a scope") && l.contains(scoped)),
            "{scoped} has a scope:\n{stderr}"
        );
    }
    for (_, secret, _) in TOKENS {
        assert!(
            !stderr.contains(secret) && !stderr.contains(&token_hash(secret)),
            "{stderr}"
        );
    }
}

#[test]
fn an_unscoped_token_reports_any_device_as_before() {
    let dir = TempDir::new().unwrap();
    let config = fixture(dir.path(), &tokens_yaml(UNSCOPED), false);
    let run = Running::start(&config, &[]);
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let batch = [
        report("serial:M1", "macos", &["mdm-pilot"], t0, json!([])),
        report("imei:77", "android", &["mdm-canary"], t0, json!([])),
        report("host-12", "windows", &[], t0, json!([])),
    ];
    let (status, answer) = run.report("mdm-all", &batch);
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(3)), "{answer}");
    assert_eq!(answer["rejected"], json!([]));
    // It may move a device to another platform, as it always could.
    let later = t0 + chrono::Duration::seconds(30);
    let (_, answer) = run.report(
        "mdm-all",
        &[report("serial:M1", "ios", &["mdm-canary"], later, json!([]))],
    );
    assert_eq!(answer["accepted"], 1, "{answer}");
    let (_, m1) = run.device("serial:M1");
    assert_eq!(
        (m1["platform"].as_str(), m1["ring"].as_str()),
        (Some("ios"), Some("canary")),
        "{m1}"
    );
    run.stop();
}

#[test]
fn a_token_scoped_to_pilot_cannot_move_the_canary_gate() {
    let dir = TempDir::new().unwrap();
    let config = fixture(dir.path(), &tokens_yaml(TOKENS), false);
    let run = Running::start(&config, &["--adopt", "HEAD"]);

    // A routine (T0) change: no approval, canary's gate wants 90% applied.
    let repo = dir.path().join("repo");
    let r = git2::Repository::open(&repo).unwrap();
    std::fs::write(repo.join("baselines/ios/corp-ios.yaml"), ios("Return to Acme")).unwrap();
    let mut index = r.index().unwrap();
    index.add_path(Path::new("baselines/ios/corp-ios.yaml")).unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("ana", "ana@example.com").unwrap();
    let parent = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &sig, &sig, "lock screen text", &tree, &[&parent])
        .unwrap();

    let promotion = || {
        let (_, list) = run.call("GET", "/v1/promotions", Some("vera"), None);
        list["promotions"][0].clone()
    };
    let soaking_in = |p: &Value| (p["phase"]["phase"] == "soaking").then(|| p["phase"]["ring"].as_u64().unwrap());
    run.pass();
    let mut p = promotion();
    for _ in 0..5 {
        if soaking_in(&p).is_some() {
            break;
        }
        run.pass();
        p = promotion();
    }
    assert_eq!(soaking_in(&p), Some(0), "soaking in canary: {p}");
    let (_, desired) = run.call("GET", "/v1/desired?ring=canary", Some("mdm-pilot"), None);
    let digest = desired["baselines"][0]["digest"].as_str().unwrap().to_string();

    // Reports that would pass canary's gate (or fail it), from the pilot
    // token: every one refused, none reaches the device index.
    let now = Utc::now();
    let applied = json!([{"baseline": "corp-ios", "digest": digest, "status": "applied"}]);
    let failed = json!([{"baseline": "corp-ios", "digest": digest, "status": "failed"}]);
    let forged = [
        report("serial:CAN-1", "ios", &["mdm-canary"], now, applied.clone()),
        report(
            "serial:CAN-2",
            "ios",
            &["mdm-canary", "mdm-pilot"],
            now,
            applied.clone(),
        ),
        report("serial:CAN-3", "ios", &["mdm-canary"], now, failed),
    ];
    let (status, answer) = run.report("mdm-pilot", &forged);
    assert_eq!(status, 422, "{answer}");
    for (i, reason) in rejections(&answer) {
        assert!(
            reason.contains("put the device in ring canary, outside token `mdm-pilot`'s scope (rings: pilot)"),
            "report {i}: {reason}"
        );
    }
    assert_eq!(rejections(&answer).len(), 3);
    let (_, drift) = run.call("GET", "/v1/drift", Some("vera"), None);
    assert_eq!(drift["summary"]["devices"], 0, "{drift}");
    run.pass();
    let p = promotion();
    assert_eq!(soaking_in(&p), Some(0), "the gate has no evidence and holds: {p}");

    // The same report from the canary token moves the gate.
    let (status, answer) = run.report("mdm-canary", &forged[..1]);
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");
    run.pass();
    let p = promotion();
    assert!(
        soaking_in(&p).is_some_and(|ring| ring >= 1) || p["phase"]["phase"] == "complete",
        "canary's gate passed on the canary token's evidence: {p}"
    );
    run.stop();
}

#[test]
fn a_bad_scope_stops_the_controller_at_start_naming_the_key() {
    let cases = [
        (
            vec![(
                "mdm",
                "tgk-x-1",
                "role: reporter, scope: {platforms: [ios, blackberry]}",
            )],
            "tokens[0].scope.platforms[1]: unknown variant `blackberry`, expected one of `ios`, `ipados`, `macos`, \
             `android`, `windows`",
        ),
        (
            vec![
                ("mdm", "tgk-x-1", "role: reporter"),
                ("sec1", "tgk-x-2", "role: approver, scope: {rings: [canary]}"),
            ],
            "tokens[1].scope: only reporter tokens take a scope; `sec1` is an approver token",
        ),
        (
            vec![("mdm", "tgk-x-1", "role: reporter, scope: {device_prefixes: [\"\"]}")],
            "tokens[0].scope.device_prefixes[0]: empty, which every device id starts with",
        ),
    ];
    for (tokens, expected) in cases {
        let dir = TempDir::new().unwrap();
        let config = fixture(dir.path(), &tokens_yaml(&tokens), false);
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let line = format!("{}:", config.display());
        assert!(
            stderr.contains(&line) && stderr.contains(expected),
            "{stderr}\n  expected {expected}"
        );
        assert!(!dir.path().join("state.db").exists(), "nothing started");
    }
}

#[test]
fn device_ids_and_groups_with_hidden_characters_are_refused_through_the_api() {
    let dir = TempDir::new().unwrap();
    let config = fixture(dir.path(), &tokens_yaml(UNSCOPED), false);
    let run = Running::start(&config, &[]);
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let batch = [
        report("serial:C02\u{202E}FED", "ios", &["mdm-pilot"], t0, json!([])),
        report("serial:C02XK0", "ios", &["mdm-pilot"], t0, json!([])),
        report("serial:C02\u{200B}XK0", "ios", &["mdm-pilot"], t0, json!([])),
        report("serial:C03", "ios", &["mdm-\u{2066}pilot"], t0, json!([])),
        report("\u{FEFF}serial:C04", "ios", &[], t0, json!([])),
        report("serial:C05\u{E0041}", "ios", &[], t0, json!([])),
    ];
    let (status, answer) = run.report("mdm-all", &batch);
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");
    let expected = [
        (
            0,
            "device.id: \"serial:C02\\u{202e}FED\" holds U+202E (a bidirectional override) at character 11",
        ),
        (
            2,
            "device.id: \"serial:C02\\u{200b}XK0\" holds U+200B (a zero-width character) at character 11",
        ),
        (
            3,
            "device.groups[0]: \"mdm-\\u{2066}pilot\" holds U+2066 (a bidirectional isolate) at character 5",
        ),
        (
            4,
            "device.id: \"\\u{feff}serial:C04\" holds U+FEFF (a zero-width no-break space, or byte-order mark) at \
             character 1",
        ),
        (
            5,
            "device.id: \"serial:C05\\u{e0041}\" holds U+E0041 (an invisible format character) at character 11",
        ),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(i, r)| (*i, r.to_string())).collect();
    assert_eq!(rejections(&answer), expected);
    assert_eq!(run.device("serial:C02XK0").0, 200);

    // A lookup by such an id is refused with the same reason, not a 404.
    let (status, e) = run.device("serial:C02\u{202E}FED");
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "bad_request", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("device id: ") && message.contains("U+202E"),
        "{message}"
    );
    run.stop();
}

#[test]
fn a_byte_order_mark_in_the_config_and_governed_files_is_ignored() {
    let dir = TempDir::new().unwrap();
    let config = fixture(dir.path(), &tokens_yaml(TOKENS), true);
    assert!(std::fs::read(&config).unwrap().starts_with(b"\xEF\xBB\xBF"));

    // `tollgate validate` reads the governed files.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["-o", "json", "validate", "--repo"])
        .arg(dir.path().join("repo"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{v} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((v["valid"].as_bool(), &v["errors"]), (Some(true), &json!([])), "{v}");

    // The controller reads the config, then tollgate.yaml's rings and the baseline.
    let run = Running::start(&config, &[]);
    let (_, rings) = run.call("GET", "/v1/rings", Some("vera"), None);
    let names: Vec<&str> = rings["rings"]
        .as_array()
        .unwrap_or_else(|| panic!("{rings}"))
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["canary", "pilot", "broad"], "{rings}");
    let (_, list) = run.call("GET", "/v1/promotions", Some("vera"), None);
    let keys: Vec<&str> = list["promotions"][0]["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"baseline/corp-ios"), "{list}");
    run.stop();
}
