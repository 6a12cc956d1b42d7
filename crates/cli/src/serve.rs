//! `firn serve`: the server's settings (flags > FIRN_* variables > `--config` file >
//! defaults), start-up (catalog, first admin, TLS, listeners) and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use firn_core::db::Db;
use firn_core::storage::registry::Source;
use firn_core::{Catalog, Env, Warehouse, WarehouseConfig, Warehouses};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (flags and FIRN_* variables win over it).
    #[arg(long, env = "FIRN_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, env = "FIRN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Where the default catalog database and warehouse live.
    #[arg(long, env = "FIRN_DATA_DIR", default_value = "./firn-data")]
    pub(crate) data_dir: PathBuf,
    /// Address of the gRPC API.
    #[arg(long, env = "FIRN_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub(crate) grpc_listen: SocketAddr,
    /// Address of the Iceberg REST catalog API (for Spark, PyIceberg, DuckDB, Trino).
    #[arg(long, env = "FIRN_REST_LISTEN", default_value = "127.0.0.1:8181")]
    pub(crate) rest_listen: SocketAddr,
    /// Address of the admin HTTP listener: /metrics, /healthz, /readyz (no credentials:
    /// keep it off public networks).
    #[arg(long, env = "FIRN_ADMIN_LISTEN", default_value = "127.0.0.1:9181")]
    pub(crate) admin_listen: SocketAddr,
    /// Require a credential on every request (gRPC, REST, SQL) [default: on when a
    /// listener is not on loopback].
    #[arg(long, env = "FIRN_AUTH")]
    pub(crate) auth: bool,
    /// Serve a non-loopback address without authentication: anyone who can reach the
    /// ports may read, change and drop every table.
    #[arg(long, conflicts_with = "auth")]
    pub(crate) insecure_no_auth: bool,
    /// The first admin's token, for a server with authentication on and no principal yet
    /// (at least 32 characters) [default: a random one, written to DATA_DIR/admin-token].
    #[arg(long = "admin-token-file", env = "FIRN_ADMIN_TOKEN_FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Also accept JWTs from this OpenID Connect issuer (exactly its tokens' `iss`) as
    /// credentials; each names a principal by --oidc-principal-claim, which an admin
    /// creates and grants privileges to.
    #[arg(long, env = "FIRN_OIDC_ISSUER")]
    pub(crate) oidc_issuer: Option<String>,
    /// The issuer's keys: a JWKS file or https:// URL [default: the jwks_uri of
    /// ISSUER/.well-known/openid-configuration].
    #[arg(long, env = "FIRN_OIDC_JWKS", requires = "oidc_issuer")]
    pub(crate) oidc_jwks: Option<String>,
    /// Refuse issuer tokens whose `aud` does not hold this (the client id the provider
    /// issued for Firn) [default: no audience check].
    #[arg(long, env = "FIRN_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub(crate) oidc_audience: Option<String>,
    /// The claim of an issuer token that is the principal's name.
    #[arg(long, env = "FIRN_OIDC_PRINCIPAL_CLAIM", default_value = "sub")]
    pub(crate) oidc_principal_claim: String,
    /// Serve TLS on both ports with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "FIRN_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FIRN_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Catalog database: sqlite://PATH or postgres://USER:PASS@HOST/DB [default: SQLite in the data dir].
    #[arg(long, env = "FIRN_CATALOG_URL")]
    pub(crate) catalog_url: Option<String>,
    /// Warehouse root: file:///DIR, s3://BUCKET/PREFIX [default: DATA_DIR/warehouse].
    #[arg(long, env = "FIRN_WAREHOUSE")]
    pub(crate) warehouse: Option<String>,
    /// Warehouse option KEY=VALUE (S3: endpoint, region, allow_http, ...); repeatable.
    #[arg(long = "warehouse-option", value_name = "KEY=VALUE")]
    pub(crate) warehouse_options: Vec<String>,
    /// Named warehouses declared in the config file (`[warehouses.NAME]`), by name.
    #[arg(skip)]
    pub(crate) warehouses: std::collections::BTreeMap<String, WarehouseConfig>,
    /// Expire snapshots of every table this often (e.g. 1h), with each table's
    /// history.expire.* settings; one replica at a time does it [default: never].
    #[arg(long, env = "FIRN_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) maintenance_interval: Option<std::time::Duration>,
    /// Most open connections on each port (gRPC and REST); beyond it new connections wait
    /// and the connection idle longest is closed to make room [lowered to fit the
    /// open-files limit].
    #[arg(long, env = "FIRN_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// A REST request's head, or the gRPC (HTTP/2) preface, must arrive within this.
    #[arg(long, env = "FIRN_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "FIRN_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub(crate) idle_timeout: Duration,
    /// A REST request's body must arrive within this of its head, else 408.
    #[arg(long, env = "FIRN_BODY_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub(crate) body_read_timeout: Duration,
    /// On SIGTERM or Ctrl-C, requests in flight get this long to finish; then the rest are
    /// cut (their clients see UNAVAILABLE) and the process exits.
    #[arg(long, env = "FIRN_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub(crate) shutdown_timeout: Duration,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Raises the soft open-files limit to the hard one; returns the limit in force.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The connections each of the two listeners may hold: `requested`, lowered so that both
/// full listeners still leave file descriptors to the catalog database, the warehouse
/// and the files being written (256 of them, or half the limit when that is less).
fn connection_cap(requested: u32, open_files: Option<u64>) -> usize {
    let requested = requested as usize;
    let Some(limit) = open_files else {
        return requested;
    };
    let reserve = (limit / 2).min(256);
    let per_listener = (limit.saturating_sub(reserve) / 2).max(1);
    requested.min(usize::try_from(per_listener).unwrap_or(usize::MAX))
}

/// The OpenID Connect issuer whose tokens are credentials, its keys read (so a wrong
/// issuer or JWKS stops the start with one line).
async fn identity_provider(
    args: &ServeArgs,
) -> anyhow::Result<Option<std::sync::Arc<dyn firn_core::IdentityProvider>>> {
    let Some(issuer) = &args.oidc_issuer else {
        return Ok(None);
    };
    let mut config = firn_oidc::OidcConfig::new(issuer.clone());
    config.audience = args.oidc_audience.clone();
    config.principal_claim = args.oidc_principal_claim.clone();
    config.jwks = args
        .oidc_jwks
        .as_deref()
        .map(firn_oidc::JwksSource::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--oidc-jwks: {e}"))?;
    let oidc = firn_oidc::Oidc::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("OpenID Connect issuer {issuer}: {e}"))?;
    tracing::info!(issuer, claim = %args.oidc_principal_claim, "accepting the issuer's tokens");
    Ok(Some(std::sync::Arc::new(oidc)))
}

/// The serve settings from the command line, the environment and `--config`, flags and
/// variables first; `--print-config` prints them (secrets redacted) instead of serving.
pub fn settings(matches: &clap::ArgMatches) -> anyhow::Result<ServeArgs> {
    use clap::FromArgMatches;
    let mut args = ServeArgs::from_arg_matches(matches)?;
    if let Some(path) = args.config.clone() {
        let file = crate::config::FileConfig::read(&path)?;
        file.apply(&mut args, matches)?;
    }
    Ok(args)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", crate::config::FileConfig::effective(&args).to_toml()?);
        return Ok(());
    }
    // The identity provider's keys are read first: a wrong issuer stops the start at once.
    let provider = identity_provider(&args).await?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let catalog_url = args
        .catalog_url
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("catalog.db").display()));
    let warehouse_url = match args.warehouse {
        Some(w) => w,
        None => {
            let dir = data_dir.join("warehouse");
            std::fs::create_dir_all(&dir)?;
            format!("file://{}", dir.display())
        }
    };
    let warehouse = WarehouseConfig {
        url: warehouse_url,
        options: crate::key_values("--warehouse-option", &args.warehouse_options)?,
    };
    let public = [args.grpc_listen, args.rest_listen]
        .iter()
        .any(|a| !a.ip().is_loopback());
    let auth_required = args.auth || (public && !args.insecure_no_auth);
    if public && !auth_required {
        tracing::warn!("--insecure-no-auth: serving a non-loopback address without authentication");
    }
    // The store is tried before anything else uses it: a wrong setting stops the start
    // with one line naming it, instead of failing the first request as an outage.
    let store = Warehouse::open(warehouse.clone())?;
    store.check().await?;
    let warehouses = Warehouses::new(Arc::new(store));
    for (name, config) in &args.warehouses {
        let w = warehouses
            .open_checked(name, config.clone())
            .await
            .with_context(|| format!("config file, [warehouses.{name}]"))?;
        warehouses.insert(name, w, Source::Config)?;
    }
    let catalog = Catalog::open_in(Db::connect(&catalog_url).await?, warehouses, Env::default())
        .await?
        .with_auth(firn_core::AuthConfig {
            required: auth_required,
            provider,
        });
    if auth_required {
        bootstrap_admin(&catalog, &data_dir, args.admin_token_file.as_deref()).await?;
    }
    let open_files = raise_open_files_limit();
    let max_connections = connection_cap(args.max_connections, open_files);
    if max_connections < args.max_connections as usize {
        tracing::warn!(
            "--max-connections {} lowered to {max_connections}: the open-files limit is {}",
            args.max_connections,
            open_files.unwrap_or_default()
        );
    }
    let limits = firn_net::Limits {
        max_connections,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
    };
    tracing::info!(
        open_files_limit = open_files,
        max_connections,
        header_read_timeout = ?args.header_read_timeout,
        idle_timeout = ?args.idle_timeout,
        body_read_timeout = ?args.body_read_timeout,
        "connection limits (each port)"
    );
    let (grpc_tls, rest_tls) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (
            Some(firn_net::tls::acceptor(cert, key, &[b"h2"])?),
            Some(firn_net::tls::acceptor(cert, key, &[b"http/1.1"])?),
        ),
        _ => (None, None),
    };
    let scheme = if grpc_tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.grpc_listen))?;
    let rest_listener = tokio::net::TcpListener::bind(args.rest_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.rest_listen))?;
    tracing::info!(
        grpc = %listener.local_addr()?,
        rest = %rest_listener.local_addr()?,
        catalog = %firn_core::auth::redact_url(&catalog_url),
        warehouse = %firn_core::auth::redact_url(&warehouse.url),
        auth = auth_required,
        "firn serving"
    );
    eprintln!(
        "firn serving gRPC on {scheme}://{} and Iceberg REST on {scheme}://{} (catalog {}, warehouse {}, authentication {})",
        listener.local_addr()?,
        rest_listener.local_addr()?,
        firn_core::auth::redact_url(&catalog_url),
        firn_core::auth::redact_url(&warehouse.url),
        if auth_required { "on" } else { "off" },
    );
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.admin_listen))?;
    eprintln!(
        "admin (metrics, health) on http://{}",
        admin_listener.local_addr()?
    );
    let maintenance = args
        .maintenance_interval
        .map(|every| catalog.spawn_scheduled_expiry(every));
    // One shutdown signal stops both transports.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin = tokio::spawn(firn_admin::serve(
        catalog.clone(),
        admin_listener,
        wait(stopped.clone()),
    ));
    let rest = tokio::spawn(firn_rest::serve(
        catalog.clone(),
        firn_rest::RestConfig {
            tls: rest_tls,
            limits,
            body_read_timeout: args.body_read_timeout,
        },
        rest_listener,
        wait(stopped.clone()),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let grpc = firn_server::serve_with(
        catalog.clone(),
        firn_server::ServeOptions {
            limits,
            tls: grpc_tls,
        },
        listener,
        wait(stopped.clone()),
    );
    let served = async {
        grpc.await?;
        rest.await??;
        admin.await??;
        Ok::<_, anyhow::Error>(())
    };
    // Once stopping, requests in flight get the shutdown timeout; then they are cut (their
    // connections close: clients see UNAVAILABLE, and a commit's outcome is for them to
    // ask again with its commit id).
    let deadline = {
        let mut stopped = stopped.clone();
        let timeout = args.shutdown_timeout;
        async move {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(timeout).await;
        }
    };
    tokio::select! {
        r = served => r?,
        () = deadline => tracing::warn!(
            timeout = ?args.shutdown_timeout,
            "requests still in flight at the shutdown timeout: cut"
        ),
    }
    if let Some(m) = maintenance {
        m.abort();
    }
    // What was written behind the last commits goes to the store before the process ends.
    catalog.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The first admin credential of a server that requires authentication and has no
/// principal yet: taken from `token_file`, or made and written to `DATA_DIR/admin-token`
/// (mode 0600) and printed this once.
async fn bootstrap_admin(
    catalog: &Catalog,
    data_dir: &std::path::Path,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let given = match token_file {
        Some(f) => Some(firn_core::Secret::new(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the admin token file {}: {e}", f.display())
                })?
                .trim(),
        )),
        None => None,
    };
    let Some(issued) = catalog.bootstrap_admin(given.as_ref()).await? else {
        return Ok(());
    };
    let path = data_dir.join("admin-token");
    write_private(&path, &format!("{}\n", issued.token.expose()))?;
    eprintln!(
        "created principal {} with admin on the catalog; its token (shown once, also in {}):\n{}",
        firn_core::catalog::BOOTSTRAP_ADMIN,
        path.display(),
        issued.token.expose()
    );
    Ok(())
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_file_descriptors_for_the_rest() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        // Both listeners full, 256 descriptors remain.
        assert_eq!(connection_cap(1024, Some(2304)), 1024);
        assert_eq!(connection_cap(1024, Some(1024)), 384);
        // Small limits keep half for the rest.
        assert_eq!(connection_cap(1024, Some(512)), 128);
        assert_eq!(connection_cap(16, Some(512)), 16);
        assert_eq!(connection_cap(1024, Some(2)), 1);
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(positive_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(positive_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
