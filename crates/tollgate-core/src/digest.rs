//! Canonical JSON and content digests (DESIGN 4).
//!
//! The digest is `sha256:` of a document's canonical JSON: keys sorted, no
//! insignificant whitespace, and members of set-valued settings (and of
//! owner/group lists, which are sets too) sorted, so that reformatting,
//! reordering keys or reordering a set never changes it while any change of
//! meaning does. Approvals bind to these digests.

use serde_json::{json, Value};

use crate::catalog::Catalog;
use crate::format::{Baseline, Config, Exception, RingSelector, Scope};
use crate::ids::Digest;

/// Compact JSON with object keys sorted at every level. Sorting is done
/// here rather than left to serde_json's map type, whose order depends on a
/// crate feature any dependency could switch on.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn sorted(list: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = list.iter().collect();
    v.sort();
    v
}

/// A setting value in canonical form: set members ordered by their identity.
pub fn canonical_setting(catalog: &Catalog, key: &str, value: &Value) -> Value {
    match (catalog.get(key), value) {
        (Some(entry), Value::Array(items)) if entry.is_set() => {
            let mut items = items.clone();
            items.sort_by_cached_key(|m| entry.set_member_id(m).unwrap_or_else(|| canonical_json(m)));
            Value::Array(items)
        }
        _ => value.clone(),
    }
}

pub fn baseline_json(b: &Baseline, catalog: &Catalog) -> Value {
    let settings: serde_json::Map<String, Value> = b
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), canonical_setting(catalog, k, v)))
        .collect();
    json!({
        "apiVersion": crate::format::API_VERSION,
        "kind": "Baseline",
        "metadata": {"name": b.name, "owners": sorted(&b.owners)},
        "spec": {
            "platform": b.platform,
            "priority": b.priority,
            "targets": {"groups": sorted(&b.target_groups)},
            "settings": settings,
        }
    })
}

pub fn exception_json(e: &Exception) -> Value {
    let scope = match &e.scope {
        Scope::Groups(g) => json!({"groups": sorted(g)}),
        Scope::Devices(d) => json!({"devices": sorted(d)}),
    };
    json!({
        "apiVersion": crate::format::API_VERSION,
        "kind": "Exception",
        "metadata": {"name": e.name},
        "spec": {
            "baseline": e.baseline,
            "settings": sorted(&e.settings),
            "scope": scope,
            "reason": e.reason,
            "expires": e.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    })
}

pub fn config_json(c: &Config) -> Value {
    let rings: Vec<Value> = c
        .rings
        .iter()
        .map(|r| {
            let selector = match &r.selector {
                RingSelector::All => json!({"all": true}),
                RingSelector::Groups(g) => json!({"groups": sorted(g)}),
            };
            let gate = r.gate.map(
                |g| json!({"min_applied": g.min_applied, "max_noncompliant_increase": g.max_noncompliant_increase}),
            );
            json!({"name": r.name, "selector": selector, "soak_secs": r.soak_secs, "gate": gate})
        })
        .collect();
    let approvers: serde_json::Map<String, Value> = c
        .approvers
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                json!({"forge_team": a.forge_team, "users": sorted(&a.users)}),
            )
        })
        .collect();
    let windows: serde_json::Map<String, Value> = c
        .windows
        .iter()
        .map(|(k, w)| {
            let days: Vec<String> = w.days.iter().map(|d| d.to_string().to_lowercase()).collect();
            let (start, end) = (w.start.format("%H:%M").to_string(), w.end.format("%H:%M").to_string());
            (
                k.clone(),
                json!({"days": days, "start": start, "end": end, "tz": w.tz.name()}),
            )
        })
        .collect();
    let freezes: Vec<Value> = c
        .freezes
        .iter()
        .map(|f| json!({"from": f.from.to_string(), "to": f.to.to_string(), "reason": f.reason}))
        .collect();
    json!({
        "apiVersion": crate::format::API_VERSION,
        "kind": "Config",
        "metadata": {"name": c.name},
        "rings": rings, "approvers": approvers, "windows": windows, "freezes": freezes,
    })
}

pub fn digest_of(value: &Value) -> Digest {
    Digest::from_canonical_bytes(canonical_json(value).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::canonical_json;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x y"], "c": 1.5}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":1.5,"z":[true,null,"x y"]},"b":1}"#);
    }
}
