//! The API's connections: HTTP/1.1 served by hyper with the guards a
//! public listener needs, around the axum router.
//!
//! - **Connection cap.** At most [`HttpLimits::max_connections`] are open
//!   at once; by default what the descriptor limit (`RLIMIT_NOFILE`, read at
//!   start) leaves after [`connection_cap`]'s headroom for the store, git
//!   and the loop. A connection over the cap is answered `503
//!   too_many_connections` and closed at once, never queued.
//! - **Idle timeout.** A connection with no request in flight and no byte
//!   of a new one for `idle_timeout` is closed (right after connecting, or
//!   between keep-alive requests).
//! - **Header timeout.** From the first byte of a request head, the whole
//!   head must arrive within `header_timeout` (slowloris).
//! - **Shutdown deadline.** On shutdown the listener closes, idle
//!   connections close, requests in flight get `shutdown_grace` to finish;
//!   then every connection is dropped and [`serve`] returns anyway.
//!
//! Bodies have their own deadline and minimum rate, applied where they are
//! read ([`super::body`]).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::error::ApiError;
use super::{router, ApiState};
use tollgate_app::controller::config::LimitsConfig;

/// How long clients may take and how many are served at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// The longest a request body may take to arrive, whole.
    pub body_timeout: Duration,
    /// Bytes per second a body must average once it has taken
    /// `body_rate_grace`; 0: no minimum.
    pub body_min_rate: u64,
    /// How long a body may take before the minimum rate applies:
    /// [`super::body::RATE_GRACE`] (a field so that tests can shorten it).
    pub body_rate_grace: Duration,
    /// `None`: from the descriptor limit ([`connection_cap`]).
    pub max_connections: Option<usize>,
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_config(&LimitsConfig::default()).expect("the default limits are valid")
    }
}

impl HttpLimits {
    /// The `limits:` of the controller config; an error names the field.
    pub fn from_config(c: &LimitsConfig) -> Result<HttpLimits, String> {
        c.check()?;
        let d = LimitsConfig::duration;
        Ok(HttpLimits {
            header_timeout: d("header_timeout", &c.header_timeout)?,
            idle_timeout: d("idle_timeout", &c.idle_timeout)?,
            body_timeout: d("body_timeout", &c.body_timeout)?,
            body_min_rate: c.body_min_rate,
            body_rate_grace: super::body::RATE_GRACE,
            max_connections: c.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            shutdown_grace: d("shutdown_grace", &c.shutdown_grace)?,
        })
    }
}

/// Descriptors kept for everything but connections: at least this many...
const RESERVED_FDS: u64 = 128;
/// ...or this share of the limit, whichever is more.
const RESERVED_SHARE: u64 = 4;
/// The default cap when descriptors are plentiful (or unlimited).
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Serve at least this many even under a tiny descriptor limit.
const MIN_CONNECTIONS: usize = 8;

/// The number of connections served at once: `configured` if given, else
/// [`DEFAULT_MAX_CONNECTIONS`]; either way no more than the descriptor limit
/// `nofile` leaves after the store's pool, git's pack files, the loop and
/// the logs (a quarter of it, at least 128).
pub fn connection_cap(configured: Option<usize>, nofile: Option<u64>) -> usize {
    let wanted = configured.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    match nofile {
        Some(n) => {
            let reserved = RESERVED_FDS.max(n / RESERVED_SHARE);
            let room = usize::try_from(n.saturating_sub(reserved)).unwrap_or(usize::MAX);
            wanted.min(room).max(MIN_CONNECTIONS.min(wanted))
        }
        None => wanted,
    }
}

/// The soft limit on open descriptors; `None` when unlimited or unknown.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves the API's router over `state` on `listener` until `shutdown`
/// resolves, with the state's [`HttpLimits`]; then lets requests in flight
/// finish for at most `shutdown_grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Arc::new(state.options().limits.clone());
    let nofile = descriptor_limit();
    let cap = connection_cap(limits.max_connections, nofile);
    if limits.max_connections.is_some_and(|wanted| wanted > cap) {
        tracing::warn!(
            configured = limits.max_connections,
            nofile,
            serving = cap,
            "limits.max_connections is more than the descriptor limit leaves room for; serving fewer"
        );
    }
    tracing::info!(max_connections = cap, nofile, "serving HTTP");
    state.metrics().set_connection_limit(cap);
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(cap));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut warned_at: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // A connection that failed before it was taken, or
                        // descriptors exhausted by someone else: not fatal.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    state.metrics().connection_refused();
                    if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(max_connections = cap, "connection cap reached: new connections are refused until some close");
                        warned_at = Some(Instant::now());
                    }
                    refuse(stream);
                    continue;
                };
                connections.spawn(connection(
                    stream,
                    app.clone(),
                    state.clone(),
                    limits.clone(),
                    closing_rx.clone(),
                    slot,
                ));
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?limits.shutdown_grace,
            "requests still in flight after the shutdown grace: closing their connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Answers a connection over the cap and closes it, without waiting for it.
fn refuse(stream: TcpStream) {
    let body = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "the controller serves as many connections as it can; retry shortly",
    )
    .body()
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A fresh socket's send buffer is empty: this does not block, and if it
    // cannot be written the client just sees the close.
    let _ = stream.try_write(answer.as_bytes());
    // Take what the client already sent, so closing sends FIN rather than a
    // reset that could discard the answer (a few reads: the accept loop
    // must not be held by a client that keeps sending).
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// One connection, from accept to close; holds its `slot` of the cap.
async fn connection(
    stream: TcpStream,
    app: Router,
    state: ApiState,
    limits: Arc<HttpLimits>,
    mut closing: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(state, slot);
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Service {
        app,
        activity: activity.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below times heads from their first byte; hyper's timer
    // (from when it waits for a head) is the backstop for a head that began
    // while the previous request was still in flight.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout + limits.idle_timeout);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut graceful = false;
    loop {
        let check = match activity.expired(&limits) {
            Ok(next) => next,
            Err(reason) => {
                tracing::debug!(reason, "closing a connection");
                return;
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !graceful => {
                // Idle connections close now; one in flight after its answer.
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
            () = tokio::time::sleep_until(check.into()) => {}
            () = activity.changed.notified() => {}
        }
    }
}

/// Counts a connection as open from accept to close.
struct OpenConnection {
    state: ApiState,
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(state: ApiState, slot: OwnedSemaphorePermit) -> OpenConnection {
        state.metrics().connection_opened();
        OpenConnection { state, _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.metrics().connection_closed();
    }
}

/// What a connection is doing, for its timeouts. Everything runs on the
/// connection's task; the atomics only make it `Send`.
struct Activity {
    epoch: Instant,
    /// Requests whose answer is not written yet.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` (plus one; 0: none) of the first byte read
    /// while no request was in flight: a head has begun.
    head_since: AtomicU64,
    /// Milliseconds since `epoch` when the last answer was written.
    idle_since: AtomicU64,
    /// Wakes the watchdog when a head begins or the last answer is written:
    /// its deadline changes.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn answered(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.now(), Ordering::Relaxed);
            self.head_since.store(0, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// When to look again, or why the connection is over.
    fn expired(&self, limits: &HttpLimits) -> Result<Instant, &'static str> {
        let at = |ms: u64, after: Duration| self.epoch + Duration::from_millis(ms) + after;
        let (deadline, reason) = if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The handler and its body deadline are in charge.
            return Ok(Instant::now() + limits.idle_timeout.max(limits.header_timeout));
        } else {
            match self.head_since.load(Ordering::Relaxed) {
                0 => (
                    at(self.idle_since.load(Ordering::Relaxed), limits.idle_timeout),
                    "idle_timeout",
                ),
                since => (at(since - 1, limits.header_timeout), "header_timeout"),
            }
        };
        if Instant::now() >= deadline {
            Err(reason)
        } else {
            Ok(deadline)
        }
    }
}

/// The connection's stream, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as hyper's service on one connection: a request is in flight
/// from its head to the last byte of its answer.
#[derive(Clone)]
struct Service {
    app: Router,
    activity: Arc<Activity>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Answered>, std::convert::Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Answered>;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.activity.request();
        let in_flight = InFlight(self.activity.clone());
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(req.map(Body::new)).await?;
            Ok(response.map(|body| Answered {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// Marks the request answered when dropped: with the answer's body once
/// hyper has sent it, or with the request if the connection goes first.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// An answer's body that holds its request [`InFlight`].
struct Answered {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Answered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_below_the_descriptor_limit() {
        // A quarter of the limit, at least 128, is kept for everything else.
        assert_eq!(connection_cap(None, Some(1024)), 768);
        assert_eq!(connection_cap(None, Some(256)), 128);
        assert_eq!(connection_cap(None, Some(400)), 272);
        // Plenty of descriptors: the default cap.
        assert_eq!(connection_cap(None, Some(1 << 20)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(None, None), DEFAULT_MAX_CONNECTIONS);
        // A configured cap is kept when it fits and lowered when it does not.
        assert_eq!(connection_cap(Some(100), Some(1024)), 100);
        assert_eq!(connection_cap(Some(5_000), Some(1024)), 768);
        assert_eq!(connection_cap(Some(50_000), None), 50_000);
        // A tiny limit still serves a few, never more than configured.
        assert_eq!(connection_cap(None, Some(64)), MIN_CONNECTIONS);
        assert_eq!(connection_cap(Some(2), Some(64)), 2);
        for n in [200u64, 256, 1024, 4096, 65_536] {
            let cap = connection_cap(None, Some(n)) as u64;
            assert!(cap + RESERVED_FDS <= n, "{n}: {cap}");
        }
    }

    #[test]
    fn heads_are_timed_from_their_first_byte_and_idleness_from_the_last_answer() {
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        };
        let a = Activity::new();
        let idle_until = a.expired(&limits).unwrap();
        assert!(idle_until >= a.epoch + Duration::from_secs(60));
        a.read();
        let head_until = a.expired(&limits).unwrap();
        assert!(
            head_until < a.epoch + Duration::from_secs(11),
            "a begun head has the header timeout"
        );
        a.request();
        a.read();
        assert_eq!(a.head_since.load(Ordering::Relaxed), 0, "a body's bytes are not a head");
        a.answered();
        assert!(a.expired(&limits).unwrap() >= a.epoch + Duration::from_secs(60));

        let expired = HttpLimits {
            header_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            ..limits
        };
        let a = Activity::new();
        assert_eq!(a.expired(&expired), Err("idle_timeout"));
        a.read();
        assert_eq!(a.expired(&expired), Err("header_timeout"));
        a.request();
        assert!(a.expired(&expired).is_ok(), "a request in flight is not timed here");
    }
}
