//! Durable controller state behind one interface: SQLite for a single
//! process (the default, one file), PostgreSQL for several replicas with one
//! leader.
//!
//! The store does not know the domain. It keeps records with a few indexed
//! columns and a JSON body (promotions, reviews), the audit log as its
//! columns, and a key/value table (desired state per ring, pins, source
//! status, cursors). What it guarantees is atomicity and order: everything one
//! state transition writes goes through [`Store::commit`] as one
//! [`Transition`], which lands in one database transaction or not at all, and
//! audit rows must continue the stored chain exactly. Together these make "no
//! audit event lost or duplicated" hold across crashes: an event is stored
//! with the state change it describes, and a replayed transition is refused
//! instead of appended twice.
//!
//! Timestamps are kept with microsecond precision, PostgreSQL's. The store
//! truncates the ones it is given, except an audit row's `at`: its hash covers
//! it, so a timestamp finer than a microsecond is refused
//! ([`StoreError::Invalid`]) rather than silently changed.
//!
//! # Which stores are new
//!
//! Opening never turns a store that was initialised into a new one. What is
//! found at the URL decides ([`admit`]): Tollgate's schema (its migration
//! record, `_sqlx_migrations`) is opened and brought up to date; nothing at
//! all (no SQLite file, an empty PostgreSQL schema) is created on a first
//! run. Anything else is refused with the reason: a zero-byte SQLite file
//! (truncated), a database without Tollgate's schema, a file that is not a
//! database. [`OpenOptions::init`] (`tollgate run --init`) creates a store in
//! an empty file or a database without Tollgate's schema, and refuses one
//! that is already initialised. [`OpenOptions::existed`] is evidence kept
//! outside the database that a store was initialised here (the audit
//! anchor, see [`anchor`]): then nothing is created at all.

pub mod anchor;
mod postgres;
mod sqlite;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType};
use sqlx::SqlSafeStr;
pub use tollgate_core::json::JsonText;

pub use anchor::{default_anchor_path, open_anchored, AnchorError, AuditAnchor};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Seq of the first audit row of an empty log; each later row is +1.
pub const FIRST_AUDIT_SEQ: i64 = 1;

/// The source of promotions written without one (and of every promotion
/// stored before sources existed).
pub const DEFAULT_SOURCE: &str = "default";

/// One promotion as stored. `version` starts at 1 and grows by one with every
/// update, for optimistic concurrency (see [`PromotionWrite::Update`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionRecord {
    pub id: i64,
    /// The governed source the promotion belongs to.
    pub source: String,
    pub revision: String,
    pub kind: String,
    pub phase: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub body: Value,
}

/// A review or approval recorded for a promotion.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRecord {
    pub id: i64,
    pub promotion_id: i64,
    pub reviewer: String,
    pub state: String,
    pub at: DateTime<Utc>,
    pub body: Value,
}

/// A review to record; the store assigns its id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    pub promotion_id: i64,
    pub reviewer: String,
    pub state: String,
    pub at: DateTime<Utc>,
    pub body: Value,
}

/// One audit event as columns. The store does not compute or check hashes; it
/// keeps rows in `seq` order, refuses gaps and duplicates, checks that each
/// row's `prev` is the `hash` of the row before, and never changes a stored
/// row (the database rejects UPDATE and DELETE on the audit table too).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: Value,
    pub prev: String,
    pub hash: String,
}

/// A promotion to insert or update within a [`Transition`].
#[derive(Debug, Clone, PartialEq)]
pub enum PromotionWrite {
    /// A new promotion at version 1. `id: None` lets the store assign one;
    /// `Some` must come from [`Store::reserve_promotion_id`], for callers that
    /// need the id before committing (e.g. in an audit event's subject).
    Insert {
        id: Option<i64>,
        /// The governed source it belongs to ([`DEFAULT_SOURCE`] for a
        /// single-source deployment).
        source: String,
        revision: String,
        kind: String,
        phase: String,
        body: Value,
    },
    /// Replaces `phase` and `body` of promotion `id` if it is still at
    /// `expected_version`; otherwise the whole transition fails with
    /// [`StoreError::Conflict`]. Revision and kind never change.
    Update {
        id: i64,
        expected_version: i64,
        phase: String,
        body: Value,
    },
}

impl PromotionWrite {
    /// An insert with a store-assigned id.
    pub fn insert(revision: impl Into<String>, kind: impl Into<String>, phase: impl Into<String>, body: Value) -> Self {
        PromotionWrite::Insert {
            id: None,
            source: DEFAULT_SOURCE.to_string(),
            revision: revision.into(),
            kind: kind.into(),
            phase: phase.into(),
            body,
        }
    }

    /// An update of `read`, expecting nobody changed it since it was read.
    pub fn update(read: &PromotionRecord, phase: impl Into<String>, body: Value) -> Self {
        PromotionWrite::Update {
            id: read.id,
            expected_version: read.version,
            phase: phase.into(),
            body,
        }
    }
}

/// Everything one state transition writes; committed in ONE database
/// transaction or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    /// Applied in order; an update may follow an insert of the same id.
    pub promotions: Vec<PromotionWrite>,
    pub reviews: Vec<NewReview>,
    /// Must continue the stored log: the first row's seq is one more than
    /// the stored head's ([`FIRST_AUDIT_SEQ`] for an empty log) and its
    /// `prev` is the head's `hash`; each later row follows the one before it
    /// the same way. Otherwise: [`StoreError::AuditOutOfOrder`] or
    /// [`StoreError::AuditChainBroken`].
    pub audit: Vec<AuditRow>,
    /// Upserts (`Some`) and deletes (`None`), in order.
    pub kv: Vec<(String, Option<Value>)>,
    /// Upserts of values already serialised as JSON text, applied after
    /// `kv`: a large write (a batch of device reports) skips building a
    /// [`Value`] per row.
    pub kv_json: Vec<(String, JsonText)>,
}

impl Transition {
    pub fn is_empty(&self) -> bool {
        self.promotions.is_empty()
            && self.reviews.is_empty()
            && self.audit.is_empty()
            && self.kv.is_empty()
            && self.kv_json.is_empty()
    }
}

/// What a commit assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitResult {
    /// One per [`Transition::promotions`] entry, in order: the id written and
    /// the version it now has.
    pub promotions: Vec<WrittenPromotion>,
    /// One per [`Transition::reviews`] entry, in order.
    pub review_ids: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenPromotion {
    pub id: i64,
    pub version: i64,
}

/// Which promotions [`Store::promotions`] returns, newest (highest id) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionFilter {
    /// Only this source's promotions; `None` means every source's.
    pub source: Option<String>,
    /// Any of these phases; empty means any phase.
    pub phases: Vec<String>,
    pub revision: Option<String>,
    /// Only ids below this one: pass the last id of a page to get the next.
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Default for PromotionFilter {
    fn default() -> Self {
        PromotionFilter {
            source: None,
            phases: Vec::new(),
            revision: None,
            before_id: None,
            limit: 100,
        }
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Why a store operation failed.
///
/// [`StoreError::is_transient`]: the database was unreachable or busy; retry
/// later. [`StoreError::is_conflict`]: the stored state moved since the caller
/// read it; re-read, recompute the transition and try again. Anything else
/// is permanent: a bug, bad configuration or a damaged database, which a
/// human must look at.
///
/// A transient error from [`Store::commit`] leaves its outcome unknown (the
/// connection may have dropped after the database committed). Retrying the
/// same transition is safe when it updates a promotion or appends audit rows:
/// if the first attempt landed, the retry fails with a conflict and writes
/// nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot open the {backend} store at {target}")]
    Open {
        backend: Backend,
        /// The URL with any password removed.
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the {backend} schema up to date")]
    Migrate {
        backend: Backend,
        #[source]
        source: MigrateError,
    },
    #[error("{backend} store: {op} failed")]
    Database {
        backend: Backend,
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("promotion {id} changed concurrently: expected version {expected}, found {}",
        found.map_or_else(|| "no such promotion".to_string(), |v| format!("version {v}")))]
    Conflict { id: i64, expected: i64, found: Option<i64> },
    #[error("promotion {id} is already stored")]
    DuplicatePromotion { id: i64 },
    #[error("promotion {id} does not exist")]
    UnknownPromotion { id: i64 },
    #[error("audit row has seq {got}, but the log continues at seq {expected}")]
    AuditOutOfOrder { expected: i64, got: i64 },
    #[error("audit row {seq} does not chain to the row before it: prev {prev:?}, expected {expected:?}")]
    AuditChainBroken { seq: i64, prev: String, expected: String },
    #[error("refused to store {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("stored {what} cannot be read back: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("cannot use the leadership lock ({lock})")]
    LeaderLock {
        lock: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{backend} store: {op} took longer than {after:?}")]
    Timeout {
        backend: Backend,
        op: &'static str,
        after: std::time::Duration,
    },
    #[error(
        "the {backend} store {target} {found}: it is not an initialised Tollgate store, and it is not taken for a \
         new one. If it held Tollgate's state, restore it from a backup; to create a new store there, start once \
         with `tollgate run --init`"
    )]
    NotInitialised {
        backend: Backend,
        target: String,
        /// What is there, e.g. "is an empty file (0 bytes)".
        found: String,
    },
    #[error(
        "the {backend} store {target} {found}: it cannot be a Tollgate store, new or old, and nothing was written \
         to it. Restore the store from a backup, or point the config's store at another place"
    )]
    Unusable {
        backend: Backend,
        target: String,
        found: String,
    },
    #[error("refusing --init: the {backend} store {target} is already initialised ({holds}); start without --init to use it")]
    AlreadyInitialised {
        backend: Backend,
        target: String,
        /// What it holds, e.g. "audit log up to seq 12, 3 promotions, 40 kv entries".
        holds: String,
    },
    #[error(
        "the {backend} store {target} {found}, but {existed}: the store was deleted or replaced. Restore it from a \
         backup; to start a new store there instead, first move the anchor aside (keep it as evidence)"
    )]
    Replaced {
        backend: Backend,
        target: String,
        found: String,
        /// The evidence, e.g. "the audit anchor /var/lib/tollgate/state.db.audit-head records seq 12".
        existed: String,
    },
    #[error(transparent)]
    Anchor(#[from] AnchorError),
}

impl StoreError {
    /// Connection lost, server restarting, database busy or locked: the same
    /// call may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Open { source, .. }
            | StoreError::Database { source, .. }
            | StoreError::LeaderLock { source, .. } => is_transient_sqlx(source),
            StoreError::Migrate {
                source: MigrateError::Execute(source) | MigrateError::ExecuteMigration(source, _),
                ..
            } => is_transient_sqlx(source),
            StoreError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The stored state is not what the caller based its transition on.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::AuditOutOfOrder { .. } | StoreError::AuditChainBroken { .. }
        )
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                postgres::is_transient_code(code)
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite::is_transient_code(code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Durable controller state. Implementations must be safe to share
/// (`Arc<dyn Store>`) across tasks.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    fn backend(&self) -> Backend;

    /// Writes everything in `t` in one database transaction, or nothing.
    async fn commit(&self, t: Transition) -> Result<CommitResult, StoreError>;

    /// A promotion id no other caller will get, for a later
    /// [`PromotionWrite::Insert`] with `id: Some(..)`. Unused ids leave gaps.
    async fn reserve_promotion_id(&self) -> Result<i64, StoreError>;

    async fn promotion(&self, id: i64) -> Result<Option<PromotionRecord>, StoreError>;

    async fn promotions(&self, filter: PromotionFilter) -> Result<Vec<PromotionRecord>, StoreError>;

    /// The reviews of one promotion, oldest first.
    async fn reviews(&self, promotion_id: i64) -> Result<Vec<ReviewRecord>, StoreError>;

    /// Up to `limit` audit rows with seq above `after_seq`, in seq order.
    async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError>;

    /// The newest audit row; `None` for an empty log.
    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError>;

    async fn kv_get(&self, key: &str) -> Result<Option<Value>, StoreError>;

    /// Every key starting with `prefix` (byte-wise), in key order.
    async fn kv_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError>;

    /// [`Store::kv_prefix`] with each value as JSON text, for readers that
    /// decode it themselves (100,000 device reports at start). The text is
    /// what was written on SQLite; PostgreSQL gives its `jsonb` rendering
    /// (same values, keys reordered, whitespace dropped).
    async fn kv_prefix_text(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.kv_prefix(prefix).await?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (key, to_json_text(&value)))
            .collect())
    }

    /// Tries to become, or checks that this store still is, the leader; true
    /// while this store leads for `holder`. Call it periodically: leadership
    /// lasts until the store is dropped, its process exits or (PostgreSQL)
    /// its lock connection is lost, and a call that finds the lock connection
    /// gone answers false. A store leads for one holder at a time.
    async fn try_lead(&self, holder: &str) -> Result<bool, StoreError>;

    /// Checks that the database answers, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The audit head recorded outside the database, if this store keeps
    /// one ([`anchor`]): a lower bound of the log, which must hold that
    /// event and may have grown past it.
    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        Ok(None)
    }
}

/// Opens the store a URL names and brings its schema up to date:
/// `sqlite:///abs/path.db`, `sqlite://relative.db`, `sqlite::memory:` (a
/// private database that lives as long as the store), or
/// `postgres://user:password@host:port/db` (`postgresql://` too; libpq-style
/// parameters such as `?options=-c%20search_path%3Dtollgate` pick a schema).
///
/// A store is created only where there is none (see the module docs);
/// [`open_with`] takes the options of `tollgate run`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(open_with(url, &OpenOptions::default()).await?.store)
}

/// How [`open_with`] may treat what it finds at the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// `tollgate run --init`: also create the store in a zero-byte SQLite
    /// file or in a database without Tollgate's schema; refuse a store that
    /// is already initialised.
    pub init: bool,
    /// Evidence kept outside the database that a store was initialised at
    /// this URL, in words ("the audit anchor FILE records seq 12"): nothing
    /// is created then, with or without `init`.
    pub existed: Option<String>,
}

/// A store [`open_with`] opened, and whether it created it just now.
#[derive(Debug, Clone)]
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub created: bool,
}

/// Opens the store a URL names, or creates it as `options` allow.
pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Opened, StoreError> {
    if url.starts_with("sqlite:") {
        let (store, created) = SqliteStore::open_with(url, options).await?;
        Ok(Opened {
            store: Arc::new(store),
            created,
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (store, created) = PostgresStore::open_with(url, options).await?;
        Ok(Opened {
            store: Arc::new(store),
            created,
        })
    } else {
        Err(StoreError::Url {
            url: redact_url(url),
            reason: "expected sqlite:PATH, sqlite::memory: or postgres://...".to_string(),
        })
    }
}

/// What is at a store's URL before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No SQLite file (or an in-memory database); a PostgreSQL schema
    /// without tables, views or sequences.
    Nothing,
    /// A zero-byte SQLite file.
    EmptyFile,
    /// A database without Tollgate's migration record: no tables at all,
    /// or other tables (named).
    NoSchema { tables: Vec<String> },
    /// Tollgate's schema. `holds` says what it holds, when asked for.
    Initialised { holds: Option<String> },
    /// What cannot be a Tollgate store, new or old (not a database;
    /// Tollgate's tables without its migration record).
    Unusable { what: String },
}

impl Found {
    fn describe(&self) -> String {
        match self {
            Found::Nothing => "does not exist".to_string(),
            Found::EmptyFile => "is an empty file (0 bytes)".to_string(),
            Found::NoSchema { tables } if tables.is_empty() => "is a database without tables".to_string(),
            Found::NoSchema { tables } => format!("holds tables ({}) but no Tollgate schema", tables.join(", ")),
            Found::Initialised { .. } => "is initialised".to_string(),
            Found::Unusable { what } => what.clone(),
        }
    }
}

/// Tables that only Tollgate's schema has; one of them without the
/// migration record means a damaged store, not a foreign database.
pub(crate) const TOLLGATE_TABLES: [&str; 4] = ["audit", "kv", "promotions", "reviews"];

/// The migration record sqlx keeps, in the store's own schema.
pub(crate) const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Classifies a database by the names of its tables.
pub(crate) fn found_by_tables(tables: Vec<String>) -> Found {
    if tables.iter().any(|t| t == MIGRATIONS_TABLE) {
        return Found::Initialised { holds: None };
    }
    let ours: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| TOLLGATE_TABLES.contains(t))
        .collect();
    if !ours.is_empty() {
        return Found::Unusable {
            what: format!(
                "has Tollgate's tables ({}) but no record of its migrations ({MIGRATIONS_TABLE})",
                ours.join(", ")
            ),
        };
    }
    Found::NoSchema { tables }
}

/// Whether to create a store where `found` was found: `Ok(true)` create it,
/// `Ok(false)` open the initialised one, or why neither.
pub(crate) fn admit(backend: Backend, target: &str, found: &Found, options: &OpenOptions) -> Result<bool, StoreError> {
    let not_initialised = || StoreError::NotInitialised {
        backend,
        target: target.to_string(),
        found: found.describe(),
    };
    match found {
        Found::Initialised { holds } if options.init => Err(StoreError::AlreadyInitialised {
            backend,
            target: target.to_string(),
            holds: holds.clone().unwrap_or_else(|| "its schema is there".to_string()),
        }),
        Found::Initialised { .. } => Ok(false),
        Found::Unusable { .. } => Err(StoreError::Unusable {
            backend,
            target: target.to_string(),
            found: found.describe(),
        }),
        _ if options.existed.is_some() => Err(StoreError::Replaced {
            backend,
            target: target.to_string(),
            found: found.describe(),
            existed: options.existed.clone().unwrap_or_default(),
        }),
        Found::Nothing => Ok(true),
        Found::EmptyFile | Found::NoSchema { .. } if options.init => Ok(true),
        Found::EmptyFile | Found::NoSchema { .. } => Err(not_initialised()),
    }
}

/// What an initialised store holds, in words, from its three counts.
pub(crate) fn holds_text(audit_head: i64, promotions: i64, kv: i64) -> String {
    format!("audit log up to seq {audit_head}, {promotions} promotions, {kv} kv entries")
}

/// The query behind [`holds_text`]; the same SQL on both databases.
pub(crate) const HOLDS_QUERY: &str = "SELECT (SELECT coalesce(max(seq), 0) FROM audit), \
     (SELECT count(*) FROM promotions), (SELECT count(*) FROM kv)";

/// `t` as the store keeps it: whole microseconds.
pub fn stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The URL with its password replaced, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Checks a transition before any database work, so that malformed input
/// never reaches a transaction: audit rows consecutive and chained among
/// themselves, audit timestamps storable exactly, no empty kv keys.
pub(crate) fn validate(t: &Transition) -> Result<(), StoreError> {
    for pair in t.audit.windows(2) {
        let (before, row) = (&pair[0], &pair[1]);
        if row.seq != before.seq + 1 {
            return Err(StoreError::AuditOutOfOrder {
                expected: before.seq + 1,
                got: row.seq,
            });
        }
        if row.prev != before.hash {
            return Err(StoreError::AuditChainBroken {
                seq: row.seq,
                prev: row.prev.clone(),
                expected: before.hash.clone(),
            });
        }
    }
    for row in &t.audit {
        if stored_precision(row.at) != row.at {
            return Err(StoreError::Invalid {
                what: format!("audit row {}", row.seq),
                reason: "its timestamp is finer than a microsecond, which the store cannot keep and the hash covers"
                    .to_string(),
            });
        }
    }
    if t.kv.iter().any(|(key, _)| key.is_empty()) || t.kv_json.iter().any(|(key, _)| key.is_empty()) {
        return Err(StoreError::Invalid {
            what: "a kv entry".to_string(),
            reason: "the key is empty".to_string(),
        });
    }
    Ok(())
}

/// Checks that `rows` (already consistent among themselves, see [`validate`])
/// continue the stored log whose newest row has `head` = (seq, hash).
pub(crate) fn check_audit_continues(head: Option<(i64, String)>, rows: &[AuditRow]) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    match head {
        None if first.seq != FIRST_AUDIT_SEQ => Err(StoreError::AuditOutOfOrder {
            expected: FIRST_AUDIT_SEQ,
            got: first.seq,
        }),
        None => Ok(()),
        Some((seq, _)) if first.seq != seq + 1 => Err(StoreError::AuditOutOfOrder {
            expected: seq + 1,
            got: first.seq,
        }),
        Some((_, hash)) if first.prev != hash => Err(StoreError::AuditChainBroken {
            seq: first.seq,
            prev: first.prev.clone(),
            expected: hash,
        }),
        Some(_) => Ok(()),
    }
}

/// Rows per multi-row kv statement at most. Statements hold a power of two
/// of rows (256, 128, ... 1), so each backend prepares at most nine
/// distinct ones and keeps them cached.
pub(crate) const KV_ROWS_PER_STATEMENT: usize = 256;

/// The kv writes of a transition reduced to their effect: each key's last
/// write, upserts (as JSON text) and deletes apart. Writes to different keys
/// do not affect each other and a key ends as its last write left it, so
/// applying these, in any order, is applying the list in order. It lets the
/// backends write many rows per statement: a batch of device reports writes
/// over a thousand keys in one transition.
pub(crate) struct KvWrites<'a> {
    pub upserts: Vec<(&'a str, Cow<'a, str>)>,
    pub deletes: Vec<&'a str>,
}

pub(crate) fn kv_writes(t: &Transition) -> KvWrites<'_> {
    let (kv, kv_json) = (&t.kv, &t.kv_json);
    let mut seen = std::collections::HashSet::with_capacity(kv.len() + kv_json.len());
    let mut writes = KvWrites {
        upserts: Vec::with_capacity(kv.len() + kv_json.len()),
        deletes: Vec::new(),
    };
    for (key, text) in kv_json.iter().rev() {
        if seen.insert(key.as_str()) {
            writes.upserts.push((key.as_str(), Cow::Borrowed(text.as_str())));
        }
    }
    for (key, value) in kv.iter().rev() {
        if !seen.insert(key.as_str()) {
            continue;
        }
        match value {
            Some(value) => writes.upserts.push((key.as_str(), Cow::Owned(to_json_text(value)))),
            None => writes.deletes.push(key.as_str()),
        }
    }
    writes.upserts.reverse();
    writes.deletes.reverse();
    writes
}

/// How many of `remaining` rows the next multi-row statement takes: the
/// largest power of two not above them or [`KV_ROWS_PER_STATEMENT`].
pub(crate) fn kv_statement_rows(remaining: usize) -> usize {
    let n = remaining.clamp(1, KV_ROWS_PER_STATEMENT);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

pub(crate) fn to_json_text(value: &Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are strings. Straight
    // into a buffer: `Display` (`value.to_string()`) writes the same text
    // token by token through a formatter, at about half the speed.
    serde_json::to_string(value).expect("a JSON value serialises")
}

/// Drops a transition that holds many kv values off the committing task:
/// freeing a thousand report-sized JSON trees takes milliseconds that the
/// next writer would otherwise wait for.
pub(crate) fn drop_in_background(t: Transition) {
    const MANY: usize = 64;
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if t.kv.len() + t.kv_json.len() >= MANY => {
            rt.spawn_blocking(move || drop(t));
        }
        _ => drop(t),
    }
}

pub(crate) fn from_json_text(what: impl FnOnce() -> String, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// The smallest string above every string that starts with `prefix`, if
/// there is one: the exclusive upper bound of a prefix range scan.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A migration compiled into the binary.
struct EmbeddedMigration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// The migrations of one backend, resolved without touching the file system.
///
/// `include_str!` rather than `sqlx::migrate!`: the macro needs sqlx's
/// `macros` feature, which builds both database drivers (and the bundled
/// SQLite) a second time for the proc-macro, and it does not make cargo
/// rebuild when a migration file is added. A unit test below keeps these
/// lists equal to the files in `migrations/`. The files keep sqlx's
/// `<VERSION>_<DESCRIPTION>.sql` naming, and sqlx records them in
/// `_sqlx_migrations` with its usual checksums, so an edited migration that
/// was already applied is refused.
#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl fmt::Debug for EmbeddedMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.version, self.description)
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    m.sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

const SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "kv_unchecked",
        sql: include_str!("../migrations/sqlite/0002_kv_unchecked.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "promotion_source",
        sql: include_str!("../migrations/sqlite/0003_promotion_source.sql"),
    },
];

const POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "promotion_source",
        sql: include_str!("../migrations/postgres/0002_promotion_source.sql"),
    },
];

async fn migrator(backend: Backend) -> Result<sqlx::migrate::Migrator, StoreError> {
    let source = match backend {
        Backend::Sqlite => Embedded(SQLITE_MIGRATIONS),
        Backend::Postgres => Embedded(POSTGRES_MIGRATIONS),
    };
    sqlx::migrate::Migrator::new(source)
        .await
        .map_err(|source| StoreError::Migrate { backend, source })
}

/// The multi-row kv statements against both databases: more rows than one
/// statement takes, a key written several times across statements, deletes
/// among upserts. PostgreSQL runs when `TOLLGATE_TEST_POSTGRES_URL` is set
/// (`bash scripts/postgres.sh`), in a schema of its own.
#[cfg(test)]
mod many_kv_rows {
    use serde_json::json;
    use sqlx::{Connection, Executor};

    use super::*;

    fn set(key: String, value: Value) -> (String, Option<Value>) {
        (key, Some(value))
    }

    async fn check(store: &dyn Store) {
        let mut kv = Vec::new();
        for i in 0..1300 {
            kv.push(set(format!("k/{i:04}"), json!({"n": i})));
            match i {
                0 | 300 | 700 => kv.push(set("dup".into(), json!(i))),
                500 => kv.push(("dup".into(), None)),
                900 => kv.push(("never/stored".into(), None)),
                _ => {}
            }
        }
        kv.push(set("gone".into(), json!(true)));
        kv.push(("gone".into(), None));
        store
            .commit(Transition {
                kv,
                ..Transition::default()
            })
            .await
            .unwrap();
        let rows = store.kv_prefix("k/").await.unwrap();
        assert_eq!(rows.len(), 1300);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (k, v))| *k == format!("k/{i:04}") && *v == json!({"n": i})));
        assert_eq!(store.kv_get("dup").await.unwrap(), Some(json!(700)));
        assert_eq!(store.kv_get("gone").await.unwrap(), None);
        assert_eq!(store.kv_get("never/stored").await.unwrap(), None);

        // 600 deletes between upserts of new and existing keys.
        let mut kv = Vec::new();
        for i in 0..600 {
            kv.push((format!("k/{i:04}"), None));
            kv.push(set(format!("k/{:04}", 1300 + i), json!("new")));
        }
        kv.push(set("k/0100".into(), json!("back")));
        kv.push(("dup".into(), None));
        store
            .commit(Transition {
                kv,
                ..Transition::default()
            })
            .await
            .unwrap();
        let rows = store.kv_prefix("k/").await.unwrap();
        assert_eq!(rows.len(), 1300 - 600 + 1 + 600);
        assert_eq!(store.kv_get("k/0100").await.unwrap(), Some(json!("back")));
        assert_eq!(store.kv_get("k/0101").await.unwrap(), None);
        assert_eq!(store.kv_get("k/0600").await.unwrap(), Some(json!({"n": 600})));
        assert_eq!(store.kv_get("k/1899").await.unwrap(), Some(json!("new")));
        assert_eq!(store.kv_get("dup").await.unwrap(), None);

        // Rows as JSON text, after the Values of the same transition.
        let json = |text: String| JsonText::parse(text).unwrap();
        let text = |i: usize| (format!("t/{i:04}"), json(format!(r#"{{"n":{i},"s":"é\"x"}}"#)));
        store
            .commit(Transition {
                kv: vec![set("t/0000".into(), json!("replaced")), ("k/0700".into(), None)],
                kv_json: (0..700)
                    .map(text)
                    .chain([("k/0700".into(), json(" 7\n".into()))])
                    .collect(),
                ..Transition::default()
            })
            .await
            .unwrap();
        let rows = store.kv_prefix("t/").await.unwrap();
        assert_eq!(rows.len(), 700);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (_, v))| *v == json!({"n": i, "s": "é\"x"})));
        assert_eq!(store.kv_get("k/0700").await.unwrap(), Some(json!(7)));
        // Read back as text: the same keys, in order, and the same values.
        let texts = store.kv_prefix_text("t/").await.unwrap();
        assert_eq!(texts.len(), 700);
        for (i, ((key, text), (row_key, value))) in texts.iter().zip(&rows).enumerate() {
            assert_eq!((key, key), (row_key, &format!("t/{i:04}")));
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), *value);
        }
        assert_eq!(store.kv_prefix_text("none/").await.unwrap(), []);
    }

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("kv.db").display()))
            .await
            .unwrap();
        check(&store).await;
    }

    #[tokio::test]
    async fn postgres() {
        let Some(base) = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("notice: TOLLGATE_TEST_POSTGRES_URL is not set; skipping the PostgreSQL kv test");
            return;
        };
        let schema = format!("tollgate_unit_kv_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            )))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let store = PostgresStore::open(&format!("{base}{separator}options=-c%20search_path%3D{schema}"))
            .await
            .unwrap();
        check(&store).await;
        drop(store);
        admin
            .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .await
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn names(list: &[EmbeddedMigration]) -> Vec<String> {
        list.iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description))
            .collect()
    }

    #[tokio::test]
    async fn sqlite_kv_rows_survive_the_migration_that_drops_the_json_check() {
        use std::str::FromStr;
        static FIRST: &[EmbeddedMigration] = &[EmbeddedMigration {
            version: 1,
            description: "initial",
            sql: include_str!("../migrations/sqlite/0001_initial.sql"),
        }];
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        // A database as the first version left it, with a kv row.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let first = sqlx::migrate::Migrator::new(Embedded(FIRST)).await.unwrap();
        first.run(&pool).await.unwrap();
        sqlx::query("INSERT INTO kv VALUES ('ring/canary/desired', '{\"revision\":\"r1\"}', 'then')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = open(&url).await.unwrap();
        assert_eq!(
            store.kv_get("ring/canary/desired").await.unwrap(),
            Some(serde_json::json!({"revision": "r1"}))
        );
    }

    #[test]
    fn json_text_holds_one_json_value() {
        for bad in ["", " ", "[1,", "{not json", "1 2", "{} {}", "\"\\x\""] {
            assert!(JsonText::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["1", " [1, {\"a\": null}]\n", "\"é\\n\"", "{}"] {
            assert_eq!(JsonText::parse(good).unwrap().as_str(), good);
        }
        let text = JsonText::to_json(&serde_json::json!({"b": [true], "a": 1})).unwrap();
        assert_eq!(text.into_string(), r#"{"a":1,"b":[true]}"#);
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_eq!(names(SQLITE_MIGRATIONS), files("sqlite"));
        assert_eq!(names(POSTGRES_MIGRATIONS), files("postgres"));
    }

    #[test]
    fn prefix_upper_bound_is_the_next_string() {
        assert_eq!(prefix_upper_bound("ring/"), Some("ring0".to_string()));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_upper_bound("\u{D7FF}"), Some("\u{E000}".to_string()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn kv_writes_keep_each_keys_last_write() {
        let kv = vec![
            ("a".to_string(), Some(serde_json::json!(1))),
            ("b".to_string(), None),
            ("a".to_string(), None),
            ("c".to_string(), Some(serde_json::json!({"x": [true]}))),
            ("b".to_string(), Some(serde_json::json!("b"))),
            ("a".to_string(), Some(serde_json::json!(3))),
        ];
        let writes = |kv: &[(String, Option<Value>)], kv_json: &[(&str, &str)]| {
            let t = Transition {
                kv: kv.to_vec(),
                kv_json: kv_json
                    .iter()
                    .map(|(k, v)| (k.to_string(), JsonText::parse(*v).unwrap()))
                    .collect(),
                ..Transition::default()
            };
            let w = kv_writes(&t);
            let upserts: Vec<(String, String)> =
                w.upserts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let deletes: Vec<String> = w.deletes.iter().map(|k| k.to_string()).collect();
            (upserts, deletes)
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let (upserts, deletes) = writes(&kv, &[]);
        assert_eq!(
            upserts,
            [pair("c", r#"{"x":[true]}"#), pair("b", r#""b""#), pair("a", "3")]
        );
        assert!(deletes.is_empty());
        let (upserts, deletes) = writes(&kv[..3], &[]);
        assert!(upserts.is_empty());
        assert_eq!(deletes, ["b", "a"]);
        // JSON text comes after the Values, whatever they did to the key.
        let (upserts, deletes) = writes(&kv[..3], &[("a", "[1]"), ("d", "{}")]);
        assert_eq!(upserts, [pair("a", "[1]"), pair("d", "{}")]);
        assert_eq!(deletes, ["b"]);
    }

    #[test]
    fn kv_statements_take_powers_of_two() {
        let sizes = |mut n: usize| {
            let mut out = Vec::new();
            while n > 0 {
                let k = kv_statement_rows(n);
                out.push(k);
                n -= k;
            }
            out
        };
        assert_eq!(sizes(1170), [256, 256, 256, 256, 128, 16, 2]);
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(256), [256]);
        assert_eq!(sizes(7), [4, 2, 1]);
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn transient_codes() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED; not SQLITE_CONSTRAINT_UNIQUE.
        assert!(["5", "517", "6"].iter().all(|c| sqlite::is_transient_code(c)));
        assert!(!["19", "2067", "14", "x"].iter().any(|c| sqlite::is_transient_code(c)));
        // Connection failure, serialization failure, admin shutdown; not unique violation.
        assert!(["08006", "40001", "57P01", "53300"]
            .iter()
            .all(|c| postgres::is_transient_code(c)));
        assert!(!["23505", "P0001", "42P01"]
            .iter()
            .any(|c| postgres::is_transient_code(c)));
    }

    #[test]
    fn transient_and_conflict_are_distinct() {
        let conflict = StoreError::Conflict {
            id: 1,
            expected: 2,
            found: Some(3),
        };
        assert!(conflict.is_conflict() && !conflict.is_transient());
        let busy = StoreError::Database {
            backend: Backend::Sqlite,
            op: "commit",
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(busy.is_transient() && !busy.is_conflict());
        let corrupt = StoreError::Corrupt {
            what: "x".into(),
            reason: "y".into(),
        };
        assert!(!corrupt.is_transient() && !corrupt.is_conflict());
    }
}
