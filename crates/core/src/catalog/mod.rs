//! The catalog service: the one API every transport (gRPC, Iceberg REST, CLI) calls.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use iceberg::spec::{
    FormatVersion, NestedField, Schema, SortOrder, TableMetadata, TableMetadataBuilder, Transform,
    Type, UnboundPartitionSpec,
};
use tracing::{info, instrument};

use crate::auth::{AuthConfig, Caller, Privilege, Resource};
use crate::commit::metacommit::TableChange;
use crate::commit::prepare::{self, Checked};
use crate::commit::{self, Committer};
use crate::db::{Db, Doomed, KIND_MANIFEST, KIND_MANIFEST_LIST, TableRow, record_doomed};
use crate::env::Env;
use crate::error::{Error, ObjectKind, Result};
use crate::ident::{TableIdent, validate_name};
use crate::maintenance::expire::{ExpireOptions, ExpireReport};
use crate::model::*;
use crate::scan::{self, ResolvedSnapshot, ScanFilter, ScanPlan, SnapshotSelector};
use crate::storage::manifests::ManifestCache;
use crate::storage::{TableScope, Warehouse, WarehouseConfig, Warehouses};
use crate::table::metadata;
use crate::table::refs::{self, ChangeOutcome, RefInfo, SnapshotChange};
use crate::table::{Shared, parse_base};
use crate::validate::parse_type;

mod access;
mod identity;
mod warehouses;

pub use identity::{BOOTSTRAP_ADMIN, OAUTH_TOKEN_TTL};

use access::{actor, namespace_of, see_namespace, table_of};

/// How long [`Catalog::ready`] waits for the database and the store.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most snapshots one page lists.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Where the catalog keeps its state.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// `sqlite://PATH` or `postgres://...`.
    pub catalog_url: String,
    pub warehouse: WarehouseConfig,
}

/// The Firn catalog. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct Catalog {
    shared: Arc<Shared>,
    committer: Committer,
    auth: Arc<AuthConfig>,
}

impl Catalog {
    /// Opens the database (applying migrations) and the warehouse, and recovers metadata
    /// objects a crash left only in the database.
    pub async fn open(config: CatalogConfig, env: Env) -> Result<Self> {
        let db = Db::connect(&config.catalog_url).await?;
        let warehouse = Arc::new(Warehouse::open(config.warehouse)?);
        Self::open_with(db, warehouse, env).await
    }

    /// Opens a catalog on an existing database pool and warehouse (e.g. a fault-injecting one).
    pub async fn open_with(db: Db, warehouse: Arc<Warehouse>, env: Env) -> Result<Self> {
        Self::open_in(db, Warehouses::new(warehouse), env).await
    }

    /// Opens a catalog over `warehouses` (the server's own and those its config file
    /// declares), adding the warehouses the catalog records. `FailedPrecondition` when a
    /// declared name is also recorded.
    pub async fn open_in(db: Db, warehouses: Warehouses, env: Env) -> Result<Self> {
        crate::table::load_recorded(&db, &warehouses, true).await?;
        let recovered = commit::recover_pending(&db, &warehouses).await?;
        if recovered > 0 {
            info!(
                recovered,
                "rewrote commit metadata kept in the catalog by an earlier crash"
            );
        }
        let (to_sync, to_sync_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            db,
            warehouses,
            env,
            manifests: ManifestCache::default(),
            history: Default::default(),
            texts: Default::default(),
            synced: Mutex::new(Vec::new()),
            to_sync,
        });
        let committer = Committer::start(shared.clone(), to_sync_rx);
        Ok(Self {
            shared,
            committer,
            auth: Arc::new(AuthConfig::default()),
        })
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts scheduled snapshot expiry (see [`crate::maintenance::schedule`]); stops when the returned
    /// task is aborted.
    pub fn spawn_scheduled_expiry(
        &self,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let catalog = self.clone();
        let run = move |client: String| {
            let catalog = catalog.clone();
            async move {
                catalog
                    .expire_all(&Caller::unrestricted(), &ExpireOptions::default(), &client)
                    .await
            }
        };
        tokio::spawn(crate::maintenance::schedule::expiry_loop(
            self.shared.clone(),
            every,
            run,
        ))
    }

    /// Writes every committed object still staged (written behind its commit) to the store
    /// and drops their copies from the catalog. `firn serve` calls it on a graceful
    /// shutdown; after a crash, start-up recovery does the same from the catalog.
    pub async fn flush(&self) -> Result<()> {
        self.shared.publish_all().await?;
        self.shared.forget_written().await
    }

    /// Bytes of committed metadata written behind (not yet in the object store).
    pub fn write_behind_bytes(&self) -> u64 {
        self.shared.warehouses.staged_size()
    }

    /// Whether the catalog database and the warehouse answer within [`READY_TIMEOUT`]: one
    /// query and one HEAD (a missing object is an answer). `Unavailable` says which does
    /// not. For `/readyz` and the gRPC health check.
    pub async fn ready(&self) -> Result<()> {
        let check = async {
            self.shared.db.ping().await?;
            // The server's own store: one named warehouse out of reach fails only its
            // tables' requests, not every request this replica would get.
            self.shared.warehouses.default_warehouse().probe().await
        };
        tokio::time::timeout(READY_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    what: "catalog database or warehouse",
                    source: format!("no answer within {READY_TIMEOUT:?}").into(),
                })
            })
    }

    /// The server's own warehouse (`default`).
    pub fn warehouse(&self) -> &Arc<Warehouse> {
        self.shared.warehouses.default_warehouse()
    }

    fn now_ms(&self) -> i64 {
        self.shared.env.clock.now_ms()
    }

    // ---- namespaces ------------------------------------------------------------------

    /// Creates a namespace in the server's own warehouse.
    pub async fn create_namespace(
        &self,
        caller: &Caller,
        name: &str,
        properties: HashMap<String, String>,
    ) -> Result<NamespaceInfo> {
        self.create_namespace_in(caller, name, DEFAULT_WAREHOUSE, properties)
            .await
    }

    /// Creates a namespace whose tables live in `warehouse` (for good: a namespace never
    /// moves). `NotFound` for an unknown warehouse. Namespace names are unique across all
    /// warehouses, so a table's name alone finds it.
    pub async fn create_namespace_in(
        &self,
        caller: &Caller,
        name: &str,
        warehouse: &str,
        properties: HashMap<String, String>,
    ) -> Result<NamespaceInfo> {
        validate_name("namespace", name)?;
        caller.require(Privilege::Manage, &Resource::Catalog)?;
        self.shared.warehouse_named(warehouse).await?;
        let recorded = self.shared.warehouses.source(warehouse)
            == Some(crate::storage::registry::Source::Catalog);
        let ns = NamespaceInfo {
            name: name.to_string(),
            properties,
            warehouse: warehouse.to_string(),
        };
        self.shared
            .db
            .create_namespace(&ns, recorded, self.now_ms())
            .await?;
        Ok(ns)
    }

    /// The namespaces the caller sees; with `warehouse`, only those bound to it (`NotFound`
    /// for an unknown warehouse).
    pub async fn list_namespaces(
        &self,
        caller: &Caller,
        warehouse: Option<&str>,
    ) -> Result<Vec<NamespaceInfo>> {
        if let Some(w) = warehouse {
            self.shared.warehouse_named(w).await?;
        }
        let mut all = self.shared.db.list_namespaces().await?;
        all.retain(|ns| {
            caller.sees_namespace(&ns.name) && warehouse.is_none_or(|w| ns.warehouse == w)
        });
        Ok(all)
    }

    pub async fn get_namespace(&self, caller: &Caller, name: &str) -> Result<NamespaceInfo> {
        validate_name("namespace", name)?;
        see_namespace(caller, name)?;
        self.shared.db.get_namespace(name).await
    }

    /// Removes and sets namespace properties in one transaction.
    pub async fn update_namespace_properties(
        &self,
        caller: &Caller,
        name: &str,
        removals: &[String],
        updates: HashMap<String, String>,
    ) -> Result<PropertiesUpdate> {
        validate_name("namespace", name)?;
        caller.require(Privilege::Manage, &Resource::Namespace(name.to_string()))?;
        self.shared
            .db
            .update_namespace_properties(name, removals, updates)
            .await
    }

    /// Drops an empty namespace; `FailedPrecondition` while it holds tables.
    pub async fn drop_namespace(&self, caller: &Caller, name: &str) -> Result<()> {
        validate_name("namespace", name)?;
        caller.require(Privilege::Manage, &Resource::Namespace(name.to_string()))?;
        self.shared.db.drop_namespace(name).await
    }

    // ---- tables ----------------------------------------------------------------------

    /// Validates `spec` and builds the new table's first metadata (and its uuid).
    fn new_table_metadata(
        &self,
        warehouse: &Warehouse,
        ident: &TableIdent,
        spec: &CreateTable,
    ) -> Result<(TableMetadata, uuid::Uuid)> {
        let schema = build_schema(&spec.fields)?;
        let partition = build_partition_spec(&schema, &spec.partition_by)?;
        let table_uuid = spec
            .table_uuid
            .unwrap_or_else(|| self.shared.env.ids.uuid());
        // Firn writes metadata below a table's location: keep it inside the namespace's
        // warehouse.
        let location = match &spec.location {
            Some(l) => warehouse.location("location", l)?,
            None => warehouse.location(
                "location",
                &format!(
                    "{}{}/{}-{}",
                    warehouse.root(),
                    ident.namespace,
                    // The directory keeps to a file name's length (255 bytes) for any name.
                    &ident.name[..ident.name.len().min(200)],
                    table_uuid.simple()
                ),
            )?,
        }
        .uri()
        .to_string();
        // `format-version` is a create-time setting, not a property to keep (as in Iceberg).
        let mut properties = spec.properties.clone();
        match properties
            .remove("format-version")
            .as_deref()
            .map(str::trim)
        {
            None | Some("2") => {}
            Some(v) => {
                return Err(Error::invalid(
                    "properties",
                    format!("format-version {v:?}: Firn creates Iceberg format version 2 tables"),
                ));
            }
        }
        let meta = TableMetadataBuilder::new(
            schema,
            partition,
            SortOrder::unsorted_order(),
            location.clone(),
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.assign_uuid(table_uuid).build())
        .map_err(|e| Error::invalid("table", e.to_string()))?
        .metadata;
        Ok((meta, table_uuid))
    }

    /// The metadata of a new table as `spec` describes it, written nowhere (the REST
    /// protocol's `stage-create`: the client writes data first, then commits the table into
    /// existence). Fails as creating it would: unknown namespace, existing table, bad spec.
    pub async fn stage_table(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        spec: CreateTable,
    ) -> Result<String> {
        ident.validate()?;
        caller.require(Privilege::Manage, &namespace_of(ident))?;
        let warehouse = self.namespace_warehouse(&ident.namespace).await?;
        if self.shared.db.table(ident).await.is_ok() {
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Table,
                name: ident.to_string(),
            });
        }
        let (meta, _) = self.new_table_metadata(&warehouse, ident, &spec)?;
        let dir = warehouse.location("location", meta.location())?;
        self.check_location_free(&warehouse, &dir).await?;
        serde_json::to_string(&meta).map_err(|e| Error::internal_from("serialising metadata", e))
    }

    /// Refuses a new table's location that overlaps another table or a namespace directory
    /// (checked again, for good, in the transaction that inserts the table).
    async fn check_location_free(
        &self,
        warehouse: &Warehouse,
        dir: &crate::storage::Location,
    ) -> Result<()> {
        let mut conn = self.shared.db.pool.acquire().await?;
        crate::table::locations::check(&mut conn, warehouse, "location", dir).await
    }

    /// The warehouse a namespace's tables live in; `NotFound` for an unknown namespace.
    async fn namespace_warehouse(&self, namespace: &str) -> Result<Arc<Warehouse>> {
        let ns = self.shared.db.get_namespace(namespace).await?;
        self.shared.warehouse_named(&ns.warehouse).await
    }

    /// Creates an empty table (Iceberg v2) and writes its first metadata file.
    #[instrument(skip(self, spec), fields(table = %ident))]
    pub async fn create_table(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        spec: CreateTable,
    ) -> Result<TableInfo> {
        ident.validate()?;
        caller.require(Privilege::Manage, &namespace_of(ident))?;
        let warehouse = self.namespace_warehouse(&ident.namespace).await?;
        let (meta, table_uuid) = self.new_table_metadata(&warehouse, ident, &spec)?;
        let location = meta.location().to_string();
        let env = &self.shared.env;
        let base = serde_json::to_string(&meta)
            .map_err(|e| Error::internal_from("serialising metadata", e))?;
        let dir = warehouse.location("location", &location)?;
        if self.shared.db.table(ident).await.is_ok() {
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Table,
                name: ident.to_string(),
            });
        }
        // Refused before anything is written, then claimed for good with the row below.
        self.check_location_free(&warehouse, &dir).await?;
        let metadata_path = metadata::metadata_path(&dir, 0, env)?;
        let metadata_location = metadata_path.uri().to_string();
        warehouse
            .put_durable(&metadata_path, base.clone().into())
            .await?;
        let now = self.now_ms();
        let row = TableRow {
            table_id: 0,
            ident: ident.clone(),
            table_uuid: table_uuid.to_string(),
            location,
            version: 0,
            base_metadata: base,
            current_snapshot_id: None,
            last_sequence_number: 0,
            last_updated_ms: meta.last_updated_ms(),
            metadata_location: metadata_location.clone(),
            metadata_version: 0,
            history_rewritten_version: 0,
        };
        let mut tx = self.shared.db.pool.begin().await?;
        let inserted = async {
            crate::table::locations::claim(&mut tx, &warehouse, "location", &dir).await?;
            let id = crate::table::pointer::insert(&mut tx, &row, now)
                .await?
                .table_id();
            crate::db::insert_metadata_file(&mut tx, id, &metadata_location, 0, now).await?;
            Ok::<_, Error>(id)
        }
        .await;
        if let Err(e) = inserted {
            // Refused before COMMIT: nothing references the new metadata file, so it goes
            // and the create leaves nothing behind.
            drop(tx);
            let scope = TableScope::new(dir, []);
            if let Some(owned) = scope.own(&metadata_path) {
                let _ = warehouse.delete(&owned).await;
            }
            return Err(e);
        }
        // A failed COMMIT may still have created the table: its metadata file stays.
        crate::table::pointer::commit(tx, &format!("creating {ident}")).await?;
        info!(location = %row.location, "created table");
        self.table_info(row, false).await
    }

    /// The final answer recorded for an idempotency key, if any (see
    /// [`crate::idempotency`]).
    pub async fn recorded_answer(
        &self,
        key: &str,
    ) -> Result<Option<crate::idempotency::RecordedAnswer>> {
        crate::idempotency::lookup(&self.shared.db, key, self.now_ms()).await
    }

    /// Records the final answer to a request that carried an idempotency key.
    pub async fn record_answer(
        &self,
        key: &str,
        answer: &crate::idempotency::RecordedAnswer,
    ) -> Result<()> {
        crate::idempotency::record(&self.shared.db, key, answer, self.now_ms()).await
    }

    /// The text of a metadata file of `ident` that [`Catalog::load_table`] named (immutable,
    /// so it may be cached by location), whole or, with `refs_only`, with only the snapshots
    /// its branches and tags name (`snapshots=refs`); needs `read` on the table. `Corrupt`
    /// when it is missing or not JSON.
    pub async fn metadata_file(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        metadata_location: &str,
        refs_only: bool,
    ) -> Result<Arc<str>> {
        caller.require(Privilege::Read, &table_of(ident))?;
        let warehouse = self.shared.warehouse_of(metadata_location).await?;
        metadata::text(&self.shared, &warehouse, metadata_location, refs_only).await
    }

    /// What the caller needs to read (and, with `write` on the table, write) `ident`'s
    /// objects itself (see [`crate::storage::access`]); needs `read` on the table. With
    /// STS configured the credentials are temporary and scoped to the table's location
    /// (read-only without `write`); else they are the warehouse's own, not scoped.
    pub async fn storage_access(
        &self,
        caller: &Caller,
        ident: &TableIdent,
    ) -> Result<crate::storage::access::StorageAccess> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let row = self.shared.db.table(ident).await?;
        self.storage_access_at(caller, ident, &row.location).await
    }

    /// [`Catalog::storage_access`] for `location`, the location of `ident` as the caller
    /// just had it from a table load or create (no second lookup); needs `read` on the
    /// table like every storage access. Without `write` the credentials are read-only.
    pub async fn storage_access_at(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        location: &str,
    ) -> Result<crate::storage::access::StorageAccess> {
        caller.require(Privilege::Read, &table_of(ident))?;
        let read_only = caller.require(Privilege::Write, &table_of(ident)).is_err();
        self.shared
            .warehouse_of(location)
            .await?
            .credentials_for(location, read_only, self.now_ms())
            .await
    }

    /// Signs an S3 request a client of `ident` is about to make (remote signing, see
    /// [`crate::storage::sign`]). The object must lie below the table's location; a read
    /// needs `read` on the table, a write `write`. `Forbidden` for a request the signer
    /// never signs (a LIST, a copy, a plain DELETE) or an object outside the table; nothing
    /// is signed then.
    pub async fn sign_request(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        request: &crate::storage::sign::SignRequest,
    ) -> Result<crate::storage::sign::SignedRequest> {
        use crate::storage::sign::Access;
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let row = self.shared.db.table(ident).await?;
        let warehouse = self.shared.warehouse_of(&row.location).await?;
        let plan = warehouse.sign_plan(request)?;
        let location = warehouse.location("location", &row.location)?;
        if !plan.object.is_under(&location) {
            return Err(Error::Forbidden(format!(
                "the signer does not sign this request: {} is outside table {ident} ({location})",
                plan.object
            )));
        }
        if plan.access == Access::Write {
            caller.require(Privilege::Write, &table_of(ident))?;
        }
        warehouse.sign(plan).await
    }

    async fn table_info(&self, row: TableRow, want_json: bool) -> Result<TableInfo> {
        // The metadata file names every snapshot's manifest list.
        self.shared.publish_table(&row.location).await?;
        let warehouse = self.shared.warehouse_of(&row.location).await?;
        let (row, metadata_location, metadata_json) =
            metadata::materialize(&self.shared, &warehouse, row, want_json).await?;
        let (meta, _) = parse_base(&row)?;
        let warehouse = self
            .shared
            .warehouses
            .name_of(&row.location)
            .unwrap_or_default();
        Ok(TableInfo {
            ident: row.ident,
            table_uuid: row.table_uuid,
            location: row.location,
            metadata_location,
            version: row.version,
            current_snapshot_id: row.current_snapshot_id,
            metadata_json: metadata_json.map(|j| j.to_string()),
            schema_json: serde_json::to_string(meta.current_schema().as_ref())
                .expect("schema serialises"),
            partition_spec_json: serde_json::to_string(meta.default_partition_spec().as_ref())
                .expect("spec serialises"),
            properties: meta.properties().clone(),
            warehouse,
        })
    }

    /// The table's current state; its metadata file is written first if the current
    /// version has none yet.
    pub async fn load_table(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        include_metadata_json: bool,
    ) -> Result<TableInfo> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let row = self.shared.db.table(ident).await?;
        self.table_info(row, include_metadata_json).await
    }

    /// Registers an existing Iceberg table (its metadata file) under `ident`; see
    /// `register.rs` for the contract.
    #[instrument(skip(self), fields(table = %ident))]
    pub async fn register_table(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        metadata_location: &str,
        client: &str,
    ) -> Result<TableInfo> {
        ident.validate()?;
        caller.require(Privilege::Manage, &namespace_of(ident))?;
        let by = actor(caller, client);
        crate::table::register::register(&self.shared, ident, metadata_location, &by).await?;
        info!(metadata_location, "registered table");
        self.load_table(caller, ident, false).await
    }

    pub async fn list_tables(&self, caller: &Caller, namespace: &str) -> Result<Vec<TableIdent>> {
        validate_name("namespace", namespace)?;
        see_namespace(caller, namespace)?;
        let mut all = self.shared.db.list_tables(namespace).await?;
        all.retain(|t| caller.sees_table(t));
        Ok(all)
    }

    /// Removes the table from the catalog; its files stay where they are.
    pub async fn drop_table(&self, caller: &Caller, ident: &TableIdent) -> Result<()> {
        ident.validate()?;
        caller.require(Privilege::Manage, &table_of(ident))?;
        self.shared.db.drop_table(ident).await
    }

    /// Drops the table and deletes its files (every object its snapshots reference, its
    /// metadata files); returns how many objects were deleted. See
    /// [`crate::maintenance::orphans`]: the drop is committed first, deletion is best effort.
    pub async fn drop_table_and_purge(&self, caller: &Caller, ident: &TableIdent) -> Result<u64> {
        ident.validate()?;
        caller.require(Privilege::Manage, &table_of(ident))?;
        crate::maintenance::orphans::drop_and_purge(&self.shared, ident).await
    }

    pub async fn rename_table(
        &self,
        caller: &Caller,
        from: &TableIdent,
        to: &TableIdent,
    ) -> Result<TableInfo> {
        from.validate()?;
        to.validate()?;
        caller.require(Privilege::Manage, &table_of(from))?;
        caller.require(Privilege::Manage, &namespace_of(to))?;
        self.shared.db.rename_table(from, to).await?;
        self.load_table(caller, to, false).await
    }

    // ---- commits ---------------------------------------------------------------------

    /// Applies one operation atomically; see [`crate::commit`] for the guarantees.
    #[instrument(skip(self, req), fields(table = %req.ident, commit_id = %req.commit_id, op = req.operation.name()))]
    pub async fn commit(&self, caller: &Caller, req: CommitRequest) -> Result<CommitOutcome> {
        req.ident.validate()?;
        caller.require(Privilege::Write, &table_of(&req.ident))?;
        self.commit_as(caller, req, None, None).await
    }

    /// [`Catalog::commit`], keeping the snapshot id a REST client chose when it is free;
    /// `row` is the table's row when the caller has just read it.
    async fn commit_as(
        &self,
        caller: &Caller,
        req: CommitRequest,
        row: Option<TableRow>,
        wanted_snapshot_id: Option<i64>,
    ) -> Result<CommitOutcome> {
        prepare::check_request(&req)?;
        let row = match row {
            Some(row) => row,
            None => self.shared.db.table(&req.ident).await?,
        };
        let started = std::time::Instant::now();
        let operation = req.operation.name();
        let (table, commit_id) = (req.ident.clone(), req.commit_id.clone());
        let outcome = self
            .prepare_and_submit(caller, req, &row, wanted_snapshot_id, started)
            .await;
        let took = started.elapsed();
        crate::metrics::global().commit(
            operation,
            outcome_label(outcome.as_ref().map(|o| o.replayed)),
            took,
        );
        match &outcome {
            Ok(o) => info!(
                table = %table,
                operation,
                snapshot = o.snapshot_id,
                replayed = o.replayed,
                took_ms = took.as_secs_f64() * 1e3,
                principal = caller.principal().unwrap_or("-"),
                commit_id,
                "committed"
            ),
            Err(e) => info!(
                table = %table,
                operation,
                took_ms = took.as_secs_f64() * 1e3,
                principal = caller.principal().unwrap_or("-"),
                commit_id,
                error = %e,
                "commit failed"
            ),
        }
        outcome
    }

    async fn prepare_and_submit(
        &self,
        caller: &Caller,
        req: CommitRequest,
        row: &TableRow,
        wanted_snapshot_id: Option<i64>,
        started: std::time::Instant,
    ) -> Result<CommitOutcome> {
        match prepare::prepare(
            &self.shared,
            row,
            req,
            caller.principal(),
            wanted_snapshot_id,
        )
        .await?
        {
            Checked::Ready(prepared) => {
                let prepared_in = started.elapsed();
                let outcome = self.committer.submit(*prepared).await;
                tracing::debug!(
                    prepare = ?prepared_in,
                    committer = ?(started.elapsed() - prepared_in),
                    "commit"
                );
                outcome
            }
            Checked::Answered(outcome) => Ok(outcome),
        }
    }

    // ---- snapshots -------------------------------------------------------------------

    /// Snapshots oldest first, `page_size` at a time (default 100, at most 1000).
    pub async fn list_snapshots(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<SnapshotPage> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let size = match page_size {
            0 => 100,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("{n} is more than {MAX_PAGE_SIZE}"),
                ));
            }
            n => n,
        };
        let after: i64 = match page_token {
            None | Some("") => -1,
            Some(t) => t.parse().map_err(|_| {
                Error::invalid(
                    "page_token",
                    format!("{t:?} is not a token this server issued"),
                )
            })?,
        };
        let row = self.shared.db.table(ident).await?;
        // Manifest-list paths leave the process.
        self.shared.publish_table(&row.location).await?;
        let snapshots = self
            .shared
            .db
            .snapshots(row.table_id, after, size as i64 + 1)
            .await?;
        let more = snapshots.len() > size as usize;
        let mut snapshots = snapshots;
        snapshots.truncate(size as usize);
        let next_page_token = more.then(|| {
            snapshots
                .last()
                .expect("non-empty")
                .sequence_number
                .to_string()
        });
        Ok(SnapshotPage {
            snapshots,
            next_page_token,
        })
    }

    pub async fn get_snapshot(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        snapshot_id: i64,
    ) -> Result<SnapshotInfo> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let row = self.shared.db.table(ident).await?;
        self.shared.publish_table(&row.location).await?;
        self.shared
            .db
            .snapshot(row.table_id, snapshot_id)
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    ObjectKind::Snapshot,
                    format!("{snapshot_id} of table {ident}"),
                )
            })
    }
}

impl Catalog {
    // ---- reading ---------------------------------------------------------------------

    /// Resolves a snapshot selector; see [`crate::scan`] for the contract.
    pub async fn resolve_snapshot(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        selector: &SnapshotSelector,
    ) -> Result<ResolvedSnapshot> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let resolved = self.resolve_fresh(ident, selector).await?.1;
        // The snapshot's manifest-list path leaves the process.
        self.shared.publish_table(&resolved.location).await?;
        Ok(resolved)
    }

    /// Resolves `selector` on the table's current row; a row that went stale (its current
    /// snapshot expired just after it was read) is read again.
    async fn resolve_fresh(
        &self,
        ident: &TableIdent,
        selector: &SnapshotSelector,
    ) -> Result<(TableMetadata, ResolvedSnapshot)> {
        let follows_current = match selector {
            SnapshotSelector::Current => true,
            SnapshotSelector::Ref(r) => r == "main",
            _ => false,
        };
        let mut attempts = 0;
        loop {
            let row = self.shared.db.table(ident).await?;
            let (meta, _) = parse_base(&row)?;
            match scan::resolve(&self.shared, &row, &meta, selector).await {
                Err(Error::NotFound {
                    kind: ObjectKind::Snapshot,
                    ..
                }) if follows_current && attempts < metadata::MAX_STALE_READS => attempts += 1,
                r => return Ok((meta, r?)),
            }
        }
    }

    /// The data files (with their delete files) a scan of the selected snapshot reads,
    /// pruned by `filter`.
    #[instrument(skip(self, filter), fields(table = %ident))]
    pub async fn plan_scan(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        selector: &SnapshotSelector,
        filter: Option<&ScanFilter>,
    ) -> Result<ScanPlan> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let (meta, resolved) = self.resolve_fresh(ident, selector).await?;
        // The snapshot may be another replica's, its objects not yet in the store.
        self.shared.publish_table(meta.location()).await?;
        scan::plan(&self.shared, &meta, resolved, filter).await
    }

    /// Applies Iceberg requirements + updates to one table (the REST protocol's commit); see
    /// [`crate::commit::metacommit`]. A plain append goes through the commit pipeline like a gRPC
    /// append (checked, rebased, never a conflict). With an `assert-create` requirement the
    /// commit creates the table (a staged create). Returns the table afterwards, with its
    /// metadata JSON.
    #[instrument(skip(self, change), fields(table = %change.ident))]
    pub async fn commit_metadata(
        &self,
        caller: &Caller,
        change: TableChange,
        client: &str,
        commit_id: Option<&str>,
    ) -> Result<TableInfo> {
        change.ident.validate()?;
        access::require_change(caller, &change)?;
        let commit_id = self.commit_id(commit_id)?;
        let ident = change.ident.clone();
        let by = actor(caller, client);
        if access::creates(&change) {
            self.create_by_commit(caller, change, &by, &commit_id)
                .await?;
        } else {
            self.apply_change(caller, change, &by, &commit_id).await?;
        }
        self.load_table(caller, &ident, true).await
    }

    async fn apply_change(
        &self,
        caller: &Caller,
        change: TableChange,
        by: &Actor,
        commit_id: &str,
    ) -> Result<()> {
        // Read once: the append check, the prepare stage and the garbage record use it.
        let row = self.shared.db.table(&change.ident).await?;
        let Some(append) = crate::commit::metacommit::as_append(
            &self.shared,
            &row,
            &change.requirements,
            &change.updates,
        )
        .await?
        else {
            let started = std::time::Instant::now();
            let r = crate::commit::metacommit::commit(&self.shared, &[change], by, commit_id).await;
            record_metadata_commit(&r, started);
            return r;
        };
        // One commit path: the same checks, manifests and rebasing as a gRPC append.
        let table_id = row.table_id;
        let outcome = self
            .commit_as(
                caller,
                CommitRequest {
                    ident: change.ident.clone(),
                    commit_id: commit_id.to_string(),
                    base_snapshot_id: append.base_snapshot_id,
                    operation: Operation::Append { add: append.add },
                    summary: append.summary,
                    client: by.client.clone(),
                },
                Some(row),
                Some(append.client_snapshot_id),
            )
            .await?;
        // The client's own manifest list and manifests are referenced by nothing: recorded
        // for the table's next expiry (not deleted now, so a retry of this request can still
        // read them and be answered as applied).
        if !outcome.replayed {
            let doomed: Vec<Doomed> = append
                .unused
                .into_iter()
                .enumerate()
                .map(|(i, path)| Doomed {
                    path,
                    kind: if i == 0 {
                        KIND_MANIFEST_LIST
                    } else {
                        KIND_MANIFEST
                    },
                    size: -1,
                })
                .collect();
            let recorded = async {
                let mut conn = self.shared.db.pool.acquire().await?;
                record_doomed(&mut conn, table_id, &doomed, self.now_ms()).await
            };
            // The append is committed: a failure here only leaves garbage for a sweep.
            if let Err(e) = recorded.await {
                tracing::warn!(error = %e, "could not record a client's unused manifests");
            }
        }
        Ok(())
    }

    /// A commit that creates its table (`assert-create`): the table is created from the
    /// schema, spec, location, properties and uuid the updates set, then the other updates
    /// (e.g. the first snapshot) are applied; if they fail the table is dropped again.
    async fn create_by_commit(
        &self,
        caller: &Caller,
        change: TableChange,
        by: &Actor,
        commit_id: &str,
    ) -> Result<()> {
        use iceberg::{TableRequirement as R, TableUpdate as U};
        let ident = &change.ident;
        if self.shared.db.table(ident).await.is_ok() {
            return Err(Error::RequirementFailed {
                table: ident.to_string(),
                reason: "the table exists already (assert-create)".into(),
            });
        }
        if let Some(r) = change
            .requirements
            .iter()
            .find(|r| !matches!(r, R::NotExist))
        {
            return Err(Error::invalid(
                "requirements",
                format!("{r:?} cannot go with assert-create"),
            ));
        }
        let (mut schema, mut spec, mut location, mut uuid) = (None, None, None, None);
        let mut properties = HashMap::new();
        let mut rest = Vec::new();
        for u in change.updates {
            match u {
                U::AssignUuid { uuid: u } => uuid = Some(u),
                U::AddSchema { schema: s } => schema = Some(s),
                U::AddSpec { spec: s } => spec = Some(s),
                U::SetLocation { location: l } => location = Some(l),
                U::SetProperties { updates } => properties.extend(updates),
                U::UpgradeFormatVersion {
                    format_version: FormatVersion::V2,
                } => {}
                U::SetCurrentSchema { .. } | U::SetDefaultSpec { .. } => {}
                U::AddSortOrder { sort_order } if sort_order.is_unsorted() => {}
                U::SetDefaultSortOrder { .. } => {}
                other => rest.push(other),
            }
        }
        let schema =
            schema.ok_or_else(|| Error::invalid("updates", "assert-create needs add-schema"))?;
        let mut create = create_table_spec(&schema, spec.as_ref(), location, properties)?;
        create.table_uuid = uuid;
        self.create_table(caller, ident, create).await?;
        if rest.is_empty() {
            return Ok(());
        }
        let first = TableChange {
            ident: ident.clone(),
            requirements: Vec::new(),
            updates: rest,
        };
        if let Err(e) = self.apply_change(caller, first, by, commit_id).await {
            // Nothing of the statement should remain: the table was created for it.
            let _ = self.drop_table(caller, ident).await;
            return Err(e);
        }
        Ok(())
    }

    /// Applies the changes of several tables atomically: one database transaction commits
    /// all of them or none (the REST protocol's `/transactions/commit`).
    #[instrument(skip(self, changes), fields(tables = changes.len()))]
    pub async fn commit_transaction(
        &self,
        caller: &Caller,
        changes: Vec<TableChange>,
        client: &str,
        commit_id: Option<&str>,
    ) -> Result<()> {
        if changes.is_empty() {
            return Err(Error::invalid("table-changes", "names no table"));
        }
        for c in &changes {
            c.ident.validate()?;
            access::require_change(caller, c)?;
        }
        let commit_id = self.commit_id(commit_id)?;
        let by = actor(caller, client);
        let started = std::time::Instant::now();
        let r = crate::commit::metacommit::commit(&self.shared, &changes, &by, &commit_id).await;
        record_metadata_commit(&r, started);
        r
    }

    /// The given commit id (checked), or a fresh one.
    fn commit_id(&self, given: Option<&str>) -> Result<String> {
        match given {
            None => Ok(self.shared.env.ids.uuid().to_string()),
            Some(id) => {
                prepare::validate_commit_id(id)?;
                Ok(id.to_string())
            }
        }
    }

    /// The newest `limit` commits of the table (default 100, at most [`MAX_PAGE_SIZE`]),
    /// newest first, with who made them.
    pub async fn list_commits(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        limit: u32,
    ) -> Result<Vec<CommitRecord>> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let limit = match limit {
            0 => 100,
            n => n.min(MAX_PAGE_SIZE),
        };
        let row = self.shared.db.table(ident).await?;
        self.shared.db.commit_log(row.table_id, limit.into()).await
    }

    /// The table's tags and branches (`main` first).
    pub async fn list_refs(&self, caller: &Caller, ident: &TableIdent) -> Result<Vec<RefInfo>> {
        ident.validate()?;
        caller.require(Privilege::Read, &table_of(ident))?;
        let row = self.shared.db.table(ident).await?;
        refs::refs(&self.shared.db, &row).await
    }

    /// Rollback, set-current, tag and branch changes; see [`crate::table::refs`].
    #[instrument(skip(self), fields(table = %ident))]
    pub async fn change_snapshots(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        change: &SnapshotChange,
        client: &str,
    ) -> Result<ChangeOutcome> {
        ident.validate()?;
        caller.require(Privilege::Manage, &table_of(ident))?;
        let by = actor(caller, client);
        let out = refs::apply(&self.shared, ident, change, &by).await?;
        info!(?change, ?out, "snapshots changed");
        Ok(out)
    }

    /// Expires old snapshots of one table and deletes the files only they needed; see
    /// [`crate::maintenance::expire`] for what is kept and the order of changes. Runs to its end even if
    /// the caller stops waiting (see [`Catalog::detached`]).
    #[instrument(skip(self), fields(table = %ident))]
    pub async fn expire_snapshots(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        opts: &ExpireOptions,
        client: &str,
    ) -> Result<ExpireReport> {
        ident.validate()?;
        caller.require(Privilege::Maintain, &table_of(ident))?;
        let (shared, ident, opts, by) = (
            self.shared.clone(),
            ident.clone(),
            opts.clone(),
            actor(caller, client),
        );
        record_run(
            "expire",
            detached(async move {
                crate::maintenance::expire::expire(&shared, &ident, &opts, &by).await
            })
            .await,
        )
    }

    /// [`Catalog::expire_snapshots`] on every table the caller may maintain, one after the
    /// other; one table's failure is reported with it and does not stop the others.
    pub async fn expire_all(
        &self,
        caller: &Caller,
        opts: &ExpireOptions,
        client: &str,
    ) -> Result<Vec<(TableIdent, Result<ExpireReport>)>> {
        let mut out = Vec::new();
        for t in self.all_tables(caller).await? {
            if !caller.may(Privilege::Maintain, &table_of(&t)) {
                continue;
            }
            let r = self.expire_snapshots(caller, &t, opts, client).await;
            out.push((t, r));
        }
        Ok(out)
    }

    /// Fresh data file paths for a writer, one per partition directory given (empty for
    /// an unpartitioned file), recorded so that files never committed are found as orphans
    /// without listing; see [`crate::maintenance::orphans`].
    pub async fn reserve_data_files(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        partition_paths: &[String],
    ) -> Result<Vec<String>> {
        ident.validate()?;
        caller.require(Privilege::Write, &table_of(ident))?;
        crate::maintenance::orphans::reserve(&self.shared, ident, partition_paths).await
    }

    /// Deletes files under the table's location that no commit made; see
    /// [`crate::maintenance::orphans`].
    #[instrument(skip(self), fields(table = %ident))]
    pub async fn remove_orphan_files(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        opts: &crate::maintenance::orphans::OrphanOptions,
    ) -> Result<crate::maintenance::orphans::OrphanReport> {
        ident.validate()?;
        caller.require(Privilege::Maintain, &table_of(ident))?;
        let (shared, ident, opts) = (self.shared.clone(), ident.clone(), opts.clone());
        record_run(
            "orphans",
            detached(async move {
                crate::maintenance::orphans::remove_orphans(&shared, &ident, &opts).await
            })
            .await,
        )
    }

    /// Rewrites small files into larger ones as one `replace` commit; see
    /// [`crate::maintenance::compact`].
    #[instrument(skip(self, opts), fields(table = %ident))]
    pub async fn compact(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        opts: &crate::maintenance::compact::CompactOptions,
        client: &str,
    ) -> Result<crate::maintenance::compact::CompactReport> {
        ident.validate()?;
        caller.require(Privilege::Maintain, &table_of(ident))?;
        let (catalog, caller, ident, opts, client) = (
            self.clone(),
            caller.clone(),
            ident.clone(),
            opts.clone(),
            client.to_string(),
        );
        record_run(
            "compact",
            detached(async move { catalog.compact_now(&caller, &ident, &opts, &client).await })
                .await,
        )
    }

    /// Compaction's commit: a `replace` that changes no row, so `maintain` suffices for it.
    async fn compact_now(
        &self,
        caller: &Caller,
        ident: &TableIdent,
        opts: &crate::maintenance::compact::CompactOptions,
        client: &str,
    ) -> Result<crate::maintenance::compact::CompactReport> {
        let mut plan = crate::maintenance::compact::plan(&self.shared, ident, opts).await?;
        if opts.dry_run || plan.bins.is_empty() {
            return Ok(plan.report);
        }
        let (add, remove) =
            crate::maintenance::compact::write(&self.shared, ident, &mut plan).await?;
        let written: Vec<String> = add.iter().map(|f| f.path.clone()).collect();
        let req = CommitRequest {
            ident: ident.clone(),
            commit_id: self.shared.env.ids.uuid().to_string(),
            base_snapshot_id: plan.report.base_snapshot_id,
            operation: Operation::Replace { add, remove },
            summary: HashMap::new(),
            client: client.to_string(),
        };
        match self.commit_as(caller, req, None, None).await {
            Ok(o) => {
                plan.report.snapshot_id = Some(o.snapshot_id);
                info!(
                    files = plan.report.files_rewritten,
                    into = plan.report.files_written,
                    snapshot = o.snapshot_id,
                    "compacted"
                );
                Ok(plan.report)
            }
            Err(e) => {
                // Nothing committed: the new files are garbage (and reserved, so orphan
                // removal would find them); delete them now.
                if !matches!(e, Error::Unavailable { .. } | Error::Internal { .. }) {
                    let row = self.shared.db.table(ident).await?;
                    let warehouse = self.shared.warehouse_of(&row.location).await?;
                    for (_, owned) in
                        crate::table::owned(&warehouse, row.table_id, &row.location, written)
                    {
                        let _ = warehouse.delete(&owned).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// Every table of every namespace, for maintenance over the whole catalog.
    pub async fn all_tables(&self, caller: &Caller) -> Result<Vec<TableIdent>> {
        let mut out = Vec::new();
        for ns in self.shared.db.list_namespaces().await? {
            out.extend(self.shared.db.list_tables(&ns.name).await?);
        }
        out.retain(|t| caller.sees_table(t));
        Ok(out)
    }
}

/// How a commit ended, for the metrics: committed, replayed (a retry answered from the
/// log), conflict, unknown (may have committed) or rejected.
/// `replayed` is whether a success was answered from the commit log.
fn outcome_label(r: std::result::Result<bool, &Error>) -> &'static str {
    match r {
        Ok(true) => "replayed",
        Ok(false) => "committed",
        Err(Error::Conflict { .. } | Error::RequirementFailed { .. }) => "conflict",
        Err(Error::Unavailable { .. } | Error::Internal { .. }) => "unknown",
        Err(_) => "rejected",
    }
}

/// Records a metadata commit (or multi-table transaction) in the metrics.
fn record_metadata_commit(r: &Result<()>, started: std::time::Instant) {
    let outcome = outcome_label(r.as_ref().map(|()| false));
    crate::metrics::global().commit("metadata", outcome, started.elapsed());
}

/// Records a maintenance run in the metrics.
fn record_run<T>(job: &str, r: Result<T>) -> Result<T> {
    crate::metrics::global().maintenance(job, r.is_ok());
    r
}

/// Runs a maintenance job to its end on its own task: a caller that stops waiting (a client
/// that disconnects or times out) does not cut a run short halfway.
async fn detached<T: Send + 'static>(
    job: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(job)
        .await
        .map_err(|e| Error::internal_from("the maintenance task failed", e))?
}

/// The creation spec of a table from an Iceberg schema and partition spec (as REST clients
/// send them). Field ids are assigned afresh in schema order, as for every new table.
pub fn create_table_spec(
    schema: &Schema,
    spec: Option<&UnboundPartitionSpec>,
    location: Option<String>,
    properties: HashMap<String, String>,
) -> Result<CreateTable> {
    let fields = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| FieldSpec {
            name: f.name.clone(),
            type_json: match f.field_type.as_ref() {
                Type::Primitive(p) => p.to_string(),
                nested => serde_json::to_string(nested).expect("types serialise"),
            },
            required: f.required,
            doc: f.doc.clone(),
        })
        .collect();
    let mut partition_by = Vec::new();
    for pf in spec.map(|s| s.fields()).unwrap_or_default() {
        let source = schema.field_by_id(pf.source_id).ok_or_else(|| {
            Error::invalid(
                "partition-spec",
                format!(
                    "partition field {} names source id {}, which is not in the schema",
                    pf.name, pf.source_id
                ),
            )
        })?;
        partition_by.push(PartitionFieldSpec {
            source_column: source.name.clone(),
            transform: pf.transform.to_string(),
            name: Some(pf.name.clone()),
        });
    }
    Ok(CreateTable {
        fields,
        partition_by,
        location,
        properties,
        table_uuid: None,
    })
}

fn build_schema(fields: &[FieldSpec]) -> Result<Schema> {
    if fields.is_empty() {
        return Err(Error::invalid(
            "fields",
            "a table needs at least one column",
        ));
    }
    let mut names = HashSet::new();
    let mut nested = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let field = format!("fields[{i}]");
        if f.name.trim().is_empty() {
            return Err(Error::invalid(field, "column name is empty"));
        }
        crate::validate::name(&field, &f.name)?;
        if f.name.contains('.') {
            return Err(Error::invalid(
                field,
                format!("column name {:?} contains '.'", f.name),
            ));
        }
        if !names.insert(f.name.to_lowercase()) {
            return Err(Error::invalid(
                field,
                format!("column {:?} is defined twice", f.name),
            ));
        }
        let ty =
            parse_type(&f.type_json).map_err(|r| Error::invalid(format!("{field}.type"), r))?;
        crate::validate::data_type(&format!("{field}.type"), &ty)?;
        // Top-level ids are placeholders: the metadata builder assigns fresh ids.
        let id = 100_000 + i as i32;
        let mut nf = if f.required {
            NestedField::required(id, &f.name, ty)
        } else {
            NestedField::optional(id, &f.name, ty)
        };
        if let Some(doc) = &f.doc {
            nf = nf.with_doc(doc);
        }
        nested.push(nf.into());
    }
    Schema::builder()
        .with_fields(nested)
        .build()
        .map_err(|e| Error::invalid("fields", e.to_string()))
}

fn build_partition_spec(
    schema: &Schema,
    fields: &[PartitionFieldSpec],
) -> Result<UnboundPartitionSpec> {
    let mut b = UnboundPartitionSpec::builder();
    let mut names = HashSet::new();
    for (i, pf) in fields.iter().enumerate() {
        let field = format!("partition_by[{i}]");
        let source = schema.field_by_name(&pf.source_column).ok_or_else(|| {
            Error::invalid(
                &field,
                format!("column {:?} is not in the schema", pf.source_column),
            )
        })?;
        let transform: Transform =
            pf.transform
                .trim()
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| {
                    Error::invalid(
                        &field,
                        format!("{:?} is not a partition transform", pf.transform),
                    )
                })?;
        crate::validate::transform(&field, &transform)?;
        transform.result_type(&source.field_type).map_err(|_| {
            Error::invalid(
                &field,
                format!(
                    "{transform} cannot partition column {} of type {}",
                    source.name, source.field_type
                ),
            )
        })?;
        let name = pf.name.clone().unwrap_or_else(|| match transform {
            Transform::Identity => source.name.clone(),
            Transform::Bucket(_) => format!("{}_bucket", source.name),
            Transform::Truncate(_) => format!("{}_trunc", source.name),
            other => format!("{}_{other}", source.name),
        });
        if !names.insert(name.clone()) {
            return Err(Error::invalid(
                &field,
                format!("partition field {name:?} is defined twice"),
            ));
        }
        b = b
            .add_partition_field(source.id, name, transform)
            .map_err(|e| Error::invalid(&field, e.to_string()))?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, ty: &str) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            type_json: ty.into(),
            required: false,
            doc: None,
        }
    }

    #[test]
    fn types_parse_like_iceberg_json() {
        assert_eq!(
            parse_type("long").unwrap(),
            Type::Primitive(iceberg::spec::PrimitiveType::Long)
        );
        assert_eq!(
            parse_type("Decimal(10, 2)").unwrap(),
            Type::Primitive(iceberg::spec::PrimitiveType::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert!(parse_type("{\"type\": \"list\", \"element-id\": 9, \"element\": \"int\", \"element-required\": false}").is_ok());
        let e = parse_type("lung").unwrap_err();
        assert!(e.contains("lung") && e.contains("timestamptz"), "{e}");
    }

    #[test]
    fn schema_rules() {
        assert!(build_schema(&[]).is_err());
        assert!(
            build_schema(&[field("a", "int"), field("A", "long")]).is_err(),
            "case-insensitive duplicate"
        );
        assert!(build_schema(&[field("a.b", "int")]).is_err());
        assert!(build_schema(&[field("", "int")]).is_err());
        let s = build_schema(&[field("id", "long"), field("ts", "timestamp")]).unwrap();
        assert_eq!(s.as_struct().fields().len(), 2);
    }

    #[test]
    fn partition_rules() {
        let s = build_schema(&[
            field("id", "long"),
            field("ts", "timestamp"),
            field("name", "string"),
        ])
        .unwrap();
        let pf = |c: &str, t: &str| PartitionFieldSpec {
            source_column: c.into(),
            transform: t.into(),
            name: None,
        };
        let spec = build_partition_spec(
            &s,
            &[
                pf("ts", "day"),
                pf("id", "bucket[16]"),
                pf("name", "identity"),
            ],
        )
        .unwrap();
        let names: Vec<&str> = spec.fields().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["ts_day", "id_bucket", "name"]);
        assert!(
            build_partition_spec(&s, &[pf("name", "day")]).is_err(),
            "day of a string"
        );
        assert!(build_partition_spec(&s, &[pf("nope", "day")]).is_err());
        assert!(build_partition_spec(&s, &[pf("ts", "decade")]).is_err());
        assert!(
            build_partition_spec(&s, &[pf("ts", "day"), pf("ts", "day")]).is_err(),
            "same name twice"
        );
    }
}
