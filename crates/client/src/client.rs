//! The typed gRPC client.

use std::sync::Arc;
use std::time::Duration;

use firn_core::TableIdent;
use firn_proto::v1 as pb;
use firn_proto::v1::access_service_client::AccessServiceClient;
use firn_proto::v1::catalog_service_client::CatalogServiceClient;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::error::{ClientError, Result};
use crate::failover::Failover;

/// How commits are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Exponential backoff with jitter, per [`RetryPolicy`].
struct Backoff<'a> {
    policy: &'a RetryPolicy,
    next: Duration,
    attempt: u32,
}

impl<'a> Backoff<'a> {
    fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            next: policy.initial_backoff,
            attempt: 1,
        }
    }

    /// Whether another attempt is allowed.
    fn may_retry(&self) -> bool {
        self.attempt < self.policy.max_attempts
    }

    /// Sleeps before the next attempt.
    async fn wait(&mut self) {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(self.policy.max_backoff);
        self.attempt += 1;
    }
}

/// How to reach a server: credentials and TLS trust.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// A bearer token (`firn token create`), sent with every call.
    pub token: Option<String>,
    /// PEM certificates to trust for an `https://` endpoint, besides the system roots.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .finish()
    }
}

/// Adds the credential and the client's name to every call.
#[derive(Clone, Default)]
pub struct CallMetadata {
    authorization: Option<MetadataValue<Ascii>>,
    client_name: Option<MetadataValue<Ascii>>,
}

impl Interceptor for CallMetadata {
    fn call(
        &mut self,
        mut r: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.authorization {
            r.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.client_name {
            r.metadata_mut().insert("x-firn-client", v.clone());
        }
        Ok(r)
    }
}

/// The generated client over a channel (to one server, or to several replicas with
/// failover) that carries [`CallMetadata`].
pub type RawClient = CatalogServiceClient<InterceptedService<Failover, CallMetadata>>;
/// The generated access-control client, likewise.
pub type RawAccessClient = AccessServiceClient<InterceptedService<Failover, CallMetadata>>;

/// A connection to a Firn server. Cheap to clone (one HTTP/2 channel).
#[derive(Clone)]
pub struct FirnClient {
    channel: Failover,
    metadata: CallMetadata,
    inner: RawClient,
    retry: RetryPolicy,
}

impl std::fmt::Debug for FirnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirnClient")
            .field("client_name", &self.metadata.client_name)
            .finish_non_exhaustive()
    }
}

/// The proto form of a table identifier.
pub fn ident(i: &TableIdent) -> pb::TableIdent {
    pb::TableIdent {
        namespace: i.namespace.clone(),
        name: i.name.clone(),
    }
}

impl FirnClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) with no credential.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        Self::connect_with(endpoint, &ConnectOptions::default()).await
    }

    /// Connects to `endpoint`. An `https://` endpoint is always TLS, verified with the
    /// system roots and `options.ca_cert_pem`; only `http://` is plain text.
    ///
    /// Several replicas of one server may be given, separated by commas
    /// (`http://a:50051,http://b:50051`): calls then fail over between them (see
    /// [`crate::failover`]) and the connections are made when first used; one endpoint is
    /// connected at once, so a wrong one fails here.
    pub async fn connect_with(endpoint: &str, options: &ConnectOptions) -> Result<Self> {
        let endpoints: Vec<&str> = endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                reason: "no endpoint given".into(),
            });
        }
        let mut channels = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            let ep = Self::endpoint(e, options)?;
            channels.push(if endpoints.len() == 1 {
                ep.connect().await.map_err(|source| ClientError::Connect {
                    endpoint: e.to_string(),
                    source,
                })?
            } else {
                ep.connect_lazy()
            });
        }
        let channel = Failover::new(channels);
        let authorization = match &options.token {
            None => None,
            Some(t) => {
                let mut v: MetadataValue<Ascii> =
                    format!("Bearer {}", t.trim()).parse().map_err(|_| {
                        ClientError::InvalidEndpoint {
                            endpoint: endpoint.to_string(),
                            reason: "the token is not printable ASCII".into(),
                        }
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let metadata = CallMetadata {
            authorization,
            client_name: None,
        };
        Ok(Self {
            inner: Self::build(&channel, &metadata),
            channel,
            metadata,
            retry: RetryPolicy::default(),
        })
    }

    /// One endpoint's settings: timeouts, and TLS for `https://`.
    fn endpoint(endpoint: &str, options: &ConnectOptions) -> Result<Endpoint> {
        let err = |source| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(err)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        match ep.uri().scheme_str() {
            Some("https") => {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(pem) = &options.ca_cert_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                ep = ep.tls_config(tls).map_err(err)?;
            }
            Some("http") => {}
            other => {
                return Err(ClientError::InvalidEndpoint {
                    endpoint: endpoint.to_string(),
                    reason: format!("scheme {:?}: use http:// or https://", other.unwrap_or("")),
                });
            }
        }
        Ok(ep)
    }

    fn build(channel: &Failover, metadata: &CallMetadata) -> RawClient {
        CatalogServiceClient::with_interceptor(channel.clone(), metadata.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// Names this client in the server's commit log.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.metadata.client_name = name.into().parse().ok();
        self.inner = Self::build(&self.channel, &self.metadata);
        self
    }

    /// The access-control service (principals, tokens, grants) on the same connection.
    pub fn access(&self) -> RawAccessClient {
        AccessServiceClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&self) -> RawClient {
        self.inner.clone()
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        tonic::Request::new(msg)
    }

    /// Runs an idempotent call, retrying while the server is `UNAVAILABLE` or the
    /// connection was lost mid-call.
    async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut backoff = Backoff::new(&self.retry);
        loop {
            match call().await {
                // CANCELLED here is a connection lost mid-call (the server sends none).
                Err(s)
                    if matches!(s.code(), Code::Unavailable | Code::Cancelled)
                        && backoff.may_retry() =>
                {
                    backoff.wait().await
                }
                other => return other.map_err(ClientError::Status),
            }
        }
    }

    /// Creates a namespace in the server's own warehouse.
    pub async fn create_namespace(&self, name: &str) -> Result<pb::Namespace> {
        self.create_namespace_in(name, "").await
    }

    /// Creates a namespace whose tables live in `warehouse` (empty: the server's own).
    pub async fn create_namespace_in(&self, name: &str, warehouse: &str) -> Result<pb::Namespace> {
        let req = pb::CreateNamespaceRequest {
            name: name.to_string(),
            properties: Default::default(),
            warehouse: warehouse.to_string(),
        };
        Ok(self
            .inner
            .clone()
            .create_namespace(self.request(req))
            .await?
            .into_inner())
    }

    /// Every namespace the caller sees, in every warehouse.
    pub async fn list_namespaces(&self) -> Result<Vec<pb::Namespace>> {
        self.list_namespaces_in("").await
    }

    /// The namespaces of `warehouse` (empty: of every warehouse).
    pub async fn list_namespaces_in(&self, warehouse: &str) -> Result<Vec<pb::Namespace>> {
        let req = pb::ListNamespacesRequest {
            warehouse: warehouse.to_string(),
        };
        let r = self
            .inner
            .clone()
            .list_namespaces(self.request(req))
            .await?;
        Ok(r.into_inner().namespaces)
    }

    /// Records a warehouse after the server checked its store (admin on the catalog).
    pub async fn create_warehouse(
        &self,
        name: &str,
        url: &str,
        options: std::collections::HashMap<String, String>,
    ) -> Result<pb::Warehouse> {
        let req = pb::CreateWarehouseRequest {
            name: name.to_string(),
            url: url.to_string(),
            options,
        };
        Ok(self
            .inner
            .clone()
            .create_warehouse(self.request(req))
            .await?
            .into_inner())
    }

    pub async fn list_warehouses(&self) -> Result<Vec<pb::Warehouse>> {
        let r = self
            .inner
            .clone()
            .list_warehouses(self.request(pb::ListWarehousesRequest {}))
            .await?;
        Ok(r.into_inner().warehouses)
    }

    pub async fn drop_warehouse(&self, name: &str) -> Result<()> {
        let req = pb::DropWarehouseRequest {
            name: name.to_string(),
        };
        self.inner.clone().drop_warehouse(self.request(req)).await?;
        Ok(())
    }

    pub async fn drop_namespace(&self, name: &str) -> Result<()> {
        let req = pb::DropNamespaceRequest {
            name: name.to_string(),
        };
        self.inner.clone().drop_namespace(self.request(req)).await?;
        Ok(())
    }

    pub async fn create_table(&self, req: pb::CreateTableRequest) -> Result<pb::Table> {
        Ok(self
            .inner
            .clone()
            .create_table(self.request(req))
            .await?
            .into_inner())
    }

    /// Loads a table (retried while the server is unavailable: loading is idempotent).
    pub async fn load_table(
        &self,
        table: &TableIdent,
        include_metadata_json: bool,
    ) -> Result<pb::Table> {
        self.idempotent(|| {
            let req = pb::LoadTableRequest {
                ident: Some(ident(table)),
                include_metadata_json,
            };
            let mut inner = self.inner.clone();
            let req = self.request(req);
            async move { inner.load_table(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The storage access the server hands out for `table` (retried while it is unavailable).
    async fn storage_access(
        &self,
        table: &TableIdent,
    ) -> Result<firn_core::storage::access::StorageAccess> {
        let a = self
            .idempotent(|| {
                let req = pb::GetStorageAccessRequest {
                    ident: Some(ident(table)),
                };
                let mut inner = self.inner.clone();
                let req = self.request(req);
                async move { inner.get_storage_access(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(firn_core::storage::access::StorageAccess {
            location: a.location,
            options: a.options.into_iter().collect(),
            expires_at_ms: (a.expires_at_ms > 0).then_some(a.expires_at_ms),
        })
    }

    /// How this client reaches `table`'s files itself: the table's location with the
    /// storage options the server hands out (for S3 its endpoint, region and credentials),
    /// so no storage settings are needed on the client. Temporary credentials in it expire;
    /// [`FirnClient::storage`] renews them.
    pub async fn storage_config(&self, table: &TableIdent) -> Result<firn_core::WarehouseConfig> {
        Ok(self.storage_access(table).await?.warehouse_config())
    }

    /// `table`'s files, reached with the storage access the server hands out: temporary
    /// credentials are renewed through the server before they expire, so a long load or
    /// scan outlasts them (see [`crate::storage`]).
    pub async fn storage(&self, table: &TableIdent) -> Result<Arc<firn_core::Warehouse>> {
        let access = self.storage_access(table).await?;
        let (client, table) = (self.clone(), table.clone());
        let renew: crate::storage::Fetch = Arc::new(move || {
            let (client, table) = (client.clone(), table.clone());
            Box::pin(async move { client.storage_access(&table).await })
        });
        crate::storage::open(access, renew, Arc::new(firn_core::SystemClock))
    }

    pub async fn list_tables(&self, namespace: &str) -> Result<Vec<TableIdent>> {
        let req = pb::ListTablesRequest {
            namespace: namespace.to_string(),
        };
        let r = self
            .inner
            .clone()
            .list_tables(self.request(req))
            .await?
            .into_inner();
        Ok(r.tables
            .into_iter()
            .map(|t| TableIdent::new(t.namespace, t.name))
            .collect())
    }

    pub async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        let req = pb::DropTableRequest {
            ident: Some(ident(table)),
        };
        self.inner.clone().drop_table(self.request(req)).await?;
        Ok(())
    }

    pub async fn rename_table(&self, from: &TableIdent, to: &TableIdent) -> Result<pb::Table> {
        let req = pb::RenameTableRequest {
            from: Some(ident(from)),
            to: Some(ident(to)),
        };
        Ok(self
            .inner
            .clone()
            .rename_table(self.request(req))
            .await?
            .into_inner())
    }

    /// Sends one commit request, once.
    pub async fn commit_once(&self, req: pb::CommitRequest) -> Result<pb::CommitResponse> {
        Ok(self
            .inner
            .clone()
            .commit(self.request(req))
            .await?
            .into_inner())
    }

    /// Commits with retries under the same commit id. `UNAVAILABLE`, `INTERNAL` and
    /// `CANCELLED` (a connection lost mid-call; outcome unknown) are retried as they are:
    /// the server returns the first result if the commit had landed. `ABORTED` (conflict)
    /// is retried after `rebase` has updated the request's base snapshot — return `false`
    /// from it to give up instead.
    pub async fn commit<F, Fut>(
        &self,
        mut req: pb::CommitRequest,
        mut rebase: F,
    ) -> Result<pb::CommitResponse>
    where
        F: FnMut(pb::CommitRequest) -> Fut,
        Fut: std::future::Future<Output = Result<Option<pb::CommitRequest>>>,
    {
        if req.commit_id.is_empty() {
            req.commit_id = uuid::Uuid::now_v7().to_string();
        }
        let mut backoff = Backoff::new(&self.retry);
        loop {
            match self.commit_once(req.clone()).await {
                Ok(r) => return Ok(r),
                Err(ClientError::Status(s)) if backoff.may_retry() => match s.code() {
                    // The outcome is unknown (CANCELLED: the connection died mid-call, as
                    // when a replica is killed): the same commit id answers it.
                    Code::Unavailable
                    | Code::Internal
                    | Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Cancelled => {}
                    Code::Aborted => match rebase(req.clone()).await? {
                        Some(r) => req = r,
                        None => return Err(ClientError::Status(s)),
                    },
                    _ => return Err(ClientError::Status(s)),
                },
                Err(e) => return Err(e),
            }
            backoff.wait().await;
        }
    }

    /// Every snapshot of a table, oldest first (follows the pages).
    pub async fn list_snapshots(&self, table: &TableIdent) -> Result<Vec<pb::Snapshot>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListSnapshotsRequest {
                ident: Some(ident(table)),
                page_size: 1000,
                page_token: token,
            };
            let page = self
                .idempotent(|| {
                    let mut inner = self.inner.clone();
                    let req = self.request(req.clone());
                    async move { inner.list_snapshots(req).await.map(|r| r.into_inner()) }
                })
                .await?;
            out.extend(page.snapshots);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    pub async fn get_snapshot(&self, table: &TableIdent, snapshot_id: i64) -> Result<pb::Snapshot> {
        let req = pb::GetSnapshotRequest {
            ident: Some(ident(table)),
            snapshot_id,
        };
        Ok(self
            .inner
            .clone()
            .get_snapshot(self.request(req))
            .await?
            .into_inner())
    }

    /// Which snapshot `at` names (unset: the current one), with its schema.
    pub async fn resolve_snapshot(
        &self,
        table: &TableIdent,
        at: Option<pb::SnapshotSelector>,
    ) -> Result<pb::ResolvedSnapshot> {
        self.idempotent(|| {
            let req = self.request(pb::ResolveSnapshotRequest {
                ident: Some(ident(table)),
                at: at.clone(),
            });
            let mut inner = self.inner.clone();
            async move { inner.resolve_snapshot(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The files a scan of the selected snapshot reads, pruned by `filter`.
    pub async fn plan_scan(
        &self,
        table: &TableIdent,
        at: Option<pb::SnapshotSelector>,
        filter: Option<pb::Filter>,
    ) -> Result<pb::PlanScanResponse> {
        self.idempotent(|| {
            let req = self.request(pb::PlanScanRequest {
                ident: Some(ident(table)),
                at: at.clone(),
                filter: filter.clone(),
            });
            let mut inner = self.inner.clone();
            async move { inner.plan_scan(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The table's commit log, newest first (at most `limit`, 0: 100).
    pub async fn list_commits(
        &self,
        table: &TableIdent,
        limit: u32,
    ) -> Result<Vec<pb::CommitRecord>> {
        self.idempotent(|| {
            let req = self.request(pb::ListCommitsRequest {
                ident: Some(ident(table)),
                limit,
            });
            let mut inner = self.inner.clone();
            async move {
                inner
                    .list_commits(req)
                    .await
                    .map(|r| r.into_inner().commits)
            }
        })
        .await
    }

    pub async fn list_refs(&self, table: &TableIdent) -> Result<Vec<pb::Ref>> {
        self.idempotent(|| {
            let req = self.request(pb::ListRefsRequest {
                ident: Some(ident(table)),
            });
            let mut inner = self.inner.clone();
            async move { inner.list_refs(req).await.map(|r| r.into_inner().refs) }
        })
        .await
    }

    /// Rollback, set-current, tags and branches (sent once: read the refs again if the
    /// outcome is unknown).
    pub async fn manage_snapshots(
        &self,
        table: &TableIdent,
        action: pb::manage_snapshots_request::Action,
    ) -> Result<pb::ManageSnapshotsResponse> {
        let req = pb::ManageSnapshotsRequest {
            ident: Some(ident(table)),
            action: Some(action),
        };
        Ok(self
            .inner
            .clone()
            .manage_snapshots(self.request(req))
            .await?
            .into_inner())
    }

    /// Expires old snapshots and deletes the files only they needed (see the proto). Safe
    /// to send again: expiry is idempotent and a run killed midway is finished by the next.
    pub async fn expire_snapshots(
        &self,
        req: pb::ExpireSnapshotsRequest,
    ) -> Result<pb::ExpireSnapshotsResponse> {
        Ok(self
            .inner
            .clone()
            .expire_snapshots(self.request(req))
            .await?
            .into_inner())
    }

    /// Fresh data file paths, one per partition directory ("" when unpartitioned),
    /// recorded by the server so files never committed can be cleaned up.
    pub async fn reserve_data_files(
        &self,
        table: &TableIdent,
        partition_paths: Vec<String>,
    ) -> Result<Vec<String>> {
        self.idempotent(|| {
            let req = self.request(pb::ReserveDataFilesRequest {
                ident: Some(ident(table)),
                partition_paths: partition_paths.clone(),
            });
            let mut inner = self.inner.clone();
            async move {
                inner
                    .reserve_data_files(req)
                    .await
                    .map(|r| r.into_inner().paths)
            }
        })
        .await
    }

    /// Rewrites small files into larger ones (see the proto). Sent once: on an unknown
    /// outcome, list the snapshots before running it again.
    pub async fn compact(&self, req: pb::CompactRequest) -> Result<pb::CompactResponse> {
        Ok(self
            .inner
            .clone()
            .compact(self.request(req))
            .await?
            .into_inner())
    }

    /// Removes files no commit made (see the proto).
    pub async fn remove_orphan_files(
        &self,
        req: pb::RemoveOrphanFilesRequest,
    ) -> Result<pb::RemoveOrphanFilesResponse> {
        Ok(self
            .inner
            .clone()
            .remove_orphan_files(self.request(req))
            .await?
            .into_inner())
    }
}
