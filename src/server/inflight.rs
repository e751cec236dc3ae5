//! Request bytes being received count against a bound before a request is
//! buffered whole.
//!
//! tonic reads a request's whole message into memory before our handler
//! sees it, so the queue's byte bound (`--queue-max-bytes`) alone would not
//! bound what the gateway holds while many large requests arrive at once.
//! [`InflightLayer`] wraps every request body: each data frame takes its
//! bytes from one shared budget (`--max-receiving-bytes`) as it arrives, and
//! gives them back once tonic has decoded the message: when the body is
//! dropped, or, in a stream of messages, when tonic asks for more data after
//! a message was complete (it decodes every whole message it holds first).
//! A frame that would pass the bound ends the request with `queue-full`,
//! which the client retries; a request alone is always let in, so that no
//! request is refused forever. A request whose gRPC length prefix is over
//! the message limit is not counted: tonic refuses it as too large as soon
//! as it reads the prefix, and that is the answer its caller should get. So
//! a frame that holds no more than part of a prefix (HTTP/2 may cut one
//! anywhere, down to a byte, when the connection's window is nearly spent)
//! is counted but never refused: the prefix decides once it is whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;

use super::refusals::Refusals;
use crate::budget::Budget;
use crate::error::GatewayError;

/// A tower layer that counts every request body against a [`Budget`].
#[derive(Debug, Clone)]
pub struct InflightLayer {
    budget: Arc<Budget>,
    refusals: Refusals,
    /// The largest message tonic decodes.
    message_limit: usize,
}

impl InflightLayer {
    pub fn new(budget: Arc<Budget>, refusals: Refusals, message_limit: usize) -> Self {
        InflightLayer {
            budget,
            refusals,
            message_limit,
        }
    }
}

impl<S> tower::Layer<S> for InflightLayer {
    type Service = Inflight<S>;

    fn layer(&self, inner: S) -> Inflight<S> {
        Inflight {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`InflightLayer`] makes.
#[derive(Debug, Clone)]
pub struct Inflight<S> {
    inner: S,
    layer: InflightLayer,
}

impl<S> tower::Service<http::Request<Body>> for Inflight<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let counted = Counted {
            body,
            budget: Arc::clone(&self.layer.budget),
            refusals: self.layer.refusals.clone(),
            message_limit: self.layer.message_limit,
            held: 0,
            framing: Framing::default(),
            complete: 0,
            oversized: false,
        };
        self.inner
            .call(http::Request::from_parts(parts, Body::new(counted)))
    }
}

/// A request body whose data frames are counted as they arrive.
struct Counted {
    body: Body,
    budget: Arc<Budget>,
    refusals: Refusals,
    message_limit: usize,
    held: usize,
    /// Where the body is in its messages.
    framing: Framing,
    /// Bytes of whole messages received, given back at the next poll.
    complete: usize,
    /// A length prefix is over the limit: tonic refuses it, uncounted.
    oversized: bool,
}

/// Where a body of gRPC messages (each a 5-byte prefix and its length's
/// bytes) is.
#[derive(Debug, Default)]
struct Framing {
    /// The bytes of the current message's prefix seen so far.
    prefix: Vec<u8>,
    /// The current message's bytes still to come, prefix included.
    left: usize,
    /// The current message's bytes so far.
    seen: usize,
}

/// A gRPC message's prefix: a compression flag and a big-endian u32 length.
const PREFIX_BYTES: usize = 5;

impl Framing {
    /// Whether the last bytes followed were part of a message's prefix
    /// that is not whole yet.
    fn in_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// Follows `data`; returns the bytes of the messages it completed, and
    /// each length it read (for the limit check).
    fn advance(&mut self, mut data: &[u8], lengths: &mut Vec<usize>) -> usize {
        let mut complete = 0;
        while !data.is_empty() {
            if self.left == 0 {
                let wanted = PREFIX_BYTES - self.prefix.len();
                let (head, rest) = data.split_at(wanted.min(data.len()));
                self.prefix.extend_from_slice(head);
                self.seen += head.len();
                data = rest;
                if self.prefix.len() < PREFIX_BYTES {
                    break;
                }
                let length = declared_length(&self.prefix).unwrap_or(0);
                lengths.push(length);
                self.prefix.clear();
                self.left = length;
            } else {
                let taken = self.left.min(data.len());
                self.left -= taken;
                self.seen += taken;
                data = &data[taken..];
            }
            if self.left == 0 && self.prefix.is_empty() {
                complete += std::mem::take(&mut self.seen);
            }
        }
        complete
    }
}

/// The message length in a gRPC frame prefix (a compression flag byte, then
/// a big-endian u32), if `data` holds one.
fn declared_length(data: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = data.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        // Asked for more: tonic has decoded every whole message before.
        let decoded = std::mem::take(&mut this.complete);
        this.budget.give_back(decoded);
        this.held -= decoded;
        let frame = match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => return Poll::Ready(Some(Err(status))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref().filter(|_| !this.oversized) {
            let mut lengths = Vec::new();
            let complete = this.framing.advance(data, &mut lengths);
            if lengths.iter().any(|&len| len > this.message_limit) {
                // Not counted from here on: tonic refuses the stream.
                this.oversized = true;
                return Poll::Ready(Some(Ok(frame)));
            }
            if data.len() < PREFIX_BYTES && lengths.is_empty() && this.framing.in_prefix() {
                this.budget.take_past_bound(data.len());
            } else if let Err(full) = this.budget.try_take(this.held, data.len()) {
                let err = GatewayError::ReceivingFull {
                    receiving: full.used - this.held,
                    size: this.held + data.len(),
                    limit: full.limit,
                };
                return Poll::Ready(Some(Err(this.refusals.refuse(err))));
            }
            this.held += data.len();
            this.complete += complete;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_prefix_is_read_from_the_first_frame() {
        assert_eq!(declared_length(&[0, 0, 0, 1, 0, 9, 9]), Some(256));
        assert_eq!(
            declared_length(&[1, 0xff, 0xff, 0xff, 0xff]),
            Some(u32::MAX as usize)
        );
        assert_eq!(declared_length(&[0, 0, 0]), None);
    }

    #[test]
    fn whole_messages_are_found_across_and_within_frames() {
        let message = |body: &[u8]| {
            let mut framed = vec![0];
            framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(body);
            framed
        };
        let mut framing = Framing::default();
        let mut lengths = Vec::new();
        // Two messages in one frame, the start of a third.
        let mut data = [message(b"abc"), message(b""), message(b"hello")].concat();
        let third = data.split_off(13);
        assert_eq!(framing.advance(&data, &mut lengths), 13);
        // Its prefix split, then its body in two pieces.
        assert_eq!(framing.advance(&third[..2], &mut lengths), 0);
        assert_eq!(framing.advance(&third[2..7], &mut lengths), 0);
        assert_eq!(framing.advance(&third[7..], &mut lengths), 10);
        assert_eq!(lengths, [3, 0, 5]);
    }

    #[tokio::test]
    async fn part_of_a_prefix_is_not_refused_and_the_whole_prefix_decides() {
        use http_body_util::BodyExt as _;

        let budget = Budget::new(16);
        let _other_request = budget.count(16);
        // An oversized message's prefix, cut in two by HTTP/2.
        let frames = [&[0u8, 0, 0][..], &[1, 0][..]]
            .map(|piece| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(piece))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut counted = Counted {
            body: Body::new(body),
            budget: Arc::clone(&budget),
            refusals: Refusals::new(Arc::new(crate::metrics::Metrics::new(1, "pipe"))),
            message_limit: 255,
            held: 0,
            framing: Framing::default(),
            complete: 0,
            oversized: false,
        };
        assert!(
            counted.frame().await.unwrap().is_ok(),
            "part of a prefix was refused"
        );
        assert!(counted.frame().await.unwrap().is_ok());
        assert!(
            counted.oversized,
            "the whole prefix (256 bytes) is over the limit"
        );
    }
}
