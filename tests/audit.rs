//! The audit log end to end: seal events, export them as JSONL, read them
//! back and verify them; recompute the chain without Tollgate's code; and
//! show that each kind of tampering is caught, at the seq it happened.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::io::{self, BufReader, Read};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use tollgate::audit::{
    read_jsonl, verify, verify_against, verify_from, verify_jsonl, write_jsonl, Action, AuditChain, AuditError,
    AuditEvent, ChainHead, Verifier, GENESIS_PREV, MAX_LINE_BYTES,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

/// A small, realistic log: one promotion from plan to completion.
fn sample_log() -> Vec<AuditEvent> {
    let mut chain = AuditChain::genesis();
    let steps: Vec<(&str, Action, Value)> = vec![
        (
            "controller",
            Action::PlanRecorded,
            json!({"base": "a1", "head": "b2", "tier": 2}),
        ),
        ("controller", Action::PromotionCreated, json!({"revision": "b2"})),
        (
            "controller",
            Action::ApprovalCounted,
            json!({"reviewer": "dana", "group": "mdm-ios", "digest": "sha256:ab"}),
        ),
        (
            "controller",
            Action::ApprovalRejected,
            json!({"reviewer": "alice", "reason": "author"}),
        ),
        ("controller", Action::RingPromoted, json!({"ring": "canary"})),
        (
            "controller",
            Action::GatePassed,
            json!({"ring": "canary", "applied": 0.9067979265841685}),
        ),
        (
            "eli",
            Action::PromotionHalted,
            json!({"reason": "pilot complaints \u{1F4F1}\n"}),
        ),
        ("controller", Action::Other("quorum_reviewed".into()), json!(null)),
    ];
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (actor, action, details))| {
            chain.append(
                t0() + Duration::milliseconds(1500 * i as i64),
                actor,
                action,
                "promotion/7",
                details,
            )
        })
        .collect()
}

fn export(events: &[AuditEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    write_jsonl(events, &mut out).unwrap();
    out
}

/// The error and its sources, joined as a CLI would print them.
fn chain_message(e: &AuditError) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Re-seals events from `from` on, as someone rewriting history would.
fn reseal_from(events: &mut [AuditEvent], from: usize) {
    for i in from..events.len() {
        if i > 0 {
            events[i].prev = events[i - 1].hash.clone();
        }
        events[i].hash = events[i].compute_hash();
    }
}

#[test]
fn append_export_import_verify_round_trip() {
    let events = sample_log();
    let bytes = export(&events);
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), events.len());

    let imported = read_jsonl(&mut &bytes[..]).unwrap();
    assert_eq!(imported, events);
    assert_eq!(imported[7].action, Action::Other("quorum_reviewed".into()));

    let report = verify(imported).unwrap();
    assert_eq!((report.events, report.first_seq, report.last_seq), (8, Some(1), 8));
    assert_eq!(report.head_hash, events[7].hash);
    assert_eq!(verify_jsonl(&mut &bytes[..]).unwrap(), report);
    assert!(verify_against(events.clone(), 8, &events[7].hash).is_ok());
    // The head can seed a chain that continues the log.
    let mut chain = AuditChain::from_head(report.head());
    let next = chain.append(t0(), "controller", Action::PromotionCompleted, "promotion/7", json!({}));
    assert_eq!((next.seq, next.prev.as_str()), (9, events[7].hash.as_str()));
}

/// Sorted keys and compact separators, written here rather than borrowed
/// from the crate, to show the rule can be followed from the docs alone.
fn independent_canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            let members: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), independent_canonical(v)))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(independent_canonical).collect::<Vec<_>>().join(",")
        ),
        scalar => serde_json::to_string(scalar).unwrap(),
    }
}

fn independent_hash(prev: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(body);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[test]
fn an_auditor_can_recompute_the_chain_with_sha2_and_serde_json_alone() {
    let bytes = export(&sample_log());
    let text = String::from_utf8(bytes).unwrap();
    let mut prev = format!("sha256:{}", "0".repeat(64));
    let mut seq = 0;
    for line in text.lines() {
        let mut event: Value = serde_json::from_str(line).unwrap();
        let obj = event.as_object_mut().unwrap();
        let hash = obj.remove("hash").unwrap().as_str().unwrap().to_string();
        assert_eq!(obj["seq"], json!(seq + 1));
        assert_eq!(obj["prev"], json!(prev));

        // The definition: canonical JSON of the event without `hash`.
        let body = independent_canonical(&event);
        assert_eq!(independent_hash(&prev, body.as_bytes()), hash);

        // The shortcut from the docs: the line minus its last hash member.
        let cut = line.rfind(r#","hash":""#).unwrap();
        let shortcut = format!("{}{}", &line[..cut], &line[cut + 81..]);
        assert_eq!(shortcut, body);

        prev = hash;
        seq += 1;
    }
    assert_eq!(seq, 8);
}

#[test]
fn editing_details_is_caught_at_that_event() {
    let mut events = sample_log();
    events[2].details["reviewer"] = json!("mallory");
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::HashMismatch { seq: 3, .. }), "{err}");
    assert!(err.to_string().contains("event seq 3"), "{err}");
}

#[test]
fn editing_the_actor_is_caught_at_that_event() {
    let mut events = sample_log();
    events[6].actor = "dana".into();
    assert!(matches!(
        verify(events).unwrap_err(),
        AuditError::HashMismatch { seq: 7, .. }
    ));
}

#[test]
fn editing_and_resealing_one_event_breaks_the_next_link() {
    let mut events = sample_log();
    events[3].details = json!({"reviewer": "alice", "reason": "counted after all"});
    events[3].hash = events[3].compute_hash();
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::BrokenLink { seq: 5, .. }), "{err}");
}

#[test]
fn deleting_an_event_from_the_middle_is_caught() {
    let mut events = sample_log();
    events.remove(3);
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::Gap { seq: 5, after: 3 }), "{err}");
    assert!(err.to_string().contains("seq 4 to 4 are missing"), "{err}");
}

#[test]
fn deleting_the_tail_leaves_a_valid_prefix_that_an_expected_head_exposes() {
    let events = sample_log();
    let head = ChainHead::of(&events[7]);
    let prefix = events[..7].to_vec();

    // On its own the prefix is a perfectly good, shorter log...
    assert_eq!(verify(prefix.clone()).unwrap().last_seq, 7);
    // ...but not against the head recorded at the last export.
    let err = verify_against(prefix.clone(), head.seq, &head.hash).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Truncated {
                last_seq: 7,
                expected_seq: 8
            }
        ),
        "{err}"
    );
    // An older head is still contained in the longer log.
    assert!(verify_against(events, 5, &prefix[4].hash).is_ok());
}

#[test]
fn swapping_two_events_is_caught_where_the_order_breaks() {
    let mut events = sample_log();
    events.swap(3, 4);
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::Gap { seq: 5, after: 3 }), "{err}");

    let mut events = sample_log();
    let first = events.remove(0);
    events.push(first);
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::WrongStart { seq: 2, anchor_seq: 0 }), "{err}");

    let mut events = sample_log();
    let replayed = events[1].clone();
    events.push(replayed);
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::OutOfOrder { seq: 2, after: 8 }), "{err}");
}

#[test]
fn duplicating_an_event_is_caught() {
    let mut events = sample_log();
    let copy = events[4].clone();
    events.insert(5, copy);
    let err = verify(events).unwrap_err();
    assert!(matches!(err, AuditError::Duplicate { seq: 5 }), "{err}");
}

#[test]
fn a_first_event_not_chained_to_genesis_is_caught() {
    let mut events = sample_log();
    events[0].prev = format!("sha256:{}", "1".repeat(64));
    reseal_from(&mut events, 0);
    let err = verify(events).unwrap_err();
    assert!(
        matches!(&err, AuditError::BrokenLink { seq: 1, expected, .. } if expected == GENESIS_PREV),
        "{err}"
    );
}

#[test]
fn a_rewritten_history_verifies_alone_but_not_against_the_recorded_head() {
    let original = sample_log();
    let mut forged = original.clone();
    forged[3].details = json!({"reviewer": "alice", "reason": "none"});
    reseal_from(&mut forged, 3);

    // Every link is consistent again: the chain alone cannot tell.
    assert!(verify(forged.clone()).is_ok());

    let head = ChainHead::of(&original[7]);
    let err = verify_against(forged.clone(), head.seq, &head.hash).unwrap_err();
    assert!(matches!(err, AuditError::HeadMismatch { seq: 8, .. }), "{err}");

    // A head recorded before the rewrite point still matches; one after does not.
    assert!(verify_against(forged.clone(), 3, &original[2].hash).is_ok());
    let err = verify_against(forged, 4, &original[3].hash).unwrap_err();
    assert!(matches!(err, AuditError::HeadMismatch { seq: 4, .. }), "{err}");
}

#[test]
fn a_suffix_verifies_from_a_trusted_anchor() {
    let events = sample_log();
    let anchor = ChainHead::of(&events[3]);
    let report = verify_from(anchor, events[4..].to_vec()).unwrap();
    assert_eq!((report.events, report.first_seq, report.last_seq), (4, Some(5), 8));
    assert!(matches!(
        verify(events[4..].to_vec()),
        Err(AuditError::WrongStart { seq: 5, anchor_seq: 0 })
    ));
}

#[test]
fn a_malformed_line_is_reported_by_its_number() {
    let text = String::from_utf8(export(&sample_log())).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = r#"{"seq": 3, "at": "#;
    let broken = lines.join("\n");

    let err = read_jsonl(&mut broken.as_bytes()).unwrap_err();
    assert!(matches!(err, AuditError::Malformed { line: 3, .. }), "{err}");
    assert!(
        chain_message(&err).starts_with("line 3: not a valid audit event: "),
        "{}",
        chain_message(&err)
    );
    assert!(matches!(
        verify_jsonl(&mut broken.as_bytes()),
        Err(AuditError::Malformed { line: 3, .. })
    ));

    let not_utf8 = [&text.as_bytes()[..10], &[0xff], &text.as_bytes()[11..]].concat();
    assert!(matches!(
        read_jsonl(&mut &not_utf8[..]),
        Err(AuditError::Malformed { line: 1, .. })
    ));
}

#[test]
fn lines_must_be_canonical_byte_for_byte() {
    let text = String::from_utf8(export(&sample_log())).unwrap();
    // Same meaning, different bytes: spaced out, or `at` without milliseconds.
    let spaced = text.replacen(r#""seq":2,"#, r#""seq": 2,"#, 1);
    let err = read_jsonl(&mut spaced.as_bytes()).unwrap_err();
    assert!(matches!(err, AuditError::NotCanonical { line: 2 }), "{err}");
    let crlf = text.replace('\n', "\r\n");
    assert!(matches!(
        read_jsonl(&mut crlf.as_bytes()),
        Err(AuditError::NotCanonical { line: 1 })
    ));
    let short_at = text.replacen("10:00:00.000Z", "10:00:00Z", 1);
    assert!(matches!(
        read_jsonl(&mut short_at.as_bytes()),
        Err(AuditError::Malformed { line: 1, .. })
    ));
}

#[test]
fn empty_lines_and_a_missing_final_newline_are_accepted() {
    let text = String::from_utf8(export(&sample_log())).unwrap();
    let loose = format!("\n{}\n\n", text.trim_end().replacen('\n', "\n\n", 1));
    assert_eq!(verify_jsonl(&mut loose.as_bytes()).unwrap().last_seq, 8);
    assert_eq!(verify_jsonl(&mut text.trim_end().as_bytes()).unwrap().last_seq, 8);
    assert_eq!(verify_jsonl(&mut "".as_bytes()).unwrap().events, 0);
}

#[test]
fn chain_faults_in_jsonl_name_the_line_and_the_seq() {
    let mut events = sample_log();
    events[3].subject = "promotion/8".into();
    let mut bytes = b"\n".to_vec();
    bytes.extend(export(&events));
    let err = verify_jsonl(&mut &bytes[..]).unwrap_err();
    assert!(matches!(&err, AuditError::AtLine { line: 5, .. }), "{err}");
    assert!(matches!(err.fault(), AuditError::HashMismatch { seq: 4, .. }));
    let msg = chain_message(&err);
    assert!(msg.starts_with("line 5: event seq 4: stored hash"), "{msg}");

    // Against an expected head, truncation of an export is caught too.
    let events = sample_log();
    let bytes = export(&events[..6]);
    let err = Verifier::from_genesis()
        .expect_head(ChainHead::of(&events[7]))
        .verify_jsonl(&mut &bytes[..])
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Truncated {
                last_seq: 6,
                expected_seq: 8
            }
        ),
        "{err}"
    );
}

#[test]
fn an_overlong_line_is_refused_without_reading_it_all() {
    let mut reader = BufReader::new(io::repeat(b'x').take(MAX_LINE_BYTES as u64 + 2));
    let err = verify_jsonl(&mut reader).unwrap_err();
    assert!(matches!(err, AuditError::LineTooLong { line: 1 }), "{err}");
}

/// Produces a long export on demand, so verifying it never has the whole
/// log in memory at once.
struct GeneratedExport {
    chain: AuditChain,
    left: u64,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for GeneratedExport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            if self.left == 0 {
                return Ok(0);
            }
            self.left -= 1;
            let at = t0() + Duration::seconds(self.left as i64);
            let e = self.chain.append(
                at,
                "controller",
                Action::SoakStarted,
                "ring/canary",
                json!({"n": self.left}),
            );
            self.pending.clear();
            write_jsonl([e], &mut self.pending).unwrap();
            self.pos = 0;
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn verify_jsonl_streams_a_long_log() {
    let source = GeneratedExport {
        chain: AuditChain::genesis(),
        left: 20_000,
        pending: Vec::new(),
        pos: 0,
    };
    let report = verify_jsonl(&mut BufReader::new(source)).unwrap();
    assert_eq!((report.events, report.last_seq), (20_000, 20_000));
}

// ---- properties -----------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO).prop_map(Value::from),
        (0.0f64..1.0).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_\"]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        prop::sample::select(Action::KNOWN.to_vec()),
        "[a-z_]{1,20}".prop_map(|s| Action::parse(&s)),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    at: DateTime<Utc>,
    actor: String,
    action: Action,
    subject: String,
    details: Value,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        0i64..253_402_300_799,
        0u32..1_000_000_000,
        any::<String>(),
        action(),
        "\\PC{0,12}",
        json_value(),
    )
        .prop_map(|(secs, nanos, actor, action, subject, details)| Entry {
            at: Utc.timestamp_opt(secs, nanos).unwrap(),
            actor,
            action,
            subject,
            details,
        })
}

fn seal(entries: &[Entry]) -> Vec<AuditEvent> {
    let mut chain = AuditChain::genesis();
    entries
        .iter()
        .map(|e| {
            chain.append(
                e.at,
                e.actor.clone(),
                e.action.clone(),
                e.subject.clone(),
                e.details.clone(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_appended_log_verifies_and_survives_export(entries in prop::collection::vec(entry(), 0..8)) {
        let events = seal(&entries);
        let report = verify(events.clone()).unwrap();
        prop_assert_eq!(report.events, events.len() as u64);
        let bytes = export(&events);
        let imported = read_jsonl(&mut &bytes[..]).unwrap();
        prop_assert_eq!(&imported, &events);
        prop_assert_eq!(verify(imported).unwrap(), report.clone());
        prop_assert_eq!(verify_jsonl(&mut &bytes[..]).unwrap(), report);
    }

    #[test]
    fn changing_any_single_byte_of_an_export_fails_verification(
        entries in prop::collection::vec(entry(), 1..6),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let events = seal(&entries);
        let mut bytes = export(&events);
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;

        prop_assert!(verify_jsonl(&mut &bytes[..]).is_err());
        // Where the changed line still reads as an event, the chain is what
        // catches it.
        if let Ok(tampered) = read_jsonl(&mut &bytes[..]) {
            prop_assert!(verify(tampered).is_err());
        }
    }
}
