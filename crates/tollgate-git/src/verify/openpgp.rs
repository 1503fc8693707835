//! OpenPGP commit signatures (`gpg.format=openpgp`, git's default): a
//! detached signature over the commit, checked against a keyring file of
//! public keys (ASCII-armoured blocks, one after another, or binary, as
//! `gpg --export [--armor]` writes them).
//!
//! rPGP reads packets and checks signatures; which of a key's
//! self-signatures count is decided here, after RFC 9580: the newest valid
//! self-signature of the primary key gives its flags and expiry, the newest
//! valid binding signature of a subkey gives the subkey's, a signing subkey
//! must carry a valid back-signature, and a revocation issued by the key
//! itself ends it. Third-party certifications are ignored (the keyring is
//! the trust decision), as are revocations by designated revokers.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, PublicOrSecret, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

use super::{Method, Reason, VerifyError};

/// The public keys of a keyring file.
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    certs: Vec<Cert>,
}

/// One transferable public key: a primary key and its subkeys.
#[derive(Debug)]
pub struct Cert {
    key: SignedPublicKey,
    /// Where it was read: `FILE:LINE` for armour, `FILE (key N)` for binary.
    pub origin: String,
    pub primary: KeyInfo,
    pub subkeys: Vec<KeyInfo>,
}

/// What the self-signatures say about one (sub)key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Upper-case hex, as gpg prints it.
    pub fingerprint: String,
    /// The last 16 hex digits (v4) or first 16 (v6): the legacy key id.
    pub key_id: String,
    created: i64,
    /// Unix seconds; `None` if it does not expire.
    expires: Option<i64>,
    /// Why it cannot sign, however valid the signature.
    unusable: Option<String>,
    /// When and why it was revoked.
    revoked: Option<String>,
}

/// A signature that verified, and the names its key goes by.
#[derive(Debug)]
pub struct PgpVerified {
    /// The primary key's fingerprint: the principal.
    pub primary: String,
    /// The (sub)key that signed.
    pub signing_key: String,
    /// Fingerprints and key ids of the primary and the signing key, for
    /// looking up `signers`.
    pub designators: Vec<String>,
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring, VerifyError> {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |line: Option<usize>, message: String| VerifyError::Keyring {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut certs = Vec::new();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            let keys = PublicOrSecret::from_bytes_many(BufReader::new(&bytes[..]))
                .map_err(|e| bad(None, format!("not an OpenPGP keyring: {e}")))?;
            for (i, key) in keys.enumerate() {
                let origin = format!("{} (key {})", path.display(), i + 1);
                let key = key.map_err(|e| bad(None, format!("key {}: {e}", i + 1)))?;
                certs.push(Cert::new(
                    public_only(key).map_err(|m| bad(None, format!("key {}: {m}", i + 1)))?,
                    origin,
                ));
            }
        } else {
            let text =
                std::str::from_utf8(&bytes).map_err(|_| bad(None, "neither binary OpenPGP nor ASCII armour".into()))?;
            for (line, block) in armoured_blocks(text).map_err(|(line, m)| bad(Some(line), m))? {
                let (keys, _) = SignedPublicKey::from_armor_many(block.as_bytes())
                    .map_err(|e| bad(Some(line), format!("the key block does not parse: {e}")))?;
                for key in keys {
                    let key = key.map_err(|e| bad(Some(line), format!("the key block does not parse: {e}")))?;
                    certs.push(Cert::new(key, format!("{}:{line}", path.display())));
                }
            }
        }
        if certs.is_empty() {
            return Err(bad(None, "holds no public key".into()));
        }
        for (i, cert) in certs.iter().enumerate() {
            if let Some(why) = &cert.primary.unusable {
                if why.starts_with("no valid self-signature") {
                    let line = cert.origin.rsplit_once(':').and_then(|(_, l)| l.parse().ok());
                    return Err(bad(line, format!("key {}: {why}", cert.primary.fingerprint)));
                }
            }
            if let Some(twin) = certs[..i]
                .iter()
                .find(|o| o.primary.fingerprint == cert.primary.fingerprint)
            {
                let line = cert.origin.rsplit_once(':').and_then(|(_, l)| l.parse().ok());
                return Err(bad(
                    line,
                    format!(
                        "key {} is also at {}: merge the two (gpg --import both, then --export)",
                        cert.primary.fingerprint, twin.origin
                    ),
                ));
            }
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            certs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// Checks `armored` (a `-----BEGIN PGP SIGNATURE-----` block) over
    /// `payload` at `at` (Unix seconds).
    pub fn check(&self, armored: &[u8], payload: &[u8], at: i64) -> Result<PgpVerified, Reason> {
        let bad = |detail: String| Reason::BadSignature {
            method: Method::OpenPgp,
            detail,
        };
        let (sig, _) = DetachedSignature::from_armor_single(armored)
            .map_err(|e| bad(format!("the OpenPGP signature cannot be read: {e}")))?;
        let sig = sig.signature;
        match sig.typ() {
            Some(SignatureType::Binary | SignatureType::Text) => {}
            other => {
                return Err(Reason::Unsupported {
                    detail: format!("an OpenPGP signature of type {other:?}, not a document signature"),
                })
            }
        }
        // rPGP verifies MD5, SHA-1 and RIPEMD-160 signatures too; over
        // content an attacker can shape, their collisions make a signature
        // transferable, so a commit signature needs a SHA-2 or SHA-3 hash.
        match sig.hash_alg() {
            Some(
                HashAlgorithm::Sha224
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512,
            ) => {}
            other => {
                return Err(Reason::Unsupported {
                    detail: format!(
                        "an OpenPGP signature over a {} hash, which is too weak for a commit signature (SHA-2 or SHA-3 are accepted)",
                        other.map_or_else(|| "unknown".to_string(), |h| h.to_string())
                    ),
                })
            }
        }
        let issuer = Issuer::of(&sig);
        let candidates: Vec<(&Cert, Option<usize>)> = self
            .certs
            .iter()
            .flat_map(|cert| {
                let primary = issuer.matches(&cert.primary).then_some((cert, None));
                let subs = cert
                    .subkeys
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| issuer.matches(s))
                    .map(move |(i, _)| (cert, Some(i)));
                primary.into_iter().chain(subs)
            })
            .collect();
        if candidates.is_empty() {
            return Err(Reason::UnknownKey {
                method: Method::OpenPgp,
                key: issuer.to_string(),
                file: Some(self.path.clone()),
            });
        }
        let mut last_error = None;
        for (cert, sub) in candidates {
            let (info, result) = match sub {
                None => (&cert.primary, sig.verify(&cert.key.primary_key, payload)),
                Some(i) => (&cert.subkeys[i], sig.verify(&cert.key.public_subkeys[i].key, payload)),
            };
            if let Err(e) = result {
                last_error = Some(bad(format!("signature by {}: {e}", info.fingerprint)));
                continue;
            }
            let not_valid = |detail: String| Reason::KeyNotValid {
                method: Method::OpenPgp,
                key: info.fingerprint.clone(),
                detail,
            };
            let created = sig.created().map(|t| i64::from(t.as_secs()));
            if let Some(created) = created {
                if created < info.created {
                    return Err(bad(format!(
                        "the signature claims to be older than the key {} that made it",
                        info.fingerprint
                    )));
                }
                if let Some(d) = sig.signature_expiration_time().filter(|d| d.as_secs() > 0) {
                    let end = created + i64::from(d.as_secs());
                    if at > end {
                        return Err(not_valid(format!("the signature itself expired at {}", show_time(end))));
                    }
                }
            }
            let primary = &cert.primary;
            let keys = if sub.is_some() {
                vec![primary, info]
            } else {
                vec![primary]
            };
            for k in keys {
                let whose = if std::ptr::eq(k, primary) && sub.is_some() {
                    format!("its primary key {}", k.fingerprint)
                } else {
                    format!("key {}", k.fingerprint)
                };
                if let Some(why) = &k.revoked {
                    return Err(not_valid(format!("{whose} is revoked ({why})")));
                }
                if let Some(end) = k.expires.filter(|end| at >= *end) {
                    return Err(not_valid(format!("{whose} expired at {}", show_time(end))));
                }
                if at < k.created {
                    return Err(not_valid(format!("{whose} was created after the time of verification")));
                }
            }
            if let Some(why) = &info.unusable {
                return Err(not_valid(why.clone()));
            }
            let mut designators = vec![primary.fingerprint.clone(), primary.key_id.clone()];
            if sub.is_some() {
                designators.push(info.fingerprint.clone());
                designators.push(info.key_id.clone());
            }
            return Ok(PgpVerified {
                primary: primary.fingerprint.clone(),
                signing_key: info.fingerprint.clone(),
                designators,
            });
        }
        Err(last_error.expect("at least one candidate was tried"))
    }
}

/// Who an armoured signature says made it, for a message when no keyring is
/// configured.
pub fn issuer_of(armored: &[u8]) -> String {
    DetachedSignature::from_armor_single(armored)
        .map(|(sig, _)| Issuer::of(&sig.signature).to_string())
        .unwrap_or_else(|_| "(unreadable signature)".into())
}

impl Cert {
    fn new(key: SignedPublicKey, origin: String) -> Cert {
        let primary = primary_info(&key);
        let subkeys = key.public_subkeys.iter().map(|s| subkey_info(&key, s)).collect();
        Cert {
            key,
            origin,
            primary,
            subkeys,
        }
    }

    /// Whether `designator` (normalised: upper-case hex) names this key or
    /// one of its subkeys.
    pub fn is_named_by(&self, designator: &str) -> bool {
        std::iter::once(&self.primary)
            .chain(&self.subkeys)
            .any(|k| k.fingerprint == designator || k.key_id == designator)
    }
}

fn public_only(key: PublicOrSecret) -> Result<SignedPublicKey, String> {
    match key {
        PublicOrSecret::Public(key) => Ok(key),
        PublicOrSecret::Secret(_) => Err(secret_key_message()),
    }
}

fn secret_key_message() -> String {
    "is a secret key: the keyring must hold public keys only (gpg --export --armor KEYID)".into()
}

/// Each `-----BEGIN PGP PUBLIC KEY BLOCK-----` ... `-----END ...-----`
/// block with the line it starts on. Text between blocks is ignored, as gpg
/// ignores it.
fn armoured_blocks(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            return Err((n, format!("this block {}", secret_key_message())));
        }
        match &mut open {
            None if trimmed == BEGIN => open = Some((n, format!("{trimmed}\n"))),
            None if trimmed.starts_with("-----BEGIN ") => {
                return Err((n, format!("`{trimmed}` is not a public key block")));
            }
            None => {}
            Some((start, block)) => {
                block.push_str(trimmed);
                block.push('\n');
                if trimmed == END {
                    blocks.push((*start, std::mem::take(block)));
                    open = None;
                } else if trimmed.starts_with("-----") {
                    return Err((
                        n,
                        format!("`{trimmed}` inside the key block that starts on line {start}"),
                    ));
                }
            }
        }
    }
    if let Some((start, _)) = open {
        return Err((start, "the key block is not closed (no END line)".into()));
    }
    if blocks.is_empty() {
        return Err((1, format!("no `{BEGIN}` in the file")));
    }
    Ok(blocks)
}

fn hex_of(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

fn info_of(key: &impl KeyDetails) -> (String, String, i64) {
    (
        hex_of(key.fingerprint().as_bytes()),
        hex_of(key.legacy_key_id().as_ref()),
        i64::from(key.created_at().as_secs()),
    )
}

fn created_of(sig: &Signature) -> i64 {
    sig.created().map_or(0, |t| i64::from(t.as_secs()))
}

/// Whether the signature's hashed area has key flags at all: a v4
/// self-signature without them leaves the key usable as its algorithm
/// allows (signing, for the keys that can make signatures).
fn flags_allow_signing(sig: &Signature) -> bool {
    let has_flags = sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    });
    !has_flags || sig.key_flags().sign()
}

fn expiry(created: i64, sig: &Signature) -> Option<i64> {
    sig.key_expiration_time()
        .filter(|d| d.as_secs() > 0)
        .map(|d| created + i64::from(d.as_secs()))
}

fn revocation_text(sig: &Signature) -> String {
    let mut text = format!("since {}", show_time(created_of(sig)));
    if let Some(reason) = sig.revocation_reason_string().filter(|r| !r.is_empty()) {
        text.push_str(&format!(": {}", String::from_utf8_lossy(reason)));
    }
    text
}

fn primary_info(key: &SignedPublicKey) -> KeyInfo {
    let primary = &key.primary_key;
    let (fingerprint, key_id, created) = info_of(primary);
    let is_cert = |s: &Signature| {
        matches!(
            s.typ(),
            Some(
                SignatureType::CertGeneric
                    | SignatureType::CertPersona
                    | SignatureType::CertCasual
                    | SignatureType::CertPositive
            )
        )
    };
    let mut self_sigs: Vec<&Signature> = key
        .details
        .users
        .iter()
        .flat_map(|u| {
            u.signatures
                .iter()
                .filter(|s| is_cert(s) && s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
        })
        .collect();
    self_sigs.extend(
        key.details
            .direct_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok()),
    );
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .find(|s| s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok())
        .map(revocation_text);
    let newest = self_sigs.into_iter().max_by_key(|s| created_of(s));
    let (expires, unusable) = match newest {
        None => (
            None,
            Some("no valid self-signature: the key does not certify itself".to_string()),
        ),
        Some(sig) => (
            expiry(created, sig),
            (!flags_allow_signing(sig)).then(|| format!("key {fingerprint} is not marked for signing")),
        ),
    };
    KeyInfo {
        fingerprint,
        key_id,
        created,
        expires,
        unusable,
        revoked,
    }
}

fn subkey_info(key: &SignedPublicKey, sub: &SignedPublicSubKey) -> KeyInfo {
    let primary = &key.primary_key;
    let (fingerprint, key_id, created) = info_of(&sub.key);
    let newest = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok())
        .max_by_key(|s| created_of(s));
    let revoked = sub
        .signatures
        .iter()
        .find(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(primary, &sub.key).is_ok()
        })
        .map(revocation_text);
    let (expires, unusable) = match newest {
        None => (
            None,
            Some(format!("subkey {fingerprint} has no valid binding to its primary key")),
        ),
        Some(sig) => {
            let unusable = if !sig.key_flags().sign() {
                Some(format!("subkey {fingerprint} is not bound for signing"))
            } else if sig
                .embedded_signature()
                .is_none_or(|back| back.verify_primary_key_binding(&sub.key, primary).is_err())
            {
                Some(format!(
                    "subkey {fingerprint} has no valid back-signature, so it may not sign for its primary key"
                ))
            } else {
                None
            };
            (expiry(created, sig), unusable)
        }
    };
    KeyInfo {
        fingerprint,
        key_id,
        created,
        expires,
        unusable,
        revoked,
    }
}

/// Who a signature says made it.
struct Issuer {
    fingerprints: Vec<String>,
    key_ids: Vec<String>,
}

impl Issuer {
    fn of(sig: &Signature) -> Issuer {
        Issuer {
            fingerprints: sig.issuer_fingerprint().iter().map(|f| hex_of(f.as_bytes())).collect(),
            key_ids: sig.issuer_key_id().iter().map(|k| hex_of(k.as_ref())).collect(),
        }
    }

    fn matches(&self, key: &KeyInfo) -> bool {
        if !self.fingerprints.is_empty() {
            return self.fingerprints.contains(&key.fingerprint);
        }
        self.key_ids.contains(&key.key_id)
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.fingerprints.first(), self.key_ids.first()) {
            (Some(fp), _) => f.write_str(fp),
            (None, Some(id)) => write!(f, "with key id {id}"),
            (None, None) => f.write_str("(the signature names no issuer)"),
        }
    }
}

fn show_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_with_their_lines() {
        let text = "comment\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n\n  -----BEGIN PGP PUBLIC KEY BLOCK-----\nBBBB\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let blocks = armoured_blocks(text).unwrap();
        assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), [2, 7]);
        assert!(blocks[1].1.contains("BBBB"));
    }

    #[test]
    fn bad_armour_names_its_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("x\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n", 2, "public keys only"),
            ("-----BEGIN PGP SIGNATURE-----\n", 1, "is not a public key block"),
            ("\n\n-----BEGIN PGP PUBLIC KEY BLOCK-----\nAAAA\n", 3, "not closed"),
            ("hello\n", 1, "no `-----BEGIN PGP PUBLIC KEY BLOCK-----`"),
            (
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n-----END PGP SIGNATURE-----\n",
                2,
                "inside the key block that starts on line 1",
            ),
        ];
        for (text, line, want) in cases {
            let (l, m) = armoured_blocks(text).unwrap_err();
            assert_eq!(l, *line, "{text:?}");
            assert!(m.contains(want), "{text:?}: {m}");
        }
    }
}
