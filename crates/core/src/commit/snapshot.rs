//! Building one snapshot: which manifests are kept, rewritten or merged (in tiers of
//! [`MERGE_FAN_IN`](super::MERGE_FAN_IN), so the manifest list stays bounded), the new
//! manifest list, and the summary with its totals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{
    DataFile, ManifestContentType, ManifestEntry, ManifestFile, ManifestListWriter, ManifestStatus,
    ManifestWriter, ManifestWriterBuilder, UNASSIGNED_SEQUENCE_NUMBER,
};

use super::plan::*;
use super::state::*;
use super::*;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::model::CommitOutcome;
use crate::storage::objects::CaptureStorage;
use crate::table::{FileContext, Shared};

pub(crate) fn resolved_seq(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.sequence_number.unwrap_or(m.sequence_number)
}

pub(super) fn resolved_file_seq(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.file_sequence_number.unwrap_or_else(|| resolved_seq(e, m))
}

pub(super) fn resolved_snapshot(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.snapshot_id.unwrap_or(m.added_snapshot_id)
}

pub(super) fn live_files(m: &ManifestFile) -> u64 {
    m.added_files_count.unwrap_or(0) as u64 + m.existing_files_count.unwrap_or(0) as u64
}

pub(super) fn assign_sequence(m: &mut ManifestFile, seq: i64) {
    if m.sequence_number == UNASSIGNED_SEQUENCE_NUMBER {
        m.sequence_number = seq;
    }
    if m.min_sequence_number == UNASSIGNED_SEQUENCE_NUMBER {
        m.min_sequence_number = seq;
    }
}

/// A v2 data-manifest writer into `capture`, at a fresh path under the table's metadata
/// directory (`<uuid>-<tag>.avro`); returns the path too.
pub(crate) fn manifest_writer(
    capture: &Arc<CaptureStorage>,
    ctx: &FileContext,
    env: &Env,
    snapshot_id: i64,
    tag: &str,
) -> (String, ManifestWriter) {
    let path = format!(
        "{}/metadata/{}-{tag}.avro",
        ctx.location.trim_end_matches('/'),
        env.ids.uuid()
    );
    let w = ManifestWriterBuilder::new(
        capture.output(&path),
        Some(snapshot_id),
        ctx.schema.clone(),
        (*ctx.spec).clone(),
    )
    .build_v2_data();
    (path, w)
}

/// Plans one commit on top of `state` and advances `state` to the new snapshot.
pub(super) async fn plan_step(
    shared: &Shared,
    state: &mut TableState,
    p: &Prepared,
    table_id: i64,
    known: &HashSet<(i64, String)>,
) -> Result<StepPlan> {
    let req = &p.req;
    let current = state.row.current_snapshot_id;
    let replace = matches!(req.operation, crate::model::Operation::Replace { .. });
    let conflict = || Error::Conflict {
        table: req.ident.to_string(),
        expected: req.base_snapshot_id,
        current,
    };
    if replace && req.base_snapshot_id != current {
        // A rewrite may land on a newer snapshot unless deletes arrived since its base.
        let base_seq = match req.base_snapshot_id {
            Some(b) => match shared.db.snapshot(table_id, b).await? {
                Some(s) => s.sequence_number,
                None => return Err(conflict()),
            },
            None => return Err(conflict()),
        };
        if state
            .manifests
            .iter()
            .any(|m| m.content == ManifestContentType::Deletes && m.sequence_number > base_seq)
        {
            return Err(conflict());
        }
    } else if !req.operation.commutes() && req.base_snapshot_id != current {
        return Err(conflict());
    }
    if let Some(base) = req.base_snapshot_id
        && current.is_none()
    {
        return Err(Error::invalid(
            "base_snapshot_id",
            format!(
                "snapshot {base} is not in table {}, which is empty",
                req.ident
            ),
        ));
    }
    for f in &p.added {
        if state.inflight_paths.contains(f.file_path())
            && !known.contains(&(table_id, f.file_path().to_string()))
        {
            // Another commit adding this file is in flight: its fate decides.
            return Err(Error::Conflict {
                table: req.ident.to_string(),
                expected: req.base_snapshot_id,
                current: state.row.current_snapshot_id,
            });
        }
        if known.contains(&(table_id, f.file_path().to_string())) {
            return Err(Error::invalid(
                "add.path",
                format!("{} is already part of table {}", f.file_path(), req.ident),
            ));
        }
    }

    let seq = state.row.last_sequence_number + 1;
    let snapshot_id = p.snapshot_id;
    let capture = CaptureStorage::new();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut removed = Totals::default();
    let mut removed_files = Vec::new();

    // Removals: rewrite the manifests that hold removed files.
    let mut matched: HashSet<String> = HashSet::new();
    for m in state.manifests.iter().filter(|m| live_files(m) > 0) {
        let selects = |df: &DataFile| match &p.remove {
            RemoveSelector::Nothing => false,
            RemoveSelector::All => true,
            RemoveSelector::Paths(paths) => paths.contains(df.file_path()),
            RemoveSelector::Partitions(parts) => parts.contains(df.partition()),
        };
        if matches!(p.remove, RemoveSelector::Nothing) || m.content != ManifestContentType::Data {
            manifests.push(m.clone());
            continue;
        }
        let entries = shared
            .manifests
            .get(&state.warehouse, &state.meta, m)
            .await?;
        let alive = || entries.iter().filter(|e| e.is_alive());
        if !alive().any(|e| selects(&e.data_file)) {
            manifests.push(m.clone());
            continue;
        }
        let (_, mut w) = manifest_writer(&capture, &state.ctx, &shared.env, snapshot_id, "m1");
        for e in alive() {
            let df = e.data_file.clone();
            if selects(&e.data_file) {
                matched.insert(df.file_path().to_string());
                removed_files.push((df.file_path().to_string(), df.file_size_in_bytes() as i64));
                removed.files += 1;
                removed.records += df.record_count();
                removed.size += df.file_size_in_bytes();
                w.add_delete_file(df, resolved_seq(e, m), Some(resolved_file_seq(e, m)))?;
            } else {
                w.add_existing_file(
                    df,
                    resolved_snapshot(e, m),
                    resolved_seq(e, m),
                    Some(resolved_file_seq(e, m)),
                )?;
            }
        }
        let mut mf = w.write_manifest_file().await?;
        assign_sequence(&mut mf, seq);
        manifests.push(mf);
    }
    if let RemoveSelector::Paths(paths) = &p.remove
        && let Some(missing) = paths.iter().find(|x| !matched.contains(*x))
    {
        if replace && req.base_snapshot_id != current {
            // Live in its base, gone now: a concurrent commit removed or rewrote it.
            return Err(conflict());
        }
        return Err(Error::invalid(
            "remove",
            format!("{missing} is not a live file of table {}", req.ident),
        ));
    }

    let mut objects = Vec::new();
    if let Some((mf, obj)) = &p.added_manifest {
        let mut mf = mf.clone();
        assign_sequence(&mut mf, seq);
        manifests.insert(0, mf);
        objects.push(obj.clone());
    }
    merge_tiers(shared, state, &capture, &mut manifests, snapshot_id, seq).await?;

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-{}-{}.avro",
        state.row.location.trim_end_matches('/'),
        p.attempts,
        shared.env.ids.uuid()
    );
    let mut lw = ManifestListWriter::v2(capture.writer_for(&list_path), snapshot_id, current, seq);
    lw.add_manifests(manifests.iter().cloned())?;
    lw.close().await?;
    objects.extend(capture.take());

    let added = Totals {
        files: p.added.len() as u64,
        records: p.added.iter().map(|f| f.record_count()).sum(),
        size: p.added.iter().map(|f| f.file_size_in_bytes()).sum(),
    };
    let totals = Totals {
        files: state.totals.files + added.files - removed.files,
        records: state.totals.records + added.records - removed.records,
        size: state.totals.size + added.size - removed.size,
    };
    let operation = match (&req.operation, added.files, removed.files) {
        (crate::model::Operation::Append { .. }, _, _) => "append",
        (crate::model::Operation::Delete { .. }, _, _) => "delete",
        (crate::model::Operation::Replace { .. }, _, _) => "replace",
        (_, 0, n) if n > 0 => "delete",
        (_, n, 0) if n > 0 => "append",
        _ => "overwrite",
    };
    let mut summary: HashMap<String, String> = req.summary.clone();
    summary.insert("operation".into(), operation.into());
    let mut put = |k: &str, v: u64| {
        summary.insert(k.to_string(), v.to_string());
    };
    if added.files > 0 {
        put("added-data-files", added.files);
        put("added-records", added.records);
        put("added-files-size", added.size);
    }
    if removed.files > 0 {
        put("deleted-data-files", removed.files);
        put("deleted-records", removed.records);
        put("removed-files-size", removed.size);
    }
    put("total-data-files", totals.files);
    put("total-records", totals.records);
    put("total-files-size", totals.size);
    put("total-delete-files", 0);
    put("total-position-deletes", 0);
    put("total-equality-deletes", 0);
    summary.insert("firn.commit-id".into(), req.commit_id.clone());

    let timestamp_ms = shared.env.clock.now_ms().max(state.row.last_updated_ms);
    for f in &p.added {
        state.inflight_paths.insert(f.file_path().to_string());
    }
    state.row.version += 1;
    state.row.current_snapshot_id = Some(snapshot_id);
    state.row.last_sequence_number = seq;
    state.row.last_updated_ms = timestamp_ms;
    state.manifests = Arc::new(manifests);
    state.totals = totals;

    Ok(StepPlan {
        outcome: CommitOutcome {
            snapshot_id,
            sequence_number: seq,
            version: state.row.version,
            parent_snapshot_id: current,
            replayed: false,
        },
        timestamp_ms,
        summary,
        manifest_list: list_path,
        schema_id: state.schema_id,
        objects,
        removed: removed_files,
    })
}

/// Keeps the manifest list short: whenever [`MERGE_FAN_IN`] data manifests fall in the same
/// size tier (tier = ⌊log_fan-in(live files)⌋), they are merged into one of the next tier.
/// Each file is rewritten O(log n) times over its life, and a list holds at most
/// about fan-in × tiers manifests, so commit cost stays flat as history grows.
pub(super) async fn merge_tiers(
    shared: &Shared,
    state: &TableState,
    capture: &Arc<CaptureStorage>,
    manifests: &mut Vec<ManifestFile>,
    snapshot_id: i64,
    seq: i64,
) -> Result<()> {
    let tier = |m: &ManifestFile| live_files(m).max(1).ilog(MERGE_FAN_IN as u64);
    loop {
        let mergeable = |m: &ManifestFile| {
            m.content == ManifestContentType::Data
                && m.added_snapshot_id != snapshot_id
                && live_files(m) > 0
        };
        let mut by_tier: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, m) in manifests.iter().enumerate().filter(|(_, m)| mergeable(m)) {
            by_tier.entry(tier(m)).or_default().push(i);
        }
        let Some((_, idx)) = by_tier.into_iter().find(|(_, v)| v.len() >= MERGE_FAN_IN) else {
            return Ok(());
        };
        let idx: Vec<usize> = idx.into_iter().take(MERGE_FAN_IN).collect();
        let (path, mut w) =
            manifest_writer(capture, &state.ctx, &shared.env, snapshot_id, "merged");
        let mut merged_entries = Vec::new();
        for &i in &idx {
            let m = &manifests[i];
            let entries = shared
                .manifests
                .get(&state.warehouse, &state.meta, m)
                .await?;
            for e in entries.iter().filter(|e| e.is_alive()) {
                let (sid, s, fs) = (
                    resolved_snapshot(e, m),
                    resolved_seq(e, m),
                    resolved_file_seq(e, m),
                );
                w.add_existing_file(e.data_file.clone(), sid, s, Some(fs))?;
                merged_entries.push(ManifestEntry {
                    status: ManifestStatus::Existing,
                    snapshot_id: Some(sid),
                    sequence_number: Some(s),
                    file_sequence_number: Some(fs),
                    data_file: e.data_file.clone(),
                });
            }
        }
        let mut mf = w.write_manifest_file().await?;
        assign_sequence(&mut mf, seq);
        shared.manifests.insert(&path, merged_entries);
        let drop: HashSet<usize> = idx.into_iter().collect();
        let mut kept: Vec<ManifestFile> = manifests
            .drain(..)
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, m)| m)
            .collect();
        kept.push(mf);
        *manifests = kept;
    }
}
