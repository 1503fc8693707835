//! The store against real databases: every test runs on SQLite (a file in a
//! temp dir) and on PostgreSQL (a fresh schema per test, so tests run in
//! parallel), through the same `Arc<dyn Store>`.
//!
//! PostgreSQL comes from `TOLLGATE_TEST_POSTGRES_URL`:
//!
//! ```sh
//! TOLLGATE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)" cargo test --test store
//! ```
//!
//! Without it the PostgreSQL half is skipped with a notice, except under CI
//! (`CI` set), where it fails: CI must never pass without PostgreSQL.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tollgate::store::{
    self, AuditRow, Backend, NewReview, PromotionFilter, PromotionRecord, PromotionWrite, ReviewRecord, Store,
    StoreError, Transition, DEFAULT_SOURCE,
};

const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// One database for one test; the PostgreSQL schema is dropped with it.
struct Env {
    backend: Backend,
    url: String,
    _dir: Option<TempDir>,
    /// Server URL without the schema option, and the schema.
    postgres: Option<(String, String)>,
}

impl Env {
    async fn sqlite() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        Env {
            backend: Backend::Sqlite,
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    async fn postgres() -> Option<Env> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{POSTGRES_URL_VAR} is not set, and CI is: the PostgreSQL store tests must run in CI. \
                     Start a server with `bash scripts/postgres.sh` and export its URL as {POSTGRES_URL_VAR}."
                );
            }
            // Straight to stderr, past the test harness's capture, once.
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "notice: {POSTGRES_URL_VAR} is not set; skipping the PostgreSQL store tests. \
                     Run: {POSTGRES_URL_VAR}=\"$(bash scripts/postgres.sh)\" cargo test --test store"
                );
            });
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "tollgate_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            Utc::now().timestamp_subsec_micros()
        );
        let mut admin = PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Some(Env {
            backend: Backend::Postgres,
            url,
            _dir: None,
            postgres: Some((base, schema)),
        })
    }

    async fn open(&self) -> Arc<dyn Store> {
        let store = store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e:?}", self.backend));
        assert_eq!(store.backend(), self.backend);
        store
    }

    /// Runs `sql` on a connection of its own, as another client would.
    async fn raw_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await?;
                Ok(conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?.rows_affected())
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await?;
                Ok(conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?.rows_affected())
            }
        }
    }

    async fn raw_count(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some((base, schema)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any async context we could borrow, so the cleanup
        // gets a runtime of its own, on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&base).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs each listed test on both backends: `sqlite::NAME` and `postgres::NAME`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(env) = super::Env::postgres().await {
                        super::$name(env).await;
                    }
                }
            )*
        }
    };
}

backend_tests!(
    migrations_are_idempotent_on_reopen,
    data_survives_reopen,
    failed_transition_writes_nothing,
    concurrent_updates_conflict,
    concurrent_audit_appends_conflict,
    audit_is_append_only_for_every_client,
    audit_seq_continues_exactly,
    audit_rows_round_trip_exactly,
    kv_upsert_delete_and_prefix,
    promotions_filter_and_paginate,
    promotion_ids_reserved_and_explicit,
    promotion_updates_bump_version,
    reviews_belong_to_promotions,
    one_leader_and_takeover_after_drop,
    device_report_texts_read_back_as_the_same_reports,
);

fn at(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_795_000_000_000 + millis).unwrap()
}

/// Audit rows `from..=to`, chained by stand-in hashes (the store does not
/// compute hashes, only checks the links).
fn audit_rows(from: i64, to: i64) -> Vec<AuditRow> {
    (from..=to)
        .map(|seq| AuditRow {
            seq,
            at: at(seq),
            actor: "controller".to_string(),
            action: "promotion.advanced".to_string(),
            subject: format!("promotion/{seq}"),
            details: json!({"seq": seq, "ring": "canary"}),
            prev: if seq == 1 {
                "genesis".to_string()
            } else {
                format!("h{}", seq - 1)
            },
            hash: format!("h{seq}"),
        })
        .collect()
}

fn audit_only(rows: Vec<AuditRow>) -> Transition {
    Transition {
        audit: rows,
        ..Transition::default()
    }
}

fn review(promotion_id: i64, reviewer: &str) -> NewReview {
    NewReview {
        promotion_id,
        reviewer: reviewer.to_string(),
        state: "approved".to_string(),
        at: at(7),
        body: json!({"digest": "sha256:ab", "groups": ["mdm-security"]}),
    }
}

/// Everything a store holds, to compare before and after.
#[derive(Debug, PartialEq)]
struct Snapshot {
    promotions: Vec<PromotionRecord>,
    reviews: Vec<ReviewRecord>,
    audit: Vec<AuditRow>,
    kv: Vec<(String, Value)>,
}

async fn snapshot(store: &dyn Store) -> Snapshot {
    let promotions = store
        .promotions(PromotionFilter {
            limit: 10_000,
            ..PromotionFilter::default()
        })
        .await
        .unwrap();
    let mut reviews = Vec::new();
    for promotion in &promotions {
        reviews.extend(store.reviews(promotion.id).await.unwrap());
    }
    Snapshot {
        promotions,
        reviews,
        audit: store.audit_after(0, 10_000).await.unwrap(),
        kv: store.kv_prefix("").await.unwrap(),
    }
}

/// A promotion, a review, two audit rows and two kv entries.
async fn seed(store: &dyn Store) -> PromotionRecord {
    let result = store
        .commit(Transition {
            promotions: vec![PromotionWrite::insert(
                "a".repeat(40),
                "change",
                "pending_approval",
                json!({"tier": 2}),
            )],
            audit: audit_rows(1, 2),
            kv: vec![
                ("ring/canary/desired".to_string(), Some(json!({"revision": "r1"}))),
                ("source/status".to_string(), Some(json!("ok"))),
            ],
            ..Transition::default()
        })
        .await
        .unwrap();
    let id = result.promotions[0].id;
    store
        .commit(Transition {
            reviews: vec![review(id, "dana")],
            ..Transition::default()
        })
        .await
        .unwrap();
    store.promotion(id).await.unwrap().unwrap()
}

async fn migrations_are_idempotent_on_reopen(env: Env) {
    let first = env.open().await;
    seed(first.as_ref()).await;
    let before = snapshot(first.as_ref()).await;
    let applied = env.raw_count("SELECT COUNT(*) FROM _sqlx_migrations").await;
    assert!(applied >= 1);
    // Two more handles while the first is open, then one after all closed.
    let (second, third) = tokio::join!(env.open(), env.open());
    assert_eq!(snapshot(second.as_ref()).await, before);
    drop((first, second, third));
    let reopened = env.open().await;
    assert_eq!(snapshot(reopened.as_ref()).await, before);
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM _sqlx_migrations").await, applied);
}

async fn data_survives_reopen(env: Env) {
    let store = env.open().await;
    let promotion = seed(store.as_ref()).await;
    let before = snapshot(store.as_ref()).await;
    drop(store);
    let store = env.open().await;
    assert_eq!(snapshot(store.as_ref()).await, before);
    assert_eq!(store.promotion(promotion.id).await.unwrap(), Some(promotion));
    assert_eq!(store.audit_head().await.unwrap().unwrap().seq, 2);
    store.ping().await.unwrap();
}

async fn failed_transition_writes_nothing(env: Env) {
    let store = env.open().await;
    let promotion = seed(store.as_ref()).await;
    let before = snapshot(store.as_ref()).await;

    // Everything valid but one part; each must leave the store untouched.
    let valid = || Transition {
        promotions: vec![
            PromotionWrite::insert("b".repeat(40), "change", "pending_approval", json!({})),
            PromotionWrite::update(&promotion, "approved", json!({"tier": 2, "approved": true})),
        ],
        reviews: vec![review(promotion.id, "eli")],
        audit: audit_rows(3, 4),
        kv: vec![
            ("ring/canary/desired".to_string(), None),
            ("ring/pilot/desired".to_string(), Some(json!({"revision": "r2"}))),
        ],
        ..Transition::default()
    };

    let mut stale = valid();
    stale.promotions[1] = PromotionWrite::Update {
        id: promotion.id,
        expected_version: promotion.version + 1,
        phase: "approved".to_string(),
        body: json!({}),
    };
    let err = store.commit(stale).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { id, found: Some(1), .. } if id == promotion.id),
        "{err:?}"
    );
    assert!(err.is_conflict() && !err.is_transient());
    assert_eq!(snapshot(store.as_ref()).await, before);

    let mut missing = valid();
    missing.promotions.push(PromotionWrite::Update {
        id: 999_999,
        expected_version: 1,
        phase: "x".to_string(),
        body: json!({}),
    });
    let err = store.commit(missing).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                id: 999_999,
                found: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(store.as_ref()).await, before);

    let mut gap = valid();
    gap.audit = audit_rows(4, 5);
    let err = store.commit(gap).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AuditOutOfOrder { expected: 3, got: 4 }),
        "{err:?}"
    );
    assert_eq!(snapshot(store.as_ref()).await, before);

    let mut duplicate = valid();
    duplicate.audit = audit_rows(2, 3);
    let err = store.commit(duplicate).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AuditOutOfOrder { expected: 3, got: 2 }),
        "{err:?}"
    );
    assert_eq!(snapshot(store.as_ref()).await, before);

    let mut unchained = valid();
    unchained.audit[0].prev = "not-h2".to_string();
    let err = store.commit(unchained).await.unwrap_err();
    assert!(matches!(err, StoreError::AuditChainBroken { seq: 3, .. }), "{err:?}");
    assert_eq!(snapshot(store.as_ref()).await, before);

    let mut orphan = valid();
    orphan.reviews.push(review(424_242, "mallory"));
    let err = store.commit(orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownPromotion { id: 424_242 }), "{err:?}");
    assert_eq!(snapshot(store.as_ref()).await, before);

    // The store is still usable, and the valid transition lands whole.
    let result = store.commit(valid()).await.unwrap();
    assert_eq!(result.promotions.len(), 2);
    assert_eq!(
        result.promotions[1],
        store::WrittenPromotion {
            id: promotion.id,
            version: 2
        }
    );
    assert_eq!(result.review_ids.len(), 1);
    let after = snapshot(store.as_ref()).await;
    assert_eq!(after.promotions.len(), 2);
    assert_eq!(after.reviews.len(), 2);
    assert_eq!(after.audit.len(), 4);
    assert_eq!(
        after.kv,
        vec![
            ("ring/pilot/desired".to_string(), json!({"revision": "r2"})),
            ("source/status".to_string(), json!("ok")),
        ]
    );
}

async fn concurrent_updates_conflict(env: Env) {
    let a = env.open().await;
    let b = env.open().await;
    let promotion = seed(a.as_ref()).await;
    let mut version = promotion.version;
    for round in 0..10 {
        let read_a = a.promotion(promotion.id).await.unwrap().unwrap();
        let read_b = b.promotion(promotion.id).await.unwrap().unwrap();
        assert_eq!(read_a.version, version);
        let write = |read: &PromotionRecord, who: &str| Transition {
            promotions: vec![PromotionWrite::update(
                read,
                format!("phase-{round}"),
                json!({"by": who}),
            )],
            kv: vec![(format!("written-by/{round}"), Some(json!(who)))],
            ..Transition::default()
        };
        let (result_a, result_b) = tokio::join!(a.commit(write(&read_a, "a")), b.commit(write(&read_b, "b")));
        let (winner, loser) = match (&result_a, &result_b) {
            (Ok(_), Err(e)) => ("a", e),
            (Err(e), Ok(_)) => ("b", e),
            other => panic!("round {round}: exactly one writer must win, got {other:?}"),
        };
        assert!(
            matches!(loser, StoreError::Conflict { found: Some(v), .. } if *v == version + 1),
            "{loser:?}"
        );
        version += 1;
        let stored = a.promotion(promotion.id).await.unwrap().unwrap();
        assert_eq!((stored.version, &stored.body), (version, &json!({"by": winner})));
        // The loser's kv write was rolled back with its promotion update.
        assert_eq!(
            b.kv_get(&format!("written-by/{round}")).await.unwrap(),
            Some(json!(winner))
        );
    }
}

async fn concurrent_audit_appends_conflict(env: Env) {
    let a = env.open().await;
    let b = env.open().await;
    a.commit(audit_only(audit_rows(1, 1))).await.unwrap();
    for seq in 2..12 {
        let (result_a, result_b) = tokio::join!(
            a.commit(Transition {
                audit: audit_rows(seq, seq),
                kv: vec![("audit-writer".to_string(), Some(json!("a")))],
                ..Transition::default()
            }),
            b.commit(Transition {
                audit: audit_rows(seq, seq),
                kv: vec![("audit-writer".to_string(), Some(json!("b")))],
                ..Transition::default()
            }),
        );
        let loser = match (&result_a, &result_b) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
            other => panic!("seq {seq}: exactly one writer must win, got {other:?}"),
        };
        assert!(
            matches!(loser, StoreError::AuditOutOfOrder { got, .. } if *got == seq),
            "{loser:?}"
        );
        assert!(loser.is_conflict());
        let winner = if result_a.is_ok() { "a" } else { "b" };
        assert_eq!(a.kv_get("audit-writer").await.unwrap(), Some(json!(winner)));
    }
    let log = b.audit_after(0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..12).collect::<Vec<_>>()
    );
}

async fn audit_is_append_only_for_every_client(env: Env) {
    let store = env.open().await;
    store.commit(audit_only(audit_rows(1, 3))).await.unwrap();
    let before = store.audit_after(0, 100).await.unwrap();

    let mut attempts = vec![
        "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
        "UPDATE audit SET seq = seq + 100",
        "DELETE FROM audit WHERE seq = 3",
        "DELETE FROM audit",
    ];
    if env.backend == Backend::Postgres {
        attempts.push("TRUNCATE audit");
    }
    for sql in attempts {
        let err = env.raw_execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.audit_after(0, 100).await.unwrap(), before);

    // Appending through another client still works: only changes are refused.
    let sql = match env.backend {
        Backend::Sqlite => {
            "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash) \
             VALUES (4, '2026-11-22T10:00:00.000000Z', 'x', 'y', 'z', '{}', 'h3', 'h4')"
        }
        Backend::Postgres => {
            "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash) \
             VALUES (4, '2026-11-22T10:00:00Z', 'x', 'y', 'z', '{}', 'h3', 'h4')"
        }
    };
    assert_eq!(env.raw_execute(sql).await.unwrap(), 1);
    assert_eq!(store.audit_head().await.unwrap().unwrap().seq, 4);
}

async fn audit_seq_continues_exactly(env: Env) {
    let store = env.open().await;
    assert_eq!(store.audit_head().await.unwrap(), None);
    assert!(store.audit_after(0, 10).await.unwrap().is_empty());

    // An empty log starts at seq 1.
    for (rows, expected, got) in [(audit_rows(2, 3), 1, 2), (audit_rows(0, 0), 1, 0)] {
        let err = store.commit(audit_only(rows)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AuditOutOfOrder { expected: e, got: g } if e == expected && g == got),
            "{err:?}"
        );
    }
    store.commit(audit_only(audit_rows(1, 3))).await.unwrap();
    store.commit(audit_only(audit_rows(4, 4))).await.unwrap();

    // Within one transition too: no gap, no repeat, each row chained.
    let mut gapped = audit_rows(5, 7);
    gapped.remove(1);
    let err = store.commit(audit_only(gapped)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AuditOutOfOrder { expected: 6, got: 7 }),
        "{err:?}"
    );
    let mut repeated = audit_rows(5, 5);
    repeated.push(repeated[0].clone());
    let err = store.commit(audit_only(repeated)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AuditOutOfOrder { expected: 6, got: 5 }),
        "{err:?}"
    );
    let mut unlinked = audit_rows(5, 6);
    unlinked[1].prev = "h4".to_string();
    let err = store.commit(audit_only(unlinked)).await.unwrap_err();
    assert!(matches!(err, StoreError::AuditChainBroken { seq: 6, .. }), "{err:?}");
    for (rows, expected, got) in [
        (audit_rows(6, 6), 5, 6),
        (audit_rows(4, 5), 5, 4),
        (audit_rows(1, 1), 5, 1),
    ] {
        let err = store.commit(audit_only(rows)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AuditOutOfOrder { expected: e, got: g } if e == expected && g == got),
            "{err:?}"
        );
    }

    let seqs = |rows: Vec<AuditRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.audit_after(0, 2).await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(store.audit_after(2, 10).await.unwrap()), vec![3, 4]);
    assert!(store.audit_after(4, 10).await.unwrap().is_empty());
    assert_eq!(store.audit_head().await.unwrap(), Some(audit_rows(4, 4).remove(0)));
}

async fn audit_rows_round_trip_exactly(env: Env) {
    let store = env.open().await;
    let mut rows = audit_rows(1, 2);
    // Whatever the audit module hashes must read back identically: key
    // order, nesting, unicode, escapes, big and fractional numbers.
    rows[0].details = json!({
        "z": [3, 2, 1],
        "a": {"nested": {"deep": [null, true, false]}},
        "unicode": "Grüße, 東京, 🚀",
        "escapes": "quote \" backslash \\ newline \n tab \t",
        "big": u64::MAX,
        "negative": i64::MIN,
        "fraction": 0.1,
        "whole_float": 2.0,
        "empty": {},
    });
    rows[1].at = Utc.timestamp_micros(1_795_000_000_123_456).unwrap();
    store.commit(audit_only(rows.clone())).await.unwrap();
    assert_eq!(store.audit_after(0, 10).await.unwrap(), rows);

    // A timestamp the store cannot keep exactly is refused, not truncated.
    let mut fine = audit_rows(3, 3);
    fine[0].prev = "h2".to_string();
    fine[0].at = Utc.timestamp_nanos(1_795_000_000_123_456_789);
    let err = store.commit(audit_only(fine)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.audit_head().await.unwrap().unwrap().seq, 2);
}

async fn kv_upsert_delete_and_prefix(env: Env) {
    let store = env.open().await;
    let set = |key: &str, value: Value| (key.to_string(), Some(value));
    store
        .commit(Transition {
            kv: vec![
                set("ring/pilot", json!({"revision": "r1"})),
                set("ring/canary", json!({"revision": "r1"})),
                set("ring/broad", json!(null)),
                set("ring", json!("exact key, not under ring/")),
                set("ring0", json!("sorts right after ring/")),
                set("pin/canary", json!({"hold": "r0"})),
                set("a%b/x", json!(1)),
                set("a_b/x", json!(2)),
                set("ümlaut/x", json!(3)),
            ],
            ..Transition::default()
        })
        .await
        .unwrap();
    let keys = |entries: Vec<(String, Value)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.kv_prefix("ring/").await.unwrap()),
        ["ring/broad", "ring/canary", "ring/pilot"]
    );
    assert_eq!(
        keys(store.kv_prefix("ring").await.unwrap()),
        ["ring", "ring/broad", "ring/canary", "ring/pilot", "ring0"]
    );
    // LIKE wildcards are plain characters here.
    assert_eq!(keys(store.kv_prefix("a%").await.unwrap()), ["a%b/x"]);
    assert_eq!(keys(store.kv_prefix("a_").await.unwrap()), ["a_b/x"]);
    assert_eq!(keys(store.kv_prefix("ü").await.unwrap()), ["ümlaut/x"]);
    assert!(store.kv_prefix("nothing/").await.unwrap().is_empty());
    assert_eq!(store.kv_prefix("").await.unwrap().len(), 9);
    // A stored JSON null is a value, not an absent key.
    assert_eq!(store.kv_get("ring/broad").await.unwrap(), Some(Value::Null));

    store
        .commit(Transition {
            kv: vec![
                set("ring/pilot", json!({"revision": "r2"})),
                ("ring/canary".to_string(), None),
                ("never/stored".to_string(), None),
                // Applied in order: the last write of a key wins.
                set("pin/canary", json!("first")),
                ("pin/canary".to_string(), None),
                set("pin/canary", json!("last")),
            ],
            ..Transition::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("ring/pilot").await.unwrap(),
        Some(json!({"revision": "r2"}))
    );
    assert_eq!(store.kv_get("ring/canary").await.unwrap(), None);
    assert_eq!(store.kv_get("never/stored").await.unwrap(), None);
    assert_eq!(store.kv_get("pin/canary").await.unwrap(), Some(json!("last")));
    assert_eq!(
        keys(store.kv_prefix("ring/").await.unwrap()),
        ["ring/broad", "ring/pilot"]
    );

    let err = store
        .commit(Transition {
            kv: vec![set("", json!(1))],
            ..Transition::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

async fn promotions_filter_and_paginate(env: Env) {
    let store = env.open().await;
    let phases = ["pending_approval", "soaking", "complete"];
    let writes = (0..25)
        .map(|i| PromotionWrite::insert(format!("rev{}", i % 4), "change", phases[i % 3], json!({"i": i})))
        .collect();
    let result = store
        .commit(Transition {
            promotions: writes,
            ..Transition::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = result.promotions.iter().map(|p| p.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow in insert order: {ids:?}");

    // Newest first, in pages.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .promotions(PromotionFilter {
                limit: 10,
                before_id,
                ..PromotionFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        before_id = page.last().map(|p| p.id);
        seen.extend(page.into_iter().map(|p| p.id));
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());

    let of_phases = store
        .promotions(PromotionFilter {
            phases: vec!["soaking".to_string(), "complete".to_string()],
            ..PromotionFilter::default()
        })
        .await
        .unwrap();
    let expected: Vec<i64> = ids
        .iter()
        .enumerate()
        .rev()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(of_phases.iter().map(|p| p.id).collect::<Vec<_>>(), expected);

    let filtered = store
        .promotions(PromotionFilter {
            source: Some(DEFAULT_SOURCE.to_string()),
            phases: vec!["pending_approval".to_string()],
            revision: Some("rev1".to_string()),
            before_id: Some(ids[20]),
            limit: 2,
        })
        .await
        .unwrap();
    // i % 3 == 0 and i % 4 == 1 and i < 20: i = 9; the next would be 21 (>= 20).
    assert_eq!(filtered.iter().map(|p| p.id).collect::<Vec<_>>(), vec![ids[9]]);
    assert_eq!(filtered[0].body, json!({"i": 9}));
    assert_eq!(
        (filtered[0].revision.as_str(), filtered[0].kind.as_str()),
        ("rev1", "change")
    );

    assert!(store
        .promotions(PromotionFilter {
            limit: 0,
            ..PromotionFilter::default()
        })
        .await
        .unwrap()
        .is_empty());
    let unknown_phase = PromotionFilter {
        phases: vec!["no-such-phase".to_string()],
        ..PromotionFilter::default()
    };
    assert!(store.promotions(unknown_phase).await.unwrap().is_empty());
    assert_eq!(store.promotion(ids[24] + 1000).await.unwrap(), None);

    // Each promotion belongs to one source; a filter by source sees only its own.
    let other = store
        .commit(Transition {
            promotions: vec![PromotionWrite::Insert {
                id: None,
                source: "ios-fleet".to_string(),
                revision: "rev1".to_string(),
                kind: "change".to_string(),
                phase: "soaking".to_string(),
                body: json!({"i": "other"}),
            }],
            ..Transition::default()
        })
        .await
        .unwrap()
        .promotions[0]
        .id;
    let of_source = |source: &str| PromotionFilter {
        source: Some(source.to_string()),
        limit: 100,
        ..PromotionFilter::default()
    };
    let theirs = store.promotions(of_source("ios-fleet")).await.unwrap();
    assert_eq!(theirs.iter().map(|p| p.id).collect::<Vec<_>>(), vec![other]);
    assert_eq!(theirs[0].source, "ios-fleet");
    assert_eq!(store.promotion(other).await.unwrap().unwrap().source, "ios-fleet");
    let ours = store.promotions(of_source(DEFAULT_SOURCE)).await.unwrap();
    assert_eq!(ours.len(), 25);
    assert!(ours.iter().all(|p| p.source == DEFAULT_SOURCE && p.id != other));
    let every = PromotionFilter {
        limit: 100,
        ..PromotionFilter::default()
    };
    assert_eq!(store.promotions(every).await.unwrap().len(), 26);
}

async fn promotion_ids_reserved_and_explicit(env: Env) {
    let store = env.open().await;
    let reserved = store.reserve_promotion_id().await.unwrap();
    // Store-assigned ids never reuse a reserved one.
    let assigned = store
        .commit(Transition {
            promotions: vec![PromotionWrite::insert("r", "change", "pending_approval", json!({}))],
            ..Transition::default()
        })
        .await
        .unwrap()
        .promotions[0]
        .id;
    assert!(assigned > reserved);

    let insert_with = |id: i64| Transition {
        promotions: vec![PromotionWrite::Insert {
            id: Some(id),
            source: DEFAULT_SOURCE.to_string(),
            revision: "r".to_string(),
            kind: "rollback".to_string(),
            phase: "pending_approval".to_string(),
            body: json!({}),
        }],
        audit: vec![AuditRow {
            subject: format!("promotion/{id}"),
            ..audit_rows(1, 1).remove(0)
        }],
        ..Transition::default()
    };
    let result = store.commit(insert_with(reserved)).await.unwrap();
    assert_eq!(
        result.promotions[0],
        store::WrittenPromotion {
            id: reserved,
            version: 1
        }
    );
    assert_eq!(store.promotion(reserved).await.unwrap().unwrap().kind, "rollback");
    assert_eq!(
        store.audit_head().await.unwrap().unwrap().subject,
        format!("promotion/{reserved}")
    );

    let err = store.commit(insert_with(reserved)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicatePromotion { id } if id == reserved),
        "{err:?}"
    );
    let err = store.commit(insert_with(assigned + 1000)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.audit_head().await.unwrap().unwrap().seq, 1);
}

async fn promotion_updates_bump_version(env: Env) {
    let store = env.open().await;
    let promotion = seed(store.as_ref()).await;
    assert_eq!(promotion.version, 1);
    assert_eq!(promotion.phase, "pending_approval");
    assert_eq!(promotion.body, json!({"tier": 2}));
    assert_eq!(promotion.created_at, promotion.updated_at);
    assert!((Utc::now() - promotion.created_at).num_seconds().abs() < 60);

    // An insert and updates of it in one transition apply in order.
    let result = store
        .commit(Transition {
            promotions: vec![
                PromotionWrite::update(&promotion, "approved", json!({"step": 1})),
                PromotionWrite::Update {
                    id: promotion.id,
                    expected_version: 2,
                    phase: "promoting".to_string(),
                    body: json!({"step": 2}),
                },
            ],
            ..Transition::default()
        })
        .await
        .unwrap();
    assert_eq!(
        result.promotions.iter().map(|p| p.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let stored = store.promotion(promotion.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.phase.as_str(), &stored.body),
        (3, "promoting", &json!({"step": 2}))
    );
    assert_eq!(
        (stored.revision, stored.kind, stored.created_at),
        (promotion.revision, promotion.kind, promotion.created_at)
    );
    assert!(stored.updated_at >= promotion.updated_at);
}

async fn reviews_belong_to_promotions(env: Env) {
    let store = env.open().await;
    let first = seed(store.as_ref()).await;
    let second = store
        .commit(Transition {
            promotions: vec![PromotionWrite::insert("c", "change", "pending_approval", json!({}))],
            ..Transition::default()
        })
        .await
        .unwrap()
        .promotions[0]
        .id;
    let result = store
        .commit(Transition {
            reviews: vec![review(second, "eli"), review(first.id, "fay"), review(second, "gus")],
            ..Transition::default()
        })
        .await
        .unwrap();
    assert_eq!(result.review_ids.len(), 3);
    let of_second = store.reviews(second).await.unwrap();
    assert_eq!(
        of_second.iter().map(|r| r.reviewer.as_str()).collect::<Vec<_>>(),
        ["eli", "gus"]
    );
    assert_eq!(
        of_second.iter().map(|r| r.id).collect::<Vec<_>>(),
        [result.review_ids[0], result.review_ids[2]]
    );
    let expected = review(second, "eli");
    let got = &of_second[0];
    assert_eq!(
        (got.promotion_id, &got.state, got.at, &got.body),
        (second, &expected.state, expected.at, &expected.body)
    );
    assert_eq!(
        store
            .reviews(first.id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.reviewer.as_str())
            .collect::<Vec<_>>(),
        ["dana", "fay"]
    );
    assert!(store.reviews(second + 1000).await.unwrap().is_empty());
}

async fn eventually_leads(store: &dyn Store, holder: &str) -> bool {
    for _ in 0..100 {
        if store.try_lead(holder).await.unwrap() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn one_leader_and_takeover_after_drop(env: Env) {
    let a = env.open().await;
    let b = env.open().await;
    assert!(a.try_lead("replica-a").await.unwrap());
    assert!(!b.try_lead("replica-b").await.unwrap());
    // Asking again changes nothing, and a store leads for one holder only.
    assert!(a.try_lead("replica-a").await.unwrap());
    assert!(!b.try_lead("replica-b").await.unwrap());
    assert!(!a.try_lead("replica-x").await.unwrap());

    drop(a);
    assert!(
        eventually_leads(b.as_ref(), "replica-b").await,
        "b did not take over after a was dropped"
    );
    let c = env.open().await;
    assert!(!c.try_lead("replica-c").await.unwrap());
    assert!(b.try_lead("replica-b").await.unwrap());
}

#[tokio::test]
async fn postgres_leadership_is_lost_with_its_connection() {
    let Some(env) = Env::postgres().await else { return };
    let a = env.open().await;
    let b = env.open().await;
    let holder_a = format!("a-{}", env.postgres.as_ref().unwrap().1);
    assert!(a.try_lead(&holder_a).await.unwrap());
    assert!(!b.try_lead("b").await.unwrap());

    // Cut a's lock session from the server side, as a network partition or a
    // failover would.
    let terminated = env
        .raw_count(&format!(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tollgate-leader:{holder_a}') AS t"
        ))
        .await;
    assert_eq!(terminated, 1);
    assert!(eventually_leads(b.as_ref(), "b").await, "b did not take over");
    assert!(
        !a.try_lead(&holder_a).await.unwrap(),
        "a must notice it lost leadership"
    );
    // a's other connections are unaffected.
    a.ping().await.unwrap();
    assert!(!a.try_lead(&holder_a).await.unwrap());
}

#[tokio::test]
async fn sqlite_in_memory_stores_are_private() {
    let a = store::open("sqlite::memory:").await.unwrap();
    let b = store::open("sqlite::memory:").await.unwrap();
    seed(a.as_ref()).await;
    assert_eq!(snapshot(a.as_ref()).await.promotions.len(), 1);
    assert!(snapshot(b.as_ref()).await.promotions.is_empty());
    assert!(a.try_lead("x").await.unwrap());
    assert!(b.try_lead("y").await.unwrap());
    a.ping().await.unwrap();
}

#[tokio::test]
async fn open_errors_are_classified() {
    let err = store::open("mysql://u:secret@h/db").await.unwrap_err();
    assert!(matches!(err, StoreError::Url { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");

    // Nothing listens on port 1: connection refused, which may heal.
    let err = store::open("postgres://u:secret@127.0.0.1:1/db").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Open {
                backend: Backend::Postgres,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");

    // A directory that does not exist will not appear by retrying.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("missing/state.db").display());
    let err = store::open(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Open {
                backend: Backend::Sqlite,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
}

/// Device rows are stored as the text the device sent (`JsonText`);
/// PostgreSQL gives back its `jsonb` rendering (keys reordered, numbers
/// and escapes rewritten), which must read back as the same report.
async fn device_report_texts_read_back_as_the_same_reports(env: Env) {
    use tollgate::catalog::Catalog;
    use tollgate::devices::report::{parse_reports, read_stored_report, BodyFormat};
    let now = Utc::now();
    let at = (now - chrono::Duration::minutes(1)).to_rfc3339();
    let digest = format!("sha256:{}", "c".repeat(64));
    let body = format!(
        concat!(
            r#"{{"settings": [{{"key": "passcode.min_length", "actual": 1.50e1, "state": "compliant"}},"#,
            r#" {{"key": "apps.blocked", "state": "noncompliant", "actual": {{"z": [1, 2e3, -0], "a\u00e9\"": null}}}}],"#,
            r#" "applied": [{{"status": "applied", "digest": "{digest}", "baseline": "corp-macos"}}],"#,
            r#" "checked_in_at": "{at}", "enrollment": "enrolled", "os": {{"version": "14.5"}},"#,
            r#" "device": {{"ownership": null, "groups": ["b", "a", "b"], "platform": "macos", "id": "d\u00e9v-1"}},"#,
            r#" "schema": "tollgate.device-report/v1"}}"#,
            "\n",
            r#"{{"schema":"tollgate.device-report/v1","device":{{"id":"dev-2","platform":"ios"}},"os":{{"version":"18.0"}},"#,
            r#""enrollment":"pending","checked_in_at":"{at}","applied":[],"settings":[]}}"#,
            "\n"
        ),
        digest = digest,
        at = at
    );
    let parsed = parse_reports(body.as_bytes(), BodyFormat::Ndjson, now, Catalog::builtin()).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    assert_eq!(parsed.reports.len(), 2);
    let store = env.open().await;
    let keys: Vec<String> = parsed
        .reports
        .iter()
        .map(|(_, r)| format!("device/{}", r.device.id))
        .collect();
    store
        .commit(Transition {
            kv_json: keys.iter().cloned().zip(parsed.texts.iter().cloned()).collect(),
            ..Transition::default()
        })
        .await
        .unwrap();
    let rows = store.kv_prefix_text("device/").await.unwrap();
    let read: Vec<_> = rows
        .iter()
        .map(|(key, text)| (key.clone(), read_stored_report(text, Catalog::builtin()).unwrap()))
        .collect();
    let mut expected: Vec<_> = keys
        .into_iter()
        .zip(parsed.reports.into_iter().map(|(_, r)| r))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    // Numbers keep their value, not their spelling: jsonb writes 2e3 as
    // 2000 and -0 as 0, which serde_json then reads as integers.
    let numbers_as_f64 = |mut list: Vec<(String, tollgate::devices::DeviceReport)>| {
        fn walk(v: &mut Value) {
            match v {
                Value::Number(n) => *v = json!(n.as_f64().unwrap() + 0.0),
                Value::Array(items) => items.iter_mut().for_each(walk),
                Value::Object(map) => map.values_mut().for_each(walk),
                _ => {}
            }
        }
        for (_, report) in &mut list {
            report
                .settings
                .iter_mut()
                .filter_map(|s| s.actual.as_mut())
                .for_each(walk);
        }
        list
    };
    assert_eq!(numbers_as_f64(read), numbers_as_f64(expected.clone()));
    assert_eq!(
        expected[1].1.settings[1].actual.as_ref().unwrap()["z"][1],
        json!(2000.0)
    );
    if env.backend == Backend::Sqlite {
        // SQLite keeps the text as it came.
        let mut texts: Vec<&str> = parsed.texts.iter().map(|t| t.as_str()).collect();
        texts.sort_by_key(|t| !t.contains("dev-2"));
        let stored: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(stored, texts);
    }
}
