//! The catalog's request and result types, independent of any transport.

use std::collections::HashMap;

use crate::ident::TableIdent;

/// A namespace and its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub properties: HashMap<String, String>,
    /// The warehouse its tables live in ([`DEFAULT_WAREHOUSE`]: the server's configured one).
    pub warehouse: String,
}

/// The name of the warehouse a server is started with (`firn serve --warehouse`).
pub const DEFAULT_WAREHOUSE: &str = "default";

/// A warehouse as listings show it: secrets in its URL and options are `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseInfo {
    pub name: String,
    pub url: String,
    pub options: std::collections::BTreeMap<String, String>,
    /// `server` (the default), `catalog` (recorded, every replica) or `config` (this
    /// server's config file).
    pub source: String,
}

/// What a namespace-properties update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesUpdate {
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Keys asked to be removed that were not there.
    pub missing: Vec<String>,
}

/// One column of a new table's schema. `type_json` is the Iceberg JSON type: a primitive
/// name (`long`, `decimal(10,2)`, ...) or a JSON object for nested types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub type_json: String,
    pub required: bool,
    pub doc: Option<String>,
}

/// A partition field of a new table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFieldSpec {
    pub source_column: String,
    /// `identity`, `year`, `month`, `day`, `hour`, `bucket[N]`, `truncate[W]`, `void`.
    pub transform: String,
    pub name: Option<String>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct CreateTable {
    pub fields: Vec<FieldSpec>,
    pub partition_by: Vec<PartitionFieldSpec>,
    pub location: Option<String>,
    pub properties: HashMap<String, String>,
    /// The table's uuid (a staged table keeps the one it was staged with); default: new.
    pub table_uuid: Option<uuid::Uuid>,
}

/// A table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub ident: TableIdent,
    pub table_uuid: String,
    pub location: String,
    pub metadata_location: String,
    pub version: i64,
    pub current_snapshot_id: Option<i64>,
    /// The Iceberg metadata JSON at `metadata_location`, when it was asked for.
    pub metadata_json: Option<String>,
    pub schema_json: String,
    pub partition_spec_json: String,
    pub properties: HashMap<String, String>,
    /// The warehouse it lives in.
    pub warehouse: String,
}

/// Statistics of one column of a data file (bounds in Iceberg single-value binary form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnStatsSpec {
    pub column_size: Option<u64>,
    pub value_count: Option<u64>,
    pub null_count: Option<u64>,
    pub nan_count: Option<u64>,
    pub lower_bound: Option<Vec<u8>>,
    pub upper_bound: Option<Vec<u8>>,
}

/// Statistics a writer sends with a data file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileStatsSpec {
    pub record_count: u64,
    pub columns: HashMap<i32, ColumnStatsSpec>,
    /// Partition field name -> Iceberg JSON single value. Empty for unpartitioned tables.
    pub partition: serde_json::Map<String, serde_json::Value>,
    pub split_offsets: Vec<i64>,
}

/// A data file a commit adds.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub path: String,
    pub file_size_bytes: u64,
    /// When absent, Firn reads the Parquet footer itself.
    pub stats: Option<FileStatsSpec>,
}

/// Which live files an overwrite removes.
#[derive(Debug, Clone, PartialEq)]
pub enum OverwriteScope {
    /// Every live file.
    All,
    /// Exactly these files; each must be live.
    Files(Vec<String>),
    /// Every live file in these partitions (JSON objects as in [`FileStatsSpec::partition`]).
    Partitions(Vec<serde_json::Map<String, serde_json::Value>>),
    /// Every live file in a partition that an added file belongs to.
    AddedPartitions,
}

/// The operation of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Append {
        add: Vec<NewFile>,
    },
    Overwrite {
        add: Vec<NewFile>,
        remove: OverwriteScope,
    },
    Delete {
        paths: Vec<String>,
    },
    /// Rewrites files (compaction): `remove` are replaced by `add`, holding the same rows.
    /// Commutes with appends and with any commit that leaves the removed files alone, so
    /// its base may be older than the current snapshot; it conflicts only when a removed
    /// file is no longer live, or when delete files were added since its base (the rewrite
    /// would bring deleted rows back).
    Replace {
        add: Vec<NewFile>,
        remove: Vec<String>,
    },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Append { .. } => "append",
            Operation::Overwrite { .. } => "overwrite",
            Operation::Delete { .. } => "delete",
            Operation::Replace { .. } => "replace",
        }
    }

    /// Whether the operation commutes with any concurrent commit, so the server may rebase it.
    pub fn commutes(&self) -> bool {
        matches!(self, Operation::Append { .. })
    }

    pub fn added(&self) -> &[NewFile] {
        match self {
            Operation::Append { add }
            | Operation::Overwrite { add, .. }
            | Operation::Replace { add, .. } => add,
            Operation::Delete { .. } => &[],
        }
    }
}

/// A commit request.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub ident: TableIdent,
    /// Client-chosen, unique per table; a recorded id returns the recorded outcome.
    pub commit_id: String,
    /// The snapshot the writer based its work on; `None` for an empty table.
    pub base_snapshot_id: Option<i64>,
    pub operation: Operation,
    /// Extra snapshot-summary properties.
    pub summary: HashMap<String, String>,
    /// Who asked (for the commit log).
    pub client: String,
}

/// One entry of a table's commit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub commit_id: String,
    /// The table's current snapshot after the commit (0: none).
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub operation: String,
    /// The authenticated principal; `None` when authentication was off.
    pub principal: Option<String>,
    pub client: String,
    pub committed_at_ms: i64,
}

/// Who made a change, as the commit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// The authenticated principal; `None` when authentication is off.
    pub principal: Option<String>,
    /// What the client said it is (`x-firn-client`, the peer address, `firn-scheduler/...`).
    pub client: String,
}

impl CommitRequest {
    /// A digest of what the request asks for (base, operation, files, summary; not who
    /// asked), recorded with its commit id: a later request with the same id and another
    /// digest is refused instead of being answered with the first one's outcome.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        put(self.operation.name());
        put(&format!("{:?}", self.base_snapshot_id));
        for f in self.operation.added() {
            put(&f.path);
            put(&f.file_size_bytes.to_string());
        }
        match &self.operation {
            Operation::Append { .. } => {}
            Operation::Overwrite { remove, .. } => put(&format!("{remove:?}")),
            Operation::Delete { paths } | Operation::Replace { remove: paths, .. } => {
                for p in paths {
                    put(p);
                }
            }
        }
        let mut summary: Vec<_> = self.summary.iter().collect();
        summary.sort();
        for (k, v) in summary {
            put(k);
            put(v);
        }
        format!("{:x}", h.finalize())
    }
}

/// The outcome of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub version: i64,
    pub parent_snapshot_id: Option<i64>,
    /// The commit id had been applied already; this is the recorded outcome.
    pub replayed: bool,
}

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub operation: String,
    pub summary: HashMap<String, String>,
    pub manifest_list: String,
    pub schema_id: i32,
    pub commit_id: String,
}

/// One page of snapshots, oldest first.
#[derive(Debug, Clone)]
pub struct SnapshotPage {
    pub snapshots: Vec<SnapshotInfo>,
    /// Pass back to get the next page; `None` at the end.
    pub next_page_token: Option<String>,
}
