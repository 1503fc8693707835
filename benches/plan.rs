//! `tollgate plan` against `git diff --name-status` on the same two
//! revisions of generated governed repos (500 and 5,000 baselines, 10,000
//! commits each; see `support/repo.rs`), measured in the same run.
//!
//! - `plan_one_file` and `plan_50_files`: both sides as processes, started
//!   and read the same way, plus `tollgate` in-process (`plan_cmd` into a
//!   buffer) so the cost of starting a process shows separately. `git diff`
//!   with the patch is a second peer: like `tollgate`, it reads the blobs.
//! - `tollgate_validate_process`: `validate --rev HEAD`, which reads and
//!   validates the whole head as a plan must.
//! - `plan_phases`: where an in-process plan of the one-file change spends
//!   its time, phase by phase, and the cost of starting each binary at all.
//!
//! ```text
//! cargo bench --bench plan                 # or scripts/bench.sh for the ratio table
//! ```
//!
//! Generated repos are cached under `$TOLLGATE_CACHE/bench-repos/`
//! (default `~/.cache/tollgate`); the first run spends a little while making them.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use tollgate::catalog::Catalog;
use tollgate::cli::{plan_cmd, Format, PlanArgs};
use tollgate::diff::diff_snapshots;
use tollgate::plan::{plan, policy_engine, PlanContext};
use tollgate::render::Style;
use tollgate::risk::PolicyEngine;
use tollgate::snapshot::ParsedFiles;
use tollgate::source::{read_checked, read_pair, read_valid, read_valid_from, GitRepo};
use tollgate::tree::RepoPath;

use support::repo::{self, RepoSpec, SINGLE_FILE_TAIL};

/// Repo sizes, in baselines; every repo has the same number of commits.
const SIZES: [usize; 2] = [500, 5_000];
const COMMITS: usize = 10_000;

struct Fixture {
    baselines: usize,
    repo: PathBuf,
}

/// The generated repos, made (or found in the cache) once per bench run.
fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        SIZES
            .iter()
            .map(|&baselines| Fixture {
                baselines,
                repo: repo::ensure(
                    RepoSpec {
                        baselines,
                        commits: COMMITS,
                    },
                    &support::tollgate_bin(),
                ),
            })
            .collect()
    })
}

fn tollgate_plan(repo: &Path, base: &str) -> Command {
    let mut cmd = Command::new(support::tollgate_bin());
    cmd.args(["plan", "-o", "json", "--base", base, "--head", "HEAD", "--repo"])
        .arg(repo);
    cmd
}

/// `validate --rev HEAD`: reading and validating the whole head, which a plan
/// now does too.
fn tollgate_validate(repo: &Path) -> Command {
    let mut cmd = Command::new(support::tollgate_bin());
    cmd.args(["validate", "-o", "json", "--rev", "HEAD", "--repo"])
        .arg(repo);
    cmd
}

fn git_diff(repo: &Path, base: &str) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args(["diff", "--name-status", base, "HEAD"]);
    cmd
}

/// `git diff` with the patch: unlike `--name-status` it reads the changed
/// blobs, as `tollgate plan` must.
fn git_diff_patch(repo: &Path, base: &str) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args(["diff", "--no-color", base, "HEAD"]);
    cmd
}

fn plan_in_process(repo: &Path, base: &str) -> Vec<u8> {
    let args = PlanArgs {
        repo: repo.to_path_buf(),
        base: Some(base.to_string()),
        head: "HEAD".to_string(),
        fleet: None,
        now: chrono::Utc::now(),
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let exit = plan_cmd(&args, &mut out, Format::Json, Style { color: false }).expect("plan succeeds");
    assert_eq!(
        exit.code(),
        0,
        "plan found violations:\n{}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// Both sides must describe the same change, or the comparison is void.
fn assert_same_change(repo: &Path, base: &str, files: usize) {
    let plan = support::run_expect(&mut tollgate_plan(repo, base), &[0]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan -o json prints JSON");
    let changes = plan["changes"].as_array().expect("a plan lists changes");
    assert_eq!(
        changes.len(),
        files,
        "changes planned for {base}..HEAD in {}",
        repo.display()
    );
    let diff = support::run_expect(&mut git_diff(repo, base), &[0]);
    assert_eq!(
        diff.stdout.iter().filter(|&&b| b == b'\n').count(),
        files,
        "paths git lists for {base}..HEAD"
    );
}

fn compare(c: &mut Criterion, group_name: &str, base: &str, files: usize) {
    let mut group = c.benchmark_group(group_name);
    for f in fixtures() {
        assert_same_change(&f.repo, base, files);
        group.bench_with_input(BenchmarkId::new("tollgate_process", f.baselines), &f.repo, |b, repo| {
            b.iter(|| support::run_expect(&mut tollgate_plan(repo, base), &[0]))
        });
        group.bench_with_input(
            BenchmarkId::new("tollgate_validate_process", f.baselines),
            &f.repo,
            |b, repo| b.iter(|| support::run_expect(&mut tollgate_validate(repo), &[0])),
        );
        group.bench_with_input(BenchmarkId::new("git_diff_process", f.baselines), &f.repo, |b, repo| {
            b.iter(|| support::run_expect(&mut git_diff(repo, base), &[0]))
        });
        group.bench_with_input(
            BenchmarkId::new("git_diff_patch_process", f.baselines),
            &f.repo,
            |b, repo| b.iter(|| support::run_expect(&mut git_diff_patch(repo, base), &[0])),
        );
        group.bench_with_input(
            BenchmarkId::new("tollgate_in_process", f.baselines),
            &f.repo,
            |b, repo| b.iter(|| plan_in_process(repo, base)),
        );
    }
    group.finish();
}

fn plan_one_file(c: &mut Criterion) {
    compare(c, "plan_one_file", "HEAD~1", 1);
}

fn plan_50_files(c: &mut Criterion) {
    compare(
        c,
        "plan_50_files",
        &format!("HEAD~{SINGLE_FILE_TAIL}"),
        SINGLE_FILE_TAIL,
    );
}

/// The steps of `compute_plan` (src/cli/plan.rs), timed one by one on the
/// one-file change of the largest repo.
fn plan_phases(c: &mut Criterion) {
    let repo = &fixtures().last().expect("at least one fixture").repo;
    let catalog = Catalog::builtin();
    let git = GitRepo::open(repo).expect("open");
    let base = git.resolve("HEAD~1").expect("resolve base");
    let head = git.resolve("HEAD").expect("resolve head");
    let head_files = git.read_governed(&head).expect("read head");
    let head_parsed = ParsedFiles::parse(&head_files, catalog);
    let pair = read_pair(&git, &base, &head).expect("a valid head");
    let engine = PolicyEngine::builtin().expect("builtin policy");

    let mut group = c.benchmark_group("plan_phases");
    group.bench_function("startup_tollgate_version", |b| {
        b.iter(|| support::run_expect(Command::new(support::tollgate_bin()).arg("--version"), &[0]))
    });
    group.bench_function("startup_git_version", |b| {
        b.iter(|| support::run_expect(Command::new("git").arg("--version"), &[0]))
    });
    group.bench_function("catalog_parse", |b| {
        b.iter(|| Catalog::from_yaml(black_box(include_str!("../policies/catalog.yaml"))).unwrap())
    });
    group.bench_function("open_repo", |b| b.iter(|| GitRepo::open(black_box(repo)).unwrap()));
    group.bench_function("read_head_whole", |b| b.iter(|| git.read_governed(&head).unwrap()));
    group.bench_function("read_and_validate_head", |b| {
        b.iter(|| read_checked(&git, &head).unwrap())
    });
    group.bench_function("parse_head_whole", |b| {
        b.iter(|| ParsedFiles::parse(black_box(&head_files), catalog))
    });
    group.bench_function("validate_head", |b| b.iter(|| head_parsed.validated().unwrap()));
    group.bench_function("derive_base_from_head", |b| {
        b.iter(|| {
            let changed: Vec<RepoPath> = git
                .changed_paths(&base, &head)
                .unwrap()
                .into_iter()
                .map(|c| c.path)
                .collect();
            let files = git.read_paths(&base, &changed).unwrap();
            head_parsed.with_changes(&changed, &files, catalog).checked()
        })
    });
    // What a long-running reader pays instead of the three phases above
    // when it still holds the valid base (source::read_valid_from).
    let valid_base = read_valid(&git, &base).expect("a valid base");
    group.bench_function("validate_head_from_valid_base", |b| {
        b.iter(|| read_valid_from(&git, &valid_base, &head).unwrap())
    });
    group.bench_function("compile_policy", |b| b.iter(|| policy_engine(&pair.base).unwrap()));
    group.bench_function("diff_effective_and_evaluate_policy", |b| {
        b.iter_batched(
            || engine.clone(),
            |mut engine| {
                let changes = diff_snapshots(&pair.base, &pair.head, catalog);
                let author = git.log(&head, 1).unwrap().remove(0).author;
                let ctx = PlanContext {
                    catalog,
                    base: &pair.base,
                    head: &pair.head,
                    author: &author,
                    fleet: None,
                    now: chrono::Utc::now(),
                };
                plan(base.clone(), head.clone(), changes, &mut engine, &ctx)
            },
            BatchSize::SmallInput,
        )
    });
    let planned = {
        let changes = diff_snapshots(&pair.base, &pair.head, catalog);
        let ctx = PlanContext {
            catalog,
            base: &pair.base,
            head: &pair.head,
            author: "bench",
            fleet: None,
            now: chrono::Utc::now(),
        };
        plan(base.clone(), head.clone(), changes, &mut engine.clone(), &ctx)
    };
    group.bench_function("render_json", |b| {
        b.iter(|| serde_json::to_vec_pretty(black_box(&planned)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = plan_one_file, plan_50_files, plan_phases
}
criterion_main!(benches);
