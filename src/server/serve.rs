//! The gRPC server's accept loop, and each connection's life.
//!
//! tonic's own server closes connections with a GOAWAY only all at once
//! (at shutdown) or each at a maximum age, and gives a connection its place
//! before its handshakes; so the gateway serves its tonic routes on hyper's
//! HTTP/2 connections itself, keeping what tonic's server did (TLS with
//! ALPN `h2`, Nagle's algorithm off, the connection's info in each
//! request, a GOAWAY to every connection at shutdown) and applying the
//! policies of `connections.rs`:
//!
//! - a place ([`Places`]) is taken before a connection is accepted; one
//!   from a peer that holds its share already is closed at once;
//! - each connection is a task: its TLS handshake, then HTTP/2, until it
//!   no longer earns its place ([`Activity::verdict`]) or the gateway
//!   stops; then a GOAWAY, after which the calls open on it finish, and a
//!   peer that never closes is cut off ([`CLOSING_GRACE`]);
//! - an accept that fails for want of descriptors (EMFILE, ENFILE) is
//!   logged once per episode, not per attempt, and tried again after
//!   [`ACCEPT_PAUSE`] (the connection waits in the listen backlog).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tower::ServiceExt as _;
use tracing::{debug, error, info, warn};

use super::connections::{Activity, CLOSING_GRACE, ConnectionInfo, Deadlines, Verdict};
use super::places::{Peer, Place, Places};
use super::tls::Tls;

/// How long the loop waits before it accepts again after running out of
/// descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// How often an HTTP/2 connection with no traffic is pinged, and how long
/// the peer has to answer before the connection is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot accept connections: {0}")]
    Accept(#[source] io::Error),
}

/// How the server treats each connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// HTTP/2 settings (windows, streams, keepalive pings).
    pub http2: http2::Builder<TokioExecutor>,
    pub tls: Option<Tls>,
    pub deadlines: Deadlines,
}

/// The HTTP/2 settings of the gateway's connections: flow-control windows
/// sized so that large payloads are not throttled by round trips, at most
/// `max_streams` calls open at once, and keepalive pings that notice a peer
/// that vanished without closing its connection.
pub fn http2_settings(max_streams: u32) -> http2::Builder<TokioExecutor> {
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .initial_stream_window_size(super::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(super::CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(max_streams)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        // What HTTP/2 buffers per stream beyond the peer's window: one piece
        // of a body (`delivery.rs`), so that a peer that does not read
        // leaves the rest of its results in the body, counted.
        .max_send_buf_size(super::delivery::PIECE_BYTES);
    http2
}

/// A listening socket the loop accepts connections from.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection, and who is at its other end.
    fn next_connection(&self) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;

    async fn next_connection(&self) -> io::Result<(TcpStream, Peer)> {
        let (stream, addr) = self.accept().await?;
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = %err, "cannot turn Nagle's algorithm off on a connection");
        }
        Ok((stream, Peer::of(addr)))
    }
}

impl Accept for UnixListener {
    type Io = UnixStream;

    async fn next_connection(&self) -> io::Result<(UnixStream, Peer)> {
        let (stream, _addr) = self.accept().await?;
        Ok((stream, Peer::UnixSocket))
    }
}

/// Serves `service` on the connections `listener` accepts, each in a place
/// of `places` and treated as `settings` say, until `stop` is cancelled:
/// then it accepts no more, closes every connection with a GOAWAY and
/// returns once the last has ended (the calls open on them finish first).
/// Fails only if the listener does.
pub async fn serve<L, S, B>(
    listener: L,
    places: Places,
    settings: Arc<ConnectionSettings>,
    service: S,
    stop: CancellationToken,
) -> Result<(), ServeError>
where
    L: Accept,
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    let mut exhaustion = Exhaustion::default();
    loop {
        let free = tokio::select! {
            () = stop.cancelled() => break,
            free = places.free() => free,
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.next_connection() => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                exhaustion.over();
                match free.take(peer) {
                    Ok(place) => {
                        let settings = Arc::clone(&settings);
                        let connection =
                            connection(io, place, settings, service.clone(), stop.clone());
                        connections.spawn(connection);
                    }
                    Err(_still_free) => debug!(
                        ?peer,
                        "closed a connection at once: its peer holds --max-connections-per-peer already"
                    ),
                }
            }
            Err(err) if out_of_descriptors(&err) => {
                exhaustion.failed(&err);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                }
            }
            Err(err) if listener_broken(&err) => return Err(ServeError::Accept(err)),
            Err(err) => debug!(cause = %err, "a connection failed as it was accepted"),
        }
        while let Some(ended) = connections.try_join_next() {
            report(ended);
        }
    }
    drop(listener);
    while let Some(ended) = connections.join_next().await {
        report(ended);
    }
    Ok(())
}

/// Serves one connection in its `place` until it ends: the TLS handshake,
/// then HTTP/2 until the peer leaves, the connection no longer earns its
/// place, or `stop`.
async fn connection<IO, S, B>(
    io: IO,
    _place: Place,
    settings: Arc<ConnectionSettings>,
    service: S,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let deadlines = settings.deadlines;
    let io = match &settings.tls {
        None => Either::Left(io),
        Some(tls) => {
            let handshake =
                tokio::time::timeout_at(activity.accepted() + deadlines.handshake, tls.accept(io));
            let done = tokio::select! {
                () = stop.cancelled() => return,
                done = handshake => done,
            };
            match done {
                Ok(Ok(io)) => Either::Right(io),
                Ok(Err(err)) => {
                    debug!(cause = %err, "a TLS handshake failed");
                    return;
                }
                Err(_elapsed) => {
                    debug!("no TLS handshake by the handshake deadline; closed");
                    return;
                }
            }
        }
    };
    let unary_share = Arc::default();
    let info = ConnectionInfo {
        activity: Arc::clone(&activity),
        unary_share: Arc::clone(&unary_share),
    };
    let service = service.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        request.map(Body::new)
    });
    let mut http = pin!(
        settings
            .http2
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
    );
    let check = tokio::time::sleep_until(activity.accepted() + deadlines.handshake);
    let mut check = pin!(check);
    // Whether the GOAWAY has been sent.
    let mut closing = false;
    let mut first_call = true;
    loop {
        let goaway = tokio::select! {
            () = activity.first_call(), if first_call && !closing => {
                // Idle from the end of this call on: ask again now.
                first_call = false;
                check.as_mut().reset(Instant::now());
                false
            }
            served = http.as_mut() => {
                if let Err(err) = served {
                    debug!(cause = %err, "a connection ended with an error");
                }
                break;
            }
            () = stop.cancelled(), if !closing => true,
            () = check.as_mut() => {
                if closing {
                    if activity.open_calls() == 0 {
                        debug!("a connection did not close after its GOAWAY; cut off");
                        break;
                    }
                    check.as_mut().reset(Instant::now() + CLOSING_GRACE);
                    false
                } else {
                    match activity.verdict(deadlines) {
                        Verdict::Keep { until } => {
                            check.as_mut().reset(until);
                            false
                        }
                        Verdict::Close(overdue) => {
                            debug!(?overdue, "closing a connection with a GOAWAY");
                            true
                        }
                    }
                }
            }
        };
        if goaway {
            http.as_mut().graceful_shutdown();
            closing = true;
            check.as_mut().reset(Instant::now() + CLOSING_GRACE);
        }
    }
    // Its unary calls held back never run: nobody is left to answer.
    if let Some(share) = unary_share.get() {
        share.close();
    }
}

/// Whether an accept failed for want of descriptors (or of kernel memory
/// for a socket): the connection waits in the backlog until some free up.
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Whether an accept failed because the listening socket itself is unusable
/// (any other failure is the connection's own).
fn listener_broken(err: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::BADF | Errno::INVAL | Errno::NOTSOCK | Errno::FAULT)
    )
}

/// Accepts failing for want of descriptors: one warning when they start,
/// one line when they end.
#[derive(Debug, Default)]
struct Exhaustion {
    /// Since when, and how many accepts failed.
    episode: Option<(Instant, u64)>,
}

impl Exhaustion {
    fn failed(&mut self, err: &io::Error) {
        match &mut self.episode {
            Some((_since, failures)) => *failures += 1,
            None => {
                warn!(
                    cause = %err,
                    "out of file descriptors or socket memory: new connections wait in the listen backlog until some close (raise the open-files limit or lower --max-connections)"
                );
                self.episode = Some((Instant::now(), 1));
            }
        }
    }

    fn over(&mut self) {
        if let Some((since, failures)) = self.episode.take() {
            info!(
                waited_secs = since.elapsed().as_secs_f64(),
                failures, "accepting connections again"
            );
        }
    }
}

/// Logs a connection task that panicked.
fn report(ended: Result<(), tokio::task::JoinError>) {
    if let Err(err) = ended {
        if err.is_panic() {
            error!(cause = %err, "a connection's task panicked");
        }
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
