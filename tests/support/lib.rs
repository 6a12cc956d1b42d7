//! Shared helpers of the end-to-end tests: a real server on loopback, Parquet files written
//! the way other tools write them, and reading tables back with iceberg-rust.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use firn_client::{FirnClient, TableIdent, proto as pb};
use firn_core::db::Db;
use firn_core::storage::fault::{FaultConfig, FaultyStore};
use firn_core::{Catalog, Env, FirnStorageFactory, Warehouse, WarehouseConfig};
use futures::TryStreamExt;
use tokio::sync::oneshot;

pub mod s3_proxy;
pub mod seed_failure;

/// A Firn server on a loopback port, on SQLite + a local warehouse in a temp dir.
pub struct TestServer {
    pub endpoint: String,
    /// The Iceberg REST API, e.g. `http://127.0.0.1:PORT`.
    pub rest_endpoint: String,
    /// The admin listener (/metrics, /healthz, /readyz), e.g. `http://127.0.0.1:PORT`.
    pub admin_endpoint: String,
    /// The catalog database URL (replicas share it).
    pub catalog_url: String,
    pub catalog: Catalog,
    pub dir: tempfile::TempDir,
    pub store: Option<Arc<FaultyStore>>,
    /// With authentication on: the first admin's token.
    pub admin_token: Option<String>,
    /// With TLS on: the PEM of the CA that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a server whose warehouse goes through a [`FaultyStore`].
    ///
    /// The catalog is a fresh SQLite file, or, when `FIRN_TEST_POSTGRES` names a server
    /// (`postgres://user:pass@host`), a fresh PostgreSQL database on it.
    pub async fn start_with(faults: Option<FaultConfig>) -> Self {
        Self::start_at(tempfile::tempdir().expect("temp dir"), faults).await
    }

    /// Starts a server whose data directory is a fresh directory under `parent` (as a
    /// user's server keeps `./firn-data` in their working directory), not in the system's
    /// temp dir.
    pub async fn start_in(parent: &std::path::Path) -> Self {
        std::fs::create_dir_all(parent).expect("parent of the data directory");
        Self::start_at(tempfile::tempdir_in(parent).expect("data dir"), None).await
    }

    /// Starts a server on the test S3 server (started if `FIRN_TEST_S3` names none), on a
    /// fresh prefix of the test bucket, whatever backend the suite runs on.
    pub async fn start_on_s3(faults: Option<FaultConfig>) -> Self {
        Self::start_on_s3_at(&s3_server(), faults).await
    }

    /// [`TestServer::start_on_s3`] with the S3 endpoint `endpoint` (e.g. a proxy in front
    /// of the test S3 server).
    pub async fn start_on_s3_at(endpoint: &str, faults: Option<FaultConfig>) -> Self {
        let config = WarehouseConfig {
            url: format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple()),
            options: s3_options(endpoint),
        };
        Self::start_on(tempfile::tempdir().expect("temp dir"), config, faults).await
    }

    async fn start_at(dir: tempfile::TempDir, faults: Option<FaultConfig>) -> Self {
        let config = warehouse_config(&dir);
        Self::start_on(dir, config, faults).await
    }

    /// Starts a server on the warehouse `config` names (its data directory for the
    /// catalog a fresh temp dir).
    pub async fn start_on_warehouse(config: WarehouseConfig) -> Self {
        Self::start_on(tempfile::tempdir().expect("temp dir"), config, None).await
    }

    async fn start_on(
        dir: tempfile::TempDir,
        config: WarehouseConfig,
        faults: Option<FaultConfig>,
    ) -> Self {
        let url = catalog_url(&dir).await;
        let (warehouse, store) = match faults {
            Some(f) => {
                // The faults wrap the real client of the store (local disk or S3).
                let real = Warehouse::open(config.clone()).unwrap().store().clone();
                let store = Arc::new(FaultyStore::new(real, f));
                (
                    Warehouse::with_store(config, store.clone()).unwrap(),
                    Some(store),
                )
            }
            None => (Warehouse::open(config).unwrap(), None),
        };
        let mut server = Self::serve(&url, warehouse).await;
        server.dir = dir;
        server.store = store;
        server
    }

    /// A server that requires authentication on every transport; its first admin's token
    /// is [`TestServer::admin_token`].
    pub async fn start_secured() -> Self {
        Self::start_secured_on(None).await
    }

    /// [`TestServer::start_secured`] on `warehouse` (default: the suite's).
    pub async fn start_secured_on(warehouse: Option<WarehouseConfig>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = catalog_url(&dir).await;
        let config = warehouse.unwrap_or_else(|| warehouse_config(&dir));
        let mut server = Self::serve_auth(&url, Warehouse::open(config).unwrap(), true, None).await;
        server.dir = dir;
        server
    }

    /// [`TestServer::start_secured`] with TLS on both listeners, under a CA made for it
    /// (its PEM in [`TestServer::ca_pem`]); data directory under `parent`.
    pub async fn start_secured_tls_in(parent: &std::path::Path) -> Self {
        std::fs::create_dir_all(parent).expect("parent of the data directory");
        let dir = tempfile::tempdir_in(parent).expect("data dir");
        let tls = generate_certificates(dir.path());
        let url = catalog_url(&dir).await;
        let config =
            WarehouseConfig::new(format!("file://{}", dir.path().join("warehouse").display()));
        let mut server =
            Self::serve_auth(&url, Warehouse::open(config).unwrap(), true, Some(&tls)).await;
        server.dir = dir;
        server
    }

    /// A second server on the same catalog database and warehouse: another replica.
    pub async fn replica(&self) -> Self {
        let config = self.catalog.warehouse().config().clone();
        Self::serve(&self.catalog_url, Warehouse::open(config).unwrap()).await
    }

    async fn serve(url: &str, warehouse: Warehouse) -> Self {
        Self::serve_auth(url, warehouse, false, None).await
    }

    async fn serve_auth(
        url: &str,
        warehouse: Warehouse,
        auth: bool,
        tls: Option<&TlsFiles>,
    ) -> Self {
        let db = Db::connect(url).await.expect("catalog database");
        let catalog = Catalog::open_with(db, Arc::new(warehouse), Env::default())
            .await
            .expect("catalog")
            .with_auth(firn_core::AuthConfig {
                required: auth,
                ..Default::default()
            });
        let admin_token = if auth {
            catalog
                .bootstrap_admin(None)
                .await
                .expect("bootstrap admin")
                .map(|t| t.token.expose().to_string())
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = |alpn: &[&[u8]]| {
            tls.map(|t| firn_net::tls::acceptor(&t.cert, &t.key, alpn).expect("TLS acceptor"))
        };
        // A certificate names a host; plain endpoints keep the address.
        let host = if tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!(
            "{scheme}://{host}:{}",
            listener.local_addr().unwrap().port()
        );
        let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_endpoint = format!(
            "{scheme}://{host}:{}",
            rest_listener.local_addr().unwrap().port()
        );
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_endpoint = format!("http://{}", admin_listener.local_addr().unwrap());
        let (admin_tx, admin_rx) = oneshot::channel::<()>();
        tokio::spawn(firn_admin::serve(catalog.clone(), admin_listener, async {
            let _ = admin_rx.await;
        }));
        let (tx, rx) = oneshot::channel();
        let (rest_tx, rest_rx) = oneshot::channel::<()>();
        let grpc_options = firn_server::ServeOptions {
            limits: firn_net::Limits::default(),
            tls: acceptor(&[b"h2"]),
        };
        tokio::spawn(firn_server::serve_with(
            catalog.clone(),
            grpc_options,
            listener,
            async {
                let _ = rx.await;
                let _ = rest_tx.send(());
                let _ = admin_tx.send(());
            },
        ));
        tokio::spawn(firn_rest::serve(
            catalog.clone(),
            firn_rest::RestConfig {
                tls: acceptor(&[b"http/1.1"]),
                ..firn_rest::RestConfig::default()
            },
            rest_listener,
            async {
                let _ = rest_rx.await;
            },
        ));
        Self {
            endpoint,
            rest_endpoint,
            admin_endpoint,
            catalog_url: url.to_string(),
            catalog,
            dir: tempfile::tempdir().expect("temp dir"),
            store: None,
            admin_token,
            ca_pem: tls.map(|t| std::fs::read(&t.ca).expect("CA certificate")),
            shutdown: Some(tx),
        }
    }

    /// A client of the server; with authentication on, the first admin's.
    pub async fn client(&self) -> FirnClient {
        self.client_as(self.admin_token.as_deref()).await
    }

    /// A client that sends `token` (none: no credential), trusting the server's CA.
    pub async fn client_as(&self, token: Option<&str>) -> FirnClient {
        let options = firn_client::ConnectOptions {
            token: token.map(str::to_string),
            ca_cert_pem: self.ca_pem.clone(),
        };
        FirnClient::connect_with(&self.endpoint, &options)
            .await
            .expect("connect")
    }

    /// A client with the first admin's token.
    pub async fn admin(&self) -> FirnClient {
        self.client_as(self.admin_token.as_deref()).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A CA and the server certificate it signed (for `localhost` and 127.0.0.1), as PEM files.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a fresh CA and server certificate into `dir`.
pub fn generate_certificates(dir: &std::path::Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Firn test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// The catalog of a test server: a fresh SQLite file in `dir`, or, when
/// `FIRN_TEST_POSTGRES` names a server (`postgres://user:pass@host`), a fresh PostgreSQL
/// database on it.
async fn catalog_url(dir: &tempfile::TempDir) -> String {
    match std::env::var("FIRN_TEST_POSTGRES") {
        Ok(server) => fresh_postgres_db(&server).await,
        Err(_) => format!("sqlite://{}", dir.path().join("catalog.db").display()),
    }
}

/// The S3-compatible server the suite runs on, when `FIRN_TEST_S3` names its endpoint
/// (`tools/start-s3.sh` starts one and prints it).
pub fn test_s3() -> Option<String> {
    std::env::var("FIRN_TEST_S3").ok().filter(|s| !s.is_empty())
}

/// The endpoint of the test S3 server: `FIRN_TEST_S3`, or one `tools/start-s3.sh` starts
/// (it reuses a server already running).
pub fn s3_server() -> String {
    static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Some(e) = test_s3() {
                return e;
            }
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/start-s3.sh");
            let out = std::process::Command::new(script)
                .arg(TEST_BUCKET)
                .output()
                .expect("run tools/start-s3.sh");
            assert!(
                out.status.success(),
                "tools/start-s3.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .clone()
}

/// The bucket of the S3 runs (`tools/start-s3.sh firn-test` creates it); every server gets
/// its own prefix in it.
pub const TEST_BUCKET: &str = "firn-test";

/// The warehouse options of the test S3 server: the keys are moto's placeholders.
pub fn s3_options(endpoint: &str) -> HashMap<String, String> {
    [
        ("endpoint", endpoint),
        ("allow_http", "true"),
        ("region", "us-east-1"),
        ("access_key_id", "firn-test"),
        ("secret_access_key", "firn-test-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A test server's warehouse: `dir`/warehouse on local disk, or a fresh prefix of the test
/// bucket when the suite runs on S3.
pub fn warehouse_config(dir: &tempfile::TempDir) -> WarehouseConfig {
    match test_s3() {
        Some(endpoint) => WarehouseConfig {
            url: format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple()),
            options: s3_options(&endpoint),
        },
        None => WarehouseConfig::new(format!("file://{}", dir.path().join("warehouse").display())),
    }
}

/// `firn serve` arguments that put a server's catalog and warehouse where the suite runs:
/// none for SQLite + local disk (`DATA_DIR/catalog.db`, `DATA_DIR/warehouse`); with
/// `FIRN_TEST_POSTGRES` a database, and with `FIRN_TEST_S3` a prefix of the test bucket, each
/// named after `data_dir`, so that a restarted server finds its tables.
pub fn serve_backend_args(data_dir: &std::path::Path) -> Vec<String> {
    let name: String = data_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_string();
    let mut args = Vec::new();
    if let Ok(server) = std::env::var("FIRN_TEST_POSTGRES") {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let db = format!("firn_test_{:016x}", h.finish());
        blocking(|| runtime().block_on(ensure_postgres_db(&server, &db)));
        args.extend(["--catalog-url".to_string(), format!("{server}/{db}")]);
    }
    if let Some(endpoint) = test_s3() {
        args.extend([
            "--warehouse".to_string(),
            format!("s3://{TEST_BUCKET}/{name}"),
        ]);
        let mut options: Vec<_> = s3_options(&endpoint).into_iter().collect();
        options.sort();
        for (k, v) in options {
            args.extend(["--warehouse-option".to_string(), format!("{k}={v}")]);
        }
    }
    args
}

/// The catalog database of a server started with [`serve_backend_args`] for `data_dir`,
/// opened for a test to look into (SQLite or PostgreSQL alike).
pub async fn served_catalog(data_dir: &std::path::Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let args = serve_backend_args(data_dir);
    let url = match args.iter().position(|a| a == "--catalog-url") {
        Some(i) => args[i + 1].clone(),
        None => format!("sqlite://{}", data_dir.join("catalog.db").display()),
    };
    sqlx::AnyPool::connect(&url)
        .await
        .expect("the served catalog")
}

/// The store holding `uri` (local disk, or the test S3 server's bucket) and its key there.
fn store_of(uri: &str) -> (Arc<dyn object_store::ObjectStore>, object_store::path::Path) {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoint = s3_server();
        let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
        for (k, v) in s3_options(&endpoint) {
            b = b.with_config(k.parse().unwrap(), v);
        }
        (
            Arc::new(b.build().unwrap()),
            object_store::path::Path::from(key),
        )
    } else {
        let path = local_path(uri);
        (
            Arc::new(object_store::local::LocalFileSystem::new()),
            object_store::path::Path::from_absolute_path(&path).unwrap(),
        )
    }
}

/// Runs `f` to completion on a runtime of its own (the helpers below are called from sync
/// and async test code alike).
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("storage helper"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes an object at `uri` as another engine would (not through Firn).
pub fn put_object(uri: &str, bytes: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let (store, key) = store_of(uri);
    blocking(|| runtime().block_on(store.put(&key, bytes.into())))
        .unwrap_or_else(|e| panic!("put {uri}: {e}"));
}

/// The bytes of the object at `uri`, or `None` if there is none.
pub fn read_object(uri: &str) -> Option<Vec<u8>> {
    use object_store::ObjectStoreExt;
    let (store, key) = store_of(uri);
    blocking(|| {
        runtime().block_on(async {
            match store.get(&key).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get {uri}: {e}"),
            }
        })
    })
}

/// Whether an object exists at `uri`.
pub fn object_exists(uri: &str) -> bool {
    read_object(uri).is_some()
}

/// Every object below the directory `prefix` names, as URIs in its scheme (the tests may
/// list; Firn never does).
pub fn list_objects(prefix: &str) -> std::collections::BTreeSet<String> {
    let (store, key) = store_of(prefix.trim_end_matches('/'));
    let scheme_root = match prefix.strip_prefix("s3://") {
        Some(rest) => format!("s3://{}/", rest.split('/').next().unwrap()),
        None => "file:///".to_string(),
    };
    blocking(|| {
        runtime().block_on(async {
            let listed: Vec<_> = store
                .list(Some(&key))
                .try_collect()
                .await
                .unwrap_or_default();
            listed
                .into_iter()
                .map(|m| format!("{scheme_root}{}", m.location))
                .collect()
        })
    })
}

/// Creates an empty database on a PostgreSQL server and returns its URL.
pub async fn fresh_postgres_db(server: &str) -> String {
    let name = format!("firn_test_{}", uuid::Uuid::new_v4().simple());
    ensure_postgres_db(server, &name).await;
    format!("{server}/{name}")
}

/// Creates database `name` on a PostgreSQL server unless it exists.
async fn ensure_postgres_db(server: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to FIRN_TEST_POSTGRES");
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .expect("look up the test database");
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
    }
}

pub fn pb_ident(t: &TableIdent) -> Option<pb::TableIdent> {
    Some(pb::TableIdent {
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    })
}

/// The columns of the test tables: `id long not null, name string, ts timestamp`.
pub fn test_fields() -> Vec<pb::Field> {
    [
        ("id", "long", true),
        ("name", "string", false),
        ("ts", "timestamp", false),
    ]
    .into_iter()
    .map(|(n, t, r)| pb::Field {
        name: n.into(),
        r#type: t.into(),
        required: r,
        doc: String::new(),
    })
    .collect()
}

/// Creates `ns.name` (and `ns`), optionally partitioned by `day(ts)`.
pub async fn create_table(
    client: &FirnClient,
    ns: &str,
    name: &str,
    by_day: bool,
) -> (TableIdent, pb::Table) {
    match client.create_namespace(ns).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
        Err(e) => panic!("create namespace: {e}"),
    }
    let ident = TableIdent::new(ns, name);
    let t = client
        .create_table(pb::CreateTableRequest {
            ident: pb_ident(&ident),
            fields: test_fields(),
            partition_by: if by_day {
                vec![pb::PartitionField {
                    source_column: "ts".into(),
                    transform: "day".into(),
                    name: String::new(),
                }]
            } else {
                vec![]
            },
            location: String::new(),
            properties: HashMap::new(),
        })
        .await
        .expect("create table");
    (ident, t)
}

/// Commits `n` one-row appends to `ident` (at `location`) from `writers` concurrent
/// clients, each adding its own small Parquet file: a long history, built quickly.
/// Returns every commit's `(sequence number, snapshot id)`, in sequence order.
pub async fn build_history(
    endpoint: &str,
    ident: &TableIdent,
    location: &str,
    n: usize,
    writers: usize,
) -> Vec<(i64, i64)> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let endpoint = endpoint.to_string();
        let location = location.to_string();
        let ident = ident.clone();
        tasks.push(tokio::spawn(async move {
            let c = FirnClient::connect(&endpoint).await.expect("connect");
            let mut out = Vec::new();
            for i in (w..n).step_by(writers) {
                let (uri, size) = write_parquet(
                    &location,
                    &format!("h-{i}.parquet"),
                    &batch(i as i64..i as i64 + 1, 0),
                );
                let r = c
                    .commit_once(append_request(&ident, vec![data_file(&uri, size)]))
                    .await
                    .expect("append");
                out.push((r.sequence_number, r.snapshot_id));
            }
            out
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.expect("writer"));
    }
    ids.sort();
    ids
}

/// Microseconds of 2026-11-22 00:00 UTC, plus `day` days.
pub fn day_micros(day: i64) -> i64 {
    (1_795_305_600 + day * 86_400) * 1_000_000
}

/// A batch with ids `ids`, all on day `day`, in a plain Arrow schema (no field ids), as
/// pyarrow or Spark would write it.
pub fn batch(ids: Range<i64>, day: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let n = ids.end - ids.start;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("row-{i}")),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|k| day_micros(day) + k * 1_000_000),
            )),
        ],
    )
    .unwrap()
}

/// Writes `batch` as a Parquet file at `<table location>/data/<name>` (local disk or S3, as
/// an engine writing the table would); returns (URI, size).
pub fn write_parquet(location: &str, name: &str, batch: &RecordBatch) -> (String, u64) {
    let uri = format!("{location}/data/{name}");
    let bytes = parquet_bytes(batch);
    let size = bytes.len() as u64;
    put_object(&uri, bytes);
    (uri, size)
}

/// `batch` as the bytes of a Parquet file.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    bytes
}

/// The local path of a `file://` URI.
pub fn local_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").expect("file:// URI"))
}

/// Asserts that a snapshot's manifest list is a complete object in the store, and that
/// every manifest it names is one too (as a reader outside the server would need them).
pub fn assert_snapshot_files_on_disk(manifest_list: &str) {
    let bytes =
        read_object(manifest_list).unwrap_or_else(|| panic!("manifest list {manifest_list}"));
    let list =
        iceberg::spec::ManifestList::parse_with_version(&bytes, iceberg::spec::FormatVersion::V2)
            .expect("a complete manifest list");
    for m in list.entries() {
        assert!(
            object_exists(&m.manifest_path),
            "{} missing",
            m.manifest_path
        );
    }
}

/// A data file without statistics (Firn reads the footer).
pub fn data_file(uri: &str, size: u64) -> pb::DataFile {
    pb::DataFile {
        path: uri.to_string(),
        file_size_bytes: size,
        stats: None,
    }
}

pub fn append_request(ident: &TableIdent, files: Vec<pb::DataFile>) -> pb::CommitRequest {
    pb::CommitRequest {
        ident: pb_ident(ident),
        commit_id: uuid::Uuid::now_v7().to_string(),
        base_snapshot_id: None,
        operation: Some(pb::commit_request::Operation::Append(pb::AppendOp {
            add: files,
        })),
        summary: HashMap::new(),
    }
}

/// A request that removes `paths`, based on `base`.
pub fn delete_request(
    ident: &TableIdent,
    commit_id: &str,
    base: Option<i64>,
    paths: Vec<String>,
) -> pb::CommitRequest {
    pb::CommitRequest {
        ident: pb_ident(ident),
        commit_id: commit_id.to_string(),
        base_snapshot_id: base,
        operation: Some(pb::commit_request::Operation::Delete(pb::DeleteFilesOp {
            paths,
        })),
        summary: HashMap::new(),
    }
}

/// A request that adds `add` and removes what `remove` selects, based on `base`.
pub fn overwrite_request(
    ident: &TableIdent,
    commit_id: &str,
    base: Option<i64>,
    add: Vec<pb::DataFile>,
    remove: pb::overwrite_op::Remove,
) -> pb::CommitRequest {
    pb::CommitRequest {
        ident: pb_ident(ident),
        commit_id: commit_id.to_string(),
        base_snapshot_id: base,
        operation: Some(pb::commit_request::Operation::Overwrite(pb::OverwriteOp {
            add,
            remove: Some(remove),
        })),
        summary: HashMap::new(),
    }
}

/// Reads the `id` column of a table (at a snapshot, or current) with iceberg-rust, from the
/// metadata file Firn hands out: what any Iceberg engine would see.
pub async fn read_ids(client: &FirnClient, ident: &TableIdent, snapshot: Option<i64>) -> Vec<i64> {
    let t = client.load_table(ident, false).await.expect("load table");
    // The storage access the server hands out, as any client of it would use.
    let storage = client.storage_config(ident).await.expect("storage access");
    let file_io = FirnStorageFactory::file_io(&storage);
    let table = iceberg::table::StaticTable::from_metadata_file(
        &t.metadata_location,
        iceberg::TableIdent::from_strs([&ident.namespace, &ident.name]).unwrap(),
        file_io,
    )
    .await
    .expect("iceberg reads the metadata")
    .into_table();
    if t.current_snapshot_id.is_none() {
        return Vec::new();
    }
    let mut scan = table.scan().select(["id"]);
    if let Some(s) = snapshot {
        scan = scan.snapshot_id(s);
    }
    let batches: Vec<RecordBatch> = scan
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .expect("iceberg reads the data");
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// A child process (a `firn serve`) killed when dropped, so that a failing test leaves no
/// server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Runs `firn serve` on loopback ports in a fresh data directory with `args`, which must
/// stop it at start: returns the one line it printed on stderr (asserting there is one).
pub fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--rest-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("FIRN_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started with {args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {err}");
    lines[0].to_string()
}

/// The path of the `firn` binary built next to the test executable.
pub fn firn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FIRN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("firn");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --bins)",
        bin.display()
    );
    bin
}

/// Waits until a TCP port accepts connections.
pub async fn wait_for_port(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// A free loopback port.
/// A moto server of its own that authenticates every request and checks its SigV4
/// signature (the shared test S3 server takes any), with one bucket and the keys of a user
/// allowed all of S3. Stops when dropped.
pub struct CheckingS3 {
    pub endpoint: String,
    pub bucket: String,
    /// The warehouse options of its user (endpoint, region, keys).
    pub options: HashMap<String, String>,
    _process: KillOnDrop,
}

impl CheckingS3 {
    pub async fn start() -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let venv = root.join("tools/.venv/bin");
        let port = free_port();
        let process = KillOnDrop(
            std::process::Command::new(venv.join("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // The set-up's four actions (tools/python/moto_iam.py) go unchecked.
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("moto_server (run tools/setup-python.sh)"),
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not start on {endpoint}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let bucket = "signed".to_string();
        let out = tokio::process::Command::new(venv.join("python"))
            .arg(root.join("tools/python/moto_iam.py"))
            .args([&endpoint, &bucket])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "moto_iam.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut options = s3_options(&endpoint);
        for k in ["access_key_id", "secret_access_key"] {
            options.insert(k.into(), keys[k].as_str().unwrap().into());
        }
        Self {
            endpoint,
            bucket,
            options,
            _process: process,
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Iceberg REST call over a fresh loopback connection (HTTP/1.1, `Connection: close`):
/// the status and the body parsed as JSON (`Null` when empty or not JSON).
pub async fn rest_call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    rest_call_with(server, method, path, &[], body).await
}

/// [`rest_call`] with extra request headers.
pub async fn rest_call_with(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let addr = server
        .rest_endpoint
        .strip_prefix("http://")
        .expect("an http endpoint");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, serde_json::from_str(&payload).unwrap_or_default())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// An ES256 key of a test OpenID Connect issuer: it signs JWTs and publishes its JWK.
pub struct JwtKey {
    kid: String,
    pem: String,
    jwk: serde_json::Value,
}

impl JwtKey {
    pub fn generate(kid: &str) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        // The uncompressed point: 0x04, then x and y.
        let raw = pair.public_key_raw();
        JwtKey {
            kid: kid.to_string(),
            pem: pair.serialize_pem(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..]),
            }),
        }
    }

    /// A JWKS of `keys`.
    pub fn set(keys: &[&JwtKey]) -> serde_json::Value {
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).expect("EC key");
        jsonwebtoken::encode(&header, claims, &key).expect("signed")
    }
}
