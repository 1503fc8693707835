//! The highly-available store: PostgreSQL, shared by several replicas of
//! which one leads.
//!
//! Transactions run at READ COMMITTED. That is enough because every check a
//! commit makes is also enforced by a row the database locks: a promotion
//! update is a compare-and-set on `version` in its WHERE clause (re-checked
//! against the newest row if another transaction changed it meanwhile), and
//! an audit row that lost a race for its seq hits the primary key. So two
//! replicas that both believe they lead still cannot both commit.
//!
//! Leadership is a session-level advisory lock, held on a connection of its
//! own: the server drops it when that session ends, so a crashed replica, or
//! one cut off from the database, loses it without any lease to expire. The
//! key is derived from the schema, so deployments (and tests) in different
//! schemas of one database do not contend.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Postgres, QueryBuilder, Row};
use tokio::sync::Mutex;

use super::{
    admit, check_audit_continues, drop_in_background, found_by_tables, from_json_text, holds_text, kv_writes, migrator,
    prefix_upper_bound, redact_url, stored_precision, to_json_text, validate, AuditRow, Backend, CommitResult, Found,
    OpenOptions, PromotionFilter, PromotionRecord, PromotionWrite, ReviewRecord, Store, StoreError, Transition,
    WrittenPromotion, HOLDS_QUERY,
};

/// How long the leadership connection may take to connect or answer before
/// this replica stops claiming to lead.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock that is leadership, one per schema.
const LEADER_LOCK_KEY: &str = "hashtextextended('tollgate.leader:' || coalesce(current_schema(), ''), 0)";

/// SQLSTATEs after which the same call may succeed: connection exceptions
/// (class 08), serialization failure and deadlock (40001, 40P01), too many
/// connections and other resource shortages (class 53), the server shutting
/// down or starting (57P01..57P03), and a lock not available (55P03).
pub(super) fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
}

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
    target: String,
    leader: Mutex<Leadership>,
}

#[derive(Debug, Default)]
struct Leadership {
    holder: Option<String>,
    /// The session that holds (or tries to take) the advisory lock.
    conn: Option<PgConnection>,
}

impl PostgresStore {
    /// Opens an initialised store, or creates one in an empty schema (see
    /// [`super::open_with`]).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresStore::open_with(url, &OpenOptions::default()).await?.0)
    }

    /// Opens or creates the store as `options` allow; true when created.
    pub async fn open_with(url: &str, options: &OpenOptions) -> Result<(Self, bool), StoreError> {
        let target = redact_url(url);
        let connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
            url: target.clone(),
            reason: e.to_string(),
        })?;
        let open_error = |source| StoreError::Open {
            backend: Backend::Postgres,
            target: target.clone(),
            source,
        };
        // One direct connection first: it fails at once with the real cause
        // (refused, bad password, no such database), where a pool would retry
        // until its timeout and report only that. It also runs the migrations;
        // sqlx holds an advisory lock meanwhile, so replicas starting together
        // apply each migration once.
        let mut conn = PgConnection::connect_with(&connect).await.map_err(open_error)?;
        let found = inspect(&mut conn, options.init).await?;
        let created = admit(Backend::Postgres, &target, &found, options)?;
        migrator(Backend::Postgres)
            .await?
            .run(&mut conn)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: Backend::Postgres,
                source,
            })?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(connect.clone());
        let store = PostgresStore {
            pool,
            options: connect,
            target,
            leader: Mutex::new(Leadership::default()),
        };
        Ok((store, created))
    }

    /// The URL this store was opened with, password-free.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the held lock session still answers and still holds the lock.
    async fn still_leading(conn: &mut PgConnection) -> bool {
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)",
        )
        .fetch_one(conn);
        matches!(tokio::time::timeout(LEADER_TIMEOUT, check).await, Ok(Ok(true)))
    }

    async fn try_take_lock(
        &self,
        holder: &str,
        conn: Option<PgConnection>,
    ) -> Result<(bool, PgConnection), StoreError> {
        let lock_error = |source| StoreError::LeaderLock {
            lock: format!("advisory lock in {}", self.target),
            source,
        };
        let timed_out = |op| StoreError::Timeout {
            backend: Backend::Postgres,
            op,
            after: LEADER_TIMEOUT,
        };
        let mut conn = match conn {
            Some(conn) => conn,
            None => {
                // Named so that pg_stat_activity shows who leads.
                let options = self
                    .options
                    .clone()
                    .application_name(&format!("tollgate-leader:{holder}"));
                tokio::time::timeout(LEADER_TIMEOUT, options.connect())
                    .await
                    .map_err(|_| timed_out("connecting for leadership"))?
                    .map_err(lock_error)?
            }
        };
        let taken: bool = tokio::time::timeout(
            LEADER_TIMEOUT,
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT pg_try_advisory_lock({LEADER_LOCK_KEY})")))
                .fetch_one(&mut conn),
        )
        .await
        .map_err(|_| timed_out("taking the leadership lock"))?
        .map_err(lock_error)?;
        Ok((taken, conn))
    }
}

/// What the schema Tollgate would use (the first of `search_path`, where
/// the migrations create their objects) holds. An empty schema is
/// [`Found::Nothing`]: that is how a database is handed to Tollgate. `count`
/// also asks what an initialised store holds.
async fn inspect(conn: &mut PgConnection, count: bool) -> Result<Found, StoreError> {
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("find the current schema"))?;
    let Some(schema) = schema else {
        return Ok(Found::Unusable {
            what: "has no schema to use: none of the schemas in search_path exists".to_string(),
        });
    };
    // Tables, views, sequences and foreign tables: whatever makes the schema
    // somebody's.
    let relations: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("list the schema's tables"))?;
    if relations.is_empty() {
        return Ok(Found::Nothing);
    }
    let mut found = match found_by_tables(relations) {
        // Named with their schema: the same names may exist in another.
        Found::NoSchema { tables } => Found::NoSchema {
            tables: tables.into_iter().map(|t| format!("{schema}.{t}")).collect(),
        },
        found => found,
    };
    if let (Found::Initialised { holds }, true) = (&mut found, count) {
        let counts: Result<(i64, i64, i64), _> = sqlx::query_as(HOLDS_QUERY).fetch_one(&mut *conn).await;
        *holds = Some(match counts {
            Ok((audit, promotions, kv)) => holds_text(audit, promotions, kv),
            Err(e) => format!("its tables cannot be counted: {e}"),
        });
    }
    Ok(found)
}

/// The `(key, value as JSON text)` rows under `prefix`, in key order.
fn kv_prefix_query(prefix: &str) -> QueryAs<'_, Postgres, (String, String), PgArguments> {
    match prefix_upper_bound(prefix) {
        Some(upper) => sqlx::query_as("SELECT key, value::text FROM kv WHERE key >= $1 AND key < $2 ORDER BY key")
            .bind(prefix)
            .bind(upper),
        None => sqlx::query_as("SELECT key, value::text FROM kv WHERE key >= $1 ORDER BY key").bind(prefix),
    }
}

fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database {
        backend: Backend::Postgres,
        op,
        source,
    }
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(db_error("decode a row"))
}

// JSON travels as text: bound as text and cast in SQL, read back with
// `::text`, so both backends see exactly the same bytes.
const PROMOTION_COLUMNS: &str =
    "id, source, revision, kind, phase, created_at, updated_at, version, body::text AS body";

fn promotion_from_row(row: &PgRow) -> Result<PromotionRecord, StoreError> {
    let id: i64 = get(row, "id")?;
    Ok(PromotionRecord {
        id,
        source: get(row, "source")?,
        revision: get(row, "revision")?,
        kind: get(row, "kind")?,
        phase: get(row, "phase")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        version: get(row, "version")?,
        body: from_json_text(|| format!("promotion {id}"), get(row, "body")?)?,
    })
}

fn review_from_row(row: &PgRow) -> Result<ReviewRecord, StoreError> {
    let id: i64 = get(row, "id")?;
    Ok(ReviewRecord {
        id,
        promotion_id: get(row, "promotion_id")?,
        reviewer: get(row, "reviewer")?,
        state: get(row, "state")?,
        at: get(row, "at")?,
        body: from_json_text(|| format!("review {id}"), get(row, "body")?)?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, details::text AS details, prev, hash";

fn audit_from_row(row: &PgRow) -> Result<AuditRow, StoreError> {
    let seq: i64 = get(row, "seq")?;
    Ok(AuditRow {
        seq,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        action: get(row, "action")?,
        subject: get(row, "subject")?,
        details: from_json_text(|| format!("audit row {seq}"), get(row, "details")?)?,
        prev: get(row, "prev")?,
        hash: get(row, "hash")?,
    })
}

/// The body of [`Store::commit`], inside an open transaction; an error
/// leaves the transaction to be rolled back.
async fn write_transition(conn: &mut PgConnection, t: &Transition) -> Result<CommitResult, StoreError> {
    let now: DateTime<Utc> = stored_precision(Utc::now());
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
                let id: i64 = match id {
                    Some(id) => {
                        // A sequence's last_value only grows, so this check is
                        // safe against concurrent reservations.
                        let reserved: Option<i64> =
                            sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value END FROM promotion_ids")
                                .fetch_one(&mut *conn)
                                .await
                                .map_err(db_error("read the promotion id sequence"))?;
                        if *id < 1 || reserved.is_none_or(|reserved| *id > reserved) {
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
                     VALUES ($1, $2, $3, $4, $5, $6, $6, 1, $7::jsonb)",
                )
                .bind(id)
                .bind(source)
                .bind(revision)
                .bind(kind)
                .bind(phase)
                .bind(now)
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
                    "UPDATE promotions SET phase = $1, body = $2::jsonb, version = version + 1, updated_at = $3 \
                     WHERE id = $4 AND version = $5",
                )
                .bind(phase)
                .bind(to_json_text(body))
                .bind(now)
                .bind(id)
                .bind(expected_version)
                .execute(&mut *conn)
                .await
                .map_err(db_error("update a promotion"))?;
                if updated.rows_affected() == 0 {
                    let found: Option<i64> = sqlx::query_scalar("SELECT version FROM promotions WHERE id = $1")
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
            "INSERT INTO reviews (promotion_id, reviewer, state, at, body) \
             VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
        )
        .bind(review.promotion_id)
        .bind(&review.reviewer)
        .bind(&review.state)
        .bind(stored_precision(review.at))
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
                 VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8)",
            )
            .bind(row.seq)
            .bind(row.at)
            .bind(&row.actor)
            .bind(&row.action)
            .bind(&row.subject)
            .bind(to_json_text(&row.details))
            .bind(&row.prev)
            .bind(&row.hash)
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                // Another writer committed this seq after our head was read.
                sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation => StoreError::AuditOutOfOrder {
                    expected: row.seq + 1,
                    got: row.seq,
                },
                _ => db_error("append to the audit log")(e),
            })?;
        }
    }

    // Each key's last write, in two statements whatever their number: one
    // round trip each, and no key twice in one upsert (PostgreSQL refuses
    // to update a row twice in one statement).
    let writes = kv_writes(t);
    if !writes.upserts.is_empty() {
        let (keys, texts): (Vec<&str>, Vec<&str>) = writes.upserts.iter().map(|(k, v)| (*k, v.as_ref())).unzip();
        sqlx::query(
            "INSERT INTO kv (key, value, updated_at) \
             SELECT k, v::jsonb, $3 FROM UNNEST($1::text[], $2::text[]) AS written (k, v) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(&keys)
        .bind(&texts)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(db_error("write kv entries"))?;
    }
    if !writes.deletes.is_empty() {
        sqlx::query("DELETE FROM kv WHERE key = ANY($1::text[])")
            .bind(&writes.deletes)
            .execute(&mut *conn)
            .await
            .map_err(db_error("delete kv entries"))?;
    }

    Ok(result)
}

async fn next_promotion_id(conn: &mut PgConnection) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT nextval('promotion_ids')")
        .fetch_one(conn)
        .await
        .map_err(db_error("advance the promotion id sequence"))
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn commit(&self, t: Transition) -> Result<CommitResult, StoreError> {
        validate(&t)?;
        if t.is_empty() {
            return Ok(CommitResult::default());
        }
        let mut tx = self.pool.begin().await.map_err(db_error("begin a transaction"))?;
        let result = write_transition(&mut tx, &t).await?;
        tx.commit().await.map_err(db_error("commit"))?;
        drop_in_background(t);
        Ok(result)
    }

    async fn reserve_promotion_id(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error("acquire a connection"))?;
        next_promotion_id(&mut conn).await
    }

    async fn promotion(&self, id: i64) -> Result<Option<PromotionRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read a promotion"))?;
        row.as_ref().map(promotion_from_row).transpose()
    }

    async fn promotions(&self, filter: PromotionFilter) -> Result<Vec<PromotionRecord>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {PROMOTION_COLUMNS} FROM promotions WHERE TRUE"));
        if !filter.phases.is_empty() {
            query.push(" AND phase = ANY(").push_bind(filter.phases).push(")");
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
            "SELECT id, promotion_id, reviewer, state, at, body::text AS body FROM reviews \
             WHERE promotion_id = $1 ORDER BY id",
        )
        .bind(promotion_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("list reviews"))?;
        rows.iter().map(review_from_row).collect()
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
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
        let text: Option<String> = sqlx::query_scalar("SELECT value::text FROM kv WHERE key = $1")
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
        if let Some(current) = leadership.holder.clone() {
            if current != holder {
                return Ok(false);
            }
            if let Some(conn) = leadership.conn.as_mut() {
                if PostgresStore::still_leading(conn).await {
                    return Ok(true);
                }
            }
            // The session is gone (or no longer holds the lock): so is
            // leadership. Another replica may already have taken over; the
            // next call tries again on a fresh connection.
            *leadership = Leadership::default();
            return Ok(false);
        }
        let conn = leadership.conn.take();
        match self.try_take_lock(holder, conn).await {
            Ok((taken, conn)) => {
                leadership.conn = Some(conn);
                if taken {
                    leadership.holder = Some(holder.to_string());
                }
                Ok(taken)
            }
            // The connection, if any, was dropped with the error; the next
            // call starts from a fresh one.
            Err(e) => Err(e),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error("ping"))?;
        Ok(())
    }
}
