//! What the gateway reads of the shared-memory formats
//! (`mystic_wire/_segments.py` has them whole):
//!
//! ```text
//! call     = "MCQ3" + digest (32) + session (16) + handle u64 + result threshold u64 + body
//! response = "MCR2" + handle u64 + body
//! ```
//!
//! A call names its caller's session and its segment's handle there (0:
//! none); the worker answers `MCR2` with handle 0 after sending the result's
//! segment, and the gateway writes in the handle the caller takes it by.

use bytes::{BufMut as _, Bytes, BytesMut};

use super::door::Token;
use super::records::TOKEN_BYTES;
use crate::error::GatewayError;
use crate::functions::DIGEST_BYTES;

/// A call whose caller shares the gateway's host.
pub const CALL_MAGIC: &[u8; 4] = b"MCQ3";
/// A response whose result is in a segment.
pub const RESPONSE_MAGIC: &[u8; 4] = b"MCR2";

const SESSION_AT: usize = CALL_MAGIC.len() + DIGEST_BYTES;
const HANDLE_AT: usize = SESSION_AT + TOKEN_BYTES;
const CALL_HEADER: usize = HANDLE_AT + 8 + 8;
const RESPONSE_HEADER: usize = RESPONSE_MAGIC.len() + 8;

/// What an `MCQ3` call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    pub session: Token,
    /// Its segment's handle, if it has one.
    pub handle: Option<u64>,
}

/// The session and segment an `MCQ3` call names; None for any other call;
/// an `MCQ3` header cut short is an invalid request.
pub fn names(call: &[u8]) -> Result<Option<Names>, GatewayError> {
    if !call.starts_with(CALL_MAGIC) {
        return Ok(None);
    }
    if call.len() < CALL_HEADER {
        return Err(GatewayError::InvalidRequest);
    }
    let session = call[SESSION_AT..HANDLE_AT].try_into().expect("16 bytes");
    let handle = u64::from_le_bytes(call[HANDLE_AT..HANDLE_AT + 8].try_into().expect("8 bytes"));
    Ok(Some(Names {
        session,
        handle: (handle != 0).then_some(handle),
    }))
}

/// Whether a worker's response says its result is in a segment.
pub fn is_segment_response(response: &[u8]) -> bool {
    response.starts_with(RESPONSE_MAGIC) && response.len() >= RESPONSE_HEADER
}

/// `response` (an `MCR2` one) with `handle` written in.
pub fn with_handle(response: &[u8], handle: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(response.len());
    out.put_slice(RESPONSE_MAGIC);
    out.put_u64_le(handle);
    out.put_slice(&response[RESPONSE_HEADER..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(session: Token, handle: u64) -> Vec<u8> {
        let mut call = CALL_MAGIC.to_vec();
        call.extend([1; DIGEST_BYTES]);
        call.extend(session);
        call.extend(handle.to_le_bytes());
        call.extend(7u64.to_le_bytes());
        call.extend(b"body");
        call
    }

    #[test]
    fn calls_name_their_session_and_segment() {
        let names = names(&call([5; 16], 9)).unwrap().unwrap();
        assert_eq!(names.session, [5; 16]);
        assert_eq!(names.handle, Some(9));
        assert_eq!(
            super::names(&call([5; 16], 0)).unwrap().unwrap().handle,
            None
        );
        assert_eq!(super::names(b"MCQ2anything").unwrap(), None);
        assert!(super::names(&call([5; 16], 9)[..40]).is_err());
    }

    #[test]
    fn the_handle_is_written_into_a_segment_response() {
        let mut response = RESPONSE_MAGIC.to_vec();
        response.extend(0u64.to_le_bytes());
        response.extend(b"layout");
        assert!(is_segment_response(&response));
        assert!(!is_segment_response(b"MCR1pickle"));
        let patched = with_handle(&response, 77);
        assert_eq!(&patched[4..12], &77u64.to_le_bytes());
        assert_eq!(&patched[12..], b"layout");
    }
}
