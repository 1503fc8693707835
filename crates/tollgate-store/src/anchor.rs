//! The audit chain's head, recorded outside the database.
//!
//! A hash chain shows every edit, insertion and reordering of its events,
//! but not that events were cut off its end: what is left is again a valid
//! chain. So after every commit that appends audit rows, [`AnchoredStore`]
//! writes the new head's seq and hash to a file of its own (the *anchor*,
//! by default `<db>.audit-head` beside an SQLite store), and `tollgate audit
//! verify` requires the log to still hold that event.
//!
//! The anchor is written after the commit (write a temporary file, fsync,
//! rename, fsync the directory), so a crash between the two leaves it one
//! commit behind: it is a lower bound of the log, never ahead of it. The log
//! may hold more events than the anchor names, but it must hold the
//! anchored one, with that hash.
//!
//! The anchor only ever moves along the chain it anchors: before writing a
//! new head, the store checks that the committed rows continue from the
//! anchored event. When they do not (someone deleted the tail and the
//! controller appended after what was left), the anchor stays where it was,
//! so the deletion stays visible to `audit verify`, and the start-up check
//! refuses the store until it is restored.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{
    open_with, redact_url, AuditRow, Backend, CommitResult, OpenOptions, PromotionFilter, PromotionRecord,
    ReviewRecord, Store, StoreError, Transition,
};
use tollgate_core::audit::GENESIS_PREV;

/// A point of the audit chain: seq 0 and the genesis hash before the first
/// event, else one event's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAnchor {
    pub seq: i64,
    pub hash: String,
}

impl AuditAnchor {
    /// The head of an empty log.
    pub fn genesis() -> Self {
        AuditAnchor {
            seq: 0,
            hash: GENESIS_PREV.to_string(),
        }
    }

    fn of(row: &AuditRow) -> Self {
        AuditAnchor {
            seq: row.seq,
            hash: row.hash.clone(),
        }
    }

    /// The file's text: one JSON line.
    fn to_text(&self) -> String {
        let mut text = serde_json::to_string(self).expect("an anchor serialises");
        text.push('\n');
        text
    }

    fn parse(text: &[u8]) -> Result<AuditAnchor, String> {
        let anchor: AuditAnchor = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let hex = anchor.hash.strip_prefix("sha256:").unwrap_or_default();
        let well_formed = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if anchor.seq < 0 {
            return Err(format!("seq {} is negative", anchor.seq));
        }
        if anchor.seq == 0 && anchor.hash != GENESIS_PREV {
            return Err(format!("seq 0 must have the genesis hash {GENESIS_PREV}"));
        }
        if !well_formed {
            return Err(format!(
                "hash {:?} is not sha256: and 64 lowercase hex digits",
                anchor.hash
            ));
        }
        Ok(anchor)
    }
}

/// What is wrong with an audit anchor, or with the log it anchors.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error(
        "the audit anchor {path} is unreadable: {reason} (it holds one line: {{\"seq\":N,\"hash\":\"sha256:...\"}})"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot write the audit anchor {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the audit log in {target} ends at seq {head_seq}, but the audit anchor {path} records seq {anchor_seq}: \
         {} from its end. Restore the store from a backup; if it was restored from an older backup \
         on purpose, move the anchor aside (keep it as evidence) and start again",
        missing(*.head_seq, *.anchor_seq)
    )]
    Truncated {
        target: String,
        path: PathBuf,
        head_seq: i64,
        anchor_seq: i64,
    },
    #[error(
        "the audit log in {target} does not hold the event the audit anchor {path} records (seq {seq}, {expected}): \
         {found}, so the log was rewritten up to there. Restore the store from a backup; if it was restored from \
         another backup on purpose, move the anchor aside (keep it as evidence) and start again"
    )]
    Rewritten {
        target: String,
        path: PathBuf,
        seq: i64,
        expected: String,
        /// What the log has instead, e.g. "its event seq 12 has hash sha256:...".
        found: String,
    },
}

fn missing(head_seq: i64, anchor_seq: i64) -> String {
    if anchor_seq == head_seq + 1 {
        format!("seq {anchor_seq} was deleted")
    } else {
        format!("seq {} to {anchor_seq} were deleted", head_seq + 1)
    }
}

/// Where an SQLite store keeps its anchor unless configured otherwise:
/// `<db>.audit-head` beside the database file. None for an in-memory
/// database, PostgreSQL and URLs that name no file.
pub fn default_anchor_path(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let mut name = options.get_filename().as_os_str().to_owned();
    name.push(".audit-head");
    Some(PathBuf::from(name))
}

/// Reads an anchor file; `None` when there is none.
pub async fn read_anchor(path: &Path) -> Result<Option<AuditAnchor>, AnchorError> {
    let unreadable = |reason: String| AnchorError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    match tokio::fs::read(path).await {
        Ok(text) => AuditAnchor::parse(&text).map(Some).map_err(unreadable),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// Replaces the anchor file with `anchor` so that a crash leaves either the
/// old file or the new one: a temporary file beside it, fsynced, renamed
/// over it, and the directory fsynced so the rename itself is durable.
pub async fn write_anchor(path: &Path, anchor: &AuditAnchor) -> Result<(), AnchorError> {
    let (target, text) = (path.to_path_buf(), anchor.to_text());
    let written = tokio::task::spawn_blocking(move || write_atomically(&target, text.as_bytes()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    written.map_err(|source| AnchorError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the anchor path names no file"))?;
    let partial = path.with_file_name(format!(".{}.{}.partial", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Opens the store at `url` as [`super::open_with`] does and, with an
/// anchor path, keeps the audit head there ([`AnchoredStore`]).
///
/// An existing anchor file is evidence that a store was initialised at the
/// URL, so no store is created in its place; and the store must hold the
/// anchored event, else the start is refused ([`AnchorError::Truncated`],
/// [`AnchorError::Rewritten`]). Without an anchor file, the current head is
/// anchored (with a warning, unless the store was created just now).
pub async fn open_anchored(
    url: &str,
    options: &OpenOptions,
    anchor: Option<&Path>,
) -> Result<Arc<dyn Store>, StoreError> {
    let Some(path) = anchor else {
        return Ok(open_with(url, options).await?.store);
    };
    let recorded = read_anchor(path).await?;
    let mut options = options.clone();
    if let Some(a) = &recorded {
        options.existed.get_or_insert_with(|| {
            format!(
                "the audit anchor {} records its audit log up to seq {}",
                path.display(),
                a.seq
            )
        });
    }
    let opened = open_with(url, &options).await?;
    let store = AnchoredStore::start(opened.store, path, redact_url(url), recorded, opened.created).await?;
    Ok(Arc::new(store))
}

/// A store that writes its audit head to an anchor file after every commit
/// that appends audit rows. Everything else goes straight through.
#[derive(Debug)]
pub struct AnchoredStore {
    inner: Arc<dyn Store>,
    path: PathBuf,
    target: String,
    /// The anchor as last written. Held from the start of an audit commit
    /// to the end of its anchor write, so anchors are written in commit
    /// order.
    anchored: Mutex<AuditAnchor>,
}

impl AnchoredStore {
    /// Checks `recorded` (the anchor file as read) against the store and
    /// brings the file up to the store's head.
    async fn start(
        inner: Arc<dyn Store>,
        path: &Path,
        target: String,
        recorded: Option<AuditAnchor>,
        created: bool,
    ) -> Result<AnchoredStore, StoreError> {
        let head = inner
            .audit_head()
            .await?
            .map_or_else(AuditAnchor::genesis, |row| AuditAnchor::of(&row));
        let store = AnchoredStore {
            inner,
            path: path.to_path_buf(),
            target,
            anchored: Mutex::new(head.clone()),
        };
        match &recorded {
            Some(anchor) => store.check_holds(anchor, &head).await?,
            None if !created => tracing::warn!(
                anchor = %path.display(),
                seq = head.seq,
                "no audit anchor: anchoring the store's current head; events deleted from the log before now \
                 cannot be detected"
            ),
            None => {}
        }
        if recorded.as_ref() != Some(&head) {
            write_anchor(path, &head).await?;
        }
        Ok(store)
    }

    /// Whether the log holds `anchor`; `head` is the log's newest event.
    async fn check_holds(&self, anchor: &AuditAnchor, head: &AuditAnchor) -> Result<(), AnchorError> {
        if anchor.seq > head.seq {
            return Err(AnchorError::Truncated {
                target: self.target.clone(),
                path: self.path.clone(),
                head_seq: head.seq,
                anchor_seq: anchor.seq,
            });
        }
        let found = match self.event_at(anchor.seq).await {
            Ok(Some(hash)) if hash == anchor.hash => return Ok(()),
            Ok(Some(hash)) => format!("its event seq {} has hash {hash}", anchor.seq),
            Ok(None) => format!("it has no event seq {}", anchor.seq),
            Err(e) => format!("its event seq {} cannot be read: {e}", anchor.seq),
        };
        Err(AnchorError::Rewritten {
            target: self.target.clone(),
            path: self.path.clone(),
            seq: anchor.seq,
            expected: anchor.hash.clone(),
            found,
        })
    }

    /// The hash of the event `seq` (the genesis hash for 0), if the log has it.
    async fn event_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        if seq == 0 {
            return Ok(Some(GENESIS_PREV.to_string()));
        }
        let rows = self.inner.audit_after(seq - 1, 1).await?;
        Ok(rows.into_iter().find(|r| r.seq == seq).map(|r| r.hash))
    }

    /// Moves the anchor to `head` after a commit whose first audit row was
    /// `first` = (seq, prev), if that commit continued the anchored chain.
    async fn advance(&self, anchored: &mut AuditAnchor, first: (i64, String), head: AuditAnchor) {
        let (first_seq, first_prev) = first;
        let continues = if first_seq == anchored.seq + 1 {
            first_prev == anchored.hash
        } else if first_seq > anchored.seq + 1 {
            // The anchor lags (a write failed, or another replica appended):
            // the log must still hold it.
            match self.event_at(anchored.seq).await {
                Ok(hash) => hash.as_deref() == Some(anchored.hash.as_str()),
                Err(e) => {
                    tracing::warn!(error = %e, "the audit anchor stays behind until the next commit");
                    return;
                }
            }
        } else {
            false
        };
        if !continues {
            tracing::error!(
                anchor = %self.path.display(),
                anchored_seq = anchored.seq,
                committed_from = first_seq,
                "the audit log no longer holds its anchored event (events were deleted or rewritten in the \
                 database): the anchor stays, and `tollgate audit verify` reports the log as broken"
            );
            return;
        }
        match write_anchor(&self.path, &head).await {
            Ok(()) => *anchored = head,
            Err(e) => tracing::warn!(
                error = %chain(&e),
                "the audit anchor lags the log until the next commit writes it"
            ),
        }
    }
}

/// An error and its sources, for a log line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Store for AnchoredStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn commit(&self, t: Transition) -> Result<CommitResult, StoreError> {
        let (Some(first), Some(last)) = (t.audit.first(), t.audit.last()) else {
            return self.inner.commit(t).await;
        };
        let first = (first.seq, first.prev.clone());
        let head = AuditAnchor::of(last);
        let mut anchored = self.anchored.lock().await;
        let result = self.inner.commit(t).await?;
        self.advance(&mut anchored, first, head).await;
        Ok(result)
    }

    async fn reserve_promotion_id(&self) -> Result<i64, StoreError> {
        self.inner.reserve_promotion_id().await
    }

    async fn promotion(&self, id: i64) -> Result<Option<PromotionRecord>, StoreError> {
        self.inner.promotion(id).await
    }

    async fn promotions(&self, filter: PromotionFilter) -> Result<Vec<PromotionRecord>, StoreError> {
        self.inner.promotions(filter).await
    }

    async fn reviews(&self, promotion_id: i64) -> Result<Vec<ReviewRecord>, StoreError> {
        self.inner.reviews(promotion_id).await
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.inner.audit_after(after_seq, limit).await
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        self.inner.audit_head().await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.inner.kv_get(key).await
    }

    async fn kv_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.kv_prefix(prefix).await
    }

    async fn kv_prefix_text(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.kv_prefix_text(prefix).await
    }

    async fn try_lead(&self, holder: &str) -> Result<bool, StoreError> {
        self.inner.try_lead(holder).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    /// The file as it is now: the store wrote it at start, so a missing
    /// file was removed since.
    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        match read_anchor(&self.path).await? {
            Some(anchor) => Ok(Some(anchor)),
            None => Err(AnchorError::Unreadable {
                path: self.path.clone(),
                reason: "it is missing, though this controller wrote it".to_string(),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn anchor_files_are_checked_when_read() {
        let good = AuditAnchor {
            seq: 12,
            hash: hash('a'),
        };
        assert_eq!(AuditAnchor::parse(good.to_text().as_bytes()).unwrap(), good);
        assert_eq!(
            AuditAnchor::parse(AuditAnchor::genesis().to_text().as_bytes()).unwrap(),
            AuditAnchor::genesis()
        );
        for bad in [
            "".to_string(),
            "{\"seq\":1}".to_string(),
            format!("{{\"seq\":-1,\"hash\":\"{}\"}}", hash('a')),
            format!("{{\"seq\":0,\"hash\":\"{}\"}}", hash('a')),
            "{\"seq\":3,\"hash\":\"sha256:ABC\"}".to_string(),
            format!("{{\"seq\":3,\"hash\":\"{}\",\"extra\":1}}", hash('b')),
        ] {
            assert!(AuditAnchor::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sqlite_files_get_an_anchor_beside_them() {
        assert_eq!(
            default_anchor_path("sqlite:///var/lib/tollgate/state.db"),
            Some(PathBuf::from("/var/lib/tollgate/state.db.audit-head"))
        );
        assert_eq!(default_anchor_path("sqlite::memory:"), None);
        assert_eq!(default_anchor_path("postgres://u@h/db"), None);
    }

    #[test]
    fn a_truncation_names_the_missing_range() {
        let e = AnchorError::Truncated {
            target: "sqlite:///s.db".into(),
            path: "/s.db.audit-head".into(),
            head_seq: 7,
            anchor_seq: 10,
        };
        assert!(e.to_string().contains("seq 8 to 10 were deleted from its end"), "{e}");
        let e = AnchorError::Truncated {
            target: "sqlite:///s.db".into(),
            path: "/s.db.audit-head".into(),
            head_seq: 9,
            anchor_seq: 10,
        };
        assert!(e.to_string().contains("seq 10 was deleted from its end"), "{e}");
    }

    #[tokio::test]
    async fn writing_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db.audit-head");
        assert_eq!(read_anchor(&path).await.unwrap(), None);
        let first = AuditAnchor {
            seq: 1,
            hash: hash('1'),
        };
        write_anchor(&path, &first).await.unwrap();
        assert_eq!(read_anchor(&path).await.unwrap(), Some(first));
        let second = AuditAnchor {
            seq: 2,
            hash: hash('2'),
        };
        write_anchor(&path, &second).await.unwrap();
        assert_eq!(read_anchor(&path).await.unwrap(), Some(second));
        // Nothing but the anchor is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.db.audit-head"]);
    }
}
