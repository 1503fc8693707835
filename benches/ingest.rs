//! Report ingestion (DESIGN 8): `parse_reports` on a 1,000-report batch of
//! 30 settings each, the size of one large `POST /v1/reports` from an MDM
//! connector. The goal is 20,000 reports/s for all of ingestion on two
//! cores, so parsing alone should manage well over 100,000 reports/s.
//!
//! - `ndjson_1000x30`: the batch as NDJSON.
//! - `json_array_1000x30`: the same reports as one JSON array, which adds
//!   the framing scan before each element is decoded.
//!
//! Criterion reports the throughput in reports per second ("elem/s").

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tollgate::catalog::Catalog;
use tollgate::devices::report::{parse_reports, BodyFormat, REPORT_SCHEMA};

const REPORTS: usize = 1_000;
const SETTINGS: usize = 30;

fn report(rng: &mut support::Rng, i: usize, keys: &[String]) -> Value {
    let platform = *rng.pick(&["ios", "ipados", "macos", "android", "windows"]);
    let state = |rng: &mut support::Rng| *rng.pick(&["compliant", "compliant", "compliant", "noncompliant", "pending"]);
    let settings: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(k, key)| {
            let actual = match k % 4 {
                0 => json!(rng.between(0, 3600)),
                1 => json!(rng.chance(80)),
                2 => json!(format!("{}.{}", rng.between(10, 17), rng.between(0, 9))),
                _ => json!([format!("com.example.app{}", rng.below(50)), "com.example.mail"]),
            };
            json!({"key": key, "state": state(rng), "actual": actual})
        })
        .collect();
    json!({
        "schema": REPORT_SCHEMA,
        "device": {"id": format!("serial:C02XK{i:07}"), "platform": platform,
                   "groups": ["all-corporate", format!("site-{}", rng.below(20)), "mdm-pilot"],
                   "user": format!("user{}@corp.example", rng.below(5000)), "ownership": "corporate"},
        "os": {"version": "17.5.1"},
        "enrollment": "enrolled",
        "checked_in_at": "2026-11-22T10:00:00Z",
        "applied": [
            {"baseline": format!("corp-{platform}"), "digest": format!("sha256:{}", rng.sha256_hex()), "status": "applied"},
            {"baseline": "corp-apps", "digest": format!("sha256:{}", rng.sha256_hex()), "status": "pending"}
        ],
        "settings": settings
    })
}

fn parse_batches(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let keys: Vec<String> = catalog.entries().map(|e| e.key.clone()).take(SETTINGS).collect();
    assert_eq!(keys.len(), SETTINGS, "the catalogue has fewer than {SETTINGS} settings");
    let mut rng = support::Rng::new(8);
    let reports: Vec<Value> = (0..REPORTS).map(|i| report(&mut rng, i, &keys)).collect();
    let ndjson: String = reports.iter().map(|r| format!("{r}\n")).collect();
    let array = serde_json::to_vec(&reports).unwrap();
    let now: DateTime<Utc> = "2026-11-22T10:02:00Z".parse().unwrap();
    for (body, format) in [
        (ndjson.as_bytes(), BodyFormat::Ndjson),
        (&array[..], BodyFormat::JsonArray),
    ] {
        let parsed = parse_reports(body, format, now, catalog).unwrap();
        assert_eq!(
            (parsed.reports.len(), parsed.rejected.len()),
            (REPORTS, 0),
            "{:?}",
            parsed.rejected.first()
        );
    }
    eprintln!("ingest: {REPORTS} reports, {} bytes as NDJSON", ndjson.len());

    let mut group = c.benchmark_group("parse_reports");
    group.throughput(Throughput::Elements(REPORTS as u64));
    group.bench_function("ndjson_1000x30", |b| {
        b.iter(|| parse_reports(black_box(ndjson.as_bytes()), BodyFormat::Ndjson, now, catalog).unwrap())
    });
    group.bench_function("json_array_1000x30", |b| {
        b.iter(|| parse_reports(black_box(&array), BodyFormat::JsonArray, now, catalog).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = parse_batches
}
criterion_main!(benches);
