//! Remote signing: Firn signs S3 requests for clients that hold no keys at all (the Iceberg
//! REST spec's S3 signer, asked for with `X-Iceberg-Access-Delegation: remote-signing`).
//!
//! A client sends the request it is about to make (method, URI, headers) and gets back the
//! headers that authorize it, signed with SigV4 by the server's own credentials. The signer
//! is the policy: [`S3Signer::plan`] parses the request and refuses, before anything is
//! signed,
//! - any URI that is not an object of this warehouse's bucket at its endpoint;
//! - every listing (a GET of the bucket, `list-type`, `uploads` or `uploadId` on a GET), every
//!   copy (`x-amz-copy-source`: it would read an object the caller may not), the batch delete
//!   (`POST ?delete`: its keys are in a body the signer does not see), a plain DELETE (the
//!   same rule as STS's session policy: clients never delete objects), and every sub-resource
//!   (`?acl`, `?tagging`, ...) but multipart uploads;
//! - a payload hash it cannot sign for (streaming chunk signatures).
//!
//! The catalog then checks the object against the table's location and the method against
//! the caller's grants ([`Access`]); only then does [`S3Signer::sign`] sign. A signature
//! covers the payload hash the client declared (`x-amz-content-sha256`), so a signed PUT
//! stores exactly the bytes it was signed for; without one it is `UNSIGNED-PAYLOAD`.
//!
//! Errors: `InvalidArgument` for a request that is not a well-formed S3 request of this
//! store; `Forbidden` for one the signer refuses by policy (a LIST, a copy, ...).
//! Neither changes anything; retrying the same request does not help.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Method};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use url::Url;

use super::path::{ObjectPath, Root};
use crate::error::{Error, Result};

/// A request a client wants signed (the spec's `S3SignRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignRequest {
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

/// The signed request (the spec's `S3SignResponse`): the URI to send it to and the headers
/// to send with it (those the signature covers, and `Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub uri: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

/// What a request does with its object, so what the caller needs on the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET, HEAD: read.
    Read,
    /// PUT, a multipart upload's create, parts, complete and abort: write.
    Write,
}

/// A request the signer accepted: the object it is for and what it does.
#[derive(Debug)]
pub struct SignPlan {
    pub object: ObjectPath,
    pub access: Access,
    method: Method,
    url: Url,
    /// The headers the signature covers (lower-case names).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The declared payload hash: `None` is `UNSIGNED-PAYLOAD`.
    digest: Option<[u8; 32]>,
}

/// Headers a signature never covers: they are the signer's own, or change on the way
/// (hop-by-hop, the client's agent), as botocore and object_store leave them out too.
const UNSIGNED: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "content-length",
    "user-agent",
    "expect",
    "transfer-encoding",
    "connection",
    "accept-encoding",
    "x-amzn-trace-id",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
];

/// Signs requests for the objects of one S3 bucket.
#[derive(Debug)]
pub struct S3Signer {
    /// Where the bucket's objects are: `{bucket_endpoint}/{key}`.
    bucket_endpoint: Url,
    bucket: String,
    region: String,
    credentials: AwsCredentialProvider,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid("sign request", reason)
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Forbidden(format!(
        "the signer does not sign this request: {}",
        reason.into()
    ))
}

impl S3Signer {
    /// The signer of `bucket` as the S3 client options (canonical `aws_*` keys) describe its
    /// endpoint: path-style `{endpoint}/{bucket}`, or virtual-hosted, where object_store's
    /// endpoint already names the bucket; AWS's regional endpoint when none is set.
    pub(crate) fn new(
        bucket: &str,
        options: &BTreeMap<String, String>,
        credentials: AwsCredentialProvider,
    ) -> Result<Self> {
        let region = options
            .get("aws_region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = options
            .get("aws_virtual_hosted_style_request")
            .is_some_and(|v| v == "true");
        let endpoint = match (options.get("aws_endpoint"), virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let bucket_endpoint = Url::parse(&endpoint)
            .map_err(|e| Error::invalid("warehouse", format!("S3 endpoint {endpoint}: {e}")))?;
        Ok(Self {
            bucket_endpoint,
            bucket: bucket.to_string(),
            region,
            credentials,
        })
    }

    /// Parses `req` and applies the signer's policy (see the module docs); `root` checks
    /// the object's key like every other path in the warehouse.
    pub fn plan(&self, root: &Root, req: &SignRequest) -> Result<SignPlan> {
        let method = match req.method.to_ascii_uppercase().as_str() {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            "PUT" => Method::PUT,
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            other => return Err(invalid(format!("method {other:?} is not an S3 method"))),
        };
        let url = Url::parse(&req.uri)
            .map_err(|e| invalid(format!("uri {:?} is not a URL ({e})", req.uri)))?;
        // The path as sent: URL parsing resolves `.`/`..` (also percent-encoded ones), and a
        // signature for the resolved path must not be had for a path that spells another.
        let raw_path = req
            .uri
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .map(|p| p.split(['?', '#']).next().unwrap_or_default())
            .unwrap_or("/");
        if raw_path != url.path() {
            return Err(invalid(format!(
                "uri {:?}: its path is not in canonical form (dot segments or unescaped \
                 characters)",
                req.uri
            )));
        }
        let base = &self.bucket_endpoint;
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.fragment().is_some()
        {
            return Err(refused(format!(
                "{} is not this warehouse's S3 store ({base})",
                req.uri
            )));
        }
        let base_path = base.path().trim_end_matches('/');
        let key = url
            .path()
            .strip_prefix(base_path)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or_default();
        if key.is_empty() {
            return Err(refused(format!(
                "{} names the bucket, not an object: listing is never signed",
                req.uri
            )));
        }
        let decoded = object_store::path::Path::from_url_path(key)
            .map_err(|e| invalid(format!("object key in {}: {e}", req.uri)))?;
        let object = root
            .object(&format!("s3://{}/{decoded}", self.bucket))
            .map_err(|e| invalid(e.0))?;

        let query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let keys: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        let access = classify(&method, &keys).ok_or_else(|| {
            refused(format!(
                "{method} with query {:?} is not an object read or write",
                url.query().unwrap_or_default()
            ))
        })?;

        let mut headers = Vec::new();
        let mut digest = None;
        let mut declared = false;
        for (name, values) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if lower == "x-amz-copy-source" || lower == "x-amz-copy-source-range" {
                return Err(refused("a copy reads an object the signer cannot check"));
            }
            if lower == "x-amz-content-sha256" {
                if declared {
                    return Err(invalid("x-amz-content-sha256 given more than once"));
                }
                declared = true;
                digest = payload_digest(values)?;
                continue;
            }
            if lower == "host" || UNSIGNED.contains(&lower.as_str()) {
                continue;
            }
            let header = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| invalid(format!("header name {name:?}")))?;
            for v in values {
                let value = HeaderValue::from_str(v)
                    .map_err(|_| invalid(format!("value of header {name}")))?;
                headers.push((header.clone(), value));
            }
        }
        Ok(SignPlan {
            object,
            access,
            method,
            url,
            headers,
            digest,
        })
    }

    /// Signs an accepted request with the server's credentials.
    pub async fn sign(&self, plan: SignPlan) -> Result<SignedRequest> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(Error::storage)?;
        let uri: http::Uri = plan
            .url
            .as_str()
            .parse()
            .map_err(|e| invalid(format!("uri {}: {e}", plan.url)))?;
        let mut request = object_store::client::HttpRequest::new(bytes::Bytes::new().into());
        *request.method_mut() = plan.method;
        *request.uri_mut() = uri;
        for (k, v) in plan.headers {
            request.headers_mut().append(k, v);
        }
        let authorizer = AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(plan.digest.is_some());
        authorizer.authorize(&mut request, plan.digest.as_ref().map(|d| d.as_slice()));
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in request.headers() {
            let v = v
                .to_str()
                .map_err(|_| invalid(format!("value of header {k}")))?;
            headers
                .entry(k.as_str().to_string())
                .or_default()
                .push(v.to_string());
        }
        Ok(SignedRequest {
            uri: plan.url.to_string(),
            headers,
        })
    }
}

/// What a request with this method and these query keys does, if the signer signs it.
fn classify(method: &Method, keys: &[&str]) -> Option<Access> {
    let only = |allowed: &[&str]| keys.iter().all(|k| allowed.contains(k));
    let has = |k: &str| keys.contains(&k);
    match *method {
        // An object read, or one part of it; `uploads`/`uploadId`/`list-type` list.
        Method::GET | Method::HEAD if only(&["partNumber", "versionId"]) => Some(Access::Read),
        // A whole object, or one part of a multipart upload.
        Method::PUT if keys.is_empty() => Some(Access::Write),
        Method::PUT
            if has("partNumber") && has("uploadId") && only(&["partNumber", "uploadId"]) =>
        {
            Some(Access::Write)
        }
        // Create (`?uploads`) and complete (`?uploadId=`) a multipart upload.
        Method::POST if keys == ["uploads"] || keys == ["uploadId"] => Some(Access::Write),
        // Abort a multipart upload (a plain DELETE is never signed).
        Method::DELETE if keys == ["uploadId"] => Some(Access::Write),
        _ => None,
    }
}

/// The payload hash a client declared: hex SHA-256, or `UNSIGNED-PAYLOAD` (`None`).
fn payload_digest(values: &[String]) -> Result<Option<[u8; 32]>> {
    let [v] = values else {
        return Err(invalid("x-amz-content-sha256 given more than once"));
    };
    if v == "UNSIGNED-PAYLOAD" {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    if v.len() != 64 || hex_into(v, &mut out).is_none() {
        return Err(refused(format!(
            "x-amz-content-sha256 {v:?}: only a SHA-256 or UNSIGNED-PAYLOAD can be signed"
        )));
    }
    Ok(Some(out))
}

fn hex_into(s: &str, out: &mut [u8; 32]) -> Option<()> {
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::StaticCredentialProvider;
    use object_store::aws::AwsCredential;

    use super::*;

    fn signer(options: &[(&str, &str)]) -> S3Signer {
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let credentials = Arc::new(StaticCredentialProvider::new(AwsCredential {
            key_id: "AKID".into(),
            secret_key: "SECRET".into(),
            token: None,
        }));
        S3Signer::new("lake", &options, credentials).unwrap()
    }

    fn request(method: &str, uri: &str) -> SignRequest {
        SignRequest {
            method: method.into(),
            uri: uri.into(),
            headers: BTreeMap::new(),
        }
    }

    const LOCAL: &[(&str, &str)] = &[("aws_endpoint", "http://127.0.0.1:9900")];

    #[test]
    fn reads_and_writes_of_objects_are_planned_and_everything_else_refused() {
        let s = signer(LOCAL);
        let root = Root::parse("s3://lake/wh").unwrap();
        let obj = "http://127.0.0.1:9900/lake/wh/t/data/f%201.parquet";
        let p = s.plan(&root, &request("GET", obj)).unwrap();
        assert_eq!(p.access, Access::Read);
        assert_eq!(p.object.uri(), "s3://lake/wh/t/data/f 1.parquet");
        assert_eq!(
            s.plan(&root, &request("put", obj)).unwrap().access,
            Access::Write
        );
        for ok in [
            format!("{obj}?uploads"),
            format!("{obj}?partNumber=2&uploadId=x"),
        ] {
            let method = if ok.contains("partNumber") {
                "PUT"
            } else {
                "POST"
            };
            assert_eq!(
                s.plan(&root, &request(method, &ok)).unwrap().access,
                Access::Write
            );
        }
        assert_eq!(
            s.plan(&root, &request("DELETE", &format!("{obj}?uploadId=x")))
                .unwrap()
                .access,
            Access::Write
        );
        let refused_cases = [
            (
                "GET",
                "http://127.0.0.1:9900/lake?list-type=2&prefix=wh/".to_string(),
            ),
            ("GET", "http://127.0.0.1:9900/lake/".to_string()),
            ("GET", format!("{obj}?uploadId=x")),
            ("GET", format!("{obj}?acl")),
            ("POST", "http://127.0.0.1:9900/lake?delete".to_string()),
            ("POST", format!("{obj}?delete")),
            ("DELETE", obj.to_string()),
            ("PUT", format!("{obj}?tagging")),
            // Another host, bucket or scheme.
            ("GET", "http://127.0.0.1:9901/lake/wh/t/f".to_string()),
            ("GET", "https://127.0.0.1:9900/lake/wh/t/f".to_string()),
            ("GET", "http://127.0.0.1:9900/lake2/wh/t/f".to_string()),
        ];
        for (m, u) in refused_cases {
            let e = s.plan(&root, &request(m, &u)).unwrap_err();
            assert!(matches!(e, Error::Forbidden(_)), "{m} {u}: {e}");
        }
        // Outside the warehouse, or a key that does not survive the path check.
        for u in [
            "http://127.0.0.1:9900/lake/other/f",
            "http://127.0.0.1:9900/lake/wh/t/%2E%2E/x",
            "http://127.0.0.1:9900/lake/wh/t//x",
            "not a url",
        ] {
            let e = s.plan(&root, &request("GET", u)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{u}: {e}");
        }
        assert!(s.plan(&root, &request("PATCH", obj)).is_err());
        // A copy reads another object.
        let mut copy = request("PUT", obj);
        copy.headers
            .insert("X-Amz-Copy-Source".into(), vec!["/lake/secret".into()]);
        assert!(matches!(
            s.plan(&root, &copy).unwrap_err(),
            Error::Forbidden(_)
        ));
    }

    #[test]
    fn virtual_hosted_and_aws_default_endpoints_are_matched() {
        let root = Root::parse("s3://lake/wh").unwrap();
        let aws = signer(&[("aws_region", "eu-west-1")]);
        assert!(
            aws.plan(
                &root,
                &request("GET", "https://s3.eu-west-1.amazonaws.com/lake/wh/t/f")
            )
            .is_ok()
        );
        let vhost = signer(&[
            ("aws_region", "eu-west-1"),
            ("aws_virtual_hosted_style_request", "true"),
        ]);
        assert!(
            vhost
                .plan(
                    &root,
                    &request("GET", "https://lake.s3.eu-west-1.amazonaws.com/wh/t/f")
                )
                .is_ok()
        );
        assert!(
            vhost
                .plan(
                    &root,
                    &request("GET", "https://other.s3.eu-west-1.amazonaws.com/wh/t/f")
                )
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_signature_covers_the_declared_payload_and_the_clients_headers() {
        let s = signer(LOCAL);
        let root = Root::parse("s3://lake/wh").unwrap();
        let mut req = request("PUT", "http://127.0.0.1:9900/lake/wh/t/f");
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        req.headers
            .insert("X-Amz-Content-SHA256".into(), vec![sha.into()]);
        req.headers.insert(
            "Content-MD5".into(),
            vec!["1B2M2Y8AsgTpgAmY7PhCfg==".into()],
        );
        req.headers
            .insert("User-Agent".into(), vec!["Botocore/1".into()]);
        let signed = s.sign(s.plan(&root, &req).unwrap()).await.unwrap();
        assert_eq!(signed.uri, "http://127.0.0.1:9900/lake/wh/t/f");
        assert_eq!(signed.headers["x-amz-content-sha256"], vec![sha]);
        assert_eq!(signed.headers["host"], vec!["127.0.0.1:9900"]);
        let auth = &signed.headers["authorization"][0];
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/")
                && auth.contains("SignedHeaders=content-md5;host;x-amz-content-sha256;x-amz-date,"),
            "{auth}"
        );
        // No declared hash: UNSIGNED-PAYLOAD. A streaming one cannot be signed.
        let plain = request("GET", "http://127.0.0.1:9900/lake/wh/t/f");
        let signed = s.sign(s.plan(&root, &plain).unwrap()).await.unwrap();
        assert_eq!(
            signed.headers["x-amz-content-sha256"],
            vec!["UNSIGNED-PAYLOAD"]
        );
        req.headers.insert(
            "x-amz-content-sha256".into(),
            vec!["STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()],
        );
        assert!(s.plan(&root, &req).is_err());
    }
}
