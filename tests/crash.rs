//! `kill -9` at arbitrary points while the controller promotes, then
//! restart: every promotion resumes, no ring is published twice for a
//! promotion, the audit chain stays whole, and the final state is the last
//! commit. Uses the real binary, real git and the real SQLite store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use tollgate::audit::{verify, Action, AuditEvent};
use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::config::token_hash;
use tollgate::controller::desired::Desired;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1s}
  - {name: pilot, selector: {groups: [mdm-pilot]}, soak: 1s}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-ios: {users: [ios1]}
"#;

fn ios(message: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {{name: corp-ios, owners: [mdm-ios]}}\nspec:\n  platform: ios\n  targets: {{groups: [phones]}}\n  settings:\n    passcode.min_length: 8\n    cosmetic.lock_screen_message: \"{message}\"\n"
    )
}

fn commit(repo: &Path, text: &str) -> String {
    let r = git2::Repository::open(repo).unwrap();
    std::fs::write(repo.join("baselines/ios/corp-ios.yaml"), text).unwrap();
    let mut index = r.index().unwrap();
    index.add_path(Path::new("baselines/ios/corp-ios.yaml")).unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("ana", "ana@example.com").unwrap();
    let parent = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &sig, &sig, "cosmetic", &tree, &[&parent])
        .unwrap()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Rig {
    dir: TempDir,
    repo: PathBuf,
    config: PathBuf,
    base: String,
}

impl Rig {
    fn new() -> Rig {
        let dir = TempDir::new().unwrap();
        let repo = dir.path().join("repo");
        let first = ios("Property of Acme");
        write_sample_repo(
            &repo,
            &[SampleCommit {
                author: "priya",
                message: "initial",
                files: &[
                    ("tollgate.yaml", Some(CONFIG)),
                    ("baselines/ios/corp-ios.yaml", Some(&first)),
                ],
            }],
        )
        .unwrap();
        let port = free_port();
        let config = dir.path().join("controller.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: tollgate.dev/v1alpha1\nkind: ControllerConfig\nsource: {{url: \"file://{}\", branch: main, interval: 1s}}\nstore: \"sqlite://{}\"\nlisten: \"127.0.0.1:{port}\"\ntokens:\n  - {{name: op, role: operator, sha256: \"{}\"}}\n",
                repo.display(),
                dir.path().join("state.db").display(),
                token_hash("op-token"),
            ),
        )
        .unwrap();
        Rig {
            base: format!("http://127.0.0.1:{port}"),
            dir,
            repo,
            config,
        }
    }

    fn start(&self, extra: &[&str]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--config", self.config.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = err.read_to_end(&mut sink);
        });
        child
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut resp = ureq::get(&format!("{}{path}", self.base))
            .header("Authorization", "Bearer op-token")
            .call()
            .ok()?;
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    }

    fn trigger(&self) {
        let _ = ureq::post(&format!("{}/v1/trigger", self.base))
            .header("Authorization", "Bearer op-token")
            .send_empty();
    }
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

#[test]
fn kill_dash_nine_anywhere_resumes_exactly_once() {
    let rig = Rig::new();
    // Adopt the initial revision so the cosmetic (T0) changes flow without
    // approvals and every ring is a transition to interrupt.
    let mut child = rig.start(&["--adopt", "HEAD"]);
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut last = String::new();
    for round in 0..12 {
        std::thread::sleep(Duration::from_millis(300 + next(1500)));
        last = commit(&rig.repo, &ios(&format!("Property of Acme, round {round}")));
        rig.trigger();
        std::thread::sleep(Duration::from_millis(next(400)));
        kill9(&mut child);
        child = rig.start(&[]);
    }
    // Let the last process settle: the tip is planned and nothing is live.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        rig.trigger();
        let status = rig.get("/v1/status");
        let live = rig.get("/v1/promotions?phase=pending_approval,approved,waiting_window,promoting,soaking");
        let tip_done = status.as_ref().is_some_and(|s| s.to_string().contains(&last));
        let idle = live
            .as_ref()
            .is_some_and(|l| l["promotions"].as_array().is_some_and(|a| a.is_empty()));
        if tip_done && idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "controller did not settle: {status:?} {live:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kill9(&mut child);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = tollgate::store::open(&format!("sqlite://{}", rig.dir.path().join("state.db").display()))
            .await
            .unwrap();
        let rows = store.audit_after(0, 100_000).await.unwrap();
        let events: Vec<AuditEvent> = rows
            .into_iter()
            .map(|r| AuditEvent {
                seq: r.seq as u64,
                at: r.at,
                actor: r.actor,
                action: Action::parse(&r.action),
                subject: r.subject,
                details: r.details,
                prev: r.prev,
                hash: r.hash,
            })
            .collect();
        verify(events.clone()).expect("the audit chain survives every kill");
        // Each (promotion, ring) is published at most once.
        let mut published: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e.action.as_str() == "ring_promoted") {
            *published
                .entry((e.subject.clone(), e.details["ring"].as_str().unwrap().to_string()))
                .or_default() += 1;
        }
        // Promotions moved ring by ring across kills and restarts (most were
        // then superseded by the next commit); each ring at most once.
        let past_canary = published.keys().filter(|(_, ring)| ring == "pilot").count();
        assert!(past_canary >= 2, "{published:?}");
        for (k, n) in &published {
            assert_eq!(*n, 1, "{k:?} published {n} times");
        }
        // Each revision was planned once.
        let mut created: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e.action.as_str() == "promotion_created") {
            *created
                .entry(e.details["revision"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for (rev, n) in &created {
            assert_eq!(*n, 1, "{rev} planned {n} times");
        }
        assert!(created.contains_key(&last));
        // Every ring ends on the last commit's content.
        let broad: Desired = serde_json::from_value(store.kv_get("desired/broad").await.unwrap().unwrap()).unwrap();
        assert_eq!(broad.documents["baseline/corp-ios"].revision.as_str(), last);
    });
}
