//! Device reports (DESIGN 8): `POST /v1/reports` bodies, parsed and
//! validated report by report.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Digest, Platform};

/// The only report schema this version accepts.
pub const REPORT_SCHEMA: &str = "tollgate.device-report/v1";
/// Largest `POST /v1/reports` body.
pub const MAX_REPORTS_BODY: usize = 16 * 1024 * 1024;
/// Most reports in one request.
pub const MAX_REPORTS: usize = 10_000;

/// One device's report, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub device: DeviceInfo,
    pub os: OsInfo,
    pub enrollment: Enrollment,
    pub checked_in_at: DateTime<Utc>,
    pub applied: Vec<Applied>,
    pub settings: Vec<SettingReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub platform: Platform,
    pub groups: Vec<String>,
    pub user: Option<String>,
    pub ownership: Option<Ownership>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    Corporate,
    Personal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    Enrolled,
    Pending,
    Unenrolled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub baseline: String,
    pub digest: Digest,
    pub status: ApplyStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStatus {
    Applied,
    Pending,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingReport {
    pub key: String,
    pub state: SettingState,
    pub actual: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingState {
    Compliant,
    Noncompliant,
    Error,
    Pending,
}
