//! `firn`: the Firn server and a command-line client of it.

mod access;
mod client_cmds;
mod config;
mod load;
mod maintenance;
mod output;
mod serve;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(Box<serve::ServeArgs>),
    /// Create, list or drop warehouses (storage roots a namespace's tables live in).
    #[command(subcommand)]
    Warehouse(client_cmds::WarehouseCmd),
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
    /// List grants (your own, or a principal's).
    Grants(access::GrantsArgs),
    /// Show who the server takes you for.
    Whoami(access::WhoamiArgs),
}

/// Logs go to stderr: `FIRN_LOG` filters (default: warnings, and Firn's info lines, which
/// include every commit and failed request), text with colours only on a terminal, or one
/// JSON object per line.
fn init_logging(format: Option<serve::LogFormat>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIRN_LOG").unwrap_or_else(|_| {
        "warn,firn=info,firn_core=info,firn_rest=info,firn_server=info,firn_admin=info".into()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Some(serve::LogFormat::Json) => builder.json().flatten_event(true).init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    // `serve` settings come from flags, variables and its config file, before logging
    // starts (the file may choose the log format).
    let serve_args = match matches.subcommand() {
        Some(("serve", m)) => match serve::settings(m) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: {}", output::error_line(&e));
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    init_logging(serve_args.as_ref().map(|a| a.log_format));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(_) => serve::serve(serve_args.expect("parsed above")).await,
        Command::Namespace(c) => client_cmds::namespace(c).await,
        Command::Warehouse(c) => client_cmds::warehouse(c).await,
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

/// Storage options given as repeated `KEY=VALUE` arguments of `flag`, by key (a later one
/// wins); one not of that form is refused, naming the flag.
pub(crate) fn key_values(
    flag: &str,
    pairs: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{flag} {kv:?} is not KEY=VALUE"))
        })
        .collect()
}
