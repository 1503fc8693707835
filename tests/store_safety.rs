//! A store is never silently replaced, and its audit log's end is anchored
//! outside the database. Against the real binary and real databases:
//!
//! - an initialised store truncated to zero bytes, or one without
//!   Tollgate's schema, is refused at start with what to do; a store is
//!   created on a first run where there is none, or with `--init`, which
//!   refuses a store that holds state;
//! - events deleted from the end of the audit log fail `tollgate audit
//!   verify`, which names the missing range, and the next start; an anchor
//!   one commit behind (the crash window) still verifies;
//! - a stored desired state that is not JSON, or not a desired state, is
//!   named by its key when the controller starts.
//!
//! The PostgreSQL half runs when `TOLLGATE_TEST_POSTGRES_URL` is set
//! (`bash scripts/postgres.sh`), each test in a schema of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tempfile::TempDir;

use tollgate::audit::{Action, AuditChain, AuditEvent};
use tollgate::cli::quickstart::{write_controller_config, write_sample_repo, HISTORY};
use tollgate::store::{self, AnchorError, AuditRow, OpenOptions, Store, StoreError, Transition};

const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The sample repo and a controller config for it, on SQLite in the temp
/// dir or on `store_url`, with `extra` config lines appended.
struct Rig {
    dir: TempDir,
    config: PathBuf,
    server: String,
    /// The operator's token, and an approver's.
    ops: String,
    ios1: String,
}

impl Rig {
    fn new(store_url: Option<&str>, extra: &str) -> Rig {
        let dir = TempDir::new().unwrap();
        let repo = dir.path().join("repo");
        write_sample_repo(&repo, HISTORY).unwrap();
        let sample = write_controller_config(dir.path(), &repo).unwrap();
        let mut text = std::fs::read_to_string(&sample.config).unwrap();
        if let Some(url) = store_url {
            let line = text.lines().find(|l| l.starts_with("store:")).unwrap().to_string();
            text = text.replace(&line, &format!("store: \"{url}\""));
        }
        text.push_str(extra);
        std::fs::write(&sample.config, text).unwrap();
        Rig {
            config: sample.config.clone(),
            server: sample.server.clone(),
            ops: sample.token("ops").unwrap().to_string(),
            ios1: sample.token("ios1").unwrap().to_string(),
            dir,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    fn anchor(&self) -> PathBuf {
        self.dir.path().join("state.db.audit-head")
    }

    fn run_args(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["run", "--config", self.config.to_str().unwrap()])
            .args(extra)
            .env("NO_COLOR", "1");
        cmd
    }

    /// `tollgate run`, expected to refuse to start: its exit and stderr.
    fn run_refused(&self, extra: &[&str]) -> (i32, String) {
        let mut child = self
            .run_args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status.code().unwrap_or(-1), err);
            }
            if Instant::now() > deadline || self.ready() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tollgate run {extra:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tollgate run` until ready (the first pass done).
    fn start(&self, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.path().join("run.log")).unwrap();
        let mut child = self.run_args(extra).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.ready() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the controller exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the controller never got ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    fn ready(&self) -> bool {
        ureq::get(&format!("{}/readyz", self.server)).call().is_ok()
    }

    /// SIGTERM, then waits: a clean stop.
    fn stop(&self, mut child: Child) {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "the controller did not stop cleanly: {}", self.log());
    }

    fn audit(&self) -> Vec<Value> {
        let mut r = ureq::get(&format!("{}/v1/audit", self.server))
            .header("Authorization", &format!("Bearer {}", self.ops))
            .call()
            .unwrap();
        serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap())
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until the log holds `n` events; returns them.
    fn audit_reaches(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.audit();
            if events.len() >= n {
                return events;
            }
            assert!(Instant::now() < deadline, "the log stays at {} events", events.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn tollgate(&self, args: &[&str], token: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .args(["--server", &self.server, "--token", token])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// `tollgate audit verify -o json`: exit code and verdict.
    fn verify(&self) -> (i32, Value) {
        let out = self.tollgate(&["-o", "json", "audit", "verify"], &self.ops);
        let text = String::from_utf8(out.stdout).unwrap();
        let verdict = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), verdict)
    }

    /// The sample plans promotion 1 and waits for approvals; each request
    /// for changes is one more audit event and moves nothing.
    fn request_changes(&self, times: usize) {
        for _ in 0..times {
            let out = self.tollgate(&["approve", "1", "--request-changes"], &self.ios1);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn anchor_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Deletes audit events above `keep` in a SQLite store, past its
/// append-only trigger, as someone with the file would.
fn delete_sqlite_tail(db: &Path, keep: i64) {
    runtime().block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        conn.execute("DROP TRIGGER audit_no_delete").await.unwrap();
        sqlx::query("DELETE FROM audit WHERE seq > ?")
            .bind(keep)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.execute(
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit \
             BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE rejected'); END",
        )
        .await
        .unwrap();
    });
}

#[test]
fn a_store_truncated_to_zero_bytes_is_refused_and_init_starts_a_new_one_only_when_asked() {
    let rig = Rig::new(None, "");
    // First run, no file: the store is created, with its anchor.
    let child = rig.start(&[]);
    let head = rig.audit_reaches(2).len();
    rig.stop(child);
    assert!(rig.db().exists());
    assert_eq!(anchor_file(&rig.anchor())["seq"], head);

    std::fs::File::create(rig.db()).unwrap().set_len(0).unwrap();
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    let db = rig.db().display().to_string();
    assert!(err.contains(&db) && err.contains("is an empty file (0 bytes)"), "{err}");
    // The anchor outside the database shows a store was initialised here.
    assert!(err.contains(&rig.anchor().display().to_string()), "{err}");
    assert!(
        err.contains(&format!("records its audit log up to seq {head}")),
        "{err}"
    );
    assert!(
        err.contains("restore it from a backup") || err.contains("Restore it from a backup"),
        "{err}"
    );
    // --init does not start a new store over that evidence either.
    let (code, err) = rig.run_refused(&["--init"]);
    assert_ne!(code, 0);
    assert!(err.contains("move the anchor aside"), "{err}");
    assert_eq!(std::fs::metadata(rig.db()).unwrap().len(), 0, "the file was touched");

    // Without the anchor, the empty file is still no new store...
    std::fs::rename(rig.anchor(), rig.dir.path().join("anchor.kept")).unwrap();
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains(&db) && err.contains("is an empty file (0 bytes)"), "{err}");
    assert!(err.contains("tollgate run --init"), "{err}");
    // ...until --init makes one: the log starts again, and so does the anchor.
    let child = rig.start(&["--init"]);
    let events = rig.audit_reaches(2);
    assert_eq!(events[0]["seq"], 1);
    rig.stop(child);
    assert_eq!(anchor_file(&rig.anchor())["seq"], events.len());
    // And a restart opens it as it is.
    let child = rig.start(&[]);
    assert_eq!(rig.audit().len(), events.len());
    rig.stop(child);
}

#[test]
fn init_refuses_a_store_that_holds_state_and_leaves_it_as_it_was() {
    let rig = Rig::new(None, "");
    let child = rig.start(&[]);
    rig.audit_reaches(2);
    rig.request_changes(1);
    let before = rig.audit();
    rig.stop(child);
    let anchor = std::fs::read(rig.anchor()).unwrap();

    let (code, err) = rig.run_refused(&["--init"]);
    assert_ne!(code, 0);
    assert!(err.contains("refusing --init"), "{err}");
    assert!(err.contains(&rig.db().display().to_string()), "{err}");
    assert!(
        err.contains(&format!("audit log up to seq {}, 1 promotions", before.len())),
        "{err}"
    );
    assert!(err.contains("start without --init"), "{err}");
    assert_eq!(std::fs::read(rig.anchor()).unwrap(), anchor);

    let child = rig.start(&[]);
    assert_eq!(rig.audit(), before);
    rig.stop(child);
}

#[test]
fn a_sqlite_file_without_tollgate_schema_is_refused_unless_init() {
    let rig = Rig::new(None, "");
    runtime().block_on(async {
        let url = format!("sqlite://{}?mode=rwc", rig.db().display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("CREATE TABLE notes (body TEXT)").await.unwrap();
    });
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("holds tables (notes) but no Tollgate schema"), "{err}");
    assert!(err.contains("tollgate run --init"), "{err}");
    let child = rig.start(&["--init"]);
    assert!(!rig.audit_reaches(2).is_empty());
    rig.stop(child);
}

#[test]
fn a_deleted_audit_tail_fails_verify_names_the_range_and_stops_the_next_start() {
    let rig = Rig::new(None, "");
    let child = rig.start(&[]);
    rig.audit_reaches(2);
    rig.request_changes(3);
    let events = rig.audit_reaches(5);
    assert_eq!(events.len(), 5, "{events:?}");

    // Untouched: intact, and it holds the anchor.
    let (code, verdict) = rig.verify();
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["intact"], true);
    assert_eq!(verdict["anchor"]["seq"], 5);
    assert_eq!(verdict["anchor"]["hash"], events[4]["hash"]);
    let metrics = ureq::get(&format!("{}/metrics", rig.server))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("tollgate_audit_anchor_seq 5"), "{metrics}");
    assert!(metrics.contains("tollgate_audit_head_seq 5"), "{metrics}");

    // The last two deleted in the database: what is left is a valid
    // chain, but not one that holds the anchored event.
    delete_sqlite_tail(&rig.db(), 3);
    let (code, verdict) = rig.verify();
    assert_eq!(code, 1, "{verdict}");
    assert_eq!(verdict["intact"], false);
    let error = verdict["error"].as_str().unwrap();
    assert!(error.contains("seq 4 to 5 are missing"), "{error}");
    assert!(error.contains("anchor"), "{error}");
    // A plain-text verdict says the same.
    let out = rig.tollgate(&["audit", "verify"], &rig.ops);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("audit log BROKEN:") && text.contains("seq 4 to 5 are missing"),
        "{text}"
    );

    // The controller carries on appending after what is left; the anchor
    // does not follow it onto the shortened chain.
    rig.request_changes(1);
    assert_eq!(rig.audit().len(), 4);
    assert_eq!(anchor_file(&rig.anchor())["seq"], 5);
    let (code, verdict) = rig.verify();
    assert_eq!(code, 1, "{verdict}");
    assert!(verdict["error"].as_str().unwrap().contains("seq 5"), "{verdict}");
    rig.stop(child);

    // Restarting is refused, naming the store, the anchor and what is gone.
    delete_sqlite_tail(&rig.db(), 3);
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains(&rig.anchor().display().to_string()), "{err}");
    assert!(
        err.contains("ends at seq 3") && err.contains("seq 4 to 5 were deleted from its end"),
        "{err}"
    );
}

#[test]
fn an_anchor_one_commit_behind_still_verifies_and_catches_up() {
    let rig = Rig::new(None, "");
    let child = rig.start(&[]);
    rig.audit_reaches(2);
    rig.request_changes(2);
    let events = rig.audit_reaches(4);
    rig.stop(child);
    // The crash window: the last commit landed, its anchor write did not.
    let behind = json!({"seq": 3, "hash": events[2]["hash"]});
    std::fs::write(rig.anchor(), format!("{behind}\n")).unwrap();

    let child = rig.start(&[]);
    let (code, verdict) = rig.verify();
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["last_seq"], 4);
    // Starting brought the anchor up to the head.
    assert_eq!(anchor_file(&rig.anchor())["seq"], 4);
    assert_eq!(anchor_file(&rig.anchor())["hash"], events[3]["hash"]);
    // An anchor the server cannot read is no anchor-free log: verify fails.
    std::fs::write(rig.anchor(), "{\"seq\": 4}\n").unwrap();
    let (code, verdict) = rig.verify();
    assert_eq!(code, 1, "{verdict}");
    let error = verdict["error"].as_str().unwrap();
    assert!(error.contains("has an audit anchor but cannot read it"), "{error}");
    assert!(error.contains(&rig.anchor().display().to_string()), "{error}");
    std::fs::remove_file(rig.anchor()).unwrap();
    let (code, verdict) = rig.verify();
    assert_eq!(code, 1, "{verdict}");
    assert!(
        verdict["error"].as_str().unwrap().contains("it is missing"),
        "{verdict}"
    );
    rig.stop(child);

    // An anchor naming an event the log has with another hash is refused.
    let wrong = json!({"seq": 3, "hash": events[1]["hash"]});
    std::fs::write(rig.anchor(), format!("{wrong}\n")).unwrap();
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("does not hold the event the audit anchor"), "{err}");
    assert!(
        err.contains(&format!(
            "its event seq 3 has hash {}",
            events[2]["hash"].as_str().unwrap()
        )),
        "{err}"
    );
}

#[test]
fn a_stored_desired_state_that_is_not_json_is_named_by_its_key_at_start() {
    let rig = Rig::new(None, "");
    let child = rig.start(&[]);
    rig.audit_reaches(2);
    rig.stop(child);
    let set = |value: &str| {
        runtime().block_on(async {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", rig.db().display()))
                .await
                .unwrap();
            sqlx::query("INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES ('desired/canary', ?, 'x')")
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        })
    };
    set("{not json");
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("\"desired/canary\""), "{err}");
    assert!(err.contains(&rig.db().display().to_string()), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    set(r#"{"ring": 7}"#);
    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("stored desired state desired/canary is not a desired state"),
        "{err}"
    );
}

// ---- The library: what opening does with what it finds, on both databases.

/// A fresh PostgreSQL schema, dropped at the end; None without a server.
struct PgSchema {
    base: String,
    schema: String,
}

impl PgSchema {
    fn new() -> Option<PgSchema> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{POSTGRES_URL_VAR} is not set, and CI is: the PostgreSQL store tests must run in CI"
            );
            eprintln!("notice: {POSTGRES_URL_VAR} is not set; skipping the PostgreSQL half");
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "tollgate_safety_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let pg = PgSchema { base, schema };
        pg.admin(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            pg.schema
        ));
        Some(pg)
    }

    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.base, self.schema)
    }

    fn admin(&self, sql: &str) {
        runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.base).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
        });
    }

    fn in_schema(&self, sql: &str) {
        runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
        });
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        self.admin(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

const INIT: OpenOptions = OpenOptions {
    init: true,
    existed: None,
};

fn opened(url: &str, options: &OpenOptions) -> Result<bool, StoreError> {
    runtime().block_on(async { store::open_with(url, options).await.map(|o| o.created) })
}

#[test]
fn sqlite_opening_creates_only_where_there_is_no_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}", path.display());
    let first_run = OpenOptions::default();

    std::fs::write(&path, b"").unwrap();
    let err = opened(&url, &first_run).unwrap_err();
    assert!(matches!(err, StoreError::NotInitialised { .. }), "{err:?}");
    assert!(err.to_string().contains("is an empty file (0 bytes)"), "{err}");
    let existed = OpenOptions {
        init: true,
        existed: Some("the audit anchor X records seq 9".into()),
    };
    let err = opened(&url, &existed).unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err:?}");
    assert!(err.to_string().contains("the audit anchor X records seq 9"), "{err}");

    std::fs::write(&path, b"this is not a database, just some bytes of text").unwrap();
    for options in [&first_run, &INIT] {
        let err = opened(&url, options).unwrap_err();
        assert!(matches!(err, StoreError::Unusable { .. }), "{err:?}");
        assert!(err.to_string().contains("is not an SQLite database"), "{err}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is not a database, just some bytes of text"
    );

    std::fs::remove_file(&path).unwrap();
    assert!(opened(&url, &first_run).unwrap(), "no file: created");
    assert!(!opened(&url, &first_run).unwrap(), "then opened");
    let err = opened(&url, &INIT).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyInitialised { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("audit log up to seq 0, 0 promotions, 0 kv entries"),
        "{err}"
    );

    std::fs::write(&path, b"").unwrap();
    assert!(opened(&url, &INIT).unwrap(), "--init in an empty file");
    assert!(!opened(&url, &first_run).unwrap());
}

#[test]
fn postgres_opening_creates_in_an_empty_schema_and_init_only_where_no_tollgate_schema() {
    let Some(pg) = PgSchema::new() else { return };
    let url = pg.url();
    let first_run = OpenOptions::default();
    // Somebody's table in the schema: not an empty schema any more.
    pg.in_schema("CREATE TABLE notes (body TEXT)");
    let err = opened(&url, &first_run).unwrap_err();
    assert!(matches!(err, StoreError::NotInitialised { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("holds tables ({}.notes) but no Tollgate schema", pg.schema)),
        "{err}"
    );
    assert!(opened(&url, &INIT).unwrap(), "--init beside other tables");
    assert!(!opened(&url, &first_run).unwrap());
    let err = opened(&url, &INIT).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyInitialised { .. }), "{err:?}");

    // An empty schema is a store never initialised: a first run creates it,
    // unless something outside it shows a store was there.
    pg.in_schema(
        "DROP TABLE notes; DROP TABLE audit, reviews, promotions, kv, _sqlx_migrations CASCADE; \
         DROP FUNCTION audit_reject_change() CASCADE",
    );
    let existed = OpenOptions {
        init: false,
        existed: Some("the audit anchor X records seq 9".into()),
    };
    let err = opened(&url, &existed).unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err:?}");
    assert!(opened(&url, &first_run).unwrap());

    // Tollgate's tables without its migration record: damaged, never new.
    pg.in_schema("DROP TABLE _sqlx_migrations");
    for options in [&first_run, &INIT] {
        let err = opened(&url, options).unwrap_err();
        assert!(matches!(err, StoreError::Unusable { .. }), "{err:?}");
        assert!(err.to_string().contains("no record of its migrations"), "{err}");
    }
}

/// `n` chained audit rows after `chain`'s head.
fn rows(chain: &mut AuditChain, n: usize) -> Vec<AuditRow> {
    (0..n)
        .map(|i| {
            let e: AuditEvent = chain.append(chrono::Utc::now(), "test", Action::Adopted, "s", json!({"i": i}));
            AuditRow {
                seq: e.seq as i64,
                at: e.at,
                actor: e.actor,
                action: e.action.as_str().to_string(),
                subject: e.subject,
                details: e.details,
                prev: e.prev,
                hash: e.hash,
            }
        })
        .collect()
}

async fn anchored(s: &dyn Store) -> tollgate::store::AuditAnchor {
    s.audit_anchor().await.unwrap().unwrap()
}

/// On `url`: the anchor follows every audit commit, stays put when the
/// tail is cut under a running store, and the next open refuses the store.
async fn anchor_follows_the_log_and_not_a_cut_one(url: &str, delete_tail: impl Fn(i64)) {
    let dir = TempDir::new().unwrap();
    let anchor = dir.path().join("anchor");
    let options = OpenOptions::default();
    let s = store::open_anchored(url, &options, Some(&anchor)).await.unwrap();
    assert_eq!(anchored(s.as_ref()).await.seq, 0);
    let mut chain = AuditChain::genesis();
    let commit = |audit: Vec<AuditRow>| Transition {
        audit,
        ..Transition::default()
    };
    s.commit(commit(rows(&mut chain, 3))).await.unwrap();
    s.commit(commit(rows(&mut chain, 2))).await.unwrap();
    let five = anchored(s.as_ref()).await;
    assert_eq!(five.seq, 5);
    assert_eq!(Some(five.hash.clone()), s.audit_head().await.unwrap().map(|h| h.hash));
    // Commits without audit rows leave it alone.
    s.commit(Transition {
        kv: vec![("k".into(), Some(json!(1)))],
        ..Transition::default()
    })
    .await
    .unwrap();
    assert_eq!(anchored(s.as_ref()).await, five);

    delete_tail(2);
    let head = s.audit_head().await.unwrap().unwrap();
    let mut cut = AuditChain::from_head(tollgate::audit::ChainHead {
        seq: head.seq as u64,
        hash: head.hash,
    });
    s.commit(commit(rows(&mut cut, 4))).await.unwrap();
    assert_eq!(anchored(s.as_ref()).await, five, "the anchor moved onto the cut chain");
    drop(s);

    let err = store::open_anchored(url, &options, Some(&anchor)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Anchor(AnchorError::Rewritten { seq: 5, .. })),
        "{err:?}"
    );
}

#[test]
fn the_sqlite_anchor_follows_the_log_and_not_a_cut_one() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("state.db");
    let url = format!("sqlite://{}", db.display());
    runtime().block_on(anchor_follows_the_log_and_not_a_cut_one(&url, |keep| {
        // A thread of its own: this runs inside the test's runtime.
        let db = db.clone();
        std::thread::spawn(move || delete_sqlite_tail(&db, keep))
            .join()
            .unwrap();
    }));
}

#[test]
fn the_postgres_anchor_follows_the_log_and_not_a_cut_one() {
    let Some(pg) = PgSchema::new() else { return };
    let url = pg.url();
    runtime().block_on(anchor_follows_the_log_and_not_a_cut_one(&url, |keep| {
        let url = pg.url();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_update_or_delete")
                    .await
                    .unwrap();
                sqlx::query("DELETE FROM audit WHERE seq > $1")
                    .bind(keep)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.execute("ALTER TABLE audit ENABLE TRIGGER audit_no_update_or_delete")
                    .await
                    .unwrap();
            })
        })
        .join()
        .unwrap();
    }));
}

#[test]
fn postgres_controller_first_run_init_and_an_anchored_tail() {
    let Some(pg) = PgSchema::new() else { return };
    let anchor_dir = TempDir::new().unwrap();
    let anchor = anchor_dir.path().join("tollgate.audit-head");
    let rig = Rig::new(Some(&pg.url()), &format!("auditAnchor: \"{}\"\n", anchor.display()));
    // The schema is empty: the first run creates the store.
    let child = rig.start(&[]);
    rig.audit_reaches(2);
    rig.request_changes(2);
    let events = rig.audit_reaches(4);
    let (code, verdict) = rig.verify();
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["anchor"]["seq"], 4);

    pg.in_schema(
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update_or_delete; DELETE FROM audit WHERE seq > 1; \
         ALTER TABLE audit ENABLE TRIGGER audit_no_update_or_delete",
    );
    let (code, verdict) = rig.verify();
    assert_eq!(code, 1, "{verdict}");
    assert!(
        verdict["error"].as_str().unwrap().contains("seq 2 to 4 are missing"),
        "{verdict}"
    );
    rig.stop(child);

    let (code, err) = rig.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("seq 2 to 4 were deleted from its end"), "{err}");
    assert!(err.contains(&anchor.display().to_string()), "{err}");
    let (code, err) = rig.run_refused(&["--init"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing --init") && err.contains("already initialised"),
        "{err}"
    );
    assert_eq!(events.len(), 4);
}
