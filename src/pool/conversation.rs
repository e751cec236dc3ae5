//! The call conversation: what the actor and one worker process say to each
//! other about a call, over the process's link (its transport). The actor (`worker.rs`) decides when a call runs and
//! what happens when the process fails; a [`Conversation`] only talks.
//!
//! - A call goes by digest if the process said it kept its function,
//!   attached if not; a process that answers a miss (it no longer holds the
//!   function) is sent it once more, attached ([`KnownFunctions`]).
//! - A call that streams its items is a conversation of its own: chunk
//!   after chunk, each asked for only once the caller took the last
//!   (`NEXT`), or no more once the caller has gone (`CLOSE`).
//! - A call's segment goes with its request; a result's segment comes with
//!   its response (`MCR2`), is checked and held for its caller.
//! - Each result takes its bytes of the results budget before it is handed
//!   on, waiting while there is no room ([`Conversation::undelivered`]).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::results::{Delivery, Share, Undelivered};
use crate::budget::Budget;
use crate::error::Direction;
use crate::functions::{KnownFunctions, WorkerCall};
use crate::metrics::Metrics;
use crate::segments::{Sealed, SegmentError};
use crate::transport::{Incoming, Transport, TransportError};
use crate::wire::{answers, items, segmented};

/// One worker process's link, and what the actor knows of it: the
/// functions it kept. Dropped, the link closes (the worker exits on EOF).
/// Its methods take `&mut self`: a transport is not `Sync`.
#[derive(Debug)]
pub(super) struct Conversation {
    transport: Transport,
    known: KnownFunctions,
    /// The largest result segment taken from the worker.
    max_payload_bytes: usize,
    /// Results finished, not yet delivered.
    results: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl Conversation {
    /// A conversation over a process's link, once it has shaken hands.
    pub(super) fn new(
        transport: Transport,
        max_payload_bytes: usize,
        results: Arc<Budget>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Conversation {
            transport,
            known: KnownFunctions::default(),
            max_payload_bytes,
            results,
            metrics,
        }
    }

    /// Runs `call` on the worker and returns its response. A call that
    /// streams its items sends each chunk to `items` as it comes, asking
    /// the worker for the next one only once the chunk is taken (so a slow
    /// caller pauses the function), and for none once `items` is closed.
    pub(super) async fn converse(
        &mut self,
        call: &WorkerCall,
        items: Option<mpsc::Sender<Delivery>>,
        share: Option<&Share>,
    ) -> Result<Bytes, TransportError> {
        let Some(items) = items else {
            return self.exchange(call, false, share).await;
        };
        let mut response = self.exchange(call, true, share).await?;
        while items::is_chunk(&response[..]) {
            let sent = tokio::select! {
                undelivered = self.undelivered(response.len(), share) => {
                    let chunk = Delivery { payload: response, undelivered };
                    items.send(chunk).await.is_ok()
                }
                () = items.closed() => false,
            };
            let request = if sent {
                Bytes::from_static(items::NEXT)
            } else {
                // The caller has gone: close the iterator (its `finally` runs).
                Bytes::from_static(items::CLOSE)
            };
            self.metrics.moved(Direction::Request, request.len());
            response = only_payload(self.transport.call(request, None).await?)?;
        }
        Ok(response)
    }

    /// Takes `len` bytes of the results budget (waiting for room) and
    /// counts them in the caller's `share`.
    pub(super) async fn undelivered(&mut self, len: usize, share: Option<&Share>) -> Undelivered {
        let total = self.results.take(len).await;
        Undelivered::new(total, share.map(|share| share.count(len)))
    }

    /// Sends `call`, by digest if the process holds its function, attached
    /// if not or if it answers that it does not (a miss): then once more,
    /// attached. `streamed`: as a call that streams its items.
    async fn exchange(
        &mut self,
        call: &WorkerCall,
        streamed: bool,
        share: Option<&Share>,
    ) -> Result<Bytes, TransportError> {
        let mut attached = !self.known.knows(call.digest());
        loop {
            let request = if attached {
                call.attached()
            } else {
                call.by_digest()
            };
            let request = if streamed {
                items::streamed(&request)
            } else {
                request
            };
            self.metrics.moved(Direction::Request, request.len());
            let argument = call
                .segments()
                .and_then(|segments| segments.argument.as_ref())
                .map(|(_handle, segment)| segment.fd());
            let Incoming { payload, segment } = self.transport.call(request, argument).await?;
            // Known from now on only if the worker says it kept it (it
            // keeps none over its own bounds); by digest, it had it.
            let (kept, start) = answers::strip_kept(&payload[..]);
            let response = payload.slice(start..);
            if kept {
                self.known.learned(*call.digest());
            }
            match (segmented::is_segment_response(&response[..]), segment) {
                (true, Some(segment)) => {
                    return self.result_segment(call, &response, segment, share).await;
                }
                (false, None) => {}
                _ => return Err(TransportError::UnexpectedSegment),
            }
            if !answers::is_miss(&response[..]) {
                return Ok(response);
            }
            if attached {
                return Err(TransportError::UnexpectedMiss);
            }
            attached = true;
        }
    }

    /// Checks the segment of an `MCR2` response and holds it for the
    /// caller; the response with the handle the caller takes it by.
    async fn result_segment(
        &mut self,
        call: &WorkerCall,
        response: &[u8],
        segment: std::os::fd::OwnedFd,
        share: Option<&Share>,
    ) -> Result<Bytes, TransportError> {
        let result = match Sealed::check(segment, self.max_payload_bytes) {
            Ok(result) => result,
            Err(SegmentError::TooLarge { size, limit }) => {
                return Err(TransportError::ResponseTooLarge { size, limit });
            }
            Err(err) => return Err(err.into()),
        };
        let Some(caller) = call.segments() else {
            return Err(TransportError::UnexpectedSegment);
        };
        // Held for the caller until it takes it, as a result not yet
        // delivered (of its share too); a caller that has gone gets nothing,
        // and it goes at once.
        let handle = tokio::select! {
            undelivered = self.undelivered(result.charge(), share) => {
                caller.session.offer(result, undelivered).unwrap_or(0)
            }
            () = caller.session.closed() => 0,
        };
        Ok(segmented::with_handle(response, handle))
    }
}

/// The payload of a response that must not bring a segment.
fn only_payload(incoming: Incoming) -> Result<Bytes, TransportError> {
    match incoming.segment {
        None => Ok(incoming.payload),
        Some(_) => Err(TransportError::UnexpectedSegment),
    }
}
