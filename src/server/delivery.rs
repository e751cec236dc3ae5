//! When a result counts as delivered: once HTTP/2 has taken it, not when
//! the handler has it. A result holds its bytes of the results budget
//! ([`Undelivered`]) until then:
//!
//! - a unary response's result rides in the response's extensions, and
//!   [`hold_until_sent`] moves it into the response body, which lets it go
//!   once its last frame (the trailers) has been taken: hyper asks a body
//!   for more only when the peer's flow-control window has room, so by
//!   then the caller has taken the message;
//! - a stream's messages each carry theirs through the stream task's
//!   channel, and [`Delivering`] lets a message's go when the next message
//!   is asked for (for the same reason).
//!
//! A caller that stops reading therefore keeps its results counted, and
//! the gateway makes no more for it past its share (`pool::Share`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;

use crate::pool::Undelivered;

/// What a unary response's result holds, in the response's extensions
/// (which want `Clone`).
#[derive(Debug, Clone)]
pub struct UnaryResult(pub Arc<Undelivered>);

/// Moves a unary response's [`UnaryResult`] into its body (see the module
/// doc); other responses pass untouched.
pub fn hold_until_sent(mut response: http::Response<Body>) -> http::Response<Body> {
    match response.extensions_mut().remove::<UnaryResult>() {
        Some(UnaryResult(held)) => response.map(|inner| {
            Body::new(HoldingBody {
                inner,
                held: Some(held),
            })
        }),
        None => response,
    }
}

/// A body that holds its result's bytes until its last frame is taken.
struct HoldingBody {
    inner: Body,
    held: Option<Arc<Undelivered>>,
}

impl HttpBody for HoldingBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(&frame, Some(Ok(frame)) if frame.is_data()) {
            // The trailers, the end or a failure: nothing more of it to send.
            self.held = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream's messages as tonic takes them, each holding its results'
/// bytes until the next one is asked for.
pub struct Delivering<T> {
    messages: ReceiverStream<(T, Undelivered)>,
    last: Option<Undelivered>,
}

impl<T> Delivering<T> {
    pub fn new(messages: tokio::sync::mpsc::Receiver<(T, Undelivered)>) -> Self {
        Delivering {
            messages: ReceiverStream::new(messages),
            last: None,
        }
    }
}

impl<T: Unpin> Stream for Delivering<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Asked for the next: the last one has been taken.
        self.last = None;
        let next = ready!(Pin::new(&mut self.messages).poll_next(cx));
        Poll::Ready(next.map(|(message, held)| {
            self.last = Some(held);
            message
        }))
    }
}
