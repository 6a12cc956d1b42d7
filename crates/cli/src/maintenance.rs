//! Maintenance commands for operators and cron: `firn expire`.

use std::time::Duration;

use firn_client::proto as pb;
use serde_json::json;

use crate::Conn;
use crate::client_cmds::{connect, table_ident};
use crate::output::{print_json, print_table};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["table", "all"])))]
pub struct ExpireArgs {
    /// NAMESPACE.TABLE
    table: Option<String>,
    /// Every table of the catalog (each one under its own lease).
    #[arg(long)]
    all: bool,
    /// Expire snapshots older than this (e.g. 7d, 12h, 30m) [default: the table property
    /// history.expire.max-snapshot-age-ms, else 5 days].
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Snapshots each branch keeps at least [default: the table property
    /// history.expire.min-snapshots-to-keep, else 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    retain_last: Option<u32>,
    /// Show what would be removed; change and delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Runs expiry; exits non-zero when a table failed or a file could not be deleted (the
/// next run finishes such deletions).
pub async fn expire(args: ExpireArgs) -> anyhow::Result<()> {
    let older_than_ms = args
        .older_than
        .map(|d| chrono::Utc::now().timestamp_millis() - d.as_millis() as i64);
    let req = pb::ExpireSnapshotsRequest {
        ident: args
            .table
            .as_deref()
            .map(table_ident)
            .transpose()?
            .map(|t| firn_client::proto_ident(&t)),
        all_tables: args.all,
        older_than_ms,
        retain_last: args.retain_last,
        snapshot_ids: Vec::new(),
        dry_run: args.dry_run,
    };
    let resp = connect(&args.conn).await?.expire_snapshots(req).await?;
    let name = |t: &pb::TableExpiry| {
        t.ident
            .as_ref()
            .map(|i| format!("{}.{}", i.namespace, i.name))
            .unwrap_or_default()
    };
    if args.conn.json {
        print_json(&json!(
            resp.tables
                .iter()
                .map(|t| json!({
                    "table": name(t),
                    "skipped": t.skipped,
                    "error": (!t.error.is_empty()).then_some(&t.error),
                    "dry_run": t.dry_run,
                    "expired_snapshots": t.expired_snapshot_ids.len(),
                    "expired_snapshot_ids": t.expired_snapshot_ids,
                    "removed_refs": t.removed_refs,
                    "retained_snapshots": t.retained_snapshots,
                    "data_files_deleted": t.data_files_deleted,
                    "delete_files_deleted": t.delete_files_deleted,
                    "manifests_deleted": t.manifests_deleted,
                    "manifest_lists_deleted": t.manifest_lists_deleted,
                    "metadata_files_deleted": t.metadata_files_deleted,
                    "bytes_freed": t.bytes_freed,
                    "resumed_deletes": t.resumed_deletes,
                    "failed_deletes": t.failed_deletes,
                }))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<Vec<String>> = resp
            .tables
            .iter()
            .map(|t| {
                let status = if !t.error.is_empty() {
                    format!("failed: {}", t.error)
                } else if t.skipped {
                    "skipped (another run holds the lease)".into()
                } else if t.failed_deletes > 0 {
                    format!("{} deletes failed (retried next run)", t.failed_deletes)
                } else if t.dry_run {
                    "dry run".into()
                } else {
                    "ok".into()
                };
                let files = t.data_files_deleted + t.delete_files_deleted;
                let meta =
                    t.manifests_deleted + t.manifest_lists_deleted + t.metadata_files_deleted;
                vec![
                    name(t),
                    t.expired_snapshot_ids.len().to_string(),
                    t.retained_snapshots.to_string(),
                    files.to_string(),
                    meta.to_string(),
                    t.bytes_freed.to_string(),
                    status,
                ]
            })
            .collect();
        let freed = if args.dry_run {
            "bytes_to_free"
        } else {
            "bytes_freed"
        };
        print_table(
            &[
                "table",
                "expired",
                "retained",
                "data_files",
                "metadata_files",
                freed,
                "status",
            ],
            &rows,
        );
    }
    let failed = resp.tables.iter().filter(|t| !t.error.is_empty()).count();
    let undeleted: u64 = resp.tables.iter().map(|t| t.failed_deletes).sum();
    if failed > 0 || undeleted > 0 {
        anyhow::bail!(
            "expiry incomplete: {failed} table(s) failed, {undeleted} file(s) not deleted yet"
        );
    }
    Ok(())
}
