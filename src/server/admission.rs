//! One admission path for a call of either RPC (`Execute`, and each call of
//! `ExecuteStream`): its payload checked against the limit and parsed, the
//! segments it names claimed from the door, its function resolved (from
//! the cache, or from what its caller holds), and the call queued on the
//! pool; its function is kept in the cache only once the call is queued, so
//! that a refused call leaves nothing behind.
//!
//! A refusal comes back as the error, not counted here: the handler counts
//! it (`refusals.rs`), as only it knows whether the refusal is final (a
//! stream queues a call again when the queue has no room).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Direction, GatewayError};
use crate::functions::FunctionCache;
use crate::pb;
use crate::pool::{Deadline, Delivery, PendingCall, PendingItems, Pool, Share};
use crate::segments::{self, CallSegments, Door};
use crate::wire::{Digest, Request};

/// Functions a stream keeps for its calls by digest.
pub const HELD_FUNCTIONS: usize = 4;

/// Checks an `ExecuteRequest` against the payload limit and splits its
/// payload into call and function (see [`crate::wire::calls`]).
pub fn parse_request(request: pb::ExecuteRequest, limit: usize) -> Result<Request, GatewayError> {
    parse_payload(request.payload, limit)
}

/// As [`parse_request`], for one call's payload (of either RPC).
fn parse_payload(payload: Bytes, limit: usize) -> Result<Request, GatewayError> {
    if payload.len() > limit {
        return Err(GatewayError::PayloadTooLarge {
            direction: Direction::Request,
            size: payload.len(),
            limit,
        });
    }
    Request::parse(payload).map_err(|_| GatewayError::InvalidRequest)
}

/// As [`parse_payload`], with the segments the call names taken from
/// `door` (see [`segments::claim`]).
fn parse_call(
    payload: Bytes,
    limit: usize,
    door: Option<&Door>,
) -> Result<(Request, Option<CallSegments>), GatewayError> {
    let len = payload.len();
    let request = parse_payload(payload, limit)?;
    let segments = segments::claim(door, request.call(), len, limit)?;
    Ok((request, segments))
}

/// What a call is admitted into: the pool, the function cache, the door
/// (where callers on this host hand over segments, if it could be opened),
/// and the payload limit.
#[derive(Debug, Clone)]
pub struct Admission {
    pub pool: Pool,
    pub functions: Arc<FunctionCache>,
    pub door: Option<Arc<Door>>,
    pub max_payload_bytes: usize,
}

/// An admitted call: queued, and awaited for its outcome; for a call that
/// streams its items, each chunk of them before it.
#[derive(Debug)]
pub struct Admitted {
    pub call: PendingCall,
    pub items: Option<mpsc::Receiver<Delivery>>,
}

impl Admission {
    /// Admits the call `payload` with `deadline`, counted against its
    /// caller's `share` if it has one; `streamed`: as a call that streams
    /// its items. A call by digest whose function the cache has evicted
    /// resolves with the one its caller `held`, if any; the call's function
    /// is held there in turn once it is queued. Returns the refusal, not
    /// yet counted, if it is not admitted.
    pub async fn admit(
        &self,
        payload: Bytes,
        deadline: Option<Deadline>,
        streamed: bool,
        share: Option<&Arc<Share>>,
        mut held: Option<&mut HeldFunctions>,
    ) -> Result<Admitted, GatewayError> {
        let (request, segments) =
            parse_call(payload, self.max_payload_bytes, self.door.as_deref())?;
        let digest = *request.digest();
        let holding = held.as_deref_mut().and_then(|held| held.get(&digest));
        let call = self
            .functions
            .resolve_holding(request, holding)
            .await?
            .with_segments(segments);
        // Kept only once queued: a refused call leaves nothing behind.
        let kept = call.clone();
        let admitted = if streamed {
            let PendingItems { items, call } = self.pool.submit_items(call, deadline, share)?;
            Admitted {
                call,
                items: Some(items),
            }
        } else {
            let call = self.pool.submit(call, deadline, share)?;
            Admitted { call, items: None }
        };
        self.functions.keep(&kept);
        if let Some(held) = held {
            held.hold(digest, &self.functions);
        }
        Ok(admitted)
    }
}

/// The functions a caller's calls brought (up to [`HELD_FUNCTIONS`], most
/// recent last), shared with the cache: a stream's calls by digest resolve
/// for as long as it lasts, even if the cache evicts their functions.
#[derive(Debug, Default)]
pub struct HeldFunctions(VecDeque<(Digest, Bytes)>);

impl HeldFunctions {
    /// The function under `digest`, if held.
    fn get(&mut self, digest: &Digest) -> Option<Bytes> {
        let index = self.0.iter().position(|(held, _)| held == digest)?;
        // Most recent last: a stream mostly calls one function.
        let entry = self.0.remove(index).expect("a held function");
        self.0.push_back(entry);
        self.0.back().map(|(_, pickled)| pickled.clone())
    }

    /// Holds the function under `digest`, as `functions` has it.
    fn hold(&mut self, digest: Digest, functions: &FunctionCache) {
        if self.0.back().is_some_and(|(held, _)| *held == digest) {
            return;
        }
        self.0.retain(|(held, _)| *held != digest);
        if let Some(pickled) = functions.get(&digest) {
            self.0.push_back((digest, pickled));
            if self.0.len() > HELD_FUNCTIONS {
                self.0.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payload: Bytes) -> pb::ExecuteRequest {
        pb::ExecuteRequest { payload }
    }

    #[test]
    fn requests_must_be_encoded_calls() {
        let call = crate::functions::encode::attached(b"f", b"args");
        assert!(parse_request(request(call), 100).is_ok());
        for bad in [&b""[..], b"MCQ", b"XXXX1234", b"mcq2abc"] {
            let err = parse_request(request(Bytes::from_static(bad)), 100).unwrap_err();
            assert_eq!(err, GatewayError::InvalidRequest);
        }
    }

    #[test]
    fn requests_over_the_limit_are_refused_first() {
        let err = parse_request(request(Bytes::from_static(b"MCQ2 too long")), 8).unwrap_err();
        assert_eq!(
            err,
            GatewayError::PayloadTooLarge {
                direction: Direction::Request,
                size: 13,
                limit: 8
            }
        );
    }
}
