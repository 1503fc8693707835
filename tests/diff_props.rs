//! Invariants of the digest and the semantic diff, checked on generated
//! baselines: the digest ignores formatting, key order and set order; a
//! document never differs from itself; diff(a, b) mirrors diff(b, a).

use proptest::prelude::*;
use serde_json::{json, Value};

use tollgate::catalog::{Catalog, Direction};
use tollgate::diff::{diff_snapshots, SettingOp};
use tollgate::snapshot::Snapshot;
use tollgate::tree::{FileContent, RepoPath, SourceFile};

/// Candidate values per setting, all valid on Windows.
fn candidates() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("passcode.required", vec![json!(true), json!(false)]),
        ("passcode.min_length", vec![json!(4), json!(6), json!(8), json!(12)]),
        ("passcode.history", vec![json!(0), json!(5), json!(24)]),
        ("encryption.required", vec![json!(true), json!(false)]),
        (
            "os.min_version",
            vec![json!("13.0"), json!("14.5"), json!("14.10"), json!("15")],
        ),
        (
            "apps.blocked",
            vec![
                json!([]),
                json!(["com.a"]),
                json!(["com.a", "com.b"]),
                json!(["com.c", "com.b", "com.a"]),
            ],
        ),
        (
            "certs.trusted_roots",
            vec![
                json!([{"name": "r1", "sha256": "a".repeat(64)}]),
                json!([{"name": "r1", "sha256": "a".repeat(64)}, {"name": "r2", "sha256": "b".repeat(64)}]),
                json!([{"name": "r1", "sha256": "c".repeat(64)}]),
            ],
        ),
        ("usb.storage_blocked", vec![json!(true), json!(false)]),
        (
            "cosmetic.lock_screen_message",
            vec![json!("Acme"), json!("Property of Acme: call 555")],
        ),
    ]
}

/// A baseline as a list of (key, value) settings plus its target groups.
fn baseline() -> impl Strategy<Value = (Vec<(String, Value)>, Vec<String>)> {
    let picks: Vec<BoxedStrategy<Option<(String, Value)>>> = candidates()
        .into_iter()
        .map(|(k, vs)| proptest::option::of(proptest::sample::select(vs).prop_map(move |v| (k.to_string(), v))).boxed())
        .collect();
    let groups = proptest::sample::subsequence(vec!["g-a", "g-b", "g-c", "g-d"], 1..4)
        .prop_map(|g| g.into_iter().map(String::from).collect::<Vec<_>>());
    (picks, groups).prop_map(|(p, g)| (p.into_iter().flatten().collect(), g))
}

/// Renders a baseline as YAML: block or flow style, keys in the given order.
fn render(settings: &[(String, Value)], groups: &[String], flow: bool, reverse: bool) -> String {
    let mut s: Vec<&(String, Value)> = settings.iter().collect();
    let mut g: Vec<&String> = groups.iter().collect();
    if reverse {
        s.reverse();
        g.reverse();
    }
    let set_json = |v: &Value| {
        let mut v = v.clone();
        if reverse {
            if let Value::Array(items) = &mut v {
                items.reverse();
            }
        }
        v.to_string()
    };
    let groups = g.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ");
    if flow {
        let body = s
            .iter()
            .map(|(k, v)| format!("{k}: {}", set_json(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{{kind: Baseline, apiVersion: tollgate.dev/v1alpha1, metadata: {{name: corp-mac}}, spec: {{settings: {{{body}}}, targets: {{groups: [{groups}]}}, platform: windows}}}}\n"
        )
    } else {
        let mut out = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: corp-mac\nspec:\n  platform: windows\n  targets:\n    groups: [{groups}]\n  settings:\n"
        );
        if s.is_empty() {
            out = out.replace("  settings:\n", "  settings: {}\n");
        }
        for (k, v) in s {
            out.push_str(&format!("    {k}: {}\n", set_json(v)));
        }
        out
    }
}

fn snapshot(path: &str, text: &str) -> Snapshot {
    let file = SourceFile {
        path: RepoPath::new(path).unwrap(),
        content: FileContent::Blob(text.as_bytes().to_vec()),
    };
    let (snap, errors) = Snapshot::build(&[file], Catalog::builtin());
    assert!(errors.is_empty(), "{errors:?}\n{text}");
    snap
}

fn mirror(d: Direction) -> Direction {
    match d {
        Direction::Tighten => Direction::Loosen,
        Direction::Loosen => Direction::Tighten,
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn digest_ignores_formatting_key_order_and_set_order((settings, groups) in baseline()) {
        let a = snapshot("baselines/mac.yaml", &render(&settings, &groups, false, false));
        let b = snapshot("baselines/mac.yaml", &render(&settings, &groups, true, true));
        prop_assert_eq!(&a.baselines["corp-mac"].digest, &b.baselines["corp-mac"].digest);
        prop_assert!(diff_snapshots(&a, &b, Catalog::builtin()).is_empty());
    }

    #[test]
    fn a_document_never_differs_from_itself((settings, groups) in baseline()) {
        let a = snapshot("baselines/mac.yaml", &render(&settings, &groups, false, false));
        prop_assert!(diff_snapshots(&a, &a, Catalog::builtin()).is_empty());
    }

    #[test]
    fn diff_mirrors((sa, ga) in baseline(), (sb, gb) in baseline()) {
        let a = snapshot("baselines/mac.yaml", &render(&sa, &ga, false, false));
        let b = snapshot("baselines/mac.yaml", &render(&sb, &gb, false, false));
        let ab = diff_snapshots(&a, &b, Catalog::builtin());
        let ba = diff_snapshots(&b, &a, Catalog::builtin());
        prop_assert_eq!(ab.len(), ba.len());
        let digests_differ = a.baselines["corp-mac"].digest != b.baselines["corp-mac"].digest;
        prop_assert_eq!(ab.len(), usize::from(digests_differ));
        for (x, y) in ab.iter().zip(&ba) {
            prop_assert_eq!(&x.groups_added, &y.groups_removed);
            prop_assert_eq!(&x.groups_removed, &y.groups_added);
            prop_assert_eq!(&x.base_digest, &y.head_digest);
            prop_assert_eq!(x.settings.len(), y.settings.len());
            for (s, t) in x.settings.iter().zip(&y.settings) {
                prop_assert_eq!(&s.key, &t.key);
                prop_assert_eq!(&s.old, &t.new);
                prop_assert_eq!(&s.new, &t.old);
                prop_assert_eq!(&s.members_added, &t.members_removed);
                let op = match s.op { SettingOp::Added => SettingOp::Removed, SettingOp::Removed => SettingOp::Added, o => o };
                prop_assert_eq!(op, t.op);
                let mixed = !s.members_added.is_empty() && !s.members_removed.is_empty();
                if mixed {
                    // Members both gained and lost (or re-issued under the same
                    // id): never read as tightening either way (fail closed).
                    for d in [s.direction, t.direction] {
                        prop_assert!(matches!(d, Direction::Loosen | Direction::Unknown), "{} {:?} -> {:?}: {:?}", s.key, s.old, s.new, d);
                    }
                } else if s.op == SettingOp::Changed {
                    prop_assert_eq!(mirror(s.direction), t.direction, "{} {:?} -> {:?}", s.key, s.old, s.new);
                }
            }
        }
    }
}

#[test]
fn a_move_is_one_renamed_change() {
    let text = render(
        &[("passcode.min_length".into(), json!(8))],
        &["g-a".into()],
        false,
        false,
    );
    let a = snapshot("baselines/mac.yaml", &text);
    let b = snapshot(
        "baselines/macos/team/mac.yaml",
        &text.replace("min_length: 8", "min_length: 10"),
    );
    let d = diff_snapshots(&a, &b, Catalog::builtin());
    assert_eq!(d.len(), 1);
    assert_eq!(serde_json::to_value(d[0].op).unwrap(), "renamed");
    assert_eq!(d[0].old_path.as_deref(), Some("baselines/mac.yaml"));
    assert_eq!(d[0].path, "baselines/macos/team/mac.yaml");
    assert_eq!(d[0].settings.len(), 1);
    assert_eq!(d[0].settings[0].direction, Direction::Tighten);
}

#[test]
fn sets_list_members_added_and_removed() {
    let a = snapshot(
        "baselines/mac.yaml",
        &render(
            &[("apps.blocked".into(), json!(["com.a", "com.b"]))],
            &["g-a".into()],
            false,
            false,
        ),
    );
    let b = snapshot(
        "baselines/mac.yaml",
        &render(
            &[("apps.blocked".into(), json!(["com.b", "com.c"]))],
            &["g-a".into(), "g-b".into()],
            false,
            false,
        ),
    );
    let d = &diff_snapshots(&a, &b, Catalog::builtin())[0];
    let s = &d.settings[0];
    assert_eq!(s.members_added, ["com.c"]);
    assert_eq!(s.members_removed, ["com.a"]);
    assert_eq!(s.direction, Direction::Loosen, "a member left the block list");
    assert_eq!(d.groups_added, ["g-b"]);
    assert!(d.groups_removed.is_empty());
}

#[test]
fn reissued_set_member_counts_as_removed_and_added() {
    let root = |h: &str| json!([{"name": "r1", "sha256": h.repeat(64)}]);
    let a = snapshot(
        "baselines/mac.yaml",
        &render(
            &[("certs.trusted_roots".into(), root("a"))],
            &["g-a".into()],
            false,
            false,
        ),
    );
    let b = snapshot(
        "baselines/mac.yaml",
        &render(
            &[("certs.trusted_roots".into(), root("c"))],
            &["g-a".into()],
            false,
            false,
        ),
    );
    let s = &diff_snapshots(&a, &b, Catalog::builtin())[0].settings[0];
    assert_eq!(s.members_added, ["r1"]);
    assert_eq!(s.members_removed, ["r1"]);
}
