//! Commit signature verification (`source.verify`, DESIGN 5 and 6).
//!
//! git's author and committer fields are whatever the committer typed, so
//! in local mode the identity behind a commit is the key that signed it:
//! an SSH key listed in an `allowed_signers` file, or an OpenPGP key in a
//! keyring, mapped by `signers` to a token name or forge user.
//!
//! [`VerifyPolicy::load`] reads and cross-checks the files once;
//! [`VerifyPolicy::verify_commit`] answers, for one commit, the mapped
//! [`Signer`] or an [`Unverified`] whose [`Reason`] says what to fix.
//!
//! Validity windows (`valid-after`/`valid-before`, OpenPGP expiry and
//! revocation) are checked at the time of verification, not at the commit's
//! date: the committer writes that date, so a key past its end could
//! otherwise sign new commits dated before it. ssh-keygen `-Y verify` does
//! the same unless told another time.

pub mod allowed_signers;
pub mod openpgp;
pub mod ssh;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{ErrorCode, Oid, Repository, Sort};
use serde::{Deserialize, Serialize};

use tollgate_core::ids::CommitSha;

use self::openpgp::Keyring;
use self::ssh::SshTrust;

/// `source.verify` of the controller config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// SSH keys, in git's `allowed_signers` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys, armoured or binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp_keys: Option<PathBuf>,
    /// Principal (SSH) or fingerprint / key id (OpenPGP) -> token name or
    /// forge user. A principal given twice is an error, not the last one
    /// winning.
    #[serde(deserialize_with = "unique_signers")]
    pub signers: BTreeMap<String, String>,
}

fn unique_signers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from principal or key fingerprint to a name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, name)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("signers: `{key}` is given twice")));
                }
                out.insert(key, name);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

impl VerifyConfig {
    /// The checks that need no file: at least one trust file, and a
    /// `signers` map with no empty names. The message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.allowed_signers.is_none() && self.openpgp_keys.is_none() {
            return Err("give allowed_signers (SSH keys), openpgp_keys (an OpenPGP keyring) or both".into());
        }
        for (field, path) in [
            ("allowed_signers", &self.allowed_signers),
            ("openpgp_keys", &self.openpgp_keys),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("{field} is empty"));
            }
        }
        if self.signers.is_empty() {
            return Err("signers is empty: map each principal or key fingerprint to a token name".into());
        }
        for (key, name) in &self.signers {
            if key.trim().is_empty() {
                return Err("signers has an empty principal".into());
            }
            if name.trim().is_empty() || name.chars().any(char::is_control) || name.trim() != name {
                return Err(format!("signers.{key:?}: {name:?} is not a usable name"));
            }
        }
        Ok(())
    }

    /// The paths, relative ones taken from `base_dir` (the config file's
    /// directory).
    pub fn resolved(&self, base_dir: &Path) -> VerifyConfig {
        let at = |p: &Option<PathBuf>| p.as_ref().map(|p| base_dir.join(p));
        VerifyConfig {
            allowed_signers: at(&self.allowed_signers),
            openpgp_keys: at(&self.openpgp_keys),
            signers: self.signers.clone(),
        }
    }
}

/// How a commit was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Ssh,
    #[serde(rename = "openpgp")]
    OpenPgp,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Ssh => "SSH",
            Method::OpenPgp => "OpenPGP",
        })
    }
}

/// Who signed a commit, as far as Tollgate is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The name `signers` maps the key to: the identity.
    pub identity: String,
    /// The SSH principal, or the OpenPGP primary key's fingerprint.
    pub principal: String,
    pub method: Method,
    /// The key that made the signature: `SHA256:...` for SSH, the signing
    /// (sub)key's fingerprint for OpenPGP.
    pub key: String,
}

/// Why a commit is not verified, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No signature at all.
    Unsigned,
    /// The signature does not match the commit: it was changed after
    /// signing, or the signature is damaged.
    BadSignature { method: Method, detail: String },
    /// Made by a key no trust file holds (`file` is `None` when no file of
    /// that kind is configured).
    UnknownKey {
        method: Method,
        key: String,
        file: Option<PathBuf>,
    },
    /// The key is trusted, but not now or not for this: outside its
    /// validity window, expired, revoked, not for signing, or not for the
    /// `git` namespace.
    KeyNotValid {
        method: Method,
        key: String,
        detail: String,
    },
    /// An SSH signature made for another namespace than `git` (e.g. with
    /// `ssh-keygen -Y sign -n file`).
    WrongNamespace { namespace: String },
    /// The key verified, but `signers` maps none of its names.
    NotMapped { method: Method, principals: Vec<String> },
    /// The key's names map to more than one identity.
    Ambiguous { method: Method, identities: Vec<String> },
    /// A signature Tollgate cannot check (X.509/gpgsm, or unrecognised).
    Unsupported { detail: String },
    /// The commit could not be read from the repository.
    Unreadable { detail: String },
}

impl Reason {
    /// A stable name for the reason, for APIs, metrics and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::BadSignature { .. } => "bad_signature",
            Reason::UnknownKey { .. } => "unknown_key",
            Reason::KeyNotValid { .. } => "key_not_valid",
            Reason::WrongNamespace { .. } => "wrong_namespace",
            Reason::NotMapped { .. } => "not_mapped",
            Reason::Ambiguous { .. } => "ambiguous_signer",
            Reason::Unsupported { .. } => "unsupported",
            Reason::Unreadable { .. } => "unreadable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unsigned => f.write_str("the commit is not signed; sign it (git commit -S) with a key source.verify trusts"),
            Reason::BadSignature { method, detail } => write!(
                f,
                "the {method} signature does not verify: the commit was changed after it was signed, or the signature is damaged ({detail})"
            ),
            Reason::UnknownKey { method, key, file: Some(file) } => {
                write!(f, "signed by {method} key {key}, which is not in {}", file.display())
            }
            Reason::UnknownKey { method: Method::Ssh, key, file: None } => write!(
                f,
                "signed by SSH key {key}, but source.verify has no allowed_signers, so no SSH key is trusted"
            ),
            Reason::UnknownKey { method: Method::OpenPgp, key, file: None } => write!(
                f,
                "signed by OpenPGP key {key}, but source.verify has no openpgp_keys, so no OpenPGP key is trusted"
            ),
            Reason::KeyNotValid { method, key, detail } => {
                write!(f, "{method} key {key} is trusted but may not sign this now: {detail}")
            }
            Reason::WrongNamespace { namespace } => write!(
                f,
                "the SSH signature was made for namespace `{namespace}`, not `git`: it signs something else, not this commit"
            ),
            Reason::NotMapped { method, principals } => write!(
                f,
                "signed by {method} {}, which source.verify.signers maps to nobody",
                principals.join(", ")
            ),
            Reason::Ambiguous { method, identities } => write!(
                f,
                "the {method} key stands for several identities in source.verify.signers ({}); map it to one",
                identities.join(", ")
            ),
            Reason::Unsupported { detail } => write!(f, "unsupported signature: {detail}"),
            Reason::Unreadable { detail } => write!(f, "cannot read the commit: {detail}"),
        }
    }
}

/// A commit whose signature does not establish who made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("commit {}: {reason}", commit.short())]
pub struct Unverified {
    pub commit: CommitSha,
    pub reason: Reason,
}

impl Unverified {
    fn new(commit: Oid, reason: Reason) -> Unverified {
        Unverified {
            commit: CommitSha::new(commit.to_string()),
            reason,
        }
    }
}

/// Why `source.verify` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("source.verify: {message}")]
    Config { message: String },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    AllowedSigners(allowed_signers::LineError),
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Keyring {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// The trust files and the identity map, checked against each other.
#[derive(Debug)]
pub struct VerifyPolicy {
    ssh: Option<SshTrust>,
    openpgp: Option<Keyring>,
    /// SSH principal -> identity.
    principals: BTreeMap<String, String>,
    /// Upper-case hex fingerprint or key id -> identity.
    designators: BTreeMap<String, String>,
}

impl VerifyPolicy {
    /// Reads the files `config` names (relative paths from `base_dir`) and
    /// checks that every `signers` entry names a key they hold and that no
    /// key stands for two identities.
    pub fn load(config: &VerifyConfig, base_dir: &Path) -> Result<VerifyPolicy, VerifyError> {
        let invalid = |message: String| VerifyError::Config { message };
        config.check().map_err(invalid)?;
        let config = config.resolved(base_dir);
        let ssh = config.allowed_signers.as_deref().map(SshTrust::load).transpose()?;
        let openpgp = config.openpgp_keys.as_deref().map(Keyring::load).transpose()?;

        let mut principals = BTreeMap::new();
        let mut designators: BTreeMap<String, (String, &str)> = BTreeMap::new();
        for (key, identity) in &config.signers {
            if let Some(designator) = openpgp_designator(key) {
                let Some(keyring) = &openpgp else {
                    return Err(invalid(format!(
                        "signers: `{key}` is an OpenPGP fingerprint or key id, but openpgp_keys is not given"
                    )));
                };
                let named: Vec<&openpgp::Cert> =
                    keyring.certs().iter().filter(|c| c.is_named_by(&designator)).collect();
                match named[..] {
                    [] => {
                        return Err(invalid(format!(
                            "signers: no key in {} has fingerprint or key id `{key}`",
                            keyring.path().display()
                        )))
                    }
                    [_] => {}
                    _ => {
                        return Err(invalid(format!(
                            "signers: key id `{key}` names several keys in {}; use the whole fingerprint",
                            keyring.path().display()
                        )))
                    }
                }
                if let Some((other, written)) = designators.insert(designator, (identity.clone(), key)) {
                    if other != *identity {
                        return Err(invalid(format!(
                            "signers: `{written}` and `{key}` are the same key, mapped to {other} and {identity}"
                        )));
                    }
                }
            } else {
                let Some(trust) = &ssh else {
                    return Err(invalid(format!(
                        "signers: `{key}` is an SSH principal, but allowed_signers is not given"
                    )));
                };
                if !trust.lines().iter().any(|l| l.principals.contains(key)) {
                    return Err(invalid(format!(
                        "signers: principal `{key}` is on no line of {}",
                        trust.path().display()
                    )));
                }
                principals.insert(key.clone(), identity.clone());
            }
        }
        let designators: BTreeMap<String, String> = designators.into_iter().map(|(d, (i, _))| (d, i)).collect();

        if let Some(trust) = &ssh {
            for (i, line) in trust.lines().iter().enumerate() {
                // Every line of the same key, this one included.
                let same_key = trust.lines()[..=i].iter().filter(|l| l.key == line.key);
                let mut seen: BTreeMap<&String, usize> = BTreeMap::new();
                for l in same_key {
                    for p in &l.principals {
                        if let Some(identity) = principals.get(p) {
                            seen.entry(identity).or_insert(l.line);
                        }
                    }
                }
                if seen.len() > 1 {
                    let names: Vec<String> = seen.iter().map(|(id, l)| format!("{id} (line {l})")).collect();
                    return Err(VerifyError::AllowedSigners(allowed_signers::LineError {
                        path: trust.path().to_path_buf(),
                        line: line.line,
                        message: format!(
                            "this key's principals map to different identities in signers: {}",
                            names.join(", ")
                        ),
                    }));
                }
            }
        }
        if let Some(keyring) = &openpgp {
            for cert in keyring.certs() {
                let identities: BTreeSet<&String> = designators
                    .iter()
                    .filter(|(d, _)| cert.is_named_by(d))
                    .map(|(_, i)| i)
                    .collect();
                if identities.len() > 1 {
                    let names: Vec<&str> = identities.iter().map(|s| s.as_str()).collect();
                    return Err(invalid(format!(
                        "signers: key {} and its subkeys are mapped to different identities ({})",
                        cert.primary.fingerprint,
                        names.join(", ")
                    )));
                }
            }
        }
        Ok(VerifyPolicy {
            ssh,
            openpgp,
            principals,
            designators,
        })
    }

    /// Who signed `commit`, checked now.
    pub fn verify_commit(&self, repo: &Repository, commit: Oid) -> Result<Signer, Unverified> {
        self.verify_commit_at(repo, commit, Utc::now())
    }

    /// Who signed `commit`, with validity windows checked at `at`.
    pub fn verify_commit_at(&self, repo: &Repository, commit: Oid, at: DateTime<Utc>) -> Result<Signer, Unverified> {
        self.check(repo, commit, at.timestamp())
            .map_err(|reason| Unverified::new(commit, reason))
    }

    /// Every commit reachable from `tip` and not from `base` (all of
    /// history without one), merges included, oldest first, each with its
    /// signer; the first that does not verify is the error.
    pub fn verify_range(
        &self,
        repo: &Repository,
        base: Option<Oid>,
        tip: Oid,
    ) -> Result<Vec<(Oid, Signer)>, Unverified> {
        self.verify_range_at(repo, base, tip, Utc::now())
    }

    /// [`VerifyPolicy::verify_range`] with windows checked at `at`.
    pub fn verify_range_at(
        &self,
        repo: &Repository,
        base: Option<Oid>,
        tip: Oid,
        at: DateTime<Utc>,
    ) -> Result<Vec<(Oid, Signer)>, Unverified> {
        let unreadable = |commit: Oid, what: &str, e: git2::Error| {
            Unverified::new(
                commit,
                Reason::Unreadable {
                    detail: format!("{what}: {}", e.message()),
                },
            )
        };
        let mut walk = repo.revwalk().map_err(|e| unreadable(tip, "cannot walk history", e))?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
            .map_err(|e| unreadable(tip, "cannot walk history", e))?;
        walk.push(tip)
            .map_err(|e| unreadable(tip, "cannot walk from the tip", e))?;
        if let Some(base) = base {
            walk.hide(base)
                .map_err(|e| unreadable(base, "cannot exclude the base's history", e))?;
        }
        let mut signed = Vec::new();
        for oid in walk {
            let oid = oid.map_err(|e| unreadable(tip, "cannot walk history", e))?;
            let signer = self.verify_commit_at(repo, oid, at)?;
            signed.push((oid, signer));
        }
        Ok(signed)
    }

    fn check(&self, repo: &Repository, commit: Oid, at: i64) -> Result<Signer, Reason> {
        if let Err(e) = repo.find_commit(commit) {
            return Err(Reason::Unreadable {
                detail: e.message().to_string(),
            });
        }
        let (signature, payload) = match repo.extract_signature(&commit, None) {
            Ok(found) => found,
            Err(e) if e.code() == ErrorCode::NotFound => return Err(Reason::Unsigned),
            Err(e) => {
                return Err(Reason::Unreadable {
                    detail: e.message().to_string(),
                })
            }
        };
        let armored = trim_start(&signature);
        if armored.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            let Some(trust) = &self.ssh else {
                return Err(Reason::UnknownKey {
                    method: Method::Ssh,
                    key: ssh_key_of(armored),
                    file: None,
                });
            };
            let verified = trust.check(armored, &payload, at)?;
            let mut identities: BTreeMap<&String, &String> = BTreeMap::new();
            for (principal, _) in &verified.principals {
                if let Some(identity) = self.principals.get(principal) {
                    identities.entry(identity).or_insert(principal);
                }
            }
            match identities.len() {
                0 => {
                    let mut principals: Vec<String> = Vec::new();
                    for (p, _) in verified.principals {
                        if !principals.contains(&p) {
                            principals.push(p);
                        }
                    }
                    Err(Reason::NotMapped {
                        method: Method::Ssh,
                        principals,
                    })
                }
                1 => {
                    let (identity, principal) = identities.into_iter().next().expect("one entry");
                    Ok(Signer {
                        identity: identity.clone(),
                        principal: principal.clone(),
                        method: Method::Ssh,
                        key: verified.key,
                    })
                }
                _ => Err(Reason::Ambiguous {
                    method: Method::Ssh,
                    identities: identities.into_keys().cloned().collect(),
                }),
            }
        } else if armored.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            let Some(keyring) = &self.openpgp else {
                return Err(Reason::UnknownKey {
                    method: Method::OpenPgp,
                    key: openpgp::issuer_of(armored),
                    file: None,
                });
            };
            let verified = keyring.check(armored, &payload, at)?;
            let identities: BTreeSet<&String> = verified
                .designators
                .iter()
                .filter_map(|d| self.designators.get(d))
                .collect();
            match identities.len() {
                0 => Err(Reason::NotMapped {
                    method: Method::OpenPgp,
                    principals: vec![verified.primary],
                }),
                1 => Ok(Signer {
                    identity: identities.into_iter().next().expect("one entry").clone(),
                    principal: verified.primary,
                    method: Method::OpenPgp,
                    key: verified.signing_key,
                }),
                // load() refuses a key mapped to two identities.
                _ => Err(Reason::Ambiguous {
                    method: Method::OpenPgp,
                    identities: identities.into_iter().cloned().collect(),
                }),
            }
        } else if armored.starts_with(b"-----BEGIN SIGNED MESSAGE-----") {
            Err(Reason::Unsupported {
                detail: "an X.509 (gpgsm) signature; sign with an SSH or OpenPGP key".into(),
            })
        } else {
            let first = armored.split(|b| *b == b'\n').next().unwrap_or_default();
            Err(Reason::Unsupported {
                detail: format!(
                    "a signature starting `{}`, neither SSH nor OpenPGP",
                    String::from_utf8_lossy(&first[..first.len().min(60)])
                ),
            })
        }
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// The signing key's fingerprint, for a message when no SSH key is trusted.
fn ssh_key_of(armored: &[u8]) -> String {
    ssh_key::SshSig::from_pem(armored)
        .map(|sig| allowed_signers::fingerprint(sig.public_key()))
        .unwrap_or_else(|_| "(unreadable signature)".into())
}

/// `signers` keys that name OpenPGP keys: 16 (key id), 40 (v4) or 64 (v6)
/// hex digits, with an optional `0x` and spaces as gpg prints them;
/// normalised to upper case. Anything else is an SSH principal.
pub fn openpgp_designator(key: &str) -> Option<String> {
    let compact: String = key.chars().filter(|c| *c != ' ').collect();
    let hex = compact
        .strip_prefix("0x")
        .or_else(|| compact.strip_prefix("0X"))
        .unwrap_or(&compact);
    (matches!(hex.len(), 16 | 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ssh: Option<&str>, pgp: Option<&str>, signers: &[(&str, &str)]) -> VerifyConfig {
        VerifyConfig {
            allowed_signers: ssh.map(PathBuf::from),
            openpgp_keys: pgp.map(PathBuf::from),
            signers: signers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn designators_and_principals_are_told_apart() {
        assert_eq!(
            openpgp_designator("0xabcdef0123456789").as_deref(),
            Some("ABCDEF0123456789")
        );
        let spaced = "ABCD EF01 2345 6789 ABCD  EF01 2345 6789 ABCD EF01";
        assert_eq!(
            openpgp_designator(spaced).as_deref(),
            Some("ABCDEF0123456789ABCDEF0123456789ABCDEF01")
        );
        assert_eq!(openpgp_designator("dana@acme.example"), None);
        assert_eq!(openpgp_designator("abcdef012345678"), None, "15 digits");
        assert_eq!(openpgp_designator("ghcdef0123456789"), None);
    }

    #[test]
    fn config_checks_name_the_key() {
        let e = config(None, None, &[("dana@acme.example", "dana")])
            .check()
            .unwrap_err();
        assert!(e.contains("allowed_signers") && e.contains("openpgp_keys"), "{e}");
        let e = config(Some("s"), None, &[]).check().unwrap_err();
        assert!(e.contains("signers is empty"), "{e}");
        let e = config(Some("s"), None, &[("dana@acme.example", " ")])
            .check()
            .unwrap_err();
        assert!(e.contains("not a usable name"), "{e}");
        let e = config(Some(""), None, &[("dana@acme.example", "dana")])
            .check()
            .unwrap_err();
        assert!(e.contains("allowed_signers is empty"), "{e}");
        config(Some("s"), None, &[("dana@acme.example", "dana")])
            .check()
            .unwrap();
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let c = config(
            Some("keys/allowed_signers"),
            Some("/etc/tollgate/keys.asc"),
            &[("a@b", "a")],
        );
        let r = c.resolved(Path::new("/srv/tollgate"));
        assert_eq!(
            r.allowed_signers.unwrap(),
            Path::new("/srv/tollgate/keys/allowed_signers")
        );
        assert_eq!(r.openpgp_keys.unwrap(), Path::new("/etc/tollgate/keys.asc"));
    }

    #[test]
    fn a_policy_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<VerifyPolicy>();
        shared::<Unverified>();
    }

    #[test]
    fn reason_codes_are_distinct() {
        let reasons = [
            Reason::Unsigned,
            Reason::BadSignature {
                method: Method::Ssh,
                detail: String::new(),
            },
            Reason::UnknownKey {
                method: Method::Ssh,
                key: String::new(),
                file: None,
            },
            Reason::KeyNotValid {
                method: Method::Ssh,
                key: String::new(),
                detail: String::new(),
            },
            Reason::WrongNamespace {
                namespace: String::new(),
            },
            Reason::NotMapped {
                method: Method::Ssh,
                principals: vec![],
            },
            Reason::Ambiguous {
                method: Method::Ssh,
                identities: vec![],
            },
            Reason::Unsupported { detail: String::new() },
            Reason::Unreadable { detail: String::new() },
        ];
        let codes: BTreeSet<&str> = reasons.iter().map(Reason::code).collect();
        assert_eq!(codes.len(), reasons.len());
    }
}
