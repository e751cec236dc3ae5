//! The gRPC server: the socket it listens on (TCP or Unix), the accept loop
//! (`serve.rs`), the places connections take and what they must do to keep
//! them (`places.rs`, `connections.rs`), the gateway service (unary calls,
//! and streams of calls: `stream.rs`; both admitted through one path,
//! `admission.rs`), the health service, who may call (token, TLS), payload
//! limits and graceful shutdown.

mod admission;
mod auth;
mod connections;
mod deadline;
mod delivery;
mod inflight;
mod limits;
mod listener;
mod places;
mod refusals;
mod serve;
pub(crate) mod service;
mod stream;
mod tls;
mod unix_socket;

use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

pub use admission::{Admission, parse_request};
pub use auth::{TokenError, read_token};
pub use connections::Deadlines;
pub use listener::{BindError, Bound, Listener, bind, bind_tcp};
pub use refusals::Refusals;
pub use serve::ServeError;
pub use service::GatewayService;
pub use tls::{Tls, TlsError};
pub use unix_socket::{SocketFile, UnixSocketError};

use crate::budget::Budget;
use crate::pb::gateway_server::GatewayServer;

/// What a message may hold besides one payload: protobuf framing (tags,
/// lengths, a stream call's id), and in a stream up to
/// [`stream::BATCH_BYTES`] of other calls or results sent with it.
const MESSAGE_OVERHEAD: usize = stream::BATCH_BYTES + (64 << 10);
/// HTTP/2 flow-control windows sized for large payloads.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Who may call: the token callers must present, and the TLS identity.
#[derive(Debug, Default)]
pub struct Access {
    pub token: Option<Vec<u8>>,
    pub tls: Option<Tls>,
}

/// Bounds on what clients may make the gateway hold.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections open at once from one IP address (a Unix socket's
    /// peers are one) [default: no bound but `max_connections`].
    pub max_connections_per_peer: Option<NonZeroUsize>,
    /// How long a connection may go without an admitted call.
    pub deadlines: Deadlines,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Bytes of requests being received at once, before they are decoded
    /// (and of segments handed over, before their calls take them).
    pub receiving: Arc<Budget>,
}

/// Serves the gateway and health services on `listener` until `stop` is
/// cancelled, then closes every connection with a GOAWAY and lets in-flight
/// calls finish. TCP and Unix socket connections are bounded alike
/// (`bounds`).
pub async fn serve(
    listener: Listener,
    service: GatewayService,
    health: HealthReporter,
    access: Access,
    bounds: Bounds,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let limit = service.admission.max_payload_bytes;
    let refusals = service.refusals.clone();
    let token_check = auth::TokenCheck::new(access.token, refusals.clone());
    let message_limit = limit.saturating_add(MESSAGE_OVERHEAD);
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health),
    );
    let health_service = InterceptedService::new(health_service, token_check.health());
    let gateway = GatewayServer::new(service)
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let gateway = InterceptedService::new(gateway, token_check);
    let routes = Routes::new(health_service).add_service(gateway).prepare();
    let service = ServiceBuilder::new()
        .map_response(limits::rewrite_oversized_request(limit, refusals.clone()))
        .layer(connections::OpenCallsLayer)
        .layer(deadline::ClientDeadlineLayer)
        .layer(inflight::InflightLayer::new(
            bounds.receiving,
            refusals,
            message_limit,
        ))
        .map_response(delivery::pace)
        .service(routes);
    let settings = Arc::new(serve::ConnectionSettings {
        http2: serve::http2_settings(bounds.max_streams_per_connection),
        tls: access.tls,
        deadlines: bounds.deadlines,
    });
    let places = places::Places::new(bounds.max_connections, bounds.max_connections_per_peer);
    match listener {
        Listener::Tcp(listener) => serve::serve(listener, places, settings, service, stop).await,
        Listener::Unix(listener) => serve::serve(listener, places, settings, service, stop).await,
    }
}

/// tonic's server with the gateway's flow-control windows, for the bare
/// echo server of the benchmarks (the gateway itself serves through
/// `serve.rs`).
pub fn http2_server() -> Server {
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// Accepted connections on `listener`, with Nagle's algorithm off (for the
/// echo server of the benchmarks, as [`http2_server`]).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The name the health service reports the gateway under.
pub const SERVICE_NAME: &str = <GatewayServer<GatewayService> as tonic::server::NamedService>::NAME;
