//! The fleet index: the latest state of every device, what each ring should
//! run, and the findings between the two.
//!
//! Everything here is plain data and pure computation; persistence, audit
//! and HTTP are the [`service`](super::service)'s. The index is compact so a
//! controller can track a large fleet: strings a device shares with others
//! (groups, baseline names, digests, setting keys) are interned, a device's
//! group set is interned as one id, and a device keeps only its non-compliant
//! settings (compliant ones cannot produce a finding).
//!
//! Findings (DESIGN 8) are a pure function of a device's last report, the
//! desired state of its ring, the exceptions in force and the time
//! (`Fleet::evaluate`). The index remembers which findings are open, so the
//! service can audit exactly the ones that open and close.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::report::{ApplyStatus, DeviceReport, SettingState};
use super::resolved::{ExceptionScope, ResolvedRing};
use crate::catalog::Catalog;
use crate::format::RingSelector;
use crate::ids::Platform;
use crate::promotion::GateReading;

const NONE32: u32 = u32::MAX;
const NONE16: u16 = u16::MAX;

/// Tunables of drift and gates; `devices:` in the controller config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetOptions {
    /// How long after a baseline is published to a ring a device may still
    /// run another version before that is `version_drift`.
    pub grace_secs: i64,
    /// A device not heard from for this long has a `stale_checkin` finding.
    pub stale_after_secs: i64,
    /// Whether a ring's gate leaves out devices that have not checked in since
    /// the promotion. Off by default: a silent device counts as not applied,
    /// so a gate never passes on the devices that happened to answer.
    /// Devices already stale before the promotion never count either way.
    pub gate_ignore_silent: bool,
    /// Fewer devices than this in a ring: the gate has no evidence.
    pub gate_min_devices: u64,
    /// How long a finding may persist before it becomes a remediation item,
    /// by tier (index 0..=3); the item is due the same time again later.
    pub remediation_secs: [i64; 4],
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            grace_secs: 3600,
            stale_after_secs: 24 * 3600,
            gate_ignore_silent: false,
            gate_min_devices: 1,
            remediation_secs: [30 * 86400, 7 * 86400, 3 * 86400, 86400],
        }
    }
}

/// The kinds of finding of DESIGN 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    VersionDrift,
    SettingDrift,
    ApplyFailed,
    StaleCheckin,
    UnknownBaseline,
}

impl FindingKind {
    pub const ALL: [FindingKind; 5] = [
        FindingKind::VersionDrift,
        FindingKind::SettingDrift,
        FindingKind::ApplyFailed,
        FindingKind::StaleCheckin,
        FindingKind::UnknownBaseline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::VersionDrift => "version_drift",
            FindingKind::SettingDrift => "setting_drift",
            FindingKind::ApplyFailed => "apply_failed",
            FindingKind::StaleCheckin => "stale_checkin",
            FindingKind::UnknownBaseline => "unknown_baseline",
        }
    }

    pub fn parse(s: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the device is non-compliant because of it (for gates).
    fn noncompliant(self) -> bool {
        matches!(self, FindingKind::SettingDrift | FindingKind::ApplyFailed)
    }
}

/// A finding in interned form: kind, baseline name id, setting key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    kind: FindingKind,
    baseline: u32,
    setting: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    key: Key,
    opened: i64,
}

/// A finding by name, as the API and the audit log show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    pub opened_at: DateTime<Utc>,
}

/// What changed for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceChange {
    pub device: String,
    pub ring: Option<String>,
    pub opened: Vec<Finding>,
    pub closed: Vec<Finding>,
    /// Every finding open after the change (what to persist).
    pub open: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AppliedC {
    baseline: u32,
    digest: u32,
    status: ApplyStatus,
}

#[derive(Debug, Clone)]
struct Device {
    platform: Platform,
    groupset: u32,
    ring: u16,
    checked_in: i64,
    applied: Box<[AppliedC]>,
    /// Settings reported non-compliant or in error, sorted by key id.
    bad: Box<[u16]>,
    findings: Box<[Open]>,
    suppressed: u16,
    /// What the caller says the stored report holds besides its check-in
    /// time (a hash, see [`Fleet::ingest_undoable`]); 0 when not known.
    content: u64,
}

/// Strings to small ids and back.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    fn bytes(&self) -> usize {
        self.names.iter().map(|n| 2 * n.len() + 48).sum()
    }
}

#[derive(Debug, Clone)]
struct DesiredB {
    name: u32,
    digest: u32,
    platform: Platform,
    groups: Vec<u32>,
    priority: i64,
    tier: u8,
    revision: String,
    owners: Arc<[String]>,
    settings: Vec<u16>,
    /// When this digest was first seen published to the ring.
    since: i64,
}

#[derive(Debug, Clone)]
struct ExceptionC {
    name: String,
    baseline: u32,
    settings: Vec<u16>,
    groups: Vec<u32>,
    devices: Vec<String>,
    expires: i64,
}

#[derive(Debug, Clone)]
struct RingState {
    name: String,
    /// Sorted group ids; `None` = every device.
    selector: Option<Vec<u32>>,
    desired: Option<Arc<ResolvedRing>>,
    baselines: Vec<DesiredB>,
    exceptions: Vec<ExceptionC>,
}

/// The non-compliant share of a ring when something was published to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateBaseline {
    pub published_at: DateTime<Utc>,
    pub noncompliant_share: f64,
    pub devices: u64,
}

/// Counters for `/v1/drift`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftSummary {
    pub devices: u64,
    pub findings: u64,
    pub suppressed: u64,
    pub noncompliant_devices: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// The keys of `by_ring` in promotion order (`tollgate.yaml`), then
    /// `(none)` for devices in no ring: a JSON object keeps no order.
    pub rings: Vec<String>,
    pub by_ring: BTreeMap<String, RingCounts>,
    pub by_baseline: BTreeMap<String, u64>,
    pub by_setting: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RingCounts {
    pub devices: u64,
    pub noncompliant: u64,
    pub findings: u64,
}

/// Which devices and findings `/v1/drift` lists.
#[derive(Debug, Clone, Default)]
pub struct DriftFilter {
    pub ring: Option<String>,
    pub baseline: Option<String>,
    pub kind: Option<FindingKind>,
    pub setting: Option<String>,
}

/// A device as `/v1/drift` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub platform: Platform,
    pub ring: Option<String>,
    pub checked_in_at: DateTime<Utc>,
    pub findings: Vec<Finding>,
}

/// A group of findings that outlived its deadline (DESIGN 8 remediation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdue {
    /// `baseline/kind[/setting]`.
    pub id: String,
    pub baseline: String,
    pub kind: FindingKind,
    pub setting: Option<String>,
    pub owners: Vec<String>,
    pub tier: u8,
    /// Devices whose finding is past the deadline.
    pub devices: u64,
    /// The oldest finding of the group.
    pub since: DateTime<Utc>,
    /// A few device ids, for people.
    pub sample: Vec<String>,
}

/// Whether a report replaced the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored,
    /// Not newer than what is stored: ignored.
    Stale,
}

/// One device's entry as it was (see [`Fleet::save`]).
#[derive(Debug)]
pub struct Saved(Box<str>, Option<Device>);

impl Saved {
    /// The content tag the entry had ([`Fleet::ingest_undoable`]); 0 when
    /// there was no entry or no tag.
    pub fn content(&self) -> u64 {
        self.1.as_ref().map_or(0, |d| d.content)
    }
}

/// The index. Not synchronised: the service wraps it in a lock.
#[derive(Debug, Default)]
pub struct Fleet {
    options: FleetOptions,
    devices: HashMap<Box<str>, Device>,
    groups: Interner,
    groupsets: HashMap<Box<[u32]>, u32>,
    groupset_list: Vec<Box<[u32]>>,
    /// Ring of each group set, recomputed when the rings change.
    groupset_ring: Vec<u16>,
    baselines: Interner,
    digests: Interner,
    settings: Interner,
    rings: Vec<RingState>,
    gate_baselines: HashMap<String, GateBaseline>,
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn time(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    false
}

impl Fleet {
    pub fn new(options: FleetOptions) -> Fleet {
        let mut fleet = Fleet {
            options,
            ..Fleet::default()
        };
        // Setting ids are the catalogue's order, so they are stable.
        for entry in Catalog::builtin().entries() {
            fleet.settings.id(&entry.key);
        }
        fleet
    }

    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Sets the rings (names and selectors, in order). Ring membership is
    /// recomputed; desired states of rings that keep their name are kept.
    pub fn set_rings(&mut self, rings: &[(String, RingSelector)]) {
        let mut old: HashMap<String, RingState> = self.rings.drain(..).map(|r| (r.name.clone(), r)).collect();
        for (name, selector) in rings {
            let selector = match selector {
                RingSelector::All => None,
                RingSelector::Groups(g) => {
                    let mut ids: Vec<u32> = g.iter().map(|g| self.groups.id(g)).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    Some(ids)
                }
            };
            let mut ring = old.remove(name).unwrap_or(RingState {
                name: name.clone(),
                selector: None,
                desired: None,
                baselines: Vec::new(),
                exceptions: Vec::new(),
            });
            ring.selector = selector;
            self.rings.push(ring);
        }
        self.groupset_ring = (0..self.groupset_list.len())
            .map(|i| self.ring_of_groups(&self.groupset_list[i]))
            .collect();
        let rings = &self.groupset_ring;
        for d in self.devices.values_mut() {
            d.ring = rings[d.groupset as usize];
        }
    }

    pub fn ring_names(&self) -> Vec<String> {
        self.rings.iter().map(|r| r.name.clone()).collect()
    }

    fn ring_of_groups(&self, groups: &[u32]) -> u16 {
        self.rings
            .iter()
            .position(|r| match &r.selector {
                None => true,
                Some(sel) => intersects(sel, groups),
            })
            .map_or(NONE16, |i| i as u16)
    }

    /// The ring a device reporting `groups` would belong to by the rings
    /// set ([`Fleet::set_rings`]), as ingestion resolves it; records nothing.
    pub fn ring_of(&self, groups: &[String]) -> Option<&str> {
        // A group no selector names has no id, and cannot match one.
        let mut ids: Vec<u32> = groups
            .iter()
            .filter_map(|g| self.groups.ids.get(g.as_str()).copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let ring = self.ring_of_groups(&ids);
        self.rings.get(ring as usize).map(|r| r.name.as_str())
    }

    /// The platform a device is stored under, if it is stored.
    pub fn platform_of(&self, id: &str) -> Option<Platform> {
        self.devices.get(id).map(|d| d.platform)
    }

    /// The desired state of a ring, as resolved from what was published.
    /// Returns false when the ring is not one of [`Fleet::set_rings`]'s.
    pub fn set_desired(&mut self, desired: Arc<ResolvedRing>) -> bool {
        let Some(index) = self.rings.iter().position(|r| r.name == desired.ring) else {
            return false;
        };
        let published = secs(desired.published_at);
        let previous: HashMap<u32, (u32, i64)> = self.rings[index]
            .baselines
            .iter()
            .map(|b| (b.name, (b.digest, b.since)))
            .collect();
        let mut baselines = Vec::with_capacity(desired.baselines.len());
        for b in &desired.baselines {
            let name = self.baselines.id(&b.name);
            let digest = self.digests.id(b.digest.as_str());
            let mut groups: Vec<u32> = b.target_groups.iter().map(|g| self.groups.id(g)).collect();
            groups.sort_unstable();
            groups.dedup();
            let mut settings: Vec<u16> = b.settings.keys().map(|k| self.settings.id(k) as u16).collect();
            settings.sort_unstable();
            let since = match previous.get(&name) {
                Some(&(d, since)) if d == digest => since,
                _ => published,
            };
            baselines.push(DesiredB {
                name,
                digest,
                platform: b.platform,
                groups,
                priority: b.priority,
                tier: b.tier,
                revision: b.revision.to_string(),
                owners: b.owners.clone().into(),
                settings,
                since,
            });
        }
        let mut exceptions = Vec::with_capacity(desired.exceptions.len());
        for e in &desired.exceptions {
            let mut settings: Vec<u16> = e.settings.iter().map(|k| self.settings.id(k) as u16).collect();
            settings.sort_unstable();
            let (mut groups, devices) = match &e.scope {
                ExceptionScope::Groups(g) => (g.iter().map(|g| self.groups.id(g)).collect::<Vec<_>>(), Vec::new()),
                ExceptionScope::Devices(d) => (Vec::new(), d.clone()),
            };
            groups.sort_unstable();
            exceptions.push(ExceptionC {
                name: e.name.clone(),
                baseline: self.baselines.id(&e.baseline),
                settings,
                groups,
                devices,
                expires: secs(e.expires),
            });
        }
        let ring = &mut self.rings[index];
        ring.baselines = baselines;
        ring.exceptions = exceptions;
        ring.desired = Some(desired);
        true
    }

    pub fn desired(&self, ring: &str) -> Option<&Arc<ResolvedRing>> {
        self.rings.iter().find(|r| r.name == ring)?.desired.as_ref()
    }

    fn groupset(&mut self, groups: &[String]) -> u32 {
        let mut ids: Vec<u32> = groups.iter().map(|g| self.groups.id(g)).collect();
        ids.sort_unstable();
        ids.dedup();
        if let Some(&id) = self.groupsets.get(ids.as_slice()) {
            return id;
        }
        let id = self.groupset_list.len() as u32;
        let ring = self.ring_of_groups(&ids);
        let ids: Box<[u32]> = ids.into();
        self.groupsets.insert(ids.clone(), id);
        self.groupset_list.push(ids);
        self.groupset_ring.push(ring);
        id
    }

    /// A copy of `id`'s entry, to put back if storing its new state fails.
    pub fn save(&self, id: &str) -> Saved {
        Saved(id.into(), self.devices.get(id).cloned())
    }

    /// Puts back an entry taken with [`Fleet::save`].
    pub fn put_back(&mut self, saved: Saved) {
        match saved.1 {
            Some(d) => {
                self.devices.insert(saved.0, d);
            }
            None => {
                self.devices.remove(&saved.0);
            }
        }
    }

    /// When the stored report of `id` was taken, if any.
    pub fn checked_in(&self, id: &str) -> Option<DateTime<Utc>> {
        self.devices.get(id).map(|d| time(d.checked_in))
    }

    /// Whether `report` is newer than what is stored for its device (a
    /// duplicate or an older report never overwrites newer state).
    pub fn is_newer(&self, report: &DeviceReport) -> bool {
        self.devices
            .get(report.device.id.as_str())
            .is_none_or(|d| secs(report.checked_in_at) > d.checked_in)
    }

    /// Stores `report` if newer and re-evaluates the device. Returns what
    /// changed in its findings (`None` when the report was stale).
    pub fn ingest(&mut self, report: &DeviceReport, now: DateTime<Utc>) -> Option<DeviceChange> {
        let (_, change) = self.ingest_undoable(report, 0, now)?;
        Some(change.unwrap_or_else(|| self.unchanged(&report.device.id)))
    }

    /// [`Fleet::ingest`] for a caller that may have to undo it and only
    /// needs what opened and closed: `None` when the report was stale, else
    /// the entry as it was (for [`Fleet::put_back`]) and the change, only
    /// when findings opened or closed. Cheaper than [`Fleet::save`] then
    /// [`Fleet::ingest`]: the old entry is moved out, not copied, and an
    /// unchanged device costs no [`DeviceChange`].
    ///
    /// `content` tags the entry with the caller's hash of all of the report
    /// but its check-in time (0: none), so the caller can tell a check-in
    /// that changed nothing else ([`Saved::content`] is the previous tag).
    pub fn ingest_undoable(
        &mut self,
        report: &DeviceReport,
        content: u64,
        now: DateTime<Utc>,
    ) -> Option<(Saved, Option<DeviceChange>)> {
        if !self.is_newer(report) {
            return None;
        }
        let groupset = self.groupset(&report.device.groups);
        let mut applied: Vec<AppliedC> = report
            .applied
            .iter()
            .map(|a| AppliedC {
                baseline: self.baselines.id(&a.baseline),
                digest: self.digests.id(a.digest.as_str()),
                status: a.status,
            })
            .collect();
        applied.sort_unstable_by_key(|a| a.baseline);
        let mut bad: Vec<u16> = report
            .settings
            .iter()
            .filter(|s| matches!(s.state, SettingState::Noncompliant | SettingState::Error))
            .map(|s| self.settings.id(&s.key) as u16)
            .collect();
        bad.sort_unstable();
        bad.dedup();
        let id: &str = &report.device.id;
        let (key, old) = match self.devices.remove_entry(id) {
            Some((key, old)) => (key, Some(old)),
            None => (id.into(), None),
        };
        let mut device = Device {
            platform: report.device.platform,
            groupset,
            ring: self.groupset_ring[groupset as usize],
            checked_in: secs(report.checked_in_at),
            applied: applied.into(),
            bad: bad.into(),
            findings: old.as_ref().map(|d| d.findings.clone()).unwrap_or_default(),
            suppressed: 0,
            content,
        };
        let change = self.reevaluate(id, &mut device, secs(now));
        let saved = Saved(key.clone(), old);
        self.devices.insert(key, device);
        Some((saved, change))
    }

    fn unchanged(&self, id: &str) -> DeviceChange {
        let d = &self.devices[id];
        DeviceChange {
            device: id.to_string(),
            ring: self.ring_name(d.ring),
            opened: Vec::new(),
            closed: Vec::new(),
            open: d.findings.iter().map(|o| self.finding(o)).collect(),
        }
    }

    /// Restores a device and its open findings as persisted (no evaluation:
    /// call [`Fleet::recompute`] once everything is loaded).
    pub fn restore(&mut self, report: &DeviceReport, findings: &[Finding]) {
        let _ = self.ingest(report, report.checked_in_at);
        let mut open = Vec::with_capacity(findings.len());
        for f in findings {
            open.push(Open {
                key: Key {
                    kind: f.kind,
                    baseline: f.baseline.as_deref().map_or(NONE32, |b| self.baselines.id(b)),
                    setting: f.setting.as_deref().map_or(NONE16, |s| self.settings.id(s) as u16),
                },
                opened: secs(f.opened_at),
            });
        }
        open.sort_unstable_by_key(|o| o.key);
        if let Some(d) = self.devices.get_mut(report.device.id.as_str()) {
            d.findings = open.into();
        }
    }

    /// Re-evaluates every device (after a desired state changed, an
    /// exception expired, or time passed). Returns the devices whose open
    /// findings changed.
    pub fn recompute(&mut self, now: DateTime<Utc>) -> Vec<DeviceChange> {
        let now = secs(now);
        let mut changes = Vec::new();
        let mut devices = std::mem::take(&mut self.devices);
        let mut scratch = Vec::new();
        for (id, d) in devices.iter_mut() {
            scratch.clear();
            d.suppressed = self.evaluate(id, d, now, &mut scratch);
            if let Some(change) = self.apply(id, d, &scratch, now) {
                changes.push(change);
            }
        }
        self.devices = devices;
        changes
    }

    fn reevaluate(&self, id: &str, d: &mut Device, now: i64) -> Option<DeviceChange> {
        let mut keys = Vec::new();
        d.suppressed = self.evaluate(id, d, now, &mut keys);
        self.apply(id, d, &keys, now)
    }

    /// Replaces `d`'s open findings by `keys` (sorted); the change, if any.
    fn apply(&self, id: &str, d: &mut Device, keys: &[Key], now: i64) -> Option<DeviceChange> {
        if keys.len() == d.findings.len() && keys.iter().zip(d.findings.iter()).all(|(k, o)| *k == o.key) {
            return None;
        }
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let mut next = Vec::with_capacity(keys.len());
        let (mut i, mut j) = (0, 0);
        while i < keys.len() || j < d.findings.len() {
            let new = keys.get(i);
            let old = d.findings.get(j);
            match (new, old) {
                (Some(k), Some(o)) if *k == o.key => {
                    next.push(*o);
                    i += 1;
                    j += 1;
                }
                (Some(k), Some(o)) if *k < o.key => {
                    let open = Open { key: *k, opened: now };
                    opened.push(self.finding(&open));
                    next.push(open);
                    i += 1;
                }
                (Some(k), None) => {
                    let open = Open { key: *k, opened: now };
                    opened.push(self.finding(&open));
                    next.push(open);
                    i += 1;
                }
                (_, Some(o)) => {
                    closed.push(self.finding(o));
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        d.findings = next.into();
        Some(DeviceChange {
            device: id.to_string(),
            ring: self.ring_name(d.ring),
            opened,
            closed,
            open: d.findings.iter().map(|o| self.finding(o)).collect(),
        })
    }

    fn ring_name(&self, ring: u16) -> Option<String> {
        self.rings.get(ring as usize).map(|r| r.name.clone())
    }

    fn finding(&self, o: &Open) -> Finding {
        Finding {
            kind: o.key.kind,
            baseline: (o.key.baseline != NONE32).then(|| self.baselines.name(o.key.baseline).to_string()),
            setting: (o.key.setting != NONE16).then(|| self.settings.name(o.key.setting as u32).to_string()),
            opened_at: time(o.opened),
        }
    }

    /// The findings of `d` at `now`, sorted, into `out`; returns how many
    /// were suppressed by exceptions.
    fn evaluate(&self, id: &str, d: &Device, now: i64, out: &mut Vec<Key>) -> u16 {
        let o = &self.options;
        let mut suppressed = 0u16;
        let key = |kind, baseline, setting| Key {
            kind,
            baseline,
            setting,
        };
        if now - d.checked_in > o.stale_after_secs {
            out.push(key(FindingKind::StaleCheckin, NONE32, NONE16));
        }
        let ring = self.rings.get(d.ring as usize);
        let groups = &self.groupset_list[d.groupset as usize];
        let applicable = |b: &&DesiredB| b.platform == d.platform && intersects(&b.groups, groups);
        if let Some(ring) = ring {
            for b in ring.baselines.iter().filter(applicable) {
                let reported = d
                    .applied
                    .binary_search_by_key(&b.name, |a| a.baseline)
                    .ok()
                    .map(|i| d.applied[i]);
                let past_grace = now - b.since.max(0) > o.grace_secs;
                match reported {
                    Some(a) if a.status == ApplyStatus::Failed => {
                        out.push(key(FindingKind::ApplyFailed, b.name, NONE16));
                    }
                    Some(a) if a.digest == b.digest && a.status == ApplyStatus::Applied => {}
                    _ if past_grace => out.push(key(FindingKind::VersionDrift, b.name, NONE16)),
                    _ => {}
                }
            }
            for &k in d.bad.iter() {
                // The setting belongs to the winning baseline for this device.
                let owner = ring
                    .baselines
                    .iter()
                    .filter(applicable)
                    .filter(|b| b.settings.binary_search(&k).is_ok())
                    .max_by(|a, b| {
                        a.priority
                            .cmp(&b.priority)
                            .then_with(|| self.baselines.name(b.name).cmp(self.baselines.name(a.name)))
                    });
                let Some(owner) = owner else { continue };
                let exempt = ring.exceptions.iter().any(|e| {
                    e.baseline == owner.name
                        && e.expires > now
                        && e.settings.binary_search(&k).is_ok()
                        && (intersects(&e.groups, groups) || e.devices.iter().any(|x| x == id))
                });
                if exempt {
                    suppressed = suppressed.saturating_add(1);
                } else {
                    out.push(key(FindingKind::SettingDrift, owner.name, k));
                }
            }
        }
        for a in d.applied.iter() {
            let known = ring.is_some_and(|r| r.baselines.iter().filter(applicable).any(|b| b.name == a.baseline));
            if !known {
                out.push(key(FindingKind::UnknownBaseline, a.baseline, NONE16));
            }
        }
        out.sort_unstable();
        out.dedup();
        suppressed
    }

    /// Records the ring's non-compliant share at the moment something is
    /// published to it: the reference its gate compares against.
    pub fn published(&mut self, ring: &str, at: DateTime<Utc>) -> Option<GateBaseline> {
        let index = self.rings.iter().position(|r| r.name == ring)?;
        // Told again of the same publish (an outbox redelivery): the
        // reference taken the first time stands.
        if self.gate_baselines.get(ring).is_some_and(|b| b.published_at == at) {
            return None;
        }
        let (mut devices, mut noncompliant) = (0u64, 0u64);
        for d in self.devices.values().filter(|d| d.ring as usize == index) {
            devices += 1;
            noncompliant += u64::from(is_noncompliant(d));
        }
        let baseline = GateBaseline {
            published_at: at,
            noncompliant_share: share(noncompliant, devices),
            devices,
        };
        self.gate_baselines.insert(ring.to_string(), baseline);
        Some(baseline)
    }

    pub fn set_gate_baseline(&mut self, ring: &str, baseline: GateBaseline) {
        self.gate_baselines.insert(ring.to_string(), baseline);
    }

    /// The gate reading of `ring` for a promotion of `revision` that started
    /// soaking at `since` (DESIGN 7).
    pub fn reading(&self, ring: &str, revision: &str, since: DateTime<Utc>) -> GateReading {
        let Some(index) = self.rings.iter().position(|r| r.name == ring) else {
            return GateReading::NoData {
                reason: format!("ring {ring:?} is not in the configuration in force"),
            };
        };
        let r = &self.rings[index];
        if r.desired.is_none() {
            return GateReading::NoData {
                reason: format!("nothing is published to ring {ring:?}"),
            };
        }
        let since = secs(since);
        let stale_before = since - self.options.stale_after_secs;
        let measured: Vec<&DesiredB> = r.baselines.iter().filter(|b| b.revision == revision).collect();
        let (mut considered, mut noncompliant, mut before_nc, mut before) = (0u64, 0u64, 0u64, 0u64);
        let (mut applied_num, mut applied_den) = (0u64, 0u64);
        for d in self.devices.values().filter(|d| d.ring as usize == index) {
            let silent = d.checked_in < since;
            if d.checked_in < stale_before || (silent && self.options.gate_ignore_silent) {
                continue;
            }
            if silent {
                before += 1;
                before_nc += u64::from(is_noncompliant(d));
            }
            considered += 1;
            noncompliant += u64::from(is_noncompliant(d));
            let groups = &self.groupset_list[d.groupset as usize];
            let mut applies = false;
            let mut runs = true;
            for b in measured
                .iter()
                .filter(|b| b.platform == d.platform && intersects(&b.groups, groups))
            {
                applies = true;
                let ok = d
                    .applied
                    .binary_search_by_key(&b.name, |a| a.baseline)
                    .ok()
                    .is_some_and(|i| d.applied[i].digest == b.digest && d.applied[i].status == ApplyStatus::Applied);
                runs &= ok && !silent;
            }
            if applies {
                applied_den += 1;
                applied_num += u64::from(runs);
            }
        }
        if considered < self.options.gate_min_devices.max(1) {
            return GateReading::NoData {
                reason: format!(
                    "ring {ring:?} has {considered} reporting devices; the gate needs at least {}",
                    self.options.gate_min_devices.max(1)
                ),
            };
        }
        let reference = match self.gate_baselines.get(ring) {
            Some(b) if secs(b.published_at) <= since && b.devices > 0 => b.noncompliant_share,
            // No reference recorded (e.g. a restart lost it): devices not heard
            // from since the promotion still show the state before it.
            _ => share(before_nc, before),
        };
        GateReading::Measured {
            applied: if applied_den == 0 {
                1.0
            } else {
                applied_num as f64 / applied_den as f64
            },
            noncompliant_increase: share(noncompliant, considered) - reference,
            devices: considered,
        }
    }

    /// Counts for `/v1/drift`, over devices matching `filter`.
    pub fn summary(&self, filter: &DriftFilter) -> DriftSummary {
        let mut s = DriftSummary::default();
        for ring in self
            .rings
            .iter()
            .filter(|r| filter.ring.as_ref().is_none_or(|f| *f == r.name))
        {
            s.by_ring.entry(ring.name.clone()).or_default();
        }
        for (_, d) in self.matching(filter) {
            s.devices += 1;
            s.suppressed += u64::from(d.suppressed);
            let nc = is_noncompliant(d);
            s.noncompliant_devices += u64::from(nc);
            let ring = self.ring_name(d.ring).unwrap_or_else(|| "(none)".into());
            let rc = s.by_ring.entry(ring).or_default();
            rc.devices += 1;
            rc.noncompliant += u64::from(nc);
            for o in d.findings.iter().filter(|o| self.finding_matches(o, filter)) {
                rc.findings += 1;
                s.findings += 1;
                *s.by_kind.entry(o.key.kind.as_str().into()).or_default() += 1;
                if o.key.baseline != NONE32 {
                    *s.by_baseline
                        .entry(self.baselines.name(o.key.baseline).into())
                        .or_default() += 1;
                }
                if o.key.setting != NONE16 {
                    *s.by_setting
                        .entry(self.settings.name(o.key.setting as u32).into())
                        .or_default() += 1;
                }
            }
        }
        s.rings = self
            .rings
            .iter()
            .map(|r| r.name.clone())
            .filter(|name| s.by_ring.contains_key(name))
            .collect();
        let unlisted: Vec<String> = s.by_ring.keys().filter(|k| !s.rings.contains(k)).cloned().collect();
        s.rings.extend(unlisted);
        s
    }

    /// Devices with a finding matching `filter`, by id, at most `limit`
    /// after `after` (exclusive), for paging.
    pub fn list(&self, filter: &DriftFilter, after: Option<&str>, limit: usize) -> Vec<DeviceView> {
        let mut ids: Vec<&str> = self
            .matching(filter)
            .filter(|(_, d)| d.findings.iter().any(|o| self.finding_matches(o, filter)))
            .map(|(id, _)| id)
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids.into_iter()
            .map(|id| {
                let d = &self.devices[id];
                DeviceView {
                    id: id.to_string(),
                    platform: d.platform,
                    ring: self.ring_name(d.ring),
                    checked_in_at: time(d.checked_in),
                    findings: d
                        .findings
                        .iter()
                        .filter(|o| self.finding_matches(o, filter))
                        .map(|o| self.finding(o))
                        .collect(),
                }
            })
            .collect()
    }

    /// One device's view, whatever its findings.
    pub fn device(&self, id: &str) -> Option<DeviceView> {
        let d = self.devices.get(id)?;
        Some(DeviceView {
            id: id.to_string(),
            platform: d.platform,
            ring: self.ring_name(d.ring),
            checked_in_at: time(d.checked_in),
            findings: d.findings.iter().map(|o| self.finding(o)).collect(),
        })
    }

    fn matching<'a>(&'a self, filter: &'a DriftFilter) -> impl Iterator<Item = (&'a str, &'a Device)> + 'a {
        let ring = filter.ring.as_ref().map(|r| {
            self.rings
                .iter()
                .position(|x| &x.name == r)
                .map_or(NONE16 - 1, |i| i as u16)
        });
        self.devices
            .iter()
            .map(|(id, d)| (&**id, d))
            .filter(move |(_, d)| ring.is_none_or(|r| d.ring == r))
    }

    fn finding_matches(&self, o: &Open, f: &DriftFilter) -> bool {
        f.kind.is_none_or(|k| o.key.kind == k)
            && f.baseline
                .as_deref()
                .is_none_or(|b| o.key.baseline != NONE32 && self.baselines.name(o.key.baseline) == b)
            && f.setting
                .as_deref()
                .is_none_or(|s| o.key.setting != NONE16 && self.settings.name(o.key.setting as u32) == s)
    }

    /// Groups of findings past their tier's deadline at `now`: what becomes
    /// remediation work for the baseline's owners.
    pub fn overdue(&self, now: DateTime<Utc>) -> Vec<Overdue> {
        let now = secs(now);
        let catalog = Catalog::builtin();
        let mut groups: BTreeMap<Key, Overdue> = BTreeMap::new();
        for (id, d) in &self.devices {
            let ring = self.rings.get(d.ring as usize);
            for o in d.findings.iter().filter(|o| o.key.baseline != NONE32) {
                let desired = ring.and_then(|r| r.baselines.iter().find(|b| b.name == o.key.baseline));
                let setting = (o.key.setting != NONE16).then(|| self.settings.name(o.key.setting as u32));
                let tier = match (o.key.kind, setting) {
                    (FindingKind::SettingDrift, Some(k)) => catalog.get(k).map_or(1, |e| e.default_tier),
                    (FindingKind::UnknownBaseline, _) => 1,
                    _ => desired.map_or(1, |b| b.tier),
                }
                .min(3);
                if now - o.opened < self.options.remediation_secs[tier as usize] {
                    continue;
                }
                let baseline = self.baselines.name(o.key.baseline).to_string();
                let item = groups.entry(o.key).or_insert_with(|| Overdue {
                    id: match setting {
                        Some(s) => format!("{baseline}/{}/{s}", o.key.kind.as_str()),
                        None => format!("{baseline}/{}", o.key.kind.as_str()),
                    },
                    baseline: baseline.clone(),
                    kind: o.key.kind,
                    setting: setting.map(String::from),
                    owners: desired.map(|b| b.owners.to_vec()).unwrap_or_default(),
                    tier,
                    devices: 0,
                    since: time(o.opened),
                    sample: Vec::new(),
                });
                item.devices += 1;
                item.tier = item.tier.max(tier);
                if item.owners.is_empty() {
                    if let Some(b) = desired {
                        item.owners = b.owners.to_vec();
                    }
                }
                item.since = item.since.min(time(o.opened));
                if item.sample.len() < 5 {
                    item.sample.push(id.to_string());
                }
            }
        }
        let mut items: Vec<Overdue> = groups.into_values().collect();
        for item in &mut items {
            item.sample.sort();
        }
        items
    }

    /// Exceptions in any ring that have expired by `now`: `(ring, name, expires)`.
    pub fn expired_exceptions(&self, now: DateTime<Utc>) -> Vec<(String, String, DateTime<Utc>)> {
        let now = secs(now);
        self.rings
            .iter()
            .flat_map(|r| {
                r.exceptions
                    .iter()
                    .filter(move |e| e.expires <= now)
                    .map(move |e| (r.name.clone(), e.name.clone(), time(e.expires)))
            })
            .collect()
    }

    /// An estimate of the index's heap and table memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(Box<str>, Device)>() + 8;
        let devices: usize = self
            .devices
            .iter()
            .map(|(id, d)| {
                id.len()
                    + d.applied.len() * std::mem::size_of::<AppliedC>()
                    + d.bad.len() * 2
                    + d.findings.len() * std::mem::size_of::<Open>()
            })
            .sum::<usize>()
            + self.devices.capacity() * per_entry;
        let sets: usize = self.groupset_list.iter().map(|s| 2 * (s.len() * 4 + 40)).sum();
        devices + sets + self.groups.bytes() + self.baselines.bytes() + self.digests.bytes() + self.settings.bytes()
    }
}

fn is_noncompliant(d: &Device) -> bool {
    d.findings.iter().any(|o| o.key.kind.noncompliant())
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
