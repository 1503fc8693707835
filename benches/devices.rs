//! Devices (DESIGN 8, docs/performance-devices.md): the fleet index and
//! ingestion in-process. The HTTP load run and the memory of a process are
//! `scripts/bench-devices.sh` (with `examples/ingest_load`).
//!
//! - `fleet_recompute`: `Fleet::recompute` over 1,000,000 devices whose
//!   reports carry 30 settings each (goal: under 2 s). `steady`: nothing
//!   changed since the last pass (what every controller pass costs);
//!   `new_digest`: every ring's baselines were just republished with a new
//!   digest past its grace period, so nearly every device opens (or closes)
//!   a `version_drift` finding and is returned as a change.
//! - `fleet_ingest`: `Fleet::ingest` of a batch of 1,000 newer reports into
//!   that index: the index's share of ingesting one report.
//! - `devices_ingest`: `Devices::ingest` of a batch of 1,000 reports into an
//!   index of 100,000 devices over a SQLite file store (WAL,
//!   `synchronous=FULL`), as `POST /v1/reports` calls it after parsing:
//!   index, findings and their audit events, the reports' texts as they
//!   came, one transaction. `parse_and_ingest` adds `parse_reports` of the
//!   NDJSON body.
//! - `ingest_parts`: pieces of that on the same batch, to see where the time
//!   goes: serialising the reports (which storing their texts as received
//!   avoids), and committing 1,000 `device/` rows alone, as Values and as
//!   JSON text.
//!
//! Criterion reports reports per second as "elem/s".

#[path = "support/mod.rs"]
mod support;

#[path = "../examples/ingest_load/fixture.rs"]
mod fixture;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate::catalog::Catalog;
use tollgate::controller::Controller;
use tollgate::devices::fleet::{Fleet, FleetOptions};
use tollgate::devices::report::{parse_reports, BodyFormat, DeviceReport};
use tollgate::devices::resolve::DesiredCache;
use tollgate::devices::service::{Devices, Received, SharedFleet};
use tollgate::store::{self, JsonText, Store, Transition};

const FLEET: u64 = 1_000_000;
const STORED_FLEET: u64 = 100_000;
const BATCH: u64 = 1_000;

fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn warn_backtrace() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        eprintln!("devices: RUST_BACKTRACE is set; run with `env -u RUST_BACKTRACE` as in production");
    }
}

/// An index of `n` devices at `t0`, desired version 2 published two hours
/// before (grace over).
fn big_fleet(n: u64, keys: &[String]) -> Fleet {
    let mut fleet = Fleet::new(FleetOptions::default());
    fleet.set_rings(&fixture::rings());
    for ring in fixture::desired(keys, 2, t0() - Span::hours(2)) {
        fleet.set_desired(ring);
    }
    for i in 0..n {
        fleet.ingest(&fixture::report(i, keys, 2, t0()), t0());
    }
    fleet
}

/// Whether criterion's name filter (its first free argument) can match one
/// of `groups`: the setups of groups it cannot match are skipped.
fn selected(groups: &[&str]) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    filter.is_none_or(|f| groups.iter().any(|g| g.contains(&f) || f.contains(g)))
}

fn fleet(c: &mut Criterion) {
    warn_backtrace();
    if !selected(&["fleet_recompute", "fleet_ingest"]) {
        return;
    }
    let keys = fixture::bench_keys();
    let started = Instant::now();
    let mut fleet = big_fleet(FLEET, &keys);
    eprintln!(
        "devices: {} devices x {} settings indexed in {:.1} s; Fleet::memory_bytes {} MB",
        fleet.len(),
        keys.len(),
        started.elapsed().as_secs_f64(),
        fleet.memory_bytes() / 1_000_000
    );
    let now = t0() + Span::minutes(1);
    assert!(fleet.recompute(now).is_empty(), "a second evaluation changes nothing");

    let mut group = c.benchmark_group("fleet_recompute");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(FLEET));
    group.bench_function("steady_1M_x30", |b| b.iter(|| black_box(fleet.recompute(now)).len()));
    // Alternate the published version so that every pass changes findings.
    let mut version = 2;
    let flips: Vec<_> = (2..=3)
        .map(|v| fixture::desired(&keys, v, t0() - Span::hours(2)))
        .collect();
    group.bench_function("new_digest_1M_x30", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                version = if version == 2 { 3 } else { 2 };
                for ring in &flips[version as usize - 2] {
                    fleet.set_desired(ring.clone());
                }
                let started = Instant::now();
                let changes = fleet.recompute(now);
                total += started.elapsed();
                assert!(changes.len() as u64 > FLEET * 9 / 10, "{} changes", changes.len());
                drop(changes);
            }
            total
        })
    });
    group.finish();
    for ring in &flips[0] {
        fleet.set_desired(ring.clone());
    }
    fleet.recompute(now);

    let mut group = c.benchmark_group("fleet_ingest");
    group.throughput(Throughput::Elements(BATCH));
    let mut k = 0u64;
    group.bench_function("batch_1000_into_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                let at = now + Span::seconds(k as i64);
                let first = (k * BATCH) % FLEET;
                let batch: Vec<DeviceReport> = (first..first + BATCH)
                    .map(|i| fixture::report(i, &keys, 2, at))
                    .collect();
                let started = Instant::now();
                for r in &batch {
                    black_box(fleet.ingest(r, at));
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

struct Stored {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    devices: Arc<Devices>,
    store: Arc<dyn Store>,
    keys: Vec<String>,
    /// Seconds after `t0` of the last batch made, so every batch is newer.
    clock: u64,
}

impl Stored {
    /// The controller over the fixture repo (adopted: every ring runs its
    /// head) and a SQLite file store, with `STORED_FLEET` devices ingested.
    fn new() -> Stored {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = fixture::write_repo(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let keys = fixture::bench_keys();
        let (devices, store) = runtime.block_on(async {
            let url = format!("sqlite://{}", dir.path().join("state.db").display());
            let store = store::open(&url).await.unwrap();
            let shared = SharedFleet::new(FleetOptions::default(), store.clone());
            let mirror = dir.path().join("mirror");
            let controller = Arc::new(Controller::new(
                store.clone(),
                format!("file://{}", repo.display()),
                "main".into(),
                mirror.clone(),
                shared.clone(),
            ));
            assert!(store.try_lead("bench").await.unwrap());
            controller.adopt("HEAD", "bench", Utc::now()).await.unwrap();
            let devices = Devices::new(
                shared,
                controller.ledger().clone(),
                Arc::new(DesiredCache::new(mirror, Catalog::builtin())),
            );
            devices.load().await.unwrap();
            (devices, store)
        });
        let mut stored = Stored {
            _dir: dir,
            runtime,
            devices,
            store,
            keys,
            clock: 0,
        };
        let started = Instant::now();
        for _ in 0..STORED_FLEET / BATCH {
            let (batch, now) = stored.batch();
            stored.ingest(batch, now);
        }
        eprintln!(
            "devices: {} devices stored in {:.1} s",
            stored.devices.fleet().read().len(),
            started.elapsed().as_secs_f64()
        );
        stored
    }

    /// The next 1,000 devices' reports, newer than anything stored.
    fn batch(&mut self) -> (Vec<Received>, DateTime<Utc>) {
        let first = (self.clock * BATCH) % STORED_FLEET;
        self.clock += 1;
        let at = t0() + Span::seconds(self.clock as i64);
        let batch = (first..first + BATCH)
            .map(|i| Received::new(fixture::report(i, &self.keys, 2, at)))
            .collect();
        (batch, at)
    }

    fn ingest(&self, batch: Vec<Received>, now: DateTime<Utc>) {
        let outcome = self.runtime.block_on(self.devices.ingest(batch, now)).unwrap();
        assert_eq!(outcome.accepted as u64, BATCH, "{outcome:?}");
    }
}

fn stored(c: &mut Criterion) {
    if !selected(&["devices_ingest", "ingest_parts"]) {
        return;
    }
    let mut s = Stored::new();
    let mut group = c.benchmark_group("devices_ingest");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("batch_1000_into_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (batch, now) = s.batch();
                let started = Instant::now();
                s.ingest(batch, now);
                total += started.elapsed();
            }
            total
        })
    });
    group.bench_function("parse_and_ingest_1000_into_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (batch, now) = s.batch();
                let body: String = batch.iter().map(|r| format!("{}\n", r.text.as_str())).collect();
                let started = Instant::now();
                let parsed = parse_reports(body.as_bytes(), BodyFormat::Ndjson, now, Catalog::builtin()).unwrap();
                assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected.first());
                s.ingest(Received::from_parsed(parsed), now);
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();

    let (batch, _) = s.batch();
    let batch: Vec<DeviceReport> = batch.into_iter().map(|r| r.report).collect();
    let mut group = c.benchmark_group("ingest_parts");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("serialize_to_text_1000", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let rows: Vec<(String, Option<serde_json::Value>)> = batch
        .iter()
        .map(|r| {
            (
                format!("device/{}", r.device.id),
                Some(serde_json::to_value(r).unwrap()),
            )
        })
        .collect();
    // Commits a fresh copy of `make()` per iteration; only the commit is timed.
    let commits = |b: &mut criterion::Bencher, make: &dyn Fn() -> Transition| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = make();
                let started = Instant::now();
                s.runtime.block_on(s.store.commit(t)).unwrap();
                total += started.elapsed();
            }
            total
        })
    };
    group.bench_function("commit_1000_device_rows", |b| {
        commits(b, &|| Transition {
            kv: rows.clone(),
            ..Default::default()
        })
    });
    let texts: Vec<(String, JsonText)> = batch
        .iter()
        .map(|r| (format!("device/{}", r.device.id), JsonText::to_json(r).unwrap()))
        .collect();
    group.bench_function("commit_1000_device_rows_json", |b| {
        commits(b, &|| Transition {
            kv_json: texts.clone(),
            ..Default::default()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = fleet, stored
}
criterion_main!(benches);
