//! A ring's desired state with its documents' content.
//!
//! The controller publishes, per ring, which revision and digest of each
//! document devices should run ([`Desired`]). [`DesiredCache`] turns that
//! into the documents themselves, read from the controller's git mirror, and
//! checks that every document it reads has the digest that was published:
//! content that is not what was approved is never served.
//!
//! Devices poll often and the state changes rarely, so a poll of an unchanged
//! ring costs one key/value read and a hash: the rendered answer is kept per
//! ring with the hash of the stored state it came from. When a ring changes,
//! documents that a cached ring already holds (same name, revision and
//! digest) are reused; only the others are read from git. The revision
//! holding most of them is parsed whole (and kept in a small cache of
//! snapshots); at other revisions a document is read by the path it had
//! there, falling back to the whole revision when it was moved or renamed.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::state::Keys;
use tollgate_core::catalog::Catalog;
use tollgate_core::desired::{Desired, Pin};
use tollgate_core::format::{Baseline, Config, Exception};
use tollgate_core::ids::{CommitSha, Digest};
use tollgate_core::snapshot::Snapshot;
use tollgate_core::tree::RepoPath;
use tollgate_git::git::{GitError, GitRepo};
use tollgate_store::{Store, StoreError};

pub use tollgate_core::devices::resolved::{ExceptionScope, ResolvedBaseline, ResolvedException, ResolvedRing};

/// A ring's resolved desired state as `GET /v1/desired` serves it.
#[derive(Debug)]
pub struct Rendered {
    pub ring: Arc<ResolvedRing>,
    /// `"` + sha256 hex of `body` + `"`: a strong validator; equal state has
    /// an equal tag.
    pub etag: String,
    /// The [`ResolvedRing`] as JSON plus `"pins"` (by document key, as the
    /// desired state holds them), keys sorted, compact.
    pub body: Bytes,
}

/// Why a ring's desired state could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Transparent: its message names what failed (a kv entry's key, the
    /// store), and `DevicesError` keeps only this text.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored desired state {key} is not a desired state: {reason}")]
    CorruptDesired { key: String, reason: serde_json::Error },
    #[error("stored {key} is unreadable: {reason}")]
    CorruptState { key: String, reason: serde_json::Error },
    #[error("stored promotion {id} is unreadable: {reason}")]
    CorruptPromotion { id: i64, reason: String },
    #[error("ring {ring:?} holds document {key:?}, which is neither a baseline nor an exception")]
    UnknownDocument { ring: String, key: String },
    #[error("cannot read revision {revision} from the git mirror")]
    Git {
        revision: CommitSha,
        #[source]
        source: GitError,
    },
    #[error("ring {ring:?}: {document} is not among the valid documents of revision {revision}{}",
        first_error.as_ref().map(|e| format!(" (first error there: {e})")).unwrap_or_default())]
    Missing {
        ring: String,
        document: String,
        revision: CommitSha,
        first_error: Option<String>,
    },
    #[error("ring {ring:?}: {document} at revision {revision} has digest {found}, but {published} was published; refusing to serve content that was not approved")]
    DigestMismatch {
        ring: String,
        document: String,
        revision: CommitSha,
        published: Digest,
        found: Digest,
    },
    #[error("revision {revision} has no valid tollgate.yaml{}",
        first_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    NoConfig {
        revision: CommitSha,
        first_error: Option<String>,
    },
    #[error("background task failed: {0}")]
    Join(String),
    /// A content mismatch ([`ResolveError::is_content_mismatch`]), kept for
    /// the stored state it was found in: a fleet polling a ring that cannot
    /// be served does not re-read git, or flood the log, on every poll.
    #[error(transparent)]
    Refused(Arc<ResolveError>),
}

impl ResolveError {
    /// The mirror is missing or does not hold the revision (yet): the
    /// controller's next fetch may bring it; nothing is wrong with the state.
    pub fn mirror_lacks_revision(&self) -> bool {
        matches!(
            self.cause(),
            ResolveError::Git {
                source: GitError::Open { .. } | GitError::CommitNotFound { .. },
                ..
            }
        )
    }

    /// The error itself, out of a kept [`ResolveError::Refused`].
    pub fn cause(&self) -> &ResolveError {
        match self {
            ResolveError::Refused(e) => e.cause(),
            e => e,
        }
    }

    /// Whether the same call may succeed later without anyone acting.
    pub fn is_transient(&self) -> bool {
        match self.cause() {
            ResolveError::Store(e) => e.is_transient(),
            ResolveError::Git { source, .. } => source.is_transient() || self.mirror_lacks_revision(),
            _ => false,
        }
    }

    /// Git holds something other than what the store says was published (or
    /// nothing valid): a human must look before anything is served.
    pub fn is_content_mismatch(&self) -> bool {
        matches!(
            self.cause(),
            ResolveError::Missing { .. }
                | ResolveError::DigestMismatch { .. }
                | ResolveError::NoConfig { .. }
                | ResolveError::UnknownDocument { .. }
        )
    }
}

/// The publication facts of one ring, without its documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    pub ring: String,
    pub ring_index: usize,
    /// The revision of the last change promotion published here.
    pub base_revision: Option<CommitSha>,
    /// The last promotion published here (a rollback too).
    pub promotion: i64,
    pub published_at: DateTime<Utc>,
}

/// Whole snapshots kept; the least recently used is dropped first.
const SNAPSHOTS_KEPT: usize = 4;
/// Path hints kept before they are dropped and relearnt.
const PATH_HINTS_KEPT: usize = 200_000;

type StateHash = [u8; 32];

/// Resolves and caches what each ring should run. Shared by every request.
pub struct DesiredCache {
    mirror: PathBuf,
    /// The keys of the source whose rings the devices run.
    keys: Keys,
    catalog: &'static Catalog,
    /// Per ring: the hash of the stored desired state and its rendering.
    rings: Mutex<HashMap<String, (StateHash, Arc<Rendered>)>>,
    /// Per ring: the hash of a stored state that cannot be served, and why.
    refused: Mutex<HashMap<String, (StateHash, Arc<ResolveError>)>>,
    git: Arc<Mutex<GitCache>>,
    config: Mutex<Option<(CommitSha, Arc<Config>)>>,
    /// One resolution at a time: a burst of polls after a change resolves
    /// the new state once, not once per poll.
    resolving: tokio::sync::Mutex<()>,
    resolutions: AtomicU64,
    documents_read: Arc<AtomicU64>,
}

// Shared by every request handler and the device service.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<DesiredCache>();
};

impl fmt::Debug for DesiredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredCache")
            .field("mirror", &self.mirror)
            .field("resolutions", &self.resolutions())
            .field("documents_read", &self.documents_read())
            .finish_non_exhaustive()
    }
}

impl DesiredCache {
    pub fn new(mirror: PathBuf, catalog: &'static Catalog) -> Self {
        DesiredCache {
            mirror,
            keys: Keys::default(),
            catalog,
            rings: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            git: Arc::new(Mutex::new(GitCache::default())),
            config: Mutex::new(None),
            resolving: tokio::sync::Mutex::new(()),
            resolutions: AtomicU64::new(0),
            documents_read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many times a ring's stored state was resolved (not served from
    /// the cache).
    pub fn resolutions(&self) -> u64 {
        self.resolutions.load(Ordering::Relaxed)
    }

    /// How many documents were parsed out of git for resolutions (a whole
    /// snapshot counts every document it parsed).
    pub fn documents_read(&self) -> u64 {
        self.documents_read.load(Ordering::Relaxed)
    }

    /// The ring's resolved desired state, or None when nothing was published to it.
    pub async fn ring(&self, store: &dyn Store, ring: &str) -> Result<Option<Arc<Rendered>>, ResolveError> {
        match store.kv_get(&self.keys.desired(ring)).await? {
            Some(value) => self.rendered(store, ring, value).await.map(Some),
            None => {
                lock(&self.rings).remove(ring);
                lock(&self.refused).remove(ring);
                Ok(None)
            }
        }
    }

    /// Every published ring, in ring_index order (then by name).
    pub async fn all(&self, store: &dyn Store) -> Result<Vec<Arc<Rendered>>, ResolveError> {
        let prefix = self.keys.desired_prefix();
        let rows = store.kv_prefix(&prefix).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut names = HashSet::new();
        for (key, value) in rows {
            let ring = key.strip_prefix(prefix.as_str()).unwrap_or(&key).to_string();
            out.push(self.rendered(store, &ring, value).await?);
            names.insert(ring);
        }
        lock(&self.rings).retain(|ring, _| names.contains(ring));
        lock(&self.refused).retain(|ring, _| names.contains(ring));
        out.sort_by(|a, b| (a.ring.ring_index, &a.ring.ring).cmp(&(b.ring.ring_index, &b.ring.ring)));
        Ok(out)
    }

    /// The publication facts of every ring, in ring_index order (then by name).
    pub async fn published(&self, store: &dyn Store) -> Result<Vec<Published>, ResolveError> {
        let mut out = Vec::new();
        for (key, value) in store.kv_prefix(&self.keys.desired_prefix()).await? {
            let p: Published =
                serde_json::from_value(value).map_err(|reason| ResolveError::CorruptDesired { key, reason })?;
            out.push(p);
        }
        out.sort_by(|a, b| (a.ring_index, &a.ring).cmp(&(b.ring_index, &b.ring)));
        Ok(out)
    }

    /// The tollgate.yaml in force: the config at ring 0's (lowest
    /// ring_index) `base_revision`; if nothing was ever published, the
    /// config at the stored source tip (kv `source/tip`); None if neither
    /// exists. Cached by revision.
    pub async fn config(&self, store: &dyn Store) -> Result<Option<(CommitSha, Arc<Config>)>, ResolveError> {
        let Some(revision) = self.config_revision(store).await? else {
            return Ok(None);
        };
        if let Some((rev, config)) = lock(&self.config).as_ref() {
            if *rev == revision {
                return Ok(Some((rev.clone(), config.clone())));
            }
        }
        let (mirror, catalog, git) = (self.mirror.clone(), self.catalog, self.git.clone());
        let rev = revision.clone();
        let config = tokio::task::spawn_blocking(move || read_config(&mirror, catalog, &git, &rev))
            .await
            .map_err(|e| ResolveError::Join(e.to_string()))??;
        let config = Arc::new(config);
        *lock(&self.config) = Some((revision.clone(), config.clone()));
        Ok(Some((revision, config)))
    }

    /// The first ring's base revision (the latest published, should a
    /// renamed ring have left an older one at the same index), else the tip.
    async fn config_revision(&self, store: &dyn Store) -> Result<Option<CommitSha>, ResolveError> {
        let best = self
            .published(store)
            .await?
            .into_iter()
            .filter(|p| p.base_revision.is_some())
            .min_by_key(|p| (p.ring_index, Reverse(p.published_at)));
        if let Some(p) = best {
            return Ok(p.base_revision);
        }
        let key = self.keys.tip();
        match store.kv_get(&key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v).map_err(|reason| ResolveError::CorruptState { key, reason }),
        }
    }

    /// What an earlier resolution of the same stored state gave, if any.
    fn cached(&self, ring: &str, hash: &StateHash) -> Option<Result<Arc<Rendered>, ResolveError>> {
        if let Some((_, r)) = lock(&self.rings).get(ring).filter(|(h, _)| h == hash) {
            return Some(Ok(r.clone()));
        }
        let refused = lock(&self.refused);
        let (_, e) = refused.get(ring).filter(|(h, _)| h == hash)?;
        Some(Err(ResolveError::Refused(e.clone())))
    }

    async fn rendered(&self, store: &dyn Store, ring: &str, value: Value) -> Result<Arc<Rendered>, ResolveError> {
        let hash: StateHash = Sha256::digest(serde_json::to_vec(&value).expect("a JSON value serialises")).into();
        if let Some(hit) = self.cached(ring, &hash) {
            return hit;
        }
        let _one = self.resolving.lock().await;
        // Another request may have resolved this very state meanwhile.
        if let Some(hit) = self.cached(ring, &hash) {
            return hit;
        }
        let desired: Desired = serde_json::from_value(value).map_err(|reason| ResolveError::CorruptDesired {
            key: self.keys.desired(ring),
            reason,
        })?;
        let known: Vec<Arc<Rendered>> = lock(&self.rings).values().map(|(_, r)| r.clone()).collect();
        let resolved = match self.resolve(store, &desired, &known).await {
            Ok(resolved) => resolved,
            Err(e) if e.is_content_mismatch() => {
                // Git does not change under a revision: this state stays refused.
                tracing::error!(ring, error = %e, "the published desired state cannot be served");
                let e = Arc::new(e);
                lock(&self.refused).insert(ring.to_string(), (hash, e.clone()));
                return Err(ResolveError::Refused(e));
            }
            Err(e) => return Err(e),
        };
        let rendered = Arc::new(render(resolved, &desired.pins));
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        lock(&self.refused).remove(ring);
        lock(&self.rings).insert(ring.to_string(), (hash, rendered.clone()));
        Ok(rendered)
    }

    /// Resolves `desired`, reusing documents the `known` renderings hold.
    async fn resolve(
        &self,
        store: &dyn Store,
        desired: &Desired,
        known: &[Arc<Rendered>],
    ) -> Result<ResolvedRing, ResolveError> {
        let ring = desired.ring.as_str();
        let mut known_baselines: HashMap<(&str, &CommitSha, &Digest), &ResolvedBaseline> = HashMap::new();
        let mut known_exceptions: HashMap<(&str, &CommitSha, &Digest), &ResolvedException> = HashMap::new();
        for r in known {
            for b in &r.ring.baselines {
                known_baselines.insert((&b.name, &b.revision, &b.digest), b);
            }
            for e in &r.ring.exceptions {
                known_exceptions.insert((&e.name, &e.revision, &e.digest), e);
            }
        }

        // What must be read from git, by revision.
        let mut wanted: BTreeMap<CommitSha, BTreeSet<DocRef>> = BTreeMap::new();
        let mut docs = Vec::with_capacity(desired.documents.len());
        for (key, doc) in &desired.documents {
            let Some(r) = DocRef::parse(key) else {
                if key.starts_with("governance/") {
                    continue; // devices run baselines and exceptions only
                }
                return Err(ResolveError::UnknownDocument {
                    ring: ring.into(),
                    key: key.clone(),
                });
            };
            let id = (r.name.as_str(), &doc.revision, &doc.digest);
            let reused = match r.kind {
                Kind::Baseline => known_baselines.contains_key(&id),
                Kind::Exception => known_exceptions.contains_key(&id),
            };
            if !reused {
                wanted.entry(doc.revision.clone()).or_default().insert(r.clone());
            }
            docs.push((r, doc));
        }
        let mut read = if wanted.is_empty() {
            ReadDocs::default()
        } else {
            let (mirror, catalog, git) = (self.mirror.clone(), self.catalog, self.git.clone());
            let counter = self.documents_read.clone();
            tokio::task::spawn_blocking(move || read_documents(&mirror, catalog, &git, wanted, &counter))
                .await
                .map_err(|e| ResolveError::Join(e.to_string()))??
        };

        let mut tiers = Tiers::default();
        let mut baselines = Vec::new();
        let mut exceptions = Vec::new();
        for (r, doc) in docs {
            let id = (r.name.as_str(), &doc.revision, &doc.digest);
            match r.kind {
                Kind::Baseline => {
                    // A reused document keeps its tier if the same promotion published it.
                    let (mut b, tier) = match known_baselines.get(&id) {
                        Some(k) => ((*k).clone(), (k.promotion == doc.promotion).then_some(k.tier)),
                        None => {
                            let b = read.take(ring, &r, &doc.revision)?.baseline();
                            check_digest(ring, &r, &doc.revision, &doc.digest, &b.digest)?;
                            let b = ResolvedBaseline {
                                name: b.doc.name,
                                revision: doc.revision.clone(),
                                digest: b.digest,
                                promotion: doc.promotion,
                                tier: 0,
                                platform: b.doc.platform,
                                priority: b.doc.priority,
                                owners: b.doc.owners,
                                target_groups: b.doc.target_groups,
                                settings: b.doc.settings,
                            };
                            (b, None)
                        }
                    };
                    b.promotion = doc.promotion;
                    b.tier = match tier {
                        Some(t) => t,
                        None => tiers.tier(store, doc.promotion, &r.key()).await?,
                    };
                    baselines.push(b);
                }
                Kind::Exception => {
                    let e = match known_exceptions.get(&id) {
                        Some(e) => (*e).clone(),
                        None => {
                            let e = read.take(ring, &r, &doc.revision)?.exception();
                            check_digest(ring, &r, &doc.revision, &doc.digest, &e.digest)?;
                            ResolvedException {
                                name: e.doc.name,
                                revision: doc.revision.clone(),
                                digest: e.digest,
                                baseline: e.doc.baseline,
                                settings: e.doc.settings,
                                scope: ExceptionScope::from(&e.doc.scope),
                                reason: e.doc.reason,
                                expires: e.doc.expires,
                            }
                        }
                    };
                    exceptions.push(e);
                }
            }
        }
        // Document keys are `kind/name`, so both lists are in name order already.
        Ok(ResolvedRing {
            ring: desired.ring.clone(),
            ring_index: desired.ring_index,
            published_at: desired.published_at,
            promotion: desired.promotion,
            base_revision: desired.base_revision.clone(),
            baselines,
            exceptions,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps are caches: a panic elsewhere cannot leave them
    // inconsistent in a way that serves wrong content (entries are replaced
    // whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_digest(
    ring: &str,
    doc: &DocRef,
    revision: &CommitSha,
    published: &Digest,
    found: &Digest,
) -> Result<(), ResolveError> {
    if published == found {
        return Ok(());
    }
    Err(ResolveError::DigestMismatch {
        ring: ring.into(),
        document: doc.key(),
        revision: revision.clone(),
        published: published.clone(),
        found: found.clone(),
    })
}

fn render(ring: ResolvedRing, pins: &BTreeMap<String, Pin>) -> Rendered {
    // `Value` objects keep their keys sorted, so equal state gives equal bytes.
    let mut value = serde_json::to_value(&ring).expect("a resolved ring serialises");
    value["pins"] = serde_json::to_value(pins).expect("pins serialise");
    let body = serde_json::to_vec(&value).expect("a JSON value serialises");
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
    Rendered {
        ring: Arc::new(ring),
        etag,
        body: Bytes::from(body),
    }
}

/// Tiers of the changes of the promotions that published documents, read
/// once per promotion.
#[derive(Default)]
struct Tiers(HashMap<i64, HashMap<String, u8>>);

impl Tiers {
    async fn tier(&mut self, store: &dyn Store, promotion: i64, key: &str) -> Result<u8, ResolveError> {
        if promotion <= 0 {
            return Ok(0); // adopted: no promotion published it
        }
        let tiers = match self.0.entry(promotion) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(match store.promotion(promotion).await? {
                Some(rec) => change_tiers(promotion, &rec.body)?,
                None => HashMap::new(),
            }),
        };
        Ok(tiers.get(key).copied().unwrap_or(0))
    }
}

/// `{"promotion": {"changes": [{"key", "tier", ..}]}, ..}` of a stored promotion.
fn change_tiers(id: i64, body: &Value) -> Result<HashMap<String, u8>, ResolveError> {
    let corrupt = |reason: &str| ResolveError::CorruptPromotion {
        id,
        reason: reason.to_string(),
    };
    let changes = body["promotion"]["changes"]
        .as_array()
        .ok_or_else(|| corrupt("no promotion.changes list"))?;
    changes
        .iter()
        .map(|c| {
            let key = c["key"].as_str().ok_or_else(|| corrupt("a change without a key"))?;
            let tier = c["tier"]
                .as_u64()
                .and_then(|t| u8::try_from(t).ok())
                .ok_or_else(|| corrupt("a change without a tier"))?;
            Ok((key.to_string(), tier))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Baseline,
    Exception,
}

/// A document of a desired state, by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct DocRef {
    kind: Kind,
    name: String,
}

impl DocRef {
    /// `baseline/NAME` or `exception/NAME`; None for anything else.
    fn parse(key: &str) -> Option<DocRef> {
        let (kind, name) = key.split_once('/')?;
        let kind = match kind {
            "baseline" => Kind::Baseline,
            "exception" => Kind::Exception,
            _ => return None,
        };
        Some(DocRef {
            kind,
            name: name.to_string(),
        })
    }

    fn key(&self) -> String {
        match self.kind {
            Kind::Baseline => format!("baseline/{}", self.name),
            Kind::Exception => format!("exception/{}", self.name),
        }
    }
}

/// A document as git holds it at one revision.
enum Content {
    Baseline(Parsed<Baseline>),
    Exception(Parsed<Exception>),
}

struct Parsed<T> {
    doc: T,
    digest: Digest,
}

impl Content {
    fn baseline(self) -> Parsed<Baseline> {
        match self {
            Content::Baseline(b) => b,
            Content::Exception(_) => unreachable!("taken by a baseline reference"),
        }
    }

    fn exception(self) -> Parsed<Exception> {
        match self {
            Content::Exception(e) => e,
            Content::Baseline(_) => unreachable!("taken by an exception reference"),
        }
    }
}

/// What [`read_documents`] found.
#[derive(Default)]
struct ReadDocs {
    found: HashMap<(CommitSha, DocRef), Content>,
    /// The first format error of a revision read whole, to explain a miss.
    first_error: HashMap<CommitSha, String>,
}

impl ReadDocs {
    /// The document read for `r` at `revision` (a ring holds each key once).
    fn take(&mut self, ring: &str, r: &DocRef, revision: &CommitSha) -> Result<Content, ResolveError> {
        self.found
            .remove(&(revision.clone(), r.clone()))
            .ok_or_else(|| ResolveError::Missing {
                ring: ring.into(),
                document: r.key(),
                revision: revision.clone(),
                first_error: self.first_error.get(revision).cloned(),
            })
    }
}

/// Parsed revisions and where documents live, shared by resolutions.
#[derive(Default)]
struct GitCache {
    /// Whole snapshots, most recently used last.
    snapshots: VecDeque<(CommitSha, Arc<Snapshot>)>,
    /// Where each document was last seen: where to look first at another
    /// revision.
    paths: HashMap<DocRef, RepoPath>,
}

impl GitCache {
    fn snapshot(&mut self, rev: &CommitSha) -> Option<Arc<Snapshot>> {
        let i = self.snapshots.iter().position(|(r, _)| r == rev)?;
        let entry = self.snapshots.remove(i).expect("position is in range");
        let snap = entry.1.clone();
        self.snapshots.push_back(entry);
        Some(snap)
    }

    fn keep(&mut self, rev: CommitSha, snap: Arc<Snapshot>) {
        self.learn_paths(&snap);
        self.snapshots.retain(|(r, _)| *r != rev);
        self.snapshots.push_back((rev, snap));
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.pop_front();
        }
    }

    fn learn_paths(&mut self, snap: &Snapshot) {
        if self.paths.len() > PATH_HINTS_KEPT {
            self.paths.clear();
        }
        for (name, b) in &snap.baselines {
            self.paths.insert(
                DocRef {
                    kind: Kind::Baseline,
                    name: name.clone(),
                },
                b.path.clone(),
            );
        }
        for (name, e) in &snap.exceptions {
            self.paths.insert(
                DocRef {
                    kind: Kind::Exception,
                    name: name.clone(),
                },
                e.path.clone(),
            );
        }
    }
}

/// Takes the `wanted` documents out of `snap` into `out`; returns those it lacks.
fn take_from(
    snap: &Snapshot,
    rev: &CommitSha,
    wanted: BTreeSet<DocRef>,
    out: &mut HashMap<(CommitSha, DocRef), Content>,
) -> BTreeSet<DocRef> {
    let mut missing = BTreeSet::new();
    for r in wanted {
        let content = match r.kind {
            Kind::Baseline => snap.baselines.get(&r.name).map(|b| {
                Content::Baseline(Parsed {
                    doc: b.doc.clone(),
                    digest: b.digest.clone(),
                })
            }),
            Kind::Exception => snap.exceptions.get(&r.name).map(|e| {
                Content::Exception(Parsed {
                    doc: e.doc.clone(),
                    digest: e.digest.clone(),
                })
            }),
        };
        match content {
            Some(c) => {
                out.insert((rev.clone(), r), c);
            }
            None => {
                missing.insert(r);
            }
        }
    }
    missing
}

/// Reads the `wanted` documents of each revision from the mirror. Blocking.
///
/// The revision holding most of them goes first and is read whole, which
/// teaches where every document lives; at later revisions the documents are
/// read by those paths alone, and a revision is read whole only when one of
/// its documents is not where it was seen (moved, renamed, never seen).
fn read_documents(
    mirror: &Path,
    catalog: &'static Catalog,
    cache: &Mutex<GitCache>,
    wanted: BTreeMap<CommitSha, BTreeSet<DocRef>>,
    counter: &AtomicU64,
) -> Result<ReadDocs, ResolveError> {
    let mut out = ReadDocs::default();
    let mut repo: Option<GitRepo> = None;
    let mut revisions: Vec<(CommitSha, BTreeSet<DocRef>)> = wanted.into_iter().collect();
    revisions.sort_by_key(|(_, docs)| Reverse(docs.len()));
    for (rev, docs) in revisions {
        let cached = lock(cache).snapshot(&rev);
        if let Some(snap) = cached {
            take_from(&snap, &rev, docs, &mut out.found);
            continue;
        }
        let git_error = |source| ResolveError::Git {
            revision: rev.clone(),
            source,
        };
        if repo.is_none() {
            repo = Some(GitRepo::open(mirror).map_err(git_error)?);
        }
        let git = repo.as_ref().expect("opened above");
        let hints: Option<Vec<RepoPath>> = {
            let c = lock(cache);
            docs.iter().map(|d| c.paths.get(d).cloned()).collect()
        };
        let mut left = docs;
        if let Some(paths) = hints {
            let files = git.read_paths(&rev, &paths).map_err(git_error)?;
            let (snap, _) = Snapshot::build(&files, catalog);
            counter.fetch_add((snap.baselines.len() + snap.exceptions.len()) as u64, Ordering::Relaxed);
            left = take_from(&snap, &rev, left, &mut out.found);
        }
        if !left.is_empty() {
            let files = git.read_governed(&rev).map_err(git_error)?;
            let (snap, errors) = Snapshot::build(&files, catalog);
            counter.fetch_add((snap.baselines.len() + snap.exceptions.len()) as u64, Ordering::Relaxed);
            if let Some(e) = errors.first() {
                out.first_error.insert(rev.clone(), e.to_string());
            }
            take_from(&snap, &rev, left, &mut out.found);
            lock(cache).keep(rev, Arc::new(snap));
        }
    }
    Ok(out)
}

/// The repo config at `rev`. Blocking.
fn read_config(
    mirror: &Path,
    catalog: &'static Catalog,
    cache: &Mutex<GitCache>,
    rev: &CommitSha,
) -> Result<Config, ResolveError> {
    let cached = lock(cache).snapshot(rev);
    let (config, first_error) = match cached {
        Some(snap) => (snap.config.as_ref().map(|c| c.doc.clone()), None),
        None => {
            let git_error = |source| ResolveError::Git {
                revision: rev.clone(),
                source,
            };
            let git = GitRepo::open(mirror).map_err(git_error)?;
            let files = git
                .read_roots(rev, &["tollgate.yaml", "tollgate.yml"])
                .map_err(git_error)?;
            let (snap, errors) = Snapshot::build(&files, catalog);
            (snap.config.map(|c| c.doc), errors.first().map(ToString::to_string))
        }
    };
    config.ok_or_else(|| ResolveError::NoConfig {
        revision: rev.clone(),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use tollgate_core::desired::DesiredDoc;
    use tollgate_git::sample::{write_sample_repo, SampleCommit};
    use tollgate_store::{PromotionWrite, Transition};

    const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Config
metadata: {name: acme}
rings:
  - {name: canary, selector: {groups: [mdm-canary]}, soak: 1h, gate: {min_applied: 0.9, max_noncompliant_increase: 0.02}}
  - {name: broad, selector: {all: true}}
approvers:
  mdm-ios: {users: [ios1]}
  mdm-macos: {users: [mac1]}
"#;

    const IOS: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata: {name: corp-ios, owners: [mdm-ios]}
spec:
  platform: ios
  priority: 100
  targets: {groups: [all-corporate-iphones, mdm-canary]}
  settings:
    passcode.required: true
    passcode.min_length: 8
    os.min_version: "17.4"
    apps.blocked: [com.dropbox.Dropbox, com.example.filesharing]
"#;

    const MACOS: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Baseline
metadata: {name: corp-macos, owners: [mdm-macos]}
spec:
  platform: macos
  targets: {groups: [all-corporate-macs, legal-forensics]}
  settings:
    encryption.required: true
    usb.storage_blocked: true
"#;

    const EXCEPTION: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Exception
metadata: {name: legal-usb-q4}
spec:
  baseline: corp-macos
  settings: [usb.storage_blocked]
  scope: {groups: [legal-forensics]}
  reason: Forensic imaging of seized laptops
  expires: 2026-12-31T00:00:00Z
"#;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
    }

    /// Writes `history` as a repo in `dir` (read directly as the mirror).
    fn repo(dir: &Path, history: &[SampleCommit]) -> Vec<CommitSha> {
        write_sample_repo(dir, history)
            .unwrap()
            .into_iter()
            .map(CommitSha::new)
            .collect()
    }

    /// The digests of every document at `rev`, by document key.
    fn digests(dir: &Path, rev: &CommitSha) -> BTreeMap<String, Digest> {
        let files = GitRepo::open(dir).unwrap().read_governed(rev).unwrap();
        let (snap, errors) = Snapshot::build(&files, Catalog::builtin());
        assert!(errors.is_empty(), "{} errors, the first: {}", errors.len(), errors[0]);
        let baselines = snap
            .baselines
            .iter()
            .map(|(n, b)| (format!("baseline/{n}"), b.digest.clone()));
        let exceptions = snap
            .exceptions
            .iter()
            .map(|(n, e)| (format!("exception/{n}"), e.digest.clone()));
        baselines.chain(exceptions).collect()
    }

    async fn store() -> Arc<dyn Store> {
        tollgate_store::open("sqlite::memory:").await.unwrap()
    }

    /// Stores a promotion whose changes have these tiers; returns its id.
    async fn promotion(store: &dyn Store, rev: &CommitSha, tiers: &[(&str, u8)]) -> i64 {
        let id = store.reserve_promotion_id().await.unwrap();
        let changes: Vec<Value> = tiers.iter().map(|(k, t)| json!({"key": k, "tier": t})).collect();
        let body = json!({"promotion": {"id": id, "changes": changes}, "members": {}});
        let t = Transition {
            promotions: vec![PromotionWrite::Insert {
                id: Some(id),
                source: tollgate_store::DEFAULT_SOURCE.into(),
                revision: rev.to_string(),
                kind: "change".into(),
                phase: "complete".into(),
                body,
            }],
            ..Default::default()
        };
        store.commit(t).await.unwrap();
        id
    }

    fn desired(ring: &str, index: usize, promotion: i64, docs: &[(&str, &CommitSha, &Digest, i64)]) -> Desired {
        let mut d = Desired::empty(ring, index, at());
        for (key, rev, digest, by) in docs {
            d.documents.insert(
                key.to_string(),
                DesiredDoc {
                    revision: (*rev).clone(),
                    digest: (*digest).clone(),
                    promotion: *by,
                },
            );
        }
        d.base_revision = docs.first().map(|(_, rev, _, _)| (*rev).clone());
        d.promotion = promotion;
        d
    }

    async fn publish(store: &dyn Store, d: &Desired) {
        let t = Transition {
            kv: vec![(Keys::default().desired(&d.ring), Some(serde_json::to_value(d).unwrap()))],
            ..Default::default()
        };
        store.commit(t).await.unwrap();
    }

    fn first_commit(files: &'static [(&'static str, Option<&'static str>)]) -> [SampleCommit<'static>; 1] {
        [SampleCommit {
            author: "priya",
            message: "initial",
            files,
        }]
    }

    #[tokio::test]
    async fn a_published_ring_resolves_to_its_documents_and_settings() {
        let dir = tempfile::TempDir::new().unwrap();
        let revs = repo(
            dir.path(),
            &first_commit(&[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
                ("baselines/macos/corp-macos.yaml", Some(MACOS)),
                ("exceptions/legal-usb-q4.yaml", Some(EXCEPTION)),
            ]),
        );
        let rev = &revs[0];
        let dg = digests(dir.path(), rev);
        let store = store().await;
        let id = promotion(
            store.as_ref(),
            rev,
            &[
                ("governance/tollgate.yaml", 3),
                ("baseline/corp-ios", 2),
                ("baseline/corp-macos", 1),
            ],
        )
        .await;
        let mut d = desired(
            "canary",
            0,
            id,
            &[
                ("baseline/corp-ios", rev, &dg["baseline/corp-ios"], id),
                ("baseline/corp-macos", rev, &dg["baseline/corp-macos"], id),
                ("exception/legal-usb-q4", rev, &dg["exception/legal-usb-q4"], id),
                ("governance/tollgate.yaml", rev, &dg["baseline/corp-ios"], id),
            ],
        );
        d.pins.insert(
            "baseline/corp-ios".into(),
            Pin {
                bad_digest: None,
                bad_revision: None,
                rollback: 9,
            },
        );
        publish(store.as_ref(), &d).await;

        let cache = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        assert!(cache.ring(store.as_ref(), "broad").await.unwrap().is_none());
        let r = cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        let ring = &r.ring;
        assert_eq!((ring.ring.as_str(), ring.ring_index, ring.promotion), ("canary", 0, id));
        assert_eq!(ring.base_revision.as_ref(), Some(rev));
        let names: Vec<&str> = ring.baselines.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["corp-ios", "corp-macos"],
            "governance documents are not for devices"
        );
        let ios = ring.baseline("corp-ios").unwrap();
        assert_eq!(
            (&ios.revision, &ios.digest, ios.promotion, ios.tier),
            (rev, &dg["baseline/corp-ios"], id, 2)
        );
        assert_eq!(ios.platform, tollgate_core::ids::Platform::Ios);
        assert_eq!(ios.priority, 100);
        assert_eq!(ios.owners, ["mdm-ios"]);
        assert_eq!(ios.target_groups, ["all-corporate-iphones", "mdm-canary"]);
        // The settings are the YAML's, value for value.
        let yaml: serde_norway::Value = serde_norway::from_str(IOS).unwrap();
        let expected: BTreeMap<String, Value> =
            serde_json::from_value(serde_json::to_value(&yaml["spec"]["settings"]).unwrap()).unwrap();
        assert_eq!(ios.settings, expected);
        assert_eq!(ring.baseline("corp-macos").unwrap().tier, 1);
        let ex = ring.exception("legal-usb-q4").unwrap();
        assert_eq!(ex.baseline, "corp-macos");
        assert_eq!(ex.settings, ["usb.storage_blocked"]);
        assert_eq!(ex.scope, ExceptionScope::Groups(vec!["legal-forensics".into()]));
        assert_eq!(ex.expires, Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap());

        // The body is the ring plus its pins; the tag is its hash.
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["pins"]["baseline/corp-ios"]["rollback"], 9);
        assert_eq!(body["baselines"][0]["settings"]["passcode.min_length"], 8);
        assert_eq!(body["exceptions"][0]["scope"], json!({"groups": ["legal-forensics"]}));
        assert_eq!(r.etag, format!("\"{}\"", hex::encode(Sha256::digest(&r.body))));

        let all = cache.all(store.as_ref()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(Arc::ptr_eq(&all[0], &r), "served from the cache");
    }

    #[tokio::test]
    async fn content_whose_digest_was_not_published_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let revs = repo(
            dir.path(),
            &first_commit(&[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
                ("baselines/macos/corp-macos.yaml", Some(MACOS)),
            ]),
        );
        let rev = &revs[0];
        let dg = digests(dir.path(), rev);
        let store = store().await;
        let approved = Digest::from_canonical_bytes(b"what the approvers saw");
        let d = desired(
            "canary",
            0,
            0,
            &[
                ("baseline/corp-ios", rev, &approved, 0),
                ("baseline/corp-macos", rev, &dg["baseline/corp-macos"], 0),
            ],
        );
        publish(store.as_ref(), &d).await;
        let cache = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        let e = cache.ring(store.as_ref(), "canary").await.unwrap_err();
        assert!(matches!(e.cause(), ResolveError::DigestMismatch { .. }), "{e:?}");
        assert!(e.is_content_mismatch() && !e.is_transient());
        // The refusal is kept for this state: polling again reads nothing.
        let read = cache.documents_read();
        let again = cache.ring(store.as_ref(), "canary").await.unwrap_err();
        assert_eq!((again.to_string(), cache.documents_read()), (e.to_string(), read));
        let message = e.to_string();
        for part in [
            "\"canary\"",
            "baseline/corp-ios",
            approved.as_str(),
            dg["baseline/corp-ios"].as_str(),
            rev.as_str(),
        ] {
            assert!(message.contains(part), "{part} missing from: {message}");
        }

        // A document the revision does not hold is refused too.
        let d = desired("canary", 0, 0, &[("baseline/corp-android", rev, &approved, 0)]);
        publish(store.as_ref(), &d).await;
        let e = cache.ring(store.as_ref(), "canary").await.unwrap_err();
        assert!(matches!(e.cause(), ResolveError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("baseline/corp-android"), "{e}");
        assert_eq!(cache.resolutions(), 0, "nothing failed was cached");
    }

    #[tokio::test]
    async fn an_unchanged_ring_is_served_without_reading_git() {
        let dir = tempfile::TempDir::new().unwrap();
        let mirror = dir.path().join("mirror");
        let revs = repo(
            &mirror,
            &first_commit(&[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
            ]),
        );
        let rev = &revs[0];
        let dg = digests(&mirror, rev);
        let store = store().await;
        let d = desired(
            "canary",
            0,
            0,
            &[("baseline/corp-ios", rev, &dg["baseline/corp-ios"], 0)],
        );
        publish(store.as_ref(), &d).await;
        let cache = DesiredCache::new(mirror.clone(), Catalog::builtin());
        let first = cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        assert_eq!((cache.resolutions(), cache.documents_read()), (1, 1));

        // Without the mirror, the unchanged ring is still served, from memory.
        std::fs::remove_dir_all(&mirror).unwrap();
        for _ in 0..3 {
            let again = cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(cache.resolutions(), 1);

        // A second ring with the same documents reuses them: no git either.
        let broad = desired(
            "broad",
            1,
            0,
            &[("baseline/corp-ios", rev, &dg["baseline/corp-ios"], 0)],
        );
        publish(store.as_ref(), &broad).await;
        let b = cache.ring(store.as_ref(), "broad").await.unwrap().unwrap();
        assert_eq!(b.ring.baselines, first.ring.baselines);
        assert_ne!(b.etag, first.etag, "another ring, another body");
        assert_eq!((cache.resolutions(), cache.documents_read()), (2, 1));

        // A new publication is resolved again: here the mirror is gone, which
        // is reported as such (the next fetch brings it back).
        let mut moved = d.clone();
        moved.promotion = 7;
        moved.published_at = at() + chrono::Duration::hours(1);
        moved.documents.insert(
            "baseline/other".into(),
            DesiredDoc {
                revision: CommitSha::new("1".repeat(40)),
                digest: dg["baseline/corp-ios"].clone(),
                promotion: 7,
            },
        );
        publish(store.as_ref(), &moved).await;
        let e = cache.ring(store.as_ref(), "canary").await.unwrap_err();
        assert!(e.mirror_lacks_revision() && e.is_transient(), "{e:?}");
    }

    #[tokio::test]
    async fn etags_are_stable_for_equal_state_and_change_with_a_publication() {
        let dir = tempfile::TempDir::new().unwrap();
        let revs = repo(
            dir.path(),
            &first_commit(&[
                ("tollgate.yaml", Some(CONFIG)),
                ("baselines/ios/corp-ios.yaml", Some(IOS)),
            ]),
        );
        let rev = &revs[0];
        let dg = digests(dir.path(), rev);
        let store = store().await;
        let d = desired(
            "canary",
            0,
            0,
            &[("baseline/corp-ios", rev, &dg["baseline/corp-ios"], 0)],
        );
        publish(store.as_ref(), &d).await;
        let one = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        let two = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        let a = one.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        let b = two.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        assert_eq!((&a.etag, &a.body), (&b.etag, &b.body), "another process, the same tag");

        let mut later = d.clone();
        later.published_at = at() + chrono::Duration::hours(2);
        later.promotion = 4;
        publish(store.as_ref(), &later).await;
        let c = one.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        assert_ne!(c.etag, a.etag);
        assert_eq!(c.ring.baselines, a.ring.baselines);
    }

    #[tokio::test]
    async fn documents_are_found_at_older_revisions_after_a_move() {
        let dir = tempfile::TempDir::new().unwrap();
        let ios_v2 = IOS.replace("min_length: 8", "min_length: 12");
        let history = [
            SampleCommit {
                author: "priya",
                message: "initial",
                files: &[
                    ("tollgate.yaml", Some(CONFIG)),
                    ("baselines/ios/corp-ios.yaml", Some(IOS)),
                    ("baselines/macos/corp-macos.yaml", Some(MACOS)),
                ],
            },
            SampleCommit {
                author: "sam",
                message: "move and tighten",
                files: &[
                    ("baselines/ios/corp-ios.yaml", None),
                    ("baselines/apple/iphone.yaml", Some(&ios_v2)),
                ],
            },
        ];
        let revs = repo(dir.path(), &history);
        let (old, new) = (&revs[0], &revs[1]);
        let (dg_old, dg_new) = (digests(dir.path(), old), digests(dir.path(), new));
        let store = store().await;
        let cache = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());

        // Most documents at the new revision, one at the old: the new one is
        // read whole, the old one by path first, then whole (it moved).
        let d = desired(
            "canary",
            0,
            0,
            &[
                ("baseline/corp-ios", old, &dg_old["baseline/corp-ios"], 0),
                ("baseline/corp-macos", new, &dg_new["baseline/corp-macos"], 0),
            ],
        );
        publish(store.as_ref(), &d).await;
        let r = cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        assert_eq!(r.ring.baseline("corp-ios").unwrap().settings["passcode.min_length"], 8);
        assert_eq!(&r.ring.baseline("corp-ios").unwrap().revision, old);

        // And the moved document at the new revision, by its new path.
        let d = desired(
            "broad",
            1,
            0,
            &[
                ("baseline/corp-ios", new, &dg_new["baseline/corp-ios"], 0),
                ("baseline/corp-macos", old, &dg_old["baseline/corp-macos"], 0),
            ],
        );
        publish(store.as_ref(), &d).await;
        let r = cache.ring(store.as_ref(), "broad").await.unwrap().unwrap();
        assert_eq!(r.ring.baseline("corp-ios").unwrap().settings["passcode.min_length"], 12);
    }

    #[tokio::test]
    async fn the_config_in_force_is_the_first_rings_then_the_tips() {
        let dir = tempfile::TempDir::new().unwrap();
        let narrower = CONFIG.replace("groups: [mdm-canary]", "groups: [mdm-canary, mdm-early]");
        let history = [
            SampleCommit {
                author: "priya",
                message: "initial",
                files: &[
                    ("tollgate.yaml", Some(CONFIG)),
                    ("baselines/ios/corp-ios.yaml", Some(IOS)),
                ],
            },
            SampleCommit {
                author: "sam",
                message: "another canary group",
                files: &[("tollgate.yaml", Some(&narrower))],
            },
        ];
        let revs = repo(dir.path(), &history);
        let store = store().await;
        let cache = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        assert!(
            cache.config(store.as_ref()).await.unwrap().is_none(),
            "nothing known yet"
        );

        // Before anything is published: the source tip.
        let t = Transition {
            kv: vec![(Keys::default().tip(), Some(json!(revs[1].as_str())))],
            ..Default::default()
        };
        store.commit(t).await.unwrap();
        let (rev, config) = cache.config(store.as_ref()).await.unwrap().unwrap();
        assert_eq!(rev, revs[1]);
        assert_eq!(
            config.rings[0].selector,
            tollgate_core::format::RingSelector::Groups(vec!["mdm-canary".into(), "mdm-early".into()])
        );

        // Then the first ring's base revision, whatever the tip.
        let dg = digests(dir.path(), &revs[0]);
        let canary = desired(
            "canary",
            0,
            0,
            &[("baseline/corp-ios", &revs[0], &dg["baseline/corp-ios"], 0)],
        );
        let mut broad = canary.clone();
        broad.ring = "broad".into();
        broad.ring_index = 1;
        broad.base_revision = Some(revs[1].clone());
        publish(store.as_ref(), &canary).await;
        publish(store.as_ref(), &broad).await;
        let (rev, config) = cache.config(store.as_ref()).await.unwrap().unwrap();
        assert_eq!(rev, revs[0]);
        assert_eq!(
            config.rings[0].selector,
            tollgate_core::format::RingSelector::Groups(vec!["mdm-canary".into()])
        );
        assert_eq!(config.rings[0].soak_secs, 3600);
        let (_, again) = cache.config(store.as_ref()).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&config, &again), "cached by revision");

        let published = cache.published(store.as_ref()).await.unwrap();
        let rings: Vec<&str> = published.iter().map(|p| p.ring.as_str()).collect();
        assert_eq!(rings, ["canary", "broad"]);
    }

    fn generated(i: usize, min_length: u32) -> String {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Baseline\nmetadata: {{name: fleet-{i:04}}}\nspec:\n  platform: ios\n  priority: {i}\n  targets: {{groups: [group-{i:04}, mdm-canary]}}\n  settings:\n    passcode.required: true\n    passcode.min_length: {min_length}\n    os.min_version: \"17.4\"\n    apps.blocked: [com.example.a{i}, com.example.b{i}]\n"
        )
    }

    #[tokio::test]
    async fn a_thousand_baselines_resolve_in_well_under_a_second() {
        const N: usize = 1000;
        const CHANGED: usize = 20;
        let dir = tempfile::TempDir::new().unwrap();
        let texts: Vec<(String, String)> = (0..N)
            .map(|i| (format!("baselines/ios/fleet-{i:04}.yaml"), generated(i, 8)))
            .collect();
        let changed: Vec<(String, String)> = (0..CHANGED)
            .map(|i| (format!("baselines/ios/fleet-{i:04}.yaml"), generated(i, 10)))
            .collect();
        let mut first: Vec<(&str, Option<&str>)> = vec![("tollgate.yaml", Some(CONFIG))];
        first.extend(texts.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))));
        let later: Vec<[(&str, Option<&str>); 1]> =
            changed.iter().map(|(p, t)| [(p.as_str(), Some(t.as_str()))]).collect();
        let mut history = vec![SampleCommit {
            author: "priya",
            message: "fleet",
            files: &first,
        }];
        history.extend(later.iter().map(|files| SampleCommit {
            author: "sam",
            message: "tighten one",
            files,
        }));
        let revs = repo(dir.path(), &history);
        let head = digests(dir.path(), revs.last().unwrap());
        // Each changed baseline at the revision that changed it, the rest at the first.
        let mut docs = Vec::new();
        for i in 0..N {
            let key = format!("baseline/fleet-{i:04}");
            let rev = if i < CHANGED { &revs[i + 1] } else { &revs[0] };
            docs.push((key.clone(), rev.clone(), head[&key].clone()));
        }
        let refs: Vec<(&str, &CommitSha, &Digest, i64)> = docs.iter().map(|(k, r, d)| (k.as_str(), r, d, 0)).collect();
        let store = store().await;
        let d = desired("canary", 0, 0, &refs);
        publish(store.as_ref(), &d).await;

        let cache = DesiredCache::new(dir.path().to_path_buf(), Catalog::builtin());
        let started = Instant::now();
        let r = cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        let cold = started.elapsed();
        assert_eq!(r.ring.baselines.len(), N);
        assert_eq!(
            r.ring.baseline("fleet-0003").unwrap().settings["passcode.min_length"],
            10
        );
        assert_eq!(
            r.ring.baseline("fleet-0500").unwrap().settings["passcode.min_length"],
            8
        );
        // One whole revision, then one document by path at each other one.
        assert_eq!(cache.documents_read(), (N + CHANGED) as u64);

        let started = Instant::now();
        for _ in 0..10 {
            cache.ring(store.as_ref(), "canary").await.unwrap().unwrap();
        }
        let poll = started.elapsed() / 10;

        // The next ring gets the same documents: nothing is read again.
        let mut broad = d.clone();
        broad.ring = "broad".into();
        broad.ring_index = 1;
        publish(store.as_ref(), &broad).await;
        let started = Instant::now();
        cache.ring(store.as_ref(), "broad").await.unwrap().unwrap();
        let warm = started.elapsed();
        assert_eq!(cache.documents_read(), (N + CHANGED) as u64);
        eprintln!("1,000 baselines: cold {cold:?}, another ring {warm:?}, unchanged poll {poll:?}");
        // Unoptimised test builds are several times slower than release ones;
        // the bound still catches reading git once per document.
        let limit = if cfg!(debug_assertions) {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(500)
        };
        assert!(cold < limit, "cold resolution took {cold:?}");
        assert!(poll < Duration::from_millis(100), "an unchanged poll took {poll:?}");
    }
}
