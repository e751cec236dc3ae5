//! Calls and responses whose pickles lie in segments (sealed memfds handed
//! over the segment sockets), for a caller on the gateway's host.
//!
//! ```text
//! call     = "MCQ3" + digest (32 bytes) + session (16 bytes) + handle (u64)
//!            + result threshold (u64) + body
//! response = "MCR2" + handle (u64) + body
//! body     = pickle length (u64) + buffer count (u32)
//!            + (offset u64, length u64, source u64) per buffer
//!            + the pickle itself, in a call whose handle is 0
//! ```
//!
//! A call names its caller's session with the gateway and the handle of its
//! segment there (0: none, its pickle follows inline, without buffers); a
//! result threshold of 0 keeps its result inline. A response's handle is 0
//! from the worker; the gateway writes in the handle its caller takes the
//! result segment by. In a segment the pickle starts at offset 0 and each
//! buffer at an [`ALIGNMENT`]-aligned offset after it; a buffer's source is
//! [`Source::Here`] (this segment) or, in a response, [`Source::InCall`]
//! (the call's own segment, which the caller still holds).

use std::ops::Range;

use bytes::{BufMut as _, Bytes, BytesMut};

use super::records::{TOKEN_BYTES, Token};
use super::{DIGEST_BYTES, Digest, Peek, WireError};

/// A call whose caller shares the gateway's host.
pub const CALL_MAGIC: &[u8; 4] = b"MCQ3";
/// A response whose result is in a segment.
pub const RESPONSE_MAGIC: &[u8; 4] = b"MCR2";

const SESSION_AT: usize = CALL_MAGIC.len() + DIGEST_BYTES;
const HANDLE_AT: usize = SESSION_AT + TOKEN_BYTES;
const THRESHOLD_AT: usize = HANDLE_AT + 8;
/// The bytes of an `MCQ3` call's header, before its body.
pub const CALL_HEADER: usize = THRESHOLD_AT + 8;
/// The bytes of an `MCR2` response's header, before its body.
pub const RESPONSE_HEADER: usize = RESPONSE_MAGIC.len() + 8;
/// The bytes of a body before its list of buffers.
pub const BODY_HEADER: usize = 8 + 4;
/// The bytes of one buffer's place in a body.
pub const PLACE_BYTES: usize = 3 * 8;
/// Where buffers start in a segment: at multiples of this.
pub const ALIGNMENT: usize = 64;

/// What an `MCQ3` call's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallHeader {
    pub digest: Digest,
    /// The caller's session with the gateway.
    pub session: Token,
    /// Its segment's handle in that session; 0: none.
    pub handle: u64,
    /// From what size its result goes back in a segment; 0: inline.
    pub result_threshold: u64,
}

impl CallHeader {
    pub fn encode(&self) -> [u8; CALL_HEADER] {
        let mut header = [0; CALL_HEADER];
        header[..CALL_MAGIC.len()].copy_from_slice(CALL_MAGIC);
        header[CALL_MAGIC.len()..SESSION_AT].copy_from_slice(&self.digest);
        header[SESSION_AT..HANDLE_AT].copy_from_slice(&self.session);
        header[HANDLE_AT..THRESHOLD_AT].copy_from_slice(&self.handle.to_le_bytes());
        header[THRESHOLD_AT..].copy_from_slice(&self.result_threshold.to_le_bytes());
        header
    }

    /// The header of `call`, an `MCQ3` call; None for any other call.
    pub fn parse<P: Peek + ?Sized>(call: &P) -> Result<Option<CallHeader>, WireError> {
        if !call.has_at(0, CALL_MAGIC) {
            return Ok(None);
        }
        let cut = WireError::CallHeaderCut;
        Ok(Some(CallHeader {
            digest: call.peek(CALL_MAGIC.len()).ok_or(cut)?,
            session: call.peek(SESSION_AT).ok_or(cut)?,
            handle: call.u64_at(HANDLE_AT).ok_or(cut)?,
            result_threshold: call.u64_at(THRESHOLD_AT).ok_or(cut)?,
        }))
    }
}

/// Where a buffer lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// In the segment the body describes.
    Here = 0,
    /// In the segment of the call a response answers.
    InCall = 1,
}

impl TryFrom<u64> for Source {
    type Error = WireError;

    fn try_from(source: u64) -> Result<Source, WireError> {
        match source {
            0 => Ok(Source::Here),
            1 => Ok(Source::InCall),
            other => Err(WireError::BufferSource(other)),
        }
    }
}

/// One buffer's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub offset: u64,
    pub length: u64,
    pub source: Source,
}

/// Where a pickle and its buffers lie in a segment: a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The pickle's bytes, from offset 0.
    pub pickle_bytes: u64,
    /// Each buffer's place, in the order pickled.
    pub buffers: Vec<Place>,
}

impl Layout {
    /// The body's bytes (without an inline pickle).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let count = u32::try_from(self.buffers.len())
            .map_err(|_| WireError::TooManyBuffers(self.buffers.len()))?;
        let mut body = Vec::with_capacity(BODY_HEADER + PLACE_BYTES * self.buffers.len());
        body.extend(self.pickle_bytes.to_le_bytes());
        body.extend(count.to_le_bytes());
        for place in &self.buffers {
            body.extend(place.offset.to_le_bytes());
            body.extend(place.length.to_le_bytes());
            body.extend((place.source as u64).to_le_bytes());
        }
        Ok(body)
    }

    /// The body at `at` in `bytes`, and where it ends. Buffers in this
    /// segment lie after the pickle and after one another.
    pub fn parse<P: Peek + ?Sized>(bytes: &P, at: usize) -> Result<(Layout, usize), WireError> {
        let pickle_bytes = bytes.u64_at(at).ok_or(WireError::LayoutCut)?;
        let count = bytes.u32_at(at + 8).ok_or(WireError::LayoutCut)?;
        let first = at + BODY_HEADER;
        let end = usize::try_from(count)
            .ok()
            .and_then(|count| count.checked_mul(PLACE_BYTES))
            .and_then(|places| first.checked_add(places))
            .filter(|&end| end <= bytes.len())
            .ok_or(WireError::BuffersCut)?;
        let mut buffers = Vec::with_capacity((end - first) / PLACE_BYTES);
        let mut free_from = pickle_bytes;
        for place in (first..end).step_by(PLACE_BYTES) {
            let field = |at| bytes.u64_at(at).ok_or(WireError::BuffersCut);
            let (offset, length) = (field(place)?, field(place + 8)?);
            let source = Source::try_from(field(place + 16)?)?;
            if source == Source::Here {
                if offset < free_from {
                    return Err(WireError::BuffersOverlap);
                }
                free_from = offset
                    .checked_add(length)
                    .ok_or(WireError::BuffersOverlap)?;
            }
            buffers.push(Place {
                offset,
                length,
                source,
            });
        }
        Ok((
            Layout {
                pickle_bytes,
                buffers,
            },
            end,
        ))
    }
}

/// A parsed `MCQ3` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentedCall {
    pub header: CallHeader,
    pub layout: Layout,
    /// Its pickle, when it has no segment (the rest of the call).
    pub inline: Range<usize>,
}

/// Parses `call`, an `MCQ3` call (magic and digest included).
pub fn parse_call<P: Peek + ?Sized>(call: &P) -> Result<SegmentedCall, WireError> {
    let header = CallHeader::parse(call)?.ok_or(WireError::NotARequest)?;
    let (layout, end) = Layout::parse(call, CALL_HEADER)?;
    let inline = end..call.len();
    if header.handle == 0
        && (!layout.buffers.is_empty() || inline.len() as u64 != layout.pickle_bytes)
    {
        return Err(WireError::InlineCall);
    }
    Ok(SegmentedCall {
        header,
        layout,
        inline,
    })
}

/// The header of an `MCR2` response naming the segment `handle`.
pub fn response_header(handle: u64) -> [u8; RESPONSE_HEADER] {
    let mut header = [0; RESPONSE_HEADER];
    header[..RESPONSE_MAGIC.len()].copy_from_slice(RESPONSE_MAGIC);
    header[RESPONSE_MAGIC.len()..].copy_from_slice(&handle.to_le_bytes());
    header
}

/// Parses `response`, an `MCR2` response: its handle and its layout.
pub fn parse_response<P: Peek + ?Sized>(response: &P) -> Result<(u64, Layout), WireError> {
    let handle = response
        .u64_at(RESPONSE_MAGIC.len())
        .ok_or(WireError::ResponseHeaderCut)?;
    let (layout, end) = Layout::parse(response, RESPONSE_HEADER)?;
    if end != response.len() {
        return Err(WireError::ResponseTrailing);
    }
    Ok((handle, layout))
}

/// Whether a worker's answer says its result is in a segment.
pub fn is_segment_response<P: Peek + ?Sized>(answer: &P) -> bool {
    answer.has_at(0, RESPONSE_MAGIC) && answer.len() >= RESPONSE_HEADER
}

/// `response` (an `MCR2` one) with `handle` written in.
pub fn with_handle(response: &[u8], handle: u64) -> Bytes {
    let body = response.get(RESPONSE_HEADER..).unwrap_or_default();
    let mut out = BytesMut::with_capacity(RESPONSE_HEADER + body.len());
    out.put_slice(&response_header(handle));
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(handle: u64) -> CallHeader {
        CallHeader {
            digest: [1; DIGEST_BYTES],
            session: [5; TOKEN_BYTES],
            handle,
            result_threshold: 7,
        }
    }

    fn layout(places: &[(u64, u64, Source)]) -> Layout {
        let buffers = places
            .iter()
            .map(|&(offset, length, source)| Place {
                offset,
                length,
                source,
            })
            .collect();
        Layout {
            pickle_bytes: 10,
            buffers,
        }
    }

    #[test]
    fn calls_name_their_session_and_segment() {
        let body = layout(&[(64, 100, Source::Here)]).encode().unwrap();
        let call = [&header(9).encode()[..], &body].concat();
        let parsed = parse_call(&call[..]).unwrap();
        assert_eq!(parsed.header, header(9));
        assert_eq!(parsed.layout, layout(&[(64, 100, Source::Here)]));
        assert!(parsed.inline.is_empty());
        assert_eq!(CallHeader::parse(&b"MCQ2anything"[..]), Ok(None));
        assert_eq!(
            CallHeader::parse(&call[..40]),
            Err(WireError::CallHeaderCut)
        );
    }

    #[test]
    fn a_call_without_a_segment_carries_its_pickle() {
        let inline = [
            &header(0).encode()[..],
            &layout(&[]).encode().unwrap(),
            b"0123456789",
        ]
        .concat();
        let parsed = parse_call(&inline[..]).unwrap();
        assert_eq!(&inline[parsed.inline], b"0123456789");
        let short = &inline[..inline.len() - 1];
        assert_eq!(parse_call(short), Err(WireError::InlineCall));
    }

    #[test]
    fn the_handle_is_written_into_a_segment_response() {
        let body = layout(&[(0, 8, Source::InCall)]).encode().unwrap();
        let response = [&response_header(0)[..], &body].concat();
        assert!(is_segment_response(&response[..]));
        assert!(!is_segment_response(&b"MCR1pickle"[..]));
        let patched = with_handle(&response, 77);
        assert_eq!(
            parse_response(&patched[..]),
            Ok((77, layout(&[(0, 8, Source::InCall)])))
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let with = |places: &[(u64, u64, Source)], extra: &[u8]| {
            [
                &response_header(0)[..],
                &layout(places).encode().unwrap(),
                extra,
            ]
            .concat()
        };
        let overlapping = with(&[(64, 10, Source::Here), (70, 1, Source::Here)], b"");
        assert_eq!(
            parse_response(&overlapping[..]),
            Err(WireError::BuffersOverlap)
        );
        let over_the_pickle = with(&[(5, 1, Source::Here)], b"");
        assert_eq!(
            parse_response(&over_the_pickle[..]),
            Err(WireError::BuffersOverlap)
        );
        let wrapping = with(&[(64, u64::MAX, Source::Here)], b"");
        assert_eq!(
            parse_response(&wrapping[..]),
            Err(WireError::BuffersOverlap)
        );
        let trailing = with(&[], b"x");
        assert_eq!(
            parse_response(&trailing[..]),
            Err(WireError::ResponseTrailing)
        );
        let mut bad_source = with(&[(64, 1, Source::Here)], b"");
        let at = bad_source.len() - 8;
        bad_source[at] = 2;
        assert_eq!(
            parse_response(&bad_source[..]),
            Err(WireError::BufferSource(2))
        );
        let cut = with(&[(64, 1, Source::Here)], b"");
        assert_eq!(
            parse_response(&cut[..cut.len() - 1]),
            Err(WireError::BuffersCut)
        );
        assert_eq!(
            parse_response(&cut[..RESPONSE_HEADER + 3]),
            Err(WireError::LayoutCut)
        );
        assert_eq!(parse_response(&cut[..5]), Err(WireError::ResponseHeaderCut));
        let mut many = with(&[], b"");
        many[RESPONSE_HEADER + 8..RESPONSE_HEADER + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_response(&many[..]), Err(WireError::BuffersCut));
    }
}
