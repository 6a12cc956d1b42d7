//! Storage access handed to clients: what a client (the `firn` CLI, `firn sql`, the Rust
//! `TableWriter`, an Iceberg REST engine) needs to read and write a table's objects itself,
//! so that the Firn endpoint is the only setting a client needs.
//!
//! For S3 it is the store's endpoint, region, addressing style and plain-HTTP switch, and
//! the credentials the server holds (from its warehouse options or its `AWS_*` environment).
//! With STS configured ([`super::sts`]) the keys are temporary and scoped to the table's
//! location; otherwise they are the server's static keys, **not scoped** to the table:
//! whoever may read a table receives keys that reach the whole bucket, which the README says. Local and in-memory warehouses need
//! nothing (a client on the same machine opens the path).
//!
//! The options use `object_store`'s canonical S3 keys (`aws_endpoint`, `aws_region`,
//! `allow_http`, ...), which [`super::Warehouse::open`] takes back; [`iceberg_properties`]
//! spells the same access as Iceberg's FileIO properties (`s3.endpoint`, ...).

use std::collections::BTreeMap;

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};

use super::WarehouseConfig;

/// Keys of a client's storage options that are credentials (never shown in `Debug`).
pub const SECRET_KEYS: [&str; 2] = ["aws_secret_access_key", "aws_session_token"];

/// What a client needs to reach a table's objects. `Debug` redacts the credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageAccess {
    /// The table's location: the objects these options are for.
    pub location: String,
    /// `object_store` options (canonical S3 keys); empty for local and in-memory storage.
    pub options: BTreeMap<String, String>,
    /// When the credentials in `options` stop working (temporary ones from STS).
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for StorageAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if SECRET_KEYS.contains(&k.as_str()) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("StorageAccess")
            .field("location", &self.location)
            .field("options", &options)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl StorageAccess {
    /// The warehouse config that reaches these objects (the location is its root).
    pub fn warehouse_config(&self) -> WarehouseConfig {
        WarehouseConfig {
            url: self.location.clone(),
            options: self.options.clone().into_iter().collect(),
        }
    }

    /// The S3 credential in the options (under any of the names object_store accepts),
    /// if they hold an access key and its secret.
    pub fn s3_credential(&self) -> Option<AwsCredential> {
        let (mut key_id, mut secret_key, mut token) = (None, None, None);
        for (k, v) in &self.options {
            match k.parse::<AmazonS3ConfigKey>() {
                Ok(AmazonS3ConfigKey::AccessKeyId) => key_id = Some(v.clone()),
                Ok(AmazonS3ConfigKey::SecretAccessKey) => secret_key = Some(v.clone()),
                Ok(AmazonS3ConfigKey::Token) => token = Some(v.clone()),
                _ => {}
            }
        }
        Some(AwsCredential {
            key_id: key_id?,
            secret_key: secret_key?,
            token,
        })
    }
}

/// The options a client needs for the S3 store `b` describes (after the server's own
/// environment and warehouse options were applied to it).
pub(crate) fn s3_client_options(b: &AmazonS3Builder) -> BTreeMap<String, String> {
    let keys = [
        AmazonS3ConfigKey::Endpoint,
        AmazonS3ConfigKey::Region,
        AmazonS3ConfigKey::VirtualHostedStyleRequest,
        AmazonS3ConfigKey::AccessKeyId,
        AmazonS3ConfigKey::SecretAccessKey,
        AmazonS3ConfigKey::Token,
        AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
    ];
    keys.into_iter()
        .filter_map(|k| Some((k.as_ref().to_string(), b.get_config_value(&k)?)))
        .collect()
}

/// The same access as Iceberg FileIO properties, for REST clients (PyIceberg, DuckDB,
/// Spark's S3FileIO). `secrets`: include the credentials (a client asked for vended
/// credentials), or only where the store is.
pub fn iceberg_properties(access: &StorageAccess, secrets: bool) -> BTreeMap<String, String> {
    let options = &access.options;
    let mut out = BTreeMap::new();
    let get = |k: &str| options.get(k).cloned();
    if let Some(e) = get("aws_endpoint") {
        out.insert("s3.endpoint".into(), e);
    }
    if let Some(r) = get("aws_region") {
        out.insert("s3.region".into(), r.clone());
        out.insert("client.region".into(), r);
    }
    if let Some(v) = get("aws_virtual_hosted_style_request") {
        let path_style = v != "true";
        out.insert("s3.path-style-access".into(), path_style.to_string());
    }
    if secrets {
        for (from, to) in [
            ("aws_access_key_id", "s3.access-key-id"),
            ("aws_secret_access_key", "s3.secret-access-key"),
            ("aws_session_token", "s3.session-token"),
        ] {
            if let Some(v) = get(from) {
                out.insert(to.into(), v);
            }
        }
        if let Some(at) = access.expires_at_ms {
            out.insert("s3.session-token-expires-at-ms".into(), at.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_options_round_trip_and_become_iceberg_properties() {
        let b = AmazonS3Builder::new()
            .with_bucket_name("lake")
            .with_config("endpoint".parse().unwrap(), "http://127.0.0.1:9000")
            .with_config("region".parse().unwrap(), "eu-west-1")
            .with_config("allow_http".parse().unwrap(), "true")
            .with_config("access_key_id".parse().unwrap(), "AKID")
            .with_config("secret_access_key".parse().unwrap(), "SECRET");
        let o = s3_client_options(&b);
        assert_eq!(o["aws_endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["allow_http"], "true");
        assert_eq!(o["aws_secret_access_key"], "SECRET");
        assert!(!o.contains_key("aws_session_token"));
        // Every key reads back as an object_store option.
        for k in o.keys() {
            assert!(k.parse::<AmazonS3ConfigKey>().is_ok(), "{k}");
        }
        let a = StorageAccess {
            location: "s3://lake/t".into(),
            options: o.clone(),
            expires_at_ms: Some(7),
        };
        let c = a.s3_credential().unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.secret_key.as_str()),
            ("AKID", "SECRET")
        );
        assert_eq!(c.token, None);
        assert_eq!(a.warehouse_config().url, "s3://lake/t");
        let mut keyless = a.clone();
        keyless.options.remove("aws_secret_access_key");
        assert!(keyless.s3_credential().is_none());
        let p = iceberg_properties(&a, true);
        assert_eq!(p["s3.session-token-expires-at-ms"], "7");
        assert_eq!(p["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(p["s3.path-style-access"], "true");
        assert_eq!(p["s3.access-key-id"], "AKID");
        let shown = format!(
            "{:?}",
            StorageAccess {
                location: "s3://lake/t".into(),
                options: o.clone(),
                expires_at_ms: None,
            }
        );
        assert!(
            !shown.contains("SECRET") && shown.contains("AKID"),
            "{shown}"
        );
        let public = iceberg_properties(&a, false);
        assert!(
            public
                .keys()
                .all(|k| !k.contains("key") && !k.contains("token"))
        );
        assert_eq!(public["s3.region"], "eu-west-1");
    }
}
