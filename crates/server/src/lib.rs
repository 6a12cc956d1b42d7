//! The gRPC transport of Firn: validates and converts requests, calls the shared
//! [`Catalog`], and maps its errors to status codes in one place ([`status`]).
//!
//! No catalog logic lives here.

mod access;
mod convert;
pub mod observe;
mod service;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use firn_core::Catalog;
use firn_net::{ConnHandle, Guarded};
use firn_proto::v1::access_service_server::AccessServiceServer;
use firn_proto::v1::catalog_service_server::CatalogServiceServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use access::GrpcAccess;
pub use convert::status;
pub use service::GrpcCatalog;

/// Largest request message the server decodes (a commit naming ~100k files fits).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The server pings a connection (HTTP/2 PING) this often, to find peers that are gone...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ... and closes it when the ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the gRPC listener serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// The connection cap, header-read (and TLS handshake) and idle deadlines.
    pub limits: firn_net::Limits,
    /// Serve TLS with this acceptor (it should offer ALPN `h2`); `None`: plain text.
    pub tls: Option<firn_net::tls::TlsAcceptor>,
}

/// Serves the catalog API, health and reflection on `listener` until `shutdown` resolves,
/// with the default connection limits, in plain text.
pub async fn serve(
    catalog: Catalog,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(catalog, ServeOptions::default(), listener, shutdown).await
}

/// [`serve`] with connection limits and TLS: at most `limits.max_connections` open (the one
/// idle longest is closed to make room), the TLS handshake and HTTP/2 preface within
/// `header_read_timeout` of the accept, and a connection with no call in flight for
/// `idle_timeout` closed; peers that stop answering keepalive pings are dropped.
pub async fn serve_with(
    catalog: Catalog,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // The health check answers with readiness (database and warehouse reachable).
    let readiness = tokio::spawn(report_readiness(catalog.clone(), health_reporter));
    let _stop_readiness = AbortOnDrop(readiness);
    // Reflection describes the API to anyone: served only while authentication is off.
    let reflection = (!catalog.auth_required()).then(|| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(firn_proto::v1::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the embedded descriptor set is valid")
    });
    let access = AccessServiceServer::new(GrpcAccess::new(catalog.clone()));
    let service = CatalogServiceServer::new(GrpcCatalog::new(catalog))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let listener =
        firn_net::Listener::new(listener, options.limits, firn_net::Protocol::Http2, "gRPC");
    // On shutdown, idle connections are closed at once (and busy ones as they go idle):
    // a client that keeps its channel open must not hold the shutdown to its deadline.
    let closer = listener.closer();
    let shutdown = async move {
        shutdown.await;
        closer.close_idle();
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(InFlightLayer)
        .add_service(health)
        .add_optional_service(reflection)
        .add_service(service)
        .add_service(access)
        .serve_with_incoming_shutdown(incoming(listener, options.tls), shutdown)
        .await
}

/// How often the gRPC health status is brought up to date with readiness.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the health status of the catalog service (and the server as a whole, `""`) to
/// SERVING while the catalog database and the warehouse answer, NOT_SERVING otherwise.
async fn report_readiness(catalog: Catalog, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let name = <CatalogServiceServer<GrpcCatalog> as tonic::server::NamedService>::NAME;
    let mut last = None;
    loop {
        let ready = catalog.ready().await.is_ok();
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(ready) {
            if !ready {
                tracing::warn!("not ready: the catalog database or the warehouse does not answer");
            } else if last.is_some() {
                tracing::info!("ready again");
            }
            reporter.set_service_status(name, status).await;
            reporter.set_service_status("", status).await;
            last = Some(ready);
        }
        tokio::time::sleep(READINESS_INTERVAL).await;
    }
}

/// Aborts a task when dropped (when the server future ends or is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most TLS handshakes waiting for tonic to take their connection.
const HANDSHAKES_QUEUED: usize = 64;

/// The listener's connections as tonic takes them (accept errors are waited out inside:
/// tonic would retry at once). TLS handshakes run on their own tasks, so a slow client
/// delays only its own connection.
fn incoming(
    listener: firn_net::Listener,
    tls: Option<firn_net::tls::TlsAcceptor>,
) -> impl futures::Stream<Item = std::io::Result<GrpcConn>> {
    use futures::StreamExt;
    let Some(acceptor) = tls else {
        return futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await;
            Some((Ok(GrpcConn::Plain(conn)), l))
        })
        .left_stream();
    };
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKES_QUEUED);
    let deadline = listener.limits().header_read_timeout;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                conn = listener.accept() => conn,
                // tonic stopped taking connections: the server is shutting down.
                () = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match firn_net::tls::handshake(&acceptor, conn, deadline).await {
                    Ok(tls) => {
                        let _ = tx.send(GrpcConn::Tls(Box::new(tls))).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "gRPC TLS handshake failed"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let conn = rx.recv().await?;
        Some((Ok(conn), rx))
    })
    .right_stream()
}

/// An accepted connection, in plain text or TLS; its connect info carries the handle that
/// marks its calls.
enum GrpcConn {
    Plain(firn_net::Conn<TcpStream>),
    Tls(Box<firn_net::tls::TlsStream<firn_net::Conn<TcpStream>>>),
}

impl GrpcConn {
    fn conn(&self) -> &firn_net::Conn<TcpStream> {
        match self {
            GrpcConn::Plain(c) => c,
            GrpcConn::Tls(t) => t.get_ref().0,
        }
    }
}

#[derive(Clone)]
struct ConnInfo {
    tcp: TcpConnectInfo,
    conn: ConnHandle,
}

impl Connected for GrpcConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.conn().get_ref().connect_info(),
            conn: self.conn().handle(),
        }
    }
}

/// Delegates an I/O method to whichever stream the connection is.
macro_rules! either {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            GrpcConn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            GrpcConn::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        either!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            GrpcConn::Plain(c) => c.is_write_vectored(),
            GrpcConn::Tls(t) => t.is_write_vectored(),
        }
    }
}

/// Marks every call in flight on its connection until its response has been sent (so
/// idle deadlines never cut a call), and hands the handlers the peer's address as
/// tonic's own [`TcpConnectInfo`] (`Request::remote_addr`).
#[derive(Clone, Copy)]
struct InFlightLayer;

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight(inner)
    }
}

#[derive(Clone)]
struct InFlight<S>(S);

impl<S, B, ResBody> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Guarded<observe::Observed<ResBody>>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let info = req.extensions_mut().remove::<ConnInfo>();
        let guard = info.map(|i| {
            req.extensions_mut().insert(i.tcp);
            i.conn.request()
        });
        let id = firn_net::request_id(req.headers().get("x-request-id").map(|v| v.as_bytes()));
        let span = tracing::info_span!("request", request_id = %id, transport = "grpc");
        let mut record = observe::Record {
            method: req.uri().path().to_string(),
            started: std::time::Instant::now(),
            span: span.clone(),
            code: None,
        };
        let call = self.0.call(req).instrument(span);
        Box::pin(async move {
            let mut resp = call.await?;
            record.headers(resp.headers());
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok(resp.map(|body| Guarded::new(observe::Observed::new(body, record), guard)))
        })
    }
}

/// Binds `addr` and serves (see [`serve`]).
pub async fn bind_and_serve(
    catalog: Catalog,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve(catalog, listener, shutdown)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn a_call_is_in_flight_until_its_response_is_sent_and_knows_its_peer() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let l = firn_net::Listener::new(
            l,
            firn_net::Limits::default(),
            firn_net::Protocol::Http2,
            "test",
        );
        let client = TcpStream::connect(addr).await.unwrap();
        let conn = GrpcConn::Plain(l.accept().await);
        let info = conn.connect_info();
        let handle = info.conn.clone();
        let mut svc = InFlightLayer.layer(tower::service_fn(|req: http::Request<()>| async move {
            let peer = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr());
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(format!("{peer:?}")),
            )))
        }));
        let mut req = http::Request::new(());
        req.extensions_mut().insert(info);
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(handle.in_flight(), 1, "the response has not been sent yet");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("{:?}", Some(client.local_addr().unwrap()))
        );
        assert_eq!(handle.in_flight(), 0);
    }
}
