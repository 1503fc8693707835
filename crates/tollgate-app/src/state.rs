//! The controller's state in the store, typed.
//!
//! The store keeps JSON under string keys and knows nothing of the domain.
//! This module is the one place that spells those keys and the one place
//! that decodes what is stored under them: every key is built by a method
//! of [`Keys`], every record has a type, and a stored value that does not
//! decode is a [`StateError::Decode`] naming its key, never a default. (An
//! unreadable desired state read as empty would drop the ring's rollback
//! pins; an unreadable halt request read as none would let a promotion the
//! operator halted move; an unreadable tip read as none would plan the same
//! revision again.)
//!
//! Keys are scoped by [`SourceId`], so one store can hold several governed
//! sources. The default source keeps the spelling that stores written before
//! sources existed use (`desired/{ring}`, `source/tip`, `halt/{id}`...), so
//! those stores open unchanged; another source's keys sit under
//! `sources/{id}/`, which no key or prefix of the default source reaches.
//! Promotions carry their source in the store's `source` column.
//!
//! The fleet's records (device reports, check-ins, findings, gate
//! references, remediation items) are per device, not per source: their
//! keys are in [`fleet`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::desired::Desired;
use tollgate_core::ids::{CommitSha, Digest, SourceId};
use tollgate_core::promotion::{OperatorRequest, Phase, Review};
use tollgate_store::{PromotionFilter, PromotionRecord, Store, StoreError};

/// The keys of one source's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Empty for the default source (the spelling that predates sources).
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(&SourceId::default())
    }
}

impl Keys {
    pub fn new(source: &SourceId) -> Self {
        let prefix = if source.is_default() {
            String::new()
        } else {
            format!("sources/{source}/")
        };
        Keys { prefix }
    }

    /// The tip the newest promotion was created for ([`CommitSha`]).
    pub fn tip(&self) -> String {
        format!("{}source/tip", self.prefix)
    }

    /// The last tip that was not promoted, and why ([`Refused`]).
    pub fn refused(&self) -> String {
        format!("{}source/refused", self.prefix)
    }

    /// A ring's published state ([`Desired`]).
    pub fn desired(&self, ring: &str) -> String {
        format!("{}{ring}", self.desired_prefix())
    }

    /// The prefix of every ring's desired state.
    pub fn desired_prefix(&self) -> String {
        format!("{}desired/", self.prefix)
    }

    /// An operator's halt request for a promotion ([`OperatorRequest`]).
    pub fn halt(&self, promotion: i64) -> String {
        format!("{}halt/{promotion}", self.prefix)
    }

    /// A rollback the policy asked for when a gate failed ([`AutoRollback`]).
    pub fn auto_rollback(&self, promotion: i64) -> String {
        format!("{}{promotion}", self.auto_rollback_prefix())
    }

    pub fn auto_rollback_prefix(&self) -> String {
        format!("{}auto-rollback/", self.prefix)
    }

    /// The outbox message that ring `ring` was published.
    pub fn outbox_published(&self, ring: &str) -> String {
        format!("{}published/{ring}", self.outbox_prefix())
    }

    /// The prefix of the source's outbox.
    pub fn outbox_prefix(&self) -> String {
        format!("{}outbox/", self.prefix)
    }
}

/// Keys of the fleet's records: per device or per ring of the fleet.
pub mod fleet {
    /// `device/{id}`: the device's last report.
    pub const DEVICE: &str = "device/";
    /// `checkin/{id}`: when the device last checked in.
    pub const CHECKIN: &str = "checkin/";
    /// `finding/{id}`: the device's open findings.
    pub const FINDING: &str = "finding/";
    /// `fleet/gate/{ring}`: the non-compliance reference a ring's gate compares against.
    pub const GATE: &str = "fleet/gate/";
    /// `fleet/expired/{exception}/{expiry}`: an exception's expiry was audited.
    pub const EXPIRED: &str = "fleet/expired/";
    /// `remediation/{id}`: a finding's remediation item.
    pub const REMEDIATION: &str = "remediation/";
}

/// A revision that was not promoted, and why (recorded once per tip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub revision: CommitSha,
    pub errors: Vec<String>,
}

/// A rollback the policy asked for when a ring's gate failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoRollback {
    pub promotion: i64,
    pub ring: String,
    /// Baseline name and the halted content's digest.
    pub baselines: Vec<(String, Digest)>,
    /// What the ring ran before: the revision the change was planned against.
    pub to: CommitSha,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("stored {key} is unreadable; it is left as it is for a person to repair")]
    Decode {
        key: String,
        #[source]
        reason: serde_json::Error,
    },
    #[error("more than {bound} {what} are stored; refusing to act on a partial list")]
    TooMany { what: &'static str, bound: usize },
}

impl StateError {
    /// Whether retrying later may succeed without a human.
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Store(e) => e.is_transient() || e.is_conflict(),
            StateError::Decode { .. } | StateError::TooMany { .. } => false,
        }
    }
}

/// A key and its new value (`None` deletes it), for a [`tollgate_store::Transition`].
pub type KvWrite = (String, Option<Value>);

/// One source's state over a store: typed reads, and the writes that go
/// into a transition.
#[derive(Clone)]
pub struct SourceState {
    store: Arc<dyn Store>,
    source: SourceId,
    keys: Keys,
}

impl SourceState {
    pub fn new(store: Arc<dyn Store>, source: SourceId) -> Self {
        let keys = Keys::new(&source);
        SourceState { store, source, keys }
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn get<T: DeserializeOwned>(&self, key: String) -> Result<Option<T>, StateError> {
        match self.store.kv_get(&key).await? {
            None => Ok(None),
            Some(v) => decode(key, v).map(Some),
        }
    }

    async fn prefix<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StateError> {
        let mut out = Vec::new();
        for (key, v) in self.store.kv_prefix(prefix).await? {
            let value = decode(key.clone(), v)?;
            out.push((key, value));
        }
        Ok(out)
    }

    pub async fn tip(&self) -> Result<Option<CommitSha>, StateError> {
        self.get(self.keys.tip()).await
    }

    pub async fn refused(&self) -> Result<Option<Refused>, StateError> {
        self.get(self.keys.refused()).await
    }

    pub async fn desired(&self, ring: &str) -> Result<Option<Desired>, StateError> {
        self.get(self.keys.desired(ring)).await
    }

    /// Every ring's desired state by ring name.
    pub async fn rings(&self) -> Result<BTreeMap<String, Desired>, StateError> {
        let rows: Vec<(String, Desired)> = self.prefix(&self.keys.desired_prefix()).await?;
        Ok(rows.into_iter().map(|(_, d)| (d.ring.clone(), d)).collect())
    }

    /// Whether any ring of this source has a desired state.
    pub async fn any_desired(&self) -> Result<bool, StateError> {
        Ok(!self.store.kv_prefix(&self.keys.desired_prefix()).await?.is_empty())
    }

    pub async fn halt(&self, promotion: i64) -> Result<Option<OperatorRequest>, StateError> {
        self.get(self.keys.halt(promotion)).await
    }

    /// The automatic rollbacks waiting to be carried out, with their keys.
    pub async fn auto_rollbacks(&self) -> Result<Vec<(String, AutoRollback)>, StateError> {
        self.prefix(&self.keys.auto_rollback_prefix()).await
    }

    /// The reviews of a promotion, in the order they were recorded. A review
    /// that does not decode is an error: dropping it could drop a request
    /// for changes and let the promotion through.
    pub async fn reviews(&self, promotion: i64) -> Result<Vec<Review>, StateError> {
        self.store
            .reviews(promotion)
            .await?
            .into_iter()
            .map(|r| decode(format!("review {} of promotion {promotion}", r.id), r.body))
            .collect()
    }

    /// This source's promotions in any of `phases` (all phases when empty),
    /// newest first, read page by page to the end, up to [`PROMOTIONS_BOUND`].
    pub async fn promotions_in(&self, phases: &[&str]) -> Result<Vec<PromotionRecord>, StateError> {
        promotions_paged(
            self.store.as_ref(),
            &self.source,
            phases,
            PROMOTION_PAGE,
            PROMOTIONS_BOUND,
        )
        .await
    }

    /// This source's live promotions, newest first.
    pub async fn live(&self) -> Result<Vec<PromotionRecord>, StateError> {
        self.promotions_in(&Phase::LIVE_NAMES).await
    }

    /// One page of this source's promotions, newest first: those below
    /// `before` (an id of the previous page), at most `limit`.
    pub async fn page(&self, before: Option<i64>, limit: u32) -> Result<Vec<PromotionRecord>, StateError> {
        let filter = PromotionFilter {
            source: Some(self.source.to_string()),
            before_id: before,
            limit,
            ..Default::default()
        };
        Ok(self.store.promotions(filter).await?)
    }

    /// The newest promotion of this source, if any.
    pub async fn newest(&self) -> Result<Option<PromotionRecord>, StateError> {
        let filter = PromotionFilter {
            source: Some(self.source.to_string()),
            limit: 1,
            ..Default::default()
        };
        Ok(self.store.promotions(filter).await?.into_iter().next())
    }

    pub fn put_tip(&self, tip: &CommitSha) -> KvWrite {
        (self.keys.tip(), Some(encode(tip)))
    }

    pub fn put_refused(&self, refused: &Refused) -> KvWrite {
        (self.keys.refused(), Some(encode(refused)))
    }

    pub fn clear_refused(&self) -> KvWrite {
        (self.keys.refused(), None)
    }

    pub fn put_desired(&self, desired: &Desired) -> KvWrite {
        (self.keys.desired(&desired.ring), Some(encode(desired)))
    }

    pub fn put_halt(&self, promotion: i64, request: &OperatorRequest) -> KvWrite {
        (self.keys.halt(promotion), Some(encode(request)))
    }

    pub fn clear_halt(&self, promotion: i64) -> KvWrite {
        (self.keys.halt(promotion), None)
    }

    pub fn put_auto_rollback(&self, request: &AutoRollback) -> KvWrite {
        (self.keys.auto_rollback(request.promotion), Some(encode(request)))
    }
}

/// Decodes the value stored under `key` (or the record `key` names).
pub fn decode<T: DeserializeOwned>(key: String, value: Value) -> Result<T, StateError> {
    serde_json::from_value(value).map_err(|reason| StateError::Decode { key, reason })
}

fn encode<T: Serialize>(record: &T) -> Value {
    serde_json::to_value(record).expect("stored records serialise")
}

/// At most this many promotions of one phase set are acted on at once; more
/// is refused ([`StateError::TooMany`]) rather than acting on a first page.
pub const PROMOTIONS_BOUND: usize = 100_000;

/// Page size of [`SourceState::promotions_in`].
const PROMOTION_PAGE: u32 = 500;

async fn promotions_paged(
    store: &dyn Store,
    source: &SourceId,
    phases: &[&str],
    page: u32,
    bound: usize,
) -> Result<Vec<PromotionRecord>, StateError> {
    let mut out: Vec<PromotionRecord> = Vec::new();
    loop {
        let filter = PromotionFilter {
            source: Some(source.to_string()),
            phases: phases.iter().map(|p| p.to_string()).collect(),
            before_id: out.last().map(|r| r.id),
            limit: page,
            ..Default::default()
        };
        let rows = store.promotions(filter).await?;
        let last = rows.len() < page as usize;
        out.extend(rows);
        if out.len() > bound {
            return Err(StateError::TooMany {
                what: "promotions",
                bound,
            });
        }
        if last {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_store::{PromotionWrite, Transition};

    #[test]
    fn the_default_source_keeps_the_spelling_older_stores_use() {
        let keys = Keys::default();
        assert_eq!(keys.tip(), "source/tip");
        assert_eq!(keys.refused(), "source/refused");
        assert_eq!(keys.desired("canary"), "desired/canary");
        assert_eq!(keys.halt(7), "halt/7");
        assert_eq!(keys.auto_rollback(7), "auto-rollback/7");
        assert_eq!(keys.outbox_published("canary"), "outbox/published/canary");
    }

    #[test]
    fn another_sources_keys_are_outside_every_default_prefix() {
        let other = Keys::new(&SourceId::new("ios-fleet").unwrap());
        let default = Keys::default();
        let default_prefixes = [
            default.desired_prefix(),
            default.auto_rollback_prefix(),
            default.outbox_prefix(),
            "source/".to_string(),
            "halt/".to_string(),
        ];
        for key in [
            other.tip(),
            other.refused(),
            other.desired("canary"),
            other.halt(7),
            other.auto_rollback(7),
            other.outbox_published("canary"),
        ] {
            assert!(key.starts_with("sources/ios-fleet/"), "{key}");
            for p in &default_prefixes {
                assert!(!key.starts_with(p.as_str()), "{key} is under {p}");
            }
        }
        assert!(!default.desired("canary").starts_with(&other.desired_prefix()));
    }

    #[test]
    fn source_ids_are_labels() {
        for bad in ["", "Upper", "-lead", "trail-", "a/b", &"x".repeat(64)] {
            assert!(SourceId::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SourceId::new("ios-1").unwrap().as_str(), "ios-1");
        assert!(serde_json::from_value::<SourceId>(json!("a/b")).is_err());
    }

    async fn store() -> Arc<dyn Store> {
        tollgate_store::open("sqlite::memory:").await.unwrap()
    }

    #[tokio::test]
    async fn a_corrupt_tip_is_an_error_naming_its_key() {
        let store = store().await;
        let state = SourceState::new(store.clone(), SourceId::default());
        let t = Transition {
            kv: vec![("source/tip".into(), Some(json!(7)))],
            ..Default::default()
        };
        store.commit(t).await.unwrap();
        match state.tip().await {
            Err(StateError::Decode { key, .. }) => assert_eq!(key, "source/tip"),
            other => panic!("a corrupt tip read as {other:?}"),
        }
    }

    fn insert(source: &str, i: usize) -> PromotionWrite {
        PromotionWrite::Insert {
            id: None,
            source: source.into(),
            revision: format!("{i:040}"),
            kind: "change".into(),
            phase: "soaking".into(),
            body: json!({}),
        }
    }

    #[tokio::test]
    async fn promotions_are_read_to_the_end_of_their_source_and_a_bound_is_refused() {
        let store = store().await;
        let mut promotions: Vec<PromotionWrite> = (0..7).map(|i| insert("default", i)).collect();
        promotions.extend((0..3).map(|i| insert("other", i)));
        let t = Transition {
            promotions,
            ..Default::default()
        };
        store.commit(t).await.unwrap();
        let default = SourceId::default();
        let all = promotions_paged(store.as_ref(), &default, &["soaking"], 2, 10)
            .await
            .unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.iter().all(|r| r.source == "default"));
        let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        assert!(matches!(
            promotions_paged(store.as_ref(), &default, &["soaking"], 2, 5).await,
            Err(StateError::TooMany { bound: 5, .. })
        ));
        let other = SourceId::new("other").unwrap();
        assert_eq!(
            promotions_paged(store.as_ref(), &other, &[], 2, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        assert!(promotions_paged(store.as_ref(), &default, &["complete"], 2, 5)
            .await
            .unwrap()
            .is_empty());
    }
}
