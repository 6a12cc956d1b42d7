//! OpenID Connect sign-in for Firn: bearer JWTs from a team's identity provider (Keycloak,
//! Okta, Entra ID, Dex, ...) stand for Firn principals.
//!
//! [`Oidc`] is a [`firn_core::IdentityProvider`]: the catalog hands it every credential that
//! has the shape of a JWT and looks up the principal it names, whose grants then apply (an
//! admin creates the principal with `firn principal create` and grants it privileges).
//!
//! # What is accepted
//! A token is accepted when all of these hold, else it is refused with `Unauthenticated`
//! naming the first that failed:
//! - it is signed with an asymmetric algorithm (RS256/384/512, PS256/384/512, ES256/384,
//!   EdDSA) by the issuer's key its header names (`kid`; without one, the issuer's only
//!   key), and the key's type (and `alg`, if the JWKS pins one) fits the algorithm. `none`
//!   and HMAC are never accepted: a JWKS publishes public keys, and a token "signed" with
//!   one as an HMAC secret would be forgeable by anyone;
//! - `iss` is the configured issuer and, with an audience configured, `aud` holds it;
//! - `exp` is in the future and `nbf` (if any) in the past, by the catalog's clock, with
//!   [`LEEWAY`];
//! - the principal claim (default `sub`) is a string;
//! - it is at most [`MAX_TOKEN`] bytes.
//!
//! # Keys
//! The issuer's JWKS comes from a file, a URL, or the `jwks_uri` of the issuer's discovery
//! document (`ISSUER/.well-known/openid-configuration`). It is read at start: a missing or
//! empty JWKS fails `firn serve` at once. Rotation is followed (see [`keys`]). When the keys
//! cannot be read and the ones held do not verify the token, the answer is `Unavailable`:
//! the caller may retry.

pub mod keys;

use std::time::Duration;

use firn_core::{Error, IdentityProvider, Secret, Verified};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use url::Url;

pub use keys::{JwksSource, KeysError, Refresh};

/// How far `exp` and `nbf` may be off, for clocks that disagree a little.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// The longest credential taken for a JWT.
pub const MAX_TOKEN: usize = 16 * 1024;

/// An identity provider's settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer, exactly as its tokens' `iss` says (e.g. `https://id.example.com/realms/data`).
    pub issuer: String,
    /// When set, a token's `aud` must hold it (the client id the provider issued for Firn).
    pub audience: Option<String>,
    /// Where the keys are; `None`: the `jwks_uri` of the issuer's discovery document.
    pub jwks: Option<JwksSource>,
    /// The claim whose value is the principal's name (`sub`, `preferred_username`,
    /// `email`, ...).
    pub principal_claim: String,
    pub refresh: Refresh,
}

impl OidcConfig {
    /// An issuer's settings with the defaults: discovery, no audience check, `sub`.
    pub fn new(issuer: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: None,
            jwks: None,
            principal_claim: "sub".into(),
            refresh: Refresh::default(),
        }
    }
}

/// Verifies an issuer's JWTs; see the crate docs.
pub struct Oidc {
    config: OidcConfig,
    keys: keys::KeyCache,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .field("principal_claim", &self.config.principal_claim)
            .finish()
    }
}

impl Oidc {
    /// Finds and reads the issuer's keys. Errors say which setting is wrong; nothing is
    /// retried here, so a mistake is seen at start.
    pub async fn start(config: OidcConfig) -> Result<Self, KeysError> {
        if config.principal_claim.is_empty() {
            return Err(KeysError::Invalid {
                what: "the principal claim".into(),
                reason: "must not be empty".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| KeysError::Invalid {
                what: "the HTTP client".into(),
                reason: e.to_string(),
            })?;
        let source = match &config.jwks {
            Some(s) => s.clone(),
            None => discover(&http, &config.issuer).await?,
        };
        let keys = keys::KeyCache::load(source, http, config.refresh).await?;
        Ok(Oidc { config, keys })
    }

    fn refused(reason: impl std::fmt::Display) -> Error {
        Error::Unauthenticated(format!(
            "the identity provider's token is refused: {reason}"
        ))
    }

    /// Checks the claims Firn does not leave to the signature library, with the catalog's
    /// clock; returns the principal.
    fn check_claims(&self, claims: &Map<String, Value>, now_ms: i64) -> Result<Verified, Error> {
        let now = now_ms.div_euclid(1000);
        let leeway = LEEWAY.as_secs() as i64;
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.config.issuer => {}
            Some(Value::String(iss)) => {
                return Err(Self::refused(format!(
                    "it was issued by {iss:?}, not {:?}",
                    self.config.issuer
                )));
            }
            _ => return Err(Self::refused("it has no issuer (iss)")),
        }
        if let Some(aud) = &self.config.audience {
            let held = match claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
                _ => false,
            };
            if !held {
                return Err(Self::refused(format!("its audience (aud) is not {aud:?}")));
            }
        }
        let exp = match claims.get("exp").and_then(Value::as_i64) {
            Some(exp) if exp + leeway <= now => {
                return Err(Self::refused("it has expired"));
            }
            Some(exp) => exp,
            None => return Err(Self::refused("it has no expiry (exp)")),
        };
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_i64() {
                Some(nbf) if nbf - leeway <= now => {}
                Some(_) => return Err(Self::refused("it is not valid yet (nbf)")),
                None => return Err(Self::refused("its nbf is not a number")),
            }
        }
        let claim = &self.config.principal_claim;
        let principal = match claims.get(claim) {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            _ => {
                return Err(Self::refused(format!(
                    "its {claim:?} claim, which names the principal, is missing or not a string"
                )));
            }
        };
        Ok(Verified {
            principal,
            expires_at_ms: exp.checked_mul(1000),
        })
    }
}

/// Whether a credential has the shape of a JWS compact token: three base64url parts.
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[async_trait::async_trait]
impl IdentityProvider for Oidc {
    fn claims(&self, credential: &Secret) -> bool {
        looks_like_jwt(credential.expose())
    }

    async fn verify(&self, credential: &Secret, now_ms: i64) -> Result<Verified, Error> {
        let token = credential.expose();
        if token.len() > MAX_TOKEN {
            return Err(Self::refused(format!("it is over {MAX_TOKEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Self::refused(format!("its header does not parse: {e}")))?;
        let Some(family) = keys::family_of(header.alg) else {
            return Err(Self::refused(format!(
                "it is signed with {:?}; only asymmetric algorithms are accepted",
                header.alg
            )));
        };
        let key = match self.keys.key(header.kid.as_deref()).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Err(Self::refused(match &header.kid {
                    Some(kid) => format!("its key id {kid:?} is not among the issuer's keys"),
                    None => "it names no key id (kid) and the issuer has several keys".into(),
                }));
            }
            Err(e) => {
                return Err(Error::Unavailable {
                    what: "the identity provider's keys",
                    source: Box::new(e),
                });
            }
        };
        if key.family != family || key.alg.is_some_and(|a| a != header.alg) {
            return Err(Self::refused(format!(
                "its algorithm {:?} does not fit the key it names",
                header.alg
            )));
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.key,
            &signature_only(header.alg),
        )
        .map_err(|e| Self::refused(format!("its signature does not verify ({e})")))?
        .claims;
        self.check_claims(&claims, now_ms)
    }
}

/// A validation of the signature alone: the claims are checked by [`Oidc::check_claims`]
/// with the catalog's (injected) clock.
fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v
}

/// The JWKS URL of an issuer's discovery document, whose `issuer` must be the issuer.
async fn discover(http: &reqwest::Client, issuer: &str) -> Result<JwksSource, KeysError> {
    let base = Url::parse(issuer).map_err(|e| KeysError::Invalid {
        what: format!("the issuer {issuer:?}"),
        reason: format!("{e} (it must be a URL; or give the JWKS file or URL)"),
    })?;
    let url = Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        base.as_str().trim_end_matches('/')
    ))
    .map_err(|e| KeysError::Invalid {
        what: format!("the issuer {issuer:?}"),
        reason: e.to_string(),
    })?;
    let body = keys::fetch(http, &url).await?;
    let invalid = |reason: String| KeysError::Invalid {
        what: format!("the discovery document {url}"),
        reason,
    };
    let doc: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(invalid(format!(
            "its issuer is {:?}, not {issuer:?}",
            doc.get("issuer")
        )));
    }
    match doc.get("jwks_uri").and_then(Value::as_str) {
        Some(u) => JwksSource::parse(u),
        None => Err(invalid("it has no jwks_uri".into())),
    }
}

#[cfg(test)]
mod tests;
