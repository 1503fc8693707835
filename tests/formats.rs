//! Strict parsing of governed documents, including hostile input (DESIGN 2).

use std::time::{Duration, Instant};

use tollgate::catalog::Catalog;
use tollgate::format::{parse_file, Document, FormatError};
use tollgate::tree::{FileContent, RepoPath, SourceFile};

fn file(path: &str, text: &[u8]) -> SourceFile {
    SourceFile {
        path: RepoPath::new(path).unwrap(),
        content: FileContent::Blob(text.to_vec()),
    }
}

fn parse(path: &str, text: &str) -> Result<Document, FormatError> {
    parse_file(&file(path, text.as_bytes()), Catalog::builtin()).map(|d| d.expect("governed path"))
}

/// Parses and expects an error, which must come back fast (hostile input
/// must never stall the controller).
fn parse_err(path: &str, text: &[u8]) -> FormatError {
    let start = Instant::now();
    let r = parse_file(&file(path, text), Catalog::builtin());
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{path}: took {took:?}");
    r.expect_err("expected an error")
}

const IOS: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata:
  name: corp-ios
  owners: [mdm-ios]
spec:
  platform: ios
  priority: 100
  targets:
    groups: [all-corporate-iphones]
  settings:
    passcode.required: true
    passcode.min_length: 8
    os.min_version: \"17.4\"
    apps.blocked: [com.dropbox.Dropbox]
";

#[test]
fn parses_the_design_example() {
    let Document::Baseline(b) = parse("baselines/ios/corp-ios.yaml", IOS).unwrap() else {
        panic!("not a baseline")
    };
    assert_eq!(b.name, "corp-ios");
    assert_eq!(b.owners, ["mdm-ios"]);
    assert_eq!(b.priority, 100);
    assert_eq!(b.settings["passcode.min_length"], 8);
    assert_eq!(b.settings["apps.blocked"], serde_json::json!(["com.dropbox.Dropbox"]));
}

#[test]
fn unknown_key_names_line_and_column() {
    let text = IOS.replace("  priority: 100\n", "  priority: 100\n  colour: red\n");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert_eq!((e.line, e.column), (9, 3), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    assert!(e.to_string().starts_with("baselines/ios/corp-ios.yaml:9:3: "), "{e}");
}

#[test]
fn unknown_setting_is_an_error() {
    let text = IOS.replace("    passcode.required: true\n", "    passcode.requird: true\n");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("unknown setting `passcode.requird`"), "{e}");
    assert_eq!(e.line, 12, "{e}");
}

#[test]
fn wrong_type_and_out_of_range_are_positioned() {
    let text = IOS.replace("passcode.min_length: 8", "passcode.min_length: 20");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert_eq!(e.line, 13, "{e}");
    assert!(e.message.contains("passcode.min_length"), "{e}");
    assert!(e.message.contains("16"), "{e}");

    let text = IOS.replace("passcode.required: true", "passcode.required: \"yes\"");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert_eq!(e.line, 12, "{e}");

    let text = IOS.replace("priority: 100", "priority: lots");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert_eq!(e.line, 8, "{e}");
}

#[test]
fn duplicate_keys_are_errors() {
    let text = IOS.replace(
        "    passcode.min_length: 8\n",
        "    passcode.min_length: 8\n    passcode.min_length: 4\n",
    );
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("duplicate setting `passcode.min_length`"), "{e}");
    assert_eq!(e.line, 14, "{e}");

    let text = IOS.replace("  priority: 100\n", "  priority: 100\n  priority: 200\n");
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("duplicate field `priority`"), "{e}");
}

#[test]
fn setting_unsupported_on_platform_is_an_error() {
    let text = IOS.replace(
        "    passcode.required: true\n",
        "    passcode.required: true\n    av.realtime_required: true\n",
    );
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("not supported on ios"), "{e}");
    assert_eq!(e.line, 13, "{e}");
}

#[test]
fn names_must_be_dns_labels_and_kind_must_match_directory() {
    let e = parse_err(
        "baselines/ios/corp-ios.yaml",
        IOS.replace("name: corp-ios", "name: Corp_iOS").as_bytes(),
    );
    assert!(e.message.contains("invalid name"), "{e}");
    assert_eq!(e.line, 4, "{e}");
    let e = parse_err("exceptions/x.yaml", IOS.as_bytes());
    assert!(e.message.contains("kind"), "{e}");
}

#[test]
fn alias_bomb_is_refused_fast() {
    let mut bomb = String::from("apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: bomb}\n");
    bomb.push_str("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("spec:\n  platform: ios\n  targets: {groups: [g]}\n  settings:\n    apps.blocked: *a11\n");
    let e = parse_err("baselines/bomb.yaml", bomb.as_bytes());
    // The unknown top-level key is caught first, or the expansion limit is:
    // either way nothing expands 10^12 nodes.
    assert!(
        e.message.contains("unknown field") || e.message.contains("alias"),
        "{e}"
    );

    let mut bomb = String::from("apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: bomb}\nspec:\n  platform: ios\n  targets: {groups: [g]}\n  settings:\n    apps.blocked: [");
    // Anchors defined inline inside the value itself.
    bomb.push_str("&a [x, x, x, x, x, x, x, x], ");
    for _ in 0..2000 {
        bomb.push_str("*a, ");
    }
    bomb.push_str("x]\n");
    let e = parse_err("baselines/bomb.yaml", bomb.as_bytes());
    assert!(!e.message.is_empty(), "{e}");
}

#[test]
fn quadratic_alias_expansion_is_refused_with_a_clear_message() {
    let mut y = String::from("apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: bomb}\nspec:\n  platform: ios\n  targets: {groups: [g]}\n  settings:\n    cosmetic.lock_screen_message: x\n    apps.blocked:\n");
    y.push_str("      - &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..9 {
        let p = i - 1;
        y.push_str(&format!(
            "      - &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        ));
    }
    let e = parse_err("baselines/bomb.yaml", y.as_bytes());
    assert!(
        e.message.contains("alias bomb") || e.message.contains("nesting") || e.message.contains("apps.blocked"),
        "{e}"
    );
}

#[test]
fn nesting_deeper_than_64_is_refused() {
    let deep = format!("{}x{}", "[".repeat(70), "]".repeat(70));
    let text = IOS.replace("apps.blocked: [com.dropbox.Dropbox]", &format!("apps.blocked: {deep}"));
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("nesting deeper than 64"), "{e}");

    // Far deeper than any recursion limit: still a clean, fast error.
    let deep = format!("{}x{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = IOS.replace("apps.blocked: [com.dropbox.Dropbox]", &format!("apps.blocked: {deep}"));
    let e = parse_err("baselines/ios/corp-ios.yaml", text.as_bytes());
    assert!(e.message.contains("nesting deeper than 64"), "{e}");
}

#[test]
fn oversize_file_is_refused_without_parsing() {
    let mut big = IOS.to_string();
    big.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    let e = parse_err("baselines/ios/corp-ios.yaml", big.as_bytes());
    assert!(e.message.contains("at most 1048576 bytes"), "{e}");
    let e = parse_file(
        &SourceFile {
            path: RepoPath::new("baselines/big.yaml").unwrap(),
            content: FileContent::TooLarge { size: 5 << 20 },
        },
        Catalog::builtin(),
    )
    .unwrap_err();
    assert!(e.message.contains("5242880 bytes"), "{e}");
}

#[test]
fn non_utf8_points_at_the_first_bad_byte() {
    let mut bytes = IOS.as_bytes().to_vec();
    let at = IOS.find("corp-ios").unwrap();
    bytes[at + 2] = 0xff;
    let e = parse_err("baselines/ios/corp-ios.yaml", &bytes);
    assert!(e.message.contains("not valid UTF-8"), "{e}");
    assert_eq!((e.line, e.column), (4, 11), "{e}");
}

#[test]
fn symlinks_and_submodules_are_rejected_by_name() {
    let link = SourceFile {
        path: RepoPath::new("baselines/ios/link.yaml").unwrap(),
        content: FileContent::Symlink {
            target: "/etc/passwd".into(),
        },
    };
    let e = parse_file(&link, Catalog::builtin()).unwrap_err();
    assert!(e.message.contains("symbolic link"), "{e}");
    assert!(e.message.contains("never followed"), "{e}");
    let sub = SourceFile {
        path: RepoPath::new("baselines/vendor").unwrap(),
        content: FileContent::Submodule,
    };
    let e = parse_file(&sub, Catalog::builtin()).unwrap_err();
    assert!(e.message.contains("submodule"), "{e}");
}

#[test]
fn paths_escaping_the_repo_cannot_be_named() {
    for p in [
        "../baselines/x.yaml",
        "/baselines/x.yaml",
        "baselines/../../x.yaml",
        "baselines/./x.yaml",
    ] {
        let e = RepoPath::new(p).unwrap_err();
        assert!(e.to_string().contains(p), "{e}");
    }
}

#[test]
fn malformed_yaml_is_positioned() {
    let e = parse_err(
        "baselines/ios/corp-ios.yaml",
        b"apiVersion: tollgate.dev/v1alpha1\nkind: [Baseline\nspec: {\n",
    );
    assert!(e.line >= 2, "{e}");
    let e = parse_err("baselines/ios/corp-ios.yaml", format!("{IOS}---\n{IOS}").as_bytes());
    assert!(e.message.contains("more than one document"), "{e}");
}

const EXCEPTION: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Exception
metadata: {name: legal-usb-q4}
spec:
  baseline: corp-macos
  settings: [usb.storage_blocked]
  scope: {groups: [legal-forensics]}
  reason: Forensic imaging of seized laptops
  expires: 2026-12-31T00:00:00Z
";

#[test]
fn exceptions_parse_and_are_strict() {
    let Document::Exception(e) = parse("exceptions/legal.yaml", EXCEPTION).unwrap() else {
        panic!()
    };
    assert_eq!(e.baseline, "corp-macos");
    assert_eq!(e.expires.to_rfc3339(), "2026-12-31T00:00:00+00:00");
    let err = parse_err(
        "exceptions/legal.yaml",
        EXCEPTION.replace("  expires: 2026-12-31T00:00:00Z\n", "").as_bytes(),
    );
    assert!(err.message.contains("missing field `expires`"), "{err}");
    let err = parse_err(
        "exceptions/legal.yaml",
        EXCEPTION
            .replace("{groups: [legal-forensics]}", "{groups: [a], devices: [b]}")
            .as_bytes(),
    );
    assert!(err.message.contains("not both"), "{err}");
    assert_eq!(err.line, 7, "{err}");
    let err = parse_err(
        "exceptions/legal.yaml",
        EXCEPTION.replace("usb.storage_blocked", "usb.nope").as_bytes(),
    );
    assert!(err.message.contains("unknown setting `usb.nope`"), "{err}");
    let err = parse_err(
        "exceptions/legal.yaml",
        EXCEPTION.replace("2026-12-31T00:00:00Z", "next tuesday").as_bytes(),
    );
    assert_eq!(err.line, 9, "{err}");
}

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 2h,  gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: pilot,  selector: {groups: [mdm-pilot]},  soak: 24h, gate: {min_applied: 0.95, max_noncompliant_increase: 0.01}}
  - {name: broad,  selector: {all: true}}
approvers:
  mdm-security: {forge_team: acme/mdm-security}
  mdm-ios:      {forge_team: acme/mdm-ios}
  oncall:       {users: [dana, eli]}
windows:
  business-hours: {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", tz: Europe/Berlin}
freezes:
  - {from: 2026-12-20, to: 2027-01-04, reason: year-end freeze}
"#;

#[test]
fn config_parses_the_design_example() {
    let Document::Config(c) = parse("tollgate.yaml", CONFIG).unwrap() else {
        panic!()
    };
    assert_eq!(c.rings.len(), 3);
    assert_eq!(c.rings[0].soak_secs, 7200);
    assert_eq!(c.ring_for(&["mdm-pilot".into()]).unwrap().name, "pilot");
    assert_eq!(c.ring_for(&["someone".into()]).unwrap().name, "broad");
    assert_eq!(c.approvers["oncall"].users, ["dana", "eli"]);
    assert_eq!(c.windows["business-hours"].tz, chrono_tz::Europe::Berlin);
}

#[test]
fn config_errors_are_positioned() {
    let cases = [
        ("soak: 2h,", "soak: 2 hours,", 5, "not a duration"),
        (
            "min_applied: 0.95, max_noncompliant_increase: 0.01}}\n  - {name: pilot",
            "min_applied: 1.5, max_noncompliant_increase: 0.01}}\n  - {name: pilot",
            5,
            "share from 0 to 1",
        ),
        ("tz: Europe/Berlin", "tz: Mars/Olympus", 13, "IANA time zone"),
        ("start: \"09:00\"", "start: \"17:00\"", 13, "before its end"),
        ("from: 2026-12-20", "from: 2027-02-20", 15, "after its end"),
        ("acme/mdm-ios", "mdm-ios", 10, "org/team"),
    ];
    for (from, to, line, msg) in cases {
        let e = parse_err("tollgate.yaml", CONFIG.replacen(from, to, 1).as_bytes());
        assert!(e.message.contains(msg), "{from} -> {to}: {e}");
        assert_eq!(e.line, line, "{from} -> {to}: {e}");
    }
    let all_first = CONFIG.replace("selector: {groups: [mdm-canary]}", "selector: {all: true}");
    let e = parse_err("tollgate.yaml", all_first.as_bytes());
    assert!(e.message.contains("make it the last ring"), "{e}");
}
