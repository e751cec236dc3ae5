//! The header before every payload on a shared-memory ring: 16 bytes, an
//! `rkyv` archive with a pinned layout (`repr(C)`, little endian), so that
//! every frame starts 16-byte aligned in the ring.
//!
//! ```text
//! 0   magic "MCF1"
//! 4   flags (u32): bits 0-7 how many descriptors the link socket carries
//!     for this frame, bit 8 set when the payload itself went by the link
//!     (spilled: a sealed memfd, the frame carries no payload bytes);
//!     every other bit is zero
//! 8   payload length (u64), at most 2^48
//! 16  the payload, then zero padding to the next multiple of 16 bytes
//! ```
//!
//! Moving frames through a ring is the transport's (`transport/shm/frame.rs`).

use rkyv::rancor;

use super::{Peek, WireError};

/// `MCF1` read as a little-endian `u32`.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"MCF1");
/// Size of an encoded [`FrameHeader`], and the alignment of every frame.
pub const HEADER_BYTES: usize = 16;

/// Flag bit: the payload was too large for the ring and went by the link.
const SPILLED: u32 = 1 << 8;
/// Flag bits that count the descriptors sent alongside the frame.
const DESCRIPTORS: u32 = 0xff;

/// Longest payload a header may announce (256 TiB): far beyond any real
/// payload, and small enough that lengths plus padding never overflow.
pub const MAX_FRAME_LEN: u64 = 1 << 48;

/// What precedes every payload on a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct FrameHeader {
    /// Always [`FRAME_MAGIC`].
    pub magic: u32,
    /// Descriptor count and the spilled bit (see the module doc).
    pub flags: u32,
    /// Payload bytes that follow the header.
    pub len: u64,
}

/// Padding after a payload of `len` bytes.
pub fn padding(len: u64) -> u64 {
    (HEADER_BYTES as u64 - len % HEADER_BYTES as u64) % HEADER_BYTES as u64
}

impl FrameHeader {
    /// A header for a payload of `len` bytes.
    pub fn new(len: u64) -> Self {
        FrameHeader {
            magic: FRAME_MAGIC,
            flags: 0,
            len,
        }
    }

    /// A header for a payload of `len` bytes that comes with `descriptors`
    /// descriptors on the link, the payload itself among them when
    /// `spilled` (then the ring carries no payload bytes).
    pub fn with_descriptors(
        len: u64,
        descriptors: usize,
        spilled: bool,
    ) -> Result<Self, WireError> {
        if descriptors > crate::passing::MAX_FDS || (spilled && descriptors == 0) {
            return Err(WireError::FrameFlags(descriptors as u32));
        }
        let spilled_bit = if spilled { SPILLED } else { 0 };
        Ok(FrameHeader {
            flags: descriptors as u32 | spilled_bit,
            ..FrameHeader::new(len)
        })
    }

    /// How many descriptors the link carries for this frame.
    pub fn descriptors(&self) -> usize {
        (self.flags & DESCRIPTORS) as usize
    }

    /// Whether the payload went by the link rather than the ring.
    pub fn is_spilled(&self) -> bool {
        self.flags & SPILLED != 0
    }

    /// Bytes the frame takes in the ring, header and padding included.
    pub fn ring_bytes(&self) -> u64 {
        let carried = if self.is_spilled() { 0 } else { self.len };
        HEADER_BYTES as u64 + carried + padding(carried)
    }

    /// The header's 16 wire bytes (serialized on the stack: no allocation).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut space = rkyv::util::Align([std::mem::MaybeUninit::<u8>::uninit(); HEADER_BYTES]);
        let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(
            self,
            rkyv::ser::writer::Buffer::from(&mut *space),
        )
        .expect("a plain struct always fits its own size");
        let mut out = [0u8; HEADER_BYTES];
        out.copy_from_slice(&written);
        out
    }

    /// Checks and reads a header from its 16 wire bytes.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Self, WireError> {
        let aligned = rkyv::util::Align(*bytes);
        debug_assert_eq!(aligned.as_ptr().align_offset(HEADER_BYTES), 0);
        let archived = rkyv::access::<ArchivedFrameHeader, rancor::Error>(&aligned[..])
            .map_err(|_| WireError::FrameArchive)?;
        let header = FrameHeader {
            magic: archived.magic.to_native(),
            flags: archived.flags.to_native(),
            len: archived.len.to_native(),
        };
        if header.magic != FRAME_MAGIC {
            return Err(WireError::FrameMagic(header.magic));
        }
        let known = header.flags & !(DESCRIPTORS | SPILLED) == 0;
        let counted = header.descriptors() <= crate::passing::MAX_FDS;
        let spill_sent = !header.is_spilled() || header.descriptors() > 0;
        if !(known && counted && spill_sent) {
            return Err(WireError::FrameFlags(header.flags));
        }
        if header.len > MAX_FRAME_LEN {
            return Err(WireError::FrameLength(header.len));
        }
        Ok(header)
    }

    /// As [`FrameHeader::decode`], from bytes that must be 16.
    pub fn read<P: Peek + ?Sized>(bytes: &P) -> Result<Self, WireError> {
        let bytes = bytes
            .peek(0)
            .filter(|_| bytes.len() == HEADER_BYTES)
            .ok_or(WireError::FrameHeaderLength(bytes.len()))?;
        FrameHeader::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_layout_is_pinned() {
        let bytes = FrameHeader::new(0x0102_0304_0506).encode();
        assert_eq!(&bytes, b"MCF1\0\0\0\0\x06\x05\x04\x03\x02\x01\0\0");
        assert_eq!(
            FrameHeader::decode(&bytes).unwrap(),
            FrameHeader::new(0x0102_0304_0506)
        );
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut bytes = FrameHeader::new(5).encode();
        bytes[0] = b'X';
        let magic = u32::from_le_bytes(*b"XCF1");
        assert_eq!(
            FrameHeader::decode(&bytes),
            Err(WireError::FrameMagic(magic))
        );
        for flags in [5, 0x100, 0x200, 0x1_0001] {
            let mut bytes = FrameHeader::new(5).encode();
            bytes[4..8].copy_from_slice(&u32::to_le_bytes(flags));
            assert_eq!(
                FrameHeader::decode(&bytes),
                Err(WireError::FrameFlags(flags)),
                "{flags:#x}"
            );
        }
        // Found by the fuzzer: a length near u64::MAX overflowed the padding sum.
        let bytes = FrameHeader::new(u64::MAX).encode();
        assert_eq!(
            FrameHeader::decode(&bytes),
            Err(WireError::FrameLength(u64::MAX))
        );
        assert_eq!(
            FrameHeader::read(&bytes[1..]),
            Err(WireError::FrameHeaderLength(15))
        );
    }

    #[test]
    fn flags_count_descriptors_and_mark_a_spill() {
        let header = FrameHeader::with_descriptors(1 << 20, 2, true).unwrap();
        assert_eq!(&header.encode()[4..8], &[2, 1, 0, 0]);
        let back = FrameHeader::decode(&header.encode()).unwrap();
        assert_eq!((back.descriptors(), back.is_spilled()), (2, true));
        assert_eq!(back.ring_bytes(), 16);
        let plain = FrameHeader::with_descriptors(17, 1, false).unwrap();
        assert_eq!((plain.descriptors(), plain.is_spilled()), (1, false));
        assert_eq!(plain.ring_bytes(), 48);
        assert!(FrameHeader::with_descriptors(1, 5, false).is_err());
        assert!(FrameHeader::with_descriptors(1, 0, true).is_err());
    }

    #[test]
    fn padding_reaches_the_next_multiple_of_16() {
        assert_eq!([0, 1, 15, 16, 17].map(padding), [0, 15, 1, 0, 15]);
    }
}
