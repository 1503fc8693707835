//! Human renderings of plans: terminal text and PR-comment markdown.
//! JSON output is the serde form of the domain types and lives with them.

mod markdown;
mod text;

pub use markdown::plan_markdown;
pub use text::{plan_text, Style};

use serde_json::Value;

use crate::diff::{SettingChange, SettingOp};
use crate::explain::{Conflict, EffectiveChange};

pub(crate) fn tier_name(tier: u8) -> &'static str {
    match tier {
        0 => "routine",
        1 => "low",
        2 => "elevated",
        _ => "critical",
    }
}

/// A value as people write it: strings bare, lists in brackets, objects as
/// `{k: v}`, cut at `max` characters.
pub(crate) fn show(value: Option<&Value>, max: usize) -> String {
    let s = match value {
        None => "(unset)".to_string(),
        Some(v) => show_value(v),
    };
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(show_value).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{k}: {}", show_value(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// Old and new columns of a setting row. Sets show their member changes,
/// which say more than two long lists.
pub(crate) fn old_new(s: &SettingChange, max: usize) -> (String, String) {
    if s.op == SettingOp::Changed && !(s.members_added.is_empty() && s.members_removed.is_empty()) {
        let removed: Vec<String> = s.members_removed.iter().map(|m| format!("-{m}")).collect();
        let added: Vec<String> = s.members_added.iter().map(|m| format!("+{m}")).collect();
        let cut = |v: Vec<String>| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                show(Some(&Value::String(v.join(" "))), max)
            }
        };
        return (cut(removed), cut(added));
    }
    (show(s.old.as_ref(), max), show(s.new.as_ref(), max))
}

pub(crate) fn requirements_line(r: &crate::risk::Requirements) -> String {
    let mut parts = Vec::new();
    match r.approvals {
        0 => parts.push("no approval".to_string()),
        1 => parts.push("1 approval".to_string()),
        n => parts.push(format!("{n} approvals")),
    }
    if !r.approver_groups.is_empty() {
        parts.push(format!("from {}", r.approver_groups.join(" + ")));
    }
    if let Some(w) = &r.window {
        parts.push(format!("inside window {w}"));
    }
    if r.fresh_approval_per_ring {
        parts.push("fresh approval before each ring after the first".to_string());
    }
    if r.soak_multiplier != 1.0 {
        parts.push(format!("soak x{}", r.soak_multiplier));
    }
    parts.join(", ")
}

/// A value as shown to people (uncut).
pub fn show_public(value: &Value) -> String {
    show_value(value)
}

/// One conflict on one line, as `validate` and `plan` print it.
pub fn conflict_line(c: &Conflict) -> String {
    let who: Vec<String> = c
        .baselines
        .iter()
        .map(|b| format!("{} ({}) = {}", b.baseline, b.path, b.value))
        .collect();
    format!(
        "conflict: {} on {} for groups {} at priority {}: {}",
        c.key,
        c.platform,
        c.groups.join(", "),
        c.priority,
        who.join(" vs ")
    )
}

/// Before and after columns of an effective change: the value and the
/// baseline it comes from, cut at `max` characters each.
pub(crate) fn effective_sides(e: &EffectiveChange, max: usize) -> (String, String) {
    let side = |conflict: bool, value: &Value, from: &Option<String>| match (conflict, from) {
        (true, _) => "(conflict)".to_string(),
        (false, Some(b)) => format!("{} from {b}", show(Some(value), max)),
        (false, None) => "(unset)".to_string(),
    };
    (
        side(e.conflict_before, &e.old, &e.overridden),
        side(e.conflict_after, &e.new, &e.baseline),
    )
}
