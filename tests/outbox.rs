//! The outbox: what a committed decision must still tell others (a ring was
//! published: the device index takes its gate reference) is stored with the
//! decision and delivered after it, so a crash in between loses nothing and
//! a delivery is not repeated.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::{Controller, ControllerError, RingHealth};
use tollgate::ids::CommitSha;
use tollgate::ledger::{LedgerError, OutboxMessage};
use tollgate::promotion::GateReading;
use tollgate::state::Keys;
use tollgate::store::{self, Store, Transition};

const CONFIG: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Config\nmetadata: {name: acme}\nrings:\n  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h}\n  - {name: broad, selector: {all: true}}\n";
const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones]}\n  settings:\n    passcode.min_length: 8\n";

fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

/// Remembers every ring it is told was published.
#[derive(Default)]
struct Told(Mutex<Vec<(String, DateTime<Utc>)>>);

impl Told {
    fn all(&self) -> Vec<(String, DateTime<Utc>)> {
        self.0.lock().unwrap().clone()
    }
}

impl RingHealth for Told {
    fn reading(&self, _: &str, _: &CommitSha, _: DateTime<Utc>) -> GateReading {
        GateReading::NoData {
            reason: "not measured here".into(),
        }
    }

    fn published(&self, ring: &str, at: DateTime<Utc>) {
        self.0.lock().unwrap().push((ring.to_string(), at));
    }
}

struct Setup {
    dir: TempDir,
    store: Arc<dyn Store>,
    url: String,
}

async fn setup() -> Setup {
    let dir = TempDir::new().unwrap();
    let repo = dir.path().join("repo");
    let history = [SampleCommit {
        author: "priya",
        message: "initial",
        files: &[
            ("tollgate.yaml", Some(CONFIG)),
            ("baselines/ios/corp-ios.yaml", Some(IOS)),
        ],
    }];
    write_sample_repo(&repo, &history).unwrap();
    let db = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = store::open(&db).await.unwrap();
    let url = format!("file://{}", repo.display());
    Setup { dir, store, url }
}

impl Setup {
    /// A controller process over the shared store, telling `told`.
    fn controller(&self, told: &Arc<Told>) -> Controller {
        Controller::new(
            self.store.clone(),
            self.url.clone(),
            "main".into(),
            self.dir.path().join("mirror"),
            told.clone(),
        )
    }

    async fn outbox(&self) -> Vec<String> {
        self.store
            .kv_prefix(&Keys::default().outbox_prefix())
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

#[tokio::test]
async fn adopting_tells_every_ring_once_and_empties_the_outbox() {
    let s = setup().await;
    let told = Arc::new(Told::default());
    let c = s.controller(&told);
    c.adopt("HEAD", "dana", monday()).await.unwrap();
    let mut rings = told.all();
    rings.sort();
    assert_eq!(
        rings,
        vec![("broad".to_string(), monday()), ("canary".to_string(), monday())]
    );
    assert!(s.outbox().await.is_empty(), "{:?}", s.outbox().await);
    // Later passes have nothing more to tell.
    assert!(c.store().try_lead("test").await.unwrap());
    c.reconcile(monday()).await.unwrap();
    assert_eq!(told.all().len(), 2);
}

#[tokio::test]
async fn a_decision_committed_just_before_a_crash_is_told_by_the_next_process_once() {
    let s = setup().await;
    // The first process commits a publish and dies before telling anyone.
    let first = Arc::new(Told::default());
    let crashed = s.controller(&first);
    let mut t = Transition::default();
    let message = OutboxMessage::Published {
        ring: "canary".into(),
        at: monday(),
    };
    message.write_to(&Keys::default(), &mut t);
    crashed.ledger().commit_locked(t, Vec::new(), monday()).await.unwrap();
    assert!(first.all().is_empty());
    assert_eq!(s.outbox().await, vec!["outbox/published/canary".to_string()]);

    // The next process delivers it on its first pass, and only once.
    let second = Arc::new(Told::default());
    let next = s.controller(&second);
    assert!(next.store().try_lead("next").await.unwrap());
    next.reconcile(monday()).await.unwrap();
    next.reconcile(monday()).await.unwrap();
    assert_eq!(second.all(), vec![("canary".to_string(), monday())]);
    assert!(s.outbox().await.is_empty());
}

#[tokio::test]
async fn an_outbox_message_that_does_not_decode_stops_the_pass_and_names_its_key() {
    let s = setup().await;
    let told = Arc::new(Told::default());
    let c = s.controller(&told);
    let t = Transition {
        kv: vec![(
            "outbox/published/canary".into(),
            Some(json!({"kind": "published", "ring": 7})),
        )],
        ..Default::default()
    };
    c.ledger().commit_locked(t, Vec::new(), monday()).await.unwrap();
    assert!(c.store().try_lead("test").await.unwrap());
    let err = c.reconcile(monday()).await.unwrap_err();
    match &err {
        ControllerError::Outbox(LedgerError::CorruptMessage { key, .. }) => assert_eq!(key, "outbox/published/canary"),
        other => panic!("expected a corrupt outbox message, got {other:?}"),
    }
    assert!(!err.is_transient(), "a person must look at it");
    // Nothing was told, and the message is kept for whoever repairs it.
    assert!(told.all().is_empty());
    assert_eq!(s.outbox().await.len(), 1);
}
