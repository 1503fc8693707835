//! Which baseline wins for a device group, and where baselines conflict.
//!
//! A device in several groups may be targeted by several baselines of its
//! platform. Per setting, the baseline with the highest priority wins; two
//! baselines with equal priority and different values are a conflict, which
//! `validate` reports and `explain` shows instead of picking silently.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::format::Scope;
use crate::ids::Platform;
use crate::snapshot::Snapshot;

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
    let applicable: Vec<_> = snap
        .baselines
        .values()
        .filter(|b| b.doc.platform == platform && b.doc.target_groups.iter().any(|g| g == group))
        .collect();
    let mut by_key: BTreeMap<&String, Vec<Contender>> = BTreeMap::new();
    for b in &applicable {
        for (k, v) in &b.doc.settings {
            by_key.entry(k).or_default().push(Contender {
                baseline: b.doc.name.clone(),
                path: b.path.to_string(),
                priority: b.doc.priority,
                value: v.clone(),
            });
        }
    }
    let settings = by_key
        .into_iter()
        .map(|(key, mut cs)| {
            cs.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.baseline.cmp(&b.baseline)));
            let top = cs[0].priority;
            let tied: Vec<&Contender> = cs.iter().filter(|c| c.priority == top).collect();
            let conflict = tied.iter().any(|c| c.value != tied[0].value);
            let (value, baseline, why) = if conflict {
                let names: Vec<&str> = tied.iter().map(|c| c.baseline.as_str()).collect();
                (
                    Value::Null,
                    None,
                    format!(
                        "CONFLICT: {} set different values at equal priority {top}",
                        names.join(", ")
                    ),
                )
            } else if cs.len() == 1 {
                (
                    cs[0].value.clone(),
                    Some(cs[0].baseline.clone()),
                    "only baseline that sets it".to_string(),
                )
            } else if tied.len() > 1 {
                let names: Vec<&str> = tied.iter().map(|c| c.baseline.as_str()).collect();
                (
                    cs[0].value.clone(),
                    Some(cs[0].baseline.clone()),
                    format!("{} agree at priority {top}", names.join(", ")),
                )
            } else {
                let next = &cs[1];
                (
                    cs[0].value.clone(),
                    Some(cs[0].baseline.clone()),
                    format!("priority {top} beats {} ({})", next.baseline, next.priority),
                )
            };
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
                key: key.clone(),
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
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            if a.doc.platform != b.doc.platform || a.doc.priority != b.doc.priority {
                continue;
            }
            let ga: BTreeSet<&String> = a.doc.target_groups.iter().collect();
            let shared: Vec<String> = b.doc.target_groups.iter().filter(|g| ga.contains(g)).cloned().collect();
            if shared.is_empty() {
                continue;
            }
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
    }
    out
}
