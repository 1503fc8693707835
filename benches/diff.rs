//! Semantic diff of one large baseline (10,000 settings, 1% of them
//! changed) against `diff -u` of the same two files.
//!
//! The shipped catalogue has a few dozen settings, so the bench builds a
//! synthetic one with 10,000 entries of every value type (bool, int, enum,
//! version, string, set of ids) and leaks it: parsing needs a
//! `&'static Catalog`.
//!
//! - `tollgate_parse_and_diff`: both files parsed (strict, type-checked,
//!   digested) and diffed per setting: what a plan does with the file.
//! - `tollgate_parse` and `tollgate_diff`: the two halves on their own.
//! - `tollgate_unified_text`: the line diff Tollgate renders for people
//!   (`similar`), in-process.
//! - `diff_u_process`: `diff -u a.yaml b.yaml` as a process.

#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::catalog::Catalog;
use tollgate::diff::{diff_snapshots, unified_text};
use tollgate::snapshot::Snapshot;
use tollgate::tree::{FileContent, RepoPath, SourceFile, MAX_FILE_BYTES};

const SETTINGS: usize = 10_000;
/// Every `CHANGE_EVERY`-th setting differs between the two versions: 1%.
const CHANGE_EVERY: usize = 100;
#[rustfmt::skip]
const CATEGORIES: [&str; 20] = [
    "passcode", "encryption", "os", "apps", "network", "certs", "tls", "enforcement", "device", "container",
    "integrity", "av", "usb", "cosmetic", "browser", "privacy", "kiosk", "defender", "bluetooth", "location",
];
const PATH: &str = "baselines/windows/fleet-wide.yaml";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Enum,
    Version,
    Text,
    Set,
}

fn kind(i: usize) -> Kind {
    [Kind::Bool, Kind::Int, Kind::Enum, Kind::Version, Kind::Text, Kind::Set][i % 6]
}

fn key(i: usize) -> String {
    format!("{}.setting_{i:05}", CATEGORIES[i % CATEGORIES.len()])
}

fn catalogue_yaml() -> String {
    let mut s = String::with_capacity(SETTINGS * 320);
    for i in 0..SETTINGS {
        let (value_type, direction) = match kind(i) {
            Kind::Bool => ("bool", "\"true\""),
            Kind::Int => ("{int: {min: 0, max: 100000}}", "higher"),
            Kind::Enum => ("{enum: [off, low, medium, high]}", "higher"),
            Kind::Version => ("version", "higher"),
            Kind::Text => ("{string: {max_len: 200}}", "none"),
            Kind::Set => ("{set: {item: string}}", "superset"),
        };
        let _ = write!(
            s,
            "- key: {key}\n  category: {category}\n  description: Synthetic setting {i} of the diff benchmark.\n  \
             type: {value_type}\n  secure_direction: {direction}\n  default_tier: {tier}\n  side_effects: []\n  \
             rollback_effective: true\n  platforms: [ios, ipados, macos, android, windows]\n  native: {{}}\n",
            key = key(i),
            category = CATEGORIES[i % CATEGORIES.len()],
            tier = i % 4,
        );
    }
    s
}

/// The baseline at `version` 0 or 1; version 1 changes every
/// [`CHANGE_EVERY`]-th setting in a way its type allows.
fn baseline_yaml(version: usize) -> String {
    let mut s = String::from(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: fleet-wide\n  owners: [mdm-security]\n\
         spec:\n  platform: windows\n  priority: 100\n  targets:\n    groups: [all-corporate-pcs]\n  settings:\n",
    );
    for i in 0..SETTINGS {
        let changed = version == 1 && i % CHANGE_EVERY == CHANGE_EVERY / 3;
        let value = match (kind(i), changed) {
            (Kind::Bool, c) => (!c).to_string(),
            (Kind::Int, c) => (i % 1000 + usize::from(c)).to_string(),
            (Kind::Enum, false) => "low".to_string(),
            (Kind::Enum, true) => "high".to_string(),
            (Kind::Version, c) => format!("\"14.{}\"", i % 10 + usize::from(c)),
            (Kind::Text, false) => format!("\"Setting {i}: managed by Acme IT\""),
            (Kind::Text, true) => format!("\"Setting {i}: managed by Acme IT, see go/mdm\""),
            (Kind::Set, false) => format!("[app.s{i}.one, app.s{i}.two, app.s{i}.three]"),
            (Kind::Set, true) => format!("[app.s{i}.one, app.s{i}.two, app.s{i}.three, app.s{i}.four]"),
        };
        let _ = writeln!(s, "    {}: {value}", key(i));
    }
    s
}

fn source(text: &str) -> SourceFile {
    SourceFile {
        path: RepoPath::new(PATH).expect("a valid repo path"),
        content: FileContent::Blob(text.as_bytes().to_vec()),
    }
}

fn parse(file: &SourceFile, catalog: &'static Catalog) -> Snapshot {
    let (snap, errors) = Snapshot::build(std::slice::from_ref(file), catalog);
    assert!(errors.is_empty(), "generated baseline is invalid: {errors:?}");
    snap
}

fn diff_large_baseline(c: &mut Criterion) {
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_yaml(&catalogue_yaml()).expect("synthetic catalogue is valid"),
    ));
    assert_eq!(catalog.len(), SETTINGS);
    let (old_text, new_text) = (baseline_yaml(0), baseline_yaml(1));
    assert!(
        (new_text.len() as u64) < MAX_FILE_BYTES,
        "the baseline must stay under the file size limit"
    );
    let (old_file, new_file) = (source(&old_text), source(&new_text));
    let (old_snap, new_snap) = (parse(&old_file, catalog), parse(&new_file, catalog));

    let changes = diff_snapshots(&old_snap, &new_snap, catalog);
    assert_eq!(changes.len(), 1, "one baseline changed");
    assert_eq!(
        changes[0].settings.len(),
        SETTINGS / CHANGE_EVERY,
        "1% of the settings changed"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (old_path, new_path) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&old_path, &old_text).expect("write a.yaml");
    std::fs::write(&new_path, &new_text).expect("write b.yaml");
    let diff_u = || {
        let mut cmd = Command::new("diff");
        cmd.arg("-u").arg(&old_path).arg(&new_path);
        cmd
    };
    // `diff` exits 1 when the files differ.
    assert!(!support::run_expect(&mut diff_u(), &[1]).stdout.is_empty());

    let mut group = c.benchmark_group("diff_10k_settings");
    group.bench_function("tollgate_parse_and_diff", |b| {
        b.iter(|| {
            let old = parse(black_box(&old_file), catalog);
            let new = parse(black_box(&new_file), catalog);
            diff_snapshots(&old, &new, catalog)
        })
    });
    group.bench_function("tollgate_parse", |b| {
        b.iter(|| {
            (
                parse(black_box(&old_file), catalog),
                parse(black_box(&new_file), catalog),
            )
        })
    });
    group.bench_function("tollgate_diff", |b| {
        b.iter(|| diff_snapshots(black_box(&old_snap), black_box(&new_snap), catalog))
    });
    group.bench_function("tollgate_unified_text", |b| {
        b.iter(|| unified_text(black_box(&old_text), black_box(&new_text), "a.yaml", "b.yaml"))
    });
    group.bench_function("diff_u_process", |b| {
        b.iter(|| support::run_expect(&mut diff_u(), &[1]))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = diff_large_baseline
}
criterion_main!(benches);
