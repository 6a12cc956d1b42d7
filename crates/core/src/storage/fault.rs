//! A fault-injecting object store, for tests and simulations.
//!
//! Wraps any store and, driven by a seeded generator so a run can be replayed:
//! - adds latency to every call;
//! - fails PUTs before writing (`put_error_rate`) or after writing (`put_ambiguous_rate`:
//!   the object exists but the caller sees an error, like a timed-out request);
//! - fails GET/HEAD calls (`get_error_rate`);
//! - makes LIST eventually consistent: objects younger than `list_lag` are left out,
//!   as an S3-compatible store under heavy writes may do.
//!
//! It also counts calls, so tests can assert that a code path never lists.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// What faults to inject.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    pub seed: u64,
    /// Latency added to each call, drawn uniformly.
    pub latency: Option<Range<Duration>>,
    pub put_error_rate: f64,
    pub put_ambiguous_rate: f64,
    pub get_error_rate: f64,
    /// LIST leaves out objects written less than this long ago.
    pub list_lag: Duration,
    /// Share of DELETE calls that fail (every object of a failed call stays).
    pub delete_error_rate: f64,
}

/// Counts of calls that reached the store.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
}

/// The fault-injecting store. See the module docs.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    config: FaultConfig,
    rng: Mutex<StdRng>,
    written: Arc<Mutex<HashMap<Path, Instant>>>,
    /// While set, every put, get, head and delete fails (the store is down).
    down: std::sync::atomic::AtomicBool,
    pub counts: CallCounts,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected {op} fault").into(),
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        Self {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            config,
            written: Arc::new(Mutex::new(HashMap::new())),
            down: std::sync::atomic::AtomicBool::new(false),
            counts: CallCounts::default(),
        }
    }

    /// Takes the store down (every put, get, head and delete fails) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn roll(&self, rate: f64) -> bool {
        if self.down.load(Ordering::SeqCst) {
            return true;
        }
        rate > 0.0 && self.rng.lock().expect("poisoned").gen_bool(rate.min(1.0))
    }

    async fn delay(&self) {
        let Some(r) = &self.config.latency else {
            return;
        };
        let d = if r.end > r.start {
            let nanos = self
                .rng
                .lock()
                .expect("poisoned")
                .gen_range(r.start.as_nanos() as u64..r.end.as_nanos() as u64);
            Duration::from_nanos(nanos)
        } else {
            r.start
        };
        tokio::time::sleep(d).await;
    }

    fn filter_list(&self, items: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
        items
            .into_iter()
            .filter(|m| visible(&self.written, self.config.list_lag, &m.location))
            .collect()
    }

    fn lagging(
        &self,
        s: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let written = self.written.clone();
        let lag = self.config.list_lag;
        s.filter(move |r| {
            let keep = match r {
                Ok(m) => visible(&written, lag, &m.location),
                Err(_) => true,
            };
            futures::future::ready(keep)
        })
        .boxed()
    }
}

fn visible(written: &Mutex<HashMap<Path, Instant>>, lag: Duration, path: &Path) -> bool {
    match written.lock().expect("poisoned").get(path) {
        Some(t) => t.elapsed() >= lag,
        None => true,
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        if self.roll(self.config.put_error_rate) {
            return Err(injected("put"));
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.written
            .lock()
            .expect("poisoned")
            .insert(location.clone(), Instant::now());
        if self.roll(self.config.put_ambiguous_rate) {
            return Err(injected("put (after writing)"));
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        if self.roll(self.config.put_error_rate) {
            return Err(injected("multipart put"));
        }
        self.written
            .lock()
            .expect("poisoned")
            .insert(location.clone(), Instant::now());
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            self.counts.heads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counts.gets.fetch_add(1, Ordering::Relaxed);
        }
        self.delay().await;
        if self.roll(self.config.get_error_rate) {
            return Err(injected("get"));
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.counts.gets.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        if self.roll(self.config.get_error_rate) {
            return Err(injected("get"));
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.counts.deletes.fetch_add(1, Ordering::Relaxed);
        if self.roll(self.config.delete_error_rate) {
            return locations.map(|_| Err(injected("delete"))).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.lagging(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.lagging(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects = self.filter_list(r.objects);
        Ok(r)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.delay().await;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.delay().await;
        self.inner.rename_opts(from, to, options).await
    }
}
