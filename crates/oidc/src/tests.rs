use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://id.example.com/realms/data";
/// The catalog's clock in these tests: 2026-01-01T00:00:00Z.
const NOW_MS: i64 = 1_767_225_600_000;
const NOW: i64 = NOW_MS / 1000;

/// An ES256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    pem: String,
    jwk: Value,
}

fn signing_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    SigningKey {
        kid: kid.into(),
        pem: pair.serialize_pem(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
        }),
    }
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": ["firn", "other"], "exp": NOW + 300, "iat": NOW})
}

fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(path, set.to_string()).unwrap();
}

async fn provider(jwks: &Path, configure: impl FnOnce(&mut OidcConfig)) -> Oidc {
    let mut config = OidcConfig::new(ISSUER);
    config.jwks = Some(JwksSource::File(jwks.to_path_buf()));
    config.audience = Some("firn".into());
    configure(&mut config);
    Oidc::start(config).await.unwrap()
}

async fn verify(p: &Oidc, token: &str) -> Result<Verified, Error> {
    let secret = Secret::new(token.to_string());
    assert!(p.claims(&secret), "a JWT is the provider's to judge");
    p.verify(&secret, NOW_MS).await
}

fn refusal(r: Result<Verified, Error>) -> String {
    match r {
        Err(Error::Unauthenticated(m)) => m,
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_names_its_principal_and_every_bad_claim_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k1 = signing_key("k1");
    write_jwks(&jwks, &[&k1]);
    let p = provider(&jwks, |_| {}).await;

    let ok = verify(&p, &sign(&k1, &claims("alice"))).await.unwrap();
    assert_eq!(ok.principal, "alice");
    assert_eq!(ok.expires_at_ms, Some((NOW + 300) * 1000));

    let with = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut c = claims("alice").as_object().unwrap().clone();
        f(&mut c);
        sign(&k1, &Value::Object(c))
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|c| {
                c.insert("iss".into(), json!("https://evil.example.com"));
            }),
            "issued by",
        ),
        (
            with(&|c| {
                c.remove("iss");
            }),
            "no issuer",
        ),
        (
            with(&|c| {
                c.insert("aud".into(), json!("someone-else"));
            }),
            "audience",
        ),
        (
            with(&|c| {
                c.remove("aud");
            }),
            "audience",
        ),
        // Past the leeway: expired; within it: still good (below).
        (
            with(&|c| {
                c.insert("exp".into(), json!(NOW - 61));
            }),
            "expired",
        ),
        (
            with(&|c| {
                c.remove("exp");
            }),
            "no expiry",
        ),
        (
            with(&|c| {
                c.insert("nbf".into(), json!(NOW + 120));
            }),
            "not valid yet",
        ),
        (
            with(&|c| {
                c.insert("sub".into(), json!(42));
            }),
            "\"sub\" claim",
        ),
    ];
    for (token, reason) in cases {
        let m = refusal(verify(&p, &token).await);
        assert!(m.contains(reason), "{m:?} should say {reason:?}");
    }
    let within = with(&|c| {
        c.insert("exp".into(), json!(NOW - 30));
        c.insert("nbf".into(), json!(NOW + 30));
    });
    assert!(verify(&p, &within).await.is_ok());

    // Another claim names the principal when configured so.
    let by_name = provider(&jwks, |c| c.principal_claim = "preferred_username".into()).await;
    let t = with(&|c| {
        c.insert("preferred_username".into(), json!("alice.smith"));
    });
    assert_eq!(verify(&by_name, &t).await.unwrap().principal, "alice.smith");
    let m = refusal(verify(&by_name, &sign(&k1, &claims("alice"))).await);
    assert!(m.contains("preferred_username"), "{m}");
}

#[tokio::test]
async fn forged_tampered_and_confused_tokens_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k1 = signing_key("k1");
    write_jwks(&jwks, &[&k1]);
    let p = provider(&jwks, |_| {}).await;
    let good = sign(&k1, &claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();

    // The payload swapped for another principal's, signature kept.
    let forged_payload = B64.encode(claims("admin").to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert!(refusal(verify(&p, &tampered).await).contains("signature"));

    // Signed by a key the issuer does not publish, under the issuer's key id.
    let stranger = SigningKey {
        kid: "k1".into(),
        ..signing_key("k1")
    };
    assert!(refusal(verify(&p, &sign(&stranger, &claims("alice"))).await).contains("signature"));

    // HMAC with the public key as the secret (the classic key confusion), and `none`.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("admin"),
        &EncodingKey::from_secret(k1.jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert!(refusal(verify(&p, &confused).await).contains("asymmetric"));
    let none_header = B64.encode(r#"{"alg":"none","kid":"k1"}"#);
    for signature in ["", "AAAA"] {
        let unsigned = format!("{none_header}.{forged_payload}.{signature}");
        assert!(refusal(verify(&p, &unsigned).await).contains("header"));
    }

    // An RSA algorithm naming the EC key.
    let rs_header = B64.encode(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
    let rs = format!("{rs_header}.{}.{}", parts[1], parts[2]);
    assert!(refusal(verify(&p, &rs).await).contains("does not fit"));

    // Garbage of every shape.
    for junk in [
        "a.b.c",
        "eyJ.eyJ.x",
        "....",
        &format!("{}.x.y", "A".repeat(20_000)),
    ] {
        let secret = Secret::new(junk.to_string());
        if p.claims(&secret) {
            assert!(matches!(
                p.verify(&secret, NOW_MS).await,
                Err(Error::Unauthenticated(_))
            ));
        }
    }
    // Firn's own tokens and PyIceberg's `Bearer None` are not the provider's.
    for other in [
        "firn_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "None",
    ] {
        assert!(!p.claims(&Secret::new(other.to_string())));
    }
}

#[tokio::test]
async fn rotated_keys_are_followed_and_unknown_key_ids_do_not_hammer_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (k1, k2, k3) = (signing_key("k1"), signing_key("k2"), signing_key("k3"));
    write_jwks(&jwks, &[&k1]);
    let eager = provider(&jwks, |c| {
        c.refresh.min_interval = Duration::ZERO;
    })
    .await;
    let patient = provider(&jwks, |c| {
        c.refresh.min_interval = Duration::from_secs(3600);
    })
    .await;
    assert!(refusal(verify(&eager, &sign(&k2, &claims("alice"))).await).contains("\"k2\""));
    // An unknown key id makes the patient provider read the keys (still only k1).
    assert!(
        verify(&patient, &sign(&k3, &claims("alice")))
            .await
            .is_err()
    );

    // The issuer rotates: k2 replaces k1.
    write_jwks(&jwks, &[&k2]);
    assert_eq!(
        verify(&eager, &sign(&k2, &claims("alice")))
            .await
            .unwrap()
            .principal,
        "alice"
    );
    assert!(refusal(verify(&eager, &sign(&k1, &claims("alice"))).await).contains("\"k1\""));
    // Within min_interval of its last read, a provider does not read again: k1 still
    // verifies there, and the new k2 does not yet.
    assert!(verify(&patient, &sign(&k1, &claims("alice"))).await.is_ok());
    assert!(
        verify(&patient, &sign(&k2, &claims("alice")))
            .await
            .is_err()
    );

    // Keys that cannot be read: the held ones keep working; a key not held is Unavailable.
    write_jwks(&jwks, &[&k2]);
    let stale = provider(&jwks, |c| {
        c.refresh.every = Duration::ZERO;
        c.refresh.min_interval = Duration::ZERO;
    })
    .await;
    std::fs::write(&jwks, "not json").unwrap();
    assert!(verify(&stale, &sign(&k2, &claims("alice"))).await.is_ok());
    assert!(matches!(
        verify(&stale, &sign(&k3, &claims("alice"))).await,
        Err(Error::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_bad_key_source_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = |jwks: JwksSource| {
        let mut c = OidcConfig::new(ISSUER);
        c.jwks = Some(jwks);
        Oidc::start(c)
    };
    let missing = dir.path().join("missing.json");
    let e = start(JwksSource::File(missing.clone())).await.unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    let e = start(JwksSource::File(empty)).await.unwrap_err();
    assert!(e.to_string().contains("no signing key"), "{e}");
    // Nothing listens on port 9 of loopback.
    let url = JwksSource::parse("http://127.0.0.1:9/jwks").unwrap();
    let e = start(url).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot fetch http://127.0.0.1:9/jwks"),
        "{e}"
    );
    let e = Oidc::start(OidcConfig::new("not a url")).await.unwrap_err();
    assert!(e.to_string().contains("must be a URL"), "{e}");
}
