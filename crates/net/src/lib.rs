//! Connection limits of Firn's listeners, shared by the gRPC and the Iceberg REST transport.
//!
//! A [`Listener`] caps the connections it has open at once ([`Limits::max_connections`]).
//! A connection beyond the cap is held, unread, until one closes, and to make room the
//! connection that has been idle longest (no request in flight, nothing of a next request
//! read) is closed, as nginx reuses keep-alive connections: so a flood of idle connections
//! cannot shut out clients that send requests, and the process never runs out of file
//! descriptors because of them. Every connection also has deadlines:
//!
//! - **header read**: HTTP/1 — from the accept, or from the first byte of the next request
//!   on a kept-alive connection, until the request's head has been read (the service has
//!   it); HTTP/2 — from the accept until the client's connection preface has arrived.
//! - **idle**: a connection with no request in flight for this long is closed.
//! - **stalled writes**: a connection whose writes make no progress for the idle timeout
//!   (the client stopped reading its response) is closed, request in flight or not.
//!
//! Otherwise a request in flight is never cut: the deadlines and making room apply only
//! to a connection with none. The transports mark requests with [`ConnHandle::request`]; a
//! request lasts until its response body has been sent ([`Guarded`]). A connection is
//! closed by ending its reads: the HTTP server sees the client's end of stream, finishes
//! and drops the socket, which frees the connection's slot.

pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// HTTP/1: a request's head must be read within this (from the accept, or from its
    /// first byte); HTTP/2: the client's preface must arrive within this of the accept.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a listener's connections speak: it decides what "a request has started" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Bytes read on a connection with no request in flight are the head of the next one.
    Http1,
    /// Reads are frames of any kind (pings too); only requests count as use.
    Http2,
}

const NOT_STALLED: u64 = u64::MAX;

/// The HTTP/2 client connection preface is 24 bytes.
const H2_PREFACE_LEN: u64 = 24;
/// How long to wait before accepting again after an error that is not one connection's
/// (out of file descriptors, out of memory): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a full listener looks again for a connection to close, while it waits.
const FULL_RETRY: Duration = Duration::from_millis(50);
/// Warnings that may repeat (full listener, accept errors) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Shared {
    name: &'static str,
    limits: Limits,
    protocol: Protocol,
    /// Times are milliseconds since this instant, so connections compare.
    epoch: Instant,
    slots: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    full_warned: Mutex<Option<Instant>>,
    accept_warned: Mutex<Option<Instant>>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Asks the connection idle for longest to close; false if none can close.
    fn close_longest_idle(&self) -> bool {
        let open = self.open.lock().expect("poisoned");
        let victim = open
            .iter()
            .filter(|(_, c)| c.closable(self.protocol))
            .min_by_key(|(id, c)| (c.idle_since_ms.load(SeqCst), **id));
        match victim {
            Some((_, c)) => {
                tracing::debug!(
                    listener = self.name,
                    "closing an idle connection to make room"
                );
                c.ask_to_close();
                true
            }
            None => false,
        }
    }
}

/// Logs at most once per [`WARN_EVERY`].
fn now_and_then(last: &Mutex<Option<Instant>>, log: impl FnOnce()) {
    let mut last = last.lock().expect("poisoned");
    if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        *last = Some(Instant::now());
        log();
    }
}

/// One connection's state, shared by its reads, its requests and its deadline.
struct ConnState {
    accepted_ms: u64,
    in_flight: AtomicUsize,
    /// Requests handed to the service so far.
    requests: AtomicU64,
    /// When the last request in flight ended (the accept, before any).
    idle_since_ms: AtomicU64,
    /// HTTP/1: bytes of a next request were read since the connection went idle, and when
    /// the first of them arrived.
    reading: AtomicBool,
    reading_since_ms: AtomicU64,
    /// HTTP/2: the client's preface has arrived.
    preface: AtomicBool,
    /// Since when a write has been waiting without progress ([`NOT_STALLED`]: none is).
    write_stalled_since_ms: AtomicU64,
    /// The listener asked this connection to close (to make room, or at shutdown).
    close: AtomicBool,
    changed: Notify,
}

impl ConnState {
    fn idle(&self) -> bool {
        self.in_flight.load(SeqCst) == 0
    }

    /// May be closed now without cutting a request, or one being read.
    fn closable(&self, protocol: Protocol) -> bool {
        !self.close.load(SeqCst)
            && self.idle()
            && (protocol == Protocol::Http2 || !self.reading.load(SeqCst))
    }

    fn ask_to_close(&self) {
        self.close.store(true, SeqCst);
        self.changed.notify_one();
    }

    /// When the connection must be closed (ms since the epoch), if it must.
    fn deadline(&self, shared: &Shared) -> Option<u64> {
        if self.close.load(SeqCst) {
            return Some(0);
        }
        let Limits {
            header_read_timeout: header,
            idle_timeout: idle,
            ..
        } = shared.limits;
        let stalled = match self.write_stalled_since_ms.load(SeqCst) {
            NOT_STALLED => None,
            since => Some(since.saturating_add(millis(idle))),
        };
        if !self.idle() {
            return stalled;
        }
        let (from, timeout) = match shared.protocol {
            Protocol::Http1 if self.requests.load(SeqCst) == 0 => (self.accepted_ms, header),
            Protocol::Http1 if self.reading.load(SeqCst) => {
                (self.reading_since_ms.load(SeqCst), header)
            }
            Protocol::Http2 if !self.preface.load(SeqCst) => (self.accepted_ms, header),
            Protocol::Http1 | Protocol::Http2 => (self.idle_since_ms.load(SeqCst), idle),
        };
        let at = from.saturating_add(millis(timeout));
        Some(stalled.map_or(at, |s| s.min(at)))
    }
}

/// Resolves when the connection must be closed.
async fn expiry(state: Arc<ConnState>, shared: Arc<Shared>) {
    loop {
        // `notify_one` keeps a notification that arrives while nobody waits.
        let changed = state.changed.notified();
        match state.deadline(&shared) {
            None => changed.await,
            Some(at) if shared.now_ms() >= at => return,
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(shared.instant(at)) => {}
                    _ = changed => {}
                }
            }
        }
    }
}

/// A TCP listener with [`Limits`].
pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    /// Limits `listener`; `name` names it in logs (e.g. `"REST"`).
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        protocol: Protocol,
        name: &'static str,
    ) -> Self {
        let limits = Limits {
            max_connections: limits.max_connections.max(1),
            ..limits
        };
        Self {
            listener,
            shared: Arc::new(Shared {
                name,
                limits,
                protocol,
                epoch: Instant::now(),
                slots: Arc::new(Semaphore::new(limits.max_connections)),
                open: Mutex::default(),
                next_id: AtomicU64::new(0),
                full_warned: Mutex::default(),
                accept_warned: Mutex::default(),
            }),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// The next connection, once it has a slot. Never fails: errors of one connection are
    /// skipped, others (no file descriptors left) are waited out.
    pub async fn accept(&self) -> Conn<TcpStream> {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return self.admit(stream).await;
                }
                Err(e) if one_connections_error(&e) => continue,
                Err(e) => {
                    now_and_then(&self.shared.accept_warned, || {
                        tracing::warn!(listener = self.shared.name, error = %e, "cannot accept connections");
                    });
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Waits for a slot for `io`, closing idle connections to make room.
    async fn admit<IO>(&self, io: IO) -> Conn<IO> {
        let shared = &self.shared;
        let slot = match shared.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                now_and_then(&shared.full_warned, || {
                    tracing::warn!(
                        listener = shared.name,
                        max_connections = shared.limits.max_connections,
                        "connection cap reached: new connections wait, idle ones are closed to make room"
                    );
                });
                loop {
                    shared.close_longest_idle();
                    tokio::select! {
                        slot = shared.slots.clone().acquire_owned() => {
                            break slot.expect("the semaphore is never closed");
                        }
                        _ = tokio::time::sleep(FULL_RETRY) => {}
                    }
                }
            }
        };
        Conn::new(io, shared.clone(), slot)
    }

    /// Closes the listener's connections that are idle now, and keeps closing each as it
    /// goes idle: for a shutdown, while the HTTP servers finish the requests in flight.
    pub fn closer(&self) -> Closer {
        Closer(self.shared.clone())
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().expect("poisoned").len()
    }
}

/// See [`Listener::closer`].
#[derive(Clone)]
pub struct Closer(Arc<Shared>);

impl Closer {
    /// Asks every connection with no request in flight (or being read) to close.
    pub fn close_idle(&self) {
        let open = self.0.open.lock().expect("poisoned");
        for c in open.values().filter(|c| c.closable(self.0.protocol)) {
            c.ask_to_close();
        }
    }
}

fn one_connections_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// An accepted connection: holds its slot until dropped, and ends its reads (end of
/// stream) when a deadline passes or the listener needs the room.
pub struct Conn<IO> {
    io: IO,
    id: u64,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
    expiry: Pin<Box<dyn Future<Output = ()> + Send>>,
    closed: bool,
    bytes_read: u64,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Conn<IO> {
    fn new(io: IO, shared: Arc<Shared>, slot: OwnedSemaphorePermit) -> Self {
        let now = shared.now_ms();
        let state = Arc::new(ConnState {
            accepted_ms: now,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            reading: AtomicBool::new(false),
            reading_since_ms: AtomicU64::new(now),
            preface: AtomicBool::new(false),
            write_stalled_since_ms: AtomicU64::new(NOT_STALLED),
            close: AtomicBool::new(false),
            changed: Notify::new(),
        });
        let id = shared.next_id.fetch_add(1, SeqCst);
        shared
            .open
            .lock()
            .expect("poisoned")
            .insert(id, state.clone());
        Self {
            io,
            id,
            expiry: Box::pin(expiry(state.clone(), shared.clone())),
            state,
            shared,
            closed: false,
            bytes_read: 0,
            _slot: slot,
        }
    }

    /// A handle to mark the connection's requests.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            state: self.state.clone(),
            shared: self.shared.clone(),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn on_read(&mut self, n: usize) {
        let state = &self.state;
        match self.shared.protocol {
            Protocol::Http1 => {
                if !state.reading.load(SeqCst) {
                    state.reading_since_ms.store(self.shared.now_ms(), SeqCst);
                    state.reading.store(true, SeqCst);
                    state.changed.notify_one();
                }
            }
            Protocol::Http2 => {
                self.bytes_read = self.bytes_read.saturating_add(n as u64);
                if self.bytes_read >= H2_PREFACE_LEN && !state.preface.swap(true, SeqCst) {
                    state.changed.notify_one();
                }
            }
        }
    }
}

impl<IO> Conn<IO> {
    /// Polls the deadline (registering the task's waker with it); true once closed.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.expiry.as_mut().poll(cx).is_ready() {
            tracing::debug!(listener = self.shared.name, "closing a connection");
            self.closed = true;
        }
        self.closed
    }

    /// Notes whether a write made progress, for the stalled-writes deadline.
    fn on_write<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<io::Result<T>>) {
        let stalled = &self.state.write_stalled_since_ms;
        match polled {
            Poll::Pending => {
                if stalled.load(SeqCst) == NOT_STALLED {
                    stalled.store(self.shared.now_ms(), SeqCst);
                    self.state.changed.notify_one();
                    // The deadline must wake this task, which now waits to write.
                    if self.poll_closed(cx) {
                        cx.waker().wake_by_ref();
                    }
                }
            }
            Poll::Ready(_) => {
                if stalled.load(SeqCst) != NOT_STALLED {
                    stalled.store(NOT_STALLED, SeqCst);
                }
            }
        }
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection closed by its limits")
}

impl<IO> Drop for Conn<IO> {
    fn drop(&mut self) {
        self.shared.open.lock().expect("poisoned").remove(&self.id);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            // End of stream: the server closes the connection.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.on_read(n);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.on_write(cx, &polled);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.on_write(cx, &polled);
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.on_write(cx, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Marks the requests of one connection.
#[derive(Clone)]
pub struct ConnHandle {
    state: Arc<ConnState>,
    shared: Arc<Shared>,
}

impl ConnHandle {
    /// A request has been handed to the service: the connection is in use until the
    /// guard is dropped (wrap the response body in [`Guarded`]).
    pub fn request(&self) -> RequestGuard {
        self.state.in_flight.fetch_add(1, SeqCst);
        self.state.requests.fetch_add(1, SeqCst);
        self.state.changed.notify_one();
        RequestGuard(self.clone())
    }

    /// Requests in flight on the connection now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(SeqCst)
    }
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("listener", &self.shared.name)
            .field("in_flight", &self.state.in_flight.load(SeqCst))
            .finish()
    }
}

/// A request in flight; see [`ConnHandle::request`].
pub struct RequestGuard(ConnHandle);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ConnHandle { state, shared } = &self.0;
        if state.in_flight.fetch_sub(1, SeqCst) == 1 {
            state.idle_since_ms.store(shared.now_ms(), SeqCst);
            state.reading.store(false, SeqCst);
            state.changed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it has been sent.
    pub struct Guarded<B> {
        #[pin]
        body: B,
        guard: Option<RequestGuard>,
    }
}

impl<B> Guarded<B> {
    /// `body`, keeping `guard`'s request in flight until it has been sent (`None`: a
    /// request of no tracked connection).
    pub fn new(body: B, guard: Option<RequestGuard>) -> Self {
        Self { body, guard }
    }
}

impl<B: http_body::Body> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `d` in whole milliseconds; a duration too long for that is forever, not a wrapped short one.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_timeout_too_long_for_milliseconds_is_forever_not_short() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        // `as u64` kept the low 64 bits: 2^64 ms + 5 ms became 5 ms.
        let huge = Duration::from_millis(u64::MAX) + Duration::from_millis(6);
        assert_eq!(millis(huge), u64::MAX);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(max: usize, header_ms: u64, idle_ms: u64) -> Limits {
        Limits {
            max_connections: max,
            header_read_timeout: ms(header_ms),
            idle_timeout: ms(idle_ms),
        }
    }

    async fn listener(limits: Limits, protocol: Protocol) -> (Arc<Listener>, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (Arc::new(Listener::new(l, limits, protocol, "test")), addr)
    }

    /// Accepts connections and reads them until their end, as an HTTP server would;
    /// sends each connection's handle on.
    fn serve(l: Arc<Listener>) -> tokio::sync::mpsc::UnboundedReceiver<ConnHandle> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut conn = l.accept().await;
                let _ = tx.send(conn.handle());
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        rx
    }

    /// Whether the server closed `c` within `wait`.
    async fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(wait, c.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_full_listener_closes_the_connection_idle_longest_to_make_room() {
        let (l, addr) = listener(limits(2, 60_000, 60_000), Protocol::Http1).await;
        let mut handles = serve(l.clone());
        let mut first = TcpStream::connect(addr).await.unwrap();
        let _h1 = handles.recv().await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let _h2 = handles.recv().await.unwrap();
        assert_eq!(l.open_connections(), 2);
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _h3 = handles.recv().await.unwrap();
        assert!(closed_within(&mut first, ms(5000)).await);
        assert!(!closed_within(&mut second, ms(200)).await);
        assert!(!closed_within(&mut third, ms(10)).await);
        assert_eq!(l.open_connections(), 2);
    }

    #[tokio::test]
    async fn a_connection_with_a_request_in_flight_or_being_read_is_not_closed_for_room() {
        let (l, addr) = listener(limits(2, 60_000, 60_000), Protocol::Http1).await;
        let mut handles = serve(l.clone());
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let request = handles.recv().await.unwrap().request();
        let mut reading = TcpStream::connect(addr).await.unwrap();
        let _h = handles.recv().await.unwrap();
        reading.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(ms(50)).await;
        let _waiting = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(ms(300), handles.recv()).await.is_err(),
            "admitted while both connections were in use"
        );
        assert!(!closed_within(&mut busy, ms(10)).await);
        assert!(!closed_within(&mut reading, ms(10)).await);
        // The request ends: now the busy connection is idle, and closed to make room.
        drop(request);
        assert!(tokio::time::timeout(ms(5000), handles.recv()).await.is_ok());
        assert!(closed_within(&mut busy, ms(5000)).await);
        assert!(!closed_within(&mut reading, ms(10)).await);
    }

    #[tokio::test]
    async fn http1_header_and_idle_deadlines() {
        let (l, addr) = listener(limits(8, 300, 1200), Protocol::Http1).await;
        let mut handles = serve(l.clone());
        // Nothing sent: closed after the header-read timeout.
        let start = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut silent, ms(5000)).await);
        assert!(start.elapsed() >= ms(250), "{:?}", start.elapsed());
        let _ = handles.recv().await;

        // A request was served: kept open while idle (past the header timeout) ...
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let handle = handles.recv().await.unwrap();
        tokio::time::sleep(ms(50)).await; // the server has read the request
        drop(handle.request());
        let idle_from = Instant::now();
        assert!(!closed_within(&mut kept, ms(600)).await);
        // ... until a next request starts: its head must then arrive in time.
        kept.write_all(b"GET /next").await.unwrap();
        assert!(closed_within(&mut kept, ms(5000)).await);
        assert!(idle_from.elapsed() < ms(1200), "{:?}", idle_from.elapsed());

        // Idle, nothing more sent: closed after the idle timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let handle = handles.recv().await.unwrap();
        drop(handle.request());
        let idle_from = Instant::now();
        assert!(closed_within(&mut idle, ms(5000)).await);
        assert!(idle_from.elapsed() >= ms(1100), "{:?}", idle_from.elapsed());

        // A request in flight outlives every deadline.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let request = handles.recv().await.unwrap().request();
        assert!(!closed_within(&mut busy, ms(1500)).await);
        drop(request);
        assert!(closed_within(&mut busy, ms(5000)).await);
    }

    #[tokio::test]
    async fn http2_preface_deadline_then_idle_deadline_ignoring_pings() {
        let (l, addr) = listener(limits(8, 300, 1000), Protocol::Http2).await;
        let mut handles = serve(l.clone());
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Part of the preface does not count.
        silent.write_all(b"PRI * HTTP/2.0").await.unwrap();
        assert!(closed_within(&mut silent, ms(5000)).await);
        let _ = handles.recv().await;

        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let _h = handles.recv().await.unwrap();
        let from = Instant::now();
        // Frames that are not requests (pings) keep nothing open.
        for _ in 0..4 {
            tokio::time::sleep(ms(150)).await;
            let _ = c.write_all(b"ping").await;
        }
        assert!(closed_within(&mut c, ms(5000)).await);
        let took = from.elapsed();
        assert!((ms(900)..ms(3000)).contains(&took), "{took:?}");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_its_response_is_dropped_after_the_idle_timeout() {
        let (l, addr) = listener(limits(8, 60_000, 500), Protocol::Http1).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut conn = l.accept().await;
        let request = conn.handle().request();
        let start = Instant::now();
        // A response larger than the socket buffers, to a client that reads none of it.
        let chunk = vec![b'x'; 64 * 1024];
        let written = tokio::time::timeout(ms(10_000), async {
            let mut total = 0usize;
            while conn.write_all(&chunk).await.is_ok() {
                total += chunk.len();
            }
            total
        })
        .await
        .expect("the stalled write was not cut");
        assert!(start.elapsed() >= ms(450), "{:?}", start.elapsed());
        assert!(written > 0);
        drop(request);
    }

    #[tokio::test]
    async fn the_closer_closes_idle_connections_but_not_busy_ones() {
        let (l, addr) = listener(limits(8, 60_000, 60_000), Protocol::Http1).await;
        let closer = l.closer();
        let mut handles = serve(l.clone());
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let _h = handles.recv().await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let request = handles.recv().await.unwrap().request();
        closer.close_idle();
        assert!(closed_within(&mut idle, ms(5000)).await);
        assert!(!closed_within(&mut busy, ms(200)).await);
        drop(request);
    }
}

/// The id of a request for logs and the `x-request-id` answer header: the client's
/// `x-request-id` when it is short printable ASCII (at most 128 bytes), else a fresh one.
pub fn request_id(given: Option<&[u8]>) -> String {
    match given {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic) => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => format!("{:032x}", rand_u128()),
    }
}

/// 128 bits that differ between calls (request ids need to be unique, not secret).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut h = state.build_hasher();
    h.write_u64(NEXT.fetch_add(1, SeqCst));
    let hi = h.finish();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    (u128::from(hi) << 64) | u128::from(h.finish())
}

#[cfg(test)]
mod request_id_tests {
    use super::request_id;

    #[test]
    fn a_clients_request_id_is_kept_only_when_it_is_short_printable_ascii() {
        assert_eq!(request_id(Some(b"job-42/step-7")), "job-42/step-7");
        for bad in [&b""[..], b"two words", &[0xff, 0xfe], &[b'a'; 129]] {
            let id = request_id(Some(bad));
            assert_eq!(id.len(), 32, "{id}");
        }
        assert_ne!(request_id(None), request_id(None));
    }
}
