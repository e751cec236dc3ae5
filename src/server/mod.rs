//! The gRPC server: the socket it listens on (TCP or Unix), the gateway
//! service (unary calls, and streams of calls: `stream.rs`), the health
//! service, who may call (token, TLS), payload limits and graceful shutdown.

mod auth;
mod connections;
mod deadline;
mod delivery;
mod inflight;
mod limits;
mod listener;
mod refusals;
mod service;
mod stream;
mod unix_socket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;

pub use auth::{TokenError, read_token};
pub use listener::{BindError, Bound, Listener, bind, bind_tcp};
pub use refusals::Refusals;
pub use service::{GatewayService, parse_request};
pub use unix_socket::{SocketFile, UnixSocketError};

use crate::budget::Budget;
use crate::pb::gateway_server::GatewayServer;

/// What a message may hold besides one payload: protobuf framing (tags,
/// lengths, a stream call's id), and in a stream up to
/// [`stream::BATCH_BYTES`] of other calls or results sent with it.
const MESSAGE_OVERHEAD: usize = stream::BATCH_BYTES + (64 << 10);
/// HTTP/2 flow-control windows sized for large payloads.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Who may call: the token callers must present, and the TLS identity.
#[derive(Debug, Default)]
pub struct Access {
    pub token: Option<Vec<u8>>,
    pub tls: Option<ServerTlsConfig>,
}

/// Bounds on what clients may make the gateway hold.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Bytes of requests being received at once, before they are decoded
    /// (and of segments handed over, before their calls take them).
    pub receiving: Arc<Budget>,
    /// A connection with no call for this long is closed [default: never].
    pub idle_connection_timeout: Option<Duration>,
}

/// Serves the gateway and health services on `listener` until `shutdown`
/// resolves, then lets in-flight calls finish. TCP and Unix socket
/// connections are bounded alike (`bounds`).
pub async fn serve(
    listener: Listener,
    service: GatewayService,
    health: HealthReporter,
    access: Access,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let limit = service.max_payload_bytes;
    let refusals = service.refusals.clone();
    let token_check = auth::TokenCheck::new(access.token, refusals.clone());
    let message_limit = limit.saturating_add(MESSAGE_OVERHEAD);
    let gateway = GatewayServer::new(service)
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let gateway = InterceptedService::new(gateway, token_check);
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health),
    );
    let mut server = http2_server()
        .max_concurrent_streams(bounds.max_streams_per_connection)
        .http2_keepalive_interval(Some(connections::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(connections::KEEPALIVE_TIMEOUT));
    if let Some(tls) = access.tls {
        server = server.tls_config(tls)?;
    }
    let router = server
        .layer(tower::util::MapResponseLayer::new(
            limits::rewrite_oversized_request(limit, refusals.clone()),
        ))
        .layer(tower::util::MapResponseLayer::new(
            delivery::hold_until_sent,
        ))
        .layer(connections::OpenCallsLayer)
        .layer(inflight::InflightLayer::new(
            bounds.receiving,
            refusals,
            message_limit,
        ))
        .add_service(health_service)
        .add_service(gateway);
    let (max, idle) = (bounds.max_connections, bounds.idle_connection_timeout);
    match listener {
        Listener::Tcp(listener) => {
            let incoming = connections::limited_tcp(listener, max, idle);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Listener::Unix(listener) => {
            let incoming = connections::limited_unix(listener, max, idle);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// The HTTP/2 server settings the gateway runs with: flow-control windows
/// sized so that large payloads are not throttled by round trips.
pub fn http2_server() -> Server {
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// Accepted connections on `listener`, with Nagle's algorithm off (the bare
/// echo server of the benchmarks; the gateway also bounds them).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The name the health service reports the gateway under.
pub const SERVICE_NAME: &str = <GatewayServer<GatewayService> as tonic::server::NamedService>::NAME;
