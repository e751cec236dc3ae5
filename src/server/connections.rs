//! Bounds on connections, TCP or Unix socket alike: at most
//! `--max-connections` open at once (one more is accepted and waits for a
//! place, the rest wait in the listen backlog), a connection with no call
//! for `--idle-connection-timeout` is closed, Nagle's algorithm is off (on
//! TCP), and HTTP/2 keepalive pings notice a peer that vanished without
//! closing its connection.
//!
//! Idleness is about calls, not bytes (keepalive pings are bytes too):
//! [`OpenCallsLayer`] counts the calls open on each connection, through the
//! [`Activity`] it finds in the request's connection info, and [`Limited`]
//! ends the connection (EOF to the server) once none has been open for the
//! timeout. That close is abrupt, not a GOAWAY: a call the client sends in
//! that same instant fails as unavailable, which is why the timeout is off
//! unless asked for.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpIncoming};

use super::deadline::Arrival;

/// How often an HTTP/2 connection with no traffic is pinged, and how long
/// the peer has to answer before the connection is dropped.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Accepted TCP connections on `listener`, Nagle's algorithm off, bounded
/// as [`limited`] says.
pub fn limited_tcp(
    listener: TcpListener,
    max: usize,
    idle: Option<Duration>,
) -> impl Stream<Item = io::Result<Limited<TcpStream>>> {
    limited(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        max,
        idle,
    )
}

/// Accepted connections on a Unix socket `listener`, bounded as
/// [`limited`] says.
pub fn limited_unix(
    listener: UnixListener,
    max: usize,
    idle: Option<Duration>,
) -> impl Stream<Item = io::Result<Limited<UnixStream>>> {
    limited(UnixListenerStream::new(listener), max, idle)
}

/// The connections `accepted` yields, at most `max` open at once, each
/// closed once it had no call for `idle`.
pub fn limited<T>(
    accepted: impl Stream<Item = io::Result<T>>,
    max: usize,
    idle: Option<Duration>,
) -> impl Stream<Item = io::Result<Limited<T>>> {
    let permits = Arc::new(Semaphore::new(max));
    accepted.then(move |accepted| {
        let permits = Arc::clone(&permits);
        async move {
            let io = accepted?;
            let permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            Ok(Limited::new(io, permit, idle))
        }
    })
}

/// What a connection is doing: calls open on it, and when the last one
/// closed.
#[derive(Debug)]
pub struct Activity {
    open_calls: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The connection info every request carries (tonic puts it in the
/// request's extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub activity: Arc<Activity>,
}

/// A connection that holds one of the permits while it is open, and ends
/// itself (EOF to the server) once idle, if `idle` is set.
#[derive(Debug)]
pub struct Limited<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    /// The idle timeout, and the timer that checks for it.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl<T> Limited<T> {
    fn new(io: T, permit: OwnedSemaphorePermit, idle: Option<Duration>) -> Self {
        let activity = Arc::new(Activity {
            open_calls: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        Limited {
            io,
            _permit: permit,
            activity,
            idle: idle.map(|idle| (idle, Box::pin(tokio::time::sleep(idle)))),
        }
    }

    /// Whether the connection has been idle for `idle`; if not, arms the
    /// check for when it could be.
    fn idle_now(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((idle, check)) = self.idle.as_mut() else {
            return false;
        };
        let idle = *idle;
        loop {
            if check.as_mut().poll(cx).is_pending() {
                return false;
            }
            let busy = self.activity.open_calls.load(Ordering::Acquire) > 0;
            let since = self.activity.last();
            if !busy && since.elapsed() >= idle {
                return true;
            }
            // Checked again an idle period after the last call closed (or
            // from now, while a call is open).
            let next = if busy { Instant::now() } else { since } + idle;
            check.as_mut().reset(next);
        }
    }
}

impl<T> Connected for Limited<T> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            activity: Arc::clone(&self.activity),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            // EOF: the server closes the connection.
            Poll::Pending if self.idle_now(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A tower layer that stamps each request's [`Arrival`] (for its deadline)
/// and counts, on its connection, the calls open on it, from the request's
/// arrival until its response is ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenCallsLayer;

impl<S> tower::Layer<S> for OpenCallsLayer {
    type Service = OpenCalls<S>;

    fn layer(&self, inner: S) -> OpenCalls<S> {
        OpenCalls { inner }
    }
}

/// The service [`OpenCallsLayer`] makes.
#[derive(Debug, Clone)]
pub struct OpenCalls<S> {
    inner: S,
}

/// One open call on a connection; closing it counts as activity.
struct OpenCall(Arc<Activity>);

impl OpenCall {
    fn new(activity: Arc<Activity>) -> Self {
        activity.open_calls.fetch_add(1, Ordering::AcqRel);
        OpenCall(activity)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> tower::Service<http::Request<B>> for OpenCalls<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(Arrival(Instant::now()));
        let open = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| OpenCall::new(Arc::clone(&info.activity)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(open);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that a second connection waits while the first holds the
    /// only place; `connect` opens one.
    async fn the_cap_holds<T, C>(
        accepted: impl Stream<Item = io::Result<Limited<T>>>,
        connect: impl Fn() -> C,
    ) where
        C: Future<Output = io::Result<T>>,
    {
        let mut accepted = Box::pin(accepted);
        let _first_client = connect().await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second_client = connect().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err(), "a second connection got in past the cap");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(matches!(second, Ok(Some(Ok(_)))));
    }

    #[tokio::test]
    async fn a_connection_past_the_cap_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        the_cap_holds(limited_tcp(listener, 1, None), || TcpStream::connect(addr)).await;
    }

    #[tokio::test]
    async fn the_cap_holds_on_a_unix_socket_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let listener = UnixListener::bind(&path).unwrap();
        the_cap_holds(limited_unix(listener, 1, None), || {
            UnixStream::connect(&path)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_ended_once_idle_but_not_while_a_call_is_open() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(limited_tcp(listener, 4, Some(Duration::from_secs(10))));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut server = accepted.next().await.unwrap().unwrap();
        let call = OpenCall::new(Arc::clone(&server.activity));
        let mut byte = [0u8; 1];
        // A call is open: a minute of silence does not end the connection.
        let read = tokio::time::timeout(Duration::from_secs(60), server.read(&mut byte)).await;
        assert!(read.is_err(), "ended while a call was open");
        // Bytes alone (a keepalive ping, say) are not a call.
        client.write_all(b"x").await.unwrap();
        assert_eq!(server.read(&mut byte).await.unwrap(), 1);
        drop(call);
        let closed = Instant::now();
        assert_eq!(server.read(&mut byte).await.unwrap(), 0, "EOF once idle");
        assert!(closed.elapsed() >= Duration::from_secs(10));
    }
}
