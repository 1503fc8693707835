//! `POST /v1/reports` bodies (DESIGN 8): framing, per-report validation and
//! hostile input, through `parse_reports` alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate::catalog::Catalog;
use tollgate::devices::report::{
    parse_reports, parse_reports_shared, read_stored_report, report_text, Applied, ApplyStatus, BatchError, BodyFormat,
    DeviceInfo, DeviceReport, Enrollment, OsInfo, Ownership, ParsedBatch, Rejection, SettingReport, SettingState,
    MAX_REPORTS, MAX_REPORTS_BODY, REPORT_SCHEMA,
};
use tollgate::ids::{Digest, Platform};

fn now() -> DateTime<Utc> {
    "2026-11-22T10:02:00Z".parse().unwrap()
}

fn digest(fill: char) -> String {
    format!("sha256:{}", fill.to_string().repeat(64))
}

/// DESIGN 8's example, with the given device id.
fn report(id: &str) -> Value {
    json!({
        "schema": "tollgate.device-report/v1",
        "device": {"id": id, "platform": "macos", "groups": ["mdm-pilot"],
                   "user": "a@corp.example", "ownership": "corporate"},
        "os": {"version": "14.5"},
        "enrollment": "enrolled",
        "checked_in_at": "2026-11-22T10:00:00Z",
        "applied": [{"baseline": "corp-macos", "digest": digest('a'), "status": "applied"}],
        "settings": [
            {"key": "passcode.min_length", "state": "compliant", "actual": 6},
            {"key": "encryption.required", "state": "noncompliant", "actual": false},
            {"key": "apps.blocked", "state": "pending"}
        ]
    })
}

/// `report(id)` with the value at a JSON pointer replaced.
fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    *value.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = new;
    value
}

/// `value` with the field at a JSON pointer removed.
fn without(mut value: Value, pointer: &str) -> Value {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    value
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field)
        .unwrap();
    value
}

fn ndjson(values: &[Value]) -> Vec<u8> {
    values.iter().map(|v| format!("{v}\n")).collect::<String>().into_bytes()
}

fn array(values: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(values).unwrap()
}

/// Parses a body that must be accepted as a whole, fast.
fn parse(body: &[u8], format: BodyFormat) -> ParsedBatch {
    let start = Instant::now();
    let parsed = parse_reports(body, format, now(), Catalog::builtin());
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    parsed.unwrap_or_else(|e| panic!("body refused: {e}"))
}

fn refuse(body: &[u8], format: BodyFormat) -> BatchError {
    let start = Instant::now();
    let parsed = parse_reports(body, format, now(), Catalog::builtin());
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    parsed.expect_err("body accepted")
}

/// The one rejection of a one-report NDJSON body.
fn rejection_of_line(line: &[u8]) -> Rejection {
    let parsed = parse(line, BodyFormat::Ndjson);
    assert_eq!(parsed.reports.len(), 0, "accepted: {:?}", parsed.reports);
    assert_eq!(parsed.rejected.len(), 1);
    parsed.rejected.into_iter().next().unwrap()
}

/// The reason a report is rejected for, the same in both formats.
fn reason(value: Value) -> String {
    let line = rejection_of_line(value.to_string().as_bytes());
    let in_array = parse(&array(&[value]), BodyFormat::JsonArray);
    assert_eq!(in_array.rejected.len(), 1);
    assert_eq!(
        without_position(&in_array.rejected[0].reason),
        without_position(&line.reason),
        "formats disagree"
    );
    line.reason
}

/// A reason without its trailing " at line L column C".
fn without_position(reason: &str) -> &str {
    match reason.rfind(" at line ") {
        Some(cut) if reason[cut..].contains(" column ") => &reason[..cut],
        _ => reason,
    }
}

fn accepted(value: Value) -> DeviceReport {
    let mut parsed = parse(value.to_string().as_bytes(), BodyFormat::Ndjson);
    assert_eq!(parsed.rejected, [], "rejected");
    parsed.reports.pop().unwrap().1
}

fn expected_example(id: &str) -> DeviceReport {
    DeviceReport {
        device: DeviceInfo {
            id: id.to_string(),
            platform: Platform::Macos,
            groups: vec!["mdm-pilot".to_string()],
            user: Some("a@corp.example".to_string()),
            ownership: Some(Ownership::Corporate),
        },
        os: OsInfo {
            version: "14.5".to_string(),
        },
        enrollment: Enrollment::Enrolled,
        checked_in_at: "2026-11-22T10:00:00Z".parse().unwrap(),
        applied: vec![Applied {
            baseline: "corp-macos".to_string(),
            digest: serde_json::from_value(json!(digest('a'))).unwrap(),
            status: ApplyStatus::Applied,
        }],
        settings: vec![
            SettingReport {
                key: "passcode.min_length".into(),
                state: SettingState::Compliant,
                actual: Some(json!(6)),
            },
            SettingReport {
                key: "encryption.required".into(),
                state: SettingState::Noncompliant,
                actual: Some(json!(false)),
            },
            SettingReport {
                key: "apps.blocked".into(),
                state: SettingState::Pending,
                actual: None,
            },
        ],
    }
}

#[test]
fn format_comes_from_the_content_type_then_from_the_first_byte() {
    let array_body = b" \n[{}]";
    let lines = b"{}\n{}";
    assert_eq!(
        BodyFormat::detect(Some("application/json"), lines),
        BodyFormat::JsonArray
    );
    assert_eq!(
        BodyFormat::detect(Some("Application/JSON; charset=utf-8"), lines),
        BodyFormat::JsonArray
    );
    for ndjson_type in [
        "application/x-ndjson",
        "application/jsonl",
        "application/ndjson; charset=utf-8",
    ] {
        assert_eq!(BodyFormat::detect(Some(ndjson_type), array_body), BodyFormat::Ndjson);
    }
    for unknown in [None, Some("text/plain"), Some("")] {
        assert_eq!(BodyFormat::detect(unknown, array_body), BodyFormat::JsonArray);
        assert_eq!(BodyFormat::detect(unknown, lines), BodyFormat::Ndjson);
        assert_eq!(BodyFormat::detect(unknown, b"\xEF\xBB\xBF[]"), BodyFormat::JsonArray);
        assert_eq!(BodyFormat::detect(unknown, b""), BodyFormat::Ndjson);
    }
}

#[test]
fn empty_bodies_and_empty_arrays_hold_nothing() {
    for (body, format) in [
        (&b""[..], BodyFormat::Ndjson),
        (b"\n \r\n\t\n", BodyFormat::Ndjson),
        (b"", BodyFormat::JsonArray),
        (b"  \n", BodyFormat::JsonArray),
        (b"[]", BodyFormat::JsonArray),
        (b" [ \n ] \n", BodyFormat::JsonArray),
    ] {
        assert_eq!(parse(body, format), ParsedBatch::default(), "{body:?}");
    }
}

#[test]
fn the_design_example_is_read_in_both_formats() {
    let expected = expected_example("serial:C02XK0ABCDEF");
    let value = report("serial:C02XK0ABCDEF");
    for (body, format) in [
        (ndjson(std::slice::from_ref(&value)), BodyFormat::Ndjson),
        (array(std::slice::from_ref(&value)), BodyFormat::JsonArray),
        (serde_json::to_vec(&[&value]).unwrap(), BodyFormat::JsonArray),
        (
            [&b"\xEF\xBB\xBF"[..], &ndjson(std::slice::from_ref(&value))].concat(),
            BodyFormat::Ndjson,
        ),
    ] {
        let parsed = parse(&body, format);
        assert_eq!(parsed.rejected, []);
        assert_eq!(parsed.reports, [(0, expected.clone())]);
    }
}

#[test]
fn strings_with_escapes_are_read_like_any_other() {
    let value = with(report("serial:\\u0041BC"), "/os/version", json!("14.5 \"beta\""));
    let text = value.to_string().replace("serial:\\\\u0041BC", "serial:\\u0041BC");
    let mut parsed = parse(text.as_bytes(), BodyFormat::Ndjson);
    let (_, report) = parsed.reports.pop().expect("accepted");
    assert_eq!(report.device.id, "serial:ABC");
    assert_eq!(report.os.version, "14.5 \"beta\"");
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    let mut bare = report("d1");
    for pointer in [
        "/device/groups",
        "/device/user",
        "/device/ownership",
        "/settings/0/actual",
    ] {
        bare = without(bare, pointer);
    }
    let nulls = [
        "/device/groups",
        "/device/user",
        "/device/ownership",
        "/settings/0/actual",
    ]
    .into_iter()
    .fold(report("d1"), |v, p| with(v, p, Value::Null));
    let empty_user = with(report("d1"), "/device/user", json!(""));
    for value in [bare, nulls] {
        let report = accepted(value);
        assert_eq!(report.device.groups, Vec::<String>::new());
        assert_eq!(report.device.user, None);
        assert_eq!(report.device.ownership, None);
        assert_eq!(report.settings[0].actual, None);
    }
    assert_eq!(accepted(empty_user).device.user, None);
    let nothing_applied = with(with(report("d1"), "/applied", json!([])), "/settings", json!([]));
    let report = accepted(nothing_applied);
    assert!(report.applied.is_empty() && report.settings.is_empty());
}

#[test]
fn required_fields_are_named_when_missing() {
    assert_eq!(reason(without(report("d1"), "/schema")), "missing field \"schema\"");
    assert_eq!(reason(without(report("d1"), "/settings")), "missing field \"settings\"");
    assert_eq!(reason(without(report("d1"), "/applied")), "missing field \"applied\"");
    assert_eq!(
        reason(without(report("d1"), "/checked_in_at")),
        "missing field \"checked_in_at\""
    );
    assert_eq!(
        reason(without(report("d1"), "/device/platform")),
        "device: missing field \"platform\""
    );
    assert_eq!(
        reason(without(report("d1"), "/os/version")),
        "os: missing field \"version\""
    );
    assert_eq!(
        reason(without(report("d1"), "/applied/0/digest")),
        "applied[0]: missing field \"digest\""
    );
    assert_eq!(
        reason(without(report("d1"), "/settings/2/state")),
        "settings[2]: missing field \"state\""
    );
}

#[test]
fn groups_are_sorted_and_deduplicated() {
    let value = with(report("d1"), "/device/groups", json!(["b", "a", "b", "mdm pilot", "a"]));
    assert_eq!(accepted(value).device.groups, ["a", "b", "mdm pilot"]);
}

#[test]
fn a_mixed_array_keeps_the_valid_reports_with_their_indexes() {
    let body = array(&[
        report("a"),
        with(report("b"), "/settings/1/key", json!("foo.bar")),
        report("c"),
        json!(5),
        report("d"),
        json!(null),
    ]);
    let parsed = parse(&body, BodyFormat::JsonArray);
    let kept: Vec<(usize, &str)> = parsed.reports.iter().map(|(i, r)| (*i, r.device.id.as_str())).collect();
    assert_eq!(kept, [(0, "a"), (2, "c"), (4, "d")]);
    // Positions are in the body: find the lines of the bare values.
    let text = String::from_utf8(body.clone()).unwrap();
    let line_of = |wanted: &str| text.lines().position(|l| l == wanted).unwrap() + 1;
    let (five, null) = (line_of("  5,"), line_of("  null"));
    assert_eq!(parsed.reports[1].1, expected_example("c"));
    assert_eq!(
        parsed.rejected,
        [
            Rejection {
                index: 1,
                device: Some("b".to_string()),
                reason: "settings[1].key: unknown setting \"foo.bar\"".to_string(),
            },
            Rejection {
                index: 3,
                device: None,
                reason: format!(
                    "invalid type: integer `5`, expected a device report (a JSON object) at line {five} column 3"
                ),
            },
            Rejection {
                index: 5,
                device: None,
                reason: format!("invalid type: null, expected a device report (a JSON object) at line {null} column 6"),
            },
        ]
    );
}

#[test]
fn a_syntax_error_inside_one_element_rejects_only_that_element() {
    let valid = report("ok").to_string();
    let body =
        format!("[{{\"schema\": tru}},\n {valid},\n {{\"device\": {{\"id\": \"x\" \"platform\": 1}}}}, {valid}]");
    let parsed = parse(body.as_bytes(), BodyFormat::JsonArray);
    assert_eq!(parsed.reports.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(parsed.rejected.len(), 2);
    assert_eq!(parsed.rejected[0].index, 0);
    assert_eq!(
        parsed.rejected[0].reason,
        "invalid JSON in schema: expected ident at line 1 column 16"
    );
    assert_eq!(parsed.rejected[1].index, 2);
    assert_eq!(parsed.rejected[1].device.as_deref(), Some("x"));
    assert_eq!(
        parsed.rejected[1].reason,
        "invalid JSON in device: expected `,` or `}` at line 3 column 24"
    );
}

#[test]
fn a_broken_array_fails_the_whole_body_with_line_and_column() {
    let valid = report("ok").to_string();
    for (body, expected) in [
        (
            "{}".to_string(),
            "expected a JSON array of reports, found '{' at line 1 column 1",
        ),
        (
            format!("[{valid},\n{valid}"),
            "unterminated array: the body ends before ']' at line 2",
        ),
        (
            format!("[{valid}\n {valid}]"),
            "expected ',' or ']' after report 0, found '{' at line 2 column 2",
        ),
        (
            format!("[{valid},]"),
            "expected a report after ',', found ']' at line 1 column",
        ),
        (
            format!("[{valid}, {{\"a\": [}}]"),
            "mismatched '}' in report 1 (expected ']') at line 1",
        ),
        (
            format!("[{valid},\n  {{\"a\": \"x]"),
            "unterminated string in report 1: it starts at line 2 column 9",
        ),
        (
            format!("[{valid}] []"),
            "unexpected '[' after the array's closing ']' at line 1",
        ),
    ] {
        match refuse(body.as_bytes(), BodyFormat::JsonArray) {
            BatchError::Malformed { message } => assert!(message.starts_with(expected), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    // Sent as JSON, NDJSON is not an array either.
    let error = refuse(&ndjson(&[report("a")]), BodyFormat::JsonArray);
    assert!(error
        .to_string()
        .starts_with("malformed body: expected a JSON array of reports"));
}

#[test]
fn ndjson_counts_only_non_blank_lines_and_allows_crlf() {
    let a = report("a").to_string();
    let c = report("c").to_string();
    let body = format!("\r\n{a}\r\n  \r\n\t\r\nnot json\r\n\r\n{c}\r\n{{\"schema\": 1}}");
    let parsed = parse(body.as_bytes(), BodyFormat::Ndjson);
    let kept: Vec<(usize, &str)> = parsed.reports.iter().map(|(i, r)| (*i, r.device.id.as_str())).collect();
    assert_eq!(kept, [(0, "a"), (2, "c")]);
    assert_eq!(parsed.reports[0].1, expected_example("a"));
    assert_eq!(
        parsed.rejected,
        [
            Rejection {
                index: 1,
                device: None,
                reason: "invalid JSON: expected ident at line 5 column 2".to_string(),
            },
            Rejection {
                index: 3,
                device: None,
                reason: "schema: invalid type: integer `1`, expected a string at line 8 column 12".to_string(),
            },
        ]
    );
}

#[test]
fn a_broken_ndjson_line_is_rejected_alone() {
    let full = report("dev-7").to_string();
    let cut = &full[..full.find("\"os\"").unwrap()];
    let body = format!("{full}\n{cut}\n{full} {{}}\n{full}\n");
    let parsed = parse(body.as_bytes(), BodyFormat::Ndjson);
    assert_eq!(parsed.reports.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 3]);
    assert_eq!(parsed.rejected.len(), 2);
    assert_eq!(parsed.rejected[0].index, 1);
    assert_eq!(parsed.rejected[0].device.as_deref(), Some("dev-7"));
    assert!(
        parsed.rejected[0]
            .reason
            .starts_with("invalid JSON: EOF while parsing a value at line 2"),
        "{}",
        parsed.rejected[0].reason
    );
    assert_eq!(parsed.rejected[1].index, 2);
    assert!(parsed.rejected[1]
        .reason
        .starts_with("invalid JSON: trailing characters at line 3"));
}

#[test]
fn wrong_schema_versions_are_rejected_for_their_version() {
    let expected = "schema: \"tollgate.device-report/v2\" is not supported (expected tollgate.device-report/v1)";
    let v2 = with(report("dev-2"), "/schema", json!("tollgate.device-report/v2"));
    assert_eq!(reason(v2.clone()), expected);
    // A later version may add fields: the version is still the reason, even
    // when an unknown field comes before the schema.
    let mut v2_with_more = with(v2, "/os", json!({"version": "15", "build": "24A"}));
    v2_with_more
        .as_object_mut()
        .unwrap()
        .insert("battery".into(), json!(0.8));
    let text = v2_with_more.to_string(); // keys sorted: "battery" first
    assert!(text.find("battery").unwrap() < text.find("schema").unwrap());
    let rejection = rejection_of_line(text.as_bytes());
    assert_eq!(rejection.reason, expected);
    assert_eq!(rejection.device.as_deref(), Some("dev-2"));
    assert_eq!(
        reason(with(report("d"), "/schema", json!("tollgate.device-report/v1 "))),
        "schema: \"tollgate.device-report/v1 \" is not supported (expected tollgate.device-report/v1)"
    );
    assert_eq!(REPORT_SCHEMA, "tollgate.device-report/v1");
}

#[test]
fn unknown_fields_are_rejected_where_they_are() {
    let cases = [
        ("", "unknown field \"extra\" (expected one of schema, device, os, enrollment, checked_in_at, applied, settings)"),
        ("/device", "device: unknown field \"extra\" (expected one of id, platform, groups, user, ownership)"),
        ("/os", "os: unknown field \"extra\" (expected one of version)"),
        ("/applied/0", "applied[0]: unknown field \"extra\" (expected one of baseline, digest, status)"),
        ("/settings/2", "settings[2]: unknown field \"extra\" (expected one of key, state, actual)"),
    ];
    for (pointer, expected) in cases {
        let mut value = report("d1");
        value
            .pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("extra".into(), json!(1));
        assert_eq!(reason(value), expected, "{pointer}");
    }
}

#[test]
fn duplicate_keys_are_rejected() {
    let text = report("d1").to_string();
    let cases = [
        (
            text.replacen("\"os\":", "\"os\": {\"version\": \"1\"}, \"os\":", 1),
            "duplicate field \"os\"",
        ),
        (
            text.replacen("\"id\":", "\"id\": \"d0\", \"id\":", 1),
            "device: duplicate field \"id\"",
        ),
        (
            text.replacen("\"state\":\"pending\"", "\"state\":\"pending\",\"state\":\"error\"", 1),
            "settings[2]: duplicate field \"state\"",
        ),
    ];
    for (line, expected) in cases {
        assert_ne!(line, text);
        let rejection = rejection_of_line(line.as_bytes());
        assert_eq!(rejection.reason, expected);
    }
}

#[test]
fn wrong_types_and_values_name_the_field() {
    let cases = [
        (with(report("d"), "/device/platform", json!("beos")), "device.platform: unknown variant `beos`, expected one of `ios`, `ipados`, `macos`, `android`, `windows` at line 1 column"),
        (with(report("d"), "/enrollment", json!("maybe")), "enrollment: unknown variant `maybe`, expected one of `enrolled`, `pending`, `unenrolled` at line 1"),
        (with(report("d"), "/settings/1/state", json!(5)), "settings[1].state: invalid type: integer `5`, expected"),
        (with(report("d"), "/applied/0/status", json!("done")), "applied[0].status: unknown variant `done`"),
        (with(report("d"), "/device/groups/0", json!(7)), "device.groups[0]: invalid type: integer `7`, expected a string at line 1"),
        (with(report("d"), "/device", json!("mac")), "device: invalid type: string \"mac\", expected an object with id, platform"),
        (with(report("d"), "/settings", json!({})), "settings: invalid type: map, expected an array of at most 1024 entries"),
        (with(report("d"), "/device/ownership", json!("rented")), "device.ownership: unknown variant `rented`"),
    ];
    for (value, expected) in cases {
        let reason = reason(value);
        assert!(reason.starts_with(expected), "{reason}\n  expected {expected}");
    }
}

#[test]
fn device_fields_are_checked() {
    let long_id = "x".repeat(257);
    let cases = [
        ("/device/id", json!(""), "device.id: empty".to_string()),
        (
            "/device/id",
            json!("a b"),
            "device.id: \"a b\" holds U+0020 (whitespace) at character 2".to_string(),
        ),
        (
            "/device/id",
            json!("a\u{7}"),
            "device.id: \"a\\u{7}\" holds U+0007 (a control character) at character 2".to_string(),
        ),
        (
            "/device/id",
            json!(long_id),
            "device.id: longer than 256 characters".to_string(),
        ),
        (
            "/device/groups",
            json!(vec!["g"; 257]),
            "device.groups: more than 256 entries".to_string(),
        ),
        (
            "/device/groups",
            json!(["ok", ""]),
            "device.groups[1]: empty".to_string(),
        ),
        (
            "/device/groups",
            json!(["x".repeat(129)]),
            "device.groups[0]: longer than 128 characters".to_string(),
        ),
        (
            "/device/groups",
            json!(["a\tb"]),
            "device.groups[0]: \"a\\tb\" holds U+0009 (a control character) at character 2".to_string(),
        ),
        (
            "/device/user",
            json!("u".repeat(321)),
            "device.user: longer than 320 characters".to_string(),
        ),
        ("/os/version", json!(""), "os.version: empty".to_string()),
        (
            "/os/version",
            json!("1".repeat(65)),
            "os.version: longer than 64 characters".to_string(),
        ),
    ];
    for (pointer, new, expected) in cases {
        assert_eq!(reason(with(report("d"), pointer, new)), expected);
    }
    // At the limits, and limits counted in characters, not bytes.
    let report = accepted(with(report("d"), "/device/id", json!("é".repeat(256))));
    assert_eq!(report.device.id.chars().count(), 256);
    let at_limits = [
        (
            "/device/groups",
            json!((0..256).map(|i| format!("g{i}")).collect::<Vec<_>>()),
        ),
        ("/device/groups", json!(["ü".repeat(128)])),
        ("/device/user", json!("u".repeat(320))),
        ("/os/version", json!("1".repeat(64))),
    ];
    for (pointer, new) in at_limits {
        accepted(with(self::report("d"), pointer, new));
    }
}

#[test]
fn a_rejection_names_the_device_only_when_its_id_is_valid() {
    let bad_id = with(
        with(report("a b"), "/os/version", json!("")),
        "/device/groups",
        json!([""]),
    );
    let rejection = rejection_of_line(bad_id.to_string().as_bytes());
    assert_eq!(rejection.device, None);
    assert_eq!(
        rejection.reason,
        "device.id: \"a b\" holds U+0020 (whitespace) at character 2; \
         device.groups[0]: empty; os.version: empty"
    );
    let good_id = with(report("dev-1"), "/os/version", json!(""));
    assert_eq!(
        rejection_of_line(good_id.to_string().as_bytes()).device.as_deref(),
        Some("dev-1")
    );
}

#[test]
fn many_problems_are_counted_after_the_first_eight() {
    let settings: Vec<Value> = (0..12)
        .map(|i| json!({"key": format!("no.such_{i}"), "state": "error"}))
        .collect();
    let reason = reason(with(report("d"), "/settings", json!(settings)));
    assert!(reason.starts_with("settings[0].key: unknown setting \"no.such_0\"; settings[1].key"));
    assert!(
        reason.ends_with("settings[7].key: unknown setting \"no.such_7\"; and 4 more"),
        "{reason}"
    );
}

#[test]
fn applied_baselines_are_checked() {
    let entry = |baseline: &str, digest: &str| json!({"baseline": baseline, "digest": digest, "status": "applied"});
    let upper = format!("sha256:{}", "A".repeat(64));
    let cases = [
        (
            json!([entry("Corp", &digest('a'))]),
            "applied[0].baseline: \"Corp\" may only hold lowercase letters, digits and '-'".to_string(),
        ),
        (
            json!([entry(&"b".repeat(64), &digest('a'))]),
            format!(
                "applied[0].baseline: \"{}\" must be 1 to 63 characters long",
                "b".repeat(64)
            ),
        ),
        (
            json!([entry("corp", &upper)]),
            format!(
                "applied[0].digest: \"sha256:{}\"… is not \"sha256:\" followed by 64 lowercase hex digits",
                "A".repeat(57)
            ),
        ),
        (
            json!([entry("corp", "sha256:abc")]),
            "applied[0].digest: \"sha256:abc\" is not \"sha256:\" followed by 64 lowercase hex digits".to_string(),
        ),
        (
            json!([entry("corp", &digest('b').replacen("sha256", "sha512", 1))]),
            format!(
                "applied[0].digest: \"sha512:{}\"… is not \"sha256:\" followed by 64 lowercase hex digits",
                "b".repeat(57)
            ),
        ),
        (
            json!([
                entry("corp", &digest('a')),
                entry("other", &digest('b')),
                entry("corp", &digest('c'))
            ]),
            "applied[2].baseline: \"corp\" is listed twice (also applied[0])".to_string(),
        ),
        (
            json!(vec![entry("corp", &digest('a')); 513]),
            "applied: more than 512 entries".to_string(),
        ),
    ];
    for (applied, expected) in cases {
        assert_eq!(reason(with(report("d"), "/applied", applied)), expected);
    }
    let many: Vec<Value> = (0..512).map(|i| entry(&format!("b{i}"), &digest('f'))).collect();
    let report = accepted(with(report("d"), "/applied", json!(many)));
    assert_eq!(report.applied.len(), 512);
    assert_eq!(report.applied[7].digest.as_str(), digest('f'));
}

#[test]
fn settings_are_checked_against_the_catalogue() {
    let setting = |key: &str| json!({"key": key, "state": "compliant"});
    assert_eq!(
        reason(with(report("d"), "/settings/2/key", json!("foo.bar"))),
        "settings[2].key: unknown setting \"foo.bar\""
    );
    assert_eq!(
        reason(with(report("d"), "/settings/2/key", json!("passcode.min_length"))),
        "settings[2].key: \"passcode.min_length\" is listed twice (also settings[0])"
    );
    let both = json!([
        setting("a.b"),
        setting("os.min_version"),
        setting("c.d"),
        setting("os.min_version")
    ]);
    assert_eq!(
        reason(with(report("d"), "/settings", both)),
        "settings[0].key: unknown setting \"a.b\"; settings[2].key: unknown setting \"c.d\"; \
         settings[3].key: \"os.min_version\" is listed twice (also settings[1])"
    );
    assert_eq!(
        reason(with(
            report("d"),
            "/settings",
            json!(vec![setting("passcode.required"); 1025])
        )),
        "settings: more than 1024 entries"
    );
    let keys: Vec<String> = Catalog::builtin().entries().map(|e| e.key.clone()).collect();
    let all: Vec<Value> = keys.iter().map(|k| setting(k)).collect();
    assert_eq!(
        accepted(with(report("d"), "/settings", json!(all))).settings.len(),
        keys.len()
    );
}

#[test]
fn actual_values_are_kept_up_to_four_kib() {
    // `"` + 4094 characters + `"` is 4096 bytes of JSON.
    let fits = json!("x".repeat(4094));
    let report = accepted(with(report("d"), "/settings/0/actual", fits.clone()));
    assert_eq!(report.settings[0].actual, Some(fits));
    let nested = json!({"apps": [{"id": "com.example", "version": [1, 2, 3]}], "n": 1.5});
    assert_eq!(
        accepted(with(self::report("d"), "/settings/1/actual", nested.clone())).settings[1].actual,
        Some(nested)
    );
    assert_eq!(
        reason(with(self::report("d"), "/settings/1/actual", json!("x".repeat(4095)))),
        "settings[1].actual: more than 4096 bytes as JSON"
    );
    assert_eq!(
        reason(with(self::report("d"), "/settings/1/actual", json!(vec![1; 2048]))),
        "settings[1].actual: more than 4096 bytes as JSON"
    );
}

#[test]
fn actual_values_may_not_hold_nul_anywhere() {
    // PostgreSQL's jsonb refuses U+0000; one such report would fail its
    // whole batch in the store.
    for actual in [json!("a\u{0}b"), json!({"k": ["x", "\u{0}"]}), json!({"a\u{0}": 1})] {
        assert_eq!(
            reason(with(report("d"), "/settings/1/actual", actual)),
            "settings[1].actual: holds the character U+0000, which cannot be stored"
        );
    }
    // Other control characters are values like any other.
    let tab = json!("a\tb\u{1}");
    assert_eq!(
        accepted(with(report("d"), "/settings/1/actual", tab.clone())).settings[1].actual,
        Some(tab)
    );
    // A valid report next to it is kept.
    let body = ndjson(&[
        with(report("bad"), "/settings/1/actual", json!("\u{0}")),
        report("good"),
    ]);
    let parsed = parse(&body, BodyFormat::Ndjson);
    assert_eq!((parsed.reports.len(), parsed.rejected[0].index), (1, 0));
}

/// A report whose first setting's `actual` is `actual`, as text.
fn report_with_actual(id: &str, actual: &str) -> String {
    let marker = "\"__actual__\"";
    with(report(id), "/settings/0/actual", json!("__actual__"))
        .to_string()
        .replace(marker, actual)
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn nesting_up_to_a_hundred_levels_is_fine() {
    let line = report_with_actual("d", &nested(100));
    let mut parsed = parse(line.as_bytes(), BodyFormat::Ndjson);
    let (_, report) = parsed.reports.pop().expect("accepted");
    let mut depth = 0;
    let mut value = report.settings[0].actual.as_ref().unwrap();
    while let Some(inner) = value.as_array().and_then(|a| a.first()) {
        depth += 1;
        value = inner;
    }
    assert_eq!(depth, 99); // the innermost array is empty
}

#[test]
fn nesting_too_deep_rejects_only_that_report() {
    for depth in [129, 100_000] {
        let deep = report_with_actual("deep", &nested(depth));
        let ok = report("ok").to_string();
        for format in [BodyFormat::Ndjson, BodyFormat::JsonArray] {
            let body = match format {
                BodyFormat::Ndjson => format!("{ok}\n{deep}\n{ok}\n"),
                BodyFormat::JsonArray => format!("[{ok},\n{deep},\n{ok}]"),
            };
            let parsed = parse(body.as_bytes(), format);
            assert_eq!(parsed.reports.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
            assert_eq!(parsed.rejected.len(), 1);
            let rejection = &parsed.rejected[0];
            assert_eq!((rejection.index, rejection.device.as_deref()), (1, Some("deep")));
            assert!(
                rejection
                    .reason
                    .starts_with("settings[0].actual: nested more than 128 levels deep at line 2 column"),
                "{depth} {format:?}: {}",
                rejection.reason
            );
        }
    }
}

#[test]
fn deep_nesting_anywhere_is_safe() {
    let deep = nested(100_000);
    // As an element of its own: framed by the scanner, refused as no object.
    let parsed = parse(format!("[{deep}, {}]", report("ok")).as_bytes(), BodyFormat::JsonArray);
    assert_eq!(parsed.reports.len(), 1);
    assert_eq!(parsed.reports[0].0, 1);
    assert_eq!(
        parsed.rejected[0].reason,
        "invalid type: sequence, expected a device report (a JSON object) at line 1 column 2"
    );
    // Deep inside an element's object, where the decoder has to follow it.
    let deep_map = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let in_actual = report_with_actual("deep", &deep_map);
    let parsed = parse(
        format!("[{in_actual}, {}]", report("ok")).as_bytes(),
        BodyFormat::JsonArray,
    );
    assert_eq!(parsed.reports.len(), 1);
    assert!(parsed.rejected[0]
        .reason
        .starts_with("settings[0].actual: nested more than 128 levels deep at line 1"));
    // Never closed: the array cannot be framed, an NDJSON line can.
    let open = "[".repeat(100_000);
    let error = refuse(format!("[{}, {open}]", report("ok")).as_bytes(), BodyFormat::JsonArray);
    assert!(
        error.to_string().starts_with("malformed body: unterminated report 1"),
        "{error}"
    );
    let parsed = parse(format!("{open}\n{}\n", report("ok")).as_bytes(), BodyFormat::Ndjson);
    assert_eq!(parsed.reports.len(), 1);
    assert_eq!(parsed.rejected[0].index, 0);
    // Inside a field this version does not know.
    let unknown = report("d").to_string().replacen('{', &format!("{{\"x\": {deep},"), 1);
    assert!(rejection_of_line(unknown.as_bytes())
        .reason
        .starts_with("unknown field \"x\""));
}

#[test]
fn invalid_utf8_in_an_array_fails_the_whole_body() {
    let mut body = array(&[report("a"), report("b")]);
    let at = body.windows(4).rposition(|w| w == b"14.5").unwrap();
    body[at + 1] = 0xFF;
    let line = body[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at + 2 - body[..at].iter().rposition(|&b| b == b'\n').unwrap() - 1;
    match refuse(&body, BodyFormat::JsonArray) {
        BatchError::Malformed { message } => assert_eq!(
            message,
            format!(
                "the body is not valid UTF-8 at line {line} column {column} (byte {}); no report in it was read",
                at + 1
            )
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_in_ndjson_rejects_only_that_line() {
    let mut body = ndjson(&[report("a"), report("b"), report("c")]);
    let second = body.iter().position(|&b| b == b'\n').unwrap() + 1;
    let at = second + body[second..].windows(4).position(|w| w == b"14.5").unwrap();
    body[at] = 0xC3; // a lead byte without its continuation
    let parsed = parse(&body, BodyFormat::Ndjson);
    assert_eq!(
        parsed
            .reports
            .iter()
            .map(|(i, r)| (*i, r.device.id.as_str()))
            .collect::<Vec<_>>(),
        [(0, "a"), (2, "c")]
    );
    let column = at - second + 1;
    assert_eq!(
        parsed.rejected,
        [Rejection {
            index: 1,
            device: None,
            reason: format!("invalid UTF-8 at line 2 column {column}"),
        }]
    );
}

#[test]
fn check_in_times_are_checked_against_the_clock() {
    let at = |time: &str| with(report("d"), "/checked_in_at", json!(time));
    assert_eq!(
        reason(at("2026-11-22T11:02:00Z")),
        "checked_in_at: 2026-11-22T11:02:00Z is 1h in the future (clock skew over 5m)"
    );
    assert_eq!(
        reason(at("2026-11-22T10:07:01Z")),
        "checked_in_at: 2026-11-22T10:07:01Z is 5m 1s in the future (clock skew over 5m)"
    );
    assert_eq!(
        reason(at("2026-11-22T12:07:00.5+02:00")),
        "checked_in_at: 2026-11-22T12:07:00.5+02:00 is 5m 1s in the future (clock skew over 5m)"
    );
    assert_eq!(
        reason(at("1999-12-31T23:59:59Z")),
        "checked_in_at: 1999-12-31T23:59:59Z is before 2000-01-01T00:00:00Z (is the device's clock set?)"
    );
    assert_eq!(
        reason(at("yesterday")),
        "checked_in_at: \"yesterday\" is not an RFC 3339 time (premature end of input)"
    );
    assert!(reason(at("2026-11-22 10:00")).starts_with("checked_in_at: \"2026-11-22 10:00\" is not an RFC 3339 time"));
    // Exactly at the limit, in another offset; and long ago but after 2000.
    let report = accepted(at("2026-11-22T12:07:00+02:00"));
    assert_eq!(report.checked_in_at, now() + TimeDelta::minutes(5));
    assert_eq!(
        accepted(at("2000-01-01T00:00:00Z")).checked_in_at.timestamp(),
        946_684_800
    );
}

/// The smallest valid report.
fn small(i: usize) -> String {
    format!(
        r#"{{"schema":"tollgate.device-report/v1","device":{{"id":"d{i}","platform":"ios"}},"os":{{"version":"18"}},"enrollment":"enrolled","checked_in_at":"2026-11-22T10:00:00Z","applied":[],"settings":[]}}"#
    )
}

#[test]
fn ten_thousand_reports_are_accepted_and_one_more_fails_the_batch() {
    let lines: Vec<String> = (0..MAX_REPORTS).map(small).collect();
    let parsed = parse(lines.join("\n").as_bytes(), BodyFormat::Ndjson);
    assert_eq!(parsed.reports.len(), MAX_REPORTS);
    assert_eq!(parsed.reports[9_999].0, 9_999);
    let parsed = parse(format!("[{}]", lines.join(",")).as_bytes(), BodyFormat::JsonArray);
    assert_eq!(parsed.reports.len(), MAX_REPORTS);

    let more: Vec<String> = (0..=MAX_REPORTS).map(small).collect();
    let too_many = BatchError::TooMany { limit: MAX_REPORTS };
    assert_eq!(refuse(more.join("\n").as_bytes(), BodyFormat::Ndjson), too_many);
    assert_eq!(
        refuse(format!("[{}]", more.join(",")).as_bytes(), BodyFormat::JsonArray),
        too_many
    );
    assert_eq!(
        too_many.to_string(),
        "the body holds more than 10000 reports; send them in several requests"
    );
}

#[test]
fn the_report_count_is_enforced_before_any_report_is_read() {
    // Garbage is counted, not decoded: no 10,001 rejections.
    let too_many = BatchError::TooMany { limit: MAX_REPORTS };
    let lines = "x\n\n".repeat(MAX_REPORTS + 1);
    assert_eq!(refuse(lines.as_bytes(), BodyFormat::Ndjson), too_many);
    let elements = vec!["0"; MAX_REPORTS + 1].join(",");
    assert_eq!(
        refuse(format!("[{elements}]").as_bytes(), BodyFormat::JsonArray),
        too_many
    );
    // The limit is found where it is passed, before framing errors further on.
    assert_eq!(
        refuse(format!("[{elements}, {{").as_bytes(), BodyFormat::JsonArray),
        too_many
    );
    // Blank lines do not count.
    let fine = format!("{}\n", small(1)).repeat(MAX_REPORTS) + "\n\n  \r\n";
    assert_eq!(parse(fine.as_bytes(), BodyFormat::Ndjson).reports.len(), MAX_REPORTS);
}

#[test]
fn bodies_over_sixteen_mib_are_refused() {
    let body = vec![b' '; MAX_REPORTS_BODY + 1];
    assert_eq!(
        refuse(&body, BodyFormat::Ndjson),
        BatchError::TooLarge {
            size: MAX_REPORTS_BODY + 1,
            limit: MAX_REPORTS_BODY
        }
    );
    assert_eq!(parse(&body[1..], BodyFormat::JsonArray), ParsedBatch::default());
}

// ---------------------------------------------------------------------------
// Property: valid reports survive any garbage around them, in order.

fn valid_report() -> impl Strategy<Value = DeviceReport> {
    let keys: Vec<String> = Catalog::builtin().entries().map(|e| e.key.clone()).collect();
    let setting = (
        prop::sample::select(vec![
            SettingState::Compliant,
            SettingState::Noncompliant,
            SettingState::Error,
            SettingState::Pending,
        ]),
        prop::option::of(prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "[ -~]{0,20}".prop_map(Value::from),
            prop::collection::vec("[a-z.]{1,12}", 0..4).prop_map(Value::from),
        ]),
    );
    let applied = (
        prop::collection::vec(any::<u8>(), 1..8),
        prop::sample::select(vec![ApplyStatus::Applied, ApplyStatus::Pending, ApplyStatus::Failed]),
    );
    (
        (
            "[A-Za-z0-9:._-]{1,24}",
            prop::sample::select(Platform::ALL.to_vec()),
            prop::collection::btree_set("[a-z][a-z0-9 -]{0,15}", 0..5),
            prop::option::of("[a-z]{1,8}@corp\\.example"),
            prop::option::of(prop::sample::select(vec![Ownership::Corporate, Ownership::Personal])),
        ),
        "[0-9]{1,2}(\\.[0-9]{1,3}){0,2}",
        prop::sample::select(vec![Enrollment::Enrolled, Enrollment::Pending, Enrollment::Unenrolled]),
        0i64..400_000_000,
        prop::collection::vec(applied, 0..4),
        prop::sample::subsequence(keys.clone(), 0..=keys.len()),
        prop::collection::vec(setting, keys.len()),
    )
        .prop_map(
            |((id, platform, groups, user, ownership), version, enrollment, ago, applied, keys, settings)| {
                DeviceReport {
                    device: DeviceInfo {
                        id,
                        platform,
                        groups: groups.into_iter().collect(),
                        user,
                        ownership,
                    },
                    os: OsInfo { version },
                    enrollment,
                    checked_in_at: now() - TimeDelta::seconds(ago),
                    applied: applied
                        .into_iter()
                        .enumerate()
                        .map(|(i, (bytes, status))| Applied {
                            baseline: format!("corp-{i}"),
                            digest: Digest::from_canonical_bytes(&bytes),
                            status,
                        })
                        .collect(),
                    settings: keys
                        .into_iter()
                        .zip(settings)
                        .map(|(key, (state, actual))| SettingReport {
                            key: key.into(),
                            state,
                            actual,
                        })
                        .collect(),
                }
            },
        )
}

fn wire(report: &DeviceReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .insert("schema".into(), json!(REPORT_SCHEMA));
    value
}

/// A JSON value that is no valid report.
fn garbage_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::from),
        Just(Value::Null),
        Just(json!([])),
        Just(json!({})),
        valid_report().prop_map(|r| with(wire(&r), "/schema", json!("tollgate.device-report/v0"))),
        valid_report().prop_map(|r| with(wire(&r), "/settings", json!([{"key": "no.such", "state": "error"}]))),
        valid_report().prop_map(|r| with(wire(&r), "/checked_in_at", json!("2030-01-01T00:00:00Z"))),
        valid_report().prop_map(|r| with(wire(&r), "/os", json!({"version": "1", "build": "x"}))),
    ]
}

/// A line that is no valid report: garbage values, broken JSON, bad UTF-8.
fn garbage_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        garbage_value().prop_map(|v| v.to_string().into_bytes()),
        "[^\r\n]{1,40}"
            .prop_filter("not blank", |s| !s.trim().is_empty())
            .prop_map(String::into_bytes),
        (valid_report(), any::<prop::sample::Index>()).prop_map(|(r, cut)| {
            let text = wire(&r).to_string();
            text.as_bytes()[..cut.index(text.len())].to_vec()
        }),
        ("[ -~]{0,10}", any::<u8>()).prop_map(|(s, b)| [s.as_bytes(), &[0x80 | (b & 0x3F)], b"}"].concat()),
    ]
    .prop_filter("not blank", |line| !line.iter().all(|b| b" \t\r".contains(b)))
}

#[derive(Debug, Clone)]
enum Entry<T> {
    Valid(DeviceReport),
    Garbage(T),
}

fn check(entries: &[Entry<impl Sized>], parsed: &ParsedBatch) -> Result<(), TestCaseError> {
    let expected: Vec<(usize, DeviceReport)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Valid(r) => Some((i, r.clone())),
            Entry::Garbage(_) => None,
        })
        .collect();
    let garbage: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| matches!(e, Entry::Garbage(_)).then_some(i))
        .collect();
    prop_assert_eq!(&parsed.reports, &expected);
    // Each valid report's text, as the store keeps it, reads back into the
    // same report; so does PostgreSQL's rendering of it (keys reordered,
    // whitespace dropped).
    prop_assert_eq!(parsed.texts.len(), parsed.reports.len());
    for ((_, report), text) in parsed.reports.iter().zip(&parsed.texts) {
        prop_assert_eq!(&read_stored_report(text.as_str(), Catalog::builtin()).unwrap(), report);
        let rendered = serde_json::from_str::<Value>(text.as_str()).unwrap().to_string();
        prop_assert_eq!(&read_stored_report(&rendered, Catalog::builtin()).unwrap(), report);
    }
    let rejected: Vec<usize> = parsed.rejected.iter().map(|r| r.index).collect();
    prop_assert_eq!(rejected, garbage);
    for rejection in &parsed.rejected {
        prop_assert!(!rejection.reason.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ndjson_keeps_valid_reports_in_order_around_garbage_lines(
        entries in prop::collection::vec(
            prop_oneof![valid_report().prop_map(Entry::Valid), garbage_line().prop_map(Entry::Garbage)],
            0..24,
        ),
        crlf in any::<bool>(),
        blank_every in 2usize..6,
    ) {
        let end = if crlf { &b"\r\n"[..] } else { b"\n" };
        let mut body = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if i % blank_every == 0 {
                body.extend_from_slice(b"  \t");
                body.extend_from_slice(end);
            }
            match entry {
                Entry::Valid(report) => body.extend_from_slice(wire(report).to_string().as_bytes()),
                Entry::Garbage(line) => body.extend_from_slice(line),
            }
            body.extend_from_slice(end);
        }
        let parsed = parse_reports(&body, BodyFormat::Ndjson, now(), Catalog::builtin()).unwrap();
        check(&entries, &parsed)?;
        let shared = Bytes::from(body);
        prop_assert_eq!(&parse_reports_shared(&shared, BodyFormat::Ndjson, now(), Catalog::builtin()).unwrap(), &parsed);
    }

    #[test]
    fn a_reports_text_reads_back_as_itself(report in valid_report()) {
        // As a device would send it (what the simulator and tests store).
        let text = report_text(&report);
        prop_assert_eq!(&read_stored_report(&text, Catalog::builtin()).unwrap(), &report);
        let parsed = parse_reports(text.as_bytes(), BodyFormat::Ndjson, now(), Catalog::builtin()).unwrap();
        prop_assert_eq!(&parsed.reports, &vec![(0, report.clone())]);
        prop_assert_eq!(parsed.texts[0].as_str(), &text);
        // The form earlier versions stored, without the schema.
        let old = serde_json::to_string(&report).unwrap();
        prop_assert_eq!(&read_stored_report(&old, Catalog::builtin()).unwrap(), &report);
    }

    #[test]
    fn arrays_keep_valid_reports_in_order_around_garbage_elements(
        entries in prop::collection::vec(
            prop_oneof![valid_report().prop_map(Entry::Valid), garbage_value().prop_map(Entry::Garbage)],
            0..24,
        ),
        pretty in any::<bool>(),
    ) {
        let values: Vec<Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Valid(report) => wire(report),
                Entry::Garbage(value) => value.clone(),
            })
            .collect();
        let body = if pretty { serde_json::to_vec_pretty(&values) } else { serde_json::to_vec(&values) }.unwrap();
        let parsed = parse_reports(&body, BodyFormat::JsonArray, now(), Catalog::builtin()).unwrap();
        check(&entries, &parsed)?;
        let shared = Bytes::from(body);
        prop_assert_eq!(&parse_reports_shared(&shared, BodyFormat::JsonArray, now(), Catalog::builtin()).unwrap(), &parsed);
    }
}

#[test]
fn a_stored_report_is_read_without_the_clock_but_with_every_other_rule() {
    // Accepted a minute ahead of the controller's clock: stored as it came.
    let ahead = with(
        report("dev-1"),
        "/checked_in_at",
        json!((now() + TimeDelta::minutes(4)).to_rfc3339()),
    );
    let parsed = parse(&ndjson(std::slice::from_ref(&ahead)), BodyFormat::Ndjson);
    assert_eq!(parsed.texts[0].as_str(), ahead.to_string());
    // Read back later under any clock, even one that moved back meanwhile.
    let far = with(report("dev-1"), "/checked_in_at", json!("2999-01-01T00:00:00Z"));
    let read = read_stored_report(&far.to_string(), Catalog::builtin()).unwrap();
    assert_eq!(read.checked_in_at.to_rfc3339(), "2999-01-01T00:00:00+00:00");
    // Everything else still holds: a text that is not a report says why.
    let bad = with(report("dev-1"), "/os/version", json!(""));
    assert_eq!(
        read_stored_report(&bad.to_string(), Catalog::builtin()).unwrap_err(),
        "os.version: empty"
    );
    let why = read_stored_report("{\"schema\": 1", Catalog::builtin()).unwrap_err();
    assert!(why.contains("line 1"), "{why}");
}

#[test]
fn shared_bodies_lend_their_reports_texts_instead_of_copying_them() {
    for (format, body) in [
        (BodyFormat::Ndjson, ndjson(&[report("a"), report("b")])),
        (BodyFormat::JsonArray, array(&[report("a"), report("b")])),
    ] {
        let shared = Bytes::from(body);
        let parsed = parse_reports_shared(&shared, format, now(), Catalog::builtin()).unwrap();
        assert_eq!(parsed.texts.len(), 2);
        let range = shared.as_ptr_range();
        for text in &parsed.texts {
            let p = text.as_str().as_ptr();
            assert!(range.contains(&p), "{format:?}: a copy, not a slice of the body");
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(value["schema"], REPORT_SCHEMA);
        }
    }
}

#[test]
fn setting_keys_are_borrowed_from_the_catalogue() {
    use std::borrow::Cow;
    let parsed = parse(&ndjson(&[report("a")]), BodyFormat::Ndjson);
    let settings = &parsed.reports[0].1.settings;
    assert_eq!(settings.len(), 3);
    for s in settings {
        let Cow::Borrowed(key) = &s.key else {
            panic!("{} was copied", s.key)
        };
        let entry = Catalog::builtin().get(key).unwrap();
        assert!(std::ptr::eq(*key, entry.key.as_str()), "{key} is not the catalogue's");
    }
}
