//! Requests: a call, with its function attached or named by digest. A
//! function travels once: after its first call, only its digest does.
//!
//! ```text
//! call     = "MCQ2" + digest (32 bytes, SHA-256 of the pickle) + pickled (args, kwargs, depmodules)
//!          | "MCQ3" + digest + the rest of its header and its body (see segmented)
//! attached = "MCA2" + function length (u32) + pickled function + call
//! ```
//!
//! [`split`] finds the parts of a request without copying or unpickling
//! anything; [`Request`] is the gateway's split request, its parts shared
//! slices of the payload; [`attach`] puts a function before a call.

use std::ops::Range;

use bytes::{BufMut as _, Bytes, BytesMut};

use super::{DIGEST_BYTES, Digest, Peek, WireError, segmented};

/// A call that names its function by digest.
pub const CALL_MAGIC: &[u8; 4] = b"MCQ2";
/// A call with its function attached.
pub const FUNCTION_MAGIC: &[u8; 4] = b"MCA2";

const LENGTH_BYTES: usize = 4;
/// The bytes before an attached function's pickle.
pub const ATTACHED_HEADER: usize = FUNCTION_MAGIC.len() + LENGTH_BYTES;
/// The bytes before an `MCQ2` call's pickle: its magic and digest.
pub const CALL_HEADER: usize = CALL_MAGIC.len() + DIGEST_BYTES;

/// Where a request's parts lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The digest its call names.
    pub digest: Digest,
    /// The attached function's pickle, if the function travels with it.
    pub function: Option<Range<usize>>,
    /// Where the call starts (at its magic); it runs to the end.
    pub call: usize,
    /// Whether the call is an `MCQ3` one, from a caller on the gateway's
    /// host (its header says more: [`segmented::parse_call`]).
    pub segmented: bool,
}

impl Split {
    /// Where the call's pickle starts, after its magic and digest (an
    /// `MCQ2` call's arguments; an `MCQ3` call's header goes on).
    pub fn arguments(&self) -> usize {
        self.call + CALL_HEADER
    }
}

/// Finds the parts of `payload`, a request.
pub fn split<P: Peek + ?Sized>(payload: &P) -> Result<Split, WireError> {
    let mut function = None;
    let mut call = 0;
    if payload.has_at(0, FUNCTION_MAGIC) {
        let length = payload
            .u32_at(FUNCTION_MAGIC.len())
            .ok_or(WireError::FunctionLengthCut)?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| ATTACHED_HEADER.checked_add(length))
            .filter(|&end| end <= payload.len())
            .ok_or(WireError::FunctionCut)?;
        function = Some(ATTACHED_HEADER..end);
        call = end;
    }
    let segmented = payload.has_at(call, segmented::CALL_MAGIC);
    if !(segmented || payload.has_at(call, CALL_MAGIC)) {
        return Err(WireError::NotARequest);
    }
    let digest = payload
        .peek(call + CALL_MAGIC.len())
        .ok_or(WireError::NotARequest)?;
    Ok(Split {
        digest,
        function,
        call,
        segmented,
    })
}

/// The header of an `MCQ2` call of the function with `digest`; its pickle
/// follows.
pub fn by_digest_header(digest: &Digest) -> [u8; CALL_HEADER] {
    let mut header = [0; CALL_HEADER];
    header[..CALL_MAGIC.len()].copy_from_slice(CALL_MAGIC);
    header[CALL_MAGIC.len()..].copy_from_slice(digest);
    header
}

/// The header of an attached function of `pickled_len` bytes; its pickle
/// follows, then the call.
pub fn attached_header(pickled_len: usize) -> Result<[u8; ATTACHED_HEADER], WireError> {
    let length =
        u32::try_from(pickled_len).map_err(|_| WireError::FunctionTooLarge(pickled_len))?;
    let mut header = [0; ATTACHED_HEADER];
    header[..FUNCTION_MAGIC.len()].copy_from_slice(FUNCTION_MAGIC);
    header[FUNCTION_MAGIC.len()..].copy_from_slice(&length.to_le_bytes());
    Ok(header)
}

/// `call` with the function `pickled` attached.
pub fn attach(pickled: &[u8], call: &[u8]) -> Result<Bytes, WireError> {
    let header = attached_header(pickled.len())?;
    let mut request = BytesMut::with_capacity(attached_len(pickled.len(), call.len()));
    request.put_slice(&header);
    request.put_slice(pickled);
    request.put_slice(call);
    Ok(request.freeze())
}

/// The size of a call of `call_len` bytes with a function of `pickled_len`
/// attached.
pub fn attached_len(pickled_len: usize, call_len: usize) -> usize {
    ATTACHED_HEADER + pickled_len + call_len
}

/// A client's request, split: its call and, if attached, its function,
/// each a shared slice of the payload (nothing is copied or unpickled).
#[derive(Debug, Clone)]
pub struct Request {
    digest: Digest,
    call: Bytes,
    attached: Option<Attached>,
}

/// A function that came attached to its call.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The client's whole payload, function and call.
    pub whole: Bytes,
    /// The function's pickle.
    pub pickled: Bytes,
}

impl Request {
    /// Splits `payload` into its call and its attached function, if any.
    pub fn parse(payload: Bytes) -> Result<Request, WireError> {
        let split = split(&payload[..])?;
        let attached = split.function.map(|function| Attached {
            pickled: payload.slice(function),
            whole: payload.clone(),
        });
        Ok(Request {
            digest: split.digest,
            call: payload.slice(split.call..),
            attached,
        })
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Whether the function travels with the call.
    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// The call's own pickle, after its magic and digest.
    pub fn arguments(&self) -> &[u8] {
        &self.call[CALL_HEADER..]
    }

    /// The call, header and all, without the function.
    pub fn call(&self) -> &[u8] {
        &self.call
    }

    /// Its digest, its call and its attached function.
    pub fn into_parts(self) -> (Digest, Bytes, Option<Attached>) {
        (self.digest, self.call, self.attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: Digest = [7; DIGEST_BYTES];

    fn by_digest(arguments: &[u8]) -> Vec<u8> {
        [&by_digest_header(&DIGEST)[..], arguments].concat()
    }

    #[test]
    fn requests_split_into_function_and_call() {
        let call = by_digest(b"args");
        let attached = attach(b"function", &call).unwrap();
        let split = split(&attached[..]).unwrap();
        assert_eq!(&attached[split.function.clone().unwrap()], b"function");
        assert_eq!(&attached[split.call..], &call[..]);
        assert_eq!(&attached[split.arguments()..], b"args");
        assert_eq!((split.digest, split.segmented), (DIGEST, false));
        let request = Request::parse(attached).unwrap();
        assert!(request.is_attached());
        assert_eq!(request.arguments(), b"args");
        let by_digest = Request::parse(call.into()).unwrap();
        assert!(!by_digest.is_attached());
        assert_eq!(by_digest.digest(), &DIGEST);
    }

    #[test]
    fn a_call_from_the_gateways_host_is_told_apart() {
        let call = [&segmented::CALL_MAGIC[..], &DIGEST, b"rest"].concat();
        let split = split(&call[..]).unwrap();
        assert!(split.segmented);
        assert_eq!(split.digest, DIGEST);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = attach(b"function", &by_digest(b"args")).unwrap();
        let cases: [(&[u8], WireError); 9] = [
            (b"", WireError::NotARequest),
            (b"MCQ2", WireError::NotARequest),
            (b"MCQ2short", WireError::NotARequest),
            (b"XXXX", WireError::NotARequest),
            (b"MCA2", WireError::FunctionLengthCut),
            (b"MCA2\x01", WireError::FunctionLengthCut),
            // A length past the end, and a function followed by no call.
            (b"MCA2\xff\xff\x00\x00function", WireError::FunctionCut),
            (b"MCA2\x08\x00\x00\x00function", WireError::NotARequest),
            (&good[..good.len() - 40], WireError::NotARequest),
        ];
        for (payload, expected) in cases {
            assert_eq!(split(payload), Err(expected), "{payload:?}");
        }
        let huge = u32::MAX as usize + 1;
        assert_eq!(
            attached_header(huge),
            Err(WireError::FunctionTooLarge(huge))
        );
    }
}
