//! Shared memory for callers on the gateway's host: a call's pickle and its
//! large buffers travel in a sealed memfd (a *segment*) that the client
//! hands over a Unix socket, not through gRPC; a result comes back the same
//! way. The format is [`crate::wire::segmented`] and
//! [`crate::wire::records`].
//!
//! - [`door`]: the socket clients hand segments over (an abstract Unix
//!   socket named in `GetWorkers`), one [`door::Session`] per connection,
//!   which holds the segments a caller handed in and the results waiting
//!   for it, and drops them all when the caller goes.
//! - A call's segment goes to its worker with the request, over the
//!   worker's link (`transport`); a result's comes back with the response.
//! - [`sealed`]: a segment checked to be a memfd that nothing can change.
//! - [`socket`]: sending and receiving the door's records, each with at
//!   most one descriptor.
//!
//! A segment has no name: nothing is left in `/dev/shm` or anywhere else,
//! whoever is killed; the kernel frees it when its last holder lets go.

pub mod door;
pub mod sealed;
pub mod socket;

use std::sync::Arc;

use crate::error::{Direction, GatewayError};
use crate::wire::segmented::CallHeader;

pub use door::{Door, Session};
pub use sealed::{Sealed, SegmentError};

/// What a call brought in shared memory: its caller's session (where its
/// result goes) and its own segment, if any, with the handle the call
/// names it by (which the worker checks it against).
#[derive(Debug)]
pub struct CallSegments {
    pub session: Arc<Session>,
    pub argument: Option<(u64, Sealed)>,
}

impl CallSegments {
    /// The bytes its segment holds.
    pub fn len(&self) -> usize {
        self.argument
            .as_ref()
            .map_or(0, |(_, segment)| segment.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What its segment counts against byte bounds ([`Sealed::charge`]).
    pub fn charge(&self) -> usize {
        self.argument
            .as_ref()
            .map_or(0, |(_, segment)| segment.charge())
    }
}

/// The segments the call `call` (its bytes after any attached function,
/// `payload_len` bytes in all) names, taken from `door`'s sessions: none for
/// a call that names none. A session or segment the door does not hold is
/// [`GatewayError::SegmentUnknown`]; the payload and its segment together
/// must be within `limit` bytes.
pub fn claim(
    door: Option<&Door>,
    call: &[u8],
    payload_len: usize,
    limit: usize,
) -> Result<Option<CallSegments>, GatewayError> {
    let header = CallHeader::parse(call).map_err(|_| GatewayError::InvalidRequest)?;
    let Some(header) = header else {
        return Ok(None);
    };
    let session = door
        .and_then(|door| door.session(&header.session))
        .ok_or(GatewayError::SegmentUnknown)?;
    let argument = match header.handle {
        0 => None,
        handle => Some((
            handle,
            session.claim(handle).ok_or(GatewayError::SegmentUnknown)?,
        )),
    };
    let segments = CallSegments { session, argument };
    let size = payload_len + segments.len();
    if size > limit {
        return Err(GatewayError::PayloadTooLarge {
            direction: Direction::Request,
            size,
            limit,
        });
    }
    Ok(Some(segments))
}
