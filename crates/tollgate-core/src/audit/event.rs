//! One audit event, its action vocabulary and the bytes its hash covers.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::digest::canonical_json;

/// `prev` of the first event of a log: `sha256:` and 64 zeros.
pub const GENESIS_PREV: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log. The field names are the export format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// 1 for the first event, then +1 without gaps.
    pub seq: u64,
    /// UTC, always with exactly millisecond precision (`2026-11-22T10:00:00.000Z`).
    #[serde(with = "millis_utc")]
    pub at: DateTime<Utc>,
    /// Who caused the event: a user, a token name, or `controller`.
    pub actor: String,
    pub action: Action,
    /// What the event is about, e.g. `promotion/42` or `baseline/corp-ios`.
    pub subject: String,
    pub details: Value,
    /// `hash` of the event before, or [`GENESIS_PREV`].
    pub prev: String,
    /// `sha256:<hex>` of `prev` followed by [`AuditEvent::hash_input`].
    pub hash: String,
}

impl AuditEvent {
    /// The canonical JSON of this event without its `hash` member (but with
    /// `prev`): the bytes that follow `prev` in the hash input.
    pub fn hash_input(&self) -> String {
        canonical_json(&self.body())
    }

    /// What `hash` must be for this event's content.
    pub fn compute_hash(&self) -> String {
        chain_hash(&self.prev, &self.hash_input())
    }

    /// The event as one export line (without the newline): its canonical
    /// JSON, `hash` included.
    pub fn to_canonical_json(&self) -> String {
        let mut value = self.body();
        if let Value::Object(map) = &mut value {
            map.insert("hash".to_string(), Value::String(self.hash.clone()));
        }
        canonical_json(&value)
    }

    /// Built by hand rather than through `Serialize` so that the hashed
    /// members are spelled out in one place; a test keeps both in step.
    fn body(&self) -> Value {
        json!({
            "seq": self.seq,
            "at": format_at(&self.at),
            "actor": self.actor,
            "action": self.action.as_str(),
            "subject": self.subject,
            "details": self.details,
            "prev": self.prev,
        })
    }
}

/// `sha256:<lowercase hex>` of `prev` bytes followed by `body` bytes.
pub(crate) fn chain_hash(prev: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(body.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

pub(crate) fn format_at(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `at` travels as RFC 3339 UTC with exactly three fractional digits. Any
/// other spelling of the same instant is refused on input: the hash covers
/// the text, so two spellings would be two different events.
mod millis_utc {
    use chrono::{DateTime, Utc};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_at(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        let at = DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| D::Error::custom(format!("`at` {text:?} is not an RFC 3339 time: {e}")))?;
        if super::format_at(&at) != text {
            return Err(D::Error::custom(format!(
                "`at` {text:?} must be UTC with millisecond precision, like \"2026-11-22T10:00:00.000Z\""
            )));
        }
        Ok(at)
    }
}

/// What happened. The string form is stable lowercase snake_case; names
/// this version does not know are kept verbatim in [`Action::Other`], so an
/// imported log written by a newer version still verifies event by event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Action {
    PlanRecorded,
    PromotionCreated,
    ApprovalCounted,
    ApprovalRejected,
    PromotionApproved,
    WaitingWindow,
    RingPromoted,
    SoakStarted,
    GatePassed,
    GateFailed,
    PromotionHalted,
    PromotionSuperseded,
    PromotionCompleted,
    RollbackRequested,
    RollbackPromoted,
    RingPinned,
    RingUnpinned,
    BreakGlass,
    FollowUpReviewRequested,
    Adopted,
    ExceptionExpired,
    FindingOpened,
    FindingClosed,
    SourceError,
    SourceRecovered,
    RingPlanned,
    RingContentChanged,
    ReviewsCarriedOver,
    RevisionRefused,
    ApprovalWithdrawn,
    AutoRollbackRequested,
    RemediationOpened,
    RemediationClosed,
    PinHeld,
    ReviewRecorded,
    /// An action name this version does not know.
    Other(String),
}

impl Action {
    /// Every action this version knows, in the order of the enum.
    pub const KNOWN: [Action; 35] = [
        Action::PlanRecorded,
        Action::PromotionCreated,
        Action::ApprovalCounted,
        Action::ApprovalRejected,
        Action::PromotionApproved,
        Action::WaitingWindow,
        Action::RingPromoted,
        Action::SoakStarted,
        Action::GatePassed,
        Action::GateFailed,
        Action::PromotionHalted,
        Action::PromotionSuperseded,
        Action::PromotionCompleted,
        Action::RollbackRequested,
        Action::RollbackPromoted,
        Action::RingPinned,
        Action::RingUnpinned,
        Action::BreakGlass,
        Action::FollowUpReviewRequested,
        Action::Adopted,
        Action::ExceptionExpired,
        Action::FindingOpened,
        Action::FindingClosed,
        Action::SourceError,
        Action::SourceRecovered,
        Action::RingPlanned,
        Action::RingContentChanged,
        Action::ReviewsCarriedOver,
        Action::RevisionRefused,
        Action::ApprovalWithdrawn,
        Action::AutoRollbackRequested,
        Action::RemediationOpened,
        Action::RemediationClosed,
        Action::PinHeld,
        Action::ReviewRecorded,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Action::PlanRecorded => "plan_recorded",
            Action::PromotionCreated => "promotion_created",
            Action::ApprovalCounted => "approval_counted",
            Action::ApprovalRejected => "approval_rejected",
            Action::PromotionApproved => "promotion_approved",
            Action::WaitingWindow => "waiting_window",
            Action::RingPromoted => "ring_promoted",
            Action::SoakStarted => "soak_started",
            Action::GatePassed => "gate_passed",
            Action::GateFailed => "gate_failed",
            Action::PromotionHalted => "promotion_halted",
            Action::PromotionSuperseded => "promotion_superseded",
            Action::PromotionCompleted => "promotion_completed",
            Action::RollbackRequested => "rollback_requested",
            Action::RollbackPromoted => "rollback_promoted",
            Action::RingPinned => "ring_pinned",
            Action::RingUnpinned => "ring_unpinned",
            Action::BreakGlass => "break_glass",
            Action::FollowUpReviewRequested => "follow_up_review_requested",
            Action::Adopted => "adopted",
            Action::ExceptionExpired => "exception_expired",
            Action::FindingOpened => "finding_opened",
            Action::FindingClosed => "finding_closed",
            Action::SourceError => "source_error",
            Action::SourceRecovered => "source_recovered",
            Action::RingPlanned => "ring_planned",
            Action::RingContentChanged => "ring_content_changed",
            Action::ReviewsCarriedOver => "reviews_carried_over",
            Action::RevisionRefused => "revision_refused",
            Action::ApprovalWithdrawn => "approval_withdrawn",
            Action::AutoRollbackRequested => "auto_rollback_requested",
            Action::RemediationOpened => "remediation_opened",
            Action::RemediationClosed => "remediation_closed",
            Action::PinHeld => "pin_held",
            Action::ReviewRecorded => "review_recorded",
            Action::Other(name) => name,
        }
    }

    /// The known action with this name, else `Other(name)`. Never fails.
    pub fn parse(name: &str) -> Action {
        Action::KNOWN
            .into_iter()
            .find(|a| a.as_str() == name)
            .unwrap_or_else(|| Action::Other(name.to_string()))
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, Action::Other(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Action {
    fn from(name: String) -> Self {
        match Action::parse(&name) {
            Action::Other(_) => Action::Other(name),
            known => known,
        }
    }
}

impl From<Action> for String {
    fn from(action: Action) -> Self {
        match action {
            Action::Other(name) => name,
            known => known.as_str().to_string(),
        }
    }
}

/// Returns `details` in a form that reads back from its JSON text as the
/// very same value, so the hash computed now is the hash any reader
/// recomputes later.
///
/// Strings, integers, booleans and null always do. Floats need care:
/// serde_json's default number parser (without its `float_roundtrip`
/// feature) can land one unit in the last place away from the value that
/// was printed, which would turn a genuine event into a false tamper alarm.
/// Such a float is replaced by the nearest value with fewer significant
/// digits that does read back exactly, or, failing that (only for extreme
/// magnitudes), by its decimal text as a JSON string.
pub(crate) fn stable_details(details: Value) -> Value {
    if reads_back_unchanged(&details) {
        details
    } else {
        stabilize(details)
    }
}

fn reads_back_unchanged(value: &Value) -> bool {
    let text = canonical_json(value);
    serde_json::from_str::<Value>(&text).is_ok_and(|back| canonical_json(&back) == text)
}

fn stabilize(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(stabilize).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, stabilize(v))).collect()),
        Value::Number(n) if n.is_f64() && !reads_back_unchanged(&Value::Number(n.clone())) => {
            let f = n.as_f64().unwrap_or_default();
            (1..=16)
                .rev()
                .filter_map(|digits| format!("{f:.*e}", digits - 1).parse::<f64>().ok())
                .map(Value::from)
                .find(reads_back_unchanged)
                .unwrap_or_else(|| Value::String(n.to_string()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event() -> AuditEvent {
        let mut e = AuditEvent {
            seq: 1,
            at: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
            actor: "controller".into(),
            action: Action::RingPromoted,
            subject: "promotion/7".into(),
            details: json!({"ring": "canary", "ratio": 0.95}),
            prev: GENESIS_PREV.into(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    #[test]
    fn genesis_is_sha256_prefix_and_64_zeros() {
        assert_eq!(GENESIS_PREV, format!("sha256:{}", "0".repeat(64)));
    }

    #[test]
    fn every_known_action_round_trips_through_its_name() {
        for a in Action::KNOWN {
            assert_eq!(Action::parse(a.as_str()), a);
            let s = a.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
        }
        assert_eq!(Action::parse("made_up"), Action::Other("made_up".into()));
        assert_eq!(Action::from("gate_failed".to_string()), Action::GateFailed);
        assert_eq!(String::from(Action::Other("x".into())), "x");
    }

    #[test]
    fn hand_built_body_matches_serde_form() {
        let e = event();
        let mut via_serde = serde_json::to_value(&e).unwrap();
        assert_eq!(canonical_json(&via_serde), e.to_canonical_json());
        via_serde.as_object_mut().unwrap().remove("hash");
        assert_eq!(canonical_json(&via_serde), e.hash_input());
    }

    #[test]
    fn at_is_written_with_milliseconds_and_other_spellings_are_refused() {
        let e = event();
        assert!(e.to_canonical_json().contains(r#""at":"2026-11-22T10:00:00.000Z""#));
        let line = e.to_canonical_json();
        for other in [
            "2026-11-22T10:00:00Z",
            "2026-11-22T11:00:00.000+01:00",
            "2026-11-22T10:00:00.000000Z",
        ] {
            let bad = line.replace("2026-11-22T10:00:00.000Z", other);
            assert!(serde_json::from_str::<AuditEvent>(&bad).is_err(), "{other}");
        }
        assert_eq!(serde_json::from_str::<AuditEvent>(&line).unwrap(), e);
    }

    #[test]
    fn missing_and_unknown_fields_are_refused() {
        let line = event().to_canonical_json();
        let mut v: Value = serde_json::from_str(&line).unwrap();
        v.as_object_mut().unwrap().remove("details");
        assert!(serde_json::from_value::<AuditEvent>(v).is_err());
        let mut v: Value = serde_json::from_str(&line).unwrap();
        v.as_object_mut().unwrap().insert("note".into(), json!("x"));
        assert!(serde_json::from_value::<AuditEvent>(v).is_err());
    }

    #[test]
    fn floats_that_do_not_read_back_are_made_stable() {
        // 0.9067979265841685 prints with 16 digits and serde_json's fast
        // parser reads it one ulp off.
        for f in [
            0.9067979265841685_f64,
            0.41487964738927685,
            1.0715660391465826e-75,
            0.95,
            1.0,
        ] {
            let v = stable_details(json!({"x": f, "nested": [f]}));
            assert!(reads_back_unchanged(&v), "{f}");
        }
        assert_eq!(stable_details(json!({"x": 0.95})), json!({"x": 0.95}));
    }
}
