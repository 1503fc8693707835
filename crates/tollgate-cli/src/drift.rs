//! `tollgate drift`: what devices run against what was promoted.

use std::io::Write;

use clap::Args;
use serde_json::Value;

use super::client::{respond, Api, ServerArgs};
use super::{write_json, Exit, Format};

#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only devices of this ring.
    #[arg(long)]
    pub ring: Option<String>,
    /// Only findings about this baseline.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Only findings of this kind (version_drift, setting_drift, apply_failed,
    /// stale_checkin, unknown_baseline).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only findings about this setting key.
    #[arg(long)]
    pub setting: Option<String>,
    /// How many devices to list (1..=1000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// List devices after this id (the previous page's `next_after`).
    #[arg(long)]
    pub after: Option<String>,
}

fn query(args: &DriftArgs) -> String {
    let mut q = vec![format!("limit={}", args.limit)];
    for (name, value) in [
        ("ring", &args.ring),
        ("baseline", &args.baseline),
        ("kind", &args.kind),
        ("setting", &args.setting),
        ("after", &args.after),
    ] {
        if let Some(v) = value {
            q.push(format!("{name}={}", encode(v)));
        }
    }
    format!("/v1/drift?{}", q.join("&"))
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn counts(out: &mut dyn Write, title: &str, map: &Value) -> std::io::Result<()> {
    let Some(m) = map.as_object().filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    let mut rows: Vec<(&String, u64)> = m.iter().map(|(k, v)| (k, v.as_u64().unwrap_or(0))).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    writeln!(out, "{title}")?;
    for (k, n) in rows {
        writeln!(out, "  {k:<36} {n}")?;
    }
    Ok(())
}

pub fn drift_cmd(args: &DriftArgs, out: &mut dyn Write, format: Format) -> anyhow::Result<Exit> {
    let api = Api::new(&args.server)?;
    respond(out, format, |out| {
        let d = api.get_json(&query(args))?;
        if format == Format::Json {
            write_json(out, &d)?;
            return Ok(Exit::Ok);
        }
        let s = &d["summary"];
        writeln!(
            out,
            "devices     {} tracked, {} non-compliant, {} open findings, {} suppressed by exceptions",
            s["devices"], s["noncompliant_devices"], s["findings"], s["suppressed"]
        )?;
        if let Some(by_ring) = s["by_ring"].as_object() {
            writeln!(out, "by ring")?;
            // In promotion order; a server that does not say it, by name.
            let order: Vec<&str> = match s["rings"].as_array() {
                Some(names) => names.iter().filter_map(Value::as_str).collect(),
                None => by_ring.keys().map(String::as_str).collect(),
            };
            for name in order {
                let r = &by_ring[name];
                let n = |k: &str| r[k].as_u64().unwrap_or(0);
                writeln!(
                    out,
                    "  {name:<12} {:>8} devices {:>8} non-compliant {:>8} findings",
                    n("devices"),
                    n("noncompliant"),
                    n("findings")
                )?;
            }
        }
        counts(out, "by kind", &s["by_kind"])?;
        counts(out, "by baseline", &s["by_baseline"])?;
        counts(out, "by setting", &s["by_setting"])?;
        let devices = d["devices"].as_array().cloned().unwrap_or_default();
        if !devices.is_empty() {
            writeln!(out, "devices")?;
        }
        for dev in &devices {
            let findings: Vec<String> = dev["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let mut s = f["kind"].as_str().unwrap_or("?").to_string();
                    for part in ["baseline", "setting"] {
                        if let Some(p) = f[part].as_str() {
                            s.push(' ');
                            s.push_str(p);
                        }
                    }
                    s
                })
                .collect();
            writeln!(
                out,
                "  {:<32} {:<8} {:<8} last check-in {}  {}",
                dev["id"].as_str().unwrap_or("?"),
                dev["ring"].as_str().unwrap_or("-"),
                dev["platform"].as_str().unwrap_or("?"),
                dev["checked_in_at"].as_str().unwrap_or("?"),
                findings.join("; ")
            )?;
        }
        if let Some(next) = d["next_after"].as_str() {
            writeln!(out, "more: --after {next}")?;
        }
        Ok(Exit::Ok)
    })
}
