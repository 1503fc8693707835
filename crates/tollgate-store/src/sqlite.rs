//! The embedded store: one SQLite file in WAL mode.
//!
//! Writers are serialized twice: by a mutex within this handle, and by
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock when the transaction
//! starts. A deferred transaction that reads first and writes later can fail
//! with SQLITE_BUSY_SNAPSHOT when another writer committed in between, which
//! no busy timeout cures; an immediate one waits its turn instead.
//!
//! A file database has one dedicated writing connection with a large page
//! cache; the pool only reads. In WAL mode a connection keeps its cache
//! while no other connection writes, so the writer finds the B-tree pages
//! of the rows it updates in memory: a batch of device reports upserts a
//! thousand rows spread over the whole table.
//!
//! Leadership is an exclusive lock on a companion file `<db>-leader`, held by
//! an open `BEGIN EXCLUSIVE` on a dedicated connection: the operating system
//! releases it when the process exits however it exits, and SQLite also
//! enforces it between handles within one process.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::error::ErrorKind;
use sqlx::pool::PoolConnection;
use sqlx::query::QueryAs;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::Mutex;

use super::{
    admit, check_audit_continues, drop_in_background, found_by_tables, from_json_text, holds_text, kv_statement_rows,
    kv_writes, migrator, prefix_upper_bound, redact_url, stored_precision, to_json_text, validate, AuditRow, Backend,
    CommitResult, Found, OpenOptions, PromotionFilter, PromotionRecord, PromotionWrite, ReviewRecord, Store,
    StoreError, Transition, WrittenPromotion, HOLDS_QUERY,
};

/// How long a statement waits for another connection's lock before failing
/// with SQLITE_BUSY (a transient error).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The writing connection's page cache, in KiB (SQLite's default is 2 MiB).
/// With 100,000 devices the table is some 400 MB; the cache holds every
/// interior page and the most recently written leaves.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// SQLite primary result codes that mean "try again": SQLITE_BUSY and
/// SQLITE_LOCKED (extended codes keep the primary one in the low byte).
pub(super) fn is_transient_code(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    target: String,
    /// One writer at a time within this handle, so writers queue here rather
    /// than on SQLite's busy timeout. It holds the writing connection of a
    /// file database; an in-memory database (one connection) writes through
    /// the pool.
    writer: Mutex<Option<SqliteConnection>>,
    /// `None` for an in-memory database, which only this handle can see.
    lock_path: Option<PathBuf>,
    leader: Mutex<Leadership>,
}

#[derive(Debug, Default)]
struct Leadership {
    holder: Option<String>,
    /// The connection whose open exclusive transaction is the lock.
    lock: Option<SqliteConnection>,
}

impl SqliteStore {
    /// Opens an initialised store, or creates one where there is no file
    /// (see [`super::open_with`]).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(SqliteStore::open_with(url, &OpenOptions::default()).await?.0)
    }

    /// Opens or creates the store as `options` allow; true when created.
    pub async fn open_with(url: &str, options: &OpenOptions) -> Result<(Self, bool), StoreError> {
        let target = redact_url(url);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let parsed = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Url {
            url: target.clone(),
            reason: e.to_string(),
        })?;
        let found = if in_memory {
            Found::Nothing
        } else {
            inspect(&parsed, &target, options.init).await?
        };
        let create = admit(Backend::Sqlite, &target, &found, options)?;
        let store = SqliteStore::connect(parsed, target, in_memory, create).await?;
        Ok((store, create))
    }

    async fn connect(
        parsed: SqliteConnectOptions,
        target: String,
        in_memory: bool,
        create: bool,
    ) -> Result<Self, StoreError> {
        // synchronous=FULL: fsync the WAL at every commit. NORMAL already
        // survives a killed process (the WAL is in the OS page cache), but a
        // power cut or kernel crash could take back the last commits after the
        // controller has acted on them: a ring promoted with no record of it,
        // which the next start would promote again, and the audit events of it
        // lost. The controller commits a few times a minute, so the fsync per
        // commit is free in practice.
        let options = parsed
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // An in-memory database lives as long as one connection to it, so
        // the pool keeps exactly one forever.
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let lock_path = (!in_memory).then(|| leader_lock_path(options.get_filename()));
        let open_error = |source| StoreError::Open {
            backend: Backend::Sqlite,
            target: target.clone(),
            source,
        };
        let pool = pool_options.connect_with(options.clone()).await.map_err(open_error)?;
        migrator(Backend::Sqlite)
            .await?
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: Backend::Sqlite,
                source,
            })?;
        let writer = if in_memory {
            None
        } else {
            let connected = options
                .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                .connect()
                .await
                .map_err(open_error)?;
            Some(connected)
        };
        Ok(SqliteStore {
            pool,
            target,
            writer: Mutex::new(writer),
            lock_path,
            leader: Mutex::new(Leadership::default()),
        })
    }

    /// The connection to write with: the dedicated one, or for an in-memory
    /// database one from the pool (kept in `pooled` until the write is done).
    async fn writing_connection<'a>(
        &self,
        writer: &'a mut Option<SqliteConnection>,
        pooled: &'a mut Option<PoolConnection<Sqlite>>,
    ) -> Result<&'a mut SqliteConnection, StoreError> {
        if let Some(conn) = writer {
            return Ok(conn);
        }
        let conn = self.pool.acquire().await.map_err(db_error("take a connection"))?;
        Ok(&mut **pooled.insert(conn))
    }

    /// The URL this store was opened with, password-free.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn take_leader_lock(path: &Path) -> Result<Option<SqliteConnection>, StoreError> {
        let lock_error = |source| StoreError::LeaderLock {
            lock: path.display().to_string(),
            source,
        };
        let busy =
            |e: &sqlx::Error| matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| is_transient_code(&c)));
        // No busy timeout: a held lock answers at once. No journal_mode
        // either: the file keeps SQLite's default rollback journal (in WAL mode
        // EXCLUSIVE would not lock readers out), and setting it would need the
        // very lock another handle holds.
        let connected = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO)
            .connect()
            .await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) if busy(&e) => return Ok(None),
            Err(e) => return Err(lock_error(e)),
        };
        match sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await {
            Ok(_) => Ok(Some(conn)),
            Err(e) if busy(&e) => {
                // Closing rather than reusing: the connection's state after a
                // refused BEGIN is not worth reasoning about.
                let _ = conn.close().await;
                Ok(None)
            }
            Err(e) => Err(lock_error(e)),
        }
    }
}

/// What is at the file `options` names, without creating or changing it.
/// `count` also asks what an initialised store holds.
async fn inspect(options: &SqliteConnectOptions, target: &str, count: bool) -> Result<Found, StoreError> {
    let open_error = |source| StoreError::Open {
        backend: Backend::Sqlite,
        target: target.to_string(),
        source,
    };
    let path = options.get_filename();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(open_error(sqlx::Error::Io(e))),
        Ok(meta) if meta.len() == 0 => return Ok(Found::EmptyFile),
        Ok(_) => {}
    }
    // No journal mode and no creation: a look that leaves the file as it is.
    let mut conn = options
        .clone()
        .create_if_missing(false)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(open_error)?;
    let tables: Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await;
    let tables = match tables {
        Ok(tables) => tables,
        // SQLITE_NOTADB: whatever the file is, it is no store to open or replace.
        Err(sqlx::Error::Database(d)) if d.code().is_some_and(|c| c.parse::<i32>().is_ok_and(|c| c & 0xff == 26)) => {
            let _ = conn.close().await;
            return Ok(Found::Unusable {
                what: "is not an SQLite database".to_string(),
            });
        }
        Err(e) => return Err(db_error("list the tables")(e)),
    };
    let mut found = found_by_tables(tables);
    if let (Found::Initialised { holds }, true) = (&mut found, count) {
        let counts: Result<(i64, i64, i64), _> = sqlx::query_as(HOLDS_QUERY).fetch_one(&mut conn).await;
        *holds = Some(match counts {
            Ok((audit, promotions, kv)) => holds_text(audit, promotions, kv),
            Err(e) => format!("its tables cannot be counted: {e}"),
        });
    }
    let _ = conn.close().await;
    Ok(found)
}

fn leader_lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-leader");
    PathBuf::from(name)
}

/// The `(key, value as JSON text)` rows under `prefix`, in key order.
fn kv_prefix_query(prefix: &str) -> QueryAs<'_, Sqlite, (String, String), SqliteArguments> {
    match prefix_upper_bound(prefix) {
        Some(upper) => sqlx::query_as("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key")
            .bind(prefix)
            .bind(upper),
        None => sqlx::query_as("SELECT key, value FROM kv WHERE key >= ? ORDER BY key").bind(prefix),
    }
}

fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database {
        backend: Backend::Sqlite,
        op,
        source,
    }
}

/// Fixed width, so that text order is time order.
fn timestamp_text(t: DateTime<Utc>) -> String {
    stored_precision(t).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(what: impl FnOnce() -> String, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: what(),
            reason: format!("timestamp {text:?}: {e}"),
        })
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(db_error("decode a row"))
}

const PROMOTION_COLUMNS: &str = "id, source, revision, kind, phase, created_at, updated_at, version, body";

fn promotion_from_row(row: &SqliteRow) -> Result<PromotionRecord, StoreError> {
    let id: i64 = get(row, "id")?;
    let what = || format!("promotion {id}");
    Ok(PromotionRecord {
        id,
        source: get(row, "source")?,
        revision: get(row, "revision")?,
        kind: get(row, "kind")?,
        phase: get(row, "phase")?,
        created_at: parse_timestamp(what, get(row, "created_at")?)?,
        updated_at: parse_timestamp(what, get(row, "updated_at")?)?,
        version: get(row, "version")?,
        body: from_json_text(what, get(row, "body")?)?,
    })
}

fn review_from_row(row: &SqliteRow) -> Result<ReviewRecord, StoreError> {
    let id: i64 = get(row, "id")?;
    let what = || format!("review {id}");
    Ok(ReviewRecord {
        id,
        promotion_id: get(row, "promotion_id")?,
        reviewer: get(row, "reviewer")?,
        state: get(row, "state")?,
        at: parse_timestamp(what, get(row, "at")?)?,
        body: from_json_text(what, get(row, "body")?)?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, details, prev, hash";

fn audit_from_row(row: &SqliteRow) -> Result<AuditRow, StoreError> {
    let seq: i64 = get(row, "seq")?;
    let what = || format!("audit row {seq}");
    Ok(AuditRow {
        seq,
        at: parse_timestamp(what, get(row, "at")?)?,
        actor: get(row, "actor")?,
        action: get(row, "action")?,
        subject: get(row, "subject")?,
        details: from_json_text(what, get(row, "details")?)?,
        prev: get(row, "prev")?,
        hash: get(row, "hash")?,
    })
}

/// The body of [`Store::commit`], inside an open transaction; an error
/// leaves the transaction to be rolled back.
async fn write_transition(conn: &mut SqliteConnection, t: &Transition) -> Result<CommitResult, StoreError> {
    let now = timestamp_text(Utc::now());
    let mut result = CommitResult::default();

    for write in &t.promotions {
        match write {
            PromotionWrite::Insert {
                id,
                source,
                revision,
                kind,
                phase,
                body,
            } => {
                let id = match id {
                    Some(id) => {
                        let reserved: i64 =
                            sqlx::query_scalar("SELECT last FROM id_sequences WHERE name = 'promotions'")
                                .fetch_one(&mut *conn)
                                .await
                                .map_err(db_error("read the promotion id sequence"))?;
                        if *id < 1 || *id > reserved {
                            return Err(StoreError::Invalid {
                                what: format!("promotion {id}"),
                                reason: "an explicit id must come from reserve_promotion_id".to_string(),
                            });
                        }
                        *id
                    }
                    None => next_promotion_id(conn).await?,
                };
                sqlx::query(
                    "INSERT INTO promotions (id, source, revision, kind, phase, created_at, updated_at, version, body) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
                )
                .bind(id)
                .bind(source)
                .bind(revision)
                .bind(kind)
                .bind(phase)
                .bind(&now)
                .bind(&now)
                .bind(to_json_text(body))
                .execute(&mut *conn)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation => {
                        StoreError::DuplicatePromotion { id }
                    }
                    _ => db_error("insert a promotion")(e),
                })?;
                result.promotions.push(WrittenPromotion { id, version: 1 });
            }
            PromotionWrite::Update {
                id,
                expected_version,
                phase,
                body,
            } => {
                let updated = sqlx::query(
                    "UPDATE promotions SET phase = ?, body = ?, version = version + 1, updated_at = ? \
                     WHERE id = ? AND version = ?",
                )
                .bind(phase)
                .bind(to_json_text(body))
                .bind(&now)
                .bind(id)
                .bind(expected_version)
                .execute(&mut *conn)
                .await
                .map_err(db_error("update a promotion"))?;
                if updated.rows_affected() == 0 {
                    let found: Option<i64> = sqlx::query_scalar("SELECT version FROM promotions WHERE id = ?")
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db_error("read a promotion's version"))?;
                    return Err(StoreError::Conflict {
                        id: *id,
                        expected: *expected_version,
                        found,
                    });
                }
                result.promotions.push(WrittenPromotion {
                    id: *id,
                    version: expected_version + 1,
                });
            }
        }
    }

    for review in &t.reviews {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reviews (promotion_id, reviewer, state, at, body) VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(review.promotion_id)
        .bind(&review.reviewer)
        .bind(&review.state)
        .bind(timestamp_text(review.at))
        .bind(to_json_text(&review.body))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.kind() == ErrorKind::ForeignKeyViolation => StoreError::UnknownPromotion {
                id: review.promotion_id,
            },
            _ => db_error("insert a review")(e),
        })?;
        result.review_ids.push(id);
    }

    if !t.audit.is_empty() {
        let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("read the audit head"))?;
        check_audit_continues(head, &t.audit)?;
        for row in &t.audit {
            sqlx::query(
                "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.seq)
            .bind(timestamp_text(row.at))
            .bind(&row.actor)
            .bind(&row.action)
            .bind(&row.subject)
            .bind(to_json_text(&row.details))
            .bind(&row.prev)
            .bind(&row.hash)
            .execute(&mut *conn)
            .await
            .map_err(db_error("append to the audit log"))?;
        }
    }

    write_kv(conn, t, &now).await?;

    Ok(result)
}

/// The transition's kv writes, many rows per statement: each statement is
/// a round trip to the connection's worker thread.
async fn write_kv(conn: &mut SqliteConnection, t: &Transition, now: &str) -> Result<(), StoreError> {
    let writes = kv_writes(t);
    let mut rows = &writes.upserts[..];
    while !rows.is_empty() {
        let (chunk, rest) = rows.split_at(kv_statement_rows(rows.len()));
        let sql = format!(
            "INSERT INTO kv (key, value, updated_at) VALUES {} \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (key, text) in chunk {
            query = query.bind(*key).bind(text.as_ref()).bind(now);
        }
        query.execute(&mut *conn).await.map_err(db_error("write kv entries"))?;
        rows = rest;
    }
    let mut keys = &writes.deletes[..];
    while !keys.is_empty() {
        let (chunk, rest) = keys.split_at(kv_statement_rows(keys.len()));
        let sql = format!("DELETE FROM kv WHERE key IN ({})", vec!["?"; chunk.len()].join(", "));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *conn).await.map_err(db_error("delete kv entries"))?;
        keys = rest;
    }
    Ok(())
}

async fn next_promotion_id(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    sqlx::query_scalar("UPDATE id_sequences SET last = last + 1 WHERE name = 'promotions' RETURNING last")
        .fetch_one(conn)
        .await
        .map_err(db_error("advance the promotion id sequence"))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn commit(&self, t: Transition) -> Result<CommitResult, StoreError> {
        validate(&t)?;
        if t.is_empty() {
            return Ok(CommitResult::default());
        }
        let mut writer = self.writer.lock().await;
        let mut pooled = None;
        let conn = self.writing_connection(&mut writer, &mut pooled).await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("begin a transaction"))?;
        let result = write_transition(&mut tx, &t).await?;
        tx.commit().await.map_err(db_error("commit"))?;
        drop(pooled);
        drop(writer);
        drop_in_background(t);
        Ok(result)
    }

    async fn reserve_promotion_id(&self) -> Result<i64, StoreError> {
        let mut writer = self.writer.lock().await;
        let mut pooled = None;
        let conn = self.writing_connection(&mut writer, &mut pooled).await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("begin a transaction"))?;
        let id = next_promotion_id(&mut tx).await?;
        tx.commit().await.map_err(db_error("commit"))?;
        Ok(id)
    }

    async fn promotion(&self, id: i64) -> Result<Option<PromotionRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read a promotion"))?;
        row.as_ref().map(promotion_from_row).transpose()
    }

    async fn promotions(&self, filter: PromotionFilter) -> Result<Vec<PromotionRecord>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(format!("SELECT {PROMOTION_COLUMNS} FROM promotions WHERE 1 = 1"));
        if !filter.phases.is_empty() {
            query.push(" AND phase IN (");
            let mut phases = query.separated(", ");
            for phase in filter.phases {
                phases.push_bind(phase);
            }
            query.push(")");
        }
        if let Some(source) = filter.source {
            query.push(" AND source = ").push_bind(source);
        }
        if let Some(revision) = filter.revision {
            query.push(" AND revision = ").push_bind(revision);
        }
        if let Some(before) = filter.before_id {
            query.push(" AND id < ").push_bind(before);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("list promotions"))?;
        rows.iter().map(promotion_from_row).collect()
    }

    async fn reviews(&self, promotion_id: i64) -> Result<Vec<ReviewRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, promotion_id, reviewer, state, at, body FROM reviews WHERE promotion_id = ? ORDER BY id",
        )
        .bind(promotion_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("list reviews"))?;
        rows.iter().map(review_from_row).collect()
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"
        )))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("read the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read the audit head"))?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = sqlx::query_scalar("SELECT value FROM kv WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("read a kv entry"))?;
        text.map(|text| from_json_text(|| format!("kv entry {key:?} in {}", self.target), &text))
            .transpose()
    }

    async fn kv_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = kv_prefix_query(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("scan kv entries"))?;
        rows.into_iter()
            .map(|(key, text)| {
                let value = from_json_text(|| format!("kv entry {key:?} in {}", self.target), &text)?;
                Ok((key, value))
            })
            .collect()
    }

    async fn kv_prefix_text(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        kv_prefix_query(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("scan kv entries"))
    }

    async fn try_lead(&self, holder: &str) -> Result<bool, StoreError> {
        let mut leadership = self.leader.lock().await;
        if let Some(current) = &leadership.holder {
            return Ok(current == holder);
        }
        let Some(path) = &self.lock_path else {
            // Nobody else can open this database.
            leadership.holder = Some(holder.to_string());
            return Ok(true);
        };
        if let Some(lock) = SqliteStore::take_leader_lock(path).await? {
            leadership.lock = Some(lock);
            leadership.holder = Some(holder.to_string());
            return Ok(true);
        }
        Ok(false)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error("ping"))?;
        Ok(())
    }
}
