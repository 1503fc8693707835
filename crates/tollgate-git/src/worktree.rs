//! Reading a governed repo from a plain directory, uncommitted edits included
//! (`tollgate validate` without `--rev`).
//!
//! Nothing below the root is followed: every entry is examined with
//! `symlink_metadata`, a symlink (to a file or a directory, inside or outside
//! the repo) is reported as [`FileContent::Symlink`], and oversized files are
//! reported by size without being read. The root itself may be a symlink; it
//! is the directory the user asked for.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tollgate_core::tree::{FileClass, FileContent, PathError, RepoPath, SourceFile, GOVERNED_ROOTS, MAX_FILE_BYTES};

/// Why the working tree could not be read, and where.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("file name {} is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
    #[error("{path:?} is not a safe repo path")]
    UnsafePath {
        path: String,
        #[source]
        source: PathError,
    },
    #[error("{} is neither a regular file, a directory nor a symlink", path.display())]
    SpecialFile { path: PathBuf },
    #[error("{} was replaced while it was being read", path.display())]
    Replaced { path: PathBuf },
}

/// Every governed file under `root`, sorted by path, with the same reporting
/// rule as the git adapter: governed files, plus every symlink under a
/// governed root. A directory holding a `.git` entry is a nested repository
/// and is reported as [`FileContent::Submodule`] (as git would record it)
/// instead of being read.
pub fn read_worktree(root: &Path) -> Result<Vec<SourceFile>, WorktreeError> {
    let meta = fs::metadata(root).map_err(|source| WorktreeError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(WorktreeError::NotADirectory {
            path: root.to_path_buf(),
        });
    }

    let mut files = Vec::new();
    let mut pending: Vec<Item> = GOVERNED_ROOTS
        .iter()
        .map(|name| Item {
            abs: root.join(name),
            rel: name.to_string(),
            utf8: true,
        })
        .collect();
    while let Some(item) = pending.pop() {
        visit(item, &mut pending, &mut files)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A path still to look at: where it is on disk, and its repo-relative name
/// (lossy if some component was not UTF-8, which `utf8` remembers).
struct Item {
    abs: PathBuf,
    rel: String,
    utf8: bool,
}

impl Item {
    fn repo_path(&self) -> Result<RepoPath, WorktreeError> {
        if !self.utf8 {
            return Err(WorktreeError::NonUtf8Path { path: self.abs.clone() });
        }
        RepoPath::new(&self.rel).map_err(|source| WorktreeError::UnsafePath {
            path: self.rel.clone(),
            source,
        })
    }

    fn io_error(&self) -> impl Fn(io::Error) -> WorktreeError + '_ {
        |source| WorktreeError::Io {
            path: self.abs.clone(),
            source,
        }
    }
}

fn visit(item: Item, pending: &mut Vec<Item>, files: &mut Vec<SourceFile>) -> Result<(), WorktreeError> {
    let meta = match fs::symlink_metadata(&item.abs) {
        Ok(meta) => meta,
        // Absent governed root, or removed while we walked: nothing to read.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(item.io_error()(e)),
    };
    let kind = meta.file_type();

    if kind.is_symlink() {
        let target = fs::read_link(&item.abs).map_err(item.io_error())?;
        files.push(SourceFile {
            path: item.repo_path()?,
            content: FileContent::Symlink {
                target: target.to_string_lossy().into_owned(),
            },
        });
    } else if kind.is_dir() {
        if is_nested_repo(&item.abs).map_err(item.io_error())? {
            files.push(SourceFile {
                path: item.repo_path()?,
                content: FileContent::Submodule,
            });
            return Ok(());
        }
        for entry in fs::read_dir(&item.abs).map_err(item.io_error())? {
            let entry = entry.map_err(item.io_error())?;
            let name = entry.file_name();
            let lossy = name.to_string_lossy();
            // Never governed (RepoPath refuses it on any case); `.git` itself
            // was handled by `is_nested_repo`.
            if lossy.eq_ignore_ascii_case(".git") {
                continue;
            }
            pending.push(Item {
                abs: entry.path(),
                rel: format!("{}/{}", item.rel, lossy),
                utf8: item.utf8 && name.to_str().is_some(),
            });
        }
    } else if FileClass::of(&item.rel).is_some() {
        if !kind.is_file() {
            return Err(WorktreeError::SpecialFile { path: item.abs });
        }
        let path = item.repo_path()?;
        let content = read_bounded(&item.abs, &meta)?;
        files.push(SourceFile { path, content });
    }
    Ok(())
}

fn is_nested_repo(dir: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(dir.join(".git")) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a regular file unless it is over [`MAX_FILE_BYTES`], checking that
/// what was opened is the file that was examined (not a symlink swapped in
/// between) and never reading more than the limit even if it grew.
fn read_bounded(path: &Path, meta: &Metadata) -> Result<FileContent, WorktreeError> {
    let io_error = |source| WorktreeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Ok(FileContent::TooLarge { size: meta.len() });
    }
    let file = File::open(path).map_err(io_error)?;
    let opened = file.metadata().map_err(io_error)?;
    if !opened.is_file() || !same_file(meta, &opened) {
        return Err(WorktreeError::Replaced {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(FileContent::TooLarge {
            size: opened.len().max(bytes.len() as u64),
        });
    }
    Ok(FileContent::Blob(bytes))
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &Metadata, _: &Metadata) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_limit_is_read_one_more_byte_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("baselines");
        fs::create_dir(&base).unwrap();
        File::create(base.join("at-limit.yaml"))
            .unwrap()
            .set_len(MAX_FILE_BYTES)
            .unwrap();
        File::create(base.join("over.yaml"))
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();

        let files = read_worktree(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path.as_str(), "baselines/at-limit.yaml");
        assert!(matches!(&files[0].content, FileContent::Blob(b) if b.len() as u64 == MAX_FILE_BYTES));
        assert_eq!(
            files[1].content,
            FileContent::TooLarge {
                size: MAX_FILE_BYTES + 1
            }
        );
    }

    #[test]
    fn root_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.yaml");
        fs::write(&file, "kind: Config\n").unwrap();
        assert!(matches!(read_worktree(&file), Err(WorktreeError::NotADirectory { .. })));
        let missing = read_worktree(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[cfg(unix)]
    #[test]
    fn fifo_with_a_governed_name_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("exceptions")).unwrap();
        let fifo = dir.path().join("exceptions/pipe.yaml");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success(), "mkfifo failed");
        let err = read_worktree(dir.path()).unwrap_err();
        assert!(matches!(err, WorktreeError::SpecialFile { .. }), "{err}");
        assert!(err.to_string().contains("pipe.yaml"), "{err}");
    }
}
