//! The `CatalogService` handlers: destructure, convert, call the catalog, convert back.

use firn_core::{
    Caller, Catalog, CommitRequest, CreateTable, DEFAULT_WAREHOUSE, FieldSpec, NamespaceInfo,
    PartitionFieldSpec, Secret, WarehouseInfo,
};

use firn_proto::v1 as pb;
use firn_proto::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use crate::convert::{
    filter, ident, invalid, operation, pb_ident, resolved, scan_plan, selector, snapshot,
    snapshot_change, status, table,
};

/// The gRPC face of a [`Catalog`].
#[derive(Clone)]
pub struct GrpcCatalog {
    catalog: Catalog,
}

impl GrpcCatalog {
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

impl GrpcCatalog {
    /// The caller the request's `authorization` metadata stands for.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        authenticate(&self.catalog, req).await
    }
}

/// The caller a request's `authorization: Bearer ...` metadata stands for (see
/// [`Catalog::authenticate`]); shared by every service of the transport.
pub(crate) async fn authenticate<T>(catalog: &Catalog, req: &Request<T>) -> Result<Caller, Status> {
    let credential = match req.metadata().get("authorization") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                status(firn_core::Error::Unauthenticated(
                    "the authorization metadata is not text".into(),
                ))
            })?;
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or_else(|| {
                    status(firn_core::Error::Unauthenticated(
                        "the authorization metadata is not \"Bearer <token>\"".into(),
                    ))
                })?;
            Some(Secret::new(token.trim()))
        }
    };
    catalog
        .authenticate(credential.as_ref())
        .await
        .map_err(status)
}

/// Who is calling: the `x-firn-client` header, else the peer address.
fn client_of<T>(req: &Request<T>) -> String {
    if let Some(c) = req
        .metadata()
        .get("x-firn-client")
        .and_then(|v| v.to_str().ok())
    {
        return c.chars().take(200).collect();
    }
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

type Res<T> = Result<Response<T>, Status>;

fn namespace_pb(ns: NamespaceInfo) -> pb::Namespace {
    pb::Namespace {
        name: ns.name,
        properties: ns.properties,
        warehouse: ns.warehouse,
    }
}

fn warehouse_pb(w: WarehouseInfo) -> pb::Warehouse {
    pb::Warehouse {
        name: w.name,
        url: w.url,
        options: w.options.into_iter().collect(),
        source: w.source,
    }
}

#[tonic::async_trait]
impl CatalogService for GrpcCatalog {
    async fn create_namespace(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Res<pb::Namespace> {
        let caller = self.caller(&req).await?;
        let pb::CreateNamespaceRequest {
            name,
            properties,
            warehouse,
        } = req.into_inner();
        let warehouse = if warehouse.is_empty() {
            DEFAULT_WAREHOUSE
        } else {
            &warehouse
        };
        let ns = self
            .catalog
            .create_namespace_in(&caller, &name, warehouse, properties)
            .await
            .map_err(status)?;
        Ok(Response::new(namespace_pb(ns)))
    }

    async fn list_namespaces(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Res<pb::ListNamespacesResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListNamespacesRequest { warehouse } = req.into_inner();
        let namespaces = self
            .catalog
            .list_namespaces(
                &caller,
                (!warehouse.is_empty()).then_some(warehouse.as_str()),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: namespaces.into_iter().map(namespace_pb).collect(),
        }))
    }

    async fn get_namespace(&self, req: Request<pb::GetNamespaceRequest>) -> Res<pb::Namespace> {
        let caller = self.caller(&req).await?;
        let pb::GetNamespaceRequest { name } = req.into_inner();
        let ns = self
            .catalog
            .get_namespace(&caller, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(namespace_pb(ns)))
    }

    async fn drop_namespace(
        &self,
        req: Request<pb::DropNamespaceRequest>,
    ) -> Res<pb::DropNamespaceResponse> {
        let caller = self.caller(&req).await?;
        let pb::DropNamespaceRequest { name } = req.into_inner();
        self.catalog
            .drop_namespace(&caller, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DropNamespaceResponse {}))
    }

    async fn create_warehouse(
        &self,
        req: Request<pb::CreateWarehouseRequest>,
    ) -> Res<pb::Warehouse> {
        let caller = self.caller(&req).await?;
        let pb::CreateWarehouseRequest { name, url, options } = req.into_inner();
        let config = firn_core::storage::WarehouseConfig { url, options };
        let w = self
            .catalog
            .create_warehouse(&caller, &name, config)
            .await
            .map_err(status)?;
        Ok(Response::new(warehouse_pb(w)))
    }

    async fn list_warehouses(
        &self,
        req: Request<pb::ListWarehousesRequest>,
    ) -> Res<pb::ListWarehousesResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListWarehousesRequest {} = req.into_inner();
        let all = self
            .catalog
            .list_warehouses(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListWarehousesResponse {
            warehouses: all.into_iter().map(warehouse_pb).collect(),
        }))
    }

    async fn drop_warehouse(
        &self,
        req: Request<pb::DropWarehouseRequest>,
    ) -> Res<pb::DropWarehouseResponse> {
        let caller = self.caller(&req).await?;
        let pb::DropWarehouseRequest { name } = req.into_inner();
        self.catalog
            .drop_warehouse(&caller, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DropWarehouseResponse {}))
    }

    async fn create_table(&self, req: Request<pb::CreateTableRequest>) -> Res<pb::Table> {
        let caller = self.caller(&req).await?;
        let pb::CreateTableRequest {
            ident: id,
            fields,
            partition_by,
            location,
            properties,
        } = req.into_inner();
        let id = ident("ident", id)?;
        let spec = CreateTable {
            fields: fields
                .into_iter()
                .map(
                    |pb::Field {
                         name,
                         r#type,
                         required,
                         doc,
                     }| FieldSpec {
                        name,
                        type_json: r#type,
                        required,
                        doc: (!doc.is_empty()).then_some(doc),
                    },
                )
                .collect(),
            partition_by: partition_by
                .into_iter()
                .map(
                    |pb::PartitionField {
                         source_column,
                         transform,
                         name,
                     }| PartitionFieldSpec {
                        source_column,
                        transform,
                        name: (!name.is_empty()).then_some(name),
                    },
                )
                .collect(),
            location: (!location.is_empty()).then_some(location),
            properties,
            table_uuid: None,
        };
        let t = self
            .catalog
            .create_table(&caller, &id, spec)
            .await
            .map_err(status)?;
        Ok(Response::new(table(t)))
    }

    async fn load_table(&self, req: Request<pb::LoadTableRequest>) -> Res<pb::Table> {
        let caller = self.caller(&req).await?;
        let pb::LoadTableRequest {
            ident: id,
            include_metadata_json,
        } = req.into_inner();
        let id = ident("ident", id)?;
        let t = self
            .catalog
            .load_table(&caller, &id, include_metadata_json)
            .await
            .map_err(status)?;
        Ok(Response::new(table(t)))
    }

    async fn get_storage_access(
        &self,
        req: Request<pb::GetStorageAccessRequest>,
    ) -> Res<pb::StorageAccess> {
        let caller = self.caller(&req).await?;
        let id = ident("ident", req.into_inner().ident)?;
        let a = self
            .catalog
            .storage_access(&caller, &id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StorageAccess {
            location: a.location,
            options: a.options.into_iter().collect(),
            expires_at_ms: a.expires_at_ms.unwrap_or(0),
        }))
    }

    async fn list_tables(
        &self,
        req: Request<pb::ListTablesRequest>,
    ) -> Res<pb::ListTablesResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListTablesRequest { namespace } = req.into_inner();
        let tables = self
            .catalog
            .list_tables(&caller, &namespace)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: tables.iter().map(pb_ident).collect(),
        }))
    }

    async fn drop_table(&self, req: Request<pb::DropTableRequest>) -> Res<pb::DropTableResponse> {
        let caller = self.caller(&req).await?;
        let pb::DropTableRequest { ident: id } = req.into_inner();
        let id = ident("ident", id)?;
        self.catalog
            .drop_table(&caller, &id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DropTableResponse {}))
    }

    async fn rename_table(&self, req: Request<pb::RenameTableRequest>) -> Res<pb::Table> {
        let caller = self.caller(&req).await?;
        let pb::RenameTableRequest { from, to } = req.into_inner();
        let (from, to) = (ident("from", from)?, ident("to", to)?);
        let t = self
            .catalog
            .rename_table(&caller, &from, &to)
            .await
            .map_err(status)?;
        Ok(Response::new(table(t)))
    }

    async fn commit(&self, req: Request<pb::CommitRequest>) -> Res<pb::CommitResponse> {
        let caller = self.caller(&req).await?;
        let client = client_of(&req);
        let pb::CommitRequest {
            ident: id,
            commit_id,
            base_snapshot_id,
            operation: op,
            summary,
        } = req.into_inner();
        let req = CommitRequest {
            ident: ident("ident", id)?,
            commit_id,
            base_snapshot_id,
            operation: operation(op)?,
            summary: summary.into_iter().collect(),
            client,
        };
        let o = self.catalog.commit(&caller, req).await.map_err(status)?;
        Ok(Response::new(pb::CommitResponse {
            snapshot_id: o.snapshot_id,
            sequence_number: o.sequence_number,
            version: o.version,
            replayed: o.replayed,
            parent_snapshot_id: o.parent_snapshot_id,
        }))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Res<pb::ListSnapshotsResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListSnapshotsRequest {
            ident: id,
            page_size,
            page_token,
        } = req.into_inner();
        let id = ident("ident", id)?;
        let page = self
            .catalog
            .list_snapshots(&caller, &id, page_size, Some(page_token.as_str()))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: page.snapshots.into_iter().map(snapshot).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_snapshot(&self, req: Request<pb::GetSnapshotRequest>) -> Res<pb::Snapshot> {
        let caller = self.caller(&req).await?;
        let pb::GetSnapshotRequest {
            ident: id,
            snapshot_id,
        } = req.into_inner();
        let id = ident("ident", id)?;
        let s = self
            .catalog
            .get_snapshot(&caller, &id, snapshot_id)
            .await
            .map_err(status)?;
        Ok(Response::new(snapshot(s)))
    }

    async fn resolve_snapshot(
        &self,
        req: Request<pb::ResolveSnapshotRequest>,
    ) -> Res<pb::ResolvedSnapshot> {
        let caller = self.caller(&req).await?;
        let pb::ResolveSnapshotRequest { ident: id, at } = req.into_inner();
        let id = ident("ident", id)?;
        let r = self
            .catalog
            .resolve_snapshot(&caller, &id, &selector(at))
            .await
            .map_err(status)?;
        Ok(Response::new(resolved(r)))
    }

    async fn plan_scan(&self, req: Request<pb::PlanScanRequest>) -> Res<pb::PlanScanResponse> {
        let caller = self.caller(&req).await?;
        let pb::PlanScanRequest {
            ident: id,
            at,
            filter: f,
        } = req.into_inner();
        let id = ident("ident", id)?;
        let f = f.map(filter).transpose()?;
        let p = self
            .catalog
            .plan_scan(&caller, &id, &selector(at), f.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(scan_plan(p)))
    }

    async fn list_refs(&self, req: Request<pb::ListRefsRequest>) -> Res<pb::ListRefsResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListRefsRequest { ident: id } = req.into_inner();
        let id = ident("ident", id)?;
        let refs = self.catalog.list_refs(&caller, &id).await.map_err(status)?;
        Ok(Response::new(pb::ListRefsResponse {
            refs: refs
                .into_iter()
                .map(|r| pb::Ref {
                    name: r.name,
                    snapshot_id: r.snapshot_id,
                    r#type: r.ref_type,
                })
                .collect(),
        }))
    }

    async fn manage_snapshots(
        &self,
        req: Request<pb::ManageSnapshotsRequest>,
    ) -> Res<pb::ManageSnapshotsResponse> {
        let caller = self.caller(&req).await?;
        let client = client_of(&req);
        let pb::ManageSnapshotsRequest { ident: id, action } = req.into_inner();
        let id = ident("ident", id)?;
        let change = snapshot_change(action)?;
        let o = self
            .catalog
            .change_snapshots(&caller, &id, &change, &client)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ManageSnapshotsResponse {
            previous_snapshot_id: o.previous_snapshot_id,
            current_snapshot_id: o.current_snapshot_id,
        }))
    }

    async fn expire_snapshots(
        &self,
        req: Request<pb::ExpireSnapshotsRequest>,
    ) -> Res<pb::ExpireSnapshotsResponse> {
        let caller = self.caller(&req).await?;
        let client = client_of(&req);
        let r = req.into_inner();
        let opts = firn_core::ExpireOptions {
            older_than_ms: r.older_than_ms,
            retain_last: r.retain_last,
            snapshot_ids: r.snapshot_ids,
            dry_run: r.dry_run,
        };
        let one = match (r.ident, r.all_tables) {
            (Some(_), true) => {
                return Err(invalid(
                    "all_tables",
                    "give either ident or all_tables, not both",
                ));
            }
            (None, false) => return Err(invalid("ident", "is required (or set all_tables)")),
            (Some(id), false) => Some(ident("ident", Some(id))?),
            (None, true) => None,
        };
        let tables = match one {
            Some(id) => {
                let report = self
                    .catalog
                    .expire_snapshots(&caller, &id, &opts, &client)
                    .await
                    .map_err(status)?;
                vec![table_expiry(&id, Ok(report))]
            }
            None => self
                .catalog
                .expire_all(&caller, &opts, &client)
                .await
                .map_err(status)?
                .into_iter()
                .map(|(id, r)| table_expiry(&id, r))
                .collect(),
        };
        Ok(Response::new(pb::ExpireSnapshotsResponse { tables }))
    }

    async fn compact(&self, req: Request<pb::CompactRequest>) -> Res<pb::CompactResponse> {
        let caller = self.caller(&req).await?;
        let client = client_of(&req);
        let r = req.into_inner();
        let id = ident("ident", r.ident)?;
        let opts = firn_core::CompactOptions {
            target_file_size: r.target_file_size_bytes,
            filter: r.filter.map(filter).transpose()?,
            dry_run: r.dry_run,
        };
        let o = self
            .catalog
            .compact(&caller, &id, &opts, &client)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CompactResponse {
            base_snapshot_id: o.base_snapshot_id,
            snapshot_id: o.snapshot_id,
            files_rewritten: o.files_rewritten,
            files_written: o.files_written,
            bytes_rewritten: o.bytes_rewritten,
            bytes_written: o.bytes_written,
            records: o.records,
            skipped_with_deletes: o.skipped_with_deletes,
        }))
    }

    async fn reserve_data_files(
        &self,
        req: Request<pb::ReserveDataFilesRequest>,
    ) -> Res<pb::ReserveDataFilesResponse> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let id = ident("ident", r.ident)?;
        let paths = self
            .catalog
            .reserve_data_files(&caller, &id, &r.partition_paths)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReserveDataFilesResponse { paths }))
    }

    async fn remove_orphan_files(
        &self,
        req: Request<pb::RemoveOrphanFilesRequest>,
    ) -> Res<pb::RemoveOrphanFilesResponse> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let id = ident("ident", r.ident)?;
        let opts = firn_core::OrphanOptions {
            older_than_ms: r.older_than_ms,
            dry_run: r.dry_run,
            sweep_listing: r.sweep_listing,
        };
        let o = self
            .catalog
            .remove_orphan_files(&caller, &id, &opts)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveOrphanFilesResponse {
            skipped: o.skipped,
            orphan_paths: o.orphans,
            deleted_files: o.deleted_files,
            bytes_freed: o.bytes_freed,
            listed_objects: o.listed_objects,
            failed_deletes: o.failed_deletes,
            reserved_paths_checked: o.intents_checked,
        }))
    }

    async fn list_commits(
        &self,
        req: Request<pb::ListCommitsRequest>,
    ) -> Res<pb::ListCommitsResponse> {
        let caller = self.caller(&req).await?;
        let pb::ListCommitsRequest { ident: id, limit } = req.into_inner();
        let id = ident("ident", id)?;
        let commits = self
            .catalog
            .list_commits(&caller, &id, limit)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListCommitsResponse {
            commits: commits
                .into_iter()
                .map(|c| pb::CommitRecord {
                    commit_id: c.commit_id,
                    snapshot_id: c.snapshot_id,
                    parent_snapshot_id: c.parent_snapshot_id,
                    sequence_number: c.sequence_number,
                    operation: c.operation,
                    principal: c.principal.unwrap_or_default(),
                    client: c.client,
                    committed_at_ms: c.committed_at_ms,
                })
                .collect(),
        }))
    }
}

fn table_expiry(
    id: &firn_core::TableIdent,
    r: firn_core::Result<firn_core::ExpireReport>,
) -> pb::TableExpiry {
    match r {
        Ok(r) => pb::TableExpiry {
            ident: Some(pb_ident(id)),
            skipped: r.skipped,
            error: String::new(),
            expired_snapshot_ids: r.expired_snapshots,
            removed_refs: r.removed_refs,
            retained_snapshots: r.retained_snapshots,
            data_files_deleted: r.deleted.data_files,
            delete_files_deleted: r.deleted.delete_files,
            manifests_deleted: r.deleted.manifests,
            manifest_lists_deleted: r.deleted.manifest_lists,
            metadata_files_deleted: r.deleted.metadata_files,
            bytes_freed: r.deleted.bytes,
            resumed_deletes: r.resumed,
            failed_deletes: r.failed_deletes,
            dry_run: r.dry_run,
        },
        Err(e) => pb::TableExpiry {
            ident: Some(pb_ident(id)),
            error: e.to_string(),
            ..Default::default()
        },
    }
}
