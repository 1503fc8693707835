//! The devices service: ingestion, persistence, audit of findings, ring
//! health for the controller's gates, remediation items.
//!
//! The fleet index ([`Fleet`]) lives in memory behind a lock; the store keeps
//! what survives a restart, in its key/value table:
//!
//! | key | value |
//! |-----|-------|
//! | `device/{id}` | the device's latest report, as the device sent it |
//! | `checkin/{id}` | a later check-in time, when the reports since said nothing else new |
//! | `finding/{id}` | the device's open findings (absent when none) |
//! | `fleet/gate/{ring}` | the ring's non-compliant share when last published to |
//! | `fleet/expired/{exception}/{expires}` | that the exception's expiry was audited |
//! | `remediation/{item}` | an open remediation item |
//!
//! A batch of reports is one store transition: the device rows, their
//! findings and the audit events of findings opened and closed commit
//! together, through the audit ledger the controller also writes with, so
//! the audit chain stays one line. The index is updated first and put back if the commit fails, so the
//! devices' resent reports are not mistaken for duplicates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore, SemaphorePermit, TryAcquireError};

use super::resolve::DesiredCache;
use crate::controller::config::ReporterScope;
use crate::controller::RingHealth;
use crate::ledger::Ledger;
use tollgate_core::audit::Action;
use tollgate_core::catalog::Catalog;
use tollgate_core::devices::fleet::{DeviceChange, Finding, Fleet, FleetOptions, GateBaseline, Overdue};
use tollgate_core::devices::report::{read_stored_report, report_json, DeviceReport, ParsedBatch};
use tollgate_core::ids::CommitSha;
use tollgate_core::promotion::GateReading;
use tollgate_store::{JsonText, Store, StoreError, Transition};

/// Devices whose changes go into one store transition during a sweep.
const SWEEP_CHUNK: usize = 2000;

use crate::state::fleet as keys;

/// The fleet index shared with the controller (as its [`RingHealth`]).
pub struct SharedFleet {
    fleet: RwLock<Fleet>,
    store: Arc<dyn Store>,
}

impl SharedFleet {
    pub fn new(options: FleetOptions, store: Arc<dyn Store>) -> Arc<SharedFleet> {
        Arc::new(SharedFleet {
            fleet: RwLock::new(Fleet::new(options)),
            store,
        })
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Fleet> {
        self.fleet.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Fleet> {
        self.fleet.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl RingHealth for SharedFleet {
    fn reading(&self, ring: &str, revision: &CommitSha, since: DateTime<Utc>) -> GateReading {
        let fleet = self.read();
        // Judge only against the state that was published for this soak: an
        // index that has not caught up would measure the previous version.
        match fleet.desired(ring) {
            Some(d) if d.published_at >= since => fleet.reading(ring, revision.as_str(), since),
            _ => GateReading::NoData {
                reason: format!("the device index has not loaded ring {ring:?}'s published state yet"),
            },
        }
    }

    fn published(&self, ring: &str, at: DateTime<Utc>) {
        let Some(baseline) = self.write().published(ring, at) else {
            return;
        };
        let store = self.store.clone();
        let key = format!("{}{ring}", keys::GATE);
        let value = serde_json::to_value(baseline).expect("gate baselines serialise");
        // Best effort: without it a restarted controller estimates the
        // reference from devices not heard from since the promotion.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let t = Transition {
                    kv: vec![(key, Some(value))],
                    ..Default::default()
                };
                if let Err(e) = store.commit(t).await {
                    tracing::warn!(error = %e, "could not persist a gate reference");
                }
            });
        }
    }
}

/// What a batch of reports did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestOutcome {
    pub accepted: usize,
    /// Not newer than what was stored (duplicates, out of order): ignored.
    pub stale: usize,
    pub findings_opened: usize,
    pub findings_closed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("too many report batches in flight; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a blocking task failed: {0}")]
    Join(String),
    #[error("resolving the desired state: {0}")]
    Resolve(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// A remediation item as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediation {
    #[serde(flatten)]
    pub item: Overdue,
    pub opened_at: DateTime<Utc>,
    pub due: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct ExpiredMark {
    ring: String,
    at: DateTime<Utc>,
}

pub struct Devices {
    shared: Arc<SharedFleet>,
    ledger: Arc<Ledger>,
    cache: Arc<DesiredCache>,
    /// One batch at a time goes through the index and the store.
    ingest: Mutex<()>,
    /// Batches admitted (running or queued); beyond it, 429.
    admitted: Semaphore,
    /// Which ring states the index holds, by ring: the resolved value's address.
    loaded: std::sync::Mutex<HashMap<String, usize>>,
    /// Keys of the content tags ([`content_tag`]), random per process: the
    /// tags only live in memory.
    tags: std::hash::RandomState,
    /// `token/ring` of scope rings found missing from the config in force,
    /// each logged once.
    warned_rings: std::sync::Mutex<HashSet<String>>,
}

impl Devices {
    /// Admits this many batches at once (one runs, the rest wait).
    pub const MAX_ADMITTED: usize = 8;

    pub fn new(shared: Arc<SharedFleet>, ledger: Arc<Ledger>, cache: Arc<DesiredCache>) -> Arc<Devices> {
        Arc::new(Devices {
            shared,
            ledger,
            cache,
            ingest: Mutex::new(()),
            admitted: Semaphore::new(Self::MAX_ADMITTED),
            loaded: std::sync::Mutex::new(HashMap::new()),
            tags: std::hash::RandomState::new(),
            warned_rings: std::sync::Mutex::new(HashSet::new()),
        })
    }

    pub fn fleet(&self) -> &Arc<SharedFleet> {
        &self.shared
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.ledger.store()
    }

    /// Loads persisted devices, findings and gate references, then the
    /// desired state. Call once at start, before serving.
    pub async fn load(&self) -> Result<usize, DevicesError> {
        let store = self.store().clone();
        self.refresh().await?;
        let findings: HashMap<String, Vec<Finding>> = store
            .kv_prefix(keys::FINDING)
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                let id = k.strip_prefix(keys::FINDING)?.to_string();
                // Findings are derived from the device's report again when it
                // next reports; an unreadable one is skipped, loudly.
                match serde_json::from_value(v) {
                    Ok(f) => Some((id, f)),
                    Err(why) => {
                        tracing::warn!(key = k, %why, "skipping unreadable stored findings until the device reports");
                        None
                    }
                }
            })
            .collect();
        let rows = store.kv_prefix_text(keys::DEVICE).await?;
        let checkins: HashMap<String, DateTime<Utc>> = store
            .kv_prefix(keys::CHECKIN)
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                let id = k.strip_prefix(keys::CHECKIN)?.to_string();
                match serde_json::from_value(v) {
                    Ok(at) => Some((id, at)),
                    Err(why) => {
                        tracing::warn!(key = k, %why, "skipping an unreadable stored check-in time");
                        None
                    }
                }
            })
            .collect();
        let gates = store.kv_prefix(keys::GATE).await?;
        let reports = tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .filter_map(|(key, text)| match read_stored_report(&text, Catalog::builtin()) {
                    Ok(report) => Some((key, report)),
                    Err(why) => {
                        tracing::warn!(key, %why, "skipping an unreadable stored device report");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| DevicesError::Join(e.to_string()))?;
        let mut fleet = self.shared.write();
        let mut loaded = 0;
        for (key, mut report) in reports {
            let id = key.strip_prefix(keys::DEVICE).unwrap_or(&key);
            if let Some(&at) = checkins.get(id) {
                report.checked_in_at = report.checked_in_at.max(at);
            }
            fleet.restore(&report, findings.get(id).map(Vec::as_slice).unwrap_or(&[]));
            loaded += 1;
        }
        // A gate reference is what a ring's gate compares against: an
        // unreadable one is an error, never a gate without its reference.
        for (key, value) in gates {
            let Some(ring) = key.strip_prefix(keys::GATE).map(str::to_string) else {
                continue;
            };
            let b: GateBaseline = crate::state::decode(key, value)?;
            fleet.set_gate_baseline(&ring, b);
        }
        Ok(loaded)
    }

    /// Brings the index's rings and desired states up to what is published.
    /// Returns whether anything changed.
    pub async fn refresh(&self) -> Result<bool, DevicesError> {
        let store = self.store().clone();
        let resolve = |e: super::resolve::ResolveError| DevicesError::Resolve(e.to_string());
        let config = self.cache.config(&*store).await.map_err(resolve)?;
        let rendered = self.cache.all(&*store).await.map_err(resolve)?;
        let mut changed = false;
        let mut fleet = self.shared.write();
        if let Some((_, config)) = config {
            let rings: Vec<_> = config
                .rings
                .iter()
                .map(|r| (r.name.clone(), r.selector.clone()))
                .collect();
            if fleet.ring_names() != rings.iter().map(|r| r.0.clone()).collect::<Vec<_>>() {
                changed = true;
            }
            fleet.set_rings(&rings);
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        for r in rendered {
            let address = Arc::as_ptr(&r.ring) as usize;
            if loaded.get(&r.ring.ring) == Some(&address) && fleet.desired(&r.ring.ring).is_some() {
                continue;
            }
            if fleet.set_desired(r.ring.clone()) {
                loaded.insert(r.ring.ring.clone(), address);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Admits one batch, or refuses at once when [`Devices::MAX_ADMITTED`]
    /// are already in: the caller answers 429 instead of queueing without
    /// bound. Hold the permit until the batch is stored.
    pub fn admit(&self) -> Result<SemaphorePermit<'_>, DevicesError> {
        self.admitted.try_acquire().map_err(|e| match e {
            TryAcquireError::NoPermits | TryAcquireError::Closed => DevicesError::Overloaded,
        })
    }

    pub fn cache(&self) -> &Arc<DesiredCache> {
        &self.cache
    }

    /// Stores a batch of validated reports: newer ones replace the stored
    /// state, findings are re-evaluated, and everything commits at once.
    /// Each report is stored as the text it came as: serialising it again
    /// would cost more than everything else the batch does but parsing.
    pub async fn ingest(&self, batch: Vec<Received>, now: DateTime<Utc>) -> Result<IngestOutcome, DevicesError> {
        self.ingest_scoped(batch, None, now).await.map(|(outcome, _)| outcome)
    }

    /// [`Devices::ingest`] for a caller whose token may have a scope: each
    /// report outside it is refused on its own, the others are stored. The
    /// checks run under the same lock as the ingestion, so the ring and the
    /// stored platform they judge by are those the report is stored against.
    pub async fn ingest_scoped(
        &self,
        batch: Vec<Received>,
        scope: Option<Scoped<'_>>,
        now: DateTime<Utc>,
    ) -> Result<(IngestOutcome, Vec<OutOfScope>), DevicesError> {
        let mut batch = batch;
        let mut refused = Vec::new();
        let tags: Vec<u64> = batch.iter().map(|r| content_tag(&self.tags, r.text.as_str())).collect();
        let one = self.ingest.lock().await;
        let mut outcome = IngestOutcome::default();
        let mut t = Transition::default();
        t.kv_json.reserve(batch.len());
        let mut events = Vec::new();
        let mut saved = Vec::with_capacity(batch.len());
        {
            let mut fleet = self.shared.write();
            let known = if scope.is_some() {
                fleet.ring_names()
            } else {
                Vec::new()
            };
            let note = scope.and_then(|s| s.missing_rings(&known, &self.warned_rings));
            for (position, (received, &tag)) in batch.iter_mut().zip(&tags).enumerate() {
                if let Some(scoped) = &scope {
                    if let Some(reason) = scoped.refusal(&fleet, &known, note.as_deref(), &received.report) {
                        refused.push(OutOfScope {
                            position,
                            device: received.report.device.id.clone(),
                            reason,
                        });
                        continue;
                    }
                }
                let id = received.report.device.id.as_str();
                let Some((before, change)) = fleet.ingest_undoable(&received.report, tag, now) else {
                    outcome.stale += 1;
                    continue;
                };
                let repeat = tag != 0 && tag == before.content();
                saved.push(before);
                outcome.accepted += 1;
                if repeat {
                    // Only the check-in time is new: a few bytes instead of
                    // the whole report (most check-ins of a healthy fleet).
                    let at = received
                        .report
                        .checked_in_at
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
                    let text = JsonText::to_json(&at).expect("a string serialises");
                    t.kv_json.push((format!("{}{id}", keys::CHECKIN), text));
                } else {
                    let key = format!("{}{id}", keys::DEVICE);
                    t.kv_json.push((key, std::mem::take(&mut received.text)));
                }
                if let Some(change) = change {
                    self.record(&change, &mut t, &mut events, &mut outcome);
                }
            }
        }
        if t.is_empty() {
            return Ok((outcome, refused));
        }
        let committed = self.ledger.commit_locked(t, events, now).await;
        if let Err(e) = committed {
            let mut fleet = self.shared.write();
            for s in saved.into_iter().rev() {
                fleet.put_back(s);
            }
            return Err(e.into());
        }
        // The next batch need not wait for this one's memory to be freed.
        drop(one);
        drop((saved, batch));
        Ok((outcome, refused))
    }

    fn record(
        &self,
        change: &DeviceChange,
        t: &mut Transition,
        events: &mut Vec<(String, Action, String, Value)>,
        outcome: &mut IngestOutcome,
    ) {
        if change.opened.is_empty() && change.closed.is_empty() {
            return;
        }
        let subject = format!("device/{}", change.device);
        for (action, list) in [
            (Action::FindingOpened, &change.opened),
            (Action::FindingClosed, &change.closed),
        ] {
            for f in list {
                events.push((
                    "controller".into(),
                    action.clone(),
                    subject.clone(),
                    json!({"kind": f.kind, "baseline": f.baseline, "setting": f.setting,
                           "ring": change.ring, "opened_at": f.opened_at}),
                ));
            }
        }
        outcome.findings_opened += change.opened.len();
        outcome.findings_closed += change.closed.len();
        let key = format!("{}{}", keys::FINDING, change.device);
        let value = (!change.open.is_empty()).then(|| serde_json::to_value(&change.open).expect("findings serialise"));
        t.kv.push((key, value));
    }

    /// Re-evaluates every device as time passes and desired states change:
    /// findings open and close (stale check-ins, grace periods ending,
    /// exceptions expiring), expiries and remediation items are audited.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepOutcome, DevicesError> {
        self.refresh().await?;
        let _one = self.ingest.lock().await;
        let store = self.store().clone();
        let mut out = SweepOutcome::default();
        // Expiries first, so their events precede the findings they reopen.
        let expired = self.shared.read().expired_exceptions(now);
        let mut t = Transition::default();
        let mut events = Vec::new();
        for (ring, name, expires) in expired {
            let key = format!("{}{name}/{}", keys::EXPIRED, expires.timestamp());
            if store.kv_get(&key).await?.is_some() || t.kv.iter().any(|(k, _)| *k == key) {
                continue;
            }
            events.push((
                "controller".to_string(),
                Action::ExceptionExpired,
                format!("exception/{name}"),
                json!({"expires": expires, "ring": ring}),
            ));
            t.kv.push((key, Some(json!(ExpiredMark { ring, at: now }))));
            out.exceptions_expired += 1;
        }
        if !t.kv.is_empty() {
            self.ledger
                .commit_locked(std::mem::take(&mut t), std::mem::take(&mut events), now)
                .await?;
        }
        let changes = self.shared.write().recompute(now);
        let mut outcome = IngestOutcome::default();
        for chunk in changes.chunks(SWEEP_CHUNK) {
            let mut t = Transition::default();
            let mut events = Vec::new();
            for change in chunk {
                self.record(change, &mut t, &mut events, &mut outcome);
            }
            self.ledger.commit_locked(t, events, now).await?;
        }
        out.findings_opened = outcome.findings_opened;
        out.findings_closed = outcome.findings_closed;
        let (opened, closed) = self.remediate(now).await?;
        out.remediation_opened = opened;
        out.remediation_closed = closed;
        Ok(out)
    }

    /// Opens remediation items for findings past their deadline and closes
    /// the ones whose findings are gone.
    async fn remediate(&self, now: DateTime<Utc>) -> Result<(usize, usize), DevicesError> {
        let store = self.store().clone();
        let overdue = self.shared.read().overdue(now);
        // An unreadable item is an error: read as absent it would be opened
        // again with a new deadline.
        let stored: BTreeMap<String, Remediation> = store
            .kv_prefix(keys::REMEDIATION)
            .await?
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), crate::state::decode(k, v)?)))
            .collect::<Result<_, crate::state::StateError>>()?;
        let deadlines = self.shared.read().options().remediation_secs;
        let mut t = Transition::default();
        let mut events = Vec::new();
        let (mut opened, mut closed) = (0, 0);
        let mut live = Vec::new();
        for item in overdue {
            let key = format!("{}{}", keys::REMEDIATION, item.id);
            live.push(key.clone());
            match stored.get(&key) {
                Some(r) if r.item.devices == item.devices && r.item.sample == item.sample => {}
                Some(r) => {
                    let updated = Remediation {
                        item,
                        opened_at: r.opened_at,
                        due: r.due,
                    };
                    t.kv.push((key, Some(serde_json::to_value(updated).expect("items serialise"))));
                }
                None => {
                    let due = now + Duration::seconds(deadlines[item.tier.min(3) as usize]);
                    let r = Remediation {
                        item,
                        opened_at: now,
                        due,
                    };
                    events.push((
                        "controller".to_string(),
                        Action::RemediationOpened,
                        format!("remediation/{}", r.item.id),
                        json!({"baseline": r.item.baseline, "kind": r.item.kind, "setting": r.item.setting,
                               "owners": r.item.owners, "tier": r.item.tier, "devices": r.item.devices,
                               "due": r.due}),
                    ));
                    t.kv.push((key, Some(serde_json::to_value(r).expect("items serialise"))));
                    opened += 1;
                }
            }
        }
        for (key, r) in &stored {
            if !live.contains(key) {
                events.push((
                    "controller".to_string(),
                    Action::RemediationClosed,
                    format!("remediation/{}", r.item.id),
                    json!({"baseline": r.item.baseline, "kind": r.item.kind, "setting": r.item.setting,
                           "opened_at": r.opened_at}),
                ));
                t.kv.push((key.clone(), None));
                closed += 1;
            }
        }
        if !t.kv.is_empty() {
            self.ledger.commit_locked(t, events, now).await?;
        }
        Ok((opened, closed))
    }

    /// Open remediation items, oldest first.
    pub async fn remediation(&self) -> Result<Vec<Remediation>, DevicesError> {
        let mut items: Vec<Remediation> = self
            .store()
            .kv_prefix(keys::REMEDIATION)
            .await?
            .into_iter()
            .map(|(k, v)| crate::state::decode(k, v))
            .collect::<Result<_, _>>()?;
        items.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then_with(|| a.item.id.cmp(&b.item.id)));
        Ok(items)
    }
}

/// A tag of everything in a report's text but its check-in time: equal tags
/// (under one `RandomState`) mean the report repeats the stored one but for
/// the time. 0 (never equal to a stored tag) when the time cannot be told
/// apart with certainty: `"checked_in_at"` must occur exactly once in the
/// text (it is then the report's own field: inside a string its quotes
/// would be escaped, and a nested key of that name makes two), followed by
/// a string without escapes.
pub fn content_tag(state: &std::hash::RandomState, text: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    const FIELD: &str = "\"checked_in_at\"";
    let Some(at) = text.find(FIELD) else { return 0 };
    let after = at + FIELD.len();
    if text[after..].contains(FIELD) {
        return 0;
    }
    let rest = text[after..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    let Some(rest) = rest.strip_prefix(':') else { return 0 };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let Some(value) = rest.strip_prefix('"') else { return 0 };
    let Some(close) = value.find(['"', '\\']) else { return 0 };
    if value.as_bytes()[close] != b'"' {
        return 0;
    }
    let end = text.len() - (value.len() - close - 1);
    let mut h = state.build_hasher();
    h.write(&text.as_bytes()[..at]);
    h.write(&text.as_bytes()[end..]);
    h.finish().max(1)
}

/// A reporter token's scope, with the token's name for the reasons.
#[derive(Debug, Clone, Copy)]
pub struct Scoped<'a> {
    pub token: &'a str,
    pub scope: &'a ReporterScope,
}

/// A report of a batch refused for its token's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfScope {
    /// Its position in the batch given to [`Devices::ingest_scoped`].
    pub position: usize,
    pub device: String,
    /// Every scope rule it breaks, `; `-separated, each naming its field.
    pub reason: String,
}

impl Scoped<'_> {
    /// The scope's rings that the config in force has no ring of (the index
    /// holds that config's rings), each logged once per token; and a note
    /// for the reasons, when there are such rings.
    fn missing_rings(&self, known: &[String], warned: &std::sync::Mutex<HashSet<String>>) -> Option<String> {
        let rings = self.scope.rings.as_ref()?;
        let unknown: Vec<&str> = rings
            .iter()
            .filter(|r| !known.contains(r))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() || known.is_empty() {
            return None;
        }
        let mut warned = warned.lock().unwrap_or_else(|e| e.into_inner());
        for &ring in &unknown {
            if warned.insert(format!("{}/{ring}", self.token)) {
                tracing::warn!(
                    token = self.token,
                    ring,
                    rings = %known.join(", "),
                    "a reporter token's scope names a ring the config in force does not have"
                );
            }
        }
        Some(format!(
            " ({} of the scope {} no ring of the config in force, whose rings are {})",
            unknown.join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
            known.join(", ")
        ))
    }

    /// Why `report` is outside the scope, if it is: its platform, its id's
    /// prefix, the ring its groups resolve to (by the rings the index holds,
    /// `known`, those of the config in force), and whether it would move a
    /// device stored under another platform, which a scoped token does not own.
    fn refusal(&self, fleet: &Fleet, known: &[String], note: Option<&str>, report: &DeviceReport) -> Option<String> {
        let token = self.token;
        let device = &report.device;
        let mut problems = Vec::new();
        if let Some(platforms) = &self.scope.platforms {
            if !platforms.contains(&device.platform) {
                let allowed: Vec<&str> = platforms.iter().map(|p| p.as_str()).collect();
                problems.push(format!(
                    "device.platform: {} is outside token `{token}`'s scope (platforms: {})",
                    device.platform,
                    allowed.join(", ")
                ));
            }
        }
        if let Some(prefixes) = &self.scope.device_prefixes {
            if !prefixes.iter().any(|p| device.id.starts_with(p.as_str())) {
                let allowed: Vec<String> = prefixes.iter().map(|p| format!("{p:?}")).collect();
                problems.push(format!(
                    "device.id: {:?} does not start with a prefix of token `{token}`'s scope (device_prefixes: {})",
                    device.id,
                    allowed.join(", ")
                ));
            }
        }
        if let Some(stored) = fleet.platform_of(&device.id) {
            if stored != device.platform {
                problems.push(format!(
                    "device.platform: device {:?} is stored as a {stored} device; token `{token}` has a scope and \
                     may not move a device it does not own to {}",
                    device.id, device.platform
                ));
            }
        }
        if let Some(rings) = &self.scope.rings {
            let allowed = rings.join(", ");
            let problem = match fleet.ring_of(&device.groups) {
                Some(ring) if rings.iter().any(|r| r == ring) => None,
                Some(ring) => Some(format!(
                    "device.groups: {:?} put the device in ring {ring}, outside token `{token}`'s scope (rings: \
                     {allowed})",
                    device.groups
                )),
                None if known.is_empty() => Some(format!(
                    "device.groups: no ring configuration is in force yet, so the device's ring cannot be checked \
                     against token `{token}`'s scope (rings: {allowed})"
                )),
                None => Some(format!(
                    "device.groups: {:?} put the device in no ring, and token `{token}`'s scope allows only rings \
                     {allowed}",
                    device.groups
                )),
            };
            if let Some(problem) = problem {
                problems.push(format!("{problem}{}", note.unwrap_or_default()));
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// A validated report and the JSON text the store keeps for it
/// (`device/{id}`), which [`read_stored_report`] reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub report: DeviceReport,
    pub text: JsonText,
}

impl Received {
    /// The valid reports of a parsed body, each with the text it came as.
    pub fn from_parsed(parsed: ParsedBatch) -> Vec<Received> {
        debug_assert_eq!(parsed.reports.len(), parsed.texts.len());
        parsed
            .reports
            .into_iter()
            .zip(parsed.texts)
            .map(|((_, report), text)| Received { report, text })
            .collect()
    }

    /// A report made in this process rather than received: its text is
    /// the report as a device would send it.
    pub fn new(report: DeviceReport) -> Received {
        let text = report_json(&report);
        Received { report, text }
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepOutcome {
    pub findings_opened: usize,
    pub findings_closed: usize,
    pub exceptions_expired: usize,
    pub remediation_opened: usize,
    pub remediation_closed: usize,
}

#[cfg(test)]
mod tests {
    use super::{content_tag, Scoped};
    use crate::controller::config::ReporterScope;
    use std::collections::HashSet;
    use std::hash::RandomState;
    use tollgate_core::devices::fleet::{Fleet, FleetOptions};
    use tollgate_core::devices::report::{DeviceInfo, DeviceReport, Enrollment, OsInfo};
    use tollgate_core::format::RingSelector;
    use tollgate_core::ids::Platform;

    fn report(id: &str, platform: Platform, groups: &[&str]) -> DeviceReport {
        DeviceReport {
            device: DeviceInfo {
                id: id.into(),
                platform,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                user: None,
                ownership: None,
            },
            os: OsInfo { version: "18.0".into() },
            enrollment: Enrollment::Enrolled,
            checked_in_at: "2026-11-22T10:00:00Z".parse().unwrap(),
            applied: Vec::new(),
            settings: Vec::new(),
        }
    }

    fn rings(fleet: &mut Fleet) {
        fleet.set_rings(&[
            ("canary".into(), RingSelector::Groups(vec!["mdm-canary".into()])),
            ("pilot".into(), RingSelector::Groups(vec!["mdm-pilot".into()])),
        ]);
    }

    #[test]
    fn a_scope_refuses_by_ring_as_ingestion_resolves_it() {
        let scope = ReporterScope {
            platforms: None,
            rings: Some(vec!["pilot".into(), "pilto".into()]),
            device_prefixes: None,
        };
        let scoped = Scoped {
            token: "mdm",
            scope: &scope,
        };
        let warned = std::sync::Mutex::new(HashSet::new());
        let refusal = |fleet: &Fleet, r: &DeviceReport| {
            let known = fleet.ring_names();
            let note = scoped.missing_rings(&known, &warned);
            scoped.refusal(fleet, &known, note.as_deref(), r)
        };

        // Before any config is in force no ring can be resolved: refused.
        let mut fleet = Fleet::new(FleetOptions::default());
        let why = refusal(&fleet, &report("d1", Platform::Ios, &["mdm-pilot"])).unwrap();
        assert!(
            why.starts_with("device.groups: no ring configuration is in force yet"),
            "{why}"
        );

        rings(&mut fleet);
        assert_eq!(
            refusal(&fleet, &report("d1", Platform::Ios, &["lab", "mdm-pilot"])),
            None
        );
        let why = refusal(&fleet, &report("d2", Platform::Ios, &["mdm-pilot", "mdm-canary"])).unwrap();
        assert_eq!(
            why,
            "device.groups: [\"mdm-pilot\", \"mdm-canary\"] put the device in ring canary, outside token `mdm`'s \
             scope (rings: pilot, pilto) (pilto of the scope is no ring of the config in force, whose rings are \
             canary, pilot)"
        );
        let why = refusal(&fleet, &report("d3", Platform::Ios, &["lab"])).unwrap();
        assert!(
            why.starts_with("device.groups: [\"lab\"] put the device in no ring"),
            "{why}"
        );
        assert_eq!(warned.lock().unwrap().len(), 1, "the missing ring is noted once");
    }

    #[test]
    fn a_scoped_token_does_not_move_a_device_stored_under_another_platform() {
        let scope = ReporterScope {
            platforms: Some(vec![Platform::Ios, Platform::Macos]),
            rings: None,
            device_prefixes: None,
        };
        let scoped = Scoped {
            token: "mdm",
            scope: &scope,
        };
        let mut fleet = Fleet::new(FleetOptions::default());
        rings(&mut fleet);
        let stored = report("serial:1", Platform::Macos, &["mdm-pilot"]);
        fleet.ingest(&stored, stored.checked_in_at);
        assert_eq!(fleet.platform_of("serial:1"), Some(Platform::Macos));
        assert_eq!(fleet.ring_of(&stored.device.groups), Some("pilot"));
        let moved = report("serial:1", Platform::Ios, &["mdm-pilot"]);
        let why = scoped.refusal(&fleet, &fleet.ring_names(), None, &moved).unwrap();
        assert_eq!(
            why,
            "device.platform: device \"serial:1\" is stored as a macos device; token `mdm` has a scope and may not \
             move a device it does not own to ios"
        );
        // Its own device, on the platform it has, is kept.
        assert_eq!(scoped.refusal(&fleet, &fleet.ring_names(), None, &stored), None);
        assert_eq!(
            scoped.refusal(
                &fleet,
                &fleet.ring_names(),
                None,
                &report("serial:2", Platform::Ios, &[])
            ),
            None
        );
    }

    #[test]
    fn a_content_tag_leaves_out_the_check_in_time_and_nothing_else() {
        let state = RandomState::new();
        let tag = |text: &str| content_tag(&state, text);
        let a = r#"{"device":{"id":"d"},"checked_in_at":"2026-11-22T10:00:00Z","os":{"version":"1"}}"#;
        let later = a.replace("10:00:00Z", "10:05:00.5Z");
        assert_ne!(tag(a), 0);
        assert_eq!(tag(a), tag(&later));
        assert_eq!(
            tag(a),
            tag(&a.replace(r#""checked_in_at":"#, r#""checked_in_at" : "#)),
            "spacing around the colon"
        );
        // Anything else that differs, down to one byte, makes another tag.
        assert_ne!(tag(a), tag(&a.replace(r#""1""#, r#""2""#)));
        assert_ne!(tag(a), tag(&a.replace(r#"{"device""#, r#"{ "device""#)));
        // Cannot tell the time apart: no tag.
        assert_eq!(tag(r#"{"device":{"id":"d"}}"#), 0);
        let nested = r#"{"checked_in_at":"2026-11-22T10:00:00Z","settings":[{"actual":{"checked_in_at":"x"}}]}"#;
        assert_eq!(tag(nested), 0, "a nested key of the same name");
        assert_eq!(tag(r#"{"checked_in_at":"2026\u002d11"}"#), 0, "an escaped value");
        assert_eq!(tag(r#"{"checked_in_at":1}"#), 0);
        // Inside a string the name's quotes are escaped: not the field.
        let quoted = r#"{"checked_in_at":"2026-11-22T10:00:00Z","x":"\"checked_in_at\""}"#;
        assert_ne!(tag(quoted), 0);
        assert_eq!(tag(quoted), tag(&quoted.replace("10:00:00Z", "11:00:00Z")));
        // Tags are keyed per process.
        assert_ne!(content_tag(&RandomState::new(), a), tag(a));
    }
}
