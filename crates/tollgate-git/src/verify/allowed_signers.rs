//! git's `allowed_signers` file (`gpg.ssh.allowedSignersFile`, the format of
//! `ssh-keygen -Y verify -f`): one key a line,
//! `principals [options] keytype base64 [comment]`.
//!
//! What a line can say and what Tollgate does with it:
//! - `principals`: comma-separated, each taken literally. ssh-keygen reads
//!   them as patterns, but a pattern (`*@acme.example`) cannot say *whose*
//!   key this is, and identity is the point here, so `*`, `?` and `!` are
//!   rejected.
//! - `namespaces="git,file"`: a pattern list the signature's namespace must
//!   match, as in ssh-keygen.
//! - `valid-after="20240101"`, `valid-before="20251231235959Z"`: the window
//!   in which the key may be used (`YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`;
//!   without `Z` the local time zone, as ssh-keygen reads them).
//! - `cert-authority`: rejected; certificates are not supported, so the
//!   signing keys must be listed themselves.
//! - anything else: rejected by name.

use std::path::{Path, PathBuf};

use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use ssh_key::public::{EcdsaPublicKey, KeyData};
use ssh_key::{Algorithm, HashAlg, PublicKey};

/// One key of the file and what it may sign for.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// 1-based line of the file.
    pub line: usize,
    /// Literal principals, in the order written.
    pub principals: Vec<String>,
    /// Namespace patterns the key may sign for; `None` means any.
    pub namespaces: Option<Vec<String>>,
    /// Unix seconds; the key is not valid before this.
    pub valid_after: Option<i64>,
    /// Unix seconds; the key is not valid after this.
    pub valid_before: Option<i64>,
    pub key: KeyData,
}

impl AllowedSigner {
    /// Whether a signature made for `namespace` is allowed by this line.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|patterns| matches_pattern_list(namespace, patterns))
    }

    /// Why the key is not valid at `at` (Unix seconds), if it is not. The
    /// bounds are inclusive, as ssh-keygen checks them.
    pub fn outside_window(&self, at: i64) -> Option<String> {
        if let Some(after) = self.valid_after.filter(|after| at < *after) {
            return Some(format!("not valid before {}", show_time(after)));
        }
        if let Some(before) = self.valid_before.filter(|before| at > *before) {
            return Some(format!("expired at {}", show_time(before)));
        }
        None
    }
}

fn show_time(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// A line that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct LineError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Parses the whole file; the first bad line is an error naming it. `path`
/// is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Vec<AllowedSigner>, LineError> {
    let mut signers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let signer = parse_line(line, content).map_err(|message| LineError {
            path: path.to_path_buf(),
            line,
            message,
        })?;
        signers.push(signer);
    }
    Ok(signers)
}

fn parse_line(line: usize, content: &str) -> Result<AllowedSigner, String> {
    // At most four fields: whatever follows the key is a comment, read as
    // nothing (quotes in it included), as ssh-keygen reads it.
    let mut rest = content;
    let mut fields = Vec::new();
    while fields.len() < 4 {
        match next_field(&mut rest)? {
            Some(field) => fields.push(field),
            None => break,
        }
        // With no options the key is complete after three fields.
        if fields.len() == 3 && is_key_type(&fields[1]) {
            break;
        }
    }
    let principals = parse_principals(&fields[0])?;
    let (options, key_at) = match fields.get(1) {
        None => return Err("a principal but no public key (expected `principals [options] keytype base64`)".into()),
        Some(f) if is_key_type(f) => (None, 1),
        Some(f) => match fields.get(2) {
            Some(k) if is_key_type(k) => (Some(f.as_str()), 2),
            _ if looks_like_key_type(f) => return Err(format!("unsupported key type `{f}`")),
            Some(k) if looks_like_key_type(k) => return Err(format!("unsupported key type `{k}`")),
            _ => {
                return Err(format!(
                    "no public key after `{f}` (expected `principals [options] keytype base64`)"
                ))
            }
        },
    };
    let key_type = &fields[key_at];
    let base64 = fields
        .get(key_at + 1)
        .ok_or_else(|| format!("`{key_type}` is not followed by the key itself"))?;
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| format!("the `{key_type}` key does not parse: {e}"))?;
    if key.algorithm().as_str() != key_type {
        return Err(format!(
            "the key is written as `{key_type}` but holds a `{}` key",
            key.algorithm()
        ));
    }
    check_supported(key.key_data())?;

    let mut signer = AllowedSigner {
        line,
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key: key.key_data().clone(),
    };
    if let Some(options) = options {
        for (name, value) in split_options(options)? {
            let want_value =
                |value: Option<String>| value.ok_or_else(|| format!("option `{name}` needs a value: {name}=\"...\""));
            match name.to_ascii_lowercase().as_str() {
                "namespaces" => {
                    let list = want_value(value)?;
                    let patterns: Vec<String> = list.split(',').map(str::to_string).collect();
                    if patterns.iter().any(String::is_empty) {
                        return Err(format!("namespaces=\"{list}\" has an empty entry"));
                    }
                    if signer.namespaces.replace(patterns).is_some() {
                        return Err("option `namespaces` is given twice".into());
                    }
                }
                "valid-after" => {
                    let t = parse_time(&want_value(value)?)?;
                    if signer.valid_after.replace(t).is_some() {
                        return Err("option `valid-after` is given twice".into());
                    }
                }
                "valid-before" => {
                    let t = parse_time(&want_value(value)?)?;
                    if signer.valid_before.replace(t).is_some() {
                        return Err("option `valid-before` is given twice".into());
                    }
                }
                "cert-authority" => {
                    return Err(
                        "`cert-authority` is not supported: SSH certificates are not accepted, list each signing key itself"
                            .into(),
                    )
                }
                _ => {
                    return Err(format!(
                        "unknown option `{name}` (supported: namespaces, valid-after, valid-before)"
                    ))
                }
            }
        }
    }
    if let (Some(after), Some(before)) = (signer.valid_after, signer.valid_before) {
        if after > before {
            return Err("valid-after is later than valid-before: the key is never valid".into());
        }
    }
    Ok(signer)
}

/// Takes the next field of `rest`: up to whitespace outside double quotes.
/// Quotes stay in the field (options are split again later); a backslash
/// escapes the next character inside quotes.
fn next_field(rest: &mut &str) -> Result<Option<String>, String> {
    let text = rest.trim_start();
    if text.is_empty() {
        *rest = text;
        return Ok(None);
    }
    let mut field = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            end = i;
            break;
        }
        field.push(c);
    }
    if quoted {
        return Err("a double quote is not closed".into());
    }
    *rest = &text[end..];
    Ok(Some(field))
}

fn parse_principals(field: &str) -> Result<Vec<String>, String> {
    let inner = match field.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or_else(|| format!("principals `{field}`: a quote must enclose the whole field"))?,
        None if field.contains('"') => {
            return Err(format!("principals `{field}`: a quote must enclose the whole field"))
        }
        None => field,
    };
    let mut principals = Vec::new();
    for principal in inner.split(',') {
        if principal.is_empty() {
            return Err(format!("principals `{field}` has an empty entry"));
        }
        if principal.contains(['*', '?', '!']) {
            return Err(format!(
                "principal `{principal}` is a pattern: a pattern cannot say whose key this is, so name each principal"
            ));
        }
        if principal
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(format!(
                "principal {principal:?} has a space, control character or backslash"
            ));
        }
        if !principals.iter().any(|p: &String| p == principal) {
            principals.push(principal.to_string());
        }
    }
    Ok(principals)
}

/// `name[="value"]` entries separated by commas (commas inside quotes belong
/// to the value).
fn split_options(options: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut rest = options;
    loop {
        let name_end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("options `{options}`: `{name}` is not an option name"));
        }
        rest = &rest[name_end..];
        let value = if let Some(after_eq) = rest.strip_prefix('=') {
            let Some(body) = after_eq.strip_prefix('"') else {
                return Err(format!("option `{name}`: the value must be in double quotes"));
            };
            let mut value = String::new();
            let mut chars = body.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, next)) => value.push(next),
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("option `{name}`: the value's quote is not closed"))?;
            rest = &body[end..];
            Some(value)
        } else {
            None
        };
        out.push((name.to_string(), value));
        match rest.strip_prefix(',') {
            Some(next) if !next.is_empty() => rest = next,
            Some(_) => return Err(format!("options `{options}` end with a comma")),
            None if rest.is_empty() => return Ok(out),
            None => return Err(format!("options `{options}`: expected a comma before `{rest}`")),
        }
    }
}

/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`, as ssh-keygen reads them: UTC
/// with `Z`, else the local time zone.
fn parse_time(value: &str) -> Result<i64, String> {
    let bad = || format!("`{value}` is not a time like 20240131, 202401311200 or 20240131120000Z");
    let (digits, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (value, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let naive = match digits.len() {
        8 => NaiveDate::parse_from_str(digits, "%Y%m%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
        12 => NaiveDateTime::parse_from_str(&format!("{digits}00"), "%Y%m%d%H%M%S").ok(),
        14 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }
    .ok_or_else(bad)?;
    if utc {
        Ok(naive.and_utc().timestamp())
    } else {
        Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.timestamp())
            .ok_or_else(|| format!("`{value}` does not exist in the local time zone"))
    }
}

/// A key type ssh-key knows by name (it maps any `name@domain` to
/// `Other`, which would make an option such as `namespaces="a@b"` look like
/// one).
fn is_key_type(field: &str) -> bool {
    matches!(Algorithm::new(field), Ok(a) if !matches!(a, Algorithm::Other(_)))
}

fn looks_like_key_type(field: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| field.starts_with(p))
}

/// Only keys this build can verify are accepted, so that an unusable key
/// is an error when the file is read, not a surprise at the first commit.
fn check_supported(key: &KeyData) -> Result<(), String> {
    match key {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) | KeyData::Rsa(_) => Ok(()),
        KeyData::Ecdsa(EcdsaPublicKey::NistP256(_) | EcdsaPublicKey::NistP384(_)) => Ok(()),
        other => Err(format!(
            "`{}` keys are not supported (ed25519, ecdsa-sha2-nistp256/384, rsa and their security-key forms are)",
            other.algorithm()
        )),
    }
}

/// The `SHA256:...` fingerprint ssh-keygen prints for a key.
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// ssh's pattern lists (`ssh_config(5)`, PATTERNS): comma-separated globs
/// with `*` and `?`; a match of a `!`-negated entry rejects outright,
/// otherwise any positive match accepts.
pub fn matches_pattern_list(subject: &str, patterns: &[String]) -> bool {
    let mut accepted = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), subject.as_bytes()) => return false,
            Some(_) => {}
            None => accepted |= glob(pattern.as_bytes(), subject.as_bytes()),
        }
    }
    accepted
}

fn glob(pattern: &[u8], subject: &[u8]) -> bool {
    // Iterative matching with one backtrack point for the last `*`.
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, s));
                p += 1;
            }
            Some(&c) if c == b'?' || c == subject[s] => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    p = sp + 1;
                    s = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINlEhnxtoW5kzPXMmDt06kkkUw+Zs/b1kYww7NKPGZPK";

    const P521: &str = "dana@acme.example ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAANbdC3OovMakPDGcWHzBJ5dfu8pcaI1W4AKQRKH7T/OTStRtZmNokN4mYo8AgkCdjQTnUL9UWvIRjfC7YqkHJpqQFJMIre4UIRhj9kg1Ii6c3/MY/vaaNkPwp3xKlTDqEOwvZPtV67qVZCs1IwKLH+MnwbWxvpfg09J1m9Fa8hGMwifQ==";

    fn one(line: &str) -> Result<AllowedSigner, String> {
        parse(Path::new("signers"), line)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn comments_blank_lines_and_trailing_comments() {
        let text = format!("# team keys\n\n   \n  # indented comment\ndana@acme.example {ED} dana's \"laptop\n");
        let signers = parse(Path::new("signers"), &text).unwrap();
        assert_eq!(signers.len(), 1);
        assert_eq!(signers[0].line, 5);
        assert_eq!(signers[0].principals, ["dana@acme.example"]);
        assert_eq!(signers[0].namespaces, None);
        assert_eq!(
            fingerprint(&signers[0].key),
            "SHA256:DMDsFqB1LPh8POHVipVjfcmOGhu+t5GQuxamyz7eeMY"
        );
    }

    #[test]
    fn several_principals_quoted_or_not() {
        let a = one(&format!("dana@acme.example,dana@old.example {ED}")).unwrap();
        assert_eq!(a.principals, ["dana@acme.example", "dana@old.example"]);
        let b = one(&format!("\"dana@acme.example,dana@old.example\" {ED}")).unwrap();
        assert_eq!(b.principals, a.principals);
        let c = one(&format!("dana@acme.example,dana@acme.example {ED}")).unwrap();
        assert_eq!(c.principals, ["dana@acme.example"], "a repeated principal counts once");
    }

    #[test]
    fn quoted_options_with_commas_and_escapes() {
        let s = one(&format!(
            "dana@acme.example namespaces=\"git,file\",valid-after=\"20240101Z\",Valid-Before=\"20301231235959Z\" {ED}"
        ))
        .unwrap();
        assert_eq!(
            s.namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert_eq!(s.valid_after, Some(1_704_067_200));
        assert_eq!(s.valid_before, Some(1_924_991_999));
        assert!(s.allows_namespace("git") && s.allows_namespace("file") && !s.allows_namespace("ssh"));
        assert_eq!(
            s.outside_window(1_704_067_199).as_deref(),
            Some("not valid before 2024-01-01 00:00:00 UTC")
        );
        assert_eq!(s.outside_window(1_704_067_200), None, "valid-after is inclusive");
        assert_eq!(s.outside_window(1_924_991_999), None, "valid-before is inclusive");
        assert_eq!(
            s.outside_window(1_924_992_000).as_deref(),
            Some("expired at 2030-12-31 23:59:59 UTC")
        );

        let escaped = one(&format!("dana@acme.example namespaces=\"g\\it\" {ED}")).unwrap();
        assert_eq!(escaped.namespaces.unwrap(), ["git"]);
        let minutes = one(&format!("dana@acme.example valid-before=\"202401311230Z\" {ED}")).unwrap();
        assert_eq!(minutes.valid_before, Some(1_706_704_200));
    }

    #[test]
    fn local_times_follow_the_local_zone() {
        let s = one(&format!("dana@acme.example valid-after=\"20240601\" {ED}")).unwrap();
        let local = Local
            .from_local_datetime(
                &NaiveDate::from_ymd_opt(2024, 6, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
            )
            .earliest()
            .unwrap();
        assert_eq!(s.valid_after, Some(local.timestamp()));
    }

    #[test]
    fn bad_lines_name_their_line_and_why() {
        let cases: &[(&str, &str)] = &[
            ("dana@acme.example", "a principal but no public key"),
            ("dana@acme.example ssh-ed25519", "not followed by the key itself"),
            ("dana@acme.example ssh-ed25519 AAAA", "does not parse"),
            ("*@acme.example KEY", "is a pattern"),
            ("dana@acme.example,!eli@acme.example KEY", "is a pattern"),
            ("dana@acme.example,,eli@acme.example KEY", "empty entry"),
            (
                "dana@acme.example cert-authority KEY",
                "`cert-authority` is not supported",
            ),
            (
                "dana@acme.example no-touch-required KEY",
                "unknown option `no-touch-required`",
            ),
            ("dana@acme.example namespaces=git KEY", "must be in double quotes"),
            ("dana@acme.example namespaces=\"git KEY", "quote is not closed"),
            ("dana@acme.example valid-after KEY", "needs a value"),
            ("dana@acme.example valid-after=\"2024-01-01\" KEY", "is not a time"),
            ("dana@acme.example valid-after=\"20241301\" KEY", "is not a time"),
            (
                "dana@acme.example valid-after=\"20240101\",valid-after=\"20240102\" KEY",
                "given twice",
            ),
            (
                "dana@acme.example valid-after=\"20250101Z\",valid-before=\"20240101Z\" KEY",
                "never valid",
            ),
            ("dana@acme.example namespaces=\"git\", KEY", "end with a comma"),
            (P521, "`ecdsa-sha2-nistp521` keys are not supported"),
            ("dana@acme.example opts ssh-foo AAAA", "unsupported key type `ssh-foo`"),
            ("dana@acme.example hello world", "no public key after `hello`"),
        ];
        for (line, want) in cases {
            let text = format!("# header\n\nok@acme.example {ED}\n{}\n", line.replace("KEY", ED));
            let err = parse(Path::new("team/allowed_signers"), &text).unwrap_err();
            assert_eq!(err.line, 4, "{line}");
            let shown = err.to_string();
            assert!(shown.starts_with("team/allowed_signers:4: "), "{shown}");
            assert!(shown.contains(want), "{line}: {shown}");
        }
    }

    #[test]
    fn a_key_type_must_match_the_key() {
        let rsa_name = ED.replace("ssh-ed25519", "ssh-rsa");
        let err = one(&format!("dana@acme.example {rsa_name}")).unwrap_err();
        assert!(err.contains("signers:1:"), "{err}");
    }

    #[test]
    fn pattern_lists_as_ssh_reads_them() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(matches_pattern_list("git", &list("git")));
        assert!(matches_pattern_list("git", &list("file,g?t")));
        assert!(matches_pattern_list("git", &list("*")));
        assert!(!matches_pattern_list("git", &list("*,!git")), "a negated match rejects");
        assert!(
            !matches_pattern_list("git", &list("!file")),
            "a negation alone accepts nothing"
        );
        assert!(matches_pattern_list("git", &list("!file,*")));
        assert!(
            !matches_pattern_list("git", &list("Git")),
            "namespaces are case-sensitive"
        );
        assert!(matches_pattern_list("a.b.c", &list("a*c")));
        assert!(!matches_pattern_list("a.b.d", &list("a*c")));
    }

    proptest! {
        /// Any literal principals and any order of the supported options
        /// read back as written.
        #[test]
        fn written_lines_read_back(
            principals in prop::collection::btree_set("[a-z][a-z0-9._-]{0,10}@[a-z]{1,8}\\.example", 1..4),
            namespaces in prop::option::of(prop::collection::vec("[a-z][a-z0-9-]{0,8}", 1..3)),
            after in prop::option::of(0i64..2_000_000_000),
            span in 0i64..1_000_000_000,
            before_first in any::<bool>(),
            quote_principals in any::<bool>(),
            comment in prop::option::of("[ -~]{0,20}"),
            blank_lines in 0usize..3,
        ) {
            let principals: Vec<String> = principals.into_iter().collect();
            let mut options = Vec::new();
            if let Some(ns) = &namespaces {
                options.push(format!("namespaces=\"{}\"", ns.join(",")));
            }
            let stamp = |t: i64| Utc.timestamp_opt(t, 0).unwrap().format("%Y%m%d%H%M%SZ").to_string();
            let before = after.map(|a| a + span);
            if let (Some(a), Some(b)) = (after, before) {
                let pair = [format!("valid-after=\"{}\"", stamp(a)), format!("valid-before=\"{}\"", stamp(b))];
                if before_first { options.extend(pair.into_iter().rev()) } else { options.extend(pair) }
            }
            let joined = principals.join(",");
            let field = if quote_principals { format!("\"{joined}\"") } else { joined };
            let opts = if options.is_empty() { String::new() } else { format!(" {}", options.join(",")) };
            let tail = comment.map(|c| format!(" {c}")).unwrap_or_default();
            let text = format!("{}{field}{opts} {ED}{tail}\n", "\n".repeat(blank_lines));
            let parsed = parse(Path::new("f"), &text).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(parsed[0].line, blank_lines + 1);
            prop_assert_eq!(&parsed[0].principals, &principals);
            prop_assert_eq!(&parsed[0].namespaces, &namespaces);
            prop_assert_eq!(parsed[0].valid_after, after);
            prop_assert_eq!(parsed[0].valid_before, before);
        }

        /// Whatever the input, parsing answers (never panics), and an error
        /// names a line that exists and is not a comment or blank.
        #[test]
        fn errors_point_at_a_real_line(lines in prop::collection::vec("[ -~\t]{0,40}", 0..6)) {
            let text = lines.join("\n");
            if let Err(e) = parse(Path::new("f"), &text) {
                let line = text.lines().nth(e.line - 1).unwrap().trim();
                prop_assert!(!line.is_empty() && !line.starts_with('#'));
            }
        }

        /// A glob without wildcards matches only itself; `*` matches anything.
        #[test]
        fn globs(subject in "[a-z.@]{0,12}", other in "[a-z.@]{0,12}") {
            prop_assert!(glob(subject.as_bytes(), subject.as_bytes()));
            prop_assert_eq!(glob(other.as_bytes(), subject.as_bytes()), other == subject);
            prop_assert!(glob(b"*", subject.as_bytes()));
            let prefix = &subject[..subject.len() / 2];
            let starred = format!("{prefix}*");
            prop_assert!(glob(starred.as_bytes(), subject.as_bytes()));
        }
    }
}
