//! Iceberg metadata objects (manifests, manifest lists) built in memory.
//!
//! The commit path builds every object it writes in memory first, so the same bytes can be
//! put to the store and, where the store is not durable on put (local disk), kept in the
//! commit's database transaction until they are fsynced.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage};
use serde::{Deserialize, Serialize};

/// An object to write: where, and its bytes.
#[derive(Debug, Clone)]
pub struct MetaObject {
    pub path: String,
    pub bytes: Bytes,
}

type Sink = Arc<Mutex<Vec<MetaObject>>>;

/// An iceberg [`Storage`] that only writes, into memory.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CaptureStorage {
    #[serde(skip)]
    sink: Sink,
}

impl CaptureStorage {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An output file whose bytes land in this capture.
    pub(crate) fn output(self: &Arc<Self>, path: &str) -> OutputFile {
        OutputFile::new(self.clone(), path.to_string())
    }

    /// A writer whose bytes land in this capture.
    pub(crate) fn writer_for(&self, path: &str) -> Box<dyn FileWrite> {
        Box::new(CaptureWriter {
            path: path.to_string(),
            buf: Vec::new(),
            sink: self.sink.clone(),
        })
    }

    /// Everything written so far.
    pub(crate) fn take(&self) -> Vec<MetaObject> {
        std::mem::take(&mut *self.sink.lock().expect("capture poisoned"))
    }
}

struct CaptureWriter {
    path: String,
    buf: Vec<u8>,
    sink: Sink,
}

#[async_trait::async_trait]
impl FileWrite for CaptureWriter {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.buf.extend_from_slice(&bs);
        Ok(())
    }
    async fn close(&mut self) -> iceberg::Result<()> {
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        self.sink
            .lock()
            .expect("capture poisoned")
            .push(MetaObject {
                path: self.path.clone(),
                bytes,
            });
        Ok(())
    }
}

fn unsupported(what: &str) -> iceberg::Error {
    iceberg::Error::new(
        iceberg::ErrorKind::FeatureUnsupported,
        format!("in-memory capture storage does not {what}"),
    )
}

#[async_trait::async_trait]
#[typetag::serde]
impl Storage for CaptureStorage {
    async fn exists(&self, _path: &str) -> iceberg::Result<bool> {
        Err(unsupported("read"))
    }
    async fn metadata(&self, _path: &str) -> iceberg::Result<FileMetadata> {
        Err(unsupported("read"))
    }
    async fn read(&self, _path: &str) -> iceberg::Result<Bytes> {
        Err(unsupported("read"))
    }
    async fn reader(&self, _path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Err(unsupported("read"))
    }
    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.sink
            .lock()
            .expect("capture poisoned")
            .push(MetaObject {
                path: path.to_string(),
                bytes: bs,
            });
        Ok(())
    }
    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(self.writer_for(path))
    }
    async fn delete(&self, _path: &str) -> iceberg::Result<()> {
        Err(unsupported("delete"))
    }
    async fn delete_prefix(&self, _path: &str) -> iceberg::Result<()> {
        Err(unsupported("delete"))
    }
    async fn delete_stream(&self, _paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        Err(unsupported("delete"))
    }
    fn new_input(&self, _path: &str) -> iceberg::Result<InputFile> {
        Err(unsupported("read"))
    }
    fn new_output(&self, _path: &str) -> iceberg::Result<OutputFile> {
        Err(unsupported(
            "hand out output files without an Arc; use CaptureStorage::output",
        ))
    }
}
