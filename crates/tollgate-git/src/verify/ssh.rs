//! SSH commit signatures (`gpg.format=ssh`): an `SSHSIG` over the commit,
//! made for the `git` namespace, checked against an `allowed_signers` file.

use std::path::{Path, PathBuf};

use ssh_key::{PublicKey, SshSig};

use super::allowed_signers::{self, AllowedSigner};
use super::{Method, Reason, VerifyError};

/// The namespace git signs commits (and tags) for.
pub const GIT_NAMESPACE: &str = "git";

/// The keys of an `allowed_signers` file.
#[derive(Debug)]
pub struct SshTrust {
    path: PathBuf,
    lines: Vec<AllowedSigner>,
}

/// A signature that verified, with the principals its key may sign as now.
#[derive(Debug)]
pub struct SshVerified {
    /// `SHA256:...`, as ssh-keygen prints it.
    pub key: String,
    /// From every line of the key that allows `git` and whose window holds
    /// the verification time; each with its line.
    pub principals: Vec<(String, usize)>,
}

impl SshTrust {
    pub fn load(path: &Path) -> Result<SshTrust, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let lines = allowed_signers::parse(path, &text).map_err(VerifyError::AllowedSigners)?;
        Ok(SshTrust {
            path: path.to_path_buf(),
            lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lines(&self) -> &[AllowedSigner] {
        &self.lines
    }

    /// Checks `armored` (an `-----BEGIN SSH SIGNATURE-----` block) over
    /// `payload` at `at` (Unix seconds).
    pub fn check(&self, armored: &[u8], payload: &[u8], at: i64) -> Result<SshVerified, Reason> {
        let sig = SshSig::from_pem(armored).map_err(|e| Reason::BadSignature {
            method: Method::Ssh,
            detail: format!("the SSH signature cannot be read: {e}"),
        })?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(Reason::WrongNamespace {
                namespace: sig.namespace().to_string(),
            });
        }
        let key = allowed_signers::fingerprint(sig.public_key());
        let lines: Vec<&AllowedSigner> = self.lines.iter().filter(|l| l.key == *sig.public_key()).collect();
        if lines.is_empty() {
            return Err(Reason::UnknownKey {
                method: Method::Ssh,
                key,
                file: Some(self.path.clone()),
            });
        }
        PublicKey::new(sig.public_key().clone(), "")
            .verify(GIT_NAMESPACE, payload, &sig)
            .map_err(|e| Reason::BadSignature {
                method: Method::Ssh,
                detail: format!("{} signature by {key}: {e}", sig.algorithm()),
            })?;

        let mut principals = Vec::new();
        let mut refused = Vec::new();
        for line in &lines {
            if !line.allows_namespace(GIT_NAMESPACE) {
                refused.push((
                    1,
                    format!(
                        "{}:{} allows it only for namespaces other than `git`",
                        self.path.display(),
                        line.line
                    ),
                ));
            } else if let Some(why) = line.outside_window(at) {
                refused.push((0, format!("{}:{}: {why}", self.path.display(), line.line)));
            } else {
                principals.extend(line.principals.iter().map(|p| (p.clone(), line.line)));
            }
        }
        if principals.is_empty() {
            // A window is the likelier thing to act on than a namespace, so
            // it is named first.
            refused.sort();
            return Err(Reason::KeyNotValid {
                method: Method::Ssh,
                key,
                detail: refused.into_iter().map(|(_, why)| why).collect::<Vec<_>>().join("; "),
            });
        }
        Ok(SshVerified { key, principals })
    }
}
