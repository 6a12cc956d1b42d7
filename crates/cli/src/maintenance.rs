//! Maintenance commands for operators and cron: `firn expire`, `firn remove-orphans`,
//! `firn compact`.

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

/// The time (ms since the epoch) `d` ago.
fn ms_ago(d: Duration) -> i64 {
    chrono::Utc::now().timestamp_millis() - d.as_millis() as i64
}

/// Runs expiry; exits non-zero when a table failed or a file could not be deleted (the
/// next run finishes such deletions).
pub async fn expire(args: ExpireArgs) -> anyhow::Result<()> {
    let older_than_ms = args.older_than.map(ms_ago);
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

#[derive(clap::Args)]
pub struct RemoveOrphansArgs {
    /// NAMESPACE.TABLE
    table: String,
    /// Only files older than this (e.g. 3d, 12h); it must exceed the longest time a writer
    /// takes from writing a file to committing it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3d")]
    older_than: Duration,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also list the table's location to find garbage that no record names (files other
    /// engines wrote and never committed). Listing can only find garbage, never decide
    /// that a file is unused.
    #[arg(long)]
    sweep_listing: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Removes orphan files; exits non-zero when a file could not be deleted.
pub async fn remove_orphans(args: RemoveOrphansArgs) -> anyhow::Result<()> {
    let ident = table_ident(&args.table)?;
    let req = pb::RemoveOrphanFilesRequest {
        ident: Some(firn_client::proto_ident(&ident)),
        older_than_ms: Some(ms_ago(args.older_than)),
        dry_run: args.dry_run,
        sweep_listing: args.sweep_listing,
    };
    let r = connect(&args.conn).await?.remove_orphan_files(req).await?;
    if args.conn.json {
        print_json(&json!({
            "table": args.table,
            "skipped": r.skipped,
            "dry_run": args.dry_run,
            "orphans": r.orphan_paths,
            "deleted_files": r.deleted_files,
            "bytes_freed": r.bytes_freed,
            "listed_objects": r.listed_objects,
            "reserved_paths_checked": r.reserved_paths_checked,
            "failed_deletes": r.failed_deletes,
        }));
    } else if r.skipped {
        println!(
            "{}: skipped (another maintenance run holds the lease)",
            args.table
        );
    } else {
        for p in &r.orphan_paths {
            println!("{p}");
        }
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!(
            "{}: {} orphan(s) found, {verb} {} file(s), {} bytes",
            args.table,
            r.orphan_paths.len(),
            r.deleted_files,
            r.bytes_freed
        );
    }
    if r.failed_deletes > 0 {
        anyhow::bail!(
            "{} orphan(s) could not be deleted; run again",
            r.failed_deletes
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CompactArgs {
    /// NAMESPACE.TABLE
    table: String,
    /// Size to pack files up to, e.g. 128MB, 1GiB [default: the table property
    /// write.target-file-size-bytes, else 512MiB].
    #[arg(long, value_parser = parse_size)]
    target_file_size: Option<u64>,
    /// Only files that may hold rows matching this SQL predicate, e.g. "ts >= '2026-11-01'".
    #[arg(long = "where", value_name = "PRED")]
    predicate: Option<String>,
    /// Show what would be rewritten; write and commit nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `128MB`, `1GiB`, `4096`: a size in bytes (decimal and binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 128MB or 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "{other:?}: unknown unit (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: give a positive size")),
        Some(v) => Ok(v),
    }
}

/// Runs compaction and prints what it rewrote.
pub async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let ident = table_ident(&args.table)?;
    let client = connect(&args.conn).await?;
    let filter = match &args.predicate {
        None => None,
        Some(p) => Some(
            firn_query::FirnSession::new(client.clone())
                .file_filter(&args.table, p)
                .await
                .map_err(|e| anyhow::anyhow!("--where {p:?}: {e}"))?,
        ),
    };
    let r = client
        .compact(pb::CompactRequest {
            ident: Some(firn_client::proto_ident(&ident)),
            target_file_size_bytes: args.target_file_size,
            filter,
            dry_run: args.dry_run,
        })
        .await?;
    if args.conn.json {
        print_json(&json!({
            "table": args.table,
            "dry_run": args.dry_run,
            "base_snapshot_id": r.base_snapshot_id,
            "snapshot_id": r.snapshot_id,
            "files_rewritten": r.files_rewritten,
            "files_written": r.files_written,
            "bytes_rewritten": r.bytes_rewritten,
            "bytes_written": r.bytes_written,
            "records": r.records,
            "skipped_with_deletes": r.skipped_with_deletes,
        }));
    } else if r.files_rewritten == 0 {
        println!("{}: nothing to compact", args.table);
    } else {
        let verb = if args.dry_run {
            "would rewrite"
        } else {
            "rewrote"
        };
        println!(
            "{}: {verb} {} files ({} bytes, {} rows) into {}{}",
            args.table,
            r.files_rewritten,
            r.bytes_rewritten,
            r.records,
            r.files_written,
            r.snapshot_id
                .map(|s| format!(" (snapshot {s})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(super::parse_size("128MB"), Ok(128_000_000));
        assert_eq!(super::parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("0").is_err());
        assert!(super::parse_size("12 parsecs").is_err());
    }
}
