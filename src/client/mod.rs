//! The client's side of the gateway's gRPC service, for the Python
//! client (the extension `mystic_native` exposes it): targets of one or
//! several gateways ([`target`], balanced round robin), one HTTP/2
//! connection per gateway opened and reopened as needed ([`gateway`],
//! [`dial`]: TCP, TLS, Unix sockets), the calls ([`calls`]) and how they
//! fail ([`failure`]).

pub mod calls;
pub mod dial;
pub mod failure;
pub mod gateway;
pub mod target;

pub use calls::{
    CallOptions, CallStream, StreamReceiver, StreamSender, execute, get_workers, open_stream,
};
pub use dial::Place;
pub use failure::CallFailure;
pub use target::{Target, TargetError, TargetSpec};
