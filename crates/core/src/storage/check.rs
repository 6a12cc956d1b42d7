//! Checking a warehouse's configuration before a server takes requests.
//!
//! A wrong S3 setting otherwise surfaces at the first `table create` as a retryable
//! `UNAVAILABLE`. Two stages find it at start instead, each failing with one line that names
//! the setting at fault (an [`Error::Invalid`] on the field `warehouse`, not retryable):
//! - [`validate_s3`], without any request: the endpoint is a URL, and plain `http://` is
//!   allowed explicitly;
//! - [`Warehouse::check`], with requests: a probe object below the root is created (with
//!   put-if-absent, which also tells whether the store supports it), read back and deleted;
//!   with `sts_role_arn`, the role is assumed once.
//!   An unknown bucket, refused credentials and an unreachable endpoint each get their own
//!   line. The probe has a fresh unique name, so replicas starting together do not meet.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::Warehouse;
use crate::error::{Error, Result};

/// How long the start-up check waits for the store in all.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the S3 client options (canonical `aws_*` keys, as [`super::access`] reads them)
/// without contacting the store.
pub(super) fn validate_s3(options: &BTreeMap<String, String>) -> Result<()> {
    let Some(endpoint) = options.get("aws_endpoint") else {
        return Ok(());
    };
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::invalid(
            "warehouse",
            format!("warehouse option endpoint={endpoint} is not a URL ({e})"),
        )
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if options.get("allow_http").is_some_and(|v| v == "true") => Ok(()),
        "http" => Err(Error::invalid(
            "warehouse",
            format!(
                "warehouse option endpoint={endpoint} is plain http://: add the warehouse \
                 option allow_http=true to allow it, or use https://"
            ),
        )),
        other => Err(Error::invalid(
            "warehouse",
            format!("warehouse option endpoint={endpoint}: scheme {other}:// is not http(s)"),
        )),
    }
}

impl Warehouse {
    /// Checks that the store is reachable and writable as configured (see the module
    /// docs), and learns whether it supports put-if-absent. Local and in-memory warehouses
    /// pass at once.
    pub async fn check(&self) -> Result<()> {
        if !matches!(self.backend, super::Backend::S3) {
            return Ok(());
        }
        match tokio::time::timeout(CHECK_TIMEOUT, self.check_s3()).await {
            Ok(r) => r,
            Err(_) => Err(Error::invalid(
                "warehouse",
                format!(
                    "the store at {} did not answer within {}s (warehouse option endpoint)",
                    self.endpoint(),
                    CHECK_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    async fn check_s3(&self) -> Result<()> {
        let probe = self.object(&format!(
            "{}.firn/start-check-{}",
            self.root_url,
            uuid::Uuid::new_v4().simple()
        ))?;
        let bytes = Bytes::from_static(b"firn start-up check");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let key = probe.key();
        match self
            .store
            .put_opts(key, PutPayload::from(bytes.clone()), create)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                // A store without If-None-Match refuses the condition, not the write: then
                // a plain PUT works, and Firn writes without the condition.
                let first = self.refusal(&e);
                if self.store.put(key, bytes.clone().into()).await.is_err() {
                    return Err(first);
                }
                self.set_conditional_create(false);
                tracing::warn!(
                    "the store at {} does not support put-if-absent ({}); objects are written \
                     with plain PUTs (their names are unique)",
                    self.endpoint(),
                    one_line(&e)
                );
            }
        }
        let read = self.store.get(key).await.map_err(|e| self.refusal(&e))?;
        let back = read.bytes().await.map_err(|e| self.refusal(&e))?;
        if back != bytes {
            return Err(Error::invalid(
                "warehouse",
                format!(
                    "the store at {} returned other bytes than written",
                    self.endpoint()
                ),
            ));
        }
        self.store.delete(key).await.map_err(|e| self.refusal(&e))?;
        // Clients' credentials come from STS: the role must be assumable now, not at the
        // first table load.
        if let Some(sts) = &self.sts {
            let probe = format!("{}.firn", self.root_url);
            sts.credentials(&probe, true, 0).await.map_err(|e| {
                Error::invalid("warehouse", format!("warehouse option sts_role_arn: {e}"))
            })?;
        }
        Ok(())
    }

    /// The endpoint the S3 client talks to (AWS's own when none is configured).
    fn endpoint(&self) -> String {
        self.client_options
            .get("aws_endpoint")
            .cloned()
            .unwrap_or_else(|| "AWS S3".to_string())
    }

    /// What a failed probe request says about the configuration, in one line.
    fn refusal(&self, e: &object_store::Error) -> Error {
        let text = format!("{e:?} {e}");
        let bucket = self.root.authority();
        let has = |code: &str| text.contains(code);
        let reason = if has("NoSuchBucket") {
            format!(
                "bucket {bucket:?} does not exist at {} (warehouse URL {})",
                self.endpoint(),
                self.root_url
            )
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
        ]
        .iter()
        .any(|c| has(c))
        {
            format!(
                "the store at {} refused the credentials for bucket {bucket:?} (warehouse \
                 options access_key_id / secret_access_key, or AWS_* in the environment): {}",
                self.endpoint(),
                one_line(e)
            )
        } else if has("Connect") || has("onnection refused") || has("dns error") {
            format!(
                "cannot reach the store at {} (warehouse option endpoint): {}",
                self.endpoint(),
                one_line(e)
            )
        } else {
            format!(
                "the store at {} failed the start-up check: {}",
                self.endpoint(),
                one_line(e)
            )
        };
        Error::invalid("warehouse", reason)
    }
}

/// An error's innermost cause and the S3 error code in its response, on one short line.
pub(super) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    let text = inner.to_string();
    let code = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find('<')?;
        Some(text[start..start + len].to_string())
    };
    let line = match (code("Code"), code("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    line.chars().take(240).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn endpoints_are_urls_and_plain_http_is_allowed_only_explicitly() {
        assert!(validate_s3(&options(&[])).is_ok());
        assert!(validate_s3(&options(&[("aws_endpoint", "https://s3.example")])).is_ok());
        let http = [("aws_endpoint", "http://127.0.0.1:9000")];
        let e = validate_s3(&options(&http)).unwrap_err().to_string();
        assert!(e.contains("allow_http=true"), "{e}");
        let allowed = [http[0], ("allow_http", "true")];
        assert!(validate_s3(&options(&allowed)).is_ok());
        let e = validate_s3(&options(&[("aws_endpoint", "127.0.0.1:9000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a URL") || e.contains("not http(s)"), "{e}");
    }

    #[test]
    fn one_line_keeps_the_s3_code_and_message() {
        #[derive(Debug)]
        struct Body(&'static str);
        impl std::fmt::Display for Body {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Body {}
        let e = Body(
            "404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\
             <Message>The specified bucket does not exist</Message></Error>",
        );
        assert_eq!(
            one_line(&e),
            "NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(one_line(&Body("a\n  b")), "a b");
    }
}
