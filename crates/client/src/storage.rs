//! A table's files as this client reaches them: the storage access the server hands out
//! (`GetStorageAccess`), so a client needs no storage settings of its own.
//!
//! Temporary credentials (the server's STS, `expires_at_ms` set) are renewed through the
//! server before they expire, so a load or a scan that outlasts them goes on: every S3
//! request asks [`Renewing`] for its credential, which asks the server again once the one
//! it holds has less than [`RENEW_BEFORE_MS`] left. One renewal at a time; the others wait
//! for it. A renewal that fails fails the request that needed it as an object-store error
//! (the server's refusal or outage, in its message); the next request tries again.

use std::collections::BTreeMap;
use std::sync::Arc;

use firn_core::{Warehouse, WarehouseConfig};
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3ConfigKey, AwsCredential};

use crate::error::{ClientError, Result};

/// Credentials are renewed once they have less than this left. Below the five minutes the
/// server keeps handing out the credentials it holds, so a renewal gets new ones.
pub const RENEW_BEFORE_MS: i64 = 2 * 60 * 1000;

/// What the server answered: the location, object_store options and their expiry.
#[derive(Clone)]
pub(crate) struct Access {
    pub location: String,
    pub options: BTreeMap<String, String>,
    /// `None`: the options do not expire.
    pub expires_at_ms: Option<i64>,
}

impl Access {
    /// The warehouse the access reaches; S3 credentials that expire are renewed by `renew`.
    pub(crate) fn open(self, renew: Fetch, now_ms: Clock) -> Result<Arc<Warehouse>> {
        let credentials = match self.expires_at_ms {
            Some(expires_at_ms) => {
                let credential = credential(&self.options)?;
                Some(Arc::new(Renewing {
                    renew,
                    now_ms,
                    current: tokio::sync::Mutex::new((Arc::new(credential), expires_at_ms)),
                })
                    as object_store::aws::AwsCredentialProvider)
            }
            None => None,
        };
        let config = WarehouseConfig {
            url: self.location,
            options: self.options.into_iter().collect(),
        };
        let warehouse = Warehouse::open_with_credentials(config, credentials).map_err(|e| {
            ClientError::InvalidData(format!("the server's storage access is unusable: {e}"))
        })?;
        Ok(Arc::new(warehouse))
    }
}

/// Asks the server for the table's storage access again.
pub(crate) type Fetch = Arc<dyn Fn() -> BoxFuture<'static, Result<Access>> + Send + Sync>;
/// Milliseconds since the epoch (injected so tests can move time).
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// The S3 credential in object_store options (`aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`, under any of the names object_store accepts).
fn credential(options: &BTreeMap<String, String>) -> Result<AwsCredential> {
    let (mut key_id, mut secret_key, mut token) = (None, None, None);
    for (k, v) in options {
        match k.parse::<AmazonS3ConfigKey>() {
            Ok(AmazonS3ConfigKey::AccessKeyId) => key_id = Some(v.clone()),
            Ok(AmazonS3ConfigKey::SecretAccessKey) => secret_key = Some(v.clone()),
            Ok(AmazonS3ConfigKey::Token) => token = Some(v.clone()),
            _ => {}
        }
    }
    match (key_id, secret_key) {
        (Some(key_id), Some(secret_key)) => Ok(AwsCredential {
            key_id,
            secret_key,
            token,
        }),
        _ => Err(ClientError::InvalidData(
            "the server handed out expiring storage access without an access key and secret".into(),
        )),
    }
}

/// S3 credentials from the server, renewed before they expire.
struct Renewing {
    renew: Fetch,
    now_ms: Clock,
    /// The credential in use and when it expires.
    current: tokio::sync::Mutex<(Arc<AwsCredential>, i64)>,
}

impl std::fmt::Debug for Renewing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewing").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for Renewing {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut current = self.current.lock().await;
        if current.1 - (self.now_ms)() > RENEW_BEFORE_MS {
            return Ok(current.0.clone());
        }
        let failed = |e: ClientError| object_store::Error::Generic {
            store: "S3",
            source: format!("renewing the table's storage credentials through Firn: {e}").into(),
        };
        let access = (self.renew)().await.map_err(failed)?;
        let credential = Arc::new(credential(&access.options).map_err(failed)?);
        // Credentials that no longer expire are kept until the process ends.
        *current = (credential.clone(), access.expires_at_ms.unwrap_or(i64::MAX));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use object_store::CredentialProvider;

    use super::*;

    fn access(key: &str, expires_at_ms: i64) -> Access {
        Access {
            location: "s3://bucket/wh/t".into(),
            options: BTreeMap::from([
                ("aws_endpoint".into(), "http://127.0.0.1:1".into()),
                ("aws_region".into(), "us-east-1".into()),
                ("allow_http".into(), "true".into()),
                ("aws_access_key_id".into(), key.into()),
                ("aws_secret_access_key".into(), "secret".into()),
                ("aws_session_token".into(), format!("token-of-{key}")),
            ]),
            expires_at_ms: Some(expires_at_ms),
        }
    }

    /// A renewing provider whose server hands out key `k<n>` valid for an hour at its n-th
    /// renewal, with a clock the test moves.
    fn renewing(fail: bool) -> (Renewing, Arc<AtomicI64>, Arc<AtomicUsize>) {
        let now = Arc::new(AtomicI64::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (n, c) = (now.clone(), calls.clone());
        let renew: Fetch = Arc::new(move || {
            let i = c.fetch_add(1, Ordering::SeqCst) + 1;
            let at = n.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    return Err(ClientError::Status(tonic::Status::unavailable(
                        "the server is down",
                    )));
                }
                Ok(access(&format!("k{i}"), at + 3_600_000))
            })
        });
        let n = now.clone();
        let p = Renewing {
            renew,
            now_ms: Arc::new(move || n.load(Ordering::SeqCst)),
            current: tokio::sync::Mutex::new((
                Arc::new(credential(&access("k0", 3_600_000).options).unwrap()),
                3_600_000,
            )),
        };
        (p, now, calls)
    }

    #[tokio::test]
    async fn credentials_are_renewed_through_the_server_only_near_their_expiry() {
        let (p, now, calls) = renewing(false);
        let c = p.get_credential().await.unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.token.as_deref()),
            ("k0", Some("token-of-k0"))
        );
        now.store(3_600_000 - RENEW_BEFORE_MS - 1, Ordering::SeqCst);
        assert_eq!(p.get_credential().await.unwrap().key_id, "k0");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing asked while valid");
        // Inside the margin: renewed once, then the new one is kept for its hour.
        now.store(3_600_000 - RENEW_BEFORE_MS, Ordering::SeqCst);
        assert_eq!(p.get_credential().await.unwrap().key_id, "k1");
        assert_eq!(p.get_credential().await.unwrap().key_id, "k1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_renewal_fails_the_request_and_the_next_one_tries_again() {
        let (p, now, calls) = renewing(true);
        now.store(3_600_000, Ordering::SeqCst);
        let e = p.get_credential().await.unwrap_err().to_string();
        assert!(
            e.contains("renewing the table's storage credentials"),
            "{e}"
        );
        assert!(e.contains("the server is down"), "{e}");
        assert!(p.get_credential().await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn expiring_access_without_keys_is_refused() {
        let mut a = access("k", 1);
        a.options.remove("aws_secret_access_key");
        let e = credential(&a.options).unwrap_err().to_string();
        assert!(e.contains("without an access key and secret"), "{e}");
    }
}
