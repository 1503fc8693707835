//! A store outage fails closed and recovers by itself: while the store
//! refuses every call, the controller promotes nothing and reports transient
//! errors; when it answers again, the next pass carries on where the state
//! says, with the audit chain whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use serde_json::Value;
use tempfile::TempDir;

use tollgate::cli::quickstart::{write_sample_repo, SampleCommit};
use tollgate::controller::{Controller, NoDevices};
use tollgate::promotion::{Phase, ReviewState};
use tollgate::store::{
    self, AuditRow, Backend, CommitResult, PromotionFilter, PromotionRecord, ReviewRecord, Store, StoreError,
    Transition,
};

/// The real SQLite store behind a switch that makes every call fail as a
/// lost connection would.
#[derive(Debug)]
struct Outage {
    inner: Arc<dyn Store>,
    down: AtomicBool,
}

impl Outage {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Database {
                backend: Backend::Sqlite,
                op: "query",
                source: sqlx::Error::PoolTimedOut,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Outage {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn commit(&self, t: Transition) -> Result<CommitResult, StoreError> {
        self.check()?;
        self.inner.commit(t).await
    }
    async fn reserve_promotion_id(&self) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.reserve_promotion_id().await
    }
    async fn promotion(&self, id: i64) -> Result<Option<PromotionRecord>, StoreError> {
        self.check()?;
        self.inner.promotion(id).await
    }
    async fn promotions(&self, filter: PromotionFilter) -> Result<Vec<PromotionRecord>, StoreError> {
        self.check()?;
        self.inner.promotions(filter).await
    }
    async fn reviews(&self, promotion_id: i64) -> Result<Vec<ReviewRecord>, StoreError> {
        self.check()?;
        self.inner.reviews(promotion_id).await
    }
    async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.check()?;
        self.inner.audit_after(after_seq, limit).await
    }
    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        self.check()?;
        self.inner.audit_head().await
    }
    async fn kv_get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.check()?;
        self.inner.kv_get(key).await
    }
    async fn kv_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.check()?;
        self.inner.kv_prefix(prefix).await
    }
    async fn try_lead(&self, holder: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.try_lead(holder).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

const CONFIG: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Config\nmetadata: {name: acme}\nrings:\n  - {name: canary, selector: {groups: [mdm-canary]}}\n  - {name: broad, selector: {all: true}}\napprovers:\n  mdm-security: {users: [sec1]}\n  mdm-ios: {users: [ios1]}\nwindows:\n  business-hours: {days: [mon, tue, wed, thu], start: \"09:00\", end: \"16:00\", tz: Europe/Berlin}\n";
const IOS: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {name: corp-ios, owners: [mdm-ios]}\nspec:\n  platform: ios\n  targets: {groups: [phones]}\n  settings: {passcode.min_length: 8}\n";

#[tokio::test]
async fn a_store_outage_fails_closed_and_recovers() {
    let dir = TempDir::new().unwrap();
    let repo = dir.path().join("repo");
    write_sample_repo(
        &repo,
        &[SampleCommit {
            author: "priya",
            message: "initial",
            files: &[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
            ],
        }],
    )
    .unwrap();
    let inner = store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap();
    let outage = Arc::new(Outage {
        inner,
        down: AtomicBool::new(false),
    });
    let c = Controller::new(
        outage.clone(),
        format!("file://{}", repo.display()),
        "main".into(),
        dir.path().join("mirror"),
        Arc::new(NoDevices),
    );
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();

    // Down before the first poll: nothing is planned, the error is transient.
    outage.down.store(true, Ordering::SeqCst);
    let err = c.poll(now).await.unwrap_err();
    assert!(err.is_transient(), "{err:#}");
    assert!(outage.ping().await.is_err());
    outage.down.store(false, Ordering::SeqCst);
    let id = c.poll(now).await.unwrap().expect("planned once the store is back");

    // Approvals recorded; then the store goes down: no ring can be promoted.
    c.review(id, "ios1", ReviewState::Approved, now).await.unwrap();
    outage.down.store(true, Ordering::SeqCst);
    assert!(c
        .review(id, "sec1", ReviewState::Approved, now)
        .await
        .unwrap_err()
        .is_transient());
    assert!(c.reconcile(now).await.unwrap_err().is_transient());
    outage.down.store(false, Ordering::SeqCst);
    let (_, stored) = c.load(id).await.unwrap();
    assert_eq!(
        stored.promotion.phase,
        Phase::PendingApproval { ring: 0 },
        "nothing moved during the outage"
    );
    assert!(outage.kv_get("desired/canary").await.unwrap().is_none());

    // Back: the missing approval is given and the promotion proceeds.
    let p = c.review(id, "sec1", ReviewState::Approved, now).await.unwrap();
    assert_eq!(p.phase, Phase::Complete, "no soak or gate in this config");
    assert!(outage.kv_get("desired/canary").await.unwrap().is_some());
    let rows = outage.audit_after(0, 1000).await.unwrap();
    let events: Vec<tollgate::audit::AuditEvent> = rows
        .into_iter()
        .map(|r| tollgate::audit::AuditEvent {
            seq: r.seq as u64,
            at: r.at,
            actor: r.actor,
            action: tollgate::audit::Action::parse(&r.action),
            subject: r.subject,
            details: r.details,
            prev: r.prev,
            hash: r.hash,
        })
        .collect();
    tollgate::audit::verify(events).unwrap();
}
