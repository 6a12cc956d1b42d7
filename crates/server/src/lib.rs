//! The gRPC transport of Firn: validates and converts requests, calls the shared
//! [`Catalog`], and maps its errors to status codes in one place ([`status`]).
//!
//! No catalog logic lives here.

mod convert;
mod service;

use std::net::SocketAddr;

use firn_core::Catalog;
use firn_proto::v1::catalog_service_server::CatalogServiceServer;
use tokio::net::TcpListener;

pub use convert::status;
pub use service::GrpcCatalog;

/// Largest request message the server decodes (a commit naming ~100k files fits).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serves the catalog API, health and reflection on `listener` until `shutdown` resolves.
pub async fn serve(
    catalog: Catalog,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CatalogServiceServer<GrpcCatalog>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(firn_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let service = CatalogServiceServer::new(GrpcCatalog::new(catalog))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream_from(listener), shutdown)
        .await
}

fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
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
