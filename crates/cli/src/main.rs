//! `firn`: the Firn server and a command-line client of it.

mod access;
mod client_cmds;
mod load;
mod maintenance;
mod output;
mod sql;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use firn_core::{Catalog, CatalogConfig, Env, WarehouseConfig};

#[derive(Parser)]
#[command(
    name = "firn",
    version,
    about = "Firn: atomic commits for Apache Iceberg tables on object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The Firn server's gRPC endpoint.
    #[arg(
        long,
        env = "FIRN_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token for the server (firn token create). A flag shows in `ps`: prefer
    /// FIRN_TOKEN or --token-file.
    #[arg(long, env = "FIRN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Read the bearer token from this file (e.g. the server's DATA_DIR/admin-token).
    #[arg(long, env = "FIRN_TOKEN_FILE", global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https:// endpoint, besides the system roots.
    #[arg(long, env = "FIRN_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl Conn {
    /// The credential and TLS trust this command connects with.
    pub fn options(&self) -> anyhow::Result<firn_client::ConnectOptions> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read the token file {}: {e}", f.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let ca_cert_pem = match &self.ca_cert {
            Some(f) => Some(std::fs::read(f).map_err(|e| {
                anyhow::anyhow!("cannot read the CA certificate {}: {e}", f.display())
            })?),
            None => None,
        };
        Ok(firn_client::ConnectOptions { token, ca_cert_pem })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the Firn server (SQLite + local directory by default: no set-up needed).
    Serve(ServeArgs),
    /// Create, list or drop namespaces.
    #[command(subcommand)]
    Namespace(client_cmds::NamespaceCmd),
    /// Create, list, show or drop tables.
    #[command(subcommand)]
    Table(client_cmds::TableCmd),
    /// Load Parquet, CSV or JSON-lines files into a table as one commit.
    Load(client_cmds::LoadArgs),
    /// List a table's snapshots, oldest first.
    Snapshots(client_cmds::SnapshotsArgs),
    /// Query and change tables with SQL: an interactive shell, or -c/-f batch mode.
    Sql(sql::SqlArgs),
    /// Expire old snapshots and delete the files no retained snapshot needs (for cron).
    Expire(maintenance::ExpireArgs),
    /// Delete files under a table's location that no commit made (failed or abandoned writes).
    RemoveOrphans(maintenance::RemoveOrphansArgs),
    /// Rewrite small data files into larger ones (rows and time travel unchanged).
    Compact(maintenance::CompactArgs),
    /// Create, list or drop principals (people and service accounts).
    #[command(subcommand)]
    Principal(access::PrincipalCmd),
    /// Create, list or revoke tokens.
    #[command(subcommand)]
    Token(access::TokenCmd),
    /// Grant a privilege: firn grant read ON namespace sales TO alice.
    Grant(access::GrantArgs),
    /// Revoke a privilege: firn revoke read ON namespace sales FROM alice.
    Revoke(access::GrantArgs),
    /// List grants (your own, a principal's, or with --all every principal's).
    Grants(access::GrantsArgs),
    /// Show who the server takes you for.
    Whoami(access::WhoamiArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the default catalog database and warehouse live.
    #[arg(long, env = "FIRN_DATA_DIR", default_value = "./firn-data")]
    data_dir: PathBuf,
    /// Address of the gRPC API.
    #[arg(long, env = "FIRN_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    grpc_listen: SocketAddr,
    /// Address of the Iceberg REST catalog API (for Spark, PyIceberg, DuckDB, Trino).
    #[arg(long, env = "FIRN_REST_LISTEN", default_value = "127.0.0.1:8181")]
    rest_listen: SocketAddr,
    /// Require a credential on every request (gRPC, REST, SQL) [default: on when a
    /// listener is not on loopback].
    #[arg(long, env = "FIRN_AUTH")]
    auth: bool,
    /// Serve a non-loopback address without authentication: anyone who can reach the
    /// ports may read, change and drop every table.
    #[arg(long, conflicts_with = "auth")]
    insecure_no_auth: bool,
    /// The first admin's token, for a server with authentication on and no principal yet
    /// (at least 32 characters) [default: a random one, written to DATA_DIR/admin-token].
    #[arg(long = "admin-token-file", env = "FIRN_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve TLS on both ports with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "FIRN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FIRN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Catalog database: sqlite://PATH or postgres://USER:PASS@HOST/DB [default: SQLite in the data dir].
    #[arg(long, env = "FIRN_CATALOG_URL")]
    catalog_url: Option<String>,
    /// Warehouse root: file:///DIR, s3://BUCKET/PREFIX [default: DATA_DIR/warehouse].
    #[arg(long, env = "FIRN_WAREHOUSE")]
    warehouse: Option<String>,
    /// Warehouse option KEY=VALUE (S3: endpoint, region, allow_http, ...); repeatable.
    #[arg(long = "warehouse-option", value_name = "KEY=VALUE")]
    warehouse_options: Vec<String>,
    /// Expire snapshots of every table this often (e.g. 1h), with each table's
    /// history.expire.* settings; one replica at a time does it [default: never].
    #[arg(long, env = "FIRN_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration)]
    maintenance_interval: Option<std::time::Duration>,
    /// Most open connections on each port (gRPC and REST); beyond it new connections wait
    /// and the connection idle longest is closed to make room [lowered to fit the
    /// open-files limit].
    #[arg(long, env = "FIRN_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// A REST request's head, or the gRPC (HTTP/2) preface, must arrive within this.
    #[arg(long, env = "FIRN_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "FIRN_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// A REST request's body must arrive within this of its head, else 408.
    #[arg(long, env = "FIRN_BODY_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    body_read_timeout: Duration,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
    let mut warehouse = WarehouseConfig::new(warehouse_url);
    for kv in &args.warehouse_options {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--warehouse-option {kv:?} is not KEY=VALUE"))?;
        warehouse.options.insert(k.to_string(), v.to_string());
    }
    let public = [args.grpc_listen, args.rest_listen]
        .iter()
        .any(|a| !a.ip().is_loopback());
    let auth_required = args.auth || (public && !args.insecure_no_auth);
    if public && !auth_required {
        tracing::warn!("--insecure-no-auth: serving a non-loopback address without authentication");
    }
    let catalog = Catalog::open(
        CatalogConfig {
            catalog_url: catalog_url.clone(),
            warehouse: warehouse.clone(),
        },
        Env::default(),
    )
    .await?
    .with_auth(firn_core::AuthConfig {
        required: auth_required,
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
    let maintenance = args
        .maintenance_interval
        .map(|every| catalog.spawn_scheduled_expiry(every));
    // One shutdown signal stops both transports.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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
    firn_server::serve_with(
        catalog.clone(),
        firn_server::ServeOptions {
            limits,
            tls: grpc_tls,
        },
        listener,
        wait(stopped),
    )
    .await?;
    rest.await??;
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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIRN_LOG")
                .unwrap_or_else(|_| "warn,firn=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Namespace(c) => client_cmds::namespace(c).await,
        Command::Table(c) => client_cmds::table(c).await,
        Command::Load(a) => client_cmds::load(a).await,
        Command::Snapshots(a) => client_cmds::snapshots(a).await,
        Command::Sql(a) => sql::run(a).await,
        Command::Expire(a) => maintenance::expire(a).await,
        Command::RemoveOrphans(a) => maintenance::remove_orphans(a).await,
        Command::Compact(a) => maintenance::compact(a).await,
        Command::Principal(c) => access::principal(c).await,
        Command::Token(c) => access::token(c).await,
        Command::Grant(a) => access::grant(a, true).await,
        Command::Revoke(a) => access::grant(a, false).await,
        Command::Grants(a) => access::grants(a).await,
        Command::Whoami(a) => access::whoami(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::error_line(&e));
            ExitCode::FAILURE
        }
    }
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
