//! Per-call observation for the gRPC transport: a span with the call's request id (the
//! client's `x-request-id`, else a fresh one, echoed back), the request metrics by method
//! and status code, and one log line per failed call.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;

/// The canonical gRPC name of a status code, e.g. `NOT_FOUND`.
pub fn code_name(c: Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// What is recorded when a call's response has been sent (or abandoned).
pub(crate) struct Record {
    pub method: String,
    pub started: Instant,
    pub span: tracing::Span,
    pub code: Option<Code>,
}

impl Drop for Record {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        // A response body dropped before its trailers: the client went away.
        let code = self.code.unwrap_or(Code::Cancelled);
        firn_core::metrics::global().request("grpc", &self.method, code_name(code), took);
        if code != Code::Ok {
            self.span.in_scope(|| {
                tracing::info!(
                    method = self.method,
                    code = code_name(code),
                    took_ms = took.as_secs_f64() * 1e3,
                    "request failed"
                )
            });
        }
    }
}

impl Record {
    /// Notes the status of response headers (a trailers-only error answer has it there).
    pub(crate) fn headers(&mut self, headers: &http::HeaderMap) {
        if let Some(c) = status_of(headers) {
            self.code = Some(c);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that notes the status in its trailers.
    pub(crate) struct Observed<B> {
        #[pin]
        inner: B,
        record: Record,
    }
}

impl<B> Observed<B> {
    pub(crate) fn new(inner: B, record: Record) -> Self {
        Self { inner, record }
    }
}

impl<B: http_body::Body> http_body::Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(t) = frame.trailers_ref()
        {
            this.record.headers(t);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
