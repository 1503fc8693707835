//! The tamper-evident audit log (DESIGN 9).
//!
//! Every decision Tollgate makes is an [`AuditEvent`]. Events form a hash
//! chain: each carries the hash of the one before it, so editing, deleting,
//! inserting, duplicating or reordering events breaks the chain at a seq
//! that [`verify`] names. [`AuditChain`] seals new events; stores persist
//! what it returns. `tollgate audit export` writes the JSONL described
//! here, which an auditor can check without Tollgate.
//!
//! # The format, for an independent verifier
//!
//! An export is UTF-8 text, one event per line, each line ended by `\n`
//! (the last line's `\n` may be missing; empty lines are skipped). A line is
//! a JSON object with exactly these members:
//!
//! | member    | JSON type | meaning |
//! |-----------|-----------|---------|
//! | `seq`     | integer   | 1 for the first event, then +1 without gaps |
//! | `at`      | string    | UTC time, RFC 3339 with exactly three fractional digits and `Z`: `2026-11-22T10:00:00.000Z` |
//! | `actor`   | string    | who caused it: a user, a token name, `controller` |
//! | `action`  | string    | lowercase snake_case, e.g. `approval_counted` (see [`Action`]; unknown names are kept) |
//! | `subject` | string    | what it is about, e.g. `promotion/42` |
//! | `details` | any JSON  | action-specific facts (which approvals counted and why, gate readings, ...) |
//! | `prev`    | string    | `hash` of the previous event; for seq 1 the genesis value [`GENESIS_PREV`], `sha256:` and 64 zeros |
//! | `hash`    | string    | `sha256:` and 64 lowercase hex digits, defined below |
//!
//! **Canonical JSON** of a value: object members sorted by key (byte order of
//! the UTF-8 key, at every depth), no whitespace outside strings, strings
//! escaped minimally (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! characters below U+0020 as `\u00xx` in lowercase hex, everything else as
//! raw UTF-8), integers in plain decimal, other numbers in their shortest
//! round-trip form as serde_json prints them (`0.95`, `1.0`, `1e-7`, `1e+16`). This
//! is [`crate::digest::canonical_json`], the same form content digests use.
//!
//! **The hash** of an event is
//!
//! ```text
//! hash = "sha256:" + lowercase_hex( SHA-256( utf8(prev) || utf8(canonical_json(E)) ) )
//! ```
//!
//! where `E` is the event object with every member above except `hash`
//! (so `prev` is covered twice: as the prefix and inside `E`). The log is
//! intact when, for every line in order, `seq` is one more than the line
//! before (1 for the first), `prev` equals the line before's `hash` (genesis
//! for the first) and `hash` equals the recomputed value.
//!
//! **Every line is itself canonical**: the canonical JSON of the whole event,
//! `hash` included. Because keys sort as `action, actor, at, details, hash,
//! prev, seq, subject`, the hashed bytes are simply the line with its last
//! `,"hash":"sha256:<64 hex>"` member cut out (81 bytes) — a verifier need
//! not re-encode JSON at all, which sidesteps number-formatting differences
//! between JSON libraries. Tollgate's reader refuses any line that is not
//! byte-for-byte canonical, so every byte of an export is covered by the
//! chain, not only its meaning.
//!
//! In Python, for instance:
//!
//! ```text
//! import hashlib, json
//! prev, seq = "sha256:" + "0" * 64, 0
//! for line in open("audit.jsonl", "rb"):
//!     line = line.rstrip(b"\n")
//!     if not line: continue
//!     e = json.loads(line)
//!     cut = line.rindex(b',"hash":"')
//!     body = line[:cut] + line[cut + 81:]
//!     assert e["seq"] == seq + 1 and e["prev"] == prev
//!     assert e["hash"] == "sha256:" + hashlib.sha256(prev.encode() + body).hexdigest()
//!     prev, seq = e["hash"], e["seq"]
//! print("intact up to", seq, prev)
//! ```
//!
//! # What a chain can and cannot show
//!
//! A chain proves that each event is unchanged and that none is missing,
//! repeated or moved *before the last one it holds*. It cannot show that
//! events were cut off its end, nor that someone rewrote it from some event
//! on and recomputed every later hash: the result is again a valid chain.
//! Both are caught by checking against a head recorded elsewhere
//! ([`verify_against`], [`Verifier::expect_head`]): keep the `(seq, hash)`
//! of the head from each export or review, and a later log must still
//! contain that exact event. The controller keeps one itself: after every
//! commit that appends events, the store writes the head to an anchor file
//! outside the database ([`tollgate_store::anchor`]), and `tollgate audit
//! verify` checks the log against it ([`Verifier::expect_anchor`]).
//!
//! # Precision
//!
//! `at` keeps milliseconds; [`AuditChain::append`] truncates finer times.
//! A float in `details` that serde_json's default parser would not read back
//! bit-for-bit (it may land one unit in the last place off) is replaced at
//! append time by the nearest shorter decimal that does, or for extreme
//! magnitudes by its text as a string, so that a genuine event never fails
//! verification after a round trip through a store or an export.

mod chain;
mod event;

use std::borrow::Borrow;
use std::io::{self, BufRead, Read as _, Write};

pub use chain::{verify, verify_against, verify_from, AuditChain, ChainHead, Verifier, VerifyReport};
pub use event::{Action, AuditEvent, GENESIS_PREV};

/// Longest export line accepted, newline excluded.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What is wrong with an audit log, or with reading or writing one.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("event seq {seq}: stored hash {stored} differs from the recomputed {computed}: the event was altered after it was sealed")]
    HashMismatch { seq: u64, stored: String, computed: String },

    #[error("event seq {seq}: prev {prev} is not the hash of the event before it ({expected}): the chain was cut and re-joined here")]
    BrokenLink { seq: u64, prev: String, expected: String },

    #[error("event seq {seq} follows seq {after}: seq {} to {} are missing here (deleted, or moved elsewhere in the log)", .after + 1, .seq - 1)]
    Gap { seq: u64, after: u64 },

    #[error("event seq {seq} appears twice in a row: a duplicated or replayed event")]
    Duplicate { seq: u64 },

    #[error("event seq {seq} comes after seq {after}: events are out of order")]
    OutOfOrder { seq: u64, after: u64 },

    #[error("{}", wrong_start(*.seq, *.anchor_seq))]
    WrongStart { seq: u64, anchor_seq: u64 },

    #[error(
        "the log ends at seq {last_seq} but the expected head is seq {expected_seq}: events were removed from its end"
    )]
    Truncated { last_seq: u64, expected_seq: u64 },

    #[error("event seq {seq} has hash {found}, not the expected head hash {expected}: the log was rewritten up to this event")]
    HeadMismatch { seq: u64, found: String, expected: String },

    #[error(
        "the log ends at seq {last_seq}, but the anchor the store wrote outside its database records seq \
         {anchor_seq}: {} from its end (deleted)",
        missing_tail(*.last_seq, *.anchor_seq)
    )]
    AnchorTruncated { last_seq: u64, anchor_seq: u64 },

    #[error("event seq {seq} has hash {found}, but the anchor the store wrote outside its database records {anchored}: the log was rewritten up to this event")]
    AnchorMismatch { seq: u64, found: String, anchored: String },

    #[error("the expected head seq {expected_seq} lies before the start anchor seq {start_seq}: it cannot be checked from there")]
    HeadBeforeStart { expected_seq: u64, start_seq: u64 },

    #[error("line {line}: not a valid audit event")]
    Malformed {
        line: usize,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "line {line}: not byte-for-byte the canonical JSON of the event it holds (reformatted, re-encoded or altered)"
    )]
    NotCanonical { line: usize },

    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong { line: usize },

    #[error("reading line {line}")]
    Read {
        line: usize,
        #[source]
        source: io::Error,
    },

    #[error("writing event seq {seq}")]
    Write {
        seq: u64,
        #[source]
        source: io::Error,
    },

    #[error("flushing the audit export")]
    Flush {
        #[source]
        source: io::Error,
    },

    /// A chain fault found while streaming JSONL, with where it was found.
    #[error("line {line}")]
    AtLine {
        line: usize,
        #[source]
        source: Box<AuditError>,
    },
}

impl AuditError {
    /// The fault itself, without the line it was found on.
    pub fn fault(&self) -> &AuditError {
        match self {
            AuditError::AtLine { source, .. } => source.fault(),
            other => other,
        }
    }
}

fn missing_tail(last_seq: u64, anchor_seq: u64) -> String {
    if anchor_seq == last_seq + 1 {
        format!("seq {anchor_seq} is missing")
    } else {
        format!("seq {} to {anchor_seq} are missing", last_seq + 1)
    }
}

fn wrong_start(seq: u64, anchor_seq: u64) -> String {
    if anchor_seq == 0 {
        format!(
            "the log starts at seq {seq}, not at 1: it is not chained to genesis \
             (a suffix can be verified from a trusted anchor)"
        )
    } else {
        format!("the first event has seq {seq}, but the suffix must start right after the anchor at seq {anchor_seq}")
    }
}

/// Writes each event as one canonical JSON line; returns how many.
pub fn write_jsonl<I>(events: I, out: &mut dyn Write) -> Result<u64, AuditError>
where
    I: IntoIterator,
    I::Item: Borrow<AuditEvent>,
{
    let mut written = 0;
    for event in events {
        let event = event.borrow();
        let mut line = event.to_canonical_json();
        line.push('\n');
        out.write_all(line.as_bytes())
            .map_err(|source| AuditError::Write { seq: event.seq, source })?;
        written += 1;
    }
    out.flush().map_err(|source| AuditError::Flush { source })?;
    Ok(written)
}

/// Events of a JSONL export, one line at a time, each with its 1-based line
/// number. Checks each line's form, not the chain. Stops after an error.
pub struct JsonlEvents<'r> {
    reader: &'r mut dyn BufRead,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl<'r> JsonlEvents<'r> {
    pub fn new(reader: &'r mut dyn BufRead) -> Self {
        JsonlEvents {
            reader,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    fn read_event(&mut self) -> Option<Result<(usize, AuditEvent), AuditError>> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let limit = MAX_LINE_BYTES as u64 + 1;
            match (&mut *self.reader).take(limit).read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => return Some(Err(AuditError::Read { line, source })),
            }
            let body = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            if body.len() > MAX_LINE_BYTES {
                return Some(Err(AuditError::LineTooLong { line }));
            }
            if body.is_empty() {
                continue;
            }
            let event = match serde_json::from_slice::<AuditEvent>(body) {
                Ok(event) => event,
                Err(source) => return Some(Err(AuditError::Malformed { line, source })),
            };
            if event.to_canonical_json().as_bytes() != body {
                return Some(Err(AuditError::NotCanonical { line }));
            }
            return Some(Ok((line, event)));
        }
    }
}

impl Iterator for JsonlEvents<'_> {
    type Item = Result<(usize, AuditEvent), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_event();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Reads a whole JSONL export. Checks every line's form but not the chain:
/// an imported log is verified with [`verify`].
pub fn read_jsonl(reader: &mut dyn BufRead) -> Result<Vec<AuditEvent>, AuditError> {
    JsonlEvents::new(reader)
        .map(|item| item.map(|(_, event)| event))
        .collect()
}

/// Verifies a JSONL export from genesis, one line at a time.
pub fn verify_jsonl(reader: &mut dyn BufRead) -> Result<VerifyReport, AuditError> {
    Verifier::from_genesis().verify_jsonl(reader)
}

impl Verifier {
    /// Streams a JSONL export through this verifier; memory use does not
    /// grow with the log. Chain faults carry the line they were found on.
    pub fn verify_jsonl(mut self, reader: &mut dyn BufRead) -> Result<VerifyReport, AuditError> {
        for item in JsonlEvents::new(reader) {
            let (line, event) = item?;
            self.push(&event).map_err(|fault| AuditError::AtLine {
                line,
                source: Box::new(fault),
            })?;
        }
        self.finish()
    }
}
