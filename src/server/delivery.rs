//! When a result counts as delivered: once HTTP/2 has taken it, not when
//! the handler has it. A result holds its bytes of the results budget
//! ([`Undelivered`]) until then.
//!
//! hyper hands a response body's data to HTTP/2 a frame at a time, each
//! once the peer's flow-control window has room for some of it, and HTTP/2
//! buffers the whole frame: so every response body here is [`Paced`], its
//! data cut into pieces of [`PIECE_BYTES`] (no copy), and a peer that does
//! not read leaves the rest of its results in the body, counted. Then:
//!
//! - a unary response's result rides in the response's extensions, and
//!   [`pace`] moves it into the body, which lets it go once its last piece
//!   has been taken;
//! - a stream's messages each carry theirs through the stream task's
//!   channel, and [`Delivering`] lets a message's go when tonic asks for the
//!   next one, which it does once the last piece of the one before is taken.
//!
//! A caller that stops reading therefore keeps its results counted, and
//! the gateway makes no more for it past its share (`pool::Share`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;

use crate::pool::Undelivered;

/// The most of a response body handed to HTTP/2 at once.
pub const PIECE_BYTES: usize = 64 << 10;

/// What a unary response's result holds, in the response's extensions
/// (which want `Clone`).
#[derive(Debug, Clone)]
pub struct UnaryResult(pub Arc<Undelivered>);

/// Paces every response body (see the module doc), moving a unary
/// response's [`UnaryResult`] into it.
pub fn pace(mut response: http::Response<Body>) -> http::Response<Body> {
    let held = response
        .extensions_mut()
        .remove::<UnaryResult>()
        .map(|UnaryResult(held)| held);
    response.map(|inner| {
        Body::new(Paced {
            inner,
            piece: Bytes::new(),
            held,
        })
    })
}

/// A body handed on in pieces, holding its result's bytes (if any) until
/// its last piece is taken.
struct Paced {
    inner: Body,
    /// What is left of the data frame being handed on.
    piece: Bytes,
    held: Option<Arc<Undelivered>>,
}

impl HttpBody for Paced {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.piece.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.piece = data,
                    Err(frame) => {
                        // The trailers: nothing more of it to send.
                        this.held = None;
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                other => {
                    this.held = None;
                    return Poll::Ready(other);
                }
            }
        }
        let piece = this.piece.split_to(this.piece.len().min(PIECE_BYTES));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.piece.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let piece = self.piece.len() as u64;
        hint.set_lower(hint.lower() + piece);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + piece);
        }
        hint
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
