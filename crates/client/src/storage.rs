//! A table's files as this client reaches them: the storage access the server hands out
//! (`GetStorageAccess`), so a client needs no storage settings of its own.
//!
//! Temporary credentials (the server's STS, `expires_at_ms` set) are renewed through the
//! server before they expire, so a load or a scan that outlasts them goes on: every S3
//! request asks [`Renewing`] for its credential, which asks the server again once the one
//! it holds has less than [`RENEW_BEFORE_MS`] left. One renewal at a time; the others wait
//! for it. A renewal that fails fails the request that needed it as an object-store error
//! (the server's refusal or outage, in its message); the next request tries again.

use std::sync::Arc;

use firn_core::storage::access::StorageAccess;
use firn_core::{Clock, Warehouse};
use futures::future::BoxFuture;
use object_store::aws::AwsCredential;

use crate::error::{ClientError, Result};

/// Credentials are renewed once they have less than this left. Below the five minutes the
/// server keeps handing out the credentials it holds, so a renewal gets new ones.
pub const RENEW_BEFORE_MS: i64 = 2 * 60 * 1000;

/// Asks the server for the table's storage access again.
pub(crate) type Fetch = Arc<dyn Fn() -> BoxFuture<'static, Result<StorageAccess>> + Send + Sync>;

/// The warehouse `access` reaches; S3 credentials that expire are renewed by `renew`.
pub(crate) fn open(
    access: StorageAccess,
    renew: Fetch,
    clock: Arc<dyn Clock>,
) -> Result<Arc<Warehouse>> {
    let credentials = match access.expires_at_ms {
        Some(expires_at_ms) => Some(Arc::new(Renewing {
            renew,
            clock,
            current: tokio::sync::Mutex::new((Arc::new(credential(&access)?), expires_at_ms)),
        }) as object_store::aws::AwsCredentialProvider),
        None => None,
    };
    let warehouse = Warehouse::open_with_credentials(access.warehouse_config(), credentials)
        .map_err(|e| {
            ClientError::InvalidData(format!("the server's storage access is unusable: {e}"))
        })?;
    Ok(Arc::new(warehouse))
}

fn credential(access: &StorageAccess) -> Result<AwsCredential> {
    access.s3_credential().ok_or_else(|| {
        ClientError::InvalidData(
            "the server handed out expiring storage access without an access key and secret".into(),
        )
    })
}

/// S3 credentials from the server, renewed before they expire.
struct Renewing {
    renew: Fetch,
    clock: Arc<dyn Clock>,
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
        if current.1 - self.clock.now_ms() > RENEW_BEFORE_MS {
            return Ok(current.0.clone());
        }
        let failed = |e: ClientError| object_store::Error::Generic {
            store: "S3",
            source: format!("renewing the table's storage credentials through Firn: {e}").into(),
        };
        let access = (self.renew)().await.map_err(failed)?;
        let credential = Arc::new(credential(&access).map_err(failed)?);
        // Credentials that no longer expire are kept until the process ends.
        *current = (credential.clone(), access.expires_at_ms.unwrap_or(i64::MAX));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use object_store::CredentialProvider;

    use super::*;

    /// A clock the test moves.
    struct Manual(Arc<AtomicI64>);

    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn access(key: &str, expires_at_ms: i64) -> StorageAccess {
        StorageAccess {
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
        let p = Renewing {
            renew,
            clock: Arc::new(Manual(now.clone())),
            current: tokio::sync::Mutex::new((
                Arc::new(credential(&access("k0", 3_600_000)).unwrap()),
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
        let e = credential(&a).unwrap_err().to_string();
        assert!(e.contains("without an access key and secret"), "{e}");
    }
}
