//! One gRPC channel over several replicas of a server, for failover.
//!
//! Calls go to one replica at a time (the current one). When a call cannot reach it (the
//! connection is refused or cannot be made: the request was never sent), the call moves on
//! to the next replica at once, so even a call that must not be repeated fails over
//! safely. When a call reaches a replica and then fails in transit (the replica died
//! mid-call), the outcome is unknown: the call fails `UNAVAILABLE`, the next call goes to
//! the next replica, and the retrying calls of [`crate::FirnClient`] (commits under the
//! same commit id, idempotent reads) repeat it there; a commit that had landed is answered
//! with its first result.
//!
//! Request bodies are buffered (gRPC requests here are single messages) so that a call can
//! be sent again to another replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::transport::Channel;

/// Channels to the replicas, tried in turn from the current one.
#[derive(Clone, Debug)]
pub struct Failover {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
}

impl Failover {
    pub fn new(channels: Vec<Channel>) -> Self {
        assert!(!channels.is_empty(), "at least one endpoint");
        Self {
            channels: channels.into(),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Whether `e` says the connection could not be made, so the request was never sent.
fn not_sent(e: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        if s.to_string().contains("tcp connect error") {
            return true;
        }
        source = s.source();
    }
    false
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each channel is made ready in `call`, where a failed one can be skipped.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channels = self.channels.clone();
        let current = self.current.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            if channels.len() == 1 {
                let mut ch = channels[0].clone();
                futures::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
                return ch.call(http::Request::from_parts(parts, body)).await;
            }
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(status) => return Ok(status.into_http()),
            };
            let first = current.load(Ordering::Relaxed);
            let mut last = None;
            for k in 0..channels.len() {
                let i = (first + k) % channels.len();
                let mut ch = channels[i].clone();
                let mut req =
                    http::Request::new(Body::new(http_body_util::Full::new(bytes.clone())));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                let sent = async {
                    futures::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
                    ch.call(req).await
                };
                match sent.await {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        // The next call starts at the next replica.
                        let _ = current.compare_exchange(
                            i,
                            (i + 1) % channels.len(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        if !not_sent(&e) {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                }
            }
            Err(last.expect("at least one channel was tried"))
        })
    }
}
