//! iceberg-rust's `Storage` (and so `FileIO`) over a [`Warehouse`]: iceberg's readers and
//! writers go through the same checked paths as Firn's own code. Deleting through it is
//! refused: only Firn's deleters, with an [`Owned`](super::Owned) path, delete.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{ObjectPath, Warehouse, WarehouseConfig};
use crate::error::Error;

impl Warehouse {
    /// This warehouse as an iceberg-rust [`Storage`], for iceberg's writers and readers.
    pub fn iceberg_storage(self: &Arc<Self>) -> Arc<dyn Storage> {
        Arc::new(self.firn_storage())
    }

    /// An iceberg `FileIO` over this very warehouse (its store and credentials, unlike
    /// [`FirnStorageFactory::file_io`], which opens one from a config).
    pub fn file_io(self: &Arc<Self>) -> iceberg::io::FileIO {
        iceberg::io::FileIOBuilder::new(Arc::new(self.firn_storage())).build()
    }

    /// A Parquet sink for a new object at `path`, written as iceberg's writers write (one
    /// PUT while it is smaller than a part, a multipart upload once it outgrows one), so the
    /// file never sits in memory whole. Dropped before it completes, the upload is aborted.
    /// Durable on local disk only after [`Warehouse::sync`].
    pub fn parquet_sink(self: &Arc<Self>, path: ObjectPath) -> ParquetSink {
        ParquetSink {
            inner: StoreWriter::new(self.clone(), path),
        }
    }

    fn firn_storage(self: &Arc<Self>) -> FirnStorage {
        FirnStorage {
            config: self.config.clone(),
            warehouse: OnceLock::from(self.clone()),
        }
    }
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

    /// The warehouse and the checked path of `uri` in it.
    fn resolve(&self, uri: &str) -> iceberg::Result<(&Arc<Warehouse>, ObjectPath)> {
        let w = self.warehouse()?;
        let p = w.object(uri).map_err(ice_err)?;
        Ok((w, p))
    }
}

struct StoreReader {
    warehouse: Arc<Warehouse>,
    path: ObjectPath,
}

#[async_trait::async_trait]
impl FileRead for StoreReader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.warehouse
            .get_range(&self.path, range)
            .await
            .map_err(ice_err)
    }
}

/// Size of the parts of a multipart upload (S3 wants at least 5 MiB for all but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Writes a file: one PUT on close (put-if-absent, see [`Warehouse::put`]) while it is
/// smaller than a part; as a multipart upload once it outgrows one (large data files), so
/// a file is never held in memory whole. An upload that is not closed (the writer failed
/// or was dropped) or that fails is aborted, so the store keeps no hidden parts.
struct StoreWriter {
    warehouse: Arc<Warehouse>,
    path: ObjectPath,
    /// Bytes not yet handed to the store, and how many.
    buf: std::collections::VecDeque<Bytes>,
    buffered: usize,
    upload: Option<Upload>,
    closed: bool,
}

impl StoreWriter {
    fn new(warehouse: Arc<Warehouse>, path: ObjectPath) -> Self {
        Self {
            warehouse,
            path,
            buf: Default::default(),
            buffered: 0,
            upload: None,
            closed: false,
        }
    }
}

/// A multipart upload in progress.
struct Upload {
    parts: Box<dyn object_store::MultipartUpload>,
    in_flight: tokio::task::JoinSet<object_store::Result<()>>,
}

impl Upload {
    /// Waits until fewer than `max` parts are in flight; the first failed part fails it.
    async fn settle(&mut self, max: usize) -> object_store::Result<()> {
        while self.in_flight.len() > max {
            match self.in_flight.join_next().await {
                Some(Ok(r)) => r?,
                Some(Err(e)) => {
                    return Err(object_store::Error::Generic {
                        store: "multipart upload",
                        source: Box::new(e),
                    });
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Gives up the upload and asks the store to drop its parts.
    async fn abort(mut self) {
        self.in_flight.shutdown().await;
        if let Err(e) = self.parts.abort().await {
            tracing::warn!("aborting a multipart upload: {e}");
        }
    }
}

impl StoreWriter {
    /// Takes `PART_SIZE` bytes off the front of the buffer.
    fn take_part(&mut self) -> PutPayload {
        let mut part = Vec::new();
        let mut want = PART_SIZE;
        while want > 0 {
            let Some(mut b) = self.buf.pop_front() else {
                break;
            };
            if b.len() > want {
                self.buf.push_front(b.split_off(want));
            }
            want -= b.len();
            self.buffered -= b.len();
            part.push(b);
        }
        part.into_iter().collect()
    }

    /// Sends every whole part in the buffer, starting the upload if needed.
    async fn send_parts(&mut self) -> Result<(), Error> {
        while self.buffered >= PART_SIZE {
            if self.upload.is_none() {
                self.warehouse.confine(&self.path).await?;
                let parts = self
                    .warehouse
                    .store
                    .put_multipart(self.path.key())
                    .await
                    .map_err(Error::storage)?;
                self.upload = Some(Upload {
                    parts,
                    in_flight: tokio::task::JoinSet::new(),
                });
            }
            let part = self.take_part();
            let upload = self.upload.as_mut().expect("started above");
            upload.in_flight.spawn(upload.parts.put_part(part));
            upload
                .settle(PARTS_IN_FLIGHT)
                .await
                .map_err(Error::storage)?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), Error> {
        let Some(mut upload) = self.upload.take() else {
            let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
            self.buffered = 0;
            self.warehouse.confine(&self.path).await?;
            return self.warehouse.put_payload(&self.path, payload).await;
        };
        if self.buffered > 0 {
            let last: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
            self.buffered = 0;
            upload.in_flight.spawn(upload.parts.put_part(last));
        }
        let done = match upload.settle(0).await {
            Ok(()) => upload.parts.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            upload.abort().await;
            return Err(Error::storage(e));
        }
        Ok(())
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Not closed: the write was given up. Its parts must not linger in the store.
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(upload.abort());
        }
    }
}

#[async_trait::async_trait]
impl FileWrite for StoreWriter {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.buffered += bs.len();
        self.buf.push_back(bs);
        if let Err(e) = self.send_parts().await {
            if let Some(upload) = self.upload.take() {
                upload.abort().await;
            }
            return Err(ice_err(e));
        }
        Ok(())
    }
    async fn close(&mut self) -> iceberg::Result<()> {
        if self.closed {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("{} closed twice", self.path),
            ));
        }
        self.closed = true;
        self.finish().await.map_err(ice_err)
    }
}

/// See [`Warehouse::parquet_sink`].
pub struct ParquetSink {
    inner: StoreWriter,
}

impl parquet::arrow::async_writer::AsyncFileWriter for ParquetSink {
    fn write(&mut self, bs: Bytes) -> futures::future::BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            FileWrite::write(&mut self.inner, bs)
                .await
                .map_err(parquet_err)
        })
    }

    fn complete(&mut self) -> futures::future::BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move { FileWrite::close(&mut self.inner).await.map_err(parquet_err) })
    }
}

fn parquet_err(e: iceberg::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

#[async_trait::async_trait]
#[typetag::serde]
impl Storage for FirnStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (w, p) = self.resolve(path)?;
        match w.head(&p).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ice_err(e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (w, p) = self.resolve(path)?;
        let size = w.head(&p).await.map_err(ice_err)?;
        Ok(FileMetadata { size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (w, p) = self.resolve(path)?;
        w.get(&p).await.map_err(ice_err)
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (w, p) = self.resolve(path)?;
        Ok(Box::new(StoreReader {
            warehouse: w.clone(),
            path: p,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let (w, p) = self.resolve(path)?;
        w.put(&p, bs).await.map_err(ice_err)
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (w, p) = self.resolve(path)?;
        Ok(Box::new(StoreWriter::new(w.clone(), p)))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        // Deletes go through a table's scope, never through iceberg-rust.
        Err(iceberg::Error::new(
            iceberg::ErrorKind::FeatureUnsupported,
            format!("Firn deletes objects only on a table's behalf (asked for {path})"),
        ))
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

/// A [`FirnStorage`] is its own factory: the storage it builds is itself (a `FileIO` that
/// was serialised and read back reopens the warehouse from the config).
#[typetag::serde]
impl StorageFactory for FirnStorage {
    fn build(&self, _: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        self.clone_arc()
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
