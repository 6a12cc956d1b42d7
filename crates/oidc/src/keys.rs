//! The issuer's signing keys: where they come from (a JWKS file, a JWKS URL, or the URL the
//! issuer's discovery document names), and a cache that follows key rotation.
//!
//! The cache is refreshed when it is older than `refresh`, and at once when a token names a
//! key id it does not hold (the issuer rotated its keys), but never more often than once per
//! `min_refresh`: a caller making up key ids cannot make Firn hammer the issuer. A failed
//! refresh keeps the keys already held.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;
use url::Url;

/// The most bytes a JWKS or discovery document may have.
const MAX_DOCUMENT: usize = 1 << 20;
/// How long one fetch of a document may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the JWKS file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: String, reason: String },
}

/// Where the issuer's JWKS is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(Url),
}

impl JwksSource {
    /// `https://...` (or `http://` to a loopback address) is a URL, anything else a path.
    pub fn parse(s: &str) -> Result<Self, KeysError> {
        if s.starts_with("https://") || s.starts_with("http://") {
            let url = Url::parse(s).map_err(|e| KeysError::Invalid {
                what: format!("the JWKS URL {s:?}"),
                reason: e.to_string(),
            })?;
            check_scheme(&url)?;
            Ok(JwksSource::Url(url))
        } else {
            Ok(JwksSource::File(PathBuf::from(s)))
        }
    }

    fn describe(&self) -> String {
        match self {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url(u) => u.to_string(),
        }
    }
}

/// Keys travel over HTTPS; plain HTTP only to this machine (a test or a local sidecar).
fn check_scheme(url: &Url) -> Result<(), KeysError> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(KeysError::Invalid {
            what: format!("the URL {url}"),
            reason: "keys are fetched over https:// (plain http:// only from a loopback address)"
                .into(),
        }),
    }
}

/// The key family an algorithm needs: a token's algorithm must match its key's, or a key
/// could be misused (an RSA public key as an HMAC secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Rsa,
    Ec,
    Okp,
}

/// The family of an algorithm Firn accepts; `None` for HMAC, which a JWKS of public keys
/// cannot verify safely.
pub(crate) fn family_of(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Okp),
        HS256 | HS384 | HS512 => None,
    }
}

/// One verification key of the issuer.
pub(crate) struct Key {
    pub family: Family,
    /// The algorithm the JWKS pins the key to, if it does.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// The keys of one fetch, by key id (`""` for a key without one).
#[derive(Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
}

impl KeySet {
    fn from_jwks(set: &JwkSet) -> Self {
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone().unwrap_or_default(), key(jwk)?)))
            .map(|(kid, k)| (kid, Arc::new(k)))
            .collect();
        KeySet { by_kid }
    }

    /// The key a token's header names; without a key id, the only key there is.
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.by_kid.len() == 1 => self.by_kid.values().next().cloned(),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }
}

/// A usable public key of a JWK; symmetric keys, keys for encryption only and keys that do
/// not parse are left out.
fn key(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
        AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(signing_algorithm(a)?),
    };
    if alg.is_some_and(|a| family_of(a) != Some(family)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { family, alg, key })
}

/// The signing algorithm a JWK's `alg` names; `None` for encryption algorithms.
fn signing_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match a {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// How often the keys are read again.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// Keys older than this are read again before the next verification.
    pub every: Duration,
    /// At most one read per this long on account of unknown key ids or a failure.
    pub min_interval: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            every: Duration::from_secs(600),
            min_interval: Duration::from_secs(10),
        }
    }
}

struct Fetched {
    keys: Arc<KeySet>,
    at: Instant,
}

/// The issuer's keys, read from `source` and kept fresh.
pub(crate) struct KeyCache {
    source: JwksSource,
    http: reqwest::Client,
    refresh: Refresh,
    current: RwLock<Fetched>,
    /// Held while reading the keys (one read at a time); the last attempt's time.
    attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    /// Reads the keys once: an unreadable or empty JWKS is an error here, at start.
    pub async fn load(
        source: JwksSource,
        http: reqwest::Client,
        refresh: Refresh,
    ) -> Result<Self, KeysError> {
        let keys = read_keys(&source, &http).await?;
        if keys.len() == 0 {
            return Err(KeysError::Invalid {
                what: format!("the JWKS at {}", source.describe()),
                reason: "it holds no signing key Firn can use (RSA, EC or Ed25519)".into(),
            });
        }
        let now = Instant::now();
        Ok(KeyCache {
            source,
            http,
            refresh,
            current: RwLock::new(Fetched {
                keys: Arc::new(keys),
                at: now,
            }),
            // The first unknown key id may read again at once: the issuer may have
            // rotated just after the start.
            attempt: tokio::sync::Mutex::new(None),
        })
    }

    fn held(&self) -> (Arc<KeySet>, Instant) {
        let f = self.current.read().unwrap_or_else(|e| e.into_inner());
        (f.keys.clone(), f.at)
    }

    /// The key for `kid`, reading the keys again when they are stale or do not hold it.
    /// `Ok(None)`: the issuer does not publish such a key. `Err`: the keys could not be
    /// read and the ones held do not have it.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<Arc<Key>>, KeysError> {
        let (keys, at) = self.held();
        let stale = at.elapsed() >= self.refresh.every;
        let found = keys.find(kid);
        if found.is_some() && !stale {
            return Ok(found);
        }
        match self.reread(at).await {
            Ok(keys) => Ok(keys.find(kid)),
            // Stale but still held: keep using it while the issuer cannot be reached.
            Err(e) if found.is_some() => {
                tracing::warn!(error = %e, "cannot refresh the identity provider's keys; using the ones held");
                Ok(found)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the keys again unless another task did since `seen` or the last attempt was
    /// under `min_interval` ago; returns the keys then held.
    async fn reread(&self, seen: Instant) -> Result<Arc<KeySet>, KeysError> {
        let mut attempt = self.attempt.lock().await;
        let (keys, at) = self.held();
        if at > seen {
            return Ok(keys);
        }
        if attempt.is_some_and(|t| t.elapsed() < self.refresh.min_interval) {
            return Ok(keys);
        }
        *attempt = Some(Instant::now());
        let fresh = Arc::new(read_keys(&self.source, &self.http).await?);
        tracing::info!(keys = fresh.len(), source = %self.source.describe(), "read the identity provider's keys");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Fetched {
            keys: fresh.clone(),
            at: Instant::now(),
        };
        Ok(fresh)
    }
}

async fn read_keys(source: &JwksSource, http: &reqwest::Client) -> Result<KeySet, KeysError> {
    let bytes = match source {
        JwksSource::File(path) => {
            let b = tokio::fs::read(path).await.map_err(|e| KeysError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if b.len() > MAX_DOCUMENT {
                return Err(KeysError::File {
                    path: path.display().to_string(),
                    reason: format!("larger than {MAX_DOCUMENT} bytes"),
                });
            }
            b
        }
        JwksSource::Url(url) => fetch(http, url).await?,
    };
    let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| KeysError::Invalid {
        what: format!("the JWKS at {}", source.describe()),
        reason: e.to_string(),
    })?;
    Ok(KeySet::from_jwks(&set))
}

/// GETs a document of at most [`MAX_DOCUMENT`] bytes.
pub(crate) async fn fetch(http: &reqwest::Client, url: &Url) -> Result<Vec<u8>, KeysError> {
    let failed = |reason: String| KeysError::Fetch {
        url: url.to_string(),
        reason,
    };
    check_scheme(url)?;
    let mut resp = http
        .get(url.clone())
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(failed(format!("larger than {MAX_DOCUMENT} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes, on one line (reqwest's own message omits them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_urls_over_https_or_loopback_http_else_paths() {
        assert!(matches!(
            JwksSource::parse("https://id.example.com/certs"),
            Ok(JwksSource::Url(_))
        ));
        assert!(matches!(
            JwksSource::parse("http://127.0.0.1:8080/certs"),
            Ok(JwksSource::Url(_))
        ));
        assert!(matches!(
            JwksSource::parse("http://localhost/certs"),
            Ok(JwksSource::Url(_))
        ));
        let err = JwksSource::parse("http://id.example.com/certs").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        assert_eq!(
            JwksSource::parse("/etc/firn/jwks.json").unwrap(),
            JwksSource::File("/etc/firn/jwks.json".into())
        );
    }

    #[test]
    fn only_asymmetric_signing_keys_of_a_matching_family_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "mislabelled", "alg": "ES256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
        ]}))
        .unwrap();
        let keys = KeySet::from_jwks(&set);
        assert_eq!(keys.len(), 1);
        assert!(keys.find(Some("rsa")).is_some());
        assert!(keys.find(Some("hmac")).is_none());
        assert!(keys.find(Some("mislabelled")).is_none());
        // No kid in the token: the only key.
        assert!(keys.find(None).is_some());
    }
}
