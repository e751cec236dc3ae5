//! The wire format, defined once: every record the gateway, the worker and
//! the client exchange, as bytes. The gateway uses it (the function cache in
//! `functions.rs`, the door in `segments/`, the ring in `transport/`); the
//! extension `mystic_native` exposes it to Python, where `mystic_wire` keeps
//! only the pickling policy and the exception tree. No other module spells a
//! record's magic or offset (the ring memory's own layout stays with the
//! ring, `transport/shm/segment.rs`). All integers are little endian.
//!
//! - [`calls`]: a request, `MCQ2` (a call by digest) or `MCA2` (a function
//!   attached to a call), split without copying ([`calls::split`],
//!   [`calls::Request`]) and built ([`calls::attach`]).
//! - [`answers`]: what a worker answers, `MCR1` (a response), `MCM2` (a
//!   miss) and the `MCK1` mark (it kept the attached function).
//! - [`items`]: a call that streams its items, `MCS1`, `MCI1`, `MCN1`,
//!   `MCX1`.
//! - [`segmented`]: a call from a caller on the gateway's host (`MCQ3`), a
//!   response in a segment (`MCR2`), and the body both carry: where a pickle
//!   and its buffers lie in a segment.
//! - [`records`]: the 32-byte records of the segment sockets.
//! - [`frame`]: the 16-byte header before every payload on a ring (`MCF1`).
//!
//! Parsers read bytes from other processes: every input gives a record or a
//! [`WireError`], never a panic. They read fields through [`Peek`], so that
//! Python's buffers (memory another process may be writing) are read a field
//! at a time, not borrowed whole. `tests/vectors/wire_records.txt` pins every
//! record, checked here and from Python through the extension.

pub mod answers;
pub mod calls;
pub mod frame;
pub mod items;
pub mod records;
pub mod segmented;
#[cfg(test)]
mod vectors;

pub use calls::Request;
pub use frame::FrameHeader;
pub use records::Record;

/// Bytes in a function's digest (SHA-256 of its pickle).
pub const DIGEST_BYTES: usize = 32;

/// SHA-256 of a function's pickle.
pub type Digest = [u8; DIGEST_BYTES];

/// A record that cannot be read, or a value that cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "the request payload does not start with b'MCQ2', b'MCQ3' or b'MCA2': it was not made \
         by this codec (or by a different version of it); use the same distribute_challenge \
         version for the client and the workers"
    )]
    NotARequest,

    #[error("the request payload ends inside its function's length")]
    FunctionLengthCut,

    #[error("the request payload ends inside its function")]
    FunctionCut,

    #[error("a function of {0} bytes is over the 4 GiB a request can carry")]
    FunctionTooLarge(usize),

    #[error("the call ends inside its shared-memory header")]
    CallHeaderCut,

    #[error("the response ends inside its shared-memory header")]
    ResponseHeaderCut,

    #[error("the payload ends inside its shared-memory layout")]
    LayoutCut,

    #[error("the payload ends inside its list of buffers")]
    BuffersCut,

    #[error("a buffer's source is {0}, not 0 or 1")]
    BufferSource(u64),

    #[error("a body lists at most 2^32 - 1 buffers, not {0}")]
    TooManyBuffers(usize),

    #[error("the payload's buffers overlap")]
    BuffersOverlap,

    #[error("a call without a segment must carry its whole pickle, and no buffers")]
    InlineCall,

    #[error("a shared-memory response carries nothing after its layout")]
    ResponseTrailing,

    #[error("a segment record is 32 bytes, not {0}")]
    RecordLength(usize),

    #[error("a frame header is 16 bytes, not {0}")]
    FrameHeaderLength(usize),

    #[error("bad frame header: not an archived header")]
    FrameArchive,

    #[error("bad frame header: magic {0:#010x}")]
    FrameMagic(u32),

    #[error("bad frame header: flags {0:#x}")]
    FrameFlags(u32),

    #[error("bad frame header: length {0}")]
    FrameLength(u64),

    #[error("a {field} is {expected} bytes, not {got}")]
    FieldLength {
        field: &'static str,
        expected: usize,
        got: usize,
    },
}

/// Bytes a record is read from, a fixed-size field at a time: a slice, or
/// (in the extension) a Python buffer.
pub trait Peek {
    /// How many bytes there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the `N` bytes at `at`, if they are all there.
    fn peek<const N: usize>(&self, at: usize) -> Option<[u8; N]>;

    /// The `u32` at `at`.
    fn u32_at(&self, at: usize) -> Option<u32> {
        self.peek(at).map(u32::from_le_bytes)
    }

    /// The `u64` at `at`.
    fn u64_at(&self, at: usize) -> Option<u64> {
        self.peek(at).map(u64::from_le_bytes)
    }

    /// Whether the bytes at `at` are `expected`.
    fn has_at<const N: usize>(&self, at: usize, expected: &[u8; N]) -> bool {
        self.peek::<N>(at).as_ref() == Some(expected)
    }
}

impl Peek for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn peek<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let end = at.checked_add(N)?;
        self.get(at..end)?.try_into().ok()
    }
}

/// `value` as `N` bytes, or a [`WireError::FieldLength`] naming `field`.
pub fn fixed<const N: usize>(field: &'static str, value: &[u8]) -> Result<[u8; N], WireError> {
    value.try_into().map_err(|_| WireError::FieldLength {
        field,
        expected: N,
        got: value.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_only_where_they_lie_whole() {
        let bytes: &[u8] = b"\x01\x00\x00\x00\x02";
        assert_eq!(bytes.u32_at(0), Some(1));
        assert_eq!(bytes.u32_at(1), Some(0x0200_0000));
        assert_eq!(bytes.u32_at(2), None);
        assert_eq!(bytes.peek::<0>(5), Some([]));
        assert_eq!(bytes.peek::<1>(usize::MAX), None);
        assert!(bytes.has_at(4, b"\x02"));
        assert!(!bytes.has_at(4, b"\x02\x00"));
    }

    proptest::proptest! {
        /// Bytes from another process, after a real magic or not: every
        /// parser gives a record or an error, and a split lies inside them.
        #[test]
        fn no_input_panics_a_parser(
            magic in proptest::sample::select(vec![&b""[..], b"MCA2", b"MCQ2", b"MCQ3", b"MCR2"]),
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
        ) {
            let bytes = &[magic, &rest[..]].concat()[..];
            if let Ok(split) = calls::split(bytes) {
                let function = split.function.clone().unwrap_or_default();
                proptest::prop_assert!(function.end <= split.call);
                proptest::prop_assert!(split.arguments() <= bytes.len());
            }
            if let Ok(call) = segmented::parse_call(bytes) {
                proptest::prop_assert!(call.inline.end == bytes.len());
            }
            let _ = segmented::parse_response(bytes);
            let _ = records::Record::read(bytes);
            let _ = frame::FrameHeader::read(bytes);
        }
    }

    #[test]
    fn fixed_fields_have_their_length() {
        assert_eq!(fixed::<2>("pair", b"ab"), Ok(*b"ab"));
        let err = fixed::<2>("pair", b"abc").unwrap_err();
        assert_eq!(err.to_string(), "a pair is 2 bytes, not 3");
    }
}
