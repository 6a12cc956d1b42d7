//! The warehouse: one storage stack on `object_store`, used by Firn and by iceberg-rust.
//!
//! Contract: nothing here lists a directory or bucket. Table contents are decided by
//! committed metadata only; files are looked up by exact path (`head`, `get`).
//!
//! Write-behind (local disk): the committer *stages* a commit's manifests and manifest list
//! here instead of creating their files on the commit path; their bytes are durable in the
//! catalog's `pending_objects` by then. Reads through this warehouse see staged objects;
//! [`Warehouse::publish`] writes them (atomically, then fsynced) and forgets them. Whoever
//! hands a path to a reader outside this process publishes first.
//!
//! Supported URLs: `file:///abs/dir` (default), `memory:///` (tests), and
//! `s3://bucket/prefix` (endpoint, region, path-style and credentials from the standard
//! `AWS_*` environment variables or explicit options).

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ObjectKind, Result};

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
    S3 {
        bucket: String,
    },
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
    /// URIs now durable in the store (their catalog copies may go).
    pub written: Vec<String>,
    /// Why some objects are still staged.
    pub error: Option<Error>,
}

/// An object store rooted at a warehouse URL, addressed by absolute URIs.
#[derive(Debug)]
pub struct Warehouse {
    config: WarehouseConfig,
    root: Url,
    backend: Backend,
    store: Arc<dyn ObjectStore>,
    /// Local files may be written directly (the store was not replaced by a wrapper).
    direct_local: bool,
    /// Objects staged and not yet published.
    staged: Mutex<Staged>,
    /// Staged objects deleted before they were published: their catalog copies may go.
    released: Mutex<Vec<String>>,
    /// One publisher at a time. Deleting a staged object takes it too, so a delete never
    /// overtakes the write of the same object (which would leave the file behind).
    publishing: tokio::sync::Mutex<()>,
}

fn parse_url(s: &str) -> Result<Url> {
    let s = s.trim_end_matches('/');
    Url::parse(&format!("{s}/")).map_err(|e| Error::invalid("warehouse", format!("{s:?}: {e}")))
}

impl Warehouse {
    /// Opens the warehouse a config names. Local directories are created.
    pub fn open(config: WarehouseConfig) -> Result<Self> {
        let root = parse_url(&config.url)?;
        let (backend, store): (Backend, Arc<dyn ObjectStore>) = match root.scheme() {
            "file" => {
                let dir = root.to_file_path().map_err(|()| {
                    Error::invalid("warehouse", format!("{root} is not a local path"))
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::invalid("warehouse", format!("cannot create {}: {e}", dir.display()))
                })?;
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
                let bucket = root
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| Error::invalid("warehouse", format!("{root} names no bucket")))?
                    .to_string();
                let mut b =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                for (k, v) in &config.options {
                    let key = k
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .map_err(|e| Error::invalid("warehouse option", format!("{k}: {e}")))?;
                    b = b.with_config(key, v);
                }
                let store = b
                    .build()
                    .map_err(|e| Error::invalid("warehouse", format!("S3 configuration: {e}")))?;
                (Backend::S3 { bucket }, Arc::new(store))
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
            config,
            root,
            backend,
            store,
            staged: Mutex::default(),
            released: Mutex::default(),
            publishing: tokio::sync::Mutex::new(()),
        })
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
        self.root.as_str()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether objects written here must be fsynced before they are durable.
    pub fn needs_sync(&self) -> bool {
        matches!(self.backend, Backend::Local)
    }

    /// The object-store path of an absolute URI inside this warehouse's store.
    pub fn path(&self, uri: &str) -> Result<StorePath> {
        // Before parsing: URL parsing would silently resolve `..` out of the table.
        let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        if after_scheme.split('/').any(|seg| seg == "." || seg == "..")
            || after_scheme.contains("//")
        {
            return Err(Error::invalid(
                "path",
                format!("{uri:?} is not a normalised path"),
            ));
        }
        let url = Url::parse(uri).map_err(|e| Error::invalid("path", format!("{uri:?}: {e}")))?;
        if url.scheme() != self.root.scheme() {
            return Err(Error::invalid(
                "path",
                format!(
                    "{uri:?} is not in the warehouse's {} store",
                    self.root.scheme()
                ),
            ));
        }
        if let Backend::S3 { bucket } = &self.backend
            && url.host_str() != Some(bucket.as_str())
        {
            return Err(Error::invalid(
                "path",
                format!("{uri:?} is not in bucket {bucket}"),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::invalid(
                "path",
                format!("{uri:?} has a query or fragment"),
            ));
        }
        let raw = url.path();
        StorePath::from_url_path(raw).map_err(|e| Error::invalid("path", format!("{uri:?}: {e}")))
    }

    fn local_file(&self, uri: &str) -> Option<PathBuf> {
        match self.backend {
            Backend::Local => Url::parse(uri).ok()?.to_file_path().ok(),
            _ => None,
        }
    }

    /// Stages new objects (write-behind): readers of this warehouse see them at once; they
    /// reach the store when published. The caller keeps their bytes durable elsewhere (the
    /// catalog) until then.
    pub fn stage(&self, objects: &[(String, Bytes)]) -> Result<()> {
        let mut keyed = Vec::with_capacity(objects.len());
        for (uri, b) in objects {
            keyed.push((self.path(uri)?.to_string(), (uri.clone(), b.clone())));
        }
        let mut staged = self.staged.lock().expect("poisoned");
        for (path, object) in keyed {
            staged.insert(path, object);
        }
        Ok(())
    }

    fn staged_object(&self, path: &StorePath) -> Option<Bytes> {
        let staged = self.staged.lock().expect("poisoned");
        staged.objects.get(path.as_ref()).map(|(_, b)| b.clone())
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

    /// URIs of the staged objects below `prefix` (a table's location).
    pub fn staged_under(&self, prefix: &str) -> Vec<String> {
        let Ok(prefix) = self.path(prefix.trim_end_matches('/')) else {
            return Vec::new();
        };
        let staged = self.staged.lock().expect("poisoned");
        staged
            .objects
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix.as_ref())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|(_, (uri, _))| uri.clone())
            .collect()
    }

    /// Whether `uri` is staged (not yet in the store).
    pub fn is_staged(&self, uri: &str) -> bool {
        self.path(uri).is_ok_and(|p| {
            self.staged
                .lock()
                .expect("poisoned")
                .objects
                .contains_key(p.as_ref())
        })
    }

    /// Writes the named staged objects to the store (each atomically), makes them durable
    /// and unstages them; names not staged are skipped. Objects written are unstaged even
    /// when others fail (they stay staged, for a later call).
    pub async fn publish(&self, uris: &[String]) -> Published {
        let _one = self.publishing.lock().await;
        let todo: Vec<(StorePath, String, Bytes)> = {
            let staged = self.staged.lock().expect("poisoned");
            let mut seen = std::collections::HashSet::new();
            uris.iter()
                .filter_map(|u| self.path(u).ok())
                .filter(|p| seen.insert(p.to_string()))
                .filter_map(|p| {
                    let (uri, b) = staged.objects.get(p.as_ref())?.clone();
                    Some((p, uri, b))
                })
                .collect()
        };
        let mut out = Published::default();
        if todo.is_empty() {
            return out;
        }
        let mut done: Vec<&(StorePath, String, Bytes)> = Vec::new();
        if self.direct_local {
            let files = todo
                .iter()
                .filter_map(|(_, u, b)| Some((self.local_file(u)?, b.clone())))
                .collect();
            match tokio::task::spawn_blocking(move || write_local_durably(files)).await {
                Ok(Ok(())) => done.extend(&todo),
                Ok(Err(e)) => out.error = Some(Error::storage(e)),
                Err(e) => out.error = Some(Error::internal_from("write task", e)),
            }
        } else {
            let puts = todo.iter().map(|o| async move {
                let r = self.store.put(&o.0, PutPayload::from(o.2.clone())).await;
                (o, r)
            });
            for (o, r) in futures::future::join_all(puts).await {
                match r {
                    Ok(_) => done.push(o),
                    Err(e) => out.error = Some(Error::storage(e)),
                }
            }
            let uris: Vec<String> = done.iter().map(|o| o.1.clone()).collect();
            if let Err(e) = self.sync(&uris).await {
                out.error = Some(e);
                return out;
            }
        }
        // Still staged: only a publisher or a delete (which waits for this one) unstages.
        let mut staged = self.staged.lock().expect("poisoned");
        for (p, uri, _) in done {
            staged.remove(p.as_ref());
            out.written.push(uri.clone());
        }
        out
    }

    /// Paths of staged objects deleted before they were published, since the last call.
    pub fn take_released(&self) -> Vec<String> {
        std::mem::take(&mut *self.released.lock().expect("poisoned"))
    }

    /// The size of the object at `uri` (one HEAD, never a LIST).
    pub async fn head(&self, uri: &str) -> Result<u64> {
        let path = self.path(uri)?;
        if let Some(b) = self.staged_object(&path) {
            return Ok(b.len() as u64);
        }
        match self.store.head(&path).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found(ObjectKind::File, uri))
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    pub async fn get(&self, uri: &str) -> Result<Bytes> {
        let path = self.path(uri)?;
        if let Some(b) = self.staged_object(&path) {
            return Ok(b);
        }
        match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(Error::storage),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found(ObjectKind::File, uri))
            }
            Err(e) => Err(Error::storage(e)),
        }
    }

    pub async fn get_range(&self, uri: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(uri)?;
        if let Some(b) = self.staged_object(&path) {
            let len = b.len() as u64;
            if range.start > range.end || range.end > len {
                return Err(Error::invalid(
                    "range",
                    format!("{range:?} is outside {uri} ({len} bytes)"),
                ));
            }
            return Ok(b.slice(range.start as usize..range.end as usize));
        }
        self.store
            .get_range(&path, range)
            .await
            .map_err(Error::storage)
    }

    /// Writes an object (atomically: readers see all of it or nothing). Not yet durable on
    /// local disk: see [`Warehouse::sync`].
    pub async fn put(&self, uri: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(uri)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(Error::storage)
    }

    /// Writes an object and makes it durable before returning.
    pub async fn put_durable(&self, uri: &str, bytes: Bytes) -> Result<()> {
        self.put(uri, bytes).await?;
        self.sync(&[uri.to_string()]).await
    }

    /// Writes new objects that nothing references yet (fresh, unique names), concurrently.
    /// For stores where a PUT is durable; local warehouses [`stage`](Warehouse::stage) new
    /// objects instead.
    pub async fn put_new(&self, objects: &[(String, Bytes)]) -> Result<()> {
        let mut puts = Vec::with_capacity(objects.len());
        for (uri, b) in objects {
            puts.push(self.put(uri, b.clone()));
        }
        futures::future::try_join_all(puts).await?;
        Ok(())
    }

    /// Deletes an object (staged or not); a missing object is not an error.
    pub async fn delete(&self, uri: &str) -> Result<()> {
        let path = self.path(uri)?;
        if self.staged_object(&path).is_some() {
            // Not while it is being written: then it is a file, deleted below.
            let _one = self.publishing.lock().await;
            if let Some((uri, _)) = self.staged.lock().expect("poisoned").remove(path.as_ref()) {
                self.released.lock().expect("poisoned").push(uri);
            }
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(e)),
        }
    }

    /// Makes the named objects durable: on local disk fsyncs each file and its directory;
    /// elsewhere a successful PUT is durable already and this does nothing.
    pub async fn sync(&self, uris: &[String]) -> Result<()> {
        let files: Vec<PathBuf> = uris.iter().filter_map(|u| self.local_file(u)).collect();
        if files.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut dirs = std::collections::BTreeSet::new();
            for f in &files {
                std::fs::File::open(f)?.sync_all()?;
                if let Some(d) = f.parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
            for d in dirs {
                std::fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::internal_from("sync task", e))?
        .map_err(Error::storage)
    }

    /// This warehouse as an iceberg-rust [`Storage`], for iceberg's writers and readers.
    pub fn iceberg_storage(self: &Arc<Self>) -> Arc<dyn Storage> {
        let s = FirnStorage {
            config: self.config.clone(),
            warehouse: OnceLock::new(),
        };
        let _ = s.warehouse.set(self.clone());
        Arc::new(s)
    }
}

/// Writes local files, each atomically (a temp file renamed into place, so a reader never
/// sees part of one) and durably (the file and then its directory fsynced).
fn write_local_durably(files: Vec<(PathBuf, Bytes)>) -> std::io::Result<()> {
    use std::io::Write;
    let mut dirs = std::collections::BTreeSet::new();
    for (path, bytes) in files {
        let dir = path.parent().expect("absolute path").to_path_buf();
        let name = path.file_name().expect("a file").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let create = || std::fs::File::create(&tmp);
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                create()?
            }
            other => other?,
        };
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        dirs.insert(dir);
    }
    for d in dirs {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

fn ice_err(e: Error) -> iceberg::Error {
    let kind = match e {
        Error::NotFound { .. } => iceberg::ErrorKind::DataInvalid,
        _ => iceberg::ErrorKind::Unexpected,
    };
    iceberg::Error::new(kind, e.to_string()).with_source(e)
}

/// iceberg-rust storage over a [`Warehouse`]. Serialises as its config and reopens the
/// warehouse lazily when deserialised.
#[derive(Debug, Serialize, Deserialize)]
pub struct FirnStorage {
    config: WarehouseConfig,
    #[serde(skip)]
    warehouse: OnceLock<Arc<Warehouse>>,
}

impl FirnStorage {
    fn warehouse(&self) -> iceberg::Result<&Arc<Warehouse>> {
        if let Some(w) = self.warehouse.get() {
            return Ok(w);
        }
        let w = Warehouse::open(self.config.clone()).map_err(ice_err)?;
        Ok(self.warehouse.get_or_init(|| Arc::new(w)))
    }

    fn clone_arc(&self) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(self.warehouse()?.iceberg_storage())
    }
}

struct StoreReader {
    warehouse: Arc<Warehouse>,
    uri: String,
}

#[async_trait::async_trait]
impl FileRead for StoreReader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.warehouse
            .get_range(&self.uri, range)
            .await
            .map_err(ice_err)
    }
}

/// Buffers a file and writes it with one PUT on close (manifests and metadata are small;
/// data files go through the multipart writer below when large).
struct StoreWriter {
    warehouse: Arc<Warehouse>,
    uri: String,
    buf: Vec<Bytes>,
    closed: bool,
}

#[async_trait::async_trait]
impl FileWrite for StoreWriter {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.buf.push(bs);
        Ok(())
    }
    async fn close(&mut self) -> iceberg::Result<()> {
        if self.closed {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("{} closed twice", self.uri),
            ));
        }
        self.closed = true;
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        let path = self.warehouse.path(&self.uri).map_err(ice_err)?;
        self.warehouse
            .store
            .put(&path, payload)
            .await
            .map_err(|e| ice_err(Error::storage(e)))?;
        Ok(())
    }
}

#[async_trait::async_trait]
#[typetag::serde]
impl Storage for FirnStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.warehouse()?.head(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ice_err(e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let size = self.warehouse()?.head(path).await.map_err(ice_err)?;
        Ok(FileMetadata { size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        self.warehouse()?.get(path).await.map_err(ice_err)
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(StoreReader {
            warehouse: self.warehouse()?.clone(),
            uri: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.warehouse()?.put(path, bs).await.map_err(ice_err)
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(StoreWriter {
            warehouse: self.warehouse()?.clone(),
            uri: path.to_string(),
            buf: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        self.warehouse()?.delete(path).await.map_err(ice_err)
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        Err(iceberg::Error::new(
            iceberg::ErrorKind::FeatureUnsupported,
            format!("Firn never deletes by prefix (asked for {path}): it would need a listing"),
        ))
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        use futures::StreamExt;
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(self.clone_arc()?, path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(self.clone_arc()?, path.to_string()))
    }
}

/// Builds [`FirnStorage`] for an iceberg `FileIO` from the properties `firn.warehouse`
/// (the URL) and `firn.option.<key>` (backend options).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FirnStorageFactory;

/// The property naming the warehouse URL for [`FirnStorageFactory`].
pub const WAREHOUSE_PROP: &str = "firn.warehouse";
const OPTION_PREFIX: &str = "firn.option.";

impl FirnStorageFactory {
    /// FileIO properties that describe `config`.
    pub fn props(config: &WarehouseConfig) -> HashMap<String, String> {
        let mut p: HashMap<String, String> = config
            .options
            .iter()
            .map(|(k, v)| (format!("{OPTION_PREFIX}{k}"), v.clone()))
            .collect();
        p.insert(WAREHOUSE_PROP.to_string(), config.url.clone());
        p
    }

    /// An iceberg FileIO on the warehouse `config` names.
    pub fn file_io(config: &WarehouseConfig) -> iceberg::io::FileIO {
        iceberg::io::FileIOBuilder::new(Arc::new(FirnStorageFactory))
            .with_props(Self::props(config))
            .build()
    }
}

#[typetag::serde]
impl StorageFactory for FirnStorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        let url = config.get(WAREHOUSE_PROP).ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!("FileIO property {WAREHOUSE_PROP} is missing"),
            )
        })?;
        let options = config
            .props()
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(OPTION_PREFIX)?.to_string(), v.clone())))
            .collect();
        let w = Warehouse::open(WarehouseConfig {
            url: url.clone(),
            options,
        })
        .map_err(ice_err)?;
        Ok(Arc::new(w).iceberg_storage())
    }
}

/// The canonical spelling of a URI: Hadoop (Spark's file IO) writes local paths as
/// `file:/x`, which names the same file as `file:///x`. Other URIs are returned as given.
pub fn canonical_uri(uri: &str) -> String {
    match uri.strip_prefix("file:") {
        Some(rest) if rest.starts_with('/') && !rest.starts_with("//") => format!("file://{rest}"),
        _ => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_roundtrip_and_path_checks() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let f = format!("{url}a/b.txt");
        w.put(&f, Bytes::from_static(b"hello")).await.unwrap();
        w.sync(std::slice::from_ref(&f)).await.unwrap();
        assert_eq!(w.head(&f).await.unwrap(), 5);
        assert_eq!(&w.get(&f).await.unwrap()[..], b"hello");
        assert!(matches!(
            w.head(&format!("{url}nope")).await,
            Err(Error::NotFound { .. })
        ));
        assert!(w.path(&format!("{url}a/../../etc/passwd")).is_err());
        assert!(w.path("s3://bucket/x").is_err());
        w.delete(&f).await.unwrap();
        w.delete(&f).await.unwrap();
    }

    #[tokio::test]
    async fn staged_objects_are_read_before_they_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let w = Warehouse::open(WarehouseConfig::new(&url)).unwrap();
        let (a, b) = (
            format!("{url}t/metadata/a.avro"),
            format!("{url}t/metadata/b.avro"),
        );
        let other = format!("{url}t2/metadata/c.avro");
        w.stage(&[
            (a.clone(), Bytes::from_static(b"manifest")),
            (b.clone(), Bytes::from_static(b"list")),
            (other.clone(), Bytes::from_static(b"x")),
        ])
        .unwrap();
        // Readable here, not yet a file.
        assert_eq!(&w.get(&a).await.unwrap()[..], b"manifest");
        assert_eq!(w.head(&b).await.unwrap(), 4);
        assert_eq!(&w.get_range(&a, 1..3).await.unwrap()[..], b"an");
        assert!(w.get_range(&a, 3..9).await.is_err());
        assert!(!dir.path().join("t/metadata/a.avro").exists());
        let mut under = w.staged_under(&format!("{url}t"));
        under.sort();
        assert_eq!(under, vec![a.clone(), b.clone()]);

        assert_eq!(w.staged_size(), 8 + 4 + 1);
        // A staged object deleted before it is published never becomes a file.
        w.delete(&b).await.unwrap();
        assert_eq!(w.take_released(), vec![b.clone()]);
        assert!(matches!(w.head(&b).await, Err(Error::NotFound { .. })));

        let published = w.publish(&[a.clone(), b.clone()]).await;
        assert!(published.error.is_none());
        assert_eq!(published.written, vec![a.clone()]);
        assert_eq!(
            std::fs::read(dir.path().join("t/metadata/a.avro")).unwrap(),
            b"manifest"
        );
        assert!(!dir.path().join("t/metadata/b.avro").exists());
        assert!(!w.is_staged(&a) && w.is_staged(&other));
        assert_eq!(w.staged_size(), 1);
        // Published once: publishing again writes nothing.
        assert!(w.publish(std::slice::from_ref(&a)).await.written.is_empty());
        assert_eq!(&w.get(&a).await.unwrap()[..], b"manifest");
    }

    #[test]
    fn hadoop_file_uris_are_canonicalised() {
        assert_eq!(
            canonical_uri("file:/w/t/a.parquet"),
            "file:///w/t/a.parquet"
        );
        assert_eq!(
            canonical_uri("file:///w/t/a.parquet"),
            "file:///w/t/a.parquet"
        );
        assert_eq!(canonical_uri("s3://b/t/a.parquet"), "s3://b/t/a.parquet");
    }
}
