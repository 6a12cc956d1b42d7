//! TLS for both listeners (rustls, ring): the server's certificate chain and key from PEM
//! files, and the handshake, bounded by the header-read deadline so a client that opens a
//! connection and sends nothing cannot hold a handshake open.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

/// A TLS acceptor with the chain of `cert` and the key of `key` (PEM files), offering
/// `alpn` (e.g. `h2` for gRPC, `http/1.1` for REST). Errors name the file and what is wrong.
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> io::Result<TlsAcceptor> {
    let bad = |what: &Path, e: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io::Error::other(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| {
        bad(
            cert,
            format!("the certificate and key do not go together: {e}"),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS handshake on `io`, within `deadline`.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    deadline: Duration,
) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(deadline, acceptor.accept(io)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the TLS handshake did not finish within the header-read timeout",
        )),
    }
}
