//! Appending to the chain and checking it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;

use super::event::{chain_hash, stable_details, Action, AuditEvent, GENESIS_PREV};
use super::AuditError;

/// A point of the chain: the `seq` and `hash` of one event, or seq 0 and
/// [`GENESIS_PREV`] before the first. Used as the head a chain appends to, as
/// the trusted start of a suffix, and as the head a log must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_PREV.to_string(),
        }
    }

    pub fn of(event: &AuditEvent) -> Self {
        ChainHead {
            seq: event.seq,
            hash: event.hash.clone(),
        }
    }
}

/// The head of a log being written. It holds only the last seq and hash;
/// the events it returns are for the caller to persist, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    head: ChainHead,
}

impl AuditChain {
    /// An empty log: the next event gets seq 1 and prev [`GENESIS_PREV`].
    pub fn genesis() -> Self {
        AuditChain {
            head: ChainHead::genesis(),
        }
    }

    /// Continues after `last`, the newest persisted event. `last` is trusted
    /// as given; verify the stored log first if it may have been touched.
    pub fn resume(last: &AuditEvent) -> Self {
        AuditChain {
            head: ChainHead::of(last),
        }
    }

    /// Continues after a head, e.g. the one [`VerifyReport::head`] returns.
    pub fn from_head(head: ChainHead) -> Self {
        AuditChain { head }
    }

    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Seals the next event and moves the head to it. `at` is truncated to
    /// whole milliseconds, the precision the log keeps; floats in `details`
    /// that would not read back exactly from JSON are adjusted (see
    /// [`super`] docs), so the returned event is exactly what readers see.
    pub fn append(
        &mut self,
        at: DateTime<Utc>,
        actor: impl Into<String>,
        action: Action,
        subject: impl Into<String>,
        details: Value,
    ) -> AuditEvent {
        let mut event = AuditEvent {
            seq: self.head.seq + 1,
            at: at.trunc_subsecs(3),
            actor: actor.into(),
            action,
            subject: subject.into(),
            details: stable_details(details),
            prev: self.head.hash.clone(),
            hash: String::new(),
        };
        event.hash = chain_hash(&event.prev, &event.hash_input());
        self.head = ChainHead::of(&event);
        event
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Seq of the first event checked; `None` for an empty log.
    pub first_seq: Option<u64>,
    /// Seq of the head after the last event (the start anchor's if none).
    pub last_seq: u64,
    /// Hash of that head.
    pub head_hash: String,
}

impl VerifyReport {
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.last_seq,
            hash: self.head_hash.clone(),
        }
    }
}

/// Checks events one at a time, holding only the current head, so a log of
/// any length can be streamed through it.
///
/// Each event must have the seq right after the head (else: duplicated,
/// out of order, or missing events), a `hash` equal to the recomputed one
/// (else: edited), and a `prev` equal to the head's hash (else: the chain
/// was cut and re-joined). Timestamps are not required to increase: replicas'
/// clocks may disagree across a leader change, and `at` is covered by the
/// hash anyway.
#[derive(Debug, Clone)]
pub struct Verifier {
    start: ChainHead,
    head: ChainHead,
    events: u64,
    first_seq: Option<u64>,
    expected_head: Option<ChainHead>,
    anchor: Option<ChainHead>,
}

impl Verifier {
    /// For a whole log: the first event must be seq 1 chained to genesis.
    pub fn from_genesis() -> Self {
        Verifier::from_anchor(ChainHead::genesis())
    }

    /// For a suffix of a log: the first event must directly follow `anchor`,
    /// a head obtained from a source trusted independently of the suffix.
    pub fn from_anchor(anchor: ChainHead) -> Self {
        Verifier {
            start: anchor.clone(),
            head: anchor,
            events: 0,
            first_seq: None,
            expected_head: None,
            anchor: None,
        }
    }

    /// Also requires the log to contain `head`: an event with that seq and
    /// hash. A chain alone cannot tell that events were cut off its end, or
    /// that it was rewritten from some point on with every later hash
    /// recomputed; checking it against a head recorded elsewhere (a ticket,
    /// a previous export, a witness) can. Events after `head` are allowed: the
    /// log may have grown since; compare [`VerifyReport::last_seq`] to
    /// require it to end there.
    pub fn expect_head(mut self, head: ChainHead) -> Self {
        self.expected_head = Some(head);
        self
    }

    /// Also requires the log to hold `anchor`, the head the store recorded
    /// outside its database after a commit ([`tollgate_store::anchor`]). Like
    /// [`Verifier::expect_head`], a lower bound: the log may have grown past
    /// it (the anchor lags by a commit after a crash), but it must hold that
    /// event with that hash. Its faults are [`AuditError::AnchorTruncated`]
    /// and [`AuditError::AnchorMismatch`].
    pub fn expect_anchor(mut self, anchor: ChainHead) -> Self {
        self.anchor = Some(anchor);
        self
    }

    /// Checks the next event.
    pub fn push(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        let seq = event.seq;
        if seq <= self.head.seq {
            return Err(if self.events == 0 {
                AuditError::WrongStart {
                    seq,
                    anchor_seq: self.head.seq,
                }
            } else if seq == self.head.seq {
                AuditError::Duplicate { seq }
            } else {
                AuditError::OutOfOrder {
                    seq,
                    after: self.head.seq,
                }
            });
        }
        if seq - self.head.seq > 1 {
            return Err(if self.events == 0 {
                AuditError::WrongStart {
                    seq,
                    anchor_seq: self.head.seq,
                }
            } else {
                AuditError::Gap {
                    seq,
                    after: self.head.seq,
                }
            });
        }
        let computed = event.compute_hash();
        if computed != event.hash {
            return Err(AuditError::HashMismatch {
                seq,
                stored: event.hash.clone(),
                computed,
            });
        }
        if event.prev != self.head.hash {
            return Err(AuditError::BrokenLink {
                seq,
                prev: event.prev.clone(),
                expected: self.head.hash.clone(),
            });
        }
        if let Some(expected) = &self.expected_head {
            if expected.seq == seq && expected.hash != event.hash {
                return Err(AuditError::HeadMismatch {
                    seq,
                    found: event.hash.clone(),
                    expected: expected.hash.clone(),
                });
            }
        }
        if let Some(anchor) = &self.anchor {
            if anchor.seq == seq && anchor.hash != event.hash {
                return Err(AuditError::AnchorMismatch {
                    seq,
                    found: event.hash.clone(),
                    anchored: anchor.hash.clone(),
                });
            }
        }
        self.head = ChainHead::of(event);
        self.events += 1;
        self.first_seq.get_or_insert(seq);
        Ok(())
    }

    /// Ends the check; fails if an expected head was never reached.
    pub fn finish(self) -> Result<VerifyReport, AuditError> {
        if let Some(expected) = &self.expected_head {
            if expected.seq > self.head.seq {
                return Err(AuditError::Truncated {
                    last_seq: self.head.seq,
                    expected_seq: expected.seq,
                });
            }
            if expected.seq < self.start.seq {
                return Err(AuditError::HeadBeforeStart {
                    expected_seq: expected.seq,
                    start_seq: self.start.seq,
                });
            }
            if expected.seq == self.start.seq && expected.hash != self.start.hash {
                return Err(AuditError::HeadMismatch {
                    seq: expected.seq,
                    found: self.start.hash.clone(),
                    expected: expected.hash.clone(),
                });
            }
        }
        if let Some(anchor) = &self.anchor {
            if anchor.seq > self.head.seq {
                return Err(AuditError::AnchorTruncated {
                    last_seq: self.head.seq,
                    anchor_seq: anchor.seq,
                });
            }
            if anchor.seq < self.start.seq {
                return Err(AuditError::HeadBeforeStart {
                    expected_seq: anchor.seq,
                    start_seq: self.start.seq,
                });
            }
            if anchor.seq == self.start.seq && anchor.hash != self.start.hash {
                return Err(AuditError::AnchorMismatch {
                    seq: anchor.seq,
                    found: self.start.hash.clone(),
                    anchored: anchor.hash.clone(),
                });
            }
        }
        Ok(VerifyReport {
            events: self.events,
            first_seq: self.first_seq,
            last_seq: self.head.seq,
            head_hash: self.head.hash,
        })
    }

    /// Pushes every event, then finishes.
    pub fn verify(mut self, events: impl IntoIterator<Item = AuditEvent>) -> Result<VerifyReport, AuditError> {
        for event in events {
            self.push(&event)?;
        }
        self.finish()
    }
}

/// Verifies a whole log, from genesis.
pub fn verify(events: impl IntoIterator<Item = AuditEvent>) -> Result<VerifyReport, AuditError> {
    Verifier::from_genesis().verify(events)
}

/// Verifies a suffix of a log that starts right after a trusted `anchor`.
pub fn verify_from(
    anchor: ChainHead,
    events: impl IntoIterator<Item = AuditEvent>,
) -> Result<VerifyReport, AuditError> {
    Verifier::from_anchor(anchor).verify(events)
}

/// Verifies a whole log and that it contains the event `expected_head_seq`
/// with hash `expected_head_hash`; see [`Verifier::expect_head`].
pub fn verify_against(
    events: impl IntoIterator<Item = AuditEvent>,
    expected_head_seq: u64,
    expected_head_hash: &str,
) -> Result<VerifyReport, AuditError> {
    Verifier::from_genesis()
        .expect_head(ChainHead {
            seq: expected_head_seq,
            hash: expected_head_hash.to_string(),
        })
        .verify(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn log(n: u64) -> Vec<AuditEvent> {
        let mut chain = AuditChain::genesis();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        (0..n)
            .map(|i| {
                let at = t0 + chrono::Duration::seconds(i as i64);
                chain.append(at, "controller", Action::RingPromoted, "promotion/1", json!({"i": i}))
            })
            .collect()
    }

    #[test]
    fn append_numbers_from_one_and_links_to_genesis() {
        let events = log(3);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(events[0].prev, GENESIS_PREV);
        assert_eq!(events[1].prev, events[0].hash);
        assert!(events
            .iter()
            .all(|e| e.hash.len() == 71 && e.hash.starts_with("sha256:")));
    }

    #[test]
    fn append_truncates_to_milliseconds() {
        let mut chain = AuditChain::genesis();
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::nanoseconds(123_456_789);
        let e = chain.append(at, "a", Action::Adopted, "s", Value::Null);
        assert_eq!(e.at.timestamp_subsec_nanos(), 123_000_000);
    }

    #[test]
    fn resume_continues_where_the_log_ends() {
        let events = log(2);
        let mut chain = AuditChain::resume(&events[1]);
        let e = chain.append(events[1].at, "x", Action::Adopted, "s", Value::Null);
        assert_eq!((e.seq, &e.prev), (3, &events[1].hash));
        let mut all = events.clone();
        all.push(e);
        assert_eq!(verify(all).unwrap().last_seq, 3);
    }

    #[test]
    fn empty_log_verifies_to_genesis() {
        let r = verify(Vec::new()).unwrap();
        assert_eq!((r.events, r.first_seq, r.last_seq), (0, None, 0));
        assert_eq!(r.head(), ChainHead::genesis());
    }

    #[test]
    fn suffix_verifies_from_an_anchor_only() {
        let events = log(5);
        let suffix = events[2..].to_vec();
        assert!(matches!(
            verify(suffix.clone()),
            Err(AuditError::WrongStart { seq: 3, anchor_seq: 0 })
        ));
        let r = verify_from(ChainHead::of(&events[1]), suffix.clone()).unwrap();
        assert_eq!((r.events, r.first_seq, r.last_seq), (3, Some(3), 5));
        let wrong = ChainHead {
            seq: 2,
            hash: events[0].hash.clone(),
        };
        assert!(matches!(
            verify_from(wrong, suffix),
            Err(AuditError::BrokenLink { seq: 3, .. })
        ));
    }

    #[test]
    fn expected_head_before_a_suffix_cannot_be_checked() {
        let events = log(4);
        let v = Verifier::from_anchor(ChainHead::of(&events[1])).expect_head(ChainHead::of(&events[0]));
        assert!(matches!(
            v.verify(events[2..].to_vec()),
            Err(AuditError::HeadBeforeStart { .. })
        ));
        let v = Verifier::from_anchor(ChainHead::of(&events[1])).expect_head(ChainHead::of(&events[1]));
        assert!(v.verify(events[2..].to_vec()).is_ok());
    }

    #[test]
    fn the_anchor_is_a_lower_bound_of_the_log() {
        let events = log(6);
        let anchored = |at: usize| Verifier::from_genesis().expect_anchor(ChainHead::of(&events[at]));
        // Untouched, or grown past the anchor (it lags a commit after a crash).
        assert_eq!(anchored(5).verify(events.clone()).unwrap().last_seq, 6);
        assert_eq!(anchored(4).verify(events.clone()).unwrap().last_seq, 6);
        let genesis = Verifier::from_genesis().expect_anchor(ChainHead::genesis());
        assert_eq!(genesis.verify(Vec::new()).unwrap().last_seq, 0);
        // The last three deleted.
        let err = anchored(5).verify(events[..3].to_vec()).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::AnchorTruncated {
                    last_seq: 3,
                    anchor_seq: 6
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("seq 4 to 6 are missing"), "{err}");
        // Only the last one deleted.
        let err = anchored(5).verify(events[..5].to_vec()).unwrap_err();
        assert!(err.to_string().contains("seq 6 is missing"), "{err}");
        // Deleted, then as many appended again: a valid chain, not the anchored one.
        let mut chain = AuditChain::resume(&events[2]);
        let mut forged = events[..3].to_vec();
        for i in 0..3 {
            forged.push(chain.append(events[3].at, "x", Action::Adopted, "s", json!({"forged": i})));
        }
        assert!(verify(forged.clone()).is_ok());
        let err = anchored(5).verify(forged.clone()).unwrap_err();
        assert!(matches!(err, AuditError::AnchorMismatch { seq: 6, .. }), "{err:?}");
        let err = anchored(4).verify(forged).unwrap_err();
        assert!(matches!(err, AuditError::AnchorMismatch { seq: 5, .. }), "{err:?}");
        // A genesis anchor with another hash is no genesis.
        let fake = Verifier::from_genesis().expect_anchor(ChainHead {
            seq: 0,
            hash: events[0].hash.clone(),
        });
        assert!(matches!(
            fake.verify(events.clone()),
            Err(AuditError::AnchorMismatch { seq: 0, .. })
        ));
    }

    #[test]
    fn seq_zero_and_huge_seqs_do_not_panic() {
        let mut events = log(2);
        events[0].seq = 0;
        assert!(matches!(
            verify(events.clone()),
            Err(AuditError::WrongStart { seq: 0, anchor_seq: 0 })
        ));
        events[0].seq = u64::MAX;
        assert!(matches!(
            verify(events),
            Err(AuditError::WrongStart { seq: u64::MAX, .. })
        ));
        let anchor = ChainHead {
            seq: u64::MAX,
            hash: GENESIS_PREV.into(),
        };
        assert!(matches!(
            verify_from(anchor, log(1)),
            Err(AuditError::WrongStart { .. })
        ));
    }
}
