//! `firn.toml`: every `firn serve` setting in one file. A flag or `FIRN_*` variable wins
//! over the file, the file over the defaults. Unknown keys and bad values are refused at
//! start, naming the key.
//!
//! ```toml
//! data_dir = "/var/lib/firn"
//! catalog_url = "postgres://firn:secret@db/firn"
//! auth = true
//! log_format = "json"
//!
//! [listen]
//! grpc = "0.0.0.0:50051"
//! rest = "0.0.0.0:8181"
//! admin = "127.0.0.1:9181"
//!
//! [tls]
//! cert = "/etc/firn/server.pem"
//! key = "/etc/firn/server.key"
//!
//! [oidc]
//! issuer = "https://id.example.com/realms/data"
//! audience = "firn"
//! principal_claim = "preferred_username"
//!
//! [warehouse]
//! url = "s3://lake/warehouse"
//! options = { endpoint = "https://s3.example.com", region = "eu-west-1" }
//!
//! # More warehouses, in this server only (keys stay in this file, not in the database);
//! # `firn warehouse create` records one for every replica instead.
//! [warehouses.archive]
//! url = "s3://archive/lake"
//! options = { endpoint = "https://s3.example.com", region = "eu-west-1" }
//!
//! [maintenance]
//! interval = "1h"
//!
//! [limits]
//! max_connections = 1024
//! header_read_timeout = "10s"
//! idle_timeout = "60s"
//! body_read_timeout = "30s"
//! shutdown_timeout = "30s"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use crate::serve::{LogFormat, ServeArgs};

/// A duration written as humans do ("30s", "1h"); more than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match humantime::parse_duration(&s) {
            Ok(v) if v.is_zero() => Err(serde::de::Error::custom(format!(
                "{s:?} must be more than 0"
            ))),
            Ok(v) => Ok(Span(v)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{s:?} is not a duration such as \"30s\" or \"1h\": {e}"
            ))),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_no_auth: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    #[serde(default)]
    listen: Listen,
    #[serde(default, skip_serializing_if = "Tls::is_empty")]
    tls: Tls,
    #[serde(default, skip_serializing_if = "Oidc::is_empty")]
    oidc: Oidc,
    #[serde(default)]
    warehouse: Warehouse,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    warehouses: BTreeMap<String, NamedWarehouse>,
    #[serde(default)]
    maintenance: Maintenance,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rest: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
}

impl Tls {
    fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none()
    }
}

/// An OpenID Connect issuer whose tokens are credentials.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Oidc {
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_claim: Option<String>,
}

impl Oidc {
    fn is_empty(&self) -> bool {
        self.issuer.is_none()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Warehouse {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

/// A named warehouse of `[warehouses.NAME]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NamedWarehouse {
    url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Maintenance {
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<Span>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_read_timeout: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_read_timeout: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout: Option<Span>,
}

/// Whether the file may set argument `id`: it came from neither a flag nor a variable.
fn from_file(matches: &clap::ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Sets `slot` from the file's `value` unless a flag or variable set it.
fn take<T>(matches: &clap::ArgMatches, id: &str, slot: &mut T, value: Option<T>) {
    if let Some(v) = value
        && from_file(matches, id)
    {
        *slot = v;
    }
}

impl FileConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let c: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if c.limits.max_connections == Some(0) {
            bail!("limits.max_connections must be at least 1");
        }
        if c.tls.cert.is_some() != c.tls.key.is_some() {
            bail!("tls.cert and tls.key go together: set both or neither");
        }
        if c.oidc.issuer.is_none()
            && (c.oidc.jwks.is_some()
                || c.oidc.audience.is_some()
                || c.oidc.principal_claim.is_some())
        {
            bail!("oidc.issuer is required with the other oidc settings");
        }
        if c.auth == Some(true) && c.insecure_no_auth == Some(true) {
            bail!("auth and insecure_no_auth cannot both be true");
        }
        Ok(c)
    }

    /// Applies the file's settings to `args` where no flag or variable set them.
    pub fn apply(self, args: &mut ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<()> {
        take(m, "data_dir", &mut args.data_dir, self.data_dir);
        take(
            m,
            "catalog_url",
            &mut args.catalog_url,
            self.catalog_url.map(Some),
        );
        take(m, "auth", &mut args.auth, self.auth);
        take(
            m,
            "insecure_no_auth",
            &mut args.insecure_no_auth,
            self.insecure_no_auth,
        );
        take(
            m,
            "admin_token_file",
            &mut args.admin_token_file,
            self.admin_token_file.map(Some),
        );
        take(m, "log_format", &mut args.log_format, self.log_format);
        take(m, "grpc_listen", &mut args.grpc_listen, self.listen.grpc);
        take(m, "rest_listen", &mut args.rest_listen, self.listen.rest);
        take(m, "admin_listen", &mut args.admin_listen, self.listen.admin);
        take(m, "tls_cert", &mut args.tls_cert, self.tls.cert.map(Some));
        take(m, "tls_key", &mut args.tls_key, self.tls.key.map(Some));
        take(
            m,
            "oidc_issuer",
            &mut args.oidc_issuer,
            self.oidc.issuer.map(Some),
        );
        take(
            m,
            "oidc_jwks",
            &mut args.oidc_jwks,
            self.oidc.jwks.map(Some),
        );
        take(
            m,
            "oidc_audience",
            &mut args.oidc_audience,
            self.oidc.audience.map(Some),
        );
        take(
            m,
            "oidc_principal_claim",
            &mut args.oidc_principal_claim,
            self.oidc.principal_claim,
        );
        take(
            m,
            "warehouse",
            &mut args.warehouse,
            self.warehouse.url.map(Some),
        );
        if from_file(m, "warehouse_options") {
            // Command-line options come after the file's and so win.
            let mut all: Vec<String> = self
                .warehouse
                .options
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            all.append(&mut args.warehouse_options);
            args.warehouse_options = all;
        }
        args.warehouses = self
            .warehouses
            .into_iter()
            .map(|(name, w)| {
                let config = firn_core::WarehouseConfig {
                    url: w.url,
                    options: w.options.into_iter().collect(),
                };
                (name, config)
            })
            .collect();
        take(
            m,
            "maintenance_interval",
            &mut args.maintenance_interval,
            self.maintenance.interval.map(|s| Some(s.0)),
        );
        let l = self.limits;
        take(
            m,
            "max_connections",
            &mut args.max_connections,
            l.max_connections,
        );
        take(
            m,
            "header_read_timeout",
            &mut args.header_read_timeout,
            l.header_read_timeout.map(|s| s.0),
        );
        take(
            m,
            "idle_timeout",
            &mut args.idle_timeout,
            l.idle_timeout.map(|s| s.0),
        );
        take(
            m,
            "body_read_timeout",
            &mut args.body_read_timeout,
            l.body_read_timeout.map(|s| s.0),
        );
        take(
            m,
            "shutdown_timeout",
            &mut args.shutdown_timeout,
            l.shutdown_timeout.map(|s| s.0),
        );
        if args.auth && args.insecure_no_auth {
            bail!("auth and insecure_no_auth cannot both be on (one came from the config file)");
        }
        if args.tls_cert.is_some() != args.tls_key.is_some() {
            bail!("the TLS certificate and key go together: set both or neither");
        }
        Ok(())
    }

    /// The settings in force, as a config file would hold them, secrets redacted.
    pub fn effective(a: &ServeArgs) -> Self {
        let redacted = |v: &str| firn_core::auth::redact_url(v);
        FileConfig {
            data_dir: Some(a.data_dir.clone()),
            catalog_url: a.catalog_url.as_deref().map(redacted),
            auth: Some(a.auth),
            insecure_no_auth: Some(a.insecure_no_auth),
            admin_token_file: a.admin_token_file.clone(),
            log_format: Some(a.log_format),
            listen: Listen {
                grpc: Some(a.grpc_listen),
                rest: Some(a.rest_listen),
                admin: Some(a.admin_listen),
            },
            tls: Tls {
                cert: a.tls_cert.clone(),
                key: a.tls_key.clone(),
            },
            oidc: Oidc {
                issuer: a.oidc_issuer.clone(),
                jwks: a.oidc_jwks.clone(),
                audience: a.oidc_audience.clone(),
                principal_claim: a
                    .oidc_issuer
                    .as_ref()
                    .map(|_| a.oidc_principal_claim.clone()),
            },
            warehouse: Warehouse {
                url: a.warehouse.as_deref().map(redacted),
                options: firn_core::auth::redact_settings(
                    &crate::key_values("--warehouse-option", &a.warehouse_options)
                        .unwrap_or_default(),
                ),
            },
            warehouses: a
                .warehouses
                .iter()
                .map(|(name, w)| {
                    let named = NamedWarehouse {
                        url: redacted(&w.url),
                        options: firn_core::auth::redact_settings(&w.options),
                    };
                    (name.clone(), named)
                })
                .collect(),
            maintenance: Maintenance {
                interval: a.maintenance_interval.map(Span),
            },
            limits: Limits {
                max_connections: Some(a.max_connections),
                header_read_timeout: Some(Span(a.header_read_timeout)),
                idle_timeout: Some(Span(a.idle_timeout)),
                body_read_timeout: Some(Span(a.body_read_timeout)),
                shutdown_timeout: Some(Span(a.shutdown_timeout)),
            },
        }
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn settings(argv: &[&str], file: &str) -> anyhow::Result<ServeArgs> {
        let m = Probe::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        let mut args = Probe::from_arg_matches(&m)?.serve;
        FileConfig::parse(file)?.apply(&mut args, &m)?;
        Ok(args)
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = r#"
            catalog_url = "postgres://firn:hunter2@db/firn"
            [listen]
            grpc = "0.0.0.0:6000"
            rest = "0.0.0.0:6001"
            [limits]
            idle_timeout = "2m"
            [oidc]
            issuer = "https://id.example.com"
            principal_claim = "email"
            [warehouse]
            url = "s3://lake/wh"
            options = { region = "eu-west-1", secret_access_key = "AKIA-SECRET" }
            [warehouses.archive]
            url = "s3://archive/wh"
            options = { region = "us-east-1", secret_access_key = "ARCHIVE-SECRET" }
        "#;
        let a = settings(&["--grpc-listen", "127.0.0.1:7000"], file).unwrap();
        assert_eq!(a.grpc_listen.to_string(), "127.0.0.1:7000");
        assert_eq!(a.rest_listen.to_string(), "0.0.0.0:6001");
        assert_eq!(a.idle_timeout, Duration::from_secs(120));
        assert_eq!(a.header_read_timeout, Duration::from_secs(10));
        assert_eq!(a.warehouse.as_deref(), Some("s3://lake/wh"));
        let archive = &a.warehouses["archive"];
        assert_eq!(archive.url, "s3://archive/wh");
        assert_eq!(archive.options["secret_access_key"], "ARCHIVE-SECRET");
        assert_eq!(a.oidc_issuer.as_deref(), Some("https://id.example.com"));
        assert_eq!(a.oidc_principal_claim, "email");
        let a2 = settings(&["--oidc-principal-claim", "sub"], file).unwrap();
        assert_eq!(a2.oidc_principal_claim, "sub");
        let printed = FileConfig::effective(&a).to_toml().unwrap();
        assert!(printed.contains("postgres://firn:***@db/firn"), "{printed}");
        assert!(
            !printed.contains("hunter2")
                && !printed.contains("AKIA-SECRET")
                && !printed.contains("ARCHIVE-SECRET"),
            "{printed}"
        );
        assert!(printed.contains("region = \"eu-west-1\""), "{printed}");
        assert!(printed.contains("[warehouses.archive]"), "{printed}");
        // What is printed is a config file that reads back.
        assert!(FileConfig::parse(&printed).is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
        let e = settings(&[], "listen_grpc = \"0.0.0.0:1\"").err().unwrap();
        assert!(format!("{e:#}").contains("listen_grpc"), "{e:#}");
        let e = settings(&[], "[limits]\nidle_timeout = \"soon\"")
            .err()
            .unwrap();
        let text = format!("{e:#}");
        assert!(
            text.contains("idle_timeout") && text.contains("soon"),
            "{text}"
        );
        let e = settings(&[], "[limits]\nidle_timeout = \"0s\"")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("more than 0"));
        let e = settings(&[], "[listen]\ngrpc = \"nowhere\"").err().unwrap();
        assert!(format!("{e:#}").contains("grpc"), "{e:#}");
        let e = settings(&[], "[tls]\ncert = \"/a.pem\"").err().unwrap();
        assert!(format!("{e:#}").contains("tls.cert and tls.key"));
        let e = settings(&[], "[oidc]\naudience = \"firn\"").err().unwrap();
        assert!(format!("{e:#}").contains("oidc.issuer"), "{e:#}");
        let e = settings(&[], "[oidc]\nissuer = \"https://id\"\njwks_url = \"x\"")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("jwks_url"), "{e:#}");
    }
}
