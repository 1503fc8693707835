//! `ControllerConfig`: what `tollgate run --config FILE` reads (DESIGN 5).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerConfig {
    pub api_version: String,
    pub kind: String,
    pub source: SourceConfig,
    /// `sqlite:///abs/state.db`, `sqlite://relative.db` or `postgres://...`.
    pub store: String,
    pub listen: String,
    #[serde(default)]
    pub forge: ForgeConfig,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Where the bare mirror of the governed repo is kept; by default a
    /// `mirror` directory beside the config file.
    #[serde(default)]
    pub mirror: Option<PathBuf>,
    /// Drift, gates and remediation deadlines (DESIGN 8).
    #[serde(default)]
    pub devices: DevicesConfig,
    /// How long API clients may take and how many connections are served
    /// (docs/security.md).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The file the audit log's head is written to after every commit that
    /// appends to it, which `tollgate audit verify` checks the log against;
    /// by default `<db>.audit-head` beside an SQLite store. PostgreSQL keeps
    /// none unless this is set.
    #[serde(default)]
    pub audit_anchor: Option<PathBuf>,
}

/// `limits:` of the controller config; every field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// From its first byte, a request head must arrive within this.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// A connection without a request for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// A request body must arrive whole within this.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// Bytes per second a body must average once it has taken 5 s; 0: none.
    #[serde(default = "default_body_min_rate")]
    pub body_min_rate: u64,
    /// Connections served at once; by default what the descriptor limit
    /// leaves after headroom for the store, git and the loop.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// On shutdown, how long requests in flight may take to finish.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
}

fn default_header_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_body_timeout() -> String {
    "60s".into()
}
fn default_body_min_rate() -> u64 {
    1024
}
fn default_shutdown_grace() -> String {
    "10s".into()
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
            body_min_rate: default_body_min_rate(),
            max_connections: None,
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

impl LimitsConfig {
    /// The duration of `limits.{field}`: at least a second.
    pub fn duration(field: &str, value: &str) -> Result<std::time::Duration, String> {
        match tollgate_core::format::parse_duration(value) {
            Ok(0) => Err(format!("limits.{field}: must be at least 1s")),
            Ok(s) => Ok(std::time::Duration::from_secs(s)),
            Err(m) => Err(format!("limits.{field}: {m}")),
        }
    }

    /// Every field checked; an error names the field.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("header_timeout", &self.header_timeout),
            ("idle_timeout", &self.idle_timeout),
            ("body_timeout", &self.body_timeout),
            ("shutdown_grace", &self.shutdown_grace),
        ] {
            Self::duration(field, value)?;
        }
        if self.max_connections == Some(0) {
            return Err("limits.max_connections: must be at least 1".into());
        }
        Ok(())
    }
}

/// `devices:` of the controller config; every field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// After a baseline is published, how long devices may run another
    /// version before it is `version_drift`.
    #[serde(default = "default_grace")]
    pub grace: String,
    /// Silence after which a device has a `stale_checkin` finding.
    #[serde(default = "default_stale_after")]
    pub stale_after: String,
    /// Leave devices silent since the promotion out of its gate (default:
    /// they count as not applied).
    #[serde(default)]
    pub gate_ignore_silent: bool,
    /// Fewer reporting devices than this: the gate has no evidence.
    #[serde(default = "default_gate_min_devices")]
    pub gate_min_devices: u64,
    /// How long a finding may persist before it becomes a remediation item,
    /// by tier.
    #[serde(default)]
    pub remediation: RemediationDeadlines,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationDeadlines {
    #[serde(default = "default_t0")]
    pub t0: String,
    #[serde(default = "default_t1")]
    pub t1: String,
    #[serde(default = "default_t2")]
    pub t2: String,
    #[serde(default = "default_t3")]
    pub t3: String,
}

fn default_grace() -> String {
    "1h".into()
}
fn default_stale_after() -> String {
    "24h".into()
}
fn default_gate_min_devices() -> u64 {
    1
}
fn default_t0() -> String {
    "30d".into()
}
fn default_t1() -> String {
    "7d".into()
}
fn default_t2() -> String {
    "3d".into()
}
fn default_t3() -> String {
    "1d".into()
}

impl Default for RemediationDeadlines {
    fn default() -> Self {
        RemediationDeadlines {
            t0: default_t0(),
            t1: default_t1(),
            t2: default_t2(),
            t3: default_t3(),
        }
    }
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            grace: default_grace(),
            stale_after: default_stale_after(),
            gate_ignore_silent: false,
            gate_min_devices: default_gate_min_devices(),
            remediation: RemediationDeadlines::default(),
        }
    }
}

impl DevicesConfig {
    /// The durations, checked; an error names the field.
    pub fn fleet_options(&self) -> Result<tollgate_core::devices::fleet::FleetOptions, String> {
        let d = |field: &str, v: &str| {
            tollgate_core::format::parse_duration(v)
                .map(|s| s.min(i64::MAX as u64 / 2) as i64)
                .map_err(|m| format!("devices.{field}: {m}"))
        };
        let r = &self.remediation;
        Ok(tollgate_core::devices::fleet::FleetOptions {
            grace_secs: d("grace", &self.grace)?,
            stale_after_secs: d("stale_after", &self.stale_after)?,
            gate_ignore_silent: self.gate_ignore_silent,
            gate_min_devices: self.gate_min_devices,
            remediation_secs: [
                d("remediation.t0", &r.t0)?,
                d("remediation.t1", &r.t1)?,
                d("remediation.t2", &r.t2)?,
                d("remediation.t3", &r.t3)?,
            ],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Require signed commits (DESIGN 5): who signed is who made a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<tollgate_git::verify::VerifyConfig>,
}

fn default_branch() -> String {
    "main".into()
}
fn default_interval() -> String {
    "30s".into()
}

/// Where approvals come from. Written `forge: {local: {}}`; the GitHub forge
/// arrives with its own work, and until then naming it is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeConfig {
    /// Approvals through the API; identity = token name; groups from the
    /// `users` of `tollgate.yaml`.
    pub local: LocalForge,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalForge {}

impl Default for ForgeConfig {
    fn default() -> Self {
        ForgeConfig { local: LocalForge {} }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Reporter,
    Approver,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reporter => "reporter",
            Role::Approver => "approver",
            Role::Operator => "operator",
        }
    }
}

/// A bearer token, stored only as the sha256 hex of the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    /// What a reporter token may report; `None` (reporters only): fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ReporterScope>,
}

/// `tokens[].scope` of a reporter token: the devices whose reports it may
/// send. Each key is optional; an absent one leaves that axis open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterScope {
    /// The platforms its reports may claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<tollgate_core::ids::Platform>>,
    /// The rings its devices may resolve to, by the ring selectors of the
    /// config in force. Ring names are checked against that config when
    /// reports arrive: rings live in the governed repo, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rings: Option<Vec<String>>,
    /// Device ids it may report start with one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_prefixes: Option<Vec<String>>,
}

impl ReporterScope {
    /// The first problem, as `.key: why` or `: why` to follow `scope`, with
    /// the text to point at when there is one.
    fn check(&self) -> Result<(), (String, Option<&str>)> {
        if self.platforms.is_none() && self.rings.is_none() && self.device_prefixes.is_none() {
            return Err((
                ": restricts nothing; name platforms, rings or device_prefixes, or leave scope out for a \
                 fleet-wide token"
                    .into(),
                None,
            ));
        }
        let empty = |key: &str, what: &str| {
            Err((
                format!(".{key}: empty, so the token could report no device; leave {key} out to allow every {what}"),
                None,
            ))
        };
        if self.platforms.as_ref().is_some_and(Vec::is_empty) {
            return empty("platforms", "platform");
        }
        if let Some(rings) = &self.rings {
            if rings.is_empty() {
                return empty("rings", "ring");
            }
            for (k, ring) in rings.iter().enumerate() {
                tollgate_core::ids::check_dns_label(ring).map_err(|m| {
                    (
                        format!(".rings[{k}]: {m} (ring names are those of tollgate.yaml)"),
                        Some(&**ring),
                    )
                })?;
            }
        }
        if let Some(prefixes) = &self.device_prefixes {
            if prefixes.is_empty() {
                return empty("device_prefixes", "device id");
            }
            for (k, prefix) in prefixes.iter().enumerate() {
                if prefix.is_empty() {
                    return Err((
                        format!(
                            ".device_prefixes[{k}]: empty, which every device id starts with; leave \
                             device_prefixes out to allow every device id"
                        ),
                        None,
                    ));
                }
                tollgate_core::devices::report::check_device_id(prefix)
                    .map_err(|m| (format!(".device_prefixes[{k}]: {m}"), Some(&**prefix)))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<ControllerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(path, &text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if cfg.mirror.is_none() {
            cfg.mirror = Some(dir.join("mirror"));
        }
        // The trust files of source.verify sit beside the config, like the mirror.
        if let Some(verify) = &mut cfg.source.verify {
            *verify = verify.resolved(dir);
        }
        Ok(cfg)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ControllerConfig, ConfigError> {
        let invalid = |line, column, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        let text = tollgate_core::format::strip_bom(text);
        let cfg: ControllerConfig = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let msg = e.to_string();
            invalid(
                line,
                column,
                msg.rsplit_once(" at line ").map_or(msg.clone(), |(m, _)| m.to_string()),
            )
        })?;
        let at = |needle: &str| tollgate_core::format::find_token(text, needle);
        if cfg.api_version != tollgate_core::format::API_VERSION {
            let (l, c) = at(&cfg.api_version);
            return Err(invalid(
                l,
                c,
                format!("apiVersion must be `{}`", tollgate_core::format::API_VERSION),
            ));
        }
        if cfg.kind != "ControllerConfig" {
            let (l, c) = at(&cfg.kind);
            return Err(invalid(l, c, "kind must be `ControllerConfig`".into()));
        }
        if let Err(m) = tollgate_core::format::parse_duration(&cfg.source.interval) {
            let (l, c) = at(&cfg.source.interval);
            return Err(invalid(l, c, format!("source.interval: {m}")));
        }
        if let Some(Err(m)) = cfg.source.verify.as_ref().map(|v| v.check()) {
            let (l, c) = at("verify");
            return Err(invalid(l, c, format!("source.verify: {m}")));
        }
        if cfg.listen.parse::<std::net::SocketAddr>().is_err() {
            let (l, c) = at(&cfg.listen);
            return Err(invalid(
                l,
                c,
                format!("listen {:?} is not an address like 127.0.0.1:8080", cfg.listen),
            ));
        }
        for (i, t) in cfg.tokens.iter().enumerate() {
            let (l, c) = at(&t.sha256);
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(invalid(
                    l,
                    c,
                    format!(
                        "tokens[{i}].sha256 must be 64 lowercase hex characters (the token's sha256, never the token)"
                    ),
                ));
            }
            if cfg.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(l, c, format!("token name `{}` is used twice", t.name)));
            }
            if let Some(scope) = &t.scope {
                let (l, c) = in_entry(text, (l, c), "scope");
                if t.role != Role::Reporter {
                    return Err(invalid(
                        l,
                        c,
                        format!(
                            "tokens[{i}].scope: only reporter tokens take a scope; `{}` is {} {} token",
                            t.name,
                            if t.role == Role::Viewer { "a" } else { "an" },
                            t.role.as_str()
                        ),
                    ));
                }
                if let Err((m, needle)) = scope.check() {
                    let (l, c) = needle.map_or((l, c), |n| in_entry(text, (l, c), n));
                    return Err(invalid(l, c, format!("tokens[{i}].scope{m}")));
                }
            }
        }
        if let Err(m) = cfg.devices.fleet_options() {
            let (l, c) = at("devices");
            return Err(invalid(l, c, m));
        }
        if let Err(m) = cfg.limits.check() {
            let (l, c) = at("limits");
            return Err(invalid(l, c, m));
        }
        Ok(cfg)
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            tollgate_core::format::parse_duration(&self.source.interval)
                .unwrap_or(30)
                .max(1),
        )
    }
}

/// Where `needle` first stands, as a whole token, in the list entry that
/// holds the position `anchor` (a `- ` item, flow or block style); the
/// anchor itself when it is not found there.
fn in_entry(text: &str, anchor: (usize, usize), needle: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(first) = (0..anchor.0.min(lines.len()))
        .rev()
        .find(|&i| lines[i].trim_start().starts_with("- "))
    else {
        return anchor;
    };
    let item = indent(lines[first]);
    let end = (first + 1..lines.len())
        .find(|&i| {
            let l = lines[i];
            !l.trim().is_empty() && (indent(l) < item || (indent(l) == item && l.trim_start().starts_with("- ")))
        })
        .unwrap_or(lines.len());
    if end < anchor.0 {
        // The anchor is not inside a block-style entry (a flow-style list).
        return anchor;
    }
    let entry = lines[first..end].join("\n");
    // An entry starts with indentation or `- `: 1:1 is find_token's "not found".
    match tollgate_core::format::find_token(&entry, needle) {
        (1, 1) => anchor,
        (l, c) => (first + l, c),
    }
}

/// sha256 hex of a bearer token, as stored in the config.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: ControllerConfig
source: {url: "file:///srv/baselines.git", branch: main, interval: 30s}
store: "sqlite:///var/lib/tollgate/state.db"
listen: "127.0.0.1:8080"
forge: {local: {}}
tokens:
  - {name: sec1, role: approver, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
"#;

    const SCOPED: &str = r#"  - {name: mdm-reporter, role: reporter, sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
     scope: {platforms: [ios, ipados], rings: [canary, pilot, broad], device_prefixes: ["serial:"]}}
"#;

    fn with_token(entry: &str) -> String {
        format!("{GOOD}{entry}")
    }

    fn error(text: &str) -> String {
        ControllerConfig::parse(Path::new("c.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_reporter_scope_as_design_spells_it() {
        let c = ControllerConfig::parse(Path::new("c.yaml"), &with_token(SCOPED)).unwrap();
        assert_eq!(c.tokens[0].scope, None);
        let scope = c.tokens[1].scope.as_ref().unwrap();
        assert_eq!(
            scope.platforms.as_deref(),
            Some(&[tollgate_core::ids::Platform::Ios, tollgate_core::ids::Platform::Ipados][..])
        );
        assert_eq!(
            scope.rings.as_deref(),
            Some(&["canary".to_string(), "pilot".into(), "broad".into()][..])
        );
        assert_eq!(scope.device_prefixes.as_deref(), Some(&["serial:".to_string()][..]));
        // Each key is optional.
        let only_rings = SCOPED
            .replace("platforms: [ios, ipados], ", "")
            .replace(", device_prefixes: [\"serial:\"]", "");
        let c = ControllerConfig::parse(Path::new("c.yaml"), &with_token(&only_rings)).unwrap();
        let scope = c.tokens[1].scope.as_ref().unwrap();
        assert!(scope.platforms.is_none() && scope.device_prefixes.is_none() && scope.rings.is_some());
    }

    #[test]
    fn a_bad_scope_is_an_error_naming_its_key() {
        let cases = [
            (
                SCOPED.replace("ipados", "blackberry"),
                "c.yaml:10:31: tokens[1].scope.platforms[1]: unknown variant `blackberry`",
            ),
            (
                SCOPED.replace("role: reporter", "role: approver"),
                "c.yaml:10:6: tokens[1].scope: only reporter tokens take a scope; `mdm-reporter` is an approver token",
            ),
            (
                SCOPED.replace("role: reporter", "role: viewer"),
                "c.yaml:10:6: tokens[1].scope: only reporter tokens take a scope; `mdm-reporter` is a viewer token",
            ),
            (
                SCOPED.replace("platforms: [ios, ipados]", "platforms: []"),
                "c.yaml:10:6: tokens[1].scope.platforms: empty, so the token could report no device",
            ),
            (
                SCOPED.replace("[canary, pilot, broad]", "[canary, Pilot]"),
                "c.yaml:10:56: tokens[1].scope.rings[1]: \"Pilot\" may only hold lowercase letters",
            ),
            (
                SCOPED.replace("[\"serial:\"]", "[\"serial:\", \"\"]"),
                "c.yaml:10:6: tokens[1].scope.device_prefixes[1]: empty, which every device id starts with",
            ),
            (
                SCOPED.replace("\"serial:\"", "\"serial: \""),
                "c.yaml:10:90: tokens[1].scope.device_prefixes[0]: \"serial: \" holds U+0020 (whitespace)",
            ),
            (
                SCOPED.replace("\"serial:\"", "\"serial:\\u202E\""),
                "tokens[1].scope.device_prefixes[0]: \"serial:\\u{202e}\" holds U+202E (a bidirectional override)",
            ),
            (
                SCOPED.replace(
                    "scope: {platforms: [ios, ipados], rings: [canary, pilot, broad], device_prefixes: [\"serial:\"]}",
                    "scope: {}",
                ),
                "c.yaml:10:6: tokens[1].scope: restricts nothing",
            ),
            (
                SCOPED.replace("rings:", "ringz:"),
                "tokens[1].scope: unknown field `ringz`, expected one of `platforms`, `rings`, `device_prefixes`",
            ),
        ];
        for (entry, expected) in cases {
            let e = error(&with_token(&entry));
            assert!(e.contains(expected), "{e}\n  expected {expected}");
        }
        // In block style the position is the scope key of the right entry.
        let block = "  - name: r2\n    role: approver\n    sha256: \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n    scope:\n      rings: [canary]\n";
        let e = error(&with_token(block));
        assert!(
            e.starts_with("c.yaml:12:5: tokens[1].scope: only reporter tokens"),
            "{e}"
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let marked = format!("\u{FEFF}{GOOD}");
        assert_eq!(
            ControllerConfig::parse(Path::new("c.yaml"), &marked).unwrap(),
            ControllerConfig::parse(Path::new("c.yaml"), GOOD).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.yaml");
        std::fs::write(&path, [&b"\xEF\xBB\xBF"[..], GOOD.as_bytes()].concat()).unwrap();
        let loaded = ControllerConfig::load(&path).unwrap();
        assert_eq!(loaded.tokens[0].name, "sec1");
        // Positions are those an editor shows, which does not show the mark.
        let e = ControllerConfig::parse(Path::new("c.yaml"), &marked.replace("listen:", "listne:")).unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:5:1: unknown field `listne`"), "{e}");
        let e = error(&format!(
            "\u{FEFF}{}",
            GOOD.replace("apiVersion: tollgate.dev/v1alpha1", "apiVersion: v2")
        ));
        assert!(e.starts_with("c.yaml:1:13: apiVersion must be"), "{e}");
    }

    #[test]
    fn parses_the_design_example() {
        let c = ControllerConfig::parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.tokens[0].role, Role::Approver);
        assert_eq!(c.interval(), std::time::Duration::from_secs(30));
        assert_eq!(token_hash("test"), c.tokens[0].sha256);
    }

    #[test]
    fn errors_are_positioned_and_secrets_are_never_inline() {
        let e = ControllerConfig::parse(Path::new("c.yaml"), &GOOD.replace("listen:", "listne:")).unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:5:1: unknown field `listne`"), "{e}");
        let e = ControllerConfig::parse(
            Path::new("c.yaml"),
            &GOOD.replace(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "hunter2",
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("c.yaml:8:"), "{e}");
        assert!(e.to_string().contains("never the token"), "{e}");
        let e =
            ControllerConfig::parse(Path::new("c.yaml"), &GOOD.replace("interval: 30s", "interval: soon")).unwrap_err();
        assert!(e.to_string().contains("source.interval"), "{e}");
    }

    #[test]
    fn limits_are_optional_checked_and_closed() {
        let c = ControllerConfig::parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        let with = |limits: &str| ControllerConfig::parse(Path::new("c.yaml"), &format!("{GOOD}limits: {limits}\n"));
        let c = with("{header_timeout: 2s, max_connections: 50, body_min_rate: 0}").unwrap();
        assert_eq!(c.limits.header_timeout, "2s");
        assert_eq!(c.limits.max_connections, Some(50));
        assert_eq!(c.limits.idle_timeout, "60s", "the others keep their defaults");
        let e = with("{header_timout: 2s}").unwrap_err().to_string();
        assert!(
            e.contains("c.yaml:9:") && e.contains("unknown field `header_timout`"),
            "{e}"
        );
        let e = with("{idle_timeout: 0s}").unwrap_err().to_string();
        assert!(
            e.contains("c.yaml:9:") && e.contains("limits.idle_timeout: must be at least 1s"),
            "{e}"
        );
        let e = with("{body_timeout: soon}").unwrap_err().to_string();
        assert!(e.contains("limits.body_timeout"), "{e}");
        let e = with("{max_connections: 0}").unwrap_err().to_string();
        assert!(e.contains("limits.max_connections"), "{e}");
    }

    const VERIFY: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: ControllerConfig
source:
  url: "file:///srv/baselines.git"
  verify:
    allowed_signers: keys/allowed_signers
    openpgp_keys: /etc/tollgate/keys.asc
    signers: {"dana@acme.example": dana, "0xABCDEF0123456789": eli}
store: "sqlite:///var/lib/tollgate/state.db"
listen: "127.0.0.1:8080"
"#;

    #[test]
    fn source_verify_is_read_and_its_paths_sit_beside_the_config() {
        let c = ControllerConfig::parse(Path::new("c.yaml"), VERIFY).unwrap();
        let v = c.source.verify.as_ref().unwrap();
        assert_eq!(v.allowed_signers.as_deref(), Some(Path::new("keys/allowed_signers")));
        assert_eq!(v.signers["dana@acme.example"], "dana");
        assert_eq!(v.signers["0xABCDEF0123456789"], "eli");
        assert!(ControllerConfig::parse(Path::new("c.yaml"), GOOD)
            .unwrap()
            .source
            .verify
            .is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.yaml");
        std::fs::write(&path, VERIFY).unwrap();
        let loaded = ControllerConfig::load(&path).unwrap();
        let v = loaded.source.verify.unwrap();
        assert_eq!(v.allowed_signers.unwrap(), dir.path().join("keys/allowed_signers"));
        assert_eq!(
            v.openpgp_keys.unwrap(),
            Path::new("/etc/tollgate/keys.asc"),
            "absolute paths stay"
        );
    }

    #[test]
    fn source_verify_errors_are_positioned() {
        let e =
            ControllerConfig::parse(Path::new("c.yaml"), &VERIFY.replace("openpgp_keys:", "openpgp_key:")).unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:7:"), "{e}");
        assert!(e.to_string().contains("unknown field `openpgp_key`"), "{e}");

        let neither = VERIFY
            .replace("    allowed_signers: keys/allowed_signers\n", "")
            .replace("    openpgp_keys: /etc/tollgate/keys.asc\n", "");
        let e = ControllerConfig::parse(Path::new("c.yaml"), &neither).unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:5:"), "{e}");
        assert!(e.to_string().contains("source.verify: give allowed_signers"), "{e}");

        let no_signers = VERIFY.replace(
            r#"signers: {"dana@acme.example": dana, "0xABCDEF0123456789": eli}"#,
            "signers: {}",
        );
        let e = ControllerConfig::parse(Path::new("c.yaml"), &no_signers).unwrap_err();
        assert!(e.to_string().contains("signers is empty"), "{e}");

        let missing = VERIFY.replace(
            r#"    signers: {"dana@acme.example": dana, "0xABCDEF0123456789": eli}
"#,
            "",
        );
        let e = ControllerConfig::parse(Path::new("c.yaml"), &missing).unwrap_err();
        assert!(e.to_string().contains("missing field `signers`"), "{e}");

        let twice = VERIFY.replace(r#""0xABCDEF0123456789": eli"#, r#""dana@acme.example": eli"#);
        let e = ControllerConfig::parse(Path::new("c.yaml"), &twice).unwrap_err();
        assert!(e.to_string().contains("c.yaml:8:"), "{e}");
    }
}
