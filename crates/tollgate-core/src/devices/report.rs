//! Device reports (DESIGN 8): `POST /v1/reports` bodies, parsed and
//! validated report by report.
//!
//! [`parse_reports`] is pure: it takes the body, its [`BodyFormat`], the
//! current time and the catalogue, and returns the valid reports and one
//! [`Rejection`] per invalid report, each with its position in the batch and
//! a reason that names the field and what is wrong with it
//! (`settings[3].key: unknown setting "foo.bar"`). Only a body whose framing
//! is broken fails as a whole ([`BatchError`]).
//!
//! Decisions, beyond DESIGN 8:
//! - `device.groups` may be absent (no groups); `applied` and `settings` are
//!   required but may be empty arrays; `device.user`, `device.ownership` and
//!   `settings[].actual` may be absent. `null` counts as absent for every
//!   optional field, and an empty `user` as no user. Everything else is
//!   required, and fields this version does not know are rejected.
//! - Groups are sorted and deduplicated; a baseline or setting key listed
//!   twice rejects the report (it would be ambiguous which one holds).
//! - All problems found after decoding are reported together, separated by
//!   `; ` (the first [`MAX_REASONS`] of them). A report that does not decode
//!   stops at the first problem, as the decoder does.
//! - `device.id` and group names may not hold invisible or text-steering
//!   characters ([`hidden_char`]: controls, zero-width characters,
//!   bidirectional marks, embeddings, overrides and isolates, any other
//!   `Cf` format character), nor `device.id` whitespace: two ids that look
//!   alike must be alike. The reason names the character as `U+202E`.
//!   `device.user` and `os.version` may not hold control characters.
//!   Lengths count characters.
//!   A setting's `actual` may hold any JSON up to 4 KiB, except U+0000 in a
//!   string or key, which PostgreSQL's `jsonb` cannot store.
//! - Reasons quote values cut to 64 characters and escaped, so a hostile
//!   report cannot flood or forge log lines.
//! - Lines and columns count from 1 over the whole body; columns count bytes,
//!   as `serde_json` does.
//! - A JSON array body is first cut into its elements by a small scanner
//!   that only follows strings and brackets (no recursion, so any nesting
//!   depth is safe), which is also where the [`MAX_REPORTS`] limit is
//!   enforced. Each element is then decoded on its own, so an element with a
//!   syntax error, wrong types or nesting deeper than `serde_json`'s 128
//!   levels (the report's own objects and arrays count, which leaves about
//!   125 for `actual`) is rejected alone. Only broken framing (not an array, an
//!   unterminated string or array, mismatched brackets, a missing comma, a
//!   trailing comma, data after `]`) or invalid UTF-8 fails the whole body.
//! - A leading UTF-8 byte order mark is ignored in both formats.
//! - The decoder is written by hand over `serde`'s visitor API rather than
//!   derived with `#[serde(deny_unknown_fields)]`: it is just as strict
//!   (unknown and duplicate fields are errors) but can say which field of
//!   which entry failed, which derived errors cannot. Strings are borrowed
//!   from the body wherever they hold no escapes.
//! - When a report fails to decode before its schema was read, the schema
//!   is looked up leniently: a report of another schema version is rejected
//!   for its version, not for the fields that version may have added.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Catalog, Entry};
use crate::ids::{check_dns_label, Digest, Platform};
use crate::json::JsonText;

/// The only report schema this version accepts.
pub const REPORT_SCHEMA: &str = "tollgate.device-report/v1";
/// Largest `POST /v1/reports` body.
pub const MAX_REPORTS_BODY: usize = 16 * 1024 * 1024;
/// Most reports in one request.
pub const MAX_REPORTS: usize = 10_000;
/// How far in the future of the controller's clock `checked_in_at` may be.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// Longest `device.id`, in characters.
pub const MAX_DEVICE_ID_CHARS: usize = 256;
/// Most entries in `device.groups` (before duplicates are removed).
pub const MAX_GROUPS: usize = 256;
/// Longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 128;
/// Longest `device.user`, in characters (an e-mail address is at most 320).
pub const MAX_USER_CHARS: usize = 320;
/// Longest `os.version`, in characters.
pub const MAX_OS_VERSION_CHARS: usize = 64;
/// Most entries in `applied`.
pub const MAX_APPLIED: usize = 512;
/// Most entries in `settings`.
pub const MAX_SETTINGS: usize = 1024;
/// Largest `settings[].actual`, serialized as compact JSON.
pub const MAX_ACTUAL_BYTES: usize = 4096;
/// Most problems named in one rejection; the rest are counted.
pub const MAX_REASONS: usize = 8;

/// No device checked in before 2000-01-01T00:00:00Z: an earlier time is an
/// unset clock.
const EARLIEST_CHECK_IN_SECS: i64 = 946_684_800;
const EARLIEST_CHECK_IN: &str = "2000-01-01T00:00:00Z";
/// Values quoted in reasons are cut to this many characters.
const MAX_SHOWN_CHARS: usize = 64;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One device's report, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub device: DeviceInfo,
    pub os: OsInfo,
    pub enrollment: Enrollment,
    pub checked_in_at: DateTime<Utc>,
    pub applied: Vec<Applied>,
    pub settings: Vec<SettingReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub platform: Platform,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    pub user: Option<String>,
    pub ownership: Option<Ownership>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    Corporate,
    Personal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    Enrolled,
    Pending,
    Unenrolled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub baseline: String,
    pub digest: Digest,
    pub status: ApplyStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStatus {
    Applied,
    Pending,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingReport {
    /// Borrowed from the built-in catalogue when read from a report: a
    /// report names some 30 settings, and a `String` each was a tenth of
    /// parsing one.
    pub key: Cow<'static, str>,
    pub state: SettingState,
    /// What the device has, as it said it; `None` when absent or `null`.
    pub actual: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingState {
    Compliant,
    Noncompliant,
    Error,
    Pending,
}

/// How a `POST /v1/reports` body frames its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON array of report objects.
    JsonArray,
    /// One report object per line; blank lines are skipped.
    Ndjson,
}

impl BodyFormat {
    /// The format a `Content-Type` names (`application/json` is an array;
    /// `application/x-ndjson`, `application/ndjson` and `application/jsonl`
    /// are NDJSON; parameters and case are ignored). Without a content type,
    /// or with any other, the body decides: an array if its first byte other
    /// than whitespace (after a byte order mark) is `[`, NDJSON otherwise.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> BodyFormat {
        if let Some(content_type) = content_type {
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            if essence.eq_ignore_ascii_case("application/json") {
                return BodyFormat::JsonArray;
            }
            let ndjson = ["application/x-ndjson", "application/ndjson", "application/jsonl"];
            if ndjson.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
                return BodyFormat::Ndjson;
            }
        }
        let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
        match body.iter().find(|&&b| !is_json_space(b)) {
            Some(b'[') => BodyFormat::JsonArray,
            _ => BodyFormat::Ndjson,
        }
    }
}

/// One report that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// 0-based position in the batch: the array index, or for NDJSON the
    /// number of non-blank lines before it.
    pub index: usize,
    /// The report's `device.id`, when it could be read and is itself valid.
    pub device: Option<String>,
    /// What is wrong, naming the field (`device.id: empty`).
    pub reason: String,
}

/// The outcome of a body whose framing was sound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedBatch {
    /// Valid reports with their positions in the batch, in order.
    pub reports: Vec<(usize, DeviceReport)>,
    /// The text each valid report came as, in the order of `reports`: JSON
    /// that [`read_stored_report`] reads back into the same report. It is
    /// what the store keeps, so a report is never serialised again.
    pub texts: Vec<JsonText>,
    /// Invalid reports, in order.
    pub rejected: Vec<Rejection>,
}

/// Why a whole body was refused (nothing in it is accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the body holds more than {limit} reports; send them in several requests")]
    TooMany { limit: usize },
    #[error("the body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed body: {message}")]
    Malformed { message: String },
}

/// Parses and validates a `POST /v1/reports` body (DESIGN 8).
///
/// `now` is the controller's clock, against which `checked_in_at` is
/// judged; `catalog` holds the setting keys a report may name.
pub fn parse_reports(
    body: &[u8],
    format: BodyFormat,
    now: DateTime<Utc>,
    catalog: &'static Catalog,
) -> Result<ParsedBatch, BatchError> {
    parse_with(body, format, now, catalog, |text| {
        JsonText::read_whole(text.to_string())
    })
}

/// [`parse_reports`] of a body held in [`Bytes`]: each report's text in
/// [`ParsedBatch::texts`] is a slice of the body rather than a copy.
pub fn parse_reports_shared(
    body: &Bytes,
    format: BodyFormat,
    now: DateTime<Utc>,
    catalog: &'static Catalog,
) -> Result<ParsedBatch, BatchError> {
    parse_with(body, format, now, catalog, |text| JsonText::read_whole_in(body, text))
}

fn parse_with(
    body: &[u8],
    format: BodyFormat,
    now: DateTime<Utc>,
    catalog: &'static Catalog,
    text_of: impl Fn(&str) -> JsonText,
) -> Result<ParsedBatch, BatchError> {
    if body.len() > MAX_REPORTS_BODY {
        return Err(BatchError::TooLarge {
            size: body.len(),
            limit: MAX_REPORTS_BODY,
        });
    }
    let from = if body.starts_with(UTF8_BOM) { UTF8_BOM.len() } else { 0 };
    let items = match format {
        BodyFormat::JsonArray => split_array(body, from)?,
        BodyFormat::Ndjson => split_ndjson(body, from)?,
    };
    let mut batch = ParsedBatch {
        reports: Vec::with_capacity(items.len()),
        texts: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
    };
    let mut locator = Locator::new(body);
    let mut reader = Reader {
        now,
        catalog,
        last_entries: Vec::new(),
    };
    for item in items {
        let outcome = match item.text {
            Ok(text) => reader.read(text).map(|report| (report, text)),
            Err(reason) => Err(Failure {
                device: None,
                reason: Reason::Plain(reason),
            }),
        };
        match outcome {
            Ok((report, text)) => {
                batch.reports.push((item.index, report));
                batch.texts.push(text_of(text));
            }
            Err(failure) => batch.rejected.push(Rejection {
                index: item.index,
                device: failure.device,
                reason: failure.reason.render(item.start, &mut locator),
            }),
        }
    }
    Ok(batch)
}

/// A report as a device would send it (the wire form of DESIGN 8), for
/// reports made in code: the simulator's and tests' reports, which
/// [`parse_reports`] and [`read_stored_report`] read back as they are.
pub fn report_text(report: &DeviceReport) -> String {
    let body = serde_json::to_string(report).expect("reports serialise");
    // The wire form is the serialised report with its schema first.
    let fields = body.strip_prefix('{').expect("a report serialises to an object");
    format!(
        "{{\"schema\":{},{fields}",
        serde_json::to_string(REPORT_SCHEMA).expect("a string serialises")
    )
}

/// [`report_text`] as the JSON text the store keeps.
pub fn report_json(report: &DeviceReport) -> JsonText {
    JsonText::read_whole(report_text(report))
}

/// Reads a report the store kept (its text as received, see
/// [`ParsedBatch::texts`]) with the rules it was accepted under, except the
/// clock: it was judged against the clock when it arrived.
///
/// Earlier versions stored reports serialised from [`DeviceReport`], which
/// lacks `schema`; such text is read as that form.
pub fn read_stored_report(text: &str, catalog: &'static Catalog) -> Result<DeviceReport, String> {
    let mut reader = Reader {
        now: DateTime::<Utc>::MAX_UTC,
        catalog,
        last_entries: Vec::new(),
    };
    let failure = match reader.read(text) {
        Ok(report) => return Ok(report),
        Err(failure) => failure,
    };
    let earlier_form = Probe::read(text).is_some_and(|probe| probe.schema.is_none());
    match earlier_form
        .then(|| serde_json::from_str::<DeviceReport>(text).ok())
        .flatten()
    {
        Some(report) => Ok(report),
        None => Err(failure.reason.render(0, &mut Locator::new(text.as_bytes()))),
    }
}

// ---------------------------------------------------------------------------
// Framing: cutting a body into reports.

/// One report's text in the body, or why it cannot be read at all.
struct Item<'a> {
    index: usize,
    /// Byte offset of the report in the body.
    start: usize,
    text: Result<&'a str, String>,
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_json_space(b[i]) {
        i += 1;
    }
    i
}

/// Cuts a JSON array into its elements without decoding them.
fn split_array(body: &[u8], from: usize) -> Result<Vec<Item<'_>>, BatchError> {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            let at = e.valid_up_to();
            return Err(BatchError::Malformed {
                message: format!(
                    "the body is not valid UTF-8 at {} (byte {at}); no report in it was read",
                    position(body, at)
                ),
            });
        }
    };
    let b = body;
    let mut i = skip_space(b, from);
    if i == b.len() {
        return Ok(Vec::new());
    }
    if b[i] != b'[' {
        return Err(BatchError::Malformed {
            message: format!(
                "expected a JSON array of reports, found {} at {}; send an array, or one report per line \
                 as application/x-ndjson",
                found(text, i),
                position(b, i)
            ),
        });
    }
    i = skip_space(b, i + 1);
    let mut items = Vec::new();
    let mut stack = Vec::new();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let index = items.len();
            match b.get(i) {
                None => return Err(malformed(b, i, "unterminated array: the body ends before ']'")),
                Some(b',' | b']') => {
                    let what = if index == 0 { "a report" } else { "a report after ','" };
                    return Err(malformed(
                        b,
                        i,
                        format_args!("expected {what}, found {}", found(text, i)),
                    ));
                }
                Some(_) => {}
            }
            if index == MAX_REPORTS {
                return Err(BatchError::TooMany { limit: MAX_REPORTS });
            }
            let start = i;
            i = scan_value(b, i, index, &mut stack)?;
            if i == start {
                return Err(malformed(
                    b,
                    i,
                    format_args!("expected report {index}, found {}", found(text, i)),
                ));
            }
            items.push(Item {
                index,
                start,
                text: Ok(&text[start..i]),
            });
            i = skip_space(b, i);
            match b.get(i) {
                Some(b',') => i = skip_space(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                Some(_) => {
                    return Err(malformed(
                        b,
                        i,
                        format_args!("expected ',' or ']' after report {index}, found {}", found(text, i)),
                    ))
                }
                None => return Err(malformed(b, i, "unterminated array: the body ends before ']'")),
            }
        }
    }
    let end = skip_space(b, i);
    if end != b.len() {
        return Err(malformed(
            b,
            end,
            format_args!("unexpected {} after the array's closing ']'", found(text, end)),
        ));
    }
    Ok(items)
}

/// The end of the JSON value starting at `i`, following only strings and
/// brackets: whatever else is wrong inside is for the decoder to find.
fn scan_value(b: &[u8], i: usize, index: usize, stack: &mut Vec<u8>) -> Result<usize, BatchError> {
    match b[i] {
        b'"' => scan_string(b, i, index),
        open @ (b'{' | b'[') => {
            stack.clear();
            stack.push(closer(open));
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_string(b, j, index)?;
                        continue;
                    }
                    c @ (b'{' | b'[') => stack.push(closer(c)),
                    c @ (b'}' | b']') => {
                        let expected = stack.pop().unwrap_or(c);
                        if c != expected {
                            return Err(malformed(
                                b,
                                j,
                                format_args!(
                                    "mismatched '{}' in report {index} (expected '{}')",
                                    c as char, expected as char
                                ),
                            ));
                        }
                        if stack.is_empty() {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(malformed(
                b,
                i,
                format_args!(
                    "unterminated report {index} (the body ends before its closing '{}'): it starts",
                    closer(open) as char
                ),
            ))
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b']' | b'}' | b'[' | b'{' | b'"') && !is_json_space(b[j]) {
                j += 1;
            }
            Ok(j)
        }
    }
}

fn closer(open: u8) -> u8 {
    if open == b'{' {
        b'}'
    } else {
        b']'
    }
}

/// The end of the string starting at `i` (just after its closing quote).
fn scan_string(b: &[u8], i: usize, index: usize) -> Result<usize, BatchError> {
    let mut j = i + 1;
    while j < b.len() {
        j += find_quote_or_backslash(&b[j..]);
        match b.get(j) {
            Some(b'"') => return Ok(j + 1),
            Some(_) => j += 2, // a backslash and the byte it escapes
            None => break,
        }
    }
    Err(malformed(
        b,
        i,
        format_args!("unterminated string in report {index}: it starts"),
    ))
}

/// Cuts NDJSON into its non-blank lines.
fn split_ndjson(body: &[u8], from: usize) -> Result<Vec<Item<'_>>, BatchError> {
    let mut items = Vec::new();
    let mut start = from;
    let mut line_no = 0;
    while start <= body.len() {
        let line_start = start;
        let rest = &body[start..];
        let raw = &rest[..find_newline(rest).unwrap_or(rest.len())];
        start += raw.len() + 1;
        line_no += 1;
        if raw.iter().all(|&b| is_json_space(b)) {
            continue;
        }
        if items.len() == MAX_REPORTS {
            return Err(BatchError::TooMany { limit: MAX_REPORTS });
        }
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(line).map_err(|e| {
            format!(
                "invalid UTF-8 at line {line_no} column {}",
                e.valid_up_to() + 1 + if line_no == 1 { from } else { 0 }
            )
        });
        items.push(Item {
            index: items.len(),
            start: line_start,
            text,
        });
    }
    Ok(items)
}

/// The first `\n` in `b`: splitting lines is the one pass over the whole
/// body that NDJSON needs before decoding.
fn find_newline(b: &[u8]) -> Option<usize> {
    let start = skip_words_without(b, b"\n");
    b[start..].iter().position(|&c| c == b'\n').map(|i| start + i)
}

/// Where the first `"` or `\` of `b` is, or `b.len()`: most of a JSON
/// array's bytes are inside strings, which the framing scan skips this way.
fn find_quote_or_backslash(b: &[u8]) -> usize {
    let start = skip_words_without(b, b"\"\\");
    b[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map_or(b.len(), |i| start + i)
}

/// How many leading bytes of `b`, in whole 8-byte words, hold none of
/// `bytes`: a word-at-a-time search (a byte equal to one of them is a zero
/// byte after XOR, and `(w - 0x01..) & !w & 0x80..` finds zero bytes).
fn skip_words_without(b: &[u8], bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut offset = 0;
    for chunk in b.chunks_exact(8) {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        let found = bytes.iter().any(|&byte| {
            let w = word ^ u64::from_ne_bytes([byte; 8]);
            w.wrapping_sub(ONES) & !w & HIGHS != 0
        });
        if found {
            break;
        }
        offset += 8;
    }
    offset
}

/// `'{'`, `end of body`: what is at byte `i`, for framing errors.
fn found(text: &str, i: usize) -> String {
    match text.get(i..).and_then(|rest| rest.chars().next()) {
        Some(c) => format!("{c:?}"),
        None => "the end of the body".to_string(),
    }
}

fn malformed(body: &[u8], at: usize, what: impl fmt::Display) -> BatchError {
    BatchError::Malformed {
        message: format!("{what} at {}", position(body, at)),
    }
}

/// `line 3 column 14` for a byte offset of the body.
fn position(body: &[u8], at: usize) -> String {
    let (line, column0) = Locator::new(body).locate(at);
    format!("line {line} column {}", column0 + 1)
}

/// Turns byte offsets into lines and columns, moving forward through the
/// body so that locating every report of a batch costs one pass.
struct Locator<'a> {
    body: &'a [u8],
    offset: usize,
    line: usize,
    line_start: usize,
}

impl<'a> Locator<'a> {
    fn new(body: &'a [u8]) -> Self {
        Locator {
            body,
            offset: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// 1-based line and 0-based byte column of `offset`.
    fn locate(&mut self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.body.len());
        if offset < self.offset {
            *self = Locator::new(self.body);
        }
        for (i, &b) in self.body[self.offset..offset].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.offset + i + 1;
            }
        }
        self.offset = offset;
        (self.line, offset - self.line_start)
    }
}

// ---------------------------------------------------------------------------
// One report: decoding, then validation.

struct Failure {
    device: Option<String>,
    reason: Reason,
}

enum Reason {
    Plain(String),
    /// A message about a place inside the report's text (1-based line and
    /// column there), rendered with the place in the body.
    At {
        message: String,
        line: usize,
        column: usize,
    },
}

impl Reason {
    fn render(self, start: usize, locator: &mut Locator<'_>) -> String {
        match self {
            Reason::Plain(message) => message,
            Reason::At { message, line, column } => {
                let (first_line, column0) = locator.locate(start);
                let (line, column) = if line <= 1 {
                    (first_line, column0 + column.max(1))
                } else {
                    (first_line + line - 1, column)
                };
                format!("{message} at line {line} column {column}")
            }
        }
    }
}

/// Reads the reports of one batch. Reports from one source tend to list the
/// same settings in the same order, so each report starts from what the
/// last valid one held.
struct Reader {
    now: DateTime<Utc>,
    /// `'static` so that setting keys can be borrowed from it.
    catalog: &'static Catalog,
    /// The catalogue entries of the last valid report's settings, in order.
    last_entries: Vec<&'static Entry>,
}

impl Reader {
    fn read(&mut self, text: &str) -> Result<DeviceReport, Failure> {
        let ctx = Ctx {
            settings_hint: self.last_entries.len(),
            ..Ctx::default()
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let decoded = ReportSeed { ctx: &ctx }
            .deserialize(&mut de)
            .and_then(|wire| de.end().map(|()| wire));
        match decoded {
            Ok(wire) => validate(wire, self),
            Err(err) => Err(decode_failure(text, &ctx, &err)),
        }
    }

    /// The catalogue entry of the setting at `position` of a report: one
    /// comparison when the last report had the same key there.
    fn entry(&self, position: usize, key: &str) -> Option<&'static Entry> {
        match self.last_entries.get(position) {
            Some(entry) if entry.key == key => Some(entry),
            _ => self.catalog.get(key),
        }
    }
}

fn decode_failure(text: &str, ctx: &Ctx<'_>, err: &serde_json::Error) -> Failure {
    let noted = ctx.noted.take();
    let mut device = ctx
        .device_id
        .take()
        .filter(|id| check_device_id(id).is_ok())
        .map(Cow::into_owned);
    let schema_read = ctx.schema_read.get();
    if device.is_none() || !schema_read {
        if let Some(probe) = Probe::read(text) {
            device = device.or_else(|| probe.device_id());
            if !schema_read {
                if let Some(Value::String(schema)) = &probe.schema {
                    if schema != REPORT_SCHEMA {
                        return Failure {
                            device,
                            reason: Reason::Plain(format!("schema: {}", unsupported_schema(schema))),
                        };
                    }
                }
            }
        }
    }
    let at = |message: String| Reason::At {
        message,
        line: err.line(),
        column: err.column(),
    };
    let message = err.to_string();
    let message = strip_position(&message);
    let reason = match (err.classify(), noted) {
        (serde_json::error::Category::Syntax | serde_json::error::Category::Eof, noted) => {
            let path = noted.map(|n| n.path).unwrap_or_default();
            if message == "recursion limit exceeded" {
                at(with_path(&path, "nested more than 128 levels deep"))
            } else if path.is_empty() {
                at(format!("invalid JSON: {message}"))
            } else {
                at(format!("invalid JSON in {path}: {message}"))
            }
        }
        (_, Some(noted)) if noted.positioned => at(with_path(&noted.path, &noted.why)),
        (_, Some(noted)) => Reason::Plain(with_path(&noted.path, &noted.why)),
        (_, None) => at(message.to_string()),
    };
    Failure { device, reason }
}

fn with_path(path: &str, why: &str) -> String {
    if path.is_empty() {
        why.to_string()
    } else {
        format!("{path}: {why}")
    }
}

fn unsupported_schema(schema: &str) -> String {
    format!("{} is not supported (expected {REPORT_SCHEMA})", shown(schema))
}

/// `serde_json` ends its messages with " at line L column C"; the position
/// is rendered separately, relative to the body.
fn strip_position(message: &str) -> &str {
    let Some(cut) = message.rfind(" at line ") else {
        return message;
    };
    let tail = &message[cut + " at line ".len()..];
    let is_position = tail
        .split_once(" column ")
        .is_some_and(|(l, c)| is_digits(l) && is_digits(c));
    if is_position {
        &message[..cut]
    } else {
        message
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A lenient second look at a report that failed to decode, for its device
/// id and its schema.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    device: Option<Value>,
}

impl Probe {
    fn read(text: &str) -> Option<Probe> {
        let mut de = serde_json::Deserializer::from_str(text);
        Probe::deserialize(&mut de).ok()
    }

    fn device_id(&self) -> Option<String> {
        let id = self.device.as_ref()?.get("id")?.as_str()?;
        check_device_id(id).ok().map(|()| id.to_string())
    }
}

// ---------------------------------------------------------------------------
// Decoding into the wire form. Each object is read by a visitor that knows
// its path in the report, and the first error is noted in `Ctx` with the
// path of the deepest field it happened in.

struct WireReport<'a> {
    device: WireDevice<'a>,
    os: Text<'a>,
    enrollment: Enrollment,
    checked_in_at: Text<'a>,
    applied: Vec<WireApplied<'a>>,
    settings: Vec<WireSetting<'a>>,
}

struct WireSetting<'a> {
    key: Text<'a>,
    state: SettingState,
    actual: Option<Value>,
}

struct WireDevice<'a> {
    id: Text<'a>,
    platform: Platform,
    groups: Vec<Text<'a>>,
    user: Option<Text<'a>>,
    ownership: Option<Ownership>,
}

struct WireApplied<'a> {
    baseline: Text<'a>,
    digest: Text<'a>,
    status: ApplyStatus,
}

/// A string from the body, borrowed unless it held escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A unit enum read from a string. `serde_json` calls anything but a string
/// or an object where an enum is due a syntax error ("expected value");
/// reading a string first makes it the type error it is.
struct Variant<T>(PhantomData<T>);

impl<T> Variant<T> {
    fn seed() -> Self {
        Variant(PhantomData)
    }
}

impl<'de, T: for<'a> Deserialize<'a>> DeserializeSeed<'de> for Variant<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        let text = Text::deserialize(deserializer)?;
        T::deserialize(de::value::StrDeserializer::<de::value::Error>::new(&text.0)).map_err(de::Error::custom)
    }
}

/// Where in a report a value sits: `settings[3].actual`.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

#[derive(Default)]
struct Ctx<'a> {
    noted: RefCell<Option<Noted>>,
    /// `device.id` as soon as it is read, for the rejection.
    device_id: RefCell<Option<Cow<'a, str>>>,
    /// Whether `schema` was read (and so checked) before decoding stopped.
    schema_read: Cell<bool>,
    /// How many settings to make room for at first.
    settings_hint: usize,
}

struct Noted {
    path: String,
    why: String,
    /// Whether `why` is the decoder's own message, which is worth a position.
    positioned: bool,
}

impl Ctx<'_> {
    /// Keeps the first (deepest) problem only: outer fields see the error
    /// again as it propagates.
    fn note(&self, path: Path<'_>, why: String, positioned: bool) {
        let mut noted = self.noted.borrow_mut();
        if noted.is_none() {
            *noted = Some(Noted {
                path: path.to_string(),
                why,
                positioned,
            });
        }
    }

    fn note_error(&self, path: Path<'_>, error: &impl fmt::Display) {
        if self.noted.borrow().is_none() {
            self.note(path, strip_position(&error.to_string()).to_string(), true);
        }
    }

    /// An error of ours, noted at `path`.
    fn fail<E: de::Error>(&self, path: Path<'_>, why: String) -> E {
        let error = E::custom(&why);
        self.note(path, why, false);
        error
    }
}

/// The value of the field whose key was just read.
fn value<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
    map: &mut A,
    ctx: &Ctx<'de>,
    path: Path<'_>,
    seed: S,
) -> Result<S::Value, A::Error> {
    map.next_value_seed(seed).inspect_err(|e| ctx.note_error(path, e))
}

/// The index in `names` of the next key of the object at `path`; unknown
/// and repeated keys are errors.
fn next_field<'de, A: MapAccess<'de>>(
    map: &mut A,
    ctx: &Ctx<'de>,
    path: Path<'_>,
    names: &'static [&'static str],
    seen: &mut u32,
) -> Result<Option<usize>, A::Error> {
    match map.next_key_seed(KeySeed(names))? {
        None => Ok(None),
        Some(Ok(index)) if *seen & (1 << index) != 0 => {
            Err(ctx.fail(path, format!("duplicate field \"{}\"", names[index])))
        }
        Some(Ok(index)) => {
            *seen |= 1 << index;
            Ok(Some(index))
        }
        Some(Err(unknown)) => Err(ctx.fail(
            path,
            format!(
                "unknown field {} (expected one of {})",
                shown(&unknown),
                names.join(", ")
            ),
        )),
    }
}

fn required<T, E: de::Error>(value: Option<T>, ctx: &Ctx<'_>, path: Path<'_>, name: &str) -> Result<T, E> {
    value.ok_or_else(|| ctx.fail(path, format!("missing field \"{name}\"")))
}

/// Reads an object key as its index in a list of names, or the unknown name.
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Result<usize, String>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Result<usize, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == v).ok_or_else(|| v.to_owned()))
    }
}

/// An optional value: absent and `null` are both `None`.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

const REPORT_FIELDS: &[&str] = &[
    "schema",
    "device",
    "os",
    "enrollment",
    "checked_in_at",
    "applied",
    "settings",
];

struct ReportSeed<'c, 'de> {
    ctx: &'c Ctx<'de>,
}

impl<'de> DeserializeSeed<'de> for ReportSeed<'_, 'de> {
    type Value = WireReport<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReportSeed<'_, 'de> {
    type Value = WireReport<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a device report (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let here = Path::Root;
        let mut seen = 0;
        let (mut device, mut os, mut enrollment, mut checked_in_at, mut applied, mut settings) =
            (None, None, None, None, None, None);
        while let Some(index) = next_field(&mut map, ctx, here, REPORT_FIELDS, &mut seen)? {
            let at = Path::Field(&here, REPORT_FIELDS[index]);
            match index {
                0 => {
                    let schema: Text = value(&mut map, ctx, at, PhantomData)?;
                    ctx.schema_read.set(true);
                    if schema.0 != REPORT_SCHEMA {
                        return Err(ctx.fail(at, unsupported_schema(&schema.0)));
                    }
                }
                1 => device = Some(value(&mut map, ctx, at, DeviceSeed { ctx, path: at })?),
                2 => os = Some(value(&mut map, ctx, at, OsSeed { ctx, path: at })?),
                3 => enrollment = Some(value(&mut map, ctx, at, Variant::seed())?),
                4 => checked_in_at = Some(value(&mut map, ctx, at, PhantomData)?),
                5 => applied = Some(value(&mut map, ctx, at, ListSeed::new(ctx, at, MAX_APPLIED))?),
                _ => {
                    let seed = ListSeed::new(ctx, at, MAX_SETTINGS).with_capacity(ctx.settings_hint);
                    settings = Some(value(&mut map, ctx, at, seed)?);
                }
            }
        }
        if seen & 1 == 0 {
            return Err(ctx.fail(here, "missing field \"schema\"".to_string()));
        }
        Ok(WireReport {
            device: required(device, ctx, here, "device")?,
            os: required(os, ctx, here, "os")?,
            enrollment: required(enrollment, ctx, here, "enrollment")?,
            checked_in_at: required(checked_in_at, ctx, here, "checked_in_at")?,
            applied: required(applied, ctx, here, "applied")?,
            settings: required(settings, ctx, here, "settings")?,
        })
    }
}

const DEVICE_FIELDS: &[&str] = &["id", "platform", "groups", "user", "ownership"];

struct DeviceSeed<'c, 'p, 'de> {
    ctx: &'c Ctx<'de>,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for DeviceSeed<'_, '_, 'de> {
    type Value = WireDevice<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DeviceSeed<'_, '_, 'de> {
    type Value = WireDevice<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with id, platform, groups, user and ownership")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, here) = (self.ctx, self.path);
        let mut seen = 0;
        let (mut id, mut platform, mut groups, mut user, mut ownership) = (None, None, None, None, None);
        while let Some(index) = next_field(&mut map, ctx, here, DEVICE_FIELDS, &mut seen)? {
            let at = Path::Field(&here, DEVICE_FIELDS[index]);
            match index {
                0 => {
                    let text: Text = value(&mut map, ctx, at, PhantomData)?;
                    *ctx.device_id.borrow_mut() = Some(text.0.clone());
                    id = Some(text);
                }
                1 => platform = Some(value(&mut map, ctx, at, Variant::seed())?),
                2 => groups = value(&mut map, ctx, at, Nullable(ListSeed::new(ctx, at, MAX_GROUPS)))?,
                3 => user = value(&mut map, ctx, at, Nullable(PhantomData))?,
                _ => ownership = value(&mut map, ctx, at, Nullable(Variant::seed()))?,
            }
        }
        Ok(WireDevice {
            id: required(id, ctx, here, "id")?,
            platform: required(platform, ctx, here, "platform")?,
            groups: groups.unwrap_or_default(),
            user,
            ownership,
        })
    }
}

const OS_FIELDS: &[&str] = &["version"];

struct OsSeed<'c, 'p, 'de> {
    ctx: &'c Ctx<'de>,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for OsSeed<'_, '_, 'de> {
    type Value = Text<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OsSeed<'_, '_, 'de> {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with version")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, here) = (self.ctx, self.path);
        let mut seen = 0;
        let mut version = None;
        while let Some(index) = next_field(&mut map, ctx, here, OS_FIELDS, &mut seen)? {
            version = Some(value(&mut map, ctx, Path::Field(&here, OS_FIELDS[index]), PhantomData)?);
        }
        required(version, ctx, here, "version")
    }
}

const APPLIED_FIELDS: &[&str] = &["baseline", "digest", "status"];

struct AppliedSeed<'c, 'p, 'de> {
    ctx: &'c Ctx<'de>,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for AppliedSeed<'_, '_, 'de> {
    type Value = WireApplied<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AppliedSeed<'_, '_, 'de> {
    type Value = WireApplied<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with baseline, digest and status")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, here) = (self.ctx, self.path);
        let mut seen = 0;
        let (mut baseline, mut digest, mut status) = (None, None, None);
        while let Some(index) = next_field(&mut map, ctx, here, APPLIED_FIELDS, &mut seen)? {
            let at = Path::Field(&here, APPLIED_FIELDS[index]);
            match index {
                0 => baseline = Some(value(&mut map, ctx, at, PhantomData)?),
                1 => digest = Some(value(&mut map, ctx, at, PhantomData)?),
                _ => status = Some(value(&mut map, ctx, at, Variant::seed())?),
            }
        }
        Ok(WireApplied {
            baseline: required(baseline, ctx, here, "baseline")?,
            digest: required(digest, ctx, here, "digest")?,
            status: required(status, ctx, here, "status")?,
        })
    }
}

const SETTING_FIELDS: &[&str] = &["key", "state", "actual"];

struct SettingSeed<'c, 'p, 'de> {
    ctx: &'c Ctx<'de>,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for SettingSeed<'_, '_, 'de> {
    type Value = WireSetting<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SettingSeed<'_, '_, 'de> {
    type Value = WireSetting<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with key, state and actual")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (ctx, here) = (self.ctx, self.path);
        let mut seen = 0;
        let (mut key, mut state, mut actual) = (None, None, None);
        while let Some(index) = next_field(&mut map, ctx, here, SETTING_FIELDS, &mut seen)? {
            let at = Path::Field(&here, SETTING_FIELDS[index]);
            match index {
                0 => key = Some(value(&mut map, ctx, at, PhantomData::<Text>)?),
                1 => state = Some(value(&mut map, ctx, at, Variant::seed())?),
                _ => actual = value(&mut map, ctx, at, Nullable(PhantomData))?,
            }
        }
        Ok(WireSetting {
            key: required(key, ctx, here, "key")?,
            state: required(state, ctx, here, "state")?,
            actual,
        })
    }
}

/// What an array may hold, read with its path.
trait ListItem<'de>: Sized {
    fn next<A: SeqAccess<'de>>(seq: &mut A, ctx: &Ctx<'de>, path: Path<'_>) -> Result<Option<Self>, A::Error>;
}

impl<'de> ListItem<'de> for Text<'de> {
    fn next<A: SeqAccess<'de>>(seq: &mut A, ctx: &Ctx<'de>, path: Path<'_>) -> Result<Option<Self>, A::Error> {
        seq.next_element().inspect_err(|e| ctx.note_error(path, e))
    }
}

impl<'de> ListItem<'de> for WireApplied<'de> {
    fn next<A: SeqAccess<'de>>(seq: &mut A, ctx: &Ctx<'de>, path: Path<'_>) -> Result<Option<Self>, A::Error> {
        seq.next_element_seed(AppliedSeed { ctx, path })
            .inspect_err(|e| ctx.note_error(path, e))
    }
}

impl<'de> ListItem<'de> for WireSetting<'de> {
    fn next<A: SeqAccess<'de>>(seq: &mut A, ctx: &Ctx<'de>, path: Path<'_>) -> Result<Option<Self>, A::Error> {
        seq.next_element_seed(SettingSeed { ctx, path })
            .inspect_err(|e| ctx.note_error(path, e))
    }
}

/// An array of at most `max` items.
struct ListSeed<'c, 'p, 'de, T> {
    ctx: &'c Ctx<'de>,
    path: Path<'p>,
    max: usize,
    capacity: usize,
    item: PhantomData<T>,
}

impl<'c, 'p, 'de, T> ListSeed<'c, 'p, 'de, T> {
    fn new(ctx: &'c Ctx<'de>, path: Path<'p>, max: usize) -> Self {
        ListSeed {
            ctx,
            path,
            max,
            capacity: 0,
            item: PhantomData,
        }
    }

    /// Room for `capacity` items at first (`serde_json` cannot tell how
    /// many an array holds).
    fn with_capacity(self, capacity: usize) -> Self {
        ListSeed { capacity, ..self }
    }
}

impl<'de, T: ListItem<'de>> DeserializeSeed<'de> for ListSeed<'_, '_, 'de, T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: ListItem<'de>> Visitor<'de> for ListSeed<'_, '_, 'de, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} entries", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(self.capacity.min(self.max));
        loop {
            if items.len() == self.max {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(self.ctx.fail(self.path, format!("more than {} entries", self.max)));
                }
                return Ok(items);
            }
            match T::next(&mut seq, self.ctx, Path::Index(&self.path, items.len()))? {
                Some(item) => items.push(item),
                None => return Ok(items),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Validation of a decoded report.

/// The problems of one report, the first `MAX_REASONS` of them in words.
#[derive(Default)]
struct Problems {
    named: Vec<String>,
    count: usize,
}

impl Problems {
    fn push(&mut self, problem: String) {
        self.count += 1;
        if self.named.len() < MAX_REASONS {
            self.named.push(problem);
        }
    }

    fn render(self) -> String {
        let mut text = self.named.join("; ");
        let more = self.count - self.named.len();
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text
    }
}

fn validate(wire: WireReport<'_>, reader: &mut Reader) -> Result<DeviceReport, Failure> {
    let mut problems = Problems::default();
    let device = wire.device;

    let id_valid = match check_device_id(&device.id.0) {
        Ok(()) => true,
        Err(why) => {
            problems.push(format!("device.id: {why}"));
            false
        }
    };

    let mut groups = Vec::with_capacity(device.groups.len());
    for (i, group) in device.groups.into_iter().enumerate() {
        match check_name(&group.0, MAX_GROUP_CHARS) {
            Ok(()) => groups.push(group.0.into_owned()),
            Err(why) => problems.push(format!("device.groups[{i}]: {why}")),
        }
    }
    groups.sort_unstable();
    groups.dedup();

    let user = match device.user {
        Some(user) if user.0.is_empty() => None,
        Some(user) => match check_text(&user.0, MAX_USER_CHARS) {
            Ok(()) => Some(user.0.into_owned()),
            Err(why) => {
                problems.push(format!("device.user: {why}"));
                None
            }
        },
        None => None,
    };

    if let Err(why) = check_text(&wire.os.0, MAX_OS_VERSION_CHARS) {
        problems.push(format!("os.version: {why}"));
    }

    let checked_in_at = check_time(&wire.checked_in_at.0, reader.now).unwrap_or_else(|why| {
        problems.push(format!("checked_in_at: {why}"));
        DateTime::<Utc>::UNIX_EPOCH
    });

    let mut applied = Vec::with_capacity(wire.applied.len());
    for (i, entry) in wire.applied.iter().enumerate() {
        let baseline = &entry.baseline.0;
        let baseline_check = if baseline.len() > 63 {
            Err(format!("{} must be 1 to 63 characters long", shown(baseline)))
        } else {
            check_dns_label(baseline)
        };
        if let Err(why) = baseline_check {
            problems.push(format!("applied[{i}].baseline: {why}"));
        }
        match parse_digest(&entry.digest.0) {
            Some(digest) => applied.push(Applied {
                baseline: baseline.to_string(),
                digest,
                status: entry.status,
            }),
            None => problems.push(format!(
                "applied[{i}].digest: {} is not \"sha256:\" followed by 64 lowercase hex digits",
                shown(&entry.digest.0)
            )),
        }
    }
    each_repeat(
        wire.applied.iter().map(|a| &*a.baseline.0).enumerate(),
        |first, again| {
            problems.push(format!(
                "applied[{again}].baseline: {} is listed twice (also applied[{first}])",
                shown(&wire.applied[again].baseline.0)
            ))
        },
    );

    // Known keys are told apart by their catalogue entry: comparing
    // addresses is cheaper than comparing strings.
    let mut entries = Vec::with_capacity(wire.settings.len());
    for (i, setting) in wire.settings.iter().enumerate() {
        match reader.entry(i, &setting.key.0) {
            Some(entry) => entries.push((i, entry)),
            None => problems.push(format!("settings[{i}].key: unknown setting {}", shown(&setting.key.0))),
        }
        if let Some(actual) = &setting.actual {
            if json_longer_than(actual, MAX_ACTUAL_BYTES) {
                problems.push(format!(
                    "settings[{i}].actual: more than {MAX_ACTUAL_BYTES} bytes as JSON"
                ));
            } else if holds_nul(actual) {
                // PostgreSQL's jsonb refuses it, and with it the whole batch.
                problems.push(format!(
                    "settings[{i}].actual: holds the character U+0000, which cannot be stored"
                ));
            }
        }
    }
    each_repeat(
        entries.iter().map(|&(i, entry)| (i, std::ptr::from_ref(entry))),
        |first, again| {
            problems.push(format!(
                "settings[{again}].key: {} is listed twice (also settings[{first}])",
                shown(&wire.settings[again].key.0)
            ))
        },
    );

    if problems.count > 0 {
        return Err(Failure {
            device: id_valid.then(|| device.id.0.into_owned()),
            reason: Reason::Plain(problems.render()),
        });
    }
    // Every key is known here (an unknown one rejected the report), and
    // `entries` holds one per setting, in order.
    let settings = wire
        .settings
        .into_iter()
        .zip(&entries)
        .map(|(s, &(_, entry))| SettingReport {
            key: Cow::Borrowed(entry.key.as_str()),
            state: s.state,
            actual: s.actual,
        })
        .collect();
    reader.last_entries.clear();
    reader.last_entries.extend(entries.into_iter().map(|(_, entry)| entry));
    Ok(DeviceReport {
        device: DeviceInfo {
            id: device.id.0.into_owned(),
            platform: device.platform,
            groups,
            user,
            ownership: device.ownership,
        },
        os: OsInfo {
            version: wire.os.0.into_owned(),
        },
        enrollment: wire.enrollment,
        checked_in_at,
        applied,
        settings,
    })
}

/// 1 to 256 characters, no whitespace and no [`hidden_char`].
///
/// The rule of `device.id` in reports and of the id in `/v1/devices/{id}`.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".to_string());
    }
    if too_long(id, MAX_DEVICE_ID_CHARS) {
        return Err(format!("longer than {MAX_DEVICE_ID_CHARS} characters"));
    }
    let why = |c: char| hidden_char(c).or_else(|| c.is_whitespace().then_some("whitespace"));
    match first_with(id, why) {
        Some(found) => Err(found),
        None => Ok(()),
    }
}

/// 1 to `max` characters, no [`hidden_char`]: the rule of group names.
fn check_name(text: &str, max: usize) -> Result<(), String> {
    check_text_with(text, max, hidden_char)
}

/// 1 to `max` characters, no control characters.
fn check_text(text: &str, max: usize) -> Result<(), String> {
    check_text_with(text, max, |c| c.is_control().then_some("a control character"))
}

fn check_text_with(text: &str, max: usize, why: impl Fn(char) -> Option<&'static str>) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty".to_string());
    }
    if too_long(text, max) {
        return Err(format!("longer than {max} characters"));
    }
    match first_with(text, why) {
        Some(found) => Err(found),
        None => Ok(()),
    }
}

/// `"a\u{202e}b" holds U+202E (a bidirectional override) at character 2`
/// for the first character of `text` that `why` refuses.
fn first_with(text: &str, why: impl Fn(char) -> Option<&'static str>) -> Option<String> {
    let (n, c, what) = text
        .chars()
        .enumerate()
        .find_map(|(n, c)| why(c).map(|what| (n, c, what)))?;
    Some(format!(
        "{} holds U+{:04X} ({what}) at character {}",
        shown(text),
        u32::from(c),
        n + 1
    ))
}

/// What kind of invisible or text-steering character `c` is, if it is one:
/// such characters make two identifiers that look the same differ, or make
/// one show as another (a right-to-left override turns `serial:ABC` around
/// on screen), so identifiers may not hold them.
///
/// C0 and C1 controls (and DEL), the zero-width characters U+200B to
/// U+200D, U+2060 and U+FEFF, the bidirectional marks U+200E, U+200F and
/// U+061C, embeddings and overrides U+202A to U+202E, isolates U+2066 to
/// U+2069, and every other character of the Unicode category `Cf` (format).
pub fn hidden_char(c: char) -> Option<&'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    Some(match c {
        c if c.is_control() => "a control character",
        '\u{FEFF}' => "a zero-width no-break space, or byte-order mark",
        '\u{200B}'..='\u{200D}' | '\u{2060}' => "a zero-width character",
        '\u{200E}' | '\u{200F}' | '\u{061C}' => "a bidirectional mark",
        '\u{202A}'..='\u{202C}' => "a bidirectional embedding",
        '\u{202D}' | '\u{202E}' => "a bidirectional override",
        '\u{2066}'..='\u{2069}' => "a bidirectional isolate",
        c if c.general_category() == GeneralCategory::Format => "an invisible format character",
        _ => return None,
    })
}

fn too_long(text: &str, max_chars: usize) -> bool {
    // A char is at least one byte: most strings are decided without counting.
    text.len() > max_chars && text.chars().nth(max_chars).is_some()
}

fn check_time(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|e| format!("{} is not an RFC 3339 time ({e})", shown(raw)))?
        .with_timezone(&Utc);
    let ahead = at - now;
    if ahead > MAX_CLOCK_SKEW {
        return Err(format!(
            "{raw} is {} in the future (clock skew over {})",
            duration(ahead),
            duration(MAX_CLOCK_SKEW)
        ));
    }
    if at.timestamp() < EARLIEST_CHECK_IN_SECS {
        return Err(format!(
            "{raw} is before {EARLIEST_CHECK_IN} (is the device's clock set?)"
        ));
    }
    Ok(at)
}

/// `1h`, `5m 30s`, `2d 3h`: the largest unit and the next, the seconds
/// rounded up.
fn duration(delta: TimeDelta) -> String {
    const UNITS: [(i64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = delta.num_seconds() + i64::from(delta.subsec_nanos() > 0);
    let Some(k) = UNITS.iter().position(|&(size, _)| secs >= size) else {
        return "0s".to_string();
    };
    let (size, name) = UNITS[k];
    let mut text = format!("{}{name}", secs / size);
    if let Some(&(smaller, smaller_name)) = UNITS.get(k + 1) {
        let n = secs % size / smaller;
        if n > 0 {
            text.push_str(&format!(" {n}{smaller_name}"));
        }
    }
    text
}

fn parse_digest(s: &str) -> Option<Digest> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Digest::deserialize(de::value::StrDeserializer::<de::value::Error>::new(s)).ok()
}

/// Calls `repeated(first, again)` for every position whose key appeared
/// before, first at `first`. Takes `(position, key)` pairs in order.
fn each_repeat<K: Ord>(keys: impl Iterator<Item = (usize, K)>, mut repeated: impl FnMut(usize, usize)) {
    let mut sorted: Vec<(K, usize)> = keys.map(|(i, key)| (key, i)).collect();
    if sorted.len() < 2 {
        return;
    }
    sorted.sort_unstable();
    let mut first = 0;
    for k in 1..sorted.len() {
        if sorted[k].0 == sorted[first].0 {
            repeated(sorted[first].1, sorted[k].1);
        } else {
            first = k;
        }
    }
}

/// Whether `value` takes more than `limit` bytes as compact JSON, found
/// without writing more than `limit` bytes anywhere.
fn json_longer_than(value: &Value, limit: usize) -> bool {
    // A number takes at most 24 bytes; a string at most 6 per byte plus quotes.
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
        Value::String(s) if s.len() * 6 + 2 <= limit => false,
        _ => {
            struct Budget(usize);
            impl io::Write for Budget {
                fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                    self.0 = self.0.checked_sub(buf.len()).ok_or(io::ErrorKind::WriteZero)?;
                    Ok(buf.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            serde_json::to_writer(Budget(limit), value).is_err()
        }
    }
}

/// Whether a string or object key anywhere in `value` holds U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
    }
}

/// A value for a reason: quoted, escaped and cut to 64 characters.
fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_told_by_class() {
        let class = |c: char| hidden_char(c).unwrap_or_else(|| panic!("U+{:04X} passed", u32::from(c)));
        for c in ('\u{0}'..='\u{1F}').chain(['\u{7F}']).chain('\u{80}'..='\u{9F}') {
            assert_eq!(class(c), "a control character", "U+{:04X}", u32::from(c));
        }
        for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}'] {
            assert_eq!(class(c), "a zero-width character");
        }
        assert_eq!(class('\u{FEFF}'), "a zero-width no-break space, or byte-order mark");
        for c in ['\u{200E}', '\u{200F}', '\u{061C}'] {
            assert_eq!(class(c), "a bidirectional mark");
        }
        for c in '\u{202A}'..='\u{202C}' {
            assert_eq!(class(c), "a bidirectional embedding");
        }
        for c in ['\u{202D}', '\u{202E}'] {
            assert_eq!(class(c), "a bidirectional override");
        }
        for c in '\u{2066}'..='\u{2069}' {
            assert_eq!(class(c), "a bidirectional isolate");
        }
        // Other `Cf` characters: soft hyphen, Arabic number sign, Mongolian
        // vowel separator, invisible times, interlinear annotation, tags.
        for c in [
            '\u{AD}',
            '\u{600}',
            '\u{180E}',
            '\u{2062}',
            '\u{FFF9}',
            '\u{E0001}',
            '\u{E0041}',
        ] {
            assert_eq!(class(c), "an invisible format character", "U+{:04X}", u32::from(c));
        }
        // Visible text, spaces and separators are not hidden (ids refuse
        // whitespace on their own account).
        for c in [
            'a', 'Z', '0', ':', '-', 'é', 'ß', 'ж', '中', 'ع', '😀', ' ', '\u{A0}', '\u{2028}', '\u{E000}',
        ] {
            assert_eq!(hidden_char(c), None, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn ids_and_group_names_name_the_hidden_character() {
        assert_eq!(
            check_device_id("serial:\u{202E}FED").unwrap_err(),
            "\"serial:\\u{202e}FED\" holds U+202E (a bidirectional override) at character 8"
        );
        assert_eq!(
            check_device_id("a\u{200B}b").unwrap_err(),
            "\"a\\u{200b}b\" holds U+200B (a zero-width character) at character 2"
        );
        assert_eq!(
            check_device_id("a b").unwrap_err(),
            "\"a b\" holds U+0020 (whitespace) at character 2"
        );
        assert_eq!(
            check_device_id("\u{85}x").unwrap_err(),
            "\"\\u{85}x\" holds U+0085 (a control character) at character 1"
        );
        assert_eq!(check_device_id("serial:C02XK0ABCDEF"), Ok(()));
        assert_eq!(check_device_id("imei:35-209900-176148-1"), Ok(()));
        assert_eq!(
            check_name("mdm-\u{2066}pilot", MAX_GROUP_CHARS).unwrap_err(),
            "\"mdm-\\u{2066}pilot\" holds U+2066 (a bidirectional isolate) at character 5"
        );
        // Group names may hold spaces; ids may not.
        assert_eq!(check_name("Legal team", MAX_GROUP_CHARS), Ok(()));
        assert!(check_name("a\u{AD}b", MAX_GROUP_CHARS).is_err());
        // Users and OS versions keep the plain rule: controls only.
        assert_eq!(check_text("a\u{200D}b", MAX_USER_CHARS), Ok(()));
        assert!(check_text("a\u{1}b", MAX_USER_CHARS).is_err());
    }

    #[test]
    fn positions_are_stripped_only_when_they_are_positions() {
        assert_eq!(strip_position("expected value at line 1 column 7"), "expected value");
        assert_eq!(strip_position("recursion limit exceeded"), "recursion limit exceeded");
        assert_eq!(strip_position("look at line one"), "look at line one");
        assert_eq!(strip_position("x at line 2 column"), "x at line 2 column");
    }

    #[test]
    fn durations_show_two_units_rounded_up_to_the_second() {
        let d = |secs: i64| duration(TimeDelta::seconds(secs));
        assert_eq!(d(3600), "1h");
        assert_eq!(d(3900), "1h 5m");
        assert_eq!(d(330), "5m 30s");
        assert_eq!(d(86_400 + 3 * 3600 + 59), "1d 3h");
        assert_eq!(d(86_400 + 59), "1d");
        assert_eq!(d(0), "0s");
        assert_eq!(duration(TimeDelta::milliseconds(300_500)), "5m 1s");
        assert_eq!(duration(MAX_CLOCK_SKEW), "5m");
    }

    #[test]
    fn shown_values_are_quoted_escaped_and_cut() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(100);
        assert_eq!(shown(&long), format!("{:?}…", "é".repeat(64)));
    }

    #[test]
    fn locator_counts_lines_and_byte_columns_forward_and_back() {
        let body = b"ab\ncd\n\nxyz";
        let mut l = Locator::new(body);
        assert_eq!(l.locate(0), (1, 0));
        assert_eq!(l.locate(4), (2, 1));
        assert_eq!(l.locate(9), (4, 2));
        assert_eq!(l.locate(1), (1, 1));
        assert_eq!(l.locate(100), (4, 3));
    }

    #[test]
    fn repeats_name_the_first_and_every_later_position() {
        let mut seen = Vec::new();
        each_repeat(
            ["b", "a", "b", "c", "b", "a"].into_iter().enumerate(),
            |first, again| seen.push((first, again)),
        );
        seen.sort();
        assert_eq!(seen, [(0, 2), (0, 4), (1, 5)]);
    }

    #[test]
    fn newlines_are_found_at_any_offset() {
        assert_eq!(find_newline(b""), None);
        assert_eq!(find_newline(b"abcdefghijklmnop"), None);
        for at in 0..40 {
            let mut line = vec![b'x'; 40];
            line[at] = b'\n';
            if at + 3 < 40 {
                line[at + 3] = b'\n';
            }
            assert_eq!(find_newline(&line), Some(at), "{at}");
            assert_eq!(find_newline(&line[..at]), None);
        }
        // Bytes one above or below '\n', and high bytes, are no newlines.
        assert_eq!(
            find_newline(&[0x0B, 0x09, 0x8A, 0xFF, 0x0B, 0x0B, 0x0B, 0x0B, 0x0A]),
            Some(8)
        );
    }

    #[test]
    fn quotes_and_backslashes_are_found_at_any_offset() {
        assert_eq!(find_quote_or_backslash(b""), 0);
        assert_eq!(find_quote_or_backslash(b"abcdefghijklmnopq"), 17);
        for at in 0..40 {
            for special in [b'"', b'\\'] {
                let mut text = vec![b'x'; 40];
                text[at] = special;
                assert_eq!(find_quote_or_backslash(&text), at, "{at}");
            }
        }
        assert_eq!(
            find_quote_or_backslash(&[b'!', b'#', 0xA2, 0xDC, b'[', b']', b'{', b'}', b'\\']),
            8
        );
    }

    #[test]
    fn json_size_is_measured_without_overflowing_the_budget() {
        assert!(!json_longer_than(&Value::from(1.5e300), 24));
        assert!(!json_longer_than(&Value::from("x".repeat(4094)), 4096));
        assert!(json_longer_than(&Value::from("x".repeat(4095)), 4096));
        assert!(json_longer_than(&Value::from("\u{1}".repeat(700)), 4096));
        let list = Value::from(vec![1; 2048]); // "[1,1,...]": 4097 bytes
        assert!(json_longer_than(&list, 4096));
        assert!(!json_longer_than(&Value::from(vec![1; 2047]), 4096));
    }

    #[test]
    fn paths_read_like_field_access() {
        let root = Path::Root;
        let settings = Path::Field(&root, "settings");
        let third = Path::Index(&settings, 3);
        let actual = Path::Field(&third, "actual");
        assert_eq!(actual.to_string(), "settings[3].actual");
        assert_eq!(root.to_string(), "");
    }

    fn elements(body: &str) -> Result<Vec<(usize, String)>, BatchError> {
        split_array(body.as_bytes(), 0).map(|items| {
            items
                .into_iter()
                .map(|item| (item.start, item.text.unwrap().to_string()))
                .collect()
        })
    }

    #[test]
    fn array_scanner_cuts_elements_at_their_own_brackets() {
        let body = r#" [ {"a": "]}\"", "b": [1, {"c": []}]} ,  7 , "x,]" , [] , tru ]  "#;
        assert_eq!(
            elements(body).unwrap(),
            [
                (3, r#"{"a": "]}\"", "b": [1, {"c": []}]}"#.to_string()),
                (41, "7".to_string()),
                (45, r#""x,]""#.to_string()),
                (53, "[]".to_string()),
                (58, "tru".to_string()),
            ]
        );
        assert_eq!(elements("[]").unwrap(), []);
        assert_eq!(elements(" \n ").unwrap(), []);
    }

    #[test]
    fn array_scanner_refuses_broken_framing() {
        for (body, expected) in [
            (
                "{}",
                "expected a JSON array of reports, found '{' at line 1 column 1; send an array, or one report per \
                 line as application/x-ndjson",
            ),
            ("[{}", "unterminated array: the body ends before ']' at line 1 column 4"),
            (
                "[{} {}]",
                "expected ',' or ']' after report 0, found '{' at line 1 column 5",
            ),
            ("[{},]", "expected a report after ',', found ']' at line 1 column 5"),
            ("[,{}]", "expected a report, found ',' at line 1 column 2"),
            ("[{]}]", "mismatched ']' in report 0 (expected '}') at line 1 column 3"),
            (
                "[\n {\"a\": 1]",
                "mismatched ']' in report 0 (expected '}') at line 2 column 9",
            ),
            (
                "[{\"a\": [1}]",
                "mismatched '}' in report 0 (expected ']') at line 1 column 10",
            ),
            (
                "[{\"a\": \"x}]",
                "unterminated string in report 0: it starts at line 1 column 8",
            ),
            (
                "[{}, {\"a\": [",
                "unterminated report 1 (the body ends before its closing '}'): it starts at line 1 column 6",
            ),
            (
                "[] x",
                "unexpected 'x' after the array's closing ']' at line 1 column 4",
            ),
            ("[}]", "expected report 0, found '}' at line 1 column 2"),
        ] {
            match elements(body) {
                Err(BatchError::Malformed { message }) => assert_eq!(message, expected, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
