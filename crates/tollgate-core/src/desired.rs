//! What each ring should run: per document, the revision and digest last
//! published to it, and the pins rollbacks leave behind.
//!
//! A change promotion publishes the documents it changed; a rollback
//! publishes one document's earlier version and pins it, so that later
//! promotions do not put the bad version back. The pin holds while git still
//! carries the bad content and is released as soon as a promotion brings
//! different content for that document (a revert or a fix): git has moved
//! past it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::Action;
use crate::ids::{CommitSha, Digest};
use crate::promotion::{Promotion, PromotionKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredDoc {
    pub revision: CommitSha,
    pub digest: Digest,
    pub promotion: i64,
}

/// A rollback's hold on one document in one ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The content that was rolled back; promotions carrying it are held.
    pub bad_digest: Option<Digest>,
    pub bad_revision: Option<CommitSha>,
    pub rollback: i64,
}

/// The desired state of one ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub ring: String,
    pub ring_index: usize,
    /// By document key (`baseline/corp-ios`).
    pub documents: BTreeMap<String, DesiredDoc>,
    #[serde(default)]
    pub pins: BTreeMap<String, Pin>,
    /// The revision of the last change (not rollback) promotion published
    /// here: what the next change is planned against.
    pub base_revision: Option<CommitSha>,
    pub promotion: i64,
    pub published_at: DateTime<Utc>,
}

impl Desired {
    pub fn empty(ring: &str, ring_index: usize, now: DateTime<Utc>) -> Desired {
        Desired {
            ring: ring.into(),
            ring_index,
            documents: BTreeMap::new(),
            pins: BTreeMap::new(),
            base_revision: None,
            promotion: 0,
            published_at: now,
        }
    }
}

impl Desired {
    /// What the ring runs, as one value: `sha256:` over every document key and
    /// digest, in key order. Two rings with the same fingerprint run the same
    /// content; a change promotion's per-ring plan names the fingerprint it was
    /// made against, so a ring whose content moved is planned again.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.documents.iter().map(|(k, d)| (k.as_str(), &d.digest)))
    }
}

/// [`Desired::fingerprint`] of a ring that runs `documents`.
pub fn fingerprint<'a>(documents: impl IntoIterator<Item = (&'a str, &'a Digest)>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut sorted: Vec<(&str, &Digest)> = documents.into_iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (key, digest) in sorted {
        h.update(key.as_bytes());
        h.update(b"=");
        h.update(digest.as_str().as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Publishes `p` into `current`, ring `ring` of the promotion: the changes
/// planned for that ring (a rollback's own). Returns the new desired state and
/// the audit events (action, details) for pins held, set or released.
pub fn publish(mut d: Desired, p: &Promotion, ring: usize, now: DateTime<Utc>) -> (Desired, Vec<(Action, Value)>) {
    let mut events = Vec::new();
    let changes: &[crate::promotion::ChangeItem] = match p.kind {
        PromotionKind::Rollback => &p.changes,
        // The machine only publishes a ring planned against what it runs.
        PromotionKind::Change => p.ring_changes.get(ring).map(|rc| rc.changes.as_slice()).unwrap_or(&[]),
    };
    // Devices run baselines and exceptions; governance files only steer Tollgate.
    for c in changes.iter().filter(|c| !c.key.starts_with("governance/")) {
        match p.kind {
            PromotionKind::Rollback => {
                let replaced = d.documents.get(&c.key).cloned();
                d.pins.insert(
                    c.key.clone(),
                    Pin {
                        bad_digest: replaced.as_ref().map(|r| r.digest.clone()),
                        bad_revision: replaced.map(|r| r.revision),
                        rollback: p.id,
                    },
                );
                events.push((
                    Action::RingPinned,
                    json!({"ring": d.ring, "document": c.key, "to": p.revision, "rollback": p.id}),
                ));
            }
            PromotionKind::Change => {
                if let Some(pin) = d.pins.get(&c.key) {
                    if pin.bad_digest == c.digest {
                        events.push((
                            Action::PinHeld,
                            json!({"ring": d.ring, "document": c.key, "revision": p.revision, "rollback": pin.rollback}),
                        ));
                        continue;
                    }
                    events.push((
                        Action::RingUnpinned,
                        json!({"ring": d.ring, "document": c.key, "revision": p.revision,
                               "why": "git moved past the rolled-back content"}),
                    ));
                    d.pins.remove(&c.key);
                }
            }
        }
        match &c.digest {
            Some(digest) => {
                d.documents.insert(
                    c.key.clone(),
                    DesiredDoc {
                        revision: p.revision.clone(),
                        digest: digest.clone(),
                        promotion: p.id,
                    },
                );
            }
            None => {
                d.documents.remove(&c.key);
            }
        }
    }
    if p.kind == PromotionKind::Change {
        d.base_revision = Some(p.revision.clone());
    }
    d.promotion = p.id;
    d.published_at = now;
    (d, events)
}
