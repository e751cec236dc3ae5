//! Streamed items: what the gateway and a worker say about a call whose
//! function returns an iterator (a generator).
//!
//! ```text
//! gateway → worker   "MCS1" + request   run the call, send its items as they come
//!                    "MCN1"             the next chunk of items
//!                    "MCX1"             no more: close the iterator
//! worker → gateway   "MCI1" + pickle    a chunk of items; ask for the next
//!                    "MCR1" + pickle    the call's last response (its end,
//!                                       its exception, or the close answered)
//! ```
//!
//! The worker sends a chunk only when asked, so a caller that reads slowly
//! pauses the function between two chunks.

use bytes::{BufMut as _, Bytes, BytesMut};

use super::Peek;

/// A request to run a call and stream its items.
pub const STREAM_MAGIC: &[u8; 4] = b"MCS1";
/// A chunk of items.
pub const CHUNK_MAGIC: &[u8; 4] = b"MCI1";
/// A request for the next chunk.
pub const NEXT: &[u8; 4] = b"MCN1";
/// A request to close the iterator.
pub const CLOSE: &[u8; 4] = b"MCX1";

/// `request` (a call, by digest or attached) as a call that streams its items.
pub fn streamed(request: &[u8]) -> Bytes {
    let mut streamed = BytesMut::with_capacity(STREAM_MAGIC.len() + request.len());
    streamed.put_slice(STREAM_MAGIC);
    streamed.put_slice(request);
    streamed.freeze()
}

/// The request in `streamed`, if it is a call that streams its items.
pub fn unstreamed(streamed: &[u8]) -> Option<&[u8]> {
    streamed.strip_prefix(STREAM_MAGIC)
}

/// Whether a worker's answer is a chunk of items (more may follow).
pub fn is_chunk<P: Peek + ?Sized>(answer: &P) -> bool {
    answer.has_at(0, CHUNK_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_call_is_its_request_after_a_magic() {
        let streamed = streamed(b"MCQ2call");
        assert_eq!(&streamed[..], b"MCS1MCQ2call");
        assert_eq!(unstreamed(&streamed), Some(&b"MCQ2call"[..]));
        assert_eq!(unstreamed(b"MCQ2call"), None);
        assert!(is_chunk(&b"MCI1items"[..]));
        assert!(!is_chunk(&b"MCR1done"[..]));
    }
}
