//! The warehouse: one storage stack on `object_store`, used by Firn and by iceberg-rust.
//!
//! Contract: nothing here lists a directory or bucket. Table contents are decided by
//! committed metadata only; files are looked up by exact path (`head`, `get`).
//!
//! Write-behind (local disk): the committer *stages* a commit's manifests and manifest list
//! here instead of creating their files on the commit path; their bytes are durable in the
//! catalog's `pending_objects` by then. Reads through this warehouse see staged objects;
//! [`Warehouse::expose`] writes them (each atomically) so that anyone can read them, and
//! [`Warehouse::publish`] also makes them durable (fsynced) and says which are, so that their
//! catalog copies may go. Whoever hands a path to a reader outside this process exposes it
//! first; only the materializer waits for the disk.
//!
//! Supported URLs: `file:///abs/dir` (default), `memory:///` (tests), and
//! `s3://bucket/prefix` (endpoint, region, path-style and credentials from the standard
//! `AWS_*` environment variables or explicit options).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ObjectKind, Result};

pub mod access;
mod check;
#[cfg(any(test, feature = "fault"))]
pub mod fault;
mod fileio;
pub mod manifests;
pub(crate) mod objects;
pub mod path;
pub mod registry;
pub mod sign;
pub mod sts;

pub use fileio::{FirnStorage, FirnStorageFactory, WAREHOUSE_PROP};
pub use path::{Location, ObjectPath, Owned, Root, TableScope};
pub use registry::Warehouses;

/// Options of a warehouse: its root URL and backend options (S3: `endpoint`, `region`,
/// `allow_http`, `virtual_hosted_style_request`, `access_key_id`, `secret_access_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseConfig {
    pub url: String,
    #[serde(default)]
    pub options: HashMap<String, String>,
}

impl WarehouseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            options: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
enum Backend {
    /// A local file system; paths map to files below `/`.
    Local,
    Memory,
    S3,
}

/// Staged objects by store path: (URI, bytes), and their total size.
#[derive(Debug, Default)]
struct Staged {
    objects: HashMap<String, (String, Bytes)>,
    bytes: u64,
}

impl Staged {
    fn insert(&mut self, path: String, object: (String, Bytes)) {
        self.bytes += object.1.len() as u64;
        if let Some(old) = self.objects.insert(path, object) {
            self.bytes -= old.1.len() as u64;
        }
    }

    fn remove(&mut self, path: &str) -> Option<(String, Bytes)> {
        let old = self.objects.remove(path)?;
        self.bytes -= old.1.len() as u64;
        Some(old)
    }
}

/// What [`Warehouse::publish`] did.
#[derive(Debug, Default)]
pub struct Published {
    /// URIs now durable in the store (their catalog copies may go): those named and those
    /// exposed before.
    pub written: Vec<String>,
    /// Why some objects are still staged.
    pub error: Option<Error>,
}

/// An object store rooted at a warehouse URL, addressed by checked [`ObjectPath`]s.
#[derive(Debug)]
pub struct Warehouse {
    config: WarehouseConfig,
    root: Root,
    root_url: String,
    /// Local disk: the root directory with every symbolic link resolved.
    local_root: Option<PathBuf>,
    backend: Backend,
    store: Arc<dyn ObjectStore>,
    /// What a client needs to reach this store itself (see [`access`]).
    client_options: std::collections::BTreeMap<String, String>,
    /// With `sts_role_arn`: table-scoped temporary credentials for clients (see [`sts`]).
    sts: Option<sts::Sts>,
    /// S3: signs clients' requests with the server's credentials (see [`sign`]).
    signer: Option<sign::S3Signer>,
    /// Local files may be written directly (the store was not replaced by a wrapper).
    direct_local: bool,
    /// New objects are written with put-if-absent (S3 and memory, unless
    /// [`Warehouse::check`] found the store without it).
    conditional_create: std::sync::atomic::AtomicBool,
    /// Objects staged and not yet published.
    staged: Mutex<Staged>,
    /// Staged objects deleted before they were published: their catalog copies may go.
    released: Mutex<Vec<String>>,
    /// Objects [`Warehouse::expose`] wrote that are not yet known durable.
    exposed: Mutex<HashMap<String, ObjectPath>>,
    /// One publisher at a time. Deleting a staged object takes it too, so a delete never
    /// overtakes the write of the same object (which would leave the file behind).
    publishing: tokio::sync::Mutex<()>,
}

/// The operator's warehouse URL with a local directory created and resolved (`..` and
/// links in the configured root are the operator's, so they are resolved, not refused).
fn local_root_url(url: &str) -> Result<String> {
    let Some(rest) = url
        .strip_prefix("file://")
        .or_else(|| url.strip_prefix("file:"))
    else {
        return Ok(url.to_string());
    };
    let dir = std::path::PathBuf::from(rest);
    if !dir.is_absolute() {
        return Ok(url.to_string());
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::invalid("warehouse", format!("cannot create {}: {e}", dir.display()))
    })?;
    let real = std::fs::canonicalize(&dir).map_err(|e| {
        Error::invalid(
            "warehouse",
            format!("cannot resolve {}: {e}", dir.display()),
        )
    })?;
    Ok(format!("file://{}", real.display()))
}

fn path_error(field: &str) -> impl Fn(path::PathError) -> Error + '_ {
    move |e| Error::invalid(field, e.0)
}

impl Warehouse {
    /// Opens the warehouse a config names. Local directories are created.
    pub fn open(config: WarehouseConfig) -> Result<Self> {
        Self::open_with_credentials(config, None)
    }

    /// [`Warehouse::open`], where S3 requests are signed with what `credentials` returns
    /// rather than with keys in the options: a client whose temporary credentials come from
    /// the server renews them through it. Ignored by the other backends.
    pub fn open_with_credentials(
        config: WarehouseConfig,
        credentials: Option<object_store::aws::AwsCredentialProvider>,
    ) -> Result<Self> {
        let root = Root::parse(&local_root_url(&config.url)?).map_err(path_error("warehouse"))?;
        let root_url = root.url();
        let mut local_root = None;
        let mut client_options = std::collections::BTreeMap::new();
        let mut sts_client = None;
        let mut signer = None;
        let (backend, store): (Backend, Arc<dyn ObjectStore>) = match root.scheme() {
            "file" => {
                let dir = Url::parse(&root_url)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| {
                        Error::invalid("warehouse", format!("{root_url} is not a local path"))
                    })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::invalid("warehouse", format!("cannot create {}: {e}", dir.display()))
                })?;
                local_root = Some(std::fs::canonicalize(&dir).map_err(|e| {
                    Error::invalid(
                        "warehouse",
                        format!("cannot resolve {}: {e}", dir.display()),
                    )
                })?);
                (
                    Backend::Local,
                    Arc::new(object_store::local::LocalFileSystem::new()),
                )
            }
            "memory" => (
                Backend::Memory,
                Arc::new(object_store::memory::InMemory::new()),
            ),
            "s3" => {
                let bucket = Some(root.authority())
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| {
                        Error::invalid("warehouse", format!("{root_url} names no bucket"))
                    })?
                    .to_string();
                // Throttling (503 SlowDown), 500s and dropped connections are retried with
                // jittered exponential backoff inside a bounded budget: a commit waits at
                // most about half a minute for a struggling store, then fails `Unavailable`.
                let retry = object_store::RetryConfig {
                    max_retries: 6,
                    retry_timeout: std::time::Duration::from_secs(30),
                    ..Default::default()
                };
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry);
                if let Some(c) = credentials {
                    b = b.with_credentials(c);
                }
                // Firn's own STS options; the rest are object_store's.
                let (sts_options, store_options): (
                    std::collections::BTreeMap<_, _>,
                    std::collections::BTreeMap<_, _>,
                ) = config
                    .options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .partition(|(k, _)| sts::OPTIONS.contains(&k.as_str()));
                for (k, v) in &store_options {
                    let key = k
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .map_err(|e| Error::invalid("warehouse option", format!("{k}: {e}")))?;
                    b = b.with_config(key, v);
                }
                client_options = access::s3_client_options(&b);
                check::validate_s3(&client_options)?;
                sts_client = sts::Sts::from_options(&sts_options, &client_options)?;
                let store = b
                    .build()
                    .map_err(|e| Error::invalid("warehouse", format!("S3 configuration: {e}")))?;
                signer = Some(sign::S3Signer::new(
                    &bucket,
                    &client_options,
                    store.credentials().clone(),
                )?);
                (Backend::S3, Arc::new(store))
            }
            other => {
                return Err(Error::invalid(
                    "warehouse",
                    format!("unsupported scheme {other:?}; use file://, s3:// or memory://"),
                ));
            }
        };
        Ok(Self {
            direct_local: matches!(backend, Backend::Local),
            conditional_create: (!matches!(backend, Backend::Local)).into(),
            config,
            root,
            root_url,
            local_root,
            backend,
            store,
            client_options,
            sts: sts_client,
            signer,
            staged: Mutex::default(),
            released: Mutex::default(),
            exposed: Mutex::default(),
            publishing: tokio::sync::Mutex::new(()),
        })
    }

    /// What a client needs to reach `location` (a table's) in this warehouse itself, with
    /// the server's own credentials. Where the store is, for any caller; the credentials
    /// only for one that may read the table (see [`Warehouse::credentials_for`]).
    pub fn client_access(&self, location: &str) -> access::StorageAccess {
        access::StorageAccess {
            location: location.to_string(),
            options: self.client_options.clone(),
            expires_at_ms: None,
        }
    }

    /// [`Warehouse::client_access`] with the credentials a client gets: with STS
    /// configured, temporary ones scoped to `location` (read-only unless `read_only` is
    /// false); else the server's own keys.
    pub async fn credentials_for(
        &self,
        location: &str,
        read_only: bool,
        now_ms: i64,
    ) -> Result<access::StorageAccess> {
        let mut a = self.client_access(location);
        if let Some(sts) = &self.sts {
            let t = sts.credentials(location, read_only, now_ms).await?;
            a.options
                .insert("aws_access_key_id".into(), t.access_key_id);
            a.options
                .insert("aws_secret_access_key".into(), t.secret_access_key);
            a.options
                .insert("aws_session_token".into(), t.session_token);
            a.expires_at_ms = Some(t.expires_at_ms);
        }
        Ok(a)
    }

    /// Parses a request a client wants signed and applies the signer's policy (see
    /// [`sign`]); the caller checks the object and the access against the table.
    /// `FailedPrecondition` where the warehouse is not on S3 (there is nothing to sign).
    pub fn sign_plan(&self, request: &sign::SignRequest) -> Result<sign::SignPlan> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "the warehouse {} is not on S3: remote signing is for S3 requests",
                self.root_url
            ))
        })?;
        signer.plan(&self.root, request)
    }

    /// Signs a request [`Warehouse::sign_plan`] accepted.
    pub async fn sign(&self, plan: sign::SignPlan) -> Result<sign::SignedRequest> {
        match &self.signer {
            Some(s) => s.sign(plan).await,
            None => Err(Error::internal("a sign plan for a warehouse not on S3")),
        }
    }

    /// Wraps `store` (e.g. a fault-injecting one) in place of the store `config` would open.
    pub fn with_store(config: WarehouseConfig, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let mut w = Self::open(config)?;
        w.store = store;
        w.direct_local = false;
        Ok(w)
    }

    pub fn config(&self) -> &WarehouseConfig {
        &self.config
    }

    /// The root URL, ending in `/`.
    pub fn root(&self) -> &str {
        &self.root_url
    }

    /// The parsed root.
    pub fn root_path(&self) -> &Root {
        &self.root
    }

    /// Whether `uri` names something strictly below this warehouse's root.
    pub fn holds(&self, uri: &str) -> bool {
        self.root.holds(uri)
    }

    /// The checked path of an object below this warehouse's root; `field` names what the
    /// URI is, for the error.
    pub fn object_in(&self, field: &str, uri: &str) -> Result<ObjectPath> {
        self.root.object(uri).map_err(path_error(field))
    }

    /// [`Warehouse::object_in`] for a URI that is just a "path".
    pub fn object(&self, uri: &str) -> Result<ObjectPath> {
        self.object_in("path", uri)
    }

    /// The checked path of a directory (a table location) below this warehouse's root.
    pub fn location(&self, field: &str, uri: &str) -> Result<Location> {
        self.root.location(uri).map_err(path_error(field))
    }

    /// The object a key listed from this warehouse's store names.
    pub fn object_of_key(&self, key: &StorePath) -> Result<ObjectPath> {
        self.root
            .object_of_key(key)
            .map_err(path_error("listed key"))
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether objects written here must be fsynced before they are durable.
    pub fn needs_sync(&self) -> bool {
        matches!(self.backend, Backend::Local)
    }

    /// The local file of an object (local warehouses only): its key as written, below `/`.
    fn local_file(&self, p: &ObjectPath) -> Option<PathBuf> {
        match self.backend {
            Backend::Local => Some(self.local_path(p)),
            _ => None,
        }
    }

    /// The file an object of a local warehouse is (only meaningful on local disk, where
    /// keys are absolute paths).
    fn local_path(&self, p: &ObjectPath) -> PathBuf {
        PathBuf::from(format!("/{}", p.key()))
    }

    /// Local disk: refuses an object reached through a symbolic link (no link below the
    /// root is followed, so nothing outside the directory a path names is ever read,
    /// written or deleted). `exists` says whether the object itself must be there; if not,
    /// its nearest existing ancestor is checked.
    async fn confine(&self, p: &ObjectPath) -> Result<()> {
        let (Some(root), Some(file)) = (&self.local_root, self.local_file(p)) else {
            return Ok(());
        };
        let rel: PathBuf = p.parts().skip(self.root_depth()).collect();
        resolves_to(p, &file, &root.join(&rel))
    }

    /// [`Warehouse::confine`] for objects replaced or removed whole: written through a
    /// temporary file renamed over them, or unlinked. Neither follows a link at the object
    /// itself, so only its directory must resolve inside the root, and each directory is
    /// resolved once however many objects it holds. The result for each object, in order.
    fn confine_dirs<'a>(&self, paths: impl IntoIterator<Item = &'a ObjectPath>) -> Vec<Result<()>> {
        let mut inside: HashSet<PathBuf> = HashSet::new();
        let mut out = Vec::new();
        for p in paths {
            let (Some(root), Some(file)) = (&self.local_root, self.local_file(p)) else {
                out.push(Ok(()));
                continue;
            };
            let rel: PathBuf = p.parts().skip(self.root_depth()).collect();
            let (Some(dir), Some(want)) = (file.parent(), rel.parent()) else {
                out.push(resolves_to(p, &file, &root.join(&rel)));
                continue;
            };
            if inside.contains(dir) {
                out.push(Ok(()));
                continue;
            }
            let r = resolves_to(p, dir, &root.join(want));
            if r.is_ok() {
                inside.insert(dir.to_path_buf());
            }
            out.push(r);
        }
        out
    }

    fn root_depth(&self) -> usize {
        self.root.prefix_len()
    }

    /// Stages new objects (write-behind): readers of this warehouse see them at once; they
    /// reach the store when published. The caller keeps their bytes durable elsewhere (the
    /// catalog) until then.
    pub fn stage(&self, objects: &[(ObjectPath, Bytes)]) {
        let mut staged = self.staged.lock().expect("poisoned");
        for (p, b) in objects {
            staged.insert(p.key().to_string(), (p.uri().to_string(), b.clone()));
        }
    }

    fn staged_object(&self, path: &ObjectPath) -> Option<Bytes> {
        let staged = self.staged.lock().expect("poisoned");
        staged
            .objects
            .get(path.key().as_ref())
            .map(|(_, b)| b.clone())
    }

    /// Bytes staged and not yet published.
    pub fn staged_size(&self) -> u64 {
        self.staged.lock().expect("poisoned").bytes
    }

    /// URIs of all staged objects.
    pub fn staged_all(&self) -> Vec<String> {
        let staged = self.staged.lock().expect("poisoned");
        staged
            .objects
            .values()
            .map(|(uri, _)| uri.clone())
            .collect()
    }

    /// URIs of the staged objects below `dir` (a table's location).
    pub fn staged_under(&self, dir: &Location) -> Vec<String> {
        let prefix = dir.key().to_string();
        let staged = self.staged.lock().expect("poisoned");
        staged
            .objects
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|(_, (uri, _))| uri.clone())
            .collect()
    }

    /// Whether `uri` is staged (not yet in the store).
    pub fn is_staged(&self, uri: &str) -> bool {
        self.root.object(uri).is_ok_and(|p| {
            self.staged
                .lock()
                .expect("poisoned")
                .objects
                .contains_key(p.key().as_ref())
        })
    }

    /// Writes the named staged objects to the store, each atomically (a reader sees all of
    /// one or none of it), and unstages them, without waiting for them to be durable: they
    /// are readable at once, by anyone, and made durable by the next
    /// [`Warehouse::publish`]; until it reports them, their catalog copies must stay (a
    /// crash may lose what is not durable, and start-up recovery rewrites it from them).
    /// Names not staged are skipped. Objects written are unstaged even when others fail
    /// (those stay staged, for a later call).
    pub async fn expose(&self, uris: &[String]) -> Result<()> {
        let _one = self.publishing.lock().await;
        let todo: Vec<(ObjectPath, Bytes)> = {
            let staged = self.staged.lock().expect("poisoned");
            let mut seen = std::collections::HashSet::new();
            uris.iter()
                .filter_map(|u| self.root.object(u).ok())
                .filter(|p| seen.insert(p.key().to_string()))
                .filter_map(|p| {
                    let (_, b) = staged.objects.get(p.key().as_ref())?.clone();
                    Some((p, b))
                })
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        // One object that may not be written (below a planted link) holds back no other.
        let mut error = None;
        let checks = self.confine_dirs(todo.iter().map(|(p, _)| p));
        let todo: Vec<(ObjectPath, Bytes)> = todo
            .into_iter()
            .zip(checks)
            .filter_map(|(o, r)| match r {
                Ok(()) => Some(o),
                Err(e) => {
                    error = Some(e);
                    None
                }
            })
            .collect();
        let mut done: Vec<&ObjectPath> = Vec::new();
        if self.direct_local {
            // One file per object, in order: the runs below are counted off `todo`.
            let files: Vec<_> = todo
                .iter()
                .map(|(p, b)| (self.local_path(p), b.clone()))
                .collect();
            let parts = on_local_threads(files, write_local).await;
            let mut rest = &todo[..];
            for (n, r) in parts {
                let (part, after) = rest.split_at(n);
                rest = after;
                match r {
                    Ok(Ok(())) => done.extend(part.iter().map(|(p, _)| p)),
                    Ok(Err(e)) => error = Some(Error::storage(e)),
                    Err(e) => error = Some(e),
                }
            }
        } else {
            let puts = todo.iter().map(|(p, b)| async move {
                let r = self.store.put(p.key(), PutPayload::from(b.clone())).await;
                (p, r)
            });
            for (p, r) in futures::future::join_all(puts).await {
                match r {
                    Ok(_) => done.push(p),
                    Err(e) => error = Some(Error::storage(e)),
                }
            }
        }
        // Still staged: only a publisher or a delete (which waits for this one) unstages.
        let mut staged = self.staged.lock().expect("poisoned");
        let mut exposed = self.exposed.lock().expect("poisoned");
        for p in done {
            staged.remove(p.key().as_ref());
            exposed.insert(p.key().to_string(), p.clone());
        }
        error.map_or(Ok(()), Err)
    }

    /// Writes the named staged objects as [`Warehouse::expose`] does, then makes them and
    /// every object exposed before durable: what it reports written may lose its catalog
    /// copy. Objects exposed and deleted since count as durable (nothing is left to lose).
    pub async fn publish(&self, uris: &[String]) -> Published {
        let mut out = Published {
            written: Vec::new(),
            error: self.expose(uris).await.err(),
        };
        // They stay exposed until synced: meanwhile they are still this process's to make
        // durable (a reader must not take them for another replica's, nor a crash lose them).
        let exposed: Vec<ObjectPath> = self
            .exposed
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        if exposed.is_empty() {
            return out;
        }
        match self.sync(&exposed).await {
            Ok(()) => {
                let mut left = self.exposed.lock().expect("poisoned");
                for p in &exposed {
                    left.remove(p.key().as_ref());
                }
                out.written = exposed.iter().map(|p| p.uri().to_string()).collect();
            }
            Err(e) => out.error = Some(e),
        }
        out
    }

    /// Whether objects written by [`Warehouse::expose`] wait to be made durable.
    pub fn has_exposed(&self) -> bool {
        !self.exposed.lock().expect("poisoned").is_empty()
    }

    /// Whether this process holds `uri` and has not yet made it durable: staged, or
    /// written by [`Warehouse::expose`] and not yet synced.
    pub fn is_unsynced(&self, uri: &str) -> bool {
        self.root.object(uri).is_ok_and(|p| {
            let key = p.key().as_ref();
            self.staged
                .lock()
                .expect("poisoned")
                .objects
                .contains_key(key)
                || self.exposed.lock().expect("poisoned").contains_key(key)
        })
    }

    /// Paths of staged objects deleted before they were published, since the last call.
    pub fn take_released(&self) -> Vec<String> {
        std::mem::take(&mut *self.released.lock().expect("poisoned"))
    }

    /// Whether the store answers: a HEAD of an object below the root that need not exist
    /// (not found is an answer; any other error is `Unavailable`).
    pub async fn probe(&self) -> Result<()> {
        let path = self.object(&format!("{}.firn-ready-probe", self.root_url))?;
        match timed("head", self.store.head(path.key())).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(e)),
        }
    }

    /// The size of the object at `path` (one HEAD, never a LIST).
    pub async fn head(&self, path: &ObjectPath) -> Result<u64> {
        if let Some(b) = self.staged_object(path) {
            return Ok(b.len() as u64);
        }
        self.confine(path).await?;
        match timed("head", self.store.head(path.key())).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found(ObjectKind::File, path.uri()))
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    /// The size of the object at `path` and its last `max` bytes (all of it when smaller),
    /// in one request: a suffix range read tells the size too, so no HEAD is needed.
    pub async fn tail(&self, path: &ObjectPath, max: u64) -> Result<(u64, Bytes)> {
        if let Some(b) = self.staged_object(path) {
            let len = b.len() as u64;
            return Ok((len, b.slice(len.saturating_sub(max) as usize..)));
        }
        self.confine(path).await?;
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Suffix(max)),
            ..Default::default()
        };
        match timed("get", self.store.get_opts(path.key(), opts)).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok((size, r.bytes().await.map_err(Error::storage)?))
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found(ObjectKind::File, path.uri()))
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    pub async fn get(&self, path: &ObjectPath) -> Result<Bytes> {
        if let Some(b) = self.staged_object(path) {
            return Ok(b);
        }
        self.confine(path).await?;
        match timed("get", self.store.get(path.key())).await {
            Ok(r) => r.bytes().await.map_err(Error::storage),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found(ObjectKind::File, path.uri()))
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    pub async fn get_range(&self, path: &ObjectPath, range: Range<u64>) -> Result<Bytes> {
        if let Some(b) = self.staged_object(path) {
            let len = b.len() as u64;
            if range.start > range.end || range.end > len {
                return Err(Error::invalid(
                    "range",
                    format!("{range:?} is outside {path} ({len} bytes)"),
                ));
            }
            return Ok(b.slice(range.start as usize..range.end as usize));
        }
        self.confine(path).await?;
        timed("get", self.store.get_range(path.key(), range))
            .await
            .map_err(Error::storage)
    }

    /// A Parquet reader of the object at `path` (its size known from a HEAD).
    pub async fn parquet_reader(
        &self,
        path: &ObjectPath,
        size: u64,
    ) -> Result<parquet::arrow::async_reader::ParquetObjectReader> {
        self.confine(path).await?;
        Ok(parquet::arrow::async_reader::ParquetObjectReader::new(
            self.store.clone(),
            path.key().clone(),
        )
        .with_file_size(size))
    }

    /// Lists the objects below `dir` (orphan sweeps only: nothing that decides what a
    /// table contains lists).
    pub async fn list(&self, dir: &Location) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        timed("list", self.store.list(Some(&dir.key())).try_collect())
            .await
            .map_err(Error::storage)
    }

    /// Writes an object (atomically: readers see all of it or nothing). Not yet durable on
    /// local disk: see [`Warehouse::sync`].
    ///
    /// Every object Firn writes has a fresh name, and on object stores it is written with
    /// put-if-absent, so nothing is ever overwritten, even by a retry: an object already
    /// there with the same bytes is an earlier attempt of this write that landed (done);
    /// with other bytes it is refused as `Invalid`. Local disk overwrites, so that recovery
    /// can replace a file a crash left torn (files appear whole, by rename).
    pub async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        self.confine(path).await?;
        self.put_payload(path, PutPayload::from(bytes)).await
    }

    /// [`Warehouse::put`] of a confined path.
    async fn put_payload(&self, path: &ObjectPath, payload: PutPayload) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.conditional_create.load(Ordering::Relaxed) {
            return timed("put", self.store.put(path.key(), payload))
                .await
                .map(|_| ())
                .map_err(Error::storage);
        }
        let create = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match timed(
            "put",
            self.store.put_opts(path.key(), payload.clone(), create),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = self.store.get(path.key()).await.map_err(Error::storage)?;
                let there = there.bytes().await.map_err(Error::storage)?;
                let same = there.len() == payload.content_length()
                    && payload.iter().flatten().eq(there.iter());
                if same {
                    Ok(())
                } else {
                    Err(Error::invalid(
                        "path",
                        format!(
                            "{} already exists with other contents; Firn never overwrites an \
                             object",
                            path.uri()
                        ),
                    ))
                }
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    fn set_conditional_create(&self, on: bool) {
        self.conditional_create
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes an object and makes it durable before returning.
    pub async fn put_durable(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        self.put(path, bytes).await?;
        self.sync(std::slice::from_ref(path)).await
    }

    /// Writes new objects that nothing references yet (fresh, unique names), concurrently.
    /// For stores where a PUT is durable; local warehouses [`stage`](Warehouse::stage) new
    /// objects instead.
    pub async fn put_new(&self, objects: &[(ObjectPath, Bytes)]) -> Result<()> {
        let puts = objects.iter().map(|(p, b)| self.put(p, b.clone()));
        futures::future::try_join_all(puts).await?;
        Ok(())
    }

    /// Deletes an object a table owns (staged or not); a missing object is not an error.
    pub async fn delete(&self, owned: &Owned) -> Result<()> {
        let path = owned.path();
        self.unstage(path).await;
        self.confine(path).await?;
        match timed("delete", self.store.delete(path.key())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(e)),
        }
    }

    /// Deletes objects tables own (staged or not), in as few requests as the store allows
    /// (S3: DeleteObjects, a thousand keys a request): the result for each, in order. A
    /// missing object is not an error.
    pub async fn delete_many(&self, owned: &[Owned]) -> Vec<Result<()>> {
        use futures::StreamExt;
        // `None`: passed the checks, to be deleted below.
        let mut out: Vec<Option<Result<()>>> = Vec::with_capacity(owned.len());
        for o in owned {
            self.unstage(o.path()).await;
        }
        for r in self.confine_dirs(owned.iter().map(Owned::path)) {
            out.push(r.err().map(Err));
        }
        let todo = || {
            owned
                .iter()
                .zip(&out)
                .filter(|(_, r)| r.is_none())
                .map(|(o, _)| o.path())
        };
        let started = std::time::Instant::now();
        if self.direct_local {
            let files: Vec<PathBuf> = todo().map(|p| self.local_path(p)).collect();
            let mut unlinked = Vec::with_capacity(files.len());
            for (n, r) in on_local_threads(files, unlink_all).await {
                match r {
                    Ok(r) => unlinked.extend(r),
                    Err(e) => {
                        let e = e.to_string();
                        unlinked.extend((0..n).map(|_| Err(std::io::Error::other(e.clone()))));
                    }
                }
            }
            let failed = unlinked.iter().find_map(|r| r.as_ref().err());
            record_delete(started, failed);
            let mut unlinked = unlinked.into_iter();
            return out
                .into_iter()
                .map(|r| match r {
                    Some(r) => r,
                    None => match unlinked.next() {
                        Some(r) => r.map_err(Error::storage),
                        None => Err(Error::internal("an unlink went unreported")),
                    },
                })
                .collect();
        }
        let keys: Vec<StorePath> = todo().map(|p| p.key().clone()).collect();
        let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.store.delete_stream(stream).collect().await;
        let deleted: std::collections::HashSet<StorePath> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        record_delete(started, results.iter().find_map(|r| r.as_ref().err()));
        // An error does not always say which key it is about (a whole request can fail):
        // what the store did not confirm is deleted again alone, which also tells a missing
        // object (not an error) from a failure.
        let mut results = Vec::with_capacity(owned.len());
        for (o, r) in owned.iter().zip(out) {
            results.push(match r {
                Some(r) => r,
                None if deleted.contains(o.path().key()) => Ok(()),
                None => self.delete(o).await,
            });
        }
        results
    }

    /// Takes an object out of the staged ones (it is being deleted).
    async fn unstage(&self, path: &ObjectPath) {
        if self.staged_object(path).is_some() {
            // Not while it is being written: then it is a file, deleted after this.
            let _one = self.publishing.lock().await;
            let removed = self
                .staged
                .lock()
                .expect("poisoned")
                .remove(path.key().as_ref());
            if let Some((uri, _)) = removed {
                self.released.lock().expect("poisoned").push(uri);
            }
        }
    }

    /// Makes the named objects durable: on local disk fsyncs each file (on many threads)
    /// and then their directories; elsewhere a successful PUT is durable already and this
    /// does nothing. An object deleted meanwhile needs nothing.
    pub async fn sync(&self, paths: &[ObjectPath]) -> Result<()> {
        let files: Vec<PathBuf> = paths.iter().filter_map(|p| self.local_file(p)).collect();
        if files.is_empty() {
            return Ok(());
        }
        let dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for batch in [files, dirs] {
            for (_, r) in on_local_threads(batch, sync_local).await {
                r?.map_err(Error::storage)?;
            }
        }
        Ok(())
    }
}

/// Whether the local `file` (of object `p`), or its nearest existing ancestor, resolves to
/// where the root says it is (`want`): a symbolic link on the way is refused.
// Inline, not on a blocking thread: resolving a path is a few metadata calls on cached
// directory entries (microseconds), and a hand-off to a blocking thread for each read costs
// more than the check on a loaded machine.
fn resolves_to(p: &ObjectPath, file: &std::path::Path, want: &std::path::Path) -> Result<()> {
    let mut real = file;
    let mut want = want;
    loop {
        match std::fs::canonicalize(real) {
            Ok(r) if r == want => return Ok(()),
            Ok(r) => {
                return Err(Error::invalid(
                    "path",
                    format!(
                        "{} resolves to {} through a symbolic link; Firn follows none",
                        p.uri(),
                        r.display()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match (real.parent(), want.parent()) {
                    (Some(a), Some(b)) => (real, want) = (a, b),
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(Error::storage(e)),
        }
    }
}

/// Threads that write (or sync, or delete) a batch of local files.
const LOCAL_THREADS: usize = 16;

/// Runs `work` on blocking threads, each given a run of consecutive `items` (up to
/// [`LOCAL_THREADS`] runs): how many items each run had and what it returned, in order.
/// Concurrent fsyncs and unlinks share the file system's journal commits, so a batch of
/// many small files takes a fraction of the time one thread would.
async fn on_local_threads<T: Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    work: fn(Vec<T>) -> R,
) -> Vec<(usize, Result<R>)> {
    let per = items.len().div_ceil(LOCAL_THREADS).max(1);
    let mut runs = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let run: Vec<T> = items.by_ref().take(per).collect();
        let n = run.len();
        runs.push(async move {
            let r = tokio::task::spawn_blocking(move || work(run))
                .await
                .map_err(|e| Error::internal_from("file task", e));
            (n, r)
        });
    }
    futures::future::join_all(runs).await
}

/// Counts a batch delete in the store metrics (failed when any object failed).
fn record_delete(started: std::time::Instant, failed: Option<&impl std::fmt::Display>) {
    let r = failed.map_or(Ok(()), |e| Err(e.to_string()));
    crate::metrics::global().store("delete", started.elapsed(), &r);
}

/// Unlinks local files; one that is not there is not an error.
fn unlink_all(files: Vec<PathBuf>) -> Vec<std::io::Result<()>> {
    files
        .iter()
        .map(|f| match std::fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .collect()
}

/// Writes local files, each through a temporary file renamed into place (a reader sees all
/// of a file or none of it), not yet durable (see [`Warehouse::sync`]).
fn write_local(files: Vec<(PathBuf, Bytes)>) -> std::io::Result<()> {
    use std::io::Write;
    for (path, bytes) in files {
        let dir = path.parent().expect("absolute path");
        let name = path.file_name().expect("a file").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let create = || std::fs::File::create(&tmp);
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                create()?
            }
            other => other?,
        };
        f.write_all(&bytes)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// Flushes local files (or directories) to disk; one deleted meanwhile needs nothing.
fn sync_local(paths: Vec<PathBuf>) -> std::io::Result<()> {
    for p in paths {
        match std::fs::File::open(&p) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs one object-store request, recording its latency and any error in the metrics.
async fn timed<T>(
    op: &'static str,
    request: impl std::future::Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    let started = std::time::Instant::now();
    let r = request.await;
    crate::metrics::global().store(op, started.elapsed(), &r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_of(w: &Warehouse, dir: &str) -> TableScope {
        TableScope::new(w.location("location", dir).unwrap(), [])
    }

    #[tokio::test]
    async fn local_roundtrip_and_path_checks() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let f = w.object(&format!("{url}a/b.txt")).unwrap();
        w.put(&f, Bytes::from_static(b"hello")).await.unwrap();
        w.sync(std::slice::from_ref(&f)).await.unwrap();
        assert_eq!(w.head(&f).await.unwrap(), 5);
        assert_eq!(&w.get(&f).await.unwrap()[..], b"hello");
        assert!(matches!(
            w.head(&w.object(&format!("{url}nope")).unwrap()).await,
            Err(Error::NotFound { .. })
        ));
        assert!(w.object(&format!("{url}a/../../etc/passwd")).is_err());
        assert!(w.object("s3://bucket/x").is_err());
        let owned = scope_of(&w, &format!("{url}a")).own(&f).unwrap();
        w.delete(&owned).await.unwrap();
        w.delete(&owned).await.unwrap();
    }

    #[tokio::test]
    async fn deleting_many_takes_written_missing_and_staged_objects() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let scope = scope_of(&w, &format!("{url}t"));
        let path = |n: &str| w.object(&format!("{url}t/{n}")).unwrap();
        for n in ["a", "b"] {
            w.put(&path(n), Bytes::from_static(b"x")).await.unwrap();
        }
        w.stage(&[(path("staged"), Bytes::from_static(b"y"))]);
        let owned: Vec<Owned> = ["a", "missing", "b", "staged"]
            .iter()
            .map(|n| scope.own(&path(n)).unwrap())
            .collect();
        let results = w.delete_many(&owned).await;
        assert_eq!(results.len(), 4);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        for n in ["a", "b", "staged"] {
            assert!(
                matches!(w.head(&path(n)).await, Err(Error::NotFound { .. })),
                "{n} is still there"
            );
        }
        assert!(!w.is_staged(path("staged").uri()));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn no_symbolic_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"keep me").unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/data")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("t/link.parquet"),
        )
        .unwrap();
        let scope = scope_of(&w, &format!("{url}t"));
        for name in ["t/data/secret", "t/link.parquet"] {
            let p = w.object(&format!("{url}{name}")).unwrap();
            assert!(
                matches!(w.head(&p).await, Err(Error::InvalidArgument { .. })),
                "{name}"
            );
            assert!(w.get(&p).await.is_err(), "{name}");
            assert!(w.put(&p, Bytes::from_static(b"x")).await.is_err(), "{name}");
        }
        let through_dir = w.object(&format!("{url}t/data/secret")).unwrap();
        assert!(w.delete(&scope.own(&through_dir).unwrap()).await.is_err());
        // A new file below a linked directory is refused too.
        let new = w.object(&format!("{url}t/data/new/x")).unwrap();
        assert!(w.put(&new, Bytes::from_static(b"x")).await.is_err());
        // Batches check each directory: a staged object below the link is not written
        // (and stays staged), one beside it in a real directory still is; a batch delete
        // through the link is refused for that object only.
        let fine = w.object(&format!("{url}t/metadata/ok.avro")).unwrap();
        w.stage(&[
            (fine.clone(), Bytes::from_static(b"ok")),
            (new.clone(), Bytes::from_static(b"x")),
        ]);
        let r = w
            .expose(&[fine.uri().to_string(), new.uri().to_string()])
            .await;
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
        assert!(w.is_staged(new.uri()) && !w.is_staged(fine.uri()));
        assert_eq!(
            std::fs::read(dir.path().join("t/metadata/ok.avro")).unwrap(),
            b"ok"
        );
        let link = w.object(&format!("{url}t/link.parquet")).unwrap();
        let deleted = w
            .delete_many(&[scope.own(&through_dir).unwrap(), scope.own(&link).unwrap()])
            .await;
        assert!(deleted[0].is_err(), "{deleted:?}");
        // The link itself goes, never what it points at.
        assert!(deleted[1].is_ok(), "{deleted:?}");
        assert!(!dir.path().join("t/link.parquet").exists());
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"keep me"
        );
        assert!(!outside.path().join("new").exists());
    }

    #[tokio::test]
    async fn staged_objects_are_read_before_they_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let (a, b) = (
            w.object(&format!("{url}t/metadata/a.avro")).unwrap(),
            w.object(&format!("{url}t/metadata/b.avro")).unwrap(),
        );
        let other = w.object(&format!("{url}t2/metadata/c.avro")).unwrap();
        w.stage(&[
            (a.clone(), Bytes::from_static(b"manifest")),
            (b.clone(), Bytes::from_static(b"list")),
            (other.clone(), Bytes::from_static(b"x")),
        ]);
        // Readable here, not yet a file.
        assert_eq!(&w.get(&a).await.unwrap()[..], b"manifest");
        assert_eq!(w.head(&b).await.unwrap(), 4);
        assert_eq!(&w.get_range(&a, 1..3).await.unwrap()[..], b"an");
        assert!(w.get_range(&a, 3..9).await.is_err());
        assert!(!dir.path().join("t/metadata/a.avro").exists());
        let t = w.location("location", &format!("{url}t")).unwrap();
        let mut under = w.staged_under(&t);
        under.sort();
        assert_eq!(under, vec![a.uri().to_string(), b.uri().to_string()]);

        assert_eq!(w.staged_size(), 8 + 4 + 1);
        // A staged object deleted before it is published never becomes a file.
        w.delete(&scope_of(&w, t.uri()).own(&b).unwrap())
            .await
            .unwrap();
        assert_eq!(w.take_released(), vec![b.uri().to_string()]);
        assert!(matches!(w.head(&b).await, Err(Error::NotFound { .. })));

        let published = w.publish(&[a.uri().to_string(), b.uri().to_string()]).await;
        assert!(published.error.is_none());
        assert_eq!(published.written, vec![a.uri().to_string()]);
        assert_eq!(
            std::fs::read(dir.path().join("t/metadata/a.avro")).unwrap(),
            b"manifest"
        );
        assert!(!dir.path().join("t/metadata/b.avro").exists());
        assert!(!w.is_staged(a.uri()) && w.is_staged(other.uri()));
        assert_eq!(w.staged_size(), 1);
        // Published once: publishing again writes nothing.
        assert!(w.publish(&[a.uri().to_string()]).await.written.is_empty());
        assert_eq!(&w.get(&a).await.unwrap()[..], b"manifest");
    }

    #[tokio::test]
    async fn exposed_objects_are_readable_at_once_and_reported_only_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let t = w.location("location", &format!("{url}t")).unwrap();
        let [a, b, c] =
            ["a", "b", "c"].map(|n| w.object(&format!("{url}t/metadata/{n}.avro")).unwrap());
        w.stage(&[
            (a.clone(), Bytes::from_static(b"list")),
            (b.clone(), Bytes::from_static(b"manifest")),
            (c.clone(), Bytes::from_static(b"later")),
        ]);
        w.expose(&[a.uri().to_string(), b.uri().to_string()])
            .await
            .unwrap();
        // Files now, for any reader, no longer staged; not yet reported durable.
        assert_eq!(
            std::fs::read(dir.path().join("t/metadata/a.avro")).unwrap(),
            b"list"
        );
        assert!(!w.is_staged(a.uri()) && !w.is_staged(b.uri()) && w.is_staged(c.uri()));
        assert!(w.has_exposed() && w.is_unsynced(a.uri()));
        // One exposed object is deleted before it is synced: nothing is left to lose.
        w.delete(&scope_of(&w, t.uri()).own(&b).unwrap())
            .await
            .unwrap();
        // The next publish makes the exposed ones durable and reports them with its own.
        let published = w.publish(&[c.uri().to_string()]).await;
        assert!(published.error.is_none(), "{:?}", published.error);
        let mut written = published.written;
        written.sort();
        assert_eq!(
            written,
            vec![
                a.uri().to_string(),
                b.uri().to_string(),
                c.uri().to_string()
            ]
        );
        assert!(!w.has_exposed() && !w.is_unsynced(a.uri()));
        assert!(!dir.path().join("t/metadata/b.avro").exists());
        assert_eq!(
            std::fs::read(dir.path().join("t/metadata/c.avro")).unwrap(),
            b"later"
        );
        // Reported once.
        assert!(w.publish(&[]).await.written.is_empty());
    }
}
