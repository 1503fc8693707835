//! The controller, in-process (docs/performance-controller.md):
//!
//! - `commit_to_promotion/trigger/{sample,fleet_1000}`: from a new commit of
//!   the governed repo to its promotion stored, i.e. one `Controller::poll`
//!   (fetch into the mirror, plan against the first ring's revision, one
//!   store transition). That is the trigger path (`POST /v1/trigger` runs
//!   exactly this); the poll path adds the wait for the next interval.
//!   `sample` is the quickstart repo (4 baselines and an exception),
//!   `fleet_1000` a generated repo of 1,000 baselines; each starts adopted,
//!   so every commit is planned as the one-setting change it is.
//! - `commit_to_promotion_parts/...`: where that time goes: the fetch
//!   alone, the plan alone, and a poll that finds nothing new (what every
//!   idle interval costs).
//! - `store_transition/{sqlite,postgres}`: store throughput, one transition
//!   = one promotion updated + 2 audit events, committed one after another as
//!   the controller's single writer does. SQLite is a file with the shipped
//!   settings (WAL, synchronous=FULL); PostgreSQL comes from
//!   `TOLLGATE_TEST_POSTGRES_URL` (`bash scripts/postgres.sh`) and is
//!   skipped with a notice when it is unset.
//!
//! - `mirror_growth/...`: the trigger path and the plan once the
//!   controller's mirror has taken 200 and 1,000 fetches, one commit each
//!   (each leaves a pack; `clone_or_fetch` repacks the mirror once it holds
//!   more than `MIRROR_PACK_LIMIT`). Its setup takes 1,000 fetches, about a
//!   minute, and prints what the fetches cost and how many packs are left.
//!
//! ```text
//! env -u RUST_BACKTRACE TOLLGATE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)" cargo bench --bench controller
//! ```
//!
//! The process-level numbers (memory, latency over HTTP) are
//! `scripts/bench-controller.sh`.

#[path = "../examples/controller_fixture.rs"]
#[allow(dead_code)]
mod fixture;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::runtime::Runtime;

use tollgate::audit::{Action, AuditChain, ChainHead};
use tollgate::cli::quickstart::{write_sample_repo, HISTORY};
use tollgate::controller::desired::Desired;
use tollgate::controller::planning::plan_revision;
use tollgate::controller::Controller;
use tollgate::ids::CommitSha;
use tollgate::source::git::clone_or_fetch;
use tollgate::store::{self, AuditRow, PromotionWrite, Store, Transition};

const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// How many fetches a mirror takes in the latency benches before it is
/// cloned afresh (untimed).
const FETCHES_PER_MIRROR: u32 = 20;

/// Clones `url` into `mirror` anew: one pack, as after a restart.
fn fresh_mirror(url: &str, mirror: &Path) {
    if mirror.exists() {
        std::fs::remove_dir_all(mirror).unwrap();
    }
    clone_or_fetch(url, "main", mirror).unwrap();
}

/// Packs in a mirror (each fetch that brought objects wrote one).
fn packs(mirror: &Path) -> usize {
    std::fs::read_dir(mirror.join("objects/pack"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pack"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Bytes of the packs and indexes in a mirror.
fn pack_bytes(mirror: &Path) -> u64 {
    std::fs::read_dir(mirror.join("objects/pack"))
        .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Whether criterion's name filter (`cargo bench --bench controller FILTER`)
/// leaves out every benchmark named in `ids`, so that their setup can be
/// skipped. A substring test: a regex filter may run a setup for nothing.
fn filtered_out(ids: &[&str]) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    filter.is_some_and(|f| !ids.iter().any(|id| id.contains(f.as_str())))
}

fn runtime() -> Runtime {
    // As `tollgate run` builds it.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A governed repo, an adopted SQLite store and a controller following them.
struct Rig {
    dir: TempDir,
    repo: PathBuf,
    /// The baseline each change edits.
    file: String,
    controller: Controller,
    /// The revision the first ring runs, which every change is planned against.
    base: CommitSha,
    /// What every ring runs after the adoption, by ring name.
    rings: BTreeMap<String, Desired>,
    changes: u32,
    /// Fetches into the controller's mirror since it was last cloned afresh.
    fetches: u32,
}

impl Rig {
    fn sample(rt: &Runtime) -> Rig {
        let dir = TempDir::new().unwrap();
        let repo = dir.path().join("repo");
        let ids = write_sample_repo(&repo, HISTORY).unwrap();
        Rig::adopted(rt, dir, repo, ids.last().unwrap(), "baselines/ios/phones/corp-ios.yaml")
    }

    fn fleet(rt: &Runtime, baselines: usize) -> Rig {
        let dir = TempDir::new().unwrap();
        let repo = dir.path().join("repo");
        let base = fixture::write_repo(&repo, baselines).unwrap();
        Rig::adopted(rt, dir, repo, &base, &fixture::baseline_path(0))
    }

    fn adopted(rt: &Runtime, dir: TempDir, repo: PathBuf, base: &str, file: &str) -> Rig {
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = rt.block_on(store::open(&url)).unwrap();
        let controller = fixture::controller(store, &repo, dir.path().join("mirror"));
        let base = rt.block_on(controller.adopt(base, "operator", Utc::now())).unwrap();
        let rings = rt.block_on(controller.ring_states()).unwrap();
        Rig {
            dir,
            repo,
            file: file.to_string(),
            controller,
            base,
            rings,
            changes: 0,
            fetches: 0,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    fn mirror(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }

    /// Keeps the controller's mirror as a restarted controller finds it:
    /// every fetch that brings objects adds a pack to the mirror until a
    /// repack consolidates them, so without this the numbers would drift
    /// with the number of iterations criterion happens to run, and some
    /// iterations would pay for a repack (see `mirror_growth`).
    fn keep_mirror_fresh(&mut self) {
        self.fetches += 1;
        if self.fetches > FETCHES_PER_MIRROR {
            fresh_mirror(&self.url(), &self.mirror());
            self.fetches = 1;
        }
    }

    /// A new commit that changes one setting of the rig's baseline.
    fn commit(&mut self) -> String {
        self.changes += 1;
        fixture::edit_and_commit(&self.repo, &self.file, self.changes).unwrap()
    }
}

fn rigs(rt: &Runtime) -> Vec<(&'static str, Rig)> {
    vec![("sample", Rig::sample(rt)), ("fleet_1000", Rig::fleet(rt, 1000))]
}

/// With backtraces on, every `anyhow` error the Rego parser makes while it
/// backtracks captures one, and a plan costs several times more
/// (docs/performance.md); `tollgate` itself turns library backtraces off.
fn warn_about_backtraces() {
    let on = |var: &str| std::env::var(var).is_ok_and(|v| v != "0");
    let lib = std::env::var("RUST_LIB_BACKTRACE").ok();
    if lib.as_deref().map_or(on("RUST_BACKTRACE"), |v| v != "0") {
        eprintln!(
            "notice: backtraces are on (RUST_BACKTRACE / RUST_LIB_BACKTRACE): plans will be much slower than \
             in `tollgate run`. Run: env -u RUST_BACKTRACE cargo bench --bench controller"
        );
    }
}

fn commit_to_promotion(c: &mut Criterion) {
    warn_about_backtraces();
    if filtered_out(&[
        "commit_to_promotion/trigger/sample",
        "commit_to_promotion/trigger/fleet_1000",
    ]) {
        return;
    }
    let rt = runtime();
    let mut group = c.benchmark_group("commit_to_promotion");
    group.sample_size(20).measurement_time(Duration::from_secs(15));
    for (name, mut rig) in rigs(&rt) {
        group.bench_function(BenchmarkId::new("trigger", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rig.keep_mirror_fresh();
                    rig.commit();
                    let started = Instant::now();
                    let id = rt.block_on(rig.controller.poll(Utc::now())).unwrap();
                    total += started.elapsed();
                    assert!(id.is_some(), "the new commit got a promotion");
                }
                total
            })
        });
    }
    group.finish();
}

fn commit_to_promotion_parts(c: &mut Criterion) {
    if filtered_out(&[
        "commit_to_promotion_parts/fetch/sample",
        "commit_to_promotion_parts/plan/sample",
        "commit_to_promotion_parts/poll_unchanged/sample",
        "commit_to_promotion_parts/fetch/fleet_1000",
        "commit_to_promotion_parts/plan/fleet_1000",
        "commit_to_promotion_parts/poll_unchanged/fleet_1000",
    ]) {
        return;
    }
    let rt = runtime();
    let mut group = c.benchmark_group("commit_to_promotion_parts");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for (name, mut rig) in rigs(&rt) {
        // The fetch alone, into a mirror of its own.
        let mirror = rig.dir.path().join("fetch-mirror");
        let url = rig.url();
        fresh_mirror(&url, &mirror);
        let mut fetches = 0;
        group.bench_function(BenchmarkId::new("fetch", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fetches += 1;
                    if fetches > FETCHES_PER_MIRROR {
                        fresh_mirror(&url, &mirror);
                        fetches = 1;
                    }
                    let sha = rig.commit();
                    let started = Instant::now();
                    let (_, tip) = clone_or_fetch(&url, "main", &mirror).unwrap();
                    total += started.elapsed();
                    assert_eq!(tip.as_str(), sha);
                }
                total
            })
        });
        // The plan alone: the newest commit against the first ring's
        // revision, on a freshly cloned mirror.
        fresh_mirror(&url, &mirror);
        let (_, tip) = clone_or_fetch(&url, "main", &mirror).unwrap();
        group.bench_function(BenchmarkId::new("plan", name), |b| {
            b.iter(|| plan_revision(&mirror, Some(&rig.base), &rig.rings, &tip, None, Utc::now()).unwrap())
        });
        // A pass with nothing new: a fetch that brings nothing and one read.
        fresh_mirror(&url, &rig.mirror());
        rt.block_on(rig.controller.poll(Utc::now())).unwrap();
        group.bench_function(BenchmarkId::new("poll_unchanged", name), |b| {
            b.iter(|| assert_eq!(rt.block_on(rig.controller.poll(Utc::now())).unwrap(), None))
        });
    }
    group.finish();
}

/// The trigger path and its parts after the controller's mirror has taken
/// many fetches. Each fetch that brings a commit leaves a pack behind, and
/// every object lookup searches them all, until `clone_or_fetch` repacks
/// the mirror; the trigger numbers include the repacks that fall in them.
fn mirror_growth(c: &mut Criterion) {
    if filtered_out(&[
        "mirror_growth/plan/fleet_1000/200_fetches",
        "mirror_growth/trigger/fleet_1000/200_fetches",
        "mirror_growth/plan/fleet_1000/1000_fetches",
        "mirror_growth/trigger/fleet_1000/1000_fetches",
    ]) {
        return;
    }
    let rt = runtime();
    let mut group = c.benchmark_group("mirror_growth");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    let mut rig = Rig::fleet(&rt, 1000);
    let (url, mirror) = (rig.url(), rig.mirror());
    for target in [200u32, 1000] {
        // Grow the controller's own mirror by fetching one commit at a time
        // (every commit the rig makes, the polls below included, is fetched).
        let (mut timed, mut fetching, mut slowest) = (0u32, Duration::ZERO, Duration::ZERO);
        while rig.changes < target {
            rig.commit();
            let started = Instant::now();
            clone_or_fetch(&url, "main", &mirror).unwrap();
            let took = started.elapsed();
            timed += 1;
            fetching += took;
            slowest = slowest.max(took);
        }
        let id = format!("{target}_fetches");
        eprintln!(
            "mirror_growth: {} fetches, {} packs ({:.1} MiB) in the mirror; the last {timed} fetches took {:.1} ms \
             on average, the slowest {:.0} ms",
            rig.changes,
            packs(&mirror),
            pack_bytes(&mirror) as f64 / (1024.0 * 1024.0),
            fetching.as_secs_f64() * 1e3 / f64::from(timed.max(1)),
            slowest.as_secs_f64() * 1e3
        );
        // The plan first: it fetches nothing. Each poll below fetches one
        // more commit, so the trigger numbers are from this many fetches on.
        let (_, tip) = clone_or_fetch(&url, "main", &mirror).unwrap();
        group.bench_function(BenchmarkId::new("plan/fleet_1000", &id), |b| {
            b.iter(|| plan_revision(&mirror, Some(&rig.base), &rig.rings, &tip, None, Utc::now()).unwrap())
        });
        group.bench_function(BenchmarkId::new("trigger/fleet_1000", &id), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rig.commit();
                    let started = Instant::now();
                    let polled = rt.block_on(rig.controller.poll(Utc::now())).unwrap();
                    total += started.elapsed();
                    assert!(polled.is_some());
                }
                total
            })
        });
    }
    group.finish();
}

/// A store to measure, and what to do when the measurement is over.
struct BenchStore {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    drop_schema: Option<(String, String)>,
}

async fn sqlite_store() -> BenchStore {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    BenchStore {
        store: store::open(&url).await.unwrap(),
        _dir: Some(dir),
        drop_schema: None,
    }
}

/// A fresh schema on the server `TOLLGATE_TEST_POSTGRES_URL` names.
async fn postgres_store() -> Option<BenchStore> {
    use sqlx::Executor;
    let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!(
            "notice: {POSTGRES_URL_VAR} is not set; skipping store_transition/postgres. \
             Run: {POSTGRES_URL_VAR}=\"$(bash scripts/postgres.sh)\" cargo bench --bench controller"
        );
        return None;
    };
    let schema = format!("bench_controller_{}", std::process::id());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    Some(BenchStore {
        store: store::open(&url).await.unwrap(),
        _dir: None,
        drop_schema: Some((base, schema)),
    })
}

impl BenchStore {
    async fn finish(self) {
        use sqlx::Executor;
        drop(self.store);
        if let Some((base, schema)) = self.drop_schema {
            let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .await
                .unwrap();
        }
    }
}

/// A promotion body as the controller stores it: the quickstart repo's
/// newest revision, planned for real.
fn real_body(rt: &Runtime) -> Value {
    let mut rig = Rig::sample(rt);
    rig.commit();
    let id = rt.block_on(rig.controller.poll(Utc::now())).unwrap().unwrap();
    rt.block_on(rig.controller.store().promotion(id)).unwrap().unwrap().body
}

/// The two audit rows of one ring step, sealed onto `chain`.
fn ring_events(chain: &mut AuditChain, id: i64, n: u64) -> Vec<AuditRow> {
    let now = Utc::now().trunc_subsecs(3);
    let subject = format!("promotion/{id}");
    [
        (
            Action::parse("ring_promoted"),
            json!({"ring": "canary", "step": n, "documents": 1}),
        ),
        (
            Action::parse("gate_passed"),
            json!({"ring": "canary", "step": n, "applied": 0.98, "noncompliant_increase": 0.0}),
        ),
    ]
    .into_iter()
    .map(|(action, details)| {
        let e = chain.append(now, "controller", action, subject.clone(), details);
        AuditRow {
            seq: e.seq as i64,
            at: e.at,
            actor: e.actor,
            action: e.action.as_str().to_string(),
            subject: e.subject,
            details: e.details,
            prev: e.prev,
            hash: e.hash,
        }
    })
    .collect()
}

fn store_transition(c: &mut Criterion) {
    if filtered_out(&["store_transition/sqlite", "store_transition/postgres"]) {
        return;
    }
    let rt = runtime();
    let body = real_body(&rt);
    let mut group = c.benchmark_group("store_transition");
    // One element = one transition (one promotion update + 2 audit events).
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    let backends: Vec<(&str, Option<BenchStore>)> = vec![
        ("sqlite", Some(rt.block_on(sqlite_store()))),
        ("postgres", rt.block_on(postgres_store())),
    ];
    for (name, bench_store) in backends {
        let Some(bench_store) = bench_store else { continue };
        let store = bench_store.store.clone();
        let written = rt
            .block_on(store.commit(Transition {
                promotions: vec![PromotionWrite::insert(
                    "0".repeat(40),
                    "change",
                    "approved",
                    body.clone(),
                )],
                ..Default::default()
            }))
            .unwrap()
            .promotions[0];
        let (id, mut version) = (written.id, written.version);
        let mut chain = AuditChain::from_head(ChainHead::genesis());
        let mut step = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    step += 1;
                    let t = Transition {
                        promotions: vec![PromotionWrite::Update {
                            id,
                            expected_version: version,
                            phase: "soaking".into(),
                            body: body.clone(),
                        }],
                        audit: ring_events(&mut chain, id, step),
                        ..Default::default()
                    };
                    version = rt.block_on(store.commit(t)).unwrap().promotions[0].version;
                }
                started.elapsed()
            })
        });
        drop(store);
        rt.block_on(bench_store.finish());
    }
    group.finish();
}

criterion_group!(
    benches,
    commit_to_promotion,
    commit_to_promotion_parts,
    mirror_growth,
    store_transition
);
criterion_main!(benches);
