//! The controller's stored state: scoped by source, so that one store holds
//! several governed sources side by side, and never read as a default when
//! it does not decode.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tempfile::TempDir;

use tollgate::cli::quickstart::{append_commit, write_sample_repo, SampleCommit};
use tollgate::controller::{Controller, ControllerError, NoDevices};
use tollgate::ids::SourceId;
use tollgate::ledger::Ledger;
use tollgate::promotion::Phase;
use tollgate::state::{Keys, StateError};
use tollgate::store::{self, PromotionWrite, Store, Transition};

const CONFIG: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Config\nmetadata: {name: acme}\nrings:\n  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}\n  - {name: broad, selector: {all: true}}\napprovers:\n  mdm: {users: [sam, ana]}\n  oncall: {users: [dana]}\n";

fn baseline(name: &str, platform: &str, min_length: u32) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {{name: {name}, owners: [mdm]}}\nspec:\n  platform: {platform}\n  targets: {{groups: [fleet]}}\n  settings:\n    passcode.min_length: {min_length}\n"
    )
}

fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

/// A governed repo with one baseline, adopted as what the fleet runs.
struct Source {
    repo: std::path::PathBuf,
    url: String,
    path: String,
    name: String,
    platform: String,
}

impl Source {
    fn new(dir: &TempDir, id: &str, name: &str, platform: &str) -> Source {
        let repo = dir.path().join(format!("repo-{id}"));
        let path = format!("baselines/{platform}/{name}.yaml");
        let first = baseline(name, platform, 8);
        write_sample_repo(
            &repo,
            &[SampleCommit {
                author: "priya",
                message: "initial",
                files: &[("tollgate.yaml", Some(CONFIG)), (path.as_str(), Some(first.as_str()))],
            }],
        )
        .unwrap();
        let url = format!("file://{}", repo.display());
        Source {
            repo,
            url,
            path,
            name: name.into(),
            platform: platform.into(),
        }
    }

    /// Commits a new passcode length.
    fn change(&self, min_length: u32) {
        let doc = baseline(&self.name, &self.platform, min_length);
        append_commit(
            &self.repo,
            &SampleCommit {
                author: "priya",
                message: "passcode length",
                files: &[(self.path.as_str(), Some(doc.as_str()))],
            },
        )
        .unwrap();
    }
}

fn controller(store: &Arc<dyn Store>, dir: &TempDir, source: &Source, mirror: &str) -> Controller {
    Controller::new(
        store.clone(),
        source.url.clone(),
        "main".into(),
        dir.path().join(mirror),
        Arc::new(NoDevices),
    )
}

async fn sqlite(dir: &TempDir) -> Arc<dyn Store> {
    let store = store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap();
    assert!(store.try_lead("test").await.unwrap());
    store
}

async fn put(store: &Arc<dyn Store>, key: &str, value: serde_json::Value) {
    let t = Transition {
        kv: vec![(key.to_string(), Some(value))],
        ..Default::default()
    };
    store.commit(t).await.unwrap();
}

fn decode_key(err: &ControllerError) -> &str {
    match err {
        ControllerError::State(StateError::Decode { key, .. }) => key,
        other => panic!("expected a stored record that does not decode, got {other:?}"),
    }
}

#[tokio::test]
async fn two_sources_share_one_store_and_neither_sees_the_others_state() {
    let dir = TempDir::new().unwrap();
    let store = sqlite(&dir).await;
    let ledger = Ledger::new(store.clone());
    let ios = Source::new(&dir, "ios", "corp-ios", "ios");
    let mac = Source::new(&dir, "mac", "corp-macos", "macos");
    let a = controller(&store, &dir, &ios, "mirror-ios").with_ledger(ledger.clone());
    let macos = SourceId::new("macos").unwrap();
    let b = controller(&store, &dir, &mac, "mirror-mac")
        .with_source(macos.clone())
        .with_ledger(ledger.clone());

    // Each source adopts its own fleet state: the other's published rings
    // do not count as "already published".
    a.adopt("HEAD", "dana", monday()).await.unwrap();
    b.adopt("HEAD", "dana", monday()).await.unwrap();
    let ring_a = &a.ring_states().await.unwrap()["canary"];
    let ring_b = &b.ring_states().await.unwrap()["canary"];
    assert!(ring_a.documents.contains_key("baseline/corp-ios"));
    assert!(!ring_a.documents.contains_key("baseline/corp-macos"));
    assert!(ring_b.documents.contains_key("baseline/corp-macos"));
    assert!(!ring_b.documents.contains_key("baseline/corp-ios"));
    let mac_keys = Keys::new(&macos);
    assert!(store.kv_get(&mac_keys.desired("canary")).await.unwrap().is_some());
    assert!(store.kv_get(&mac_keys.tip()).await.unwrap().is_some());
    assert_ne!(
        store.kv_get("source/tip").await.unwrap(),
        store.kv_get(&mac_keys.tip()).await.unwrap()
    );

    // A change in each: each controller creates and sees only its own.
    ios.change(10);
    mac.change(12);
    let pa = a.poll(monday()).await.unwrap().expect("a promotion of the iOS source");
    let pb = b
        .poll(monday())
        .await
        .unwrap()
        .expect("a promotion of the macOS source");
    assert_eq!(store.promotion(pa).await.unwrap().unwrap().source, "default");
    assert_eq!(store.promotion(pb).await.unwrap().unwrap().source, "macos");
    assert_eq!(live_ids(&a).await, vec![pa]);
    assert_eq!(live_ids(&b).await, vec![pb]);
    // Polling again finds nothing new in either: each remembers its own tip.
    assert_eq!(a.poll(monday()).await.unwrap(), None);
    assert_eq!(b.poll(monday()).await.unwrap(), None);

    // Halting one leaves the other live, and its reconcile never touches it.
    let halted = a.halt(pa, "dana", "wrong length", monday()).await.unwrap();
    assert!(matches!(halted.phase, Phase::Halted { .. }), "{:?}", halted.phase);
    b.reconcile(monday() + Duration::minutes(1)).await.unwrap();
    assert_eq!(live_ids(&a).await, Vec::<i64>::new());
    assert_eq!(live_ids(&b).await, vec![pb]);
    assert!(!b.load(pb).await.unwrap().1.promotion.phase.is_terminal());

    // One audit chain for the process: both sources appended to it in turn.
    let rows = store.audit_after(0, 1000).await.unwrap();
    assert!(rows
        .windows(2)
        .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev == w[0].hash));
    assert!(rows.iter().any(|r| r.subject == format!("promotion/{pa}")));
    assert!(rows.iter().any(|r| r.subject == format!("promotion/{pb}")));
}

async fn live_ids(c: &Controller) -> Vec<i64> {
    c.live_promotions().await.unwrap().into_iter().map(|p| p.id).collect()
}

/// One source with a live promotion of a change, for the corruption tests.
async fn live_change(dir: &TempDir) -> (Arc<dyn Store>, Controller, i64) {
    let store = sqlite(dir).await;
    let ios = Source::new(dir, "ios", "corp-ios", "ios");
    let c = controller(&store, dir, &ios, "mirror");
    c.adopt("HEAD", "dana", monday()).await.unwrap();
    ios.change(10);
    let id = c.poll(monday()).await.unwrap().expect("a promotion");
    (store, c, id)
}

#[tokio::test]
async fn an_unreadable_halt_request_stalls_its_promotion_and_is_kept() {
    let dir = TempDir::new().unwrap();
    let (store, c, id) = live_change(&dir).await;
    let before = c.load(id).await.unwrap().1.promotion;
    let key = format!("halt/{id}");
    put(&store, &key, json!({"actor": 7})).await;

    let err = c.reconcile(monday() + Duration::hours(2)).await.unwrap_err();
    assert_eq!(decode_key(&err), key);
    assert!(!err.is_transient(), "a person must repair it");
    // Read as "no halt" it would have let the promotion move; it did not,
    // and the record is left as it was for whoever repairs it.
    assert_eq!(c.load(id).await.unwrap().1.promotion, before);
    assert_eq!(store.kv_get(&key).await.unwrap(), Some(json!({"actor": 7})));
}

#[tokio::test]
async fn an_unreadable_promotion_stalls_alone_while_the_others_move() {
    let dir = TempDir::new().unwrap();
    let (store, c, id) = live_change(&dir).await;
    // Another live promotion of the same source whose body is unreadable.
    let broken = store
        .commit(Transition {
            promotions: vec![PromotionWrite::insert(
                "0".repeat(40),
                "rollback",
                "approved",
                json!({"x": 1}),
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .promotions[0]
        .id;
    put(
        &store,
        &format!("halt/{id}"),
        json!({"actor": "dana", "reason": "stop"}),
    )
    .await;

    let err = c.reconcile(monday()).await.unwrap_err();
    assert!(
        matches!(err, ControllerError::Corrupt { id, .. } if id == broken),
        "{err:?}"
    );
    // The readable promotion was still halted in the same pass.
    assert!(matches!(
        c.load(id).await.unwrap().1.promotion.phase,
        Phase::Halted { .. }
    ));
}

#[tokio::test]
async fn an_unreadable_tip_is_an_error_not_a_reason_to_plan_again() {
    let dir = TempDir::new().unwrap();
    let (store, c, _) = live_change(&dir).await;
    put(&store, "source/tip", json!(42)).await;
    let before = store.promotions(Default::default()).await.unwrap().len();
    let err = c.poll(monday()).await.unwrap_err();
    assert_eq!(decode_key(&err), "source/tip");
    assert_eq!(store.promotions(Default::default()).await.unwrap().len(), before);
}

#[tokio::test]
async fn an_unreadable_desired_state_is_an_error_and_never_published_over() {
    let dir = TempDir::new().unwrap();
    let (store, c, id) = live_change(&dir).await;
    put(&store, "desired/canary", json!({"ring": "canary", "pins": "lost"})).await;
    let err = c.reconcile(monday()).await.unwrap_err();
    assert_eq!(decode_key(&err), "desired/canary");
    assert_eq!(
        store.kv_get("desired/canary").await.unwrap(),
        Some(json!({"ring": "canary", "pins": "lost"}))
    );
    assert!(!c.load(id).await.unwrap().1.promotion.phase.is_terminal());
}

#[tokio::test]
async fn an_unreadable_review_stalls_the_promotion_instead_of_being_dropped() {
    let dir = TempDir::new().unwrap();
    let (store, c, id) = live_change(&dir).await;
    let before = c.load(id).await.unwrap().1.promotion;
    // A request for changes whose body no longer decodes: dropping it
    // could let the promotion through.
    store
        .commit(Transition {
            reviews: vec![store::NewReview {
                promotion_id: id,
                reviewer: "sam".into(),
                state: "changes_requested".into(),
                at: monday(),
                body: json!({"reviewer": "sam", "state": "nope"}),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = c.reconcile(monday()).await.unwrap_err();
    assert!(decode_key(&err).starts_with("review "), "{err:?}");
    assert!(decode_key(&err).ends_with(&format!("of promotion {id}")), "{err:?}");
    assert_eq!(c.load(id).await.unwrap().1.promotion, before);
}

#[tokio::test]
async fn an_unreadable_automatic_rollback_request_is_kept_and_reported() {
    let dir = TempDir::new().unwrap();
    let (store, c, _) = live_change(&dir).await;
    put(&store, "auto-rollback/99", json!({"ring": 3})).await;
    let err = c.reconcile(monday()).await.unwrap_err();
    assert_eq!(decode_key(&err), "auto-rollback/99");
    assert_eq!(
        store.kv_get("auto-rollback/99").await.unwrap(),
        Some(json!({"ring": 3}))
    );
}
