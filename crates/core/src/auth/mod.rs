//! Who is calling and what they may do: principals, their credentials and their grants.
//!
//! Every operation of [`crate::Catalog`] takes a [`Caller`] and checks it before it reads or
//! changes anything, so gRPC, Iceberg REST and SQL (a gRPC client) cannot disagree: a
//! transport only turns the credential it received into a `Caller` with
//! [`crate::Catalog::authenticate`].
//!
//! # Privileges
//!
//! Five privileges, each on the catalog, a namespace or a table, and inherited downward (a
//! grant on namespace `sales` covers every table in it, now and later):
//!
//! | privilege | allows | implies |
//! | --- | --- | --- |
//! | `read` | load tables, list and read snapshots, refs and scans | |
//! | `write` | commit (append, overwrite, delete, replace) | `read` |
//! | `maintain` | expire snapshots, compact, remove orphan files | `read` |
//! | `manage` | create, drop and rename tables and namespaces; properties, schema, refs | `write`, `maintain`, `read` |
//! | `admin` | grant and revoke on what it covers; on the catalog: principals and tokens | all |
//!
//! Listings return only what the caller may see: a table it holds any privilege on, a
//! namespace it holds any privilege on or in.
//!
//! # Credentials
//!
//! Tokens are 32 random bytes (`firn_` + 64 hex digits); the catalog keeps only their
//! SHA-256, so a copy of the database does not hold a usable credential. A token is valid
//! until it expires or is revoked, and its principal's grants are read afresh on every
//! authentication: a revoke takes effect on the next request, on every replica. A
//! [`Secret`] never prints its value (`Debug` and `Display` say `<redacted>`).
//!
//! # Errors
//!
//! `Unauthenticated` (no or a bad credential where one is required) and `PermissionDenied`
//! (known, but not allowed): in both cases nothing was read or changed.

pub(crate) mod store;

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ident::{TableIdent, validate_name};

pub use store::{IssuedToken, PrincipalInfo, TokenInfo};

/// A privilege; see the module docs for what each allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    Read,
    Write,
    Maintain,
    Manage,
    Admin,
}

impl Privilege {
    pub const ALL: [Privilege; 5] = [
        Privilege::Read,
        Privilege::Write,
        Privilege::Maintain,
        Privilege::Manage,
        Privilege::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::Read => "read",
            Privilege::Write => "write",
            Privilege::Maintain => "maintain",
            Privilege::Manage => "manage",
            Privilege::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Privilege::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::invalid(
                    "privilege",
                    format!("{s:?} is not one of read, write, maintain, manage, admin"),
                )
            })
    }

    /// Whether holding `self` allows what `wanted` allows.
    pub fn implies(self, wanted: Privilege) -> bool {
        use Privilege::*;
        self == wanted
            || matches!(
                (self, wanted),
                (Admin, _) | (Manage, Write | Maintain | Read) | (Write | Maintain, Read)
            )
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a privilege is held on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Catalog,
    Namespace(String),
    Table(TableIdent),
}

impl Resource {
    /// `catalog`, `namespace NAME` or `table NS.NAME`, as `firn grant` takes it.
    pub fn parse(kind: &str, name: Option<&str>) -> Result<Self> {
        let r = match (kind.to_ascii_lowercase().as_str(), name) {
            ("catalog", None) => Resource::Catalog,
            ("namespace", Some(n)) => Resource::Namespace(n.to_string()),
            ("table", Some(t)) => {
                let (ns, name) = t.split_once('.').ok_or_else(|| {
                    Error::invalid("table", format!("{t:?} is not NAMESPACE.TABLE"))
                })?;
                Resource::Table(TableIdent::new(ns, name))
            }
            ("catalog", Some(n)) => {
                return Err(Error::invalid(
                    "resource",
                    format!("the catalog takes no name (got {n:?})"),
                ));
            }
            ("namespace" | "table", None) => {
                return Err(Error::invalid("resource", format!("{kind} needs a name")));
            }
            _ => {
                return Err(Error::invalid(
                    "resource",
                    format!("{kind:?} is not catalog, namespace or table"),
                ));
            }
        };
        r.validate()?;
        Ok(r)
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Resource::Catalog => Ok(()),
            Resource::Namespace(n) => validate_name("namespace", n),
            Resource::Table(t) => t.validate(),
        }
    }

    /// Whether a privilege held on `self` applies to `other` (itself or below it).
    pub fn covers(&self, other: &Resource) -> bool {
        match (self, other) {
            (Resource::Catalog, _) => true,
            (Resource::Namespace(a), Resource::Namespace(b)) => a == b,
            (Resource::Namespace(a), Resource::Table(t)) => *a == t.namespace,
            (Resource::Table(a), Resource::Table(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Catalog => f.write_str("catalog"),
            Resource::Namespace(n) => write!(f, "namespace {n}"),
            Resource::Table(t) => write!(f, "table {t}"),
        }
    }
}

/// One grant: `principal` holds `privilege` on `on`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub principal: String,
    pub privilege: Privilege,
    pub on: Resource,
}

/// A credential as received; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The value itself: only to send it or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether callers must authenticate, and who besides Firn may vouch for them.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Every request needs a valid credential. Off (a loopback-only server for one user):
    /// every request may do anything; a valid token only names its principal in the commit
    /// log, and one that is not valid is ignored (PyIceberg sends `Bearer None` when it has
    /// no credential).
    pub required: bool,
    /// An identity provider whose credentials (an OpenID Connect issuer's JWTs) stand for
    /// principals of this catalog, beside the tokens Firn issues.
    pub provider: Option<Arc<dyn IdentityProvider>>,
}

/// A verifier of credentials Firn did not issue, such as an OpenID Connect provider's JWTs
/// (crate `firn-oidc`). The catalog asks it about every credential it
/// [claims](IdentityProvider::claims), instead of looking the credential up among its own
/// tokens. The principal a valid credential names must exist in the catalog (an admin
/// creates it); that principal's grants then apply, as for a Firn token.
#[async_trait::async_trait]
pub trait IdentityProvider: Send + Sync + fmt::Debug {
    /// Whether `credential` is this provider's to judge (a JWT, not a `firn_` token).
    /// Cheap: looks only at the credential's shape.
    fn claims(&self, credential: &Secret) -> bool;

    /// The principal a valid credential names at `now_ms` (Unix milliseconds, from the
    /// catalog's clock). Errors: `Unauthenticated` saying what is wrong with the
    /// credential (bad signature, expired, wrong issuer or audience, no principal claim);
    /// `Unavailable` when the provider's keys cannot be fetched (the caller may retry).
    async fn verify(&self, credential: &Secret, now_ms: i64) -> Result<Verified>;
}

/// What an [`IdentityProvider`] vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principal's name, from the configured claim.
    pub principal: String,
    /// When the credential stops being valid (Unix milliseconds), if it says.
    pub expires_at_ms: Option<i64>,
}

/// Who is calling, as the catalog authenticated them. Only the catalog makes one; cheap to
/// clone.
#[derive(Clone)]
pub struct Caller(Arc<Who>);

enum Who {
    /// Authentication is off, or Firn itself (scheduled maintenance): everything is
    /// allowed; `principal` is who a valid token named, for the commit log.
    Unrestricted { principal: Option<String> },
    Principal {
        name: String,
        grants: Vec<(Privilege, Resource)>,
    },
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Who::Unrestricted { principal: None } => f.write_str("Caller(unrestricted)"),
            Who::Unrestricted { principal: Some(p) } => write!(f, "Caller({p}, unrestricted)"),
            Who::Principal { name, .. } => write!(f, "Caller({name})"),
        }
    }
}

impl Caller {
    pub(crate) fn unrestricted() -> Self {
        Caller(Arc::new(Who::Unrestricted { principal: None }))
    }

    /// Unrestricted, naming the principal a token stood for (authentication off).
    pub(crate) fn unrestricted_as(self) -> Self {
        let principal = self.principal().map(str::to_string);
        Caller(Arc::new(Who::Unrestricted { principal }))
    }

    pub(crate) fn principal_with(name: String, grants: Vec<(Privilege, Resource)>) -> Self {
        Caller(Arc::new(Who::Principal { name, grants }))
    }

    /// The authenticated principal's name; `None` when authentication is off.
    pub fn principal(&self) -> Option<&str> {
        match &*self.0 {
            Who::Unrestricted { principal } => principal.as_deref(),
            Who::Principal { name, .. } => Some(name),
        }
    }

    /// Whether the caller holds `privilege` (or one implying it) on `on` or above it.
    pub fn may(&self, privilege: Privilege, on: &Resource) -> bool {
        match &*self.0 {
            Who::Unrestricted { .. } => true,
            Who::Principal { grants, .. } => grants
                .iter()
                .any(|(p, r)| p.implies(privilege) && r.covers(on)),
        }
    }

    /// `PermissionDenied` unless [`Caller::may`].
    pub fn require(&self, privilege: Privilege, on: &Resource) -> Result<()> {
        if self.may(privilege, on) {
            return Ok(());
        }
        tracing::info!(
            principal = self.principal().unwrap_or("anonymous"),
            privilege = privilege.name(),
            on = %on,
            "permission denied"
        );
        Err(Error::PermissionDenied {
            principal: self.principal().unwrap_or("anonymous").to_string(),
            privilege: privilege.name().to_string(),
            on: on.to_string(),
        })
    }

    /// Whether a namespace shows in listings: any privilege on it, above it or in it.
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        match &*self.0 {
            Who::Unrestricted { .. } => true,
            Who::Principal { grants, .. } => grants.iter().any(|(_, r)| match r {
                Resource::Catalog => true,
                Resource::Namespace(n) => n == namespace,
                Resource::Table(t) => t.namespace == namespace,
            }),
        }
    }

    /// Whether a table shows in listings: any privilege on it or above it.
    pub fn sees_table(&self, table: &TableIdent) -> bool {
        self.may(Privilege::Read, &Resource::Table(table.clone()))
    }
}

/// `settings` with every secret value (see [`is_secret_setting`]) as `***`.
pub fn redact_settings<'a>(
    settings: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> std::collections::BTreeMap<String, String> {
    settings
        .into_iter()
        .map(|(k, v)| {
            let v = if is_secret_setting(k) { "***" } else { v };
            (k.clone(), v.to_string())
        })
        .collect()
}

/// Whether a setting's name says its value is a secret (a password, key, token or
/// credential), so listings and logs show `***` in its place.
pub fn is_secret_setting(name: &str) -> bool {
    let k = name.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| k.contains(s))
}

/// `url` fit for a log line: a password in it, and the values of query parameters that
/// name secrets (password, secret, token, key, credential), become `***`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        // Not a URL: hide whatever sits between the scheme and an '@'.
        return match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        };
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret = is_secret_setting;
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Checks a principal's name: 1..=255 characters of letters, digits, `_`, `-`, `.` and `@`
/// (so e-mail addresses and OIDC subjects fit), not starting with `-`.
pub fn validate_principal_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::invalid(
            "principal",
            "must be 1 to 255 characters long",
        ));
    }
    if name.starts_with('-') {
        return Err(Error::invalid("principal", "must not start with '-'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        return Err(Error::invalid(
            "principal",
            format!("{name:?} contains {c:?}; use letters, digits, '_', '-', '.' and '@'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: &str, n: &str) -> Resource {
        Resource::Table(TableIdent::new(ns, n))
    }

    #[test]
    fn privileges_imply_as_documented() {
        use Privilege::*;
        for p in Privilege::ALL {
            assert!(p.implies(p));
            assert!(Admin.implies(p));
            assert!(p.implies(Read));
        }
        assert!(Manage.implies(Write) && Manage.implies(Maintain));
        assert!(!Write.implies(Maintain) && !Maintain.implies(Write));
        assert!(!Manage.implies(Admin) && !Write.implies(Manage));
        assert!(!Read.implies(Write));
    }

    #[test]
    fn grants_are_inherited_downward_only() {
        let ns = Resource::Namespace("sales".into());
        assert!(Resource::Catalog.covers(&ns) && Resource::Catalog.covers(&t("a", "b")));
        assert!(ns.covers(&t("sales", "orders")) && !ns.covers(&t("hr", "orders")));
        assert!(!t("sales", "orders").covers(&ns) && !ns.covers(&Resource::Catalog));
        assert!(!t("sales", "orders").covers(&t("sales", "other")));
    }

    #[test]
    fn a_caller_may_what_its_grants_cover_and_sees_what_it_may_touch() {
        let c = Caller::principal_with(
            "etl".into(),
            vec![
                (Privilege::Write, t("sales", "orders")),
                (Privilege::Read, Resource::Namespace("hr".into())),
            ],
        );
        assert!(c.may(Privilege::Write, &t("sales", "orders")));
        assert!(c.may(Privilege::Read, &t("sales", "orders")));
        assert!(!c.may(Privilege::Manage, &t("sales", "orders")));
        assert!(!c.may(Privilege::Write, &t("sales", "other")));
        assert!(c.may(Privilege::Read, &t("hr", "people")));
        assert!(!c.may(Privilege::Write, &t("hr", "people")));
        assert!(c.sees_namespace("sales") && c.sees_namespace("hr"));
        assert!(!c.sees_namespace("finance"));
        assert!(!c.sees_table(&TableIdent::new("sales", "other")));
        let e = c
            .require(Privilege::Manage, &t("sales", "orders"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "etl may not do this: it needs the manage privilege on table sales.orders"
        );
        assert!(Caller::unrestricted().may(Privilege::Admin, &Resource::Catalog));
    }

    #[test]
    fn resources_parse_as_firn_grant_takes_them() {
        assert_eq!(Resource::parse("catalog", None).unwrap(), Resource::Catalog);
        assert_eq!(
            Resource::parse("TABLE", Some("sales.orders")).unwrap(),
            t("sales", "orders")
        );
        assert!(Resource::parse("table", Some("orders")).is_err());
        assert!(Resource::parse("namespace", None).is_err());
        assert!(Resource::parse("namespace", Some("a/b")).is_err());
        assert!(Resource::parse("bucket", Some("x")).is_err());
        assert_eq!(Privilege::parse("Write").unwrap(), Privilege::Write);
        assert!(Privilege::parse("owner").is_err());
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("postgres://firn:hunter2@db:5432/firn?sslmode=require&password=x"),
            "postgres://firn:***@db:5432/firn?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("sqlite:///tmp/catalog.db"),
            "sqlite:///tmp/catalog.db"
        );
        assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(redact_url("weird://u:p@@host"), "weird://u:***@host");
        assert_eq!(redact_url("postgres://u:p@[bad"), "postgres://***@[bad");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("firn_abc");
        assert_eq!(format!("{s} {s:?}"), "<redacted> Secret(<redacted>)");
        assert!(validate_principal_name("alice@example.com").is_ok());
        assert!(validate_principal_name("a b").is_err());
    }
}
