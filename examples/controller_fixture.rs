//! The inputs of the controller's memory measurement
//! (`scripts/bench-controller.sh`, `docs/performance-controller.md`): a
//! governed repo of N generated baselines and a SQLite store that already
//! holds M promotions of history, all written through the store API.
//!
//! ```text
//! cargo run --release --example controller_fixture -- DIR [--baselines 1000] [--promotions 10000]
//! ```
//!
//! Its `latency` subcommand times commit-to-promotion against a running
//! controller over HTTP (see [`latency`]); the script uses both.
//!
//! Writes `DIR/repo` (a git repo on `main`) and `DIR/state.db`; `DIR` must
//! not exist yet or be empty. The history is realistic because the real
//! controller makes it: one change is driven end to end (planned, superseded
//! by a newer commit, approved, promoted ring by ring to `complete`) and the
//! promotions, reviews and audit events it stored are the templates of the
//! history, which is then replayed under new ids and revisions with a fresh,
//! valid audit chain (one promotion in ten superseded, the others complete).
//! After the history, one more real cycle runs, so the newest promotions and
//! every ring's desired state are the controller's own, and a last commit is
//! left unplanned: the controller started on the store has a new revision to
//! plan against 1,000 baselines on its first pass.
//!
//! `benches/controller.rs` includes this file for its repo generator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use tollgate::audit::{Action, AuditChain, ChainHead};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::{Controller, NoDevices, StoredPromotion};
use tollgate::ids::CommitSha;
use tollgate::promotion::{Phase, ReviewState};
use tollgate::store::{self, AuditRow, NewReview, PromotionWrite, Store, Transition};

/// Rings without gates (no fleet reports in a fixture), so a change can
/// complete; approver groups with users, as the local forge wants them.
pub const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}
  - {name: pilot,  selector: {groups: [mdm-pilot]},  soak: 1h}
  - {name: broad,  selector: {all: true}}
approvers:
  mdm-security: {users: [sec1, sec2]}
  mdm-ios:      {users: [ios1, ios2]}
  mdm-android:  {users: [and1, and2]}
  mdm-windows:  {users: [win1, win2]}
  mdm-macos:    {users: [mac1, mac2]}
  oncall:       {users: [dana, eli]}
"#;

const PLATFORMS: [&str; 4] = ["ios", "android", "windows", "macos"];

/// The path of generated baseline `i`: four platforms, twenty team folders.
pub fn baseline_path(i: usize) -> String {
    let platform = PLATFORMS[i % PLATFORMS.len()];
    format!("baselines/{platform}/team-{:02}/fleet-{platform}-{i:04}.yaml", i % 20)
}

/// Generated baseline `i`. Every baseline has its own target group and
/// priority, so no two conflict; `min_length` is the passcode length of the
/// iOS and macOS ones, the knob a change turns.
pub fn baseline(i: usize, min_length: u32) -> String {
    let platform = PLATFORMS[i % PLATFORMS.len()];
    let settings = match platform {
        "ios" => format!(
            "    passcode.required: true\n    passcode.min_length: {min_length}\n    os.min_version: \"17.4\"\n    \
             apps.blocked: [com.example.filesharing, com.example.game-{i}]\n"
        ),
        "android" => "    passcode.required: true\n    passcode.min_length: 6\n    encryption.required: true\n    \
                      os.min_version: \"13\"\n    apps.untrusted_sources: false\n    integrity.block_compromised: true\n"
            .to_string(),
        "windows" => "    encryption.required: true\n    av.realtime_required: true\n    os.min_version: \"10.0.22631\"\n    \
                      certs.trusted_roots:\n      - {name: acme-root-2021, sha256: \
                      \"3f0b5a3c1e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a\"}\n"
            .to_string(),
        _ => format!(
            "    passcode.required: true\n    passcode.min_length: {min_length}\n    encryption.required: true\n    \
             encryption.recovery_key_escrow: true\n    usb.storage_blocked: true\n"
        ),
    };
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata:\n  name: fleet-{platform}-{i:04}\n  \
         owners: [mdm-{platform}]\nspec:\n  platform: {platform}\n  priority: {}\n  targets:\n    \
         groups: [fleet-{i}, mdm-canary, mdm-pilot]\n  settings:\n{settings}",
        i + 1
    )
}

/// A new git repo at `dir` whose one commit holds `tollgate.yaml` and
/// `baselines` generated baselines; returns that commit.
pub fn write_repo(dir: &Path, baselines: usize) -> anyhow::Result<String> {
    let files: Vec<(String, String)> = std::iter::once(("tollgate.yaml".to_string(), CONFIG.to_string()))
        .chain((0..baselines).map(|i| (baseline_path(i), baseline(i, 8))))
        .collect();
    let refs: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))).collect();
    let history = [SampleCommit {
        author: "priya",
        message: "fleet baselines",
        files: &refs,
    }];
    let ids = write_sample_repo(dir, &history)?;
    Ok(ids[0].clone())
}

/// Commits change number `n` to the repo at `dir`: baseline 0 (iOS) gets a
/// passcode length that differs from the one before it and from the
/// initial 8. Returns the new commit.
pub fn commit_change(dir: &Path, author: &str, n: u32) -> anyhow::Result<String> {
    let min_length = 9 + n % 7;
    let path = baseline_path(0);
    let repo = git2::Repository::open(dir)?;
    std::fs::write(dir.join(&path), baseline(0, min_length))?;
    let mut index = repo.index()?;
    index.add_path(Path::new(&path))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now(author, &format!("{author}@acme.example"))?;
    let parent = repo.head()?.peel_to_commit()?;
    let oid = repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        &format!("fleet-ios-0000: passcode length {min_length} (change {n})"),
        &tree,
        &[&parent],
    )?;
    Ok(oid.to_string())
}

/// Sets `os.min_version` of `file` (a baseline of the repo at `repo`) to a
/// value no earlier change had, `"18.{n}"`, and commits it as `sam`.
pub fn edit_and_commit(repo: &Path, file: &str, n: u32) -> anyhow::Result<String> {
    let path = repo.join(file);
    let text = std::fs::read_to_string(&path)?;
    let edited: String = text
        .lines()
        .map(|l| match l.split_once("os.min_version:") {
            Some((indent, _)) => format!("{indent}os.min_version: \"18.{n}\"\n"),
            None => format!("{l}\n"),
        })
        .collect();
    if edited == text {
        bail!("{file} has no os.min_version to change");
    }
    std::fs::write(&path, edited)?;
    let r = git2::Repository::open(repo)?;
    let mut index = r.index()?;
    index.add_path(Path::new(file))?;
    index.write()?;
    let tree = r.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("sam", "sam@acme.example")?;
    let parent = r.head()?.peel_to_commit()?;
    Ok(
        r.commit(Some("HEAD"), &sig, &sig, &format!("change {n}"), &tree, &[&parent])?
            .to_string(),
    )
}

/// A controller over `store` that follows the repo at `repo`.
pub fn controller(store: Arc<dyn Store>, repo: &Path, mirror: PathBuf) -> Controller {
    Controller::new(
        store,
        format!("file://{}", repo.display()),
        "main".into(),
        mirror,
        Arc::new(NoDevices),
    )
}

/// What one real change left in the store: the superseded promotion and the
/// completed one, each with its reviews and the audit events about it.
struct Templates {
    superseded: Template,
    complete: Template,
}

struct Template {
    body: StoredPromotion,
    reviews: Vec<NewReview>,
    /// actor, action, subject, details; subjects naming the promotion say
    /// `{id}` where its id goes.
    events: Vec<(String, String, String, Value)>,
}

/// One real change, end to end: change `n` is planned, change `n + 1`
/// supersedes it and is approved and driven through every ring. Returns the
/// ids of the two promotions and the time after the last step.
async fn real_cycle(
    c: &Controller,
    repo: &Path,
    n: u32,
    mut now: DateTime<Utc>,
) -> anyhow::Result<(i64, i64, DateTime<Utc>)> {
    commit_change(repo, "sam", n)?;
    let first = c.poll(now).await?.context("the first change is planned")?;
    now += Duration::minutes(10);
    commit_change(repo, "sam", n + 1)?;
    let second = c.poll(now).await?.context("the second change is planned")?;
    now += Duration::minutes(10);
    for reviewer in ["ios1", "sec1"] {
        c.review(second, reviewer, ReviewState::Approved, now).await?;
        now += Duration::minutes(1);
    }
    for _ in 0..10 {
        let phase = c.load(second).await?.1.promotion.phase;
        if phase == Phase::Complete {
            return Ok((first, second, now));
        }
        now += Duration::minutes(61);
        c.reconcile(now).await?;
    }
    let phase = c.load(second).await?.1.promotion.phase;
    bail!("the fixture's change did not complete: it is {phase:?}")
}

/// The templates of the history, taken from a real cycle on a scratch store.
async fn templates(repo: &Path, scratch: &Path, base: &str, now: DateTime<Utc>) -> anyhow::Result<Templates> {
    let store = store::open("sqlite::memory:").await?;
    let c = controller(store.clone(), repo, scratch.join("mirror"));
    c.adopt(base, "operator", now).await?;
    let after = store.audit_head().await?.map_or(0, |h| h.seq);
    let (first, second, _) = real_cycle(&c, repo, 1, now + Duration::minutes(1)).await?;
    let rows = store.audit_after(after, 10_000).await?;
    let about = |id: i64| {
        let subject = format!("promotion/{id}");
        move |r: &&AuditRow| r.subject == subject
    };
    let events_of = |id: i64, rows: Vec<&AuditRow>| -> Vec<(String, String, String, Value)> {
        let subject = format!("promotion/{id}");
        rows.into_iter()
            .map(|r| {
                let s = if r.subject == subject {
                    "promotion/{id}".to_string()
                } else {
                    r.subject.clone()
                };
                (r.actor.clone(), r.action.clone(), s, r.details.clone())
            })
            .collect()
    };
    let first_rows: Vec<&AuditRow> = rows.iter().filter(about(first)).collect();
    let second_rows: Vec<&AuditRow> = rows.iter().filter(|r| !about(first)(r)).collect();
    let mut out = Vec::new();
    for (id, rows) in [(first, first_rows), (second, second_rows)] {
        let rec = store.promotion(id).await?.context("the cycle's promotion is stored")?;
        let reviews = store
            .reviews(id)
            .await?
            .into_iter()
            .map(|r| NewReview {
                promotion_id: 0,
                reviewer: r.reviewer,
                state: r.state,
                at: r.at,
                body: r.body,
            })
            .collect();
        out.push(Template {
            body: serde_json::from_value(rec.body)?,
            reviews,
            events: events_of(id, rows),
        });
    }
    let complete = out.pop().expect("two templates");
    let superseded = out.pop().expect("two templates");
    if !matches!(superseded.body.promotion.phase, Phase::Superseded { .. }) {
        bail!(
            "the first promotion of the cycle is {:?}, not superseded",
            superseded.body.promotion.phase
        );
    }
    Ok(Templates { superseded, complete })
}

/// A revision id that is not in the repo: the history is about commits
/// long gone from the branch's recent past.
fn fake_revision(n: usize) -> CommitSha {
    CommitSha::new(hex::encode(&Sha256::digest(format!("history-{n}").as_bytes())[..20]))
}

/// Appends `count` promotions of history, 50 per transition, one hour
/// apart from `start`. Returns the time after the last one.
async fn fill_history(
    store: &Arc<dyn Store>,
    t: &Templates,
    count: usize,
    start: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let head = store.audit_head().await?;
    let mut chain = AuditChain::from_head(match head {
        Some(h) => ChainHead {
            seq: h.seq as u64,
            hash: h.hash,
        },
        None => ChainHead::genesis(),
    });
    let mut now = start;
    let mut done = 0;
    while done < count {
        let mut tx = Transition::default();
        for k in done..(done + 50).min(count) {
            let template = if k % 10 == 9 { &t.superseded } else { &t.complete };
            let id = store.reserve_promotion_id().await?;
            let mut body = StoredPromotion {
                promotion: template.body.promotion.clone(),
                members: template.body.members.clone(),
            };
            let p = &mut body.promotion;
            p.id = id;
            p.revision = fake_revision(k + 1);
            p.base = fake_revision(k);
            p.created_at = now;
            if let Phase::Superseded { by } = &mut p.phase {
                *by = fake_revision(k + 2);
            }
            tx.promotions.push(PromotionWrite::Insert {
                id: Some(id),
                source: tollgate::store::DEFAULT_SOURCE.into(),
                revision: p.revision.to_string(),
                kind: "change".into(),
                phase: p.phase.name().into(),
                body: serde_json::to_value(&body)?,
            });
            for r in &template.reviews {
                tx.reviews.push(NewReview {
                    promotion_id: id,
                    at: now,
                    ..r.clone()
                });
            }
            for (i, (actor, action, subject, details)) in template.events.iter().enumerate() {
                let at = (now + Duration::seconds(i as i64)).trunc_subsecs(3);
                let e = chain.append(
                    at,
                    actor.clone(),
                    Action::parse(action),
                    subject.replace("{id}", &id.to_string()),
                    details.clone(),
                );
                tx.audit.push(AuditRow {
                    seq: e.seq as i64,
                    at: e.at,
                    actor: e.actor,
                    action: e.action.as_str().to_string(),
                    subject: e.subject,
                    details: e.details,
                    prev: e.prev,
                    hash: e.hash,
                });
            }
            now += Duration::hours(1);
        }
        done = (done + 50).min(count);
        store.commit(tx).await?;
    }
    Ok(now)
}

fn usage() -> ! {
    eprintln!(
        "usage: controller_fixture DIR [--baselines N] [--promotions M]\n       \
         controller_fixture latency --server URL --repo DIR --file PATH [--runs N] [--from K] \
         [--trigger] [--label TEXT]   (token in TOLLGATE_TOKEN)"
    );
    std::process::exit(2)
}

/// `latency`: commit-to-promotion time of a running controller, seen from
/// outside. Each run commits a change to `--file` in `--repo` (the repo the
/// controller follows), then, with `--trigger`, POSTs `/v1/trigger`, and
/// asks `GET /v1/promotions?limit=1` in a tight loop until the newest
/// promotion is for that commit. Without `--trigger` the next interval
/// finds it (the poll path); runs then start at varying points of the
/// interval. One line of results on stdout.
fn latency(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let (mut server, mut repo, mut file, mut label) = (None, None, None, String::from("latency"));
    let (mut runs, mut from, mut trigger) = (20u32, 1u32, false);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--server" => server = Some(value()),
            "--repo" => repo = Some(PathBuf::from(value())),
            "--file" => file = Some(value()),
            "--label" => label = value(),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage()),
            "--from" => from = value().parse().unwrap_or_else(|_| usage()),
            "--trigger" => trigger = true,
            _ => usage(),
        }
    }
    let (Some(server), Some(repo), Some(file)) = (server, repo, file) else {
        usage()
    };
    let token = std::env::var("TOLLGATE_TOKEN").context("TOLLGATE_TOKEN holds an operator token")?;
    let agent = ureq::Agent::new_with_defaults();
    let auth = format!("Bearer {token}");
    let newest = || -> anyhow::Result<Option<String>> {
        let mut response = agent
            .get(format!("{server}/v1/promotions?limit=1"))
            .header("Authorization", &auth)
            .call()?;
        let page: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        Ok(page["promotions"][0]["revision"].as_str().map(str::to_string))
    };
    let mut samples = Vec::new();
    let (mut checks, mut checking) = (0u32, std::time::Duration::ZERO);
    // xorshift64, seeded from the clock: uniform enough for a jitter.
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    for n in from..from + runs {
        if !trigger {
            // The previous run ended as a pass ended, and the next pass comes
            // one interval later: a uniform wait of up to a second makes the
            // commit land uniformly within a 1s interval.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            std::thread::sleep(std::time::Duration::from_micros(state % 1_000_000));
        }
        let sha = edit_and_commit(&repo, &file, n)?;
        let started = Instant::now();
        if trigger {
            agent
                .post(format!("{server}/v1/trigger"))
                .header("Authorization", &auth)
                .send_empty()?;
        }
        loop {
            let check = Instant::now();
            let seen = newest()?;
            checking += check.elapsed();
            checks += 1;
            if seen.as_deref() == Some(sha.as_str()) {
                break;
            }
            if started.elapsed() > std::time::Duration::from_secs(120) {
                bail!("no promotion for {sha} after two minutes");
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{label:<46} n={}  min {:.0}  median {:.0}  mean {:.0}  p90 {:.0}  max {:.0} ms  (one check {:.2} ms)",
        samples.len(),
        samples[0],
        at(0.5),
        samples.iter().sum::<f64>() / samples.len() as f64,
        at(0.9),
        samples[samples.len() - 1],
        checking.as_secs_f64() * 1000.0 / f64::from(checks.max(1)),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("latency") {
        args.next();
        return tokio::task::block_in_place(|| latency(args));
    }
    let mut dir = None;
    let (mut baselines, mut promotions) = (1000usize, 10_000usize);
    while let Some(a) = args.next() {
        let mut number = || -> usize { args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()) };
        match a.as_str() {
            "--baselines" => baselines = number(),
            "--promotions" => promotions = number(),
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => usage(),
        }
    }
    let Some(dir) = dir else { usage() };
    if promotions < 2 || baselines < 1 {
        bail!("--promotions must be at least 2 and --baselines at least 1");
    }
    std::fs::create_dir_all(&dir)?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty", dir.display());
    }
    let started = Instant::now();
    let repo = dir.join("repo");
    let base = write_repo(&repo, baselines)?;
    // Whole seconds, so every stored time is exact; far enough back that
    // the history ends before the controller's clock starts.
    let t0 = (Utc::now() - Duration::hours(promotions as i64 + 48)).trunc_subsecs(0);
    let scratch = tempfile::TempDir::new()?;
    let t = templates(&repo, scratch.path(), &base, t0).await?;

    let db = dir.join("state.db");
    let store = store::open(&format!("sqlite://{}", db.display())).await?;
    let c = controller(store.clone(), &repo, dir.join("fixture-mirror"));
    c.adopt(&base, "operator", t0).await?;
    // The real cycle below stores two promotions.
    let end = fill_history(&store, &t, promotions - 2, t0 + Duration::hours(1)).await?;
    real_cycle(&c, &repo, 3, end).await?;
    let unplanned = commit_change(&repo, "sam", 5)?;
    drop(c);
    std::fs::remove_dir_all(dir.join("fixture-mirror"))?;

    let head = store.audit_head().await?.map_or(0, |h| h.seq);
    let newest = store.promotions(Default::default()).await?.first().map_or(0, |p| p.id);
    let size = std::fs::metadata(&db)?.len() + std::fs::metadata(dir.join("state.db-wal")).map_or(0, |m| m.len());
    println!(
        "controller_fixture: {} baselines in {}, {newest} promotions and {head} audit events in {} ({:.1} MiB), \
         unplanned tip {unplanned}, in {:.1}s",
        baselines,
        repo.display(),
        db.display(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
