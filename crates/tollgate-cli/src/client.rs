//! Commands that talk to a running controller over its HTTP API:
//! `status`, `history`, `approve`, `halt`, `audit verify|export`.
//!
//! The server is `--server` or `TOLLGATE_SERVER`, the bearer token `--token`
//! or (better: flags show in process lists) `TOLLGATE_TOKEN`. A refusal from
//! the server is shown with its code and message and exits 1; with `-o json`
//! the server's error object is printed as it came.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{write_json, Exit, Format};
use tollgate_core::audit::{AuditError, ChainHead, Verifier, VerifyReport};
use tollgate_http::routes::{AUDIT_ANCHOR_ERROR, AUDIT_ANCHOR_HASH, AUDIT_ANCHOR_SEQ, AUDIT_HEAD_HASH, AUDIT_HEAD_SEQ};

/// A bearer token from the command line or the environment. It never prints.
#[derive(Clone)]
pub struct ApiToken(String);

impl FromStr for ApiToken {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ApiToken(s.trim().to_string()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The controller's API, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token; prefer TOLLGATE_TOKEN, since flags show in process lists.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<ApiToken>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The baseline's metadata.name.
    pub baseline: String,
    /// Show at most this many promotions.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The promotion id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    /// Record a request for changes instead of an approval.
    #[arg(long)]
    pub request_changes: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HaltArgs {
    /// The promotion id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    /// Why the promotion stops (kept in the audit log).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit log's hash chain; exit 1 if it is broken.
    Verify(AuditVerifyArgs),
    /// Write the audit log as JSONL, for an auditor to verify independently.
    Export(AuditExportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AuditVerifyArgs {
    /// Verify this JSONL export instead of the server's log (no server needed).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AuditExportArgs {
    /// Write here instead of to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What the server said when it refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server refused: {}: {} (HTTP {})",
            self.code, self.message, self.status
        )
    }
}

impl std::error::Error for ServerError {}

/// A client of one controller's API.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: Option<ApiToken>,
}

impl Api {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Api> {
        let base = args.server.trim().trim_end_matches('/').to_string();
        let Some(rest) = base.strip_prefix("http://") else {
            if base.starts_with("https://") {
                bail!(
                    "--server {base}: this build speaks plain HTTP only; reach the controller through \
                     a port-forward or a TLS-terminating proxy on this machine"
                );
            }
            bail!("--server {base:?} must be a URL like http://127.0.0.1:8080");
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            bail!("--server {base:?} must be a URL like http://127.0.0.1:8080 (host and port only)");
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build();
        let token = args.token.clone().filter(|t| !t.0.is_empty());
        Ok(Api {
            agent: ureq::Agent::new_with_config(config),
            base,
            token,
        })
    }

    fn check(&self, response: ureq::http::Response<ureq::Body>) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut response = response;
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let error = parsed.as_ref().map(|v| &v["error"]);
        let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_string);
        Err(ServerError {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message")
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("unexpected status").to_string()),
        }
        .into())
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::Error::new(e).context(format!("cannot reach the controller at {}", self.base))
    }

    /// GETs `path` and returns the response, failing on any non-2xx status.
    pub fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {}", t.0));
        }
        let response = req.call().map_err(|e| self.unreachable(e))?;
        self.check(response)
    }

    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let mut response = self.get(path)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()?;
        serde_json::from_str(&text).with_context(|| format!("the server's answer to {path} is not JSON"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {}", t.0));
        }
        let response = req.send(body.to_string().as_bytes()).map_err(|e| self.unreachable(e))?;
        let mut response = self.check(response)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()?;
        serde_json::from_str(&text).with_context(|| format!("the server's answer to {path} is not JSON"))
    }
}

/// Runs a command; with `-o json` a server refusal is printed as JSON on
/// `out` (exit 1) rather than as a message on stderr.
pub(crate) fn respond(
    out: &mut dyn Write,
    format: Format,
    command: impl FnOnce(&mut dyn Write) -> anyhow::Result<Exit>,
) -> anyhow::Result<Exit> {
    match command(out) {
        Err(e) if format == Format::Json => match e.downcast_ref::<ServerError>() {
            Some(s) => {
                write_json(
                    out,
                    &json!({"error": {"code": s.code, "message": s.message, "status": s.status}}),
                )?;
                Ok(Exit::Failed)
            }
            None => Err(e),
        },
        other => other,
    }
}

fn short(sha: &Value) -> String {
    sha.as_str().map_or("-".to_string(), |s| s.chars().take(12).collect())
}

/// A promotion's phase as `tollgate status` words it.
pub(crate) fn phase_text(p: &Value) -> String {
    let phase = &p["phase"];
    let name = phase["phase"].as_str().unwrap_or("?");
    let ring = phase["ring"]
        .as_u64()
        .and_then(|r| p["rings"][r as usize]["name"].as_str());
    match (name, ring) {
        ("halted", _) => format!("halted: {}", phase["reason"].as_str().unwrap_or("")),
        ("waiting_window", Some(ring)) => {
            format!("waiting_window ({ring}): {}", phase["reason"].as_str().unwrap_or(""))
        }
        (_, Some(ring)) => format!("{name} ({ring})"),
        (_, None) => name.to_string(),
    }
}

pub fn status_cmd(args: &StatusArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let s = api.get_json("/v1/status")?;
        if format == Format::Json {
            write_json(out, &s)?;
            return Ok(Exit::Ok);
        }
        let c = &s["controller"];
        let l = &c["loop"];
        writeln!(
            out,
            "source      {} @ {}",
            s["source"]["branch"].as_str().unwrap_or("?"),
            short(&s["source"]["tip"])
        )?;
        let role = match l["leader"].as_bool() {
            Some(true) => "leader",
            Some(false) => "follower (not leader: serves reads only)",
            None => "leadership not checked yet",
        };
        let ready = if c["ready"].as_bool() == Some(true) {
            "ready".to_string()
        } else {
            format!("not ready: {}", c["not_ready_reason"].as_str().unwrap_or("?"))
        };
        writeln!(out, "controller  {role}; {ready}")?;
        writeln!(
            out,
            "loop        every {}s; last pass {}; last success {}",
            c["interval_seconds"],
            l["last_pass_at"].as_str().unwrap_or("never"),
            l["last_success_at"].as_str().unwrap_or("never")
        )?;
        if let Some(e) = l["last_error"].as_object() {
            writeln!(
                out,
                "last error  {} ({}) at {}: {}",
                e["stage"].as_str().unwrap_or("?"),
                e["class"].as_str().unwrap_or("?"),
                e["at"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            )?;
        }
        writeln!(out, "rings")?;
        let rings = s["rings"].as_array().cloned().unwrap_or_default();
        if rings.is_empty() {
            writeln!(out, "  (nothing promoted yet)")?;
        }
        for r in &rings {
            let documents = r["documents"].as_object().map_or(0, |d| d.len());
            let pins = r["pins"].as_object().map_or(0, |d| d.len());
            let pinned = if pins > 0 {
                format!(", {pins} pinned by rollback")
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {:<10} {}  promotion {}  published {}  ({documents} documents{pinned})",
                r["ring"].as_str().unwrap_or("?"),
                short(&r["base_revision"]),
                r["promotion"],
                r["published_at"].as_str().unwrap_or("?")
            )?;
        }
        for sp in s["split"].as_array().into_iter().flatten() {
            let docs: Vec<&str> = sp["documents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            writeln!(
                out,
                "  split: {} runs other content than {} for {}",
                sp["ring"].as_str().unwrap_or("?"),
                sp["differs_from"].as_str().unwrap_or("?"),
                docs.join(", ")
            )?;
        }
        if let Some(r) = s["source"]["refused"].as_object() {
            writeln!(
                out,
                "refused     {} is not promoted: {}",
                short(&r["revision"]),
                r["errors"]
                    .as_array()
                    .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default()
            )?;
        }
        let live: Vec<String> = s["promotions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| n.as_u64() != Some(0))
                    .map(|(p, n)| format!("{p} {n}"))
                    .collect()
            })
            .unwrap_or_default();
        let live = if live.is_empty() {
            "none".to_string()
        } else {
            live.join(", ")
        };
        writeln!(out, "live        {live}")?;
        Ok(Exit::Ok)
    })
}

pub fn history_cmd(args: &HistoryArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    tollgate_core::ids::check_dns_label(&args.baseline).map_err(|e| anyhow::anyhow!("baseline name {e}"))?;
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let key = format!("baseline/{}", args.baseline);
        let mut found: Vec<Value> = Vec::new();
        let mut before: Option<i64> = None;
        'pages: loop {
            let path = match before {
                Some(b) => format!("/v1/promotions?limit=500&before={b}"),
                None => "/v1/promotions?limit=500".to_string(),
            };
            let page = api.get_json(&path)?;
            for p in page["promotions"].as_array().into_iter().flatten() {
                let touches = p["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["key"].as_str() == Some(&key));
                if touches {
                    found.push(p.clone());
                    if found.len() >= args.limit as usize {
                        break 'pages;
                    }
                }
            }
            match page["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        if format == Format::Json {
            write_json(out, &json!({"baseline": args.baseline, "promotions": found}))?;
            return Ok(Exit::Ok);
        }
        if found.is_empty() {
            writeln!(out, "no promotion has changed baseline {}", args.baseline)?;
            return Ok(Exit::Ok);
        }
        writeln!(
            out,
            "{:<6} {:<12}  {:<4} {:<10} {:<24} PHASE",
            "ID", "REVISION", "TIER", "KIND", "CREATED"
        )?;
        for p in &found {
            writeln!(
                out,
                "{:<6} {:<12}  {:<4} {:<10} {:<24} {}",
                p["id"].to_string(),
                short(&p["revision"]),
                format!("T{}", p["tier"]),
                p["kind"].as_str().unwrap_or("?"),
                p["created_at"].as_str().unwrap_or("?"),
                phase_text(p)
            )?;
        }
        Ok(Exit::Ok)
    })
}

/// People-readable approval state of a promotion view.
fn write_approvals(out: &mut dyn Write, view: &Value) -> anyhow::Result<()> {
    let a = &view["approvals"];
    let verdict = if a["satisfied"].as_bool() == Some(true) {
        "satisfied"
    } else {
        "not satisfied"
    };
    match a["ring"].as_str() {
        Some(ring) => writeln!(out, "approvals for {ring}: {verdict}")?,
        // Finished: no ring is waiting any more.
        None => writeln!(out, "approvals: {verdict}")?,
    }
    for c in a["changes"].as_array().into_iter().flatten() {
        let counted: Vec<&str> = c["counted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["reviewer"].as_str())
            .collect();
        writeln!(
            out,
            "  {} (T{}): {} of {} counted{}",
            c["change"].as_str().unwrap_or("?"),
            c["tier"],
            counted.len(),
            c["required"],
            if counted.is_empty() {
                String::new()
            } else {
                format!(" ({})", counted.join(", "))
            }
        )?;
        for r in c["rejected"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "    not counted: {}: {}",
                r["reviewer"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("?")
            )?;
        }
        if let Some(missing) = c["missing"].as_str().filter(|m| !m.is_empty()) {
            writeln!(out, "    missing: {missing}")?;
        }
    }
    Ok(())
}

pub fn approve_cmd(args: &ApproveArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let api = Api::new(&args.server)?;
    let state = if args.request_changes {
        "changes_requested"
    } else {
        "approved"
    };
    respond(out, format, |out| {
        let view = api.post_json(&format!("/v1/promotions/{}/approve", args.id), &json!({"state": state}))?;
        if format == Format::Json {
            write_json(out, &view)?;
            return Ok(Exit::Ok);
        }
        let p = &view["promotion"];
        writeln!(
            out,
            "promotion {}: review recorded ({state}); now {}",
            args.id,
            phase_text(p)
        )?;
        write_approvals(out, &view)?;
        Ok(Exit::Ok)
    })
}

#[derive(Debug, Clone, Args)]
pub struct BreakGlassArgs {
    /// The promotion id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    /// Why approvals, windows and freezes are skipped (kept in the audit log).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn break_glass_cmd(args: &BreakGlassArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why approvals are skipped");
    }
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let view = api.post_json(
            &format!("/v1/promotions/{}/break-glass", args.id),
            &json!({"reason": args.reason}),
        )?;
        if format == Format::Json {
            write_json(out, &view)?;
        } else {
            writeln!(
                out,
                "promotion {}: BREAK-GLASS recorded; now {}. A follow-up review with the normal approvals is due within 24h.",
                args.id,
                phase_text(&view["promotion"])
            )?;
        }
        Ok(Exit::Ok)
    })
}

pub fn halt_cmd(args: &HaltArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why the promotion stops");
    }
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let view = api.post_json(
            &format!("/v1/promotions/{}/halt", args.id),
            &json!({"reason": args.reason}),
        )?;
        if format == Format::Json {
            write_json(out, &view)?;
            return Ok(Exit::Ok);
        }
        writeln!(out, "promotion {}: {}", args.id, phase_text(&view["promotion"]))?;
        Ok(Exit::Ok)
    })
}

pub fn audit_cmd(command: &AuditCommand, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    match command {
        AuditCommand::Verify(args) => audit_verify_cmd(args, out, format),
        AuditCommand::Export(args) => audit_export_cmd(args, out, format),
    }
}

/// A header of a response, as text.
fn header_text(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The head the server says its export ends at, if it said.
fn export_head(response: &ureq::http::Response<ureq::Body>) -> Option<ChainHead> {
    let seq = header_text(response, AUDIT_HEAD_SEQ)?.parse().ok()?;
    Some(ChainHead {
        seq,
        hash: header_text(response, AUDIT_HEAD_HASH)?,
    })
}

/// What a verified log was checked against beyond its own chain.
enum Anchoring {
    /// An export file: nothing but the chain.
    File,
    /// The server keeps no anchor.
    NotKept,
    /// The head the server's store anchored outside its database.
    At(ChainHead),
}

/// The anchor the server sent with its export; `Err` when it has one but
/// could not read it.
fn export_anchor(response: &ureq::http::Response<ureq::Body>) -> Result<Anchoring, String> {
    if let Some(error) = header_text(response, AUDIT_ANCHOR_ERROR) {
        return Err(error);
    }
    let seq = header_text(response, AUDIT_ANCHOR_SEQ);
    let hash = header_text(response, AUDIT_ANCHOR_HASH);
    match (seq, hash) {
        (None, None) => Ok(Anchoring::NotKept),
        (Some(seq), Some(hash)) => match seq.parse() {
            Ok(seq) => Ok(Anchoring::At(ChainHead { seq, hash })),
            Err(_) => Err(format!("the server sent an anchor seq {seq:?} that is not a number")),
        },
        _ => Err("the server sent half an anchor (seq or hash alone)".to_string()),
    }
}

pub fn audit_verify_cmd(args: &AuditVerifyArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let (source, anchoring, verified) = match &args.file {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            (
                path.display().to_string(),
                Anchoring::File,
                Verifier::from_genesis().verify_jsonl(&mut BufReader::new(file)),
            )
        }
        None => {
            let api = Api::new(&args.server)?;
            let mut response = match api.get("/v1/audit/export") {
                Ok(r) => r,
                Err(e) => return respond(out, format, |_| Err(e)),
            };
            // Also proves the download was not cut short: the log must reach
            // the head the server announced.
            let mut verifier = match export_head(&response) {
                Some(head) => Verifier::from_genesis().expect_head(head),
                None => Verifier::from_genesis(),
            };
            // And that nothing was cut off its end in the database: it must
            // hold the head the store anchored outside it.
            let anchoring = match export_anchor(&response) {
                Ok(anchoring) => anchoring,
                Err(why) => {
                    let message = format!("the server has an audit anchor but cannot read it: {why}");
                    return write_broken(out, format, &api.base, &message);
                }
            };
            if let Anchoring::At(anchor) = &anchoring {
                verifier = verifier.expect_anchor(anchor.clone());
            }
            let verified = verifier.verify_jsonl(&mut BufReader::new(response.body_mut().as_reader()));
            (api.base.clone(), anchoring, verified)
        }
    };
    write_verdict(out, format, &source, &anchoring, verified)
}

fn write_broken(out: &mut dyn Write, format: Format, source: &str, message: &str) -> anyhow::Result<Exit> {
    if format == Format::Json {
        write_json(out, &json!({"intact": false, "source": source, "error": message}))?;
    } else {
        writeln!(out, "audit log BROKEN: {message}")?;
    }
    Ok(Exit::Failed)
}

fn write_verdict(
    out: &mut dyn Write,
    format: Format,
    source: &str,
    anchoring: &Anchoring,
    verified: Result<VerifyReport, AuditError>,
) -> anyhow::Result<Exit> {
    match verified {
        Ok(r) => {
            if format == Format::Json {
                let anchor = match anchoring {
                    Anchoring::At(a) => json!({"seq": a.seq, "hash": a.hash}),
                    _ => Value::Null,
                };
                write_json(
                    out,
                    &json!({"intact": true, "source": source, "events": r.events, "first_seq": r.first_seq,
                            "last_seq": r.last_seq, "head_hash": r.head_hash, "anchor": anchor}),
                )?;
            } else {
                let anchor = match anchoring {
                    Anchoring::File => String::new(),
                    Anchoring::NotKept => {
                        "; the server keeps no audit anchor, so events deleted from the end would not show".to_string()
                    }
                    Anchoring::At(a) => format!("; holds the anchored seq {}", a.seq),
                };
                writeln!(
                    out,
                    "audit log intact: {} events, up to seq {} ({}){anchor}",
                    r.events, r.last_seq, r.head_hash
                )?;
            }
            Ok(Exit::Ok)
        }
        // Not a verdict on the chain: the log could not be read.
        Err(e @ AuditError::Read { .. }) => {
            Err(anyhow::Error::new(e).context(format!("reading the audit log from {source}")))
        }
        Err(e) => write_broken(out, format, source, &tollgate_core::errors::chain(&e)),
    }
}

pub fn audit_export_cmd(args: &AuditExportArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let mut response = api.get("/v1/audit/export")?;
        let head = export_head(&response);
        let mut body = response.body_mut().as_reader();
        let Some(path) = &args.out else {
            std::io::copy(&mut body, out).context("downloading the audit log")?;
            return Ok(Exit::Ok);
        };
        let bytes = write_atomically(path, &mut body)?;
        let (seq, hash) = head.map_or((0, String::new()), |h| (h.seq, h.hash));
        if format == Format::Json {
            write_json(
                out,
                &json!({"out": path, "bytes": bytes, "head_seq": seq, "head_hash": hash}),
            )?;
        } else {
            writeln!(
                out,
                "wrote the audit log to {} ({bytes} bytes, up to seq {seq} {hash})",
                path.display()
            )?;
        }
        Ok(Exit::Ok)
    })
}

/// Copies `from` into a temporary file beside `path`, then renames it: an
/// interrupted download never leaves a shorter log under the final name.
fn write_atomically(path: &Path, from: &mut dyn Read) -> anyhow::Result<u64> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let partial = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let result = (|| {
        let mut file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let bytes = std::io::copy(from, &mut file).context("downloading the audit log")?;
        file.sync_all()?;
        std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
