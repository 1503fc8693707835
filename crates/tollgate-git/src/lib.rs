//! Adapters that turn a governed repo into [`SourceFile`](tollgate_core::tree::SourceFile)s.
//!
//! [`git`] reads commits straight from the object database (bare mirrors,
//! old revisions, cheap tree-to-tree change lists, fetching from a remote);
//! [`worktree`] reads a plain directory with uncommitted edits. Both apply the
//! same rule: governed files are read, every symlink or submodule under a
//! governed root is reported (never followed) so validation can reject it, and
//! files over [`MAX_FILE_BYTES`](tollgate_core::tree::MAX_FILE_BYTES) are reported by
//! size without being read. [`GitRepo`] is the [`Revisions`] port the core
//! reads revisions through (`tollgate_core::revision`). [`verify`] checks
//! who signed a commit (`source.verify`); [`sample`] writes the sample repo.

pub mod git;
pub mod sample;
pub mod verify;
pub mod worktree;

pub use git::{clone_or_fetch, ChangeStatus, CommitInfo, GitError, GitRepo, PathChange};
pub use tollgate_core::revision::{
    read_checked, read_pair, read_revision, read_valid, read_valid_from, RevisionError, RevisionPair, Revisions,
};
pub use verify::{Method, Reason, Signer, Unverified, VerifyConfig, VerifyError, VerifyPolicy};
pub use worktree::{read_worktree, WorktreeError};
