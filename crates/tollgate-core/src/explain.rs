//! Which baseline wins for a device group, and where baselines conflict.
//!
//! A device in several groups may be targeted by several baselines of its
//! platform. Per setting, the baseline with the highest priority wins; two
//! baselines with equal priority and different values are a conflict, which
//! `validate` reports and `explain` shows instead of picking silently.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Catalog, Direction};
use crate::format::{Baseline, Scope};
use crate::ids::Platform;
use crate::snapshot::{Located, Snapshot};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contender {
    pub baseline: String,
    pub path: String,
    pub priority: i64,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSetting {
    pub key: String,
    /// The value that applies; `null` while the key is in conflict.
    pub value: Value,
    /// The winning baseline; `null` while the key is in conflict.
    pub baseline: Option<String>,
    pub why: String,
    /// Every baseline that sets the key, winner first.
    pub contenders: Vec<Contender>,
    /// Active exceptions for this group that exempt the key.
    pub exempted_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub platform: Platform,
    pub group: String,
    pub baselines: Vec<String>,
    pub settings: Vec<EffectiveSetting>,
}

/// Effective settings for devices of `platform` in `group`.
pub fn explain(snap: &Snapshot, platform: Platform, group: &str, now: chrono::DateTime<chrono::Utc>) -> Explanation {
    let applicable: Vec<&Located<Baseline>> = snap
        .baselines
        .values()
        .map(|b| &**b)
        .filter(|b| b.doc.platform == platform && b.doc.target_groups.iter().any(|g| g == group))
        .collect();
    let by_key = contenders(&applicable);
    let settings = by_key
        .into_iter()
        .map(|(key, mut cs)| {
            let Decision { value, baseline, why } = decide(&mut cs);
            let exempted_by = snap
                .exceptions
                .values()
                .filter(|e| {
                    e.doc.expires > now
                        && e.doc.settings.iter().any(|s| s == key)
                        && matches!(&e.doc.scope, Scope::Groups(g) if g.iter().any(|g| g == group))
                        && baseline.as_deref() == Some(e.doc.baseline.as_str())
                })
                .map(|e| e.doc.name.clone())
                .collect();
            EffectiveSetting {
                key: key.to_string(),
                value,
                baseline,
                why,
                contenders: cs,
                exempted_by,
            }
        })
        .collect();
    Explanation {
        platform,
        group: group.to_string(),
        baselines: applicable.iter().map(|b| b.doc.name.clone()).collect(),
        settings,
    }
}

/// Which contender's value applies to a key, and why.
struct Decision {
    /// `null` while the key is in conflict.
    value: Value,
    /// `None` while the key is in conflict.
    baseline: Option<String>,
    why: String,
}

/// Sorts `cs` winner first (highest priority, then name) and decides: the
/// highest priority wins; contenders tied at the top with different values
/// are a conflict, which no one wins.
fn decide(cs: &mut [Contender]) -> Decision {
    cs.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.baseline.cmp(&b.baseline)));
    let top = cs[0].priority;
    let tied: Vec<&Contender> = cs.iter().filter(|c| c.priority == top).collect();
    let conflict = tied.iter().any(|c| c.value != tied[0].value);
    let names = || tied.iter().map(|c| c.baseline.as_str()).collect::<Vec<_>>().join(", ");
    if conflict {
        Decision {
            value: Value::Null,
            baseline: None,
            why: format!("CONFLICT: {} set different values at equal priority {top}", names()),
        }
    } else {
        let why = if cs.len() == 1 {
            "only baseline that sets it".to_string()
        } else if tied.len() > 1 {
            format!("{} agree at priority {top}", names())
        } else {
            format!("priority {top} beats {} ({})", cs[1].baseline, cs[1].priority)
        };
        Decision {
            value: cs[0].value.clone(),
            baseline: Some(cs[0].baseline.clone()),
            why,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub platform: Platform,
    pub key: String,
    pub priority: i64,
    /// Groups both baselines target.
    pub groups: Vec<String>,
    pub baselines: Vec<Contender>,
}

/// Pairs of baselines of one platform whose targets overlap and that set one
/// key to different values at equal priority.
pub fn conflicts(snap: &Snapshot) -> Vec<Conflict> {
    let list: Vec<_> = snap.baselines.values().collect();
    // Only baselines of one platform and priority that share a group can
    // conflict: find those pairs through an index rather than trying every
    // pair of a large repo. Pairs come out in the order of a nested loop
    // over `list`.
    let mut by_group: BTreeMap<(Platform, i64, &str), Vec<usize>> = BTreeMap::new();
    for (i, b) in list.iter().enumerate() {
        for g in &b.doc.target_groups {
            by_group.entry((b.doc.platform, b.doc.priority, g)).or_default().push(i);
        }
    }
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for ids in by_group.values() {
        for (x, &i) in ids.iter().enumerate() {
            pairs.extend(ids[x + 1..].iter().map(|&j| (i, j)));
        }
    }
    let mut out = Vec::new();
    for (i, j) in pairs {
        let (a, b) = (list[i], list[j]);
        let ga: BTreeSet<&String> = a.doc.target_groups.iter().collect();
        let shared: Vec<String> = b.doc.target_groups.iter().filter(|g| ga.contains(g)).cloned().collect();
        for (key, va) in &a.doc.settings {
            match b.doc.settings.get(key) {
                Some(vb) if vb != va => out.push(Conflict {
                    platform: a.doc.platform,
                    key: key.clone(),
                    priority: a.doc.priority,
                    groups: shared.clone(),
                    baselines: [(a, va), (b, vb)]
                        .iter()
                        .map(|(x, v)| Contender {
                            baseline: x.doc.name.clone(),
                            path: x.path.to_string(),
                            priority: x.doc.priority,
                            value: (*v).clone(),
                        })
                        .collect(),
                }),
                _ => {}
            }
        }
    }
    out
}

/// A change of what devices of one platform and target group get for one
/// setting, because the baseline it comes from changed: another baseline
/// now wins the key for them, the one that did no longer applies, or the
/// key fell into (or out of) a conflict. What a baseline's own setting diff
/// already says is not repeated here: the same baseline winning before and
/// after, or devices that had nothing for a key getting it from the baseline
/// that adds it. (A baseline widened to a group does show what that group
/// now gets: its setting diff does not.)
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveChange {
    pub platform: Platform,
    pub group: String,
    pub key: String,
    /// What devices got at the base; `null` when nothing set it or it was in conflict.
    pub old: Value,
    /// What they get at the head; `null` when nothing sets it or it is in conflict.
    pub new: Value,
    /// From `old` to `new` by the catalogue's secure direction; `unknown`
    /// when either side is a conflict (no one can say what devices get).
    pub direction: Direction,
    /// The baseline the value comes from at the head.
    pub baseline: Option<String>,
    /// The baseline it came from at the base: the one overridden or left.
    pub overridden: Option<String>,
    /// `overridden` still sets the key for this group at the head, and
    /// `baseline` beats it by priority.
    pub overridden_applies: bool,
    pub conflict_before: bool,
    pub conflict_after: bool,
    /// Changed baselines whose say on this key for this group changed: the
    /// changes that cause this one. Never empty.
    #[serde(skip)]
    pub causes: Vec<String>,
}

/// The effective settings, as [`explain`] resolves them, that differ between
/// two whole revisions, per (platform, target group) of every baseline that
/// changed, in platform, group and key order. Exceptions are not applied:
/// an exception is judged as one of its own.
pub fn effective_changes(base: &Snapshot, head: &Snapshot, catalog: &Catalog) -> Vec<EffectiveChange> {
    let changed: BTreeSet<&str> = base
        .baselines
        .keys()
        .chain(head.baselines.keys())
        .filter(|n| base.baselines.get(*n).map(|b| &b.digest) != head.baselines.get(*n).map(|b| &b.digest))
        .map(String::as_str)
        .collect();
    let mut touched: BTreeSet<(Platform, &str)> = BTreeSet::new();
    for name in &changed {
        for b in [base, head].iter().filter_map(|s| s.baselines.get(*name)) {
            touched.extend(b.doc.target_groups.iter().map(|g| (b.doc.platform, g.as_str())));
        }
    }
    if touched.is_empty() {
        return Vec::new();
    }
    let (before_index, after_index) = (targeting(base, &touched), targeting(head, &touched));
    let none = Vec::new();
    let mut out = Vec::new();
    for pair @ (platform, group) in &touched {
        let before = contenders(before_index.get(pair).unwrap_or(&none));
        let after = contenders(after_index.get(pair).unwrap_or(&none));
        let keys: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
        for key in keys {
            let mut b = before.get(key).cloned().unwrap_or_default();
            let mut a = after.get(key).cloned().unwrap_or_default();
            let old = (!b.is_empty()).then(|| decide(&mut b));
            let new = (!a.is_empty()).then(|| decide(&mut a));
            let winner = |d: &Option<Decision>| d.as_ref().and_then(|d| d.baseline.clone());
            let in_conflict = |d: &Option<Decision>| d.as_ref().is_some_and(|d| d.baseline.is_none());
            let (old_winner, new_winner) = (winner(&old), winner(&new));
            let (conflict_before, conflict_after) = (in_conflict(&old), in_conflict(&new));
            if old_winner == new_winner && conflict_before == conflict_after {
                continue;
            }
            // Devices had nothing for the key and the baseline that now gives
            // it to them adds the key: its own setting diff says exactly that.
            let added_by_winner = |w: &String| base.baselines.get(w).is_none_or(|b| !b.doc.settings.contains_key(key));
            if old.is_none() && new_winner.as_ref().is_some_and(added_by_winner) {
                continue;
            }
            let causes: Vec<String> = changed
                .iter()
                .filter(|n| say(base, n, *platform, group, key) != say(head, n, *platform, group, key))
                .map(|n| n.to_string())
                .collect();
            let value = |d: &Option<Decision>| d.as_ref().map_or(Value::Null, |d| d.value.clone());
            let (old_value, new_value) = (value(&old), value(&new));
            let direction = if conflict_before || conflict_after {
                Direction::Unknown
            } else {
                catalog.get(key).map_or(Direction::Unknown, |e| {
                    e.direction(old.as_ref().map(|_| &old_value), new.as_ref().map(|_| &new_value))
                })
            };
            out.push(EffectiveChange {
                platform: *platform,
                group: group.to_string(),
                key: key.to_string(),
                overridden_applies: old_winner.as_ref().is_some_and(|w| a.iter().any(|c| &c.baseline == w)),
                old: old_value,
                new: new_value,
                direction,
                baseline: new_winner,
                overridden: old_winner,
                conflict_before,
                conflict_after,
                causes,
            });
        }
    }
    out
}

/// What baseline `name` of `snap` says about `key` for (platform, group):
/// its priority and value, or nothing when it does not set the key there.
fn say<'a>(snap: &'a Snapshot, name: &str, platform: Platform, group: &str, key: &str) -> Option<(i64, &'a Value)> {
    snap.baselines
        .get(name)
        .filter(|x| x.doc.platform == platform && x.doc.target_groups.iter().any(|g| g == group))
        .and_then(|x| x.doc.settings.get(key).map(|v| (x.doc.priority, v)))
}

/// The baselines of `snap` targeting each of the `wanted` (platform, group) pairs.
fn targeting<'a>(
    snap: &'a Snapshot,
    wanted: &BTreeSet<(Platform, &str)>,
) -> BTreeMap<(Platform, &'a str), Vec<&'a Located<Baseline>>> {
    let mut out: BTreeMap<(Platform, &'a str), Vec<&'a Located<Baseline>>> = BTreeMap::new();
    for b in snap.baselines.values() {
        for g in &b.doc.target_groups {
            if wanted.contains(&(b.doc.platform, g.as_str())) {
                out.entry((b.doc.platform, g.as_str())).or_default().push(&**b);
            }
        }
    }
    out
}

/// Every baseline that sets each key, among `baselines`.
fn contenders<'a>(baselines: &[&'a Located<Baseline>]) -> BTreeMap<&'a str, Vec<Contender>> {
    let mut by_key: BTreeMap<&'a str, Vec<Contender>> = BTreeMap::new();
    for b in baselines {
        for (k, v) in &b.doc.settings {
            by_key.entry(k.as_str()).or_default().push(Contender {
                baseline: b.doc.name.clone(),
                path: b.path.to_string(),
                priority: b.doc.priority,
                value: v.clone(),
            });
        }
    }
    by_key
}
