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
use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use super::{ObjectPath, Warehouse, WarehouseConfig};
use crate::error::Error;

impl Warehouse {
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

/// Buffers a file and writes it with one PUT on close (manifests and metadata are small;
/// data files go through the multipart writer below when large).
struct StoreWriter {
    warehouse: Arc<Warehouse>,
    path: ObjectPath,
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
                format!("{} closed twice", self.path),
            ));
        }
        self.closed = true;
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.warehouse.confine(&self.path).await.map_err(ice_err)?;
        self.warehouse
            .put_payload(&self.path, payload)
            .await
            .map_err(ice_err)
    }
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
        Ok(Box::new(StoreWriter {
            warehouse: w.clone(),
            path: p,
            buf: Vec::new(),
            closed: false,
        }))
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
