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
    pub fn fleet_options(&self) -> Result<crate::devices::fleet::FleetOptions, String> {
        let d = |field: &str, v: &str| {
            crate::format::parse_duration(v)
                .map(|s| s.min(i64::MAX as u64 / 2) as i64)
                .map_err(|m| format!("devices.{field}: {m}"))
        };
        let r = &self.remediation;
        Ok(crate::devices::fleet::FleetOptions {
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
    pub verify: Option<crate::source::verify::VerifyConfig>,
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

/// A bearer token, stored only as the sha256 hex of the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub sha256: String,
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
        let cfg: ControllerConfig = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let msg = e.to_string();
            invalid(
                line,
                column,
                msg.rsplit_once(" at line ").map_or(msg.clone(), |(m, _)| m.to_string()),
            )
        })?;
        let at = |needle: &str| crate::format::find_token(text, needle);
        if cfg.api_version != crate::format::API_VERSION {
            let (l, c) = at(&cfg.api_version);
            return Err(invalid(
                l,
                c,
                format!("apiVersion must be `{}`", crate::format::API_VERSION),
            ));
        }
        if cfg.kind != "ControllerConfig" {
            let (l, c) = at(&cfg.kind);
            return Err(invalid(l, c, "kind must be `ControllerConfig`".into()));
        }
        if let Err(m) = crate::format::parse_duration(&cfg.source.interval) {
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
        }
        if let Err(m) = cfg.devices.fleet_options() {
            let (l, c) = at("devices");
            return Err(invalid(l, c, m));
        }
        Ok(cfg)
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            crate::format::parse_duration(&self.source.interval)
                .unwrap_or(30)
                .max(1),
        )
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
