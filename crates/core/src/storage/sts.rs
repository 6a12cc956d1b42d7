//! Short-lived, table-scoped S3 credentials from STS, for clients.
//!
//! With the warehouse option `sts_role_arn`, the credentials handed to a client (see
//! [`super::access`]) are not the server's keys but the result of an STS `AssumeRole` of
//! that role with a **session policy** that allows only the table's objects: `GetObject`
//! below its location for a reader, and also `PutObject` and `AbortMultipartUpload` for a
//! writer. No `ListBucket`: no client needs to list a table. The server signs the call with
//! its own keys; the role's trust policy must let them assume it. Options (all Firn's):
//! `sts_role_arn`, `sts_endpoint` (default: the S3 `endpoint`, else AWS's regional STS),
//! `sts_duration_seconds` (default 3600; STS allows 900 and up).
//!
//! Credentials are cached per (location, read-only) until five minutes before they
//! expire, so loads do not each cost an STS call. Errors are `Unavailable` (retry later):
//! the table is unchanged either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use object_store::aws::{AwsAuthorizer, AwsCredential};

use crate::error::{Error, Result};

/// The warehouse options that configure STS (removed before the rest reach `object_store`).
pub const OPTIONS: [&str; 3] = ["sts_role_arn", "sts_endpoint", "sts_duration_seconds"];

/// Temporary credentials for one table.
#[derive(Clone, PartialEq, Eq)]
pub struct Temporary {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working, in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Temporary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Temporary")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// An STS client for one warehouse.
#[derive(Debug)]
pub struct Sts {
    role_arn: String,
    endpoint: String,
    region: String,
    duration: Duration,
    /// The server's own keys, which sign the calls.
    key_id: String,
    secret: String,
    token: Option<String>,
    http: reqwest::Client,
    cache: Mutex<HashMap<(String, bool), Temporary>>,
}

/// The `s3://bucket/prefix` of a location as (bucket, prefix without slashes at the ends).
fn bucket_and_prefix(location: &str) -> Result<(&str, &str)> {
    let rest = location
        .strip_prefix("s3://")
        .ok_or_else(|| Error::invalid("location", format!("{location} is not an s3:// URI")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((bucket, prefix.trim_matches('/')))
}

/// The session policy that confines credentials to `location`'s objects.
pub fn session_policy(location: &str, read_only: bool) -> Result<String> {
    let (bucket, prefix) = bucket_and_prefix(location)?;
    if prefix.is_empty() {
        return Err(Error::invalid(
            "location",
            format!("{location} is a whole bucket; credentials are scoped to a table's prefix"),
        ));
    }
    let mut actions = vec!["s3:GetObject"];
    if !read_only {
        actions.extend(["s3:PutObject", "s3:AbortMultipartUpload"]);
    }
    Ok(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": actions,
            "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}/*")],
        }],
    })
    .to_string())
}

/// The text of the first `<tag>...</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::storage(std::io::Error::other(reason.into()))
}

impl Sts {
    /// The STS client the client options describe, if `sts_role_arn` is set; `options` are
    /// the S3 client options (canonical keys, [`super::access`]) plus Firn's STS options.
    pub fn from_options(
        sts: &BTreeMap<String, String>,
        client: &BTreeMap<String, String>,
    ) -> Result<Option<Self>> {
        let Some(role_arn) = sts.get("sts_role_arn") else {
            return Ok(None);
        };
        let region = client
            .get("aws_region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = sts
            .get("sts_endpoint")
            .or_else(|| client.get("aws_endpoint"))
            .cloned()
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let duration = match sts.get("sts_duration_seconds") {
            None => 3600,
            Some(s) => s.parse::<u64>().ok().filter(|d| *d >= 900).ok_or_else(|| {
                Error::invalid(
                    "warehouse option",
                    format!("sts_duration_seconds={s}: a number of seconds, at least 900"),
                )
            })?,
        };
        let (Some(key_id), Some(secret)) = (
            client.get("aws_access_key_id"),
            client.get("aws_secret_access_key"),
        ) else {
            return Err(Error::invalid(
                "warehouse option",
                "sts_role_arn needs the server's own keys (access_key_id, secret_access_key) \
                 to sign the AssumeRole call",
            ));
        };
        Ok(Some(Self {
            role_arn: role_arn.clone(),
            endpoint,
            region,
            duration: Duration::from_secs(duration),
            key_id: key_id.clone(),
            secret: secret.clone(),
            token: client.get("aws_session_token").cloned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Error::invalid("warehouse option", format!("STS client: {e}")))?,
            cache: Mutex::default(),
        }))
    }

    /// Credentials for `location`'s objects (read-only, or read and write).
    pub async fn credentials(
        &self,
        location: &str,
        read_only: bool,
        now_ms: i64,
    ) -> Result<Temporary> {
        let key = (location.to_string(), read_only);
        if let Some(t) = self.cache.lock().expect("poisoned").get(&key)
            && t.expires_at_ms - now_ms > 5 * 60 * 1000
        {
            return Ok(t.clone());
        }
        let t = self.assume_role(location, read_only).await?;
        self.cache.lock().expect("poisoned").insert(key, t.clone());
        Ok(t)
    }

    async fn assume_role(&self, location: &str, read_only: bool) -> Result<Temporary> {
        let policy = session_policy(location, read_only)?;
        let session = format!("firn-{}", uuid::Uuid::new_v4().simple());
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRole")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &self.role_arn)
            .append_pair("RoleSessionName", &session)
            .append_pair("DurationSeconds", &self.duration.as_secs().to_string())
            .append_pair("Policy", &policy)
            .finish();
        let mut request = object_store::client::HttpRequest::new(body.clone().into());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self
            .endpoint
            .parse()
            .map_err(|e| unavailable(format!("STS endpoint {}: {e}", self.endpoint)))?;
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let credential = AwsCredential {
            key_id: self.key_id.clone(),
            secret_key: self.secret.clone(),
            token: self.token.clone(),
        };
        AwsAuthorizer::new(&credential, "sts", &self.region).authorize(&mut request, None);
        let mut out = self.http.post(&self.endpoint).body(body);
        for (k, v) in request.headers() {
            out = out.header(k, v);
        }
        let answer = out
            .send()
            .await
            .map_err(|e| unavailable(format!("STS at {}: {e}", self.endpoint)))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| unavailable(format!("STS at {}: {e}", self.endpoint)))?;
        if !status.is_success() {
            let why = element(&text, "Message").unwrap_or(&text);
            return Err(unavailable(format!(
                "STS AssumeRole of {} at {} refused ({status}): {why}",
                self.role_arn, self.endpoint
            )));
        }
        let field = |tag| {
            element(&text, tag)
                .map(str::to_string)
                .ok_or_else(|| unavailable(format!("STS answered without {tag}")))
        };
        let expiration = field("Expiration")?;
        let expires_at_ms = chrono::DateTime::parse_from_rfc3339(&expiration)
            .map(|d| d.timestamp_millis())
            .unwrap_or_else(|_| {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                (now + self.duration).as_millis() as i64
            });
        Ok(Temporary {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: field("SessionToken")?,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_policy_allows_only_the_tables_objects() {
        let p: serde_json::Value =
            serde_json::from_str(&session_policy("s3://lake/wh/ns/t-1", true).unwrap()).unwrap();
        let s = &p["Statement"][0];
        assert_eq!(
            s["Resource"],
            serde_json::json!(["arn:aws:s3:::lake/wh/ns/t-1/*"])
        );
        assert_eq!(s["Action"], serde_json::json!(["s3:GetObject"]));
        let w: serde_json::Value =
            serde_json::from_str(&session_policy("s3://lake/wh/ns/t-1/", false).unwrap()).unwrap();
        let actions = w["Statement"][0]["Action"].as_array().unwrap();
        assert!(actions.contains(&serde_json::json!("s3:PutObject")));
        assert!(!w.to_string().contains("ListBucket"));
        assert!(session_policy("s3://lake", true).is_err());
        assert!(session_policy("file:///tmp/t", true).is_err());
    }

    #[test]
    fn sts_needs_the_servers_keys_and_a_sane_duration() {
        let sts: BTreeMap<String, String> = [(
            "sts_role_arn".to_string(),
            "arn:aws:iam::1:role/r".to_string(),
        )]
        .into();
        assert!(
            Sts::from_options(&BTreeMap::new(), &BTreeMap::new())
                .unwrap()
                .is_none()
        );
        assert!(Sts::from_options(&sts, &BTreeMap::new()).is_err());
        let client: BTreeMap<String, String> = [
            ("aws_access_key_id".to_string(), "k".to_string()),
            ("aws_secret_access_key".to_string(), "s".to_string()),
            ("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string()),
        ]
        .into();
        let ok = Sts::from_options(&sts, &client).unwrap().unwrap();
        assert_eq!(ok.endpoint, "http://127.0.0.1:9");
        let mut short = sts.clone();
        short.insert("sts_duration_seconds".into(), "60".into());
        assert!(Sts::from_options(&short, &client).is_err());
    }
}
