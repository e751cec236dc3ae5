//! mysticchallenge: a gRPC gateway that runs Python functions on a pool of
//! persistent Python workers.
//!
//! - [`config`]: the command line and the validated settings.
//! - [`client`]: the client's side of the gRPC service, for the Python
//!   client through the extension.
//! - [`budget`]: byte budgets (bytes arriving, results undelivered).
//! - [`error`]: [`GatewayError`] and its one mapping to gRPC statuses.
//! - [`server`]: the accept loop, the tonic services (gateway, health), one
//!   admission path for unary and streamed calls, and graceful shutdown;
//!   [`descriptors`]: the open-files limit and the connections that fit in
//!   it.
//! - [`wire`]: the wire format, defined once (requests, answers, streamed
//!   items, calls and results in segments, the segment sockets' records,
//!   ring frames); the extension `mystic_native` exposes it to Python.
//! - [`functions`]: functions by digest (the gateway's function cache).
//! - [`pool`]: the bounded job queue and one supervising actor per worker,
//!   apart from the conversation it holds with its process about a call;
//!   it takes its own settings ([`pool::PoolSettings`]).
//! - [`transport`]: how payloads reach a worker (pipe, or shared memory).
//! - [`segments`]: shared memory for callers on the gateway's host (sealed
//!   memfds handed over a Unix socket, and each worker's end for them).
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`passing`]: passing descriptors over Unix sockets (the one helper).
//! - [`gateway`]: wiring it all together (each layer's settings built from
//!   the [`Config`]); [`shutdown`]: the stop signal.
//! - [`hops`]: per-hop timestamps of a call (debug events).
//! - [`pb`]: generated protobuf and gRPC code; [`timing`]: sleeping until
//!   an instant that may not be set.

// `unsafe` is allowed only in the shared-memory mapping and ring modules.
#![deny(unsafe_code)]

pub mod budget;
#[cfg(test)]
mod captured_log;
pub mod client;
pub mod config;
pub mod descriptors;
pub mod error;
pub mod functions;
pub mod gateway;
pub mod hops;
pub mod metrics;
pub mod passing;
pub mod pb;
pub mod pool;
pub mod segments;
pub mod server;
pub mod shutdown;
pub mod timing;
pub mod transport;
pub mod wire;

pub use config::{Args, Config};
pub use error::GatewayError;
