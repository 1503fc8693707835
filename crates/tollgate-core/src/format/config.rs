//! `kind: Config` (`tollgate.yaml`) — rings, approver groups, change windows
//! and freezes. A governance file: every change to it is T3.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::value::{
    checked_number, checked_str, deserialize_checked, expect_literal, FromRaw, Label, UniqueList, UniqueMap,
    API_VERSION,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub name: String,
    pub rings: Vec<Ring>,
    pub approvers: BTreeMap<String, ApproverGroup>,
    pub windows: BTreeMap<String, Window>,
    pub freezes: Vec<Freeze>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    pub name: String,
    pub selector: RingSelector,
    /// Seconds to wait after promotion before the gate is judged.
    pub soak_secs: u64,
    pub gate: Option<Gate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingSelector {
    Groups(Vec<String>),
    All,
}

// Serialize/Deserialize here are for persisting promotions (which freeze the
// rings, windows and freezes of their base config); parsing tollgate.yaml goes
// through the strict document types below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub min_applied: f64,
    pub max_noncompliant_increase: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverGroup {
    /// `org/team` on the forge.
    pub forge_team: Option<String>,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub tz: chrono_tz::Tz,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub reason: String,
}

impl Config {
    /// The ring a device with `groups` belongs to: the first whose selector matches.
    pub fn ring_for<'a>(&'a self, groups: &[String]) -> Option<&'a Ring> {
        self.rings.iter().find(|r| match &r.selector {
            RingSelector::All => true,
            RingSelector::Groups(gs) => gs.iter().any(|g| groups.contains(g)),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ConfigDoc {
    #[serde(deserialize_with = "api_version")]
    #[allow(dead_code)]
    api_version: (),
    #[serde(deserialize_with = "kind")]
    #[allow(dead_code)]
    kind: (),
    metadata: Metadata,
    #[serde(deserialize_with = "rings")]
    rings: Vec<Ring>,
    #[serde(default)]
    approvers: UniqueMap<ApproverDoc>,
    #[serde(default)]
    windows: UniqueMap<WindowDoc>,
    #[serde(default)]
    freezes: Vec<FreezeDoc>,
}

fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_literal(d, API_VERSION, "apiVersion")
}
fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_literal(d, "Config", "kind (tollgate.yaml)")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: Label,
}

fn rings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ring>, D::Error> {
    let rings: Vec<RingDoc> = Vec::deserialize(d)?;
    if rings.is_empty() {
        return Err(D::Error::custom("rings must define at least one ring"));
    }
    for (i, r) in rings.iter().enumerate() {
        if rings[..i].iter().any(|o| o.0.name == r.0.name) {
            return Err(D::Error::custom(format!("ring `{}` is defined twice", r.0.name)));
        }
        if r.0.selector == RingSelector::All && i + 1 != rings.len() {
            return Err(D::Error::custom(format!(
                "ring `{}` selects all devices, so the rings after it could never receive a device; make it the last ring",
                r.0.name
            )));
        }
    }
    Ok(rings.into_iter().map(|r| r.0).collect())
}

struct RingDoc(Ring);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RingRaw {
    name: Label,
    selector: SelectorRaw,
    #[serde(default)]
    soak: Option<DurationText>,
    #[serde(default)]
    gate: Option<GateRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorRaw {
    groups: Option<UniqueList<Label>>,
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateRaw {
    min_applied: Fraction,
    max_noncompliant_increase: Fraction,
}

impl<'de> Deserialize<'de> for RingDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for RingDoc {
    type Raw = RingRaw;
    fn from_raw(raw: RingRaw) -> Result<Self, String> {
        let selector = match (raw.selector.groups, raw.selector.all) {
            (Some(g), None) if !g.0.is_empty() => RingSelector::Groups(g.0.into_iter().map(|l| l.0).collect()),
            (None, Some(true)) => RingSelector::All,
            (None, Some(false)) => return Err("selector `all: false` selects nothing; name groups instead".into()),
            (Some(_), Some(_)) => return Err("selector takes either groups or all, not both".into()),
            _ => return Err("selector must name groups or say `all: true`".into()),
        };
        Ok(RingDoc(Ring {
            name: raw.name.0,
            selector,
            soak_secs: raw.soak.map_or(0, |d| d.0),
            gate: raw.gate.map(|g| Gate {
                min_applied: g.min_applied.0,
                max_noncompliant_increase: g.max_noncompliant_increase.0,
            }),
        }))
    }
}

/// A share from 0 to 1 inclusive.
struct Fraction(f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_number(d, |v| {
            if (0.0..=1.0).contains(&v) {
                Ok(Fraction(v))
            } else {
                Err(format!("must be a share from 0 to 1, got {v}"))
            }
        })
    }
}

/// `90s`, `30m`, `2h`, `1d`, or combinations such as `1h30m`.
pub struct DurationText(pub u64);

/// Parses a duration such as `1h30m` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 30m, 2h, 1d or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    // A year of soak is surely a typo, and keeps later arithmetic safe.
    if total > 366 * 86_400 {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(total)
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| parse_duration(s).map(DurationText))
    }
}

struct ApproverDoc(ApproverGroup);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverRaw {
    forge_team: Option<String>,
    #[serde(default)]
    users: UniqueList<String>,
}

impl<'de> Deserialize<'de> for ApproverDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for ApproverDoc {
    type Raw = ApproverRaw;
    fn from_raw(raw: ApproverRaw) -> Result<Self, String> {
        if let Some(team) = &raw.forge_team {
            let ok = team
                .split_once('/')
                .is_some_and(|(o, t)| !o.is_empty() && !t.is_empty() && !t.contains('/'));
            if !ok {
                return Err(format!("forge_team {team:?} must look like org/team"));
            }
        }
        if raw.forge_team.is_none() && raw.users.0.is_empty() {
            return Err("an approver group needs a forge_team or users".into());
        }
        Ok(ApproverDoc(ApproverGroup {
            forge_team: raw.forge_team,
            users: raw.users.0,
        }))
    }
}

struct WindowDoc(Window);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowRaw {
    days: UniqueList<String>,
    start: String,
    end: String,
    tz: String,
}

impl<'de> Deserialize<'de> for WindowDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for WindowDoc {
    type Raw = WindowRaw;
    fn from_raw(raw: WindowRaw) -> Result<Self, String> {
        let days = raw
            .days
            .0
            .iter()
            .map(|d| match d.as_str() {
                "mon" => Ok(Weekday::Mon),
                "tue" => Ok(Weekday::Tue),
                "wed" => Ok(Weekday::Wed),
                "thu" => Ok(Weekday::Thu),
                "fri" => Ok(Weekday::Fri),
                "sat" => Ok(Weekday::Sat),
                "sun" => Ok(Weekday::Sun),
                other => Err(format!("day {other:?} is not one of mon, tue, wed, thu, fri, sat, sun")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if days.is_empty() {
            return Err("days must name at least one day".into());
        }
        let time = |t: &str| {
            NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| format!("{t:?} is not a time of day like 09:00"))
        };
        let (start, end) = (time(&raw.start)?, time(&raw.end)?);
        if start >= end {
            return Err(format!("window start {} must be before its end {}", raw.start, raw.end));
        }
        let tz: chrono_tz::Tz = raw
            .tz
            .parse()
            .map_err(|_| format!("tz {:?} is not an IANA time zone like Europe/Berlin", raw.tz))?;
        Ok(WindowDoc(Window { days, start, end, tz }))
    }
}

struct FreezeDoc(Freeze);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeRaw {
    from: NaiveDate,
    to: NaiveDate,
    reason: String,
}

impl<'de> Deserialize<'de> for FreezeDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked(d)
    }
}

impl FromRaw for FreezeDoc {
    type Raw = FreezeRaw;
    fn from_raw(raw: FreezeRaw) -> Result<Self, String> {
        if raw.from > raw.to {
            return Err(format!("freeze from {} is after its end {}", raw.from, raw.to));
        }
        if raw.reason.trim().is_empty() {
            return Err("a freeze needs a reason".into());
        }
        Ok(FreezeDoc(Freeze {
            from: raw.from,
            to: raw.to,
            reason: raw.reason,
        }))
    }
}

impl From<ConfigDoc> for Config {
    fn from(doc: ConfigDoc) -> Self {
        Config {
            name: doc.metadata.name.0,
            rings: doc.rings,
            approvers: doc.approvers.0.into_iter().map(|(k, v)| (k, v.0)).collect(),
            windows: doc.windows.0.into_iter().map(|(k, v)| (k, v.0)).collect(),
            freezes: doc.freezes.into_iter().map(|f| f.0).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in ["", "h", "2", "2x", "-1h", "1.5h", "99999999999999999999h", "400d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
