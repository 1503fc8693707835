//! The fleet simulator behind `tollgate simulate` (DESIGN 5): a fleet of
//! made-up devices that pulls desired state from a controller and reports
//! back, for demos, tests and the ingestion benchmark.
//!
//! Everything about the fleet follows from the seed: device ids
//! (`{prefix}-{platform}-{n:06}`), platforms (ios 40%, android 25%, windows
//! 15%, macos 15%, ipados 5%), OS versions (a plausible spread per platform),
//! rings, which devices never check in (`stale_rate`), which fail to apply
//! which digest and which drift on one setting (`fail_rate`).
//!
//! Each round:
//! 1. `GET /v1/rings`, then `GET /v1/desired?ring=R` per ring with
//!    `If-None-Match` (bodies are cached; 304 keeps them, 404 means nothing
//!    is published there yet and the ring's devices report no baselines).
//! 2. Every device that is not stale reports: its ring's first selector group
//!    (none in an `all` ring) plus the target groups of every desired
//!    baseline of its platform in any ring, so that baselines apply to it.
//!    Groups that would move it to an earlier ring are left out.
//! 3. The baselines that apply are its ring's desired baselines of its
//!    platform whose targets meet its groups. Each is applied, or with
//!    probability `fail_rate` (fixed per device and digest) fails: the report
//!    then says `failed` with the digest the device still runs, the newest
//!    earlier digest of that baseline it applied (or, if none, the digest it
//!    failed to apply).
//! 4. Settings: the effective value of every key of the applied baselines
//!    (highest priority wins, then the first name, as `explain` does) is
//!    `compliant` with the desired value as `actual`; `os.min_version`
//!    compares the device's OS version numerically and is `noncompliant`
//!    below it, `actual` being the version; a `fail_rate` share of devices
//!    report one fixed setting `noncompliant`. Settings of a baseline that
//!    failed are not reported (the simulator does not keep old content).
//! 5. Reports go out as NDJSON in batches, from `concurrency` threads, each
//!    with its own HTTP agent. A 429 is retried with the same batch after
//!    `Retry-After`; other failures are counted and the round goes on.
//!
//! Exceptions and pins in the desired state do not change what devices do.
//!
//! Reports are cheap to make: every device's fixed part and every
//! (ring, platform) profile of baselines and settings is rendered to JSON
//! once, whenever the desired state changes; a report is then a few slices
//! copied into a buffer that each thread reuses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use tollgate_core::devices::report::{MAX_REPORTS, MAX_REPORTS_BODY, REPORT_SCHEMA};
use tollgate_core::ids::Platform;

/// Where the simulator reads the time (`checked_in_at`); tests pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Reports per `POST /v1/reports` unless told otherwise.
pub const DEFAULT_BATCH: usize = 1000;
/// Posting threads unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Rejections and error messages kept per summary.
const KEPT: usize = 5;
/// Digests remembered per (ring, baseline), for "the device keeps its previous digest".
const HISTORY: usize = 8;
/// The longest `Retry-After` honoured; a larger one is waited this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to simulate and where to report.
#[derive(Clone)]
pub struct SimOptions {
    /// The controller, e.g. `http://127.0.0.1:8080` (plain HTTP, host and port).
    pub server: String,
    /// Bearer token (a reporter token is enough).
    pub token: Option<String>,
    /// Fleet size.
    pub devices: usize,
    /// Share of (device, digest) pairs whose apply fails, and of devices that
    /// drift on one setting; 0 to 1.
    pub fail_rate: f64,
    /// Share of devices that never check in; 0 to 1.
    pub stale_rate: f64,
    /// Rounds to run; 0 runs until `stop` is set.
    pub rounds: u64,
    /// Time from the start of one round to the start of the next.
    pub interval: Duration,
    /// Reports per request, 1 to 10,000.
    pub batch: usize,
    /// Posting threads.
    pub concurrency: usize,
    pub seed: u64,
    /// Device ids are `{id_prefix}-{platform}-{n:06}`.
    pub id_prefix: String,
    /// `checked_in_at`; the system clock when `None`.
    pub clock: Option<Clock>,
    /// Longest wait for one HTTP request.
    pub request_timeout: Duration,
}

impl SimOptions {
    /// Defaults for everything but the server and the fleet size: no
    /// failures, no stale devices, one round, batches of 1,000, two threads.
    pub fn new(server: impl Into<String>, devices: usize) -> SimOptions {
        SimOptions {
            server: server.into(),
            token: None,
            devices,
            fail_rate: 0.0,
            stale_rate: 0.0,
            rounds: 1,
            interval: Duration::from_secs(10),
            batch: DEFAULT_BATCH,
            concurrency: DEFAULT_CONCURRENCY,
            seed: 1,
            id_prefix: "sim".into(),
            clock: None,
            request_timeout: Duration::from_secs(60),
        }
    }

    /// Checks every option; the simulator refuses to start otherwise.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Options(m));
        server_base(&self.server)?;
        if self.devices == 0 {
            return bad("the fleet needs at least one device".into());
        }
        for (name, rate) in [("fail rate", self.fail_rate), ("stale rate", self.stale_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(format!("the {name} must be a share from 0 to 1, got {rate}"));
            }
        }
        if !(1..=MAX_REPORTS).contains(&self.batch) {
            return bad(format!("a batch holds 1 to {MAX_REPORTS} reports, got {}", self.batch));
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        check_prefix(&self.id_prefix).map_err(SimError::Options)
    }

    fn now(&self) -> DateTime<Utc> {
        match &self.clock {
            Some(clock) => clock(),
            None => Utc::now(),
        }
    }
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("devices", &self.devices)
            .field("fail_rate", &self.fail_rate)
            .field("stale_rate", &self.stale_rate)
            .field("rounds", &self.rounds)
            .field("interval", &self.interval)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("seed", &self.seed)
            .field("id_prefix", &self.id_prefix)
            .field("clock", &self.clock.as_ref().map(|_| "<fn>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Device id prefixes: letters, digits, `-`, `_`, `.`, `:`; at most 64.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(ok) {
        return Err(format!(
            "device id prefix {prefix:?} must be 1 to 64 letters, digits, '-', '_', '.' or ':'"
        ));
    }
    Ok(())
}

/// Why the simulator could not run. Failures of single requests during a
/// round are not errors: they are counted in the round's summary.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Options(String),
    /// The rings could not be read before any round: the server is
    /// unreachable or refused (a 404 or 503, a controller that has not read
    /// its repo yet, is waited out instead: the round reports nothing).
    #[error("cannot read the rings from {server}")]
    Rings {
        server: String,
        #[source]
        source: RequestError,
    },
    #[error("the controller at {server} has no rings")]
    NoRings { server: String },
}

/// One HTTP request that did not get the answer it needed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the server")]
    Transport(#[source] Box<ureq::Error>),
    #[error("HTTP {status}: {code}: {message}")]
    Status { status: u16, code: String, message: String },
    #[error("the answer is not the expected JSON")]
    Json(#[source] serde_json::Error),
}

// ---------------------------------------------------------------------------
// Summaries

/// One report the server rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Position in its batch.
    pub index: u64,
    pub device: String,
    pub reason: String,
}

/// Request latency in milliseconds (upper bounds, within about 3%).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What became of a ring's desired state in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredFetch {
    /// 200: new or changed.
    Updated,
    /// 304: the cached body still holds.
    NotModified,
    /// 404: nothing published to the ring yet.
    NotPublished,
    /// The request failed; the cached body (if any) was used.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RingRound {
    pub ring: String,
    /// Devices of the fleet in this ring (stale ones included).
    pub devices: usize,
    pub desired: DesiredFetch,
    /// Desired baselines of the ring (all platforms).
    pub baselines: usize,
}

/// Counters shared by a round and the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Reports the server answered for (accepted + stale + rejected).
    pub reported: u64,
    pub accepted: u64,
    /// Reports the server kept but found older than what it had.
    pub stale: u64,
    pub rejected: u64,
    /// The first few rejections.
    pub rejections: Vec<Rejection>,
    /// Stale devices: they did not report.
    pub skipped: u64,
    /// Reports in requests that failed (they were not taken).
    pub unsent: u64,
    /// Requests that failed: unreachable, refused, or an answer not understood.
    pub http_errors: u64,
    /// The first few of those failures.
    pub errors: Vec<String>,
    /// 429 answers (each retried).
    pub throttled: u64,
    /// `POST /v1/reports` requests that got an answer other than 429.
    pub batches: u64,
    /// Baseline entries reported `applied`.
    pub applied: u64,
    /// Baseline entries reported `failed`.
    pub apply_failed: u64,
    /// Settings reported `noncompliant`.
    pub noncompliant: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.reported += o.reported;
        self.accepted += o.accepted;
        self.stale += o.stale;
        self.rejected += o.rejected;
        keep_first(&mut self.rejections, &o.rejections);
        self.skipped += o.skipped;
        self.unsent += o.unsent;
        self.http_errors += o.http_errors;
        keep_first(&mut self.errors, &o.errors);
        self.throttled += o.throttled;
        self.batches += o.batches;
        self.applied += o.applied;
        self.apply_failed += o.apply_failed;
        self.noncompliant += o.noncompliant;
    }

    fn error(&mut self, message: String) {
        self.http_errors += 1;
        if self.errors.len() < KEPT {
            self.errors.push(message);
        }
    }
}

fn keep_first<T: Clone>(into: &mut Vec<T>, from: &[T]) {
    let room = KEPT.saturating_sub(into.len());
    into.extend(from.iter().take(room).cloned());
}

/// One round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundSummary {
    pub round: u64,
    pub started_at: DateTime<Utc>,
    /// Fleet size.
    pub devices: usize,
    #[serde(flatten)]
    pub counts: Counts,
    pub rings: Vec<RingRound>,
    pub elapsed_secs: f64,
    /// Reports answered per second of the round.
    pub reports_per_sec: f64,
    /// Of `POST /v1/reports`, 429s included.
    pub latency: Latency,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimSummary {
    pub server: String,
    pub devices: usize,
    pub rounds: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Wall time, pauses between rounds included.
    pub elapsed_secs: f64,
    /// Time spent in rounds.
    pub busy_secs: f64,
    /// Reports answered per second spent in rounds.
    pub reports_per_sec: f64,
    pub latency: Latency,
    pub per_round: Vec<RoundSummary>,
}

/// Log-linear latency histogram in microseconds: 32 steps per power of two.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB as usize],
            total: 0,
            max: 0,
        }
    }

    fn bucket(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let shift = exp - SUB_BITS;
        (shift as usize + 1) * SUB as usize + ((v >> shift) - SUB) as usize
    }

    fn upper(i: usize) -> u64 {
        if (i as u64) < SUB {
            return i as u64;
        }
        let shift = (i / SUB as usize - 1) as u32;
        let low = (SUB + (i as u64 % SUB)) << shift;
        low + ((1u64 << shift) - 1)
    }

    fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn latency(&self) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            requests: self.total,
            p50_ms: ms(self.quantile_us(0.50)),
            p90_ms: ms(self.quantile_us(0.90)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms(self.max),
        }
    }
}

// ---------------------------------------------------------------------------
// The fleet

/// Platforms and their share of the fleet, in the order of [`Platform::ALL`].
const PLATFORM_SHARES: [f64; 5] = [0.40, 0.05, 0.15, 0.25, 0.15];

/// OS versions per platform with weights, in the order of [`Platform::ALL`].
const OS_VERSIONS: [&[(&str, u32)]; 5] = [
    &[("16.7", 10), ("17.4", 15), ("17.5", 20), ("18.0", 25), ("18.1", 30)],
    &[("16.7", 15), ("17.4", 20), ("17.5", 20), ("18.0", 20), ("18.1", 25)],
    &[("13.6", 10), ("14.4", 20), ("14.5", 25), ("15.0", 20), ("15.1", 25)],
    &[("12", 10), ("13", 25), ("14", 40), ("15", 25)],
    &[
        ("10.0.19045", 30),
        ("10.0.22621", 25),
        ("10.0.22631", 35),
        ("10.0.26100", 10),
    ],
];

/// One simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    /// Position in the fleet, the `n` of its id.
    pub index: usize,
    pub id: String,
    pub platform: Platform,
    pub os_version: &'static str,
    pub user: String,
    pub ownership: &'static str,
    /// Index of its ring in the controller's ring order.
    pub ring: usize,
    /// Never checks in.
    pub stale: bool,
    /// Reports one setting noncompliant.
    pub drifts: bool,
    hash: u64,
    version: usize,
}

/// Default share of the fleet per ring: 5% in the first, 20% spread over
/// the middle ones, the rest in the last; one ring takes everything.
pub fn default_ring_shares(rings: usize) -> Vec<f64> {
    match rings {
        0 => vec![],
        1 => vec![1.0],
        2 => vec![0.05, 0.95],
        n => {
            let mut shares = vec![0.05];
            shares.extend(std::iter::repeat_n(0.20 / (n - 2) as f64, n - 2));
            shares.push(0.75);
            shares
        }
    }
}

/// The fleet `opts` describes, split over `rings` rings. Deterministic:
/// equal options give an equal fleet.
pub fn fleet(opts: &SimOptions, rings: usize) -> Vec<SimDevice> {
    let n = opts.devices;
    let seed = opts.seed;
    let platform_of = assign(n, &PLATFORM_SHARES, mix(seed ^ 0x706c_6174), false);
    let ring_of = assign(n, &default_ring_shares(rings.max(1)), mix(seed ^ 0x7269_6e67), true);
    let stale = chosen(n, opts.stale_rate, mix(seed ^ 0x7374_616c));
    let drifts = chosen(n, opts.fail_rate, mix(seed ^ 0x6472_6966));
    (0..n)
        .map(|i| {
            let p = platform_of[i];
            let platform = Platform::ALL[p];
            let hash = mix(seed ^ mix(i as u64 ^ 0x6465_7669_6365));
            let versions = OS_VERSIONS[p];
            let total: u32 = versions.iter().map(|v| v.1).sum();
            let mut pick = (mix(hash ^ 0x6f73) % total as u64) as u32;
            let mut version = 0;
            for (k, (_, w)) in versions.iter().enumerate() {
                if pick < *w {
                    version = k;
                    break;
                }
                pick -= w;
            }
            let personal = matches!(platform, Platform::Ios | Platform::Android) && unit(mix(hash ^ 0x6f776e)) < 0.15;
            SimDevice {
                index: i,
                id: format!("{}-{}-{i:06}", opts.id_prefix, platform.as_str()),
                platform,
                os_version: versions[version].0,
                user: format!("user{i:06}@sim.example"),
                ownership: if personal { "personal" } else { "corporate" },
                ring: if rings == 0 { 0 } else { ring_of[i] },
                stale: stale[i],
                drifts: drifts[i],
                hash,
                version,
            }
        })
        .collect()
}

/// Splits `n` items into buckets of exactly the shares (largest remainder),
/// in a seeded random order. With `each`, every bucket gets at least one
/// item when there are enough.
fn assign(n: usize, shares: &[f64], seed: u64, each: bool) -> Vec<usize> {
    let mut counts: Vec<usize> = shares.iter().map(|s| (s * n as f64).floor() as usize).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    let frac = |i: usize| shares[i] * n as f64 - counts[i] as f64;
    order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)).then(a.cmp(&b)));
    let left = n.saturating_sub(counts.iter().sum());
    for &i in order.iter().cycle().take(left) {
        counts[i] += 1;
    }
    if each && n >= shares.len() {
        while let Some(empty) = counts.iter().position(|&c| c == 0) {
            let largest = (0..counts.len())
                .max_by_key(|&i| (counts[i], usize::MAX - i))
                .unwrap_or(0);
            counts[largest] -= 1;
            counts[empty] += 1;
        }
    }
    let mut bucket_of = vec![0; n];
    let mut k = 0;
    let perm = permutation(n, seed);
    for (b, &c) in counts.iter().enumerate() {
        for &item in &perm[k..(k + c).min(n)] {
            bucket_of[item] = b;
        }
        k += c;
    }
    bucket_of
}

/// Exactly `round(rate * n)` of `n` items, chosen in a seeded random order.
fn chosen(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    let take = ((rate * n as f64).round() as usize).min(n);
    let mut out = vec![false; n];
    for &i in &permutation(n, seed)[..take] {
        out[i] = true;
    }
    out
}

fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let j = (mix(state) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// SplitMix64's finaliser: a fast, well-spread hash of one word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash as a share in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a, then mixed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// Whether `device` fails to apply the digest hashed to `digest`.
fn fails(device: u64, digest: u64, rate: f64) -> bool {
    rate > 0.0 && unit(mix(device ^ digest.rotate_left(17))) < rate
}

/// Orders dotted versions numerically ("17.10" > "17.4"; "14" == "14.0");
/// a part that is not a number is compared as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut x = a.trim().split('.');
    let mut y = b.trim().split('.');
    loop {
        let (p, q) = match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (p, q) => (p.unwrap_or("0"), q.unwrap_or("0")),
        };
        let ord = match (p.parse::<u64>(), q.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            _ => p.cmp(q),
        };
        if ord.is_ne() {
            return ord;
        }
    }
}

// ---------------------------------------------------------------------------
// What the controller says

#[derive(Debug, Clone, PartialEq, Eq)]
struct RingSpec {
    name: String,
    /// Empty for `all: true`.
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct RingsBody {
    rings: Vec<RingEntry>,
}

#[derive(Deserialize)]
struct RingEntry {
    name: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    selector: SelectorEntry,
}

#[derive(Default, Deserialize)]
struct SelectorEntry {
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct DesiredBody {
    #[serde(default)]
    baselines: Vec<DesiredBaseline>,
}

#[derive(Debug, Clone, Deserialize)]
struct DesiredBaseline {
    name: String,
    digest: String,
    platform: String,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    target_groups: Vec<String>,
    #[serde(default)]
    settings: BTreeMap<String, Value>,
}

impl DesiredBaseline {
    fn platform(&self) -> Option<usize> {
        Platform::ALL.iter().position(|p| p.as_str() == self.platform)
    }
}

#[derive(Default)]
struct RingDesired {
    etag: Option<String>,
    /// `None` while nothing is published to the ring.
    baselines: Option<Vec<DesiredBaseline>>,
}

#[derive(Deserialize)]
struct ReportsAnswer {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    stale: u64,
    #[serde(default)]
    rejected: Vec<RejectedEntry>,
}

#[derive(Deserialize)]
struct RejectedEntry {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    reason: String,
}

// ---------------------------------------------------------------------------
// HTTP

fn server_base(server: &str) -> Result<String, SimError> {
    let base = server.trim().trim_end_matches('/');
    let Some(rest) = base.strip_prefix("http://") else {
        return Err(SimError::Options(format!(
            "server {base:?} must be a plain-HTTP URL like http://127.0.0.1:8080"
        )));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(SimError::Options(format!(
            "server {base:?} must be a URL like http://127.0.0.1:8080 (host and port only)"
        )));
    }
    Ok(base.to_string())
}

/// Percent-encodes a query value (ring names are DNS labels; this is a guard).
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Http {
    base: String,
    auth: Option<String>,
}

impl Http {
    fn agent(timeout: Duration) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(timeout))
            .build();
        ureq::Agent::new_with_config(config)
    }

    fn get(
        &self,
        agent: &ureq::Agent,
        path: &str,
        etag: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RequestError> {
        let mut req = agent.get(format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        req.call().map_err(|e| RequestError::Transport(Box::new(e)))
    }
}

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, RequestError> {
    response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| RequestError::Transport(Box::new(e)))
}

/// The refusal in a non-2xx answer, from its `{"error": {"code", "message"}}`.
fn refusal(mut response: ureq::http::Response<ureq::Body>) -> RequestError {
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_string)
    };
    RequestError::Status {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| "http_error".into()),
        message: field("message").unwrap_or_else(|| status.canonical_reason().unwrap_or("unexpected status").into()),
    }
}

fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Duration {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// Sleeps for `d` unless `stop` is set first; says whether it slept it all.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

// ---------------------------------------------------------------------------
// Rendering

/// A device's fixed part: everything but its groups and the time.
struct DeviceHead {
    /// `{"schema":…,"device":{"id":…,…,"groups":` then
    /// `},"os":{…},"enrollment":"enrolled","checked_in_at":"`.
    text: Box<str>,
    split: usize,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn device_head(d: &SimDevice) -> DeviceHead {
    let first = format!(
        "{{\"schema\":{},\"device\":{{\"id\":{},\"platform\":\"{}\",\"user\":{},\"ownership\":\"{}\",\"groups\":",
        json_str(REPORT_SCHEMA),
        json_str(&d.id),
        d.platform.as_str(),
        json_str(&d.user),
        d.ownership
    );
    let split = first.len();
    let text = format!(
        "{first}}},\"os\":{{\"version\":{}}},\"enrollment\":\"enrolled\",\"checked_in_at\":\"",
        json_str(d.os_version)
    );
    DeviceHead {
        text: text.into_boxed_str(),
        split,
    }
}

struct SettingRender {
    /// Key id within its profile, for picking one value per key.
    key: usize,
    compliant: Box<str>,
    noncompliant: Box<str>,
    /// For `os.min_version`: per OS version of the platform, whether it is
    /// below the minimum and the rendered entry.
    os_min: Option<Vec<(bool, Box<str>)>>,
}

struct BaselineRender {
    digest: u64,
    applied: Box<str>,
    failed: Box<str>,
    /// Earlier digests, newest first, with their `failed` entry.
    previous: Vec<(u64, Box<str>)>,
    settings: Vec<SettingRender>,
}

/// What devices of one platform in one ring report besides their own part.
struct Profile {
    groups: Box<str>,
    /// Applicable baselines, highest priority first, then by name.
    baselines: Vec<BaselineRender>,
    keys: usize,
    /// Two baselines set one key: pick one value per key.
    overlapping: bool,
}

fn applied_entry(name: &str, digest: &str, status: &str) -> Box<str> {
    format!(
        "{{\"baseline\":{},\"digest\":{},\"status\":\"{status}\"}}",
        json_str(name),
        json_str(digest)
    )
    .into_boxed_str()
}

fn setting_entry(key: &str, state: &str, actual: &Value) -> Box<str> {
    let actual = serde_json::to_string(actual).expect("a JSON value serialises");
    format!(
        "{{\"key\":{},\"state\":\"{state}\",\"actual\":{actual}}}",
        json_str(key)
    )
    .into_boxed_str()
}

/// A value other than `v`, as a drifted device would report.
fn drifted(v: &Value) -> Value {
    match v {
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if i > 0 => Value::from(i - 1),
            (Some(i), _) => Value::from(i + 1),
            (None, Some(f)) => Value::from(f / 2.0),
            _ => Value::from(0),
        },
        Value::String(s) if s.is_empty() => Value::from("drifted"),
        Value::String(_) => Value::from(""),
        Value::Array(a) if a.is_empty() => Value::Array(vec![Value::from("drifted")]),
        Value::Array(_) => Value::Array(vec![]),
        Value::Object(_) => Value::Object(Default::default()),
        Value::Null => Value::from("drifted"),
    }
}

const OS_MIN_KEY: &str = "os.min_version";

/// The render tables for every (ring, platform).
fn build_profiles(
    rings: &[RingSpec],
    desired: &[RingDesired],
    history: &HashMap<(usize, String), Vec<String>>,
    seed: u64,
) -> Vec<Profile> {
    let mut profiles = Vec::with_capacity(rings.len() * Platform::ALL.len());
    for (r, ring) in rings.iter().enumerate() {
        // Groups that would put the device in an earlier ring.
        let earlier: BTreeSet<&str> = rings[..r]
            .iter()
            .flat_map(|x| x.groups.iter().map(String::as_str))
            .collect();
        // One profile per platform, in the order of `Platform::ALL`.
        for (p, versions) in OS_VERSIONS.iter().enumerate() {
            let mut groups: Vec<&str> = ring.groups.first().map(String::as_str).into_iter().collect();
            let targets: BTreeSet<&str> = desired
                .iter()
                .flat_map(|d| d.baselines.iter().flatten())
                .filter(|b| b.platform() == Some(p))
                .flat_map(|b| b.target_groups.iter().map(String::as_str))
                .filter(|g| !earlier.contains(g) && !groups.contains(g))
                .collect();
            groups.extend(targets);
            let mut applicable: Vec<&DesiredBaseline> = desired[r]
                .baselines
                .iter()
                .flatten()
                .filter(|b| b.platform() == Some(p) && b.target_groups.iter().any(|g| groups.contains(&g.as_str())))
                .collect();
            applicable.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
            let mut key_ids: HashMap<&str, usize> = HashMap::new();
            let mut overlapping = false;
            let baselines = applicable
                .iter()
                .map(|b| {
                    let settings = b
                        .settings
                        .iter()
                        .map(|(key, value)| {
                            let next = key_ids.len();
                            let id = *key_ids.entry(key.as_str()).or_insert(next);
                            overlapping |= id != next;
                            let os_min = (key == OS_MIN_KEY).then(|| {
                                let min = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                                versions
                                    .iter()
                                    .map(|(v, _)| {
                                        let below = compare_versions(v, &min).is_lt();
                                        let state = if below { "noncompliant" } else { "compliant" };
                                        (below, setting_entry(key, state, &Value::from(*v)))
                                    })
                                    .collect()
                            });
                            SettingRender {
                                key: id,
                                compliant: setting_entry(key, "compliant", value),
                                noncompliant: setting_entry(key, "noncompliant", &drifted(value)),
                                os_min,
                            }
                        })
                        .collect();
                    let previous = history
                        .get(&(r, b.name.clone()))
                        .map(|h| {
                            h.iter()
                                .rev()
                                .filter(|d| **d != b.digest)
                                .map(|d| (digest_hash(d, seed), applied_entry(&b.name, d, "failed")))
                                .collect()
                        })
                        .unwrap_or_default();
                    BaselineRender {
                        digest: digest_hash(&b.digest, seed),
                        applied: applied_entry(&b.name, &b.digest, "applied"),
                        failed: applied_entry(&b.name, &b.digest, "failed"),
                        previous,
                        settings,
                    }
                })
                .collect();
            let groups = serde_json::to_string(&groups).expect("strings serialise");
            profiles.push(Profile {
                groups: groups.into_boxed_str(),
                baselines,
                keys: key_ids.len(),
                overlapping,
            });
        }
    }
    profiles
}

fn digest_hash(digest: &str, seed: u64) -> u64 {
    mix(hash_str(digest) ^ seed)
}

/// Writes reports; one per thread, its scratch space reused from report to report.
struct Renderer {
    fail_rate: f64,
    /// (baseline, setting) of the settings to report.
    picked: Vec<(u32, u32)>,
    /// Per key id of a profile: the `stamp` of the last report that took it.
    seen: Vec<u64>,
    stamp: u64,
}

impl Renderer {
    fn new(fail_rate: f64) -> Renderer {
        Renderer {
            fail_rate,
            picked: Vec::new(),
            seen: Vec::new(),
            stamp: 0,
        }
    }

    /// Appends one NDJSON report line to `buf`.
    fn render(
        &mut self,
        buf: &mut Vec<u8>,
        d: &SimDevice,
        head: &DeviceHead,
        p: &Profile,
        now: &str,
        counts: &mut Counts,
    ) {
        let text = head.text.as_bytes();
        buf.extend_from_slice(&text[..head.split]);
        buf.extend_from_slice(p.groups.as_bytes());
        buf.extend_from_slice(&text[head.split..]);
        buf.extend_from_slice(now.as_bytes());
        buf.extend_from_slice(b"\",\"applied\":[");
        self.picked.clear();
        self.stamp += 1;
        if p.overlapping && self.seen.len() < p.keys {
            self.seen.resize(p.keys, 0);
        }
        for (bi, b) in p.baselines.iter().enumerate() {
            if bi > 0 {
                buf.push(b',');
            }
            if fails(d.hash, b.digest, self.fail_rate) {
                counts.apply_failed += 1;
                let still = b.previous.iter().find(|(h, _)| !fails(d.hash, *h, self.fail_rate));
                buf.extend_from_slice(still.map_or(&b.failed, |(_, e)| e).as_bytes());
                continue;
            }
            counts.applied += 1;
            buf.extend_from_slice(b.applied.as_bytes());
            for (si, s) in b.settings.iter().enumerate() {
                if p.overlapping {
                    if self.seen[s.key] == self.stamp {
                        continue;
                    }
                    self.seen[s.key] = self.stamp;
                }
                self.picked.push((bi as u32, si as u32));
            }
        }
        buf.extend_from_slice(b"],\"settings\":[");
        let setting = |&(b, s): &(u32, u32)| &p.baselines[b as usize].settings[s as usize];
        let drift = if d.drifts {
            let candidates = self.picked.iter().filter(|x| setting(x).os_min.is_none()).count();
            (candidates > 0).then(|| (mix(d.hash ^ 0x736574) % candidates as u64) as usize)
        } else {
            None
        };
        let mut candidate = 0;
        for (i, x) in self.picked.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            let s = setting(x);
            let entry = match &s.os_min {
                Some(per_version) => {
                    let (below, entry) = &per_version[d.version];
                    counts.noncompliant += *below as u64;
                    entry
                }
                None => {
                    let drifts = drift == Some(candidate);
                    candidate += 1;
                    counts.noncompliant += drifts as u64;
                    if drifts {
                        &s.noncompliant
                    } else {
                        &s.compliant
                    }
                }
            };
            buf.extend_from_slice(entry.as_bytes());
        }
        buf.extend_from_slice(b"]}\n");
    }
}

// ---------------------------------------------------------------------------
// The run

struct Simulator<'a> {
    opts: &'a SimOptions,
    http: Http,
    agents: Vec<ureq::Agent>,
    buffers: Vec<Vec<u8>>,
    devices: Vec<SimDevice>,
    heads: Vec<DeviceHead>,
    rings: Vec<RingSpec>,
    desired: Vec<RingDesired>,
    /// Digests seen per (ring, baseline), oldest first.
    history: HashMap<(usize, String), Vec<String>>,
    profiles: Vec<Profile>,
}

/// Runs the simulator: rounds until `opts.rounds` are done or `stop` is set,
/// calling `on_round` after each. Blocking; run it on a thread of its own
/// (or `spawn_blocking`) from async code.
pub fn run(
    opts: &SimOptions,
    stop: &AtomicBool,
    mut on_round: impl FnMut(&RoundSummary),
) -> Result<SimSummary, SimError> {
    opts.validate()?;
    let started = Instant::now();
    let mut sim = Simulator::new(opts)?;
    let mut total = Counts::default();
    let mut latency = Histogram::new();
    let mut per_round = Vec::new();
    let mut busy = Duration::ZERO;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let round_started = Instant::now();
        let (summary, hist) = sim.round(round, stop)?;
        busy += round_started.elapsed();
        total.add(&summary.counts);
        latency.merge(&hist);
        on_round(&summary);
        per_round.push(summary);
        if opts.rounds != 0 && round >= opts.rounds {
            break;
        }
        pause(opts.interval.saturating_sub(round_started.elapsed()), stop);
    }
    let busy_secs = busy.as_secs_f64();
    Ok(SimSummary {
        server: sim.http.base.clone(),
        devices: opts.devices,
        rounds: round,
        reports_per_sec: rate(total.reported, busy_secs),
        counts: total,
        elapsed_secs: started.elapsed().as_secs_f64(),
        busy_secs,
        latency: latency.latency(),
        per_round,
    })
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

impl<'a> Simulator<'a> {
    fn new(opts: &'a SimOptions) -> Result<Simulator<'a>, SimError> {
        let base = server_base(&opts.server)?;
        let auth = opts
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"));
        let devices = fleet(opts, 1);
        let heads = devices.iter().map(device_head).collect();
        Ok(Simulator {
            opts,
            http: Http { base, auth },
            agents: (0..opts.concurrency)
                .map(|_| Http::agent(opts.request_timeout))
                .collect(),
            buffers: vec![Vec::new(); opts.concurrency],
            devices,
            heads,
            rings: Vec::new(),
            desired: Vec::new(),
            history: HashMap::new(),
            profiles: Vec::new(),
        })
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RequestError> {
        let mut response = self.http.get(&self.agents[0], path, None)?;
        if !response.status().is_success() {
            return Err(refusal(response));
        }
        serde_json::from_slice(&read_body(&mut response)?).map_err(RequestError::Json)
    }

    /// Reads the rings; on a change, reassigns devices and forgets desired state.
    fn refresh_rings(&mut self, counts: &mut Counts) -> Result<bool, SimError> {
        let fetched = self.get_json::<RingsBody>("/v1/rings");
        let mut entries = match fetched {
            Ok(body) => body.rings,
            // A controller that has not read the governed repo yet: wait for it.
            Err(RequestError::Status { status: 404 | 503, .. }) if self.rings.is_empty() => {
                counts.error("GET /v1/rings: the controller knows no rings yet; reporting when it does".into());
                return Ok(false);
            }
            Err(source) if self.rings.is_empty() => {
                return Err(SimError::Rings {
                    server: self.http.base.clone(),
                    source,
                })
            }
            Err(e) => {
                counts.error(format!("GET /v1/rings: {}", error_chain(&e)));
                return Ok(false);
            }
        };
        entries.sort_by_key(|e| e.index.unwrap_or(usize::MAX));
        let rings: Vec<RingSpec> = entries
            .into_iter()
            .map(|e| RingSpec {
                name: e.name,
                groups: e.selector.groups,
            })
            .collect();
        if rings.is_empty() {
            if self.rings.is_empty() {
                return Err(SimError::NoRings {
                    server: self.http.base.clone(),
                });
            }
            counts.error("GET /v1/rings: the controller lists no rings".into());
            return Ok(false);
        }
        if rings == self.rings {
            return Ok(false);
        }
        let assigned = fleet(self.opts, rings.len());
        for (d, a) in self.devices.iter_mut().zip(assigned) {
            d.ring = a.ring;
        }
        self.desired = rings.iter().map(|_| RingDesired::default()).collect();
        self.history.clear();
        self.rings = rings;
        Ok(true)
    }

    fn refresh_desired(&mut self, r: usize, counts: &mut Counts) -> (DesiredFetch, bool) {
        let path = format!("/v1/desired?ring={}", query_value(&self.rings[r].name));
        let etag = self.desired[r].etag.clone();
        let response = self.http.get(&self.agents[0], &path, etag.as_deref());
        let result = response.and_then(|mut response| match response.status().as_u16() {
            304 => {
                let _ = read_body(&mut response);
                Ok(None)
            }
            404 => {
                let _ = read_body(&mut response);
                Ok(Some((None, None)))
            }
            s if (200..300).contains(&s) => {
                let tag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body: DesiredBody =
                    serde_json::from_slice(&read_body(&mut response)?).map_err(RequestError::Json)?;
                Ok(Some((tag, Some(body.baselines))))
            }
            _ => Err(refusal(response)),
        });
        match result {
            Ok(None) => (DesiredFetch::NotModified, false),
            Ok(Some((_, None))) => {
                let changed = self.desired[r].baselines.is_some();
                self.desired[r] = RingDesired::default();
                (DesiredFetch::NotPublished, changed)
            }
            Ok(Some((etag, Some(baselines)))) => {
                for b in &baselines {
                    let h = self.history.entry((r, b.name.clone())).or_default();
                    if h.last() != Some(&b.digest) {
                        h.retain(|d| *d != b.digest);
                        h.push(b.digest.clone());
                        if h.len() > HISTORY {
                            h.remove(0);
                        }
                    }
                }
                self.desired[r] = RingDesired {
                    etag,
                    baselines: Some(baselines),
                };
                (DesiredFetch::Updated, true)
            }
            Err(e) => {
                counts.error(format!("GET {path}: {}", error_chain(&e)));
                (DesiredFetch::Failed, false)
            }
        }
    }

    fn round(&mut self, round: u64, stop: &AtomicBool) -> Result<(RoundSummary, Histogram), SimError> {
        let started = Instant::now();
        let started_at = self.opts.now();
        let mut counts = Counts::default();
        let mut changed = self.refresh_rings(&mut counts)?;
        if self.rings.is_empty() {
            let summary = RoundSummary {
                round,
                started_at,
                devices: self.devices.len(),
                counts,
                rings: Vec::new(),
                elapsed_secs: started.elapsed().as_secs_f64(),
                reports_per_sec: 0.0,
                latency: Latency::default(),
            };
            return Ok((summary, Histogram::new()));
        }
        let mut fetches = Vec::with_capacity(self.rings.len());
        for r in 0..self.rings.len() {
            let (fetch, c) = self.refresh_desired(r, &mut counts);
            changed |= c;
            fetches.push(fetch);
        }
        if changed || self.profiles.is_empty() {
            self.profiles = build_profiles(&self.rings, &self.desired, &self.history, self.opts.seed);
        }
        let active: Vec<usize> = (0..self.devices.len()).filter(|&i| !self.devices[i].stale).collect();
        counts.skipped = (self.devices.len() - active.len()) as u64;
        let (posted, hist) = self.post_all(&active, stop);
        counts.add(&posted);
        let mut in_ring = vec![0; self.rings.len()];
        for d in &self.devices {
            in_ring[d.ring] += 1;
        }
        let rings = self
            .rings
            .iter()
            .enumerate()
            .map(|(r, ring)| RingRound {
                ring: ring.name.clone(),
                devices: in_ring[r],
                desired: fetches[r],
                baselines: self.desired[r].baselines.as_ref().map_or(0, Vec::len),
            })
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        let summary = RoundSummary {
            round,
            started_at,
            devices: self.devices.len(),
            reports_per_sec: rate(counts.reported, elapsed),
            counts,
            rings,
            elapsed_secs: elapsed,
            latency: hist.latency(),
        };
        Ok((summary, hist))
    }

    /// Renders and posts the reports of `active` devices in batches, from
    /// one thread per agent.
    fn post_all(&mut self, active: &[usize], stop: &AtomicBool) -> (Counts, Histogram) {
        let batch = self.opts.batch;
        let chunks: Vec<&[usize]> = active.chunks(batch).collect();
        let next = AtomicUsize::new(0);
        let url = format!("{}/v1/reports", self.http.base);
        let shared = Shared {
            devices: &self.devices,
            heads: &self.heads,
            profiles: &self.profiles,
            chunks: &chunks,
            next: &next,
            url: &url,
            auth: self.http.auth.as_deref(),
            fail_rate: self.opts.fail_rate,
            opts: self.opts,
            stop,
        };
        let threads = self.agents.len().min(chunks.len()).max(1);
        let mut total = Counts::default();
        let mut hist = Histogram::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .agents
                .iter()
                .zip(self.buffers.iter_mut())
                .take(threads)
                .map(|(agent, buf)| {
                    let shared = &shared;
                    s.spawn(move || shared.work(agent, buf))
                })
                .collect();
            for h in handles {
                let (c, l) = h.join().expect("a simulator thread panicked");
                total.add(&c);
                hist.merge(&l);
            }
        });
        (total, hist)
    }
}

/// What the posting threads of a round share.
struct Shared<'s> {
    devices: &'s [SimDevice],
    heads: &'s [DeviceHead],
    profiles: &'s [Profile],
    chunks: &'s [&'s [usize]],
    next: &'s AtomicUsize,
    url: &'s str,
    auth: Option<&'s str>,
    fail_rate: f64,
    opts: &'s SimOptions,
    stop: &'s AtomicBool,
}

impl Shared<'_> {
    fn work(&self, agent: &ureq::Agent, buf: &mut Vec<u8>) -> (Counts, Histogram) {
        let mut counts = Counts::default();
        let mut hist = Histogram::new();
        let mut renderer = Renderer::new(self.fail_rate);
        let platforms = Platform::ALL.len();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = self.chunks.get(k) else { break };
            let now = self.opts.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            buf.clear();
            let mut in_buf = 0;
            for &i in chunk.iter() {
                let d = &self.devices[i];
                let p = platform_index(d.platform);
                let profile = &self.profiles[d.ring * platforms + p];
                let mark = buf.len();
                renderer.render(buf, d, &self.heads[i], profile, &now, &mut counts);
                in_buf += 1;
                // Keep every request under the body limit.
                if buf.len() > MAX_REPORTS_BODY && in_buf > 1 {
                    let tail = buf.split_off(mark);
                    self.post(agent, buf, in_buf - 1, &mut counts, &mut hist);
                    *buf = tail;
                    in_buf = 1;
                }
            }
            if in_buf > 0 {
                self.post(agent, buf, in_buf, &mut counts, &mut hist);
            }
        }
        (counts, hist)
    }

    fn post(&self, agent: &ureq::Agent, body: &[u8], reports: u64, counts: &mut Counts, hist: &mut Histogram) {
        loop {
            let mut req = agent.post(self.url).header("Content-Type", "application/x-ndjson");
            if let Some(a) = self.auth {
                req = req.header("Authorization", a);
            }
            let sent = Instant::now();
            let result = req.send(body);
            hist.record(sent.elapsed());
            let mut response = match result {
                Ok(r) => r,
                Err(e) => {
                    counts.unsent += reports;
                    counts.error(format!("POST /v1/reports: cannot reach the server: {e}"));
                    return;
                }
            };
            let status = response.status().as_u16();
            if status == 429 {
                counts.throttled += 1;
                let wait = retry_after(&response);
                let _ = read_body(&mut response);
                if !pause(wait, self.stop) {
                    counts.unsent += reports;
                    return;
                }
                continue;
            }
            counts.batches += 1;
            if status != 200 && status != 422 {
                counts.unsent += reports;
                let e = refusal(response);
                counts.error(format!("POST /v1/reports ({reports} reports): {e}"));
                return;
            }
            let answer = read_body(&mut response)
                .and_then(|b| serde_json::from_slice::<ReportsAnswer>(&b).map_err(RequestError::Json));
            match answer {
                Ok(a) => {
                    counts.accepted += a.accepted;
                    counts.stale += a.stale;
                    counts.rejected += a.rejected.len() as u64;
                    counts.reported += a.accepted + a.stale + a.rejected.len() as u64;
                    for r in a
                        .rejected
                        .into_iter()
                        .take(KEPT.saturating_sub(counts.rejections.len()))
                    {
                        counts.rejections.push(Rejection {
                            index: r.index,
                            device: r.device.unwrap_or_default(),
                            reason: r.reason,
                        });
                    }
                }
                Err(e) => {
                    counts.unsent += reports;
                    counts.error(format!("POST /v1/reports: {}", error_chain(&e)));
                }
            }
            return;
        }
    }
}

fn platform_index(p: Platform) -> usize {
    Platform::ALL
        .iter()
        .position(|x| *x == p)
        .expect("every platform is in ALL")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("17.10", "17.4"), Greater);
        assert_eq!(compare_versions("16.7", "17.4"), Less);
        assert_eq!(compare_versions("14", "14.0"), Equal);
        assert_eq!(compare_versions("10.0.22631", "10.0.22631.3447"), Less);
        assert_eq!(compare_versions("10.0.26100", "10.0.22631.3447"), Greater);
    }

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [0u64, 1, 31, 32, 33, 63, 64, 100, 1000, 12_345, 1 << 40, u64::MAX] {
            let b = Histogram::bucket(v);
            assert!(Histogram::upper(b) >= v, "{v}");
            if b > 0 {
                assert!(Histogram::upper(b - 1) < v, "{v}");
            }
        }
        let mut h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let l = h.latency();
        assert_eq!(l.requests, 100);
        assert!((49.0..=52.0).contains(&l.p50_ms), "{l:?}");
        assert!((99.0..=100.0).contains(&l.p99_ms), "{l:?}");
        assert_eq!(l.max_ms, 100.0);
    }

    #[test]
    fn apportioning_is_exact_and_gives_every_ring_a_device() {
        let of = assign(20, &default_ring_shares(3), 7, true);
        let count = |b| of.iter().filter(|&&x| x == b).count();
        assert_eq!((count(0), count(1), count(2)), (1, 4, 15));
        let of = assign(3, &default_ring_shares(3), 7, true);
        assert_eq!(of.iter().collect::<BTreeSet<_>>().len(), 3);
    }
}
