//! Semantic diff between two revisions (DESIGN 4).
//!
//! Documents are matched by kind and `metadata.name`, so a file that moves or
//! is renamed is one change, not a removal plus an addition. Within a
//! baseline the diff is per setting, with set-valued settings compared as
//! sets of member ids.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::{Catalog, Direction};
use crate::format::{Baseline, Exception};
use crate::ids::{Digest, Platform};
use crate::snapshot::{Located, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    Baseline,
    Exception,
    Governance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Added,
    Modified,
    Removed,
    Renamed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingOp {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingChange {
    pub key: String,
    pub op: SettingOp,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub direction: Direction,
    /// For set-valued settings: member ids added and removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members_removed: Vec<String>,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Baseline => "baseline",
            DocKind::Exception => "exception",
            DocKind::Governance => "governance",
        }
    }
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Added => "added",
            ChangeOp::Modified => "modified",
            ChangeOp::Removed => "removed",
            ChangeOp::Renamed => "renamed",
        }
    }
}

/// A change to a document field outside `spec.settings` (owners, priority,
/// platform, exception scope, expiry...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// The change of one document between base and head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocChange {
    pub kind: DocKind,
    pub op: ChangeOp,
    pub name: String,
    /// Path at head (at base for removals).
    pub path: String,
    /// Path at base when the document moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub settings: Vec<SettingChange>,
    pub fields: Vec<FieldChange>,
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    pub base_digest: Option<Digest>,
    pub head_digest: Option<Digest>,
}

impl DocChange {
    /// True when nothing of meaning changed (a reformatting or a pure move
    /// keeps the digest; a move is still reported as `renamed`).
    pub fn is_noop(&self) -> bool {
        self.base_digest == self.head_digest && self.op != ChangeOp::Renamed
    }
}

/// Diffs two revisions. Either side may be partial (only the files a commit
/// touched): a document present on one side only is added or removed.
pub fn diff_snapshots(base: &Snapshot, head: &Snapshot, catalog: &Catalog) -> Vec<DocChange> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = base.baselines.keys().chain(head.baselines.keys()).collect();
    for name in names {
        let (b, h) = (
            base.baselines.get(name).map(|b| &**b),
            head.baselines.get(name).map(|h| &**h),
        );
        // Whole revisions share most documents: skip the unchanged ones
        // before diffing them (what `is_noop` would drop anyway).
        if unchanged(b, h) {
            continue;
        }
        let c = diff_baseline(name, b, h, catalog);
        out.extend(c.filter(|c| !c.is_noop()));
    }
    let names: BTreeSet<&String> = base.exceptions.keys().chain(head.exceptions.keys()).collect();
    for name in names {
        let (b, h) = (
            base.exceptions.get(name).map(|b| &**b),
            head.exceptions.get(name).map(|h| &**h),
        );
        if unchanged(b, h) {
            continue;
        }
        let c = diff_exception(name, b, h);
        out.extend(c.filter(|c| !c.is_noop()));
    }
    let gov = governance_change("config", gov_side(base.config.as_ref()), gov_side(head.config.as_ref()));
    out.extend(gov.filter(|c| !c.is_noop()));
    let paths: BTreeSet<_> = base.policies.keys().chain(head.policies.keys()).collect();
    for path in paths {
        let c = governance_change(
            path.as_str(),
            gov_side(base.policies.get(path).map(|p| &**p)),
            gov_side(head.policies.get(path).map(|p| &**p)),
        );
        out.extend(c.filter(|c| !c.is_noop()));
    }
    out
}

/// The same document, same digest, same path: no change at all.
fn unchanged<T>(base: Option<&Located<T>>, head: Option<&Located<T>>) -> bool {
    matches!((base, head), (Some(b), Some(h)) if b.digest == h.digest && b.path == h.path)
}

fn gov_side<T>(l: Option<&Located<T>>) -> Option<(&str, &Value, &Digest)> {
    l.map(|l| (l.path.as_str(), &l.canonical, &l.digest))
}

fn op_of<T>(base: Option<&Located<T>>, head: Option<&Located<T>>) -> ChangeOp {
    match (base, head) {
        (None, _) => ChangeOp::Added,
        (_, None) => ChangeOp::Removed,
        (Some(b), Some(h)) if b.path != h.path => ChangeOp::Renamed,
        _ => ChangeOp::Modified,
    }
}

fn paths<T>(base: Option<&Located<T>>, head: Option<&Located<T>>) -> (String, Option<String>) {
    match (base, head) {
        (Some(b), Some(h)) if b.path != h.path => (h.path.to_string(), Some(b.path.to_string())),
        (_, Some(h)) => (h.path.to_string(), None),
        (Some(b), None) => (b.path.to_string(), None),
        (None, None) => unreachable!("a name comes from one of the sides"),
    }
}

fn diff_baseline(
    name: &str,
    base: Option<&Located<Baseline>>,
    head: Option<&Located<Baseline>>,
    catalog: &Catalog,
) -> Option<DocChange> {
    if base.is_none() && head.is_none() {
        return None;
    }
    let (path, old_path) = paths(base, head);
    let (b, h) = (base.map(|l| &l.doc), head.map(|l| &l.doc));
    let settings = diff_settings(b, h, catalog);
    let groups = |x: Option<&Baseline>| {
        x.map(|x| x.target_groups.iter().cloned().collect::<BTreeSet<_>>())
            .unwrap_or_default()
    };
    let (gb, gh) = (groups(b), groups(h));
    let mut fields = Vec::new();
    if let (Some(b), Some(h)) = (b, h) {
        field(
            &mut fields,
            "metadata.owners",
            sorted_json(&b.owners),
            sorted_json(&h.owners),
        );
        field(&mut fields, "spec.platform", json!(b.platform), json!(h.platform));
        field(&mut fields, "spec.priority", json!(b.priority), json!(h.priority));
    }
    Some(DocChange {
        kind: DocKind::Baseline,
        op: op_of(base, head),
        name: name.to_string(),
        path,
        old_path,
        platform: h.or(b).map(|x| x.platform),
        settings,
        fields,
        groups_added: gh.difference(&gb).cloned().collect(),
        groups_removed: gb.difference(&gh).cloned().collect(),
        base_digest: base.map(|l| l.digest.clone()),
        head_digest: head.map(|l| l.digest.clone()),
    })
}

fn sorted_json(list: &[String]) -> Value {
    let mut v = list.to_vec();
    v.sort();
    json!(v)
}

fn field(out: &mut Vec<FieldChange>, name: &str, old: Value, new: Value) {
    if old != new {
        out.push(FieldChange {
            field: name.to_string(),
            old,
            new,
        });
    }
}

/// Per-setting diff. A removed baseline shows all its settings removed, an
/// added one all added, so the policy sees exactly what devices lose or gain.
pub fn diff_settings(base: Option<&Baseline>, head: Option<&Baseline>, catalog: &Catalog) -> Vec<SettingChange> {
    let empty = Default::default();
    let b = base.map_or(&empty, |x| &x.settings);
    let h = head.map_or(&empty, |x| &x.settings);
    let mut out = Vec::new();
    // Both maps are sorted: walk them side by side, and skip equal values
    // before any catalogue work (most settings of a large baseline are).
    for (key, old, new) in merge_sorted(b, h) {
        if old == new {
            continue;
        }
        let entry = catalog.get(key);
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        if let (Some(e), Some(Value::Array(o)), Some(Value::Array(n))) = (entry, old, new) {
            if e.is_set() {
                let ids = |xs: &Vec<Value>| xs.iter().filter_map(|m| e.set_member_id(m)).collect::<BTreeSet<_>>();
                let (io, inew) = (ids(o), ids(n));
                added = inew.difference(&io).cloned().collect();
                removed = io.difference(&inew).cloned().collect();
                // Members with an unchanged id but different fields (a root
                // re-issued under the same name) count as removed and re-added.
                for m in n {
                    if let Some(id) = e.set_member_id(m) {
                        if io.contains(&id) && !o.contains(m) {
                            added.push(id.clone());
                            removed.push(id);
                        }
                    }
                }
                added.sort();
                removed.sort();
                if added.is_empty() && removed.is_empty() {
                    continue; // same set, different order
                }
            }
        }
        let op = match (old, new) {
            (None, Some(_)) => SettingOp::Added,
            (Some(_), None) => SettingOp::Removed,
            (Some(o), Some(n)) if o != n => SettingOp::Changed,
            _ => continue,
        };
        let direction = entry.map_or(Direction::Unknown, |e| e.direction(old, new));
        out.push(SettingChange {
            key: key.clone(),
            op,
            old: old.cloned(),
            new: new.cloned(),
            direction,
            members_added: added,
            members_removed: removed,
        });
    }
    out
}

/// The union of two sorted maps' keys with each side's value, in key order.
fn merge_sorted<'a, V>(
    a: &'a std::collections::BTreeMap<String, V>,
    b: &'a std::collections::BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, Option<&'a V>, Option<&'a V>)> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (None, None) => None,
        (Some(_), None) => a.next().map(|(k, v)| (k, Some(v), None)),
        (None, Some(_)) => b.next().map(|(k, v)| (k, None, Some(v))),
        (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None)),
            std::cmp::Ordering::Greater => b.next().map(|(k, v)| (k, None, Some(v))),
            std::cmp::Ordering::Equal => {
                let (k, va) = a.next().expect("peeked");
                let (_, vb) = b.next().expect("peeked");
                Some((k, Some(va), Some(vb)))
            }
        },
    })
}

fn diff_exception(
    name: &str,
    base: Option<&Located<Exception>>,
    head: Option<&Located<Exception>>,
) -> Option<DocChange> {
    if base.is_none() && head.is_none() {
        return None;
    }
    let (path, old_path) = paths(base, head);
    let spec = |l: Option<&Located<Exception>>| l.map_or(Value::Null, |l| l.canonical["spec"].clone());
    let (sb, sh) = (spec(base), spec(head));
    let mut fields = Vec::new();
    for f in ["baseline", "settings", "scope", "reason", "expires"] {
        field(
            &mut fields,
            &format!("spec.{f}"),
            sb.get(f).cloned().unwrap_or(Value::Null),
            sh.get(f).cloned().unwrap_or(Value::Null),
        );
    }
    Some(DocChange {
        kind: DocKind::Exception,
        op: op_of(base, head),
        name: name.to_string(),
        path,
        old_path,
        platform: None,
        settings: Vec::new(),
        fields,
        groups_added: Vec::new(),
        groups_removed: Vec::new(),
        base_digest: base.map(|l| l.digest.clone()),
        head_digest: head.map(|l| l.digest.clone()),
    })
}

fn governance_change(
    name: &str,
    base: Option<(&str, &Value, &Digest)>,
    head: Option<(&str, &Value, &Digest)>,
) -> Option<DocChange> {
    let (path, old_path, op) = match (base, head) {
        (None, None) => return None,
        (None, Some(h)) => (h.0.to_string(), None, ChangeOp::Added),
        (Some(b), None) => (b.0.to_string(), None, ChangeOp::Removed),
        (Some(b), Some(h)) if b.0 != h.0 => (h.0.to_string(), Some(b.0.to_string()), ChangeOp::Renamed),
        (Some(_), Some(h)) => (h.0.to_string(), None, ChangeOp::Modified),
    };
    let mut fields = Vec::new();
    if let (Some(b), Some(h)) = (base, head) {
        leaf_changes(&mut fields, String::new(), b.1, h.1);
    }
    Some(DocChange {
        kind: DocKind::Governance,
        op,
        name: name.to_string(),
        path,
        old_path,
        platform: None,
        settings: Vec::new(),
        fields,
        groups_added: Vec::new(),
        groups_removed: Vec::new(),
        base_digest: base.map(|b| b.2.clone()),
        head_digest: head.map(|h| h.2.clone()),
    })
}

/// Lists every leaf that differs between two JSON values, by path
/// (`rings[0].soak_secs`), so a governance change reads as what it changes.
/// Lists of named objects (rings) are matched by position: reordering rings
/// is itself a change of meaning.
fn leaf_changes(out: &mut Vec<FieldChange>, path: String, old: &Value, new: &Value) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaf_changes(
                    out,
                    p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                leaf_changes(
                    out,
                    format!("{path}[{i}]"),
                    a.get(i).unwrap_or(&Value::Null),
                    b.get(i).unwrap_or(&Value::Null),
                );
            }
        }
        _ => field(out, &path, old.clone(), new.clone()),
    }
}

/// A unified text diff of two versions of a file, for people.
pub fn unified_text(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    // RawMyers: the plain shortest edit script, so the text diff is the one
    // similar 2 made (its default Myers now takes output-changing shortcuts).
    similar::TextDiff::configure()
        .algorithm(similar::Algorithm::RawMyers)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}
