//! The audit ledger: the one writer of the store, and the outbox of what a
//! committed decision must still tell the world outside it.
//!
//! Every state change is one [`Transition`] committed here with the audit
//! events that describe it, chained to the stored head under one lock, so the
//! log stays linear whoever writes (the controller, the devices service).
//!
//! A decision that others must hear about (a ring's desired state was
//! published: the device index takes its gate reference then; soon check
//! runs, comments and issues on the forge) is written as an
//! [`OutboxMessage`] in the same transaction, and delivered after it
//! commits ([`Ledger::pending`], [`Ledger::delivered`]). A crash between
//! deciding and telling therefore loses nothing: the message is still in the
//! store and the next pass delivers it. Each message has a stable key, and
//! a newer message for the same key replaces an older one that was never
//! delivered; consumers treat a repeated message as one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use tollgate_core::audit::{Action, AuditChain, ChainHead};
use tollgate_store::{AuditRow, Store, StoreError, Transition};

use crate::state::Keys;

/// A message for the world outside the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxMessage {
    /// A new desired state of `ring`, published at `at`.
    Published { ring: String, at: DateTime<Utc> },
}

impl OutboxMessage {
    /// The message's stable key in a source's outbox: one undelivered
    /// message per ring and kind.
    pub fn key(&self, keys: &Keys) -> String {
        match self {
            OutboxMessage::Published { ring, .. } => keys.outbox_published(ring),
        }
    }

    /// Adds the message to `t`, to be committed with the decision.
    pub fn write_to(&self, keys: &Keys, t: &mut Transition) {
        let value = serde_json::to_value(self).expect("outbox messages serialise");
        t.kv.push((self.key(keys), Some(value)));
    }
}

/// An audit event to append: actor, action, subject, details.
pub type Event = (String, Action, String, Value);

/// Why the ledger could not commit or read its outbox.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("outbox message {key} does not decode")]
    CorruptMessage {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The store's one writer.
pub struct Ledger {
    store: Arc<dyn Store>,
    write: Mutex<()>,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>) -> Arc<Ledger> {
        Arc::new(Ledger {
            store,
            write: Mutex::new(()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The write lock. Hold it from reading the state a transition is
    /// computed from until [`Ledger::commit`] returns.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Appends `events` to the audit chain and commits them with `t`. The
    /// caller holds [`Ledger::lock`].
    pub async fn commit(&self, mut t: Transition, events: Vec<Event>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let head = self.store.audit_head().await?;
        let mut chain = AuditChain::from_head(match &head {
            Some(h) => ChainHead {
                seq: h.seq as u64,
                hash: h.hash.clone(),
            },
            None => ChainHead::genesis(),
        });
        for (actor, action, subject, details) in events {
            let e = chain.append(now, actor, action, subject, details);
            t.audit.push(AuditRow {
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
        self.store.commit(t).await.map(|_| ())
    }

    /// [`Ledger::commit`] taking the lock itself.
    pub async fn commit_locked(&self, t: Transition, events: Vec<Event>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _w = self.lock().await;
        self.commit(t, events, now).await
    }

    /// Every message of a source's outbox not yet delivered, by key. A
    /// message that does not decode is an error naming it, never skipped.
    pub async fn pending(&self, keys: &Keys) -> Result<Vec<(String, OutboxMessage)>, LedgerError> {
        let mut out = Vec::new();
        for (key, value) in self.store.kv_prefix(&keys.outbox_prefix()).await? {
            let message = serde_json::from_value(value).map_err(|source| LedgerError::CorruptMessage {
                key: key.clone(),
                source,
            })?;
            out.push((key, message));
        }
        Ok(out)
    }

    /// Marks `message` delivered, unless a newer message replaced it under
    /// the same key meanwhile (that one is delivered next). The caller
    /// holds [`Ledger::lock`], so no publish can slip in between the check
    /// and the delete.
    pub async fn delivered(&self, key: &str, message: &OutboxMessage) -> Result<(), LedgerError> {
        let current = self.store.kv_get(key).await?;
        let same = current
            .map(serde_json::from_value::<OutboxMessage>)
            .transpose()
            .ok()
            .flatten();
        if same.as_ref() == Some(message) {
            let t = Transition {
                kv: vec![(key.to_string(), None)],
                ..Default::default()
            };
            self.store.commit(t).await?;
        }
        Ok(())
    }
}
