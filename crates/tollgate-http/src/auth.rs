//! Bearer tokens and what each role may do.
//!
//! The config holds only the sha256 of each token. A request's token is
//! hashed and compared with every configured hash in constant time, so
//! neither timing nor an early exit tells how much of a guess was right. The
//! token and its hash never reach a log or an error message: the caller is
//! known from then on by the token's *name*, which is also its identity as
//! an approver in local forge mode.
//!
//! Roles are distinct capabilities, not a ladder:
//!
//! | role     | may                                              |
//! |----------|--------------------------------------------------|
//! | viewer   | read everything                                  |
//! | reporter | read `/v1/desired` (and post device reports)      |
//! | approver | read everything, approve                         |
//! | operator | read everything, halt, roll back, trigger a poll |
//!
//! A reporter token may carry a scope (`tokens[].scope`: platforms, rings,
//! device-id prefixes) that limits whose reports it may send; the caller
//! carries it to ingestion, which refuses reports outside it one by one. A
//! reporter token without one is fleet-wide, and a warning says so at start.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};

use super::error::ApiError;
use super::ApiState;
use tollgate_app::controller::config::ReporterScope;
use tollgate_app::controller::{Role, TokenConfig};

/// A presented bearer token. It never prints.
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Who is calling: the configured token's name, role and, for a reporter,
/// its scope (`None`: fleet-wide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub scope: Option<Arc<ReporterScope>>,
}

struct Known {
    name: String,
    role: Role,
    scope: Option<Arc<ReporterScope>>,
    hash: [u8; 32],
}

/// The configured tokens, by hash.
pub struct Tokens(Vec<Known>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| (&k.name, k.role)))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("token `{name}`: sha256 must be 64 hex characters")]
pub struct BadTokenHash {
    pub name: String,
}

impl Tokens {
    /// The tokens of the config; warns about each reporter token without a
    /// scope, which may report any device.
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Tokens, BadTokenHash> {
        let known = tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).map_err(|_| BadTokenHash { name: t.name.clone() })?;
                Ok(Known {
                    name: t.name.clone(),
                    role: t.role,
                    scope: t.scope.clone().map(Arc::new),
                    hash,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for k in known.iter().filter(|k| k.role == Role::Reporter && k.scope.is_none()) {
            tracing::warn!(
                token = %k.name,
                "reporter token without a scope: it may report any device of any platform and ring, fleet-wide \
                 (set tokens[].scope to limit it)"
            );
        }
        Ok(Tokens(known))
    }

    /// The caller a token belongs to. Every configured hash is compared in
    /// full, whatever matches, so the time taken depends only on how many
    /// tokens are configured.
    pub fn identify(&self, token: &BearerToken) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.0.as_bytes()).into();
        let mut found = None;
        for known in &self.0 {
            if equal_constant_time(&known.hash, &presented) {
                found = Some(Caller {
                    name: known.name.clone(),
                    role: known.role,
                    scope: known.scope.clone(),
                });
            }
        }
        found
    }

    /// Authenticates a request's `Authorization` header.
    pub fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let token = bearer(parts)?;
        self.identify(&token)
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))
    }
}

fn equal_constant_time(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn bearer(parts: &Parts) -> Result<BearerToken, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "an `Authorization: Bearer <token>` header is required",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(BearerToken::new(token.trim()))
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

/// A capability an endpoint needs.
pub trait Access: Send + Sync + 'static {
    /// What the capability is called in a refusal.
    const NAME: &'static str;
    fn allows(role: Role) -> bool;
}

/// Read promotions, status and the audit log.
pub struct Read;
/// Read a ring's desired state (devices and their MDM need only this).
pub struct ReadDesired;
/// Send device reports.
pub struct Report;
/// Approve or request changes (local forge mode).
pub struct Approve;
/// Halt, roll back, trigger a poll.
pub struct Operate;

impl Access for Read {
    const NAME: &'static str = "read (viewer, approver or operator)";
    fn allows(role: Role) -> bool {
        matches!(role, Role::Viewer | Role::Approver | Role::Operator)
    }
}

impl Access for ReadDesired {
    const NAME: &'static str = "read desired state (any role)";
    fn allows(_: Role) -> bool {
        true
    }
}

impl Access for Report {
    const NAME: &'static str = "report device state (reporter)";
    fn allows(role: Role) -> bool {
        role == Role::Reporter
    }
}

impl Access for Approve {
    const NAME: &'static str = "approve (approver)";
    fn allows(role: Role) -> bool {
        role == Role::Approver
    }
}

impl Access for Operate {
    const NAME: &'static str = "operate (operator)";
    fn allows(role: Role) -> bool {
        role == Role::Operator
    }
}

/// An authenticated caller allowed to do `A`. As an extractor it runs
/// before the body is read, so a refused request never has its body buffered.
pub struct Authorized<A: Access> {
    pub caller: Caller,
    access: PhantomData<A>,
}

impl<A: Access> FromRequestParts<ApiState> for Authorized<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = state.tokens().authenticate(parts)?;
        tracing::Span::current().record("caller", caller.name.as_str());
        if !A::allows(caller.role) {
            return Err(ApiError::forbidden(format!(
                "token `{}` has role {:?}; this needs {}",
                caller.name,
                caller.role,
                A::NAME
            )));
        }
        Ok(Authorized {
            caller,
            access: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_app::controller::config::token_hash;

    fn tokens() -> Tokens {
        Tokens::from_config(&[
            TokenConfig {
                name: "v".into(),
                role: Role::Viewer,
                sha256: token_hash("view-secret"),
                scope: None,
            },
            TokenConfig {
                name: "op".into(),
                role: Role::Operator,
                sha256: token_hash("op-secret"),
                scope: None,
            },
            TokenConfig {
                name: "mdm".into(),
                role: Role::Reporter,
                sha256: token_hash("mdm-secret"),
                scope: Some(ReporterScope {
                    platforms: Some(vec![tollgate_core::ids::Platform::Ios]),
                    rings: None,
                    device_prefixes: None,
                }),
            },
        ])
        .unwrap()
    }

    #[test]
    fn identifies_by_hash_only() {
        let t = tokens();
        assert_eq!(t.identify(&BearerToken::new("op-secret")).unwrap().name, "op");
        assert_eq!(t.identify(&BearerToken::new("view-secret")).unwrap().role, Role::Viewer);
        assert!(t.identify(&BearerToken::new("op-secre")).is_none());
        assert!(
            t.identify(&BearerToken::new(token_hash("op-secret"))).is_none(),
            "the hash is not a token"
        );
    }

    #[test]
    fn a_reporter_caller_carries_its_scope() {
        let t = tokens();
        let mdm = t.identify(&BearerToken::new("mdm-secret")).unwrap();
        assert_eq!(
            mdm.scope.unwrap().platforms.as_deref(),
            Some(&[tollgate_core::ids::Platform::Ios][..])
        );
        assert_eq!(t.identify(&BearerToken::new("op-secret")).unwrap().scope, None);
    }

    #[test]
    fn nothing_secret_prints() {
        let t = tokens();
        let shown = format!("{t:?} {:?}", BearerToken::new("op-secret"));
        assert!(
            !shown.contains("op-secret") && !shown.contains(&token_hash("op-secret")),
            "{shown}"
        );
    }

    #[test]
    fn roles_are_capabilities() {
        assert!(ReadDesired::allows(Role::Reporter));
        assert!(!Read::allows(Role::Reporter));
        assert!(Read::allows(Role::Approver) && Read::allows(Role::Operator) && Read::allows(Role::Viewer));
        assert!(!Approve::allows(Role::Operator) && Approve::allows(Role::Approver));
        assert!(!Operate::allows(Role::Approver) && Operate::allows(Role::Operator));
    }
}
