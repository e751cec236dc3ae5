//! Frames on a ring: a 16-byte header ([`FrameHeader`], the wire's), the
//! payload, and zero padding to the next multiple of 16 bytes, so that every
//! header starts 16-byte aligned in the ring.
//!
//! [`FrameWriter`] and [`FrameReader`] are resumable: each `pump` moves as
//! many bytes as the ring allows now, so a payload larger than the ring
//! streams through it while the peer drains it.
//!
//! A reader wakes the writer for the space it freed only while the frame
//! is still incomplete: a writer waits for space only in the middle of a
//! frame (a frame that fits is published whole), and each side sends one
//! frame and then waits for the answer under the same sleep flag, so a wake
//! after the last piece would be a second, useless wake-up for every call.

use super::ring::{Consumer, CorruptRing, Producer};
use crate::wire::WireError;
use crate::wire::frame::{FrameHeader, HEADER_BYTES, padding};

/// Most memory reserved up front for an incoming payload; the rest grows as
/// bytes arrive, so a header cannot make us allocate what never comes.
const INITIAL_RESERVE: usize = 64 << 20;

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Corrupt(#[from] CorruptRing),

    #[error(transparent)]
    BadHeader(#[from] WireError),
}

/// Writes one frame, a piece at a time: its header, then its payload's
/// pieces, then padding.
#[derive(Debug)]
pub struct FrameWriter<'a> {
    header: [u8; HEADER_BYTES],
    pieces: &'a [&'a [u8]],
    /// Zero bytes after the payload.
    padding: usize,
    /// Bytes of header + payload + padding written so far.
    done: u64,
    total: u64,
}

/// Outcome of one `pump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes moved through the ring by this call.
    pub moved: usize,
    /// Whether the frame is complete.
    pub finished: bool,
}

impl<'a> FrameWriter<'a> {
    /// A frame of `header` and the payload in `pieces`, one after the
    /// other (none for a spilled frame: its payload is not in the ring).
    pub fn new(header: FrameHeader, pieces: &'a [&'a [u8]]) -> Self {
        let carried: usize = pieces.iter().map(|piece| piece.len()).sum();
        debug_assert_eq!(
            carried as u64,
            if header.is_spilled() { 0 } else { header.len }
        );
        FrameWriter {
            header: header.encode(),
            pieces,
            padding: padding(carried as u64) as usize,
            done: 0,
            total: header.ring_bytes(),
        }
    }

    /// Writes what fits now, published at once (a reader sees a frame that
    /// fits whole, not a header without its payload).
    pub fn pump(&mut self, ring: &mut Producer) -> Result<Pumped, CorruptRing> {
        const ZEROS: [u8; HEADER_BYTES] = [0; HEADER_BYTES];
        let padding = &ZEROS[..self.padding];
        let parts = std::iter::once(&self.header[..])
            .chain(self.pieces.iter().copied())
            .chain(std::iter::once(padding));
        // Skip what was written already, stage the rest while it fits.
        let mut offset = self.done;
        for part in parts {
            let len = part.len() as u64;
            if offset >= len {
                offset -= len;
                continue;
            }
            let rest = &part[offset as usize..];
            offset = 0;
            if ring.stage(rest)? < rest.len() {
                break;
            }
        }
        let moved = ring.publish();
        self.done += moved as u64;
        Ok(Pumped {
            moved,
            finished: self.done == self.total,
        })
    }
}

/// A frame read whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    /// Its payload; none when it was spilled (it comes by the link) or
    /// over the reader's limit (it was skipped).
    pub payload: Option<Vec<u8>>,
}

impl Frame {
    /// Whether the payload was over the reader's limit, and skipped.
    pub fn is_too_large(&self, limit: usize) -> bool {
        self.header.len > limit as u64
    }
}

/// Reads one frame, a piece at a time.
#[derive(Debug)]
pub struct FrameReader {
    limit: usize,
    header: [u8; HEADER_BYTES],
    header_have: usize,
    /// Set once the header is read.
    decoded: Option<FrameHeader>,
    payload: Vec<u8>,
    /// The payload is skipped (over the limit).
    skipping: bool,
    consumed_after_header: u64,
}

impl FrameReader {
    /// A reader that skips payloads over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameReader {
            limit,
            header: [0; HEADER_BYTES],
            header_have: 0,
            decoded: None,
            payload: Vec::new(),
            skipping: false,
            consumed_after_header: 0,
        }
    }

    /// Reads what is there now: the frame once it is complete, and how
    /// many bytes this call took off the ring.
    pub fn pump(&mut self, ring: &mut Consumer) -> Result<(Option<Frame>, usize), FrameError> {
        let mut moved = 0;
        let header = match self.decoded {
            Some(header) => header,
            None => {
                let got = ring.read(&mut self.header[self.header_have..])?;
                moved += got;
                self.header_have += got;
                if self.header_have < HEADER_BYTES {
                    return Ok((None, moved));
                }
                let header = FrameHeader::decode(&self.header)?;
                if header.len > self.limit as u64 {
                    self.skipping = true;
                } else if !header.is_spilled() {
                    self.payload = Vec::with_capacity((header.len as usize).min(INITIAL_RESERVE));
                }
                self.decoded = Some(header);
                header
            }
        };
        let len = if header.is_spilled() { 0 } else { header.len };
        let body = header.ring_bytes() - HEADER_BYTES as u64;
        while self.consumed_after_header < body {
            let left = body - self.consumed_after_header;
            let got = if !self.skipping && self.consumed_after_header < len {
                let want = (len - self.consumed_after_header) as usize;
                ring.read_into(&mut self.payload, want)?
            } else {
                ring.skip(usize::try_from(left).unwrap_or(usize::MAX))?
            };
            if got == 0 {
                return Ok((None, moved));
            }
            moved += got;
            self.consumed_after_header += got as u64;
        }
        let payload = std::mem::take(&mut self.payload);
        let carried = !self.skipping && !header.is_spilled();
        *self = FrameReader::new(self.limit);
        let frame = Frame {
            header,
            payload: carried.then_some(payload),
        };
        Ok((Some(frame), moved))
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::HeapMapping;
    use super::super::ring::{CONTROL_BYTES, RingPlacement, create};
    use super::*;

    fn ring(capacity: usize) -> (Producer, Consumer) {
        let mapping = HeapMapping::new(CONTROL_BYTES + capacity);
        let placement = RingPlacement {
            control_offset: 0,
            data_offset: CONTROL_BYTES,
            capacity,
        };
        create(mapping, placement).unwrap()
    }

    fn frame(payload: &[u8]) -> Frame {
        Frame {
            header: FrameHeader::new(payload.len() as u64),
            payload: Some(payload.to_vec()),
        }
    }

    #[test]
    fn a_frame_larger_than_the_ring_streams_through_it() {
        let (mut producer, mut consumer) = ring(64);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let (head, tail) = payload.split_at(300);
        let pieces = [head, tail];
        let mut writer = FrameWriter::new(FrameHeader::new(1000), &pieces);
        let mut reader = FrameReader::new(1 << 20);
        let received = loop {
            writer.pump(&mut producer).unwrap();
            if let (Some(frame), _) = reader.pump(&mut consumer).unwrap() {
                break frame;
            }
        };
        assert_eq!(received, frame(&payload));
        assert!(writer.pump(&mut producer).unwrap().finished);
        assert_eq!(consumer.available().unwrap(), 0);
    }

    #[test]
    fn a_frame_that_fits_is_published_whole() {
        let (mut producer, consumer) = ring(64);
        let pieces: [&[u8]; 2] = [b"abc", b"defgh"];
        let mut writer = FrameWriter::new(FrameHeader::new(8), &pieces);
        assert_eq!(
            writer.pump(&mut producer).unwrap(),
            Pumped {
                moved: 32,
                finished: true
            }
        );
        assert_eq!(consumer.available().unwrap(), 32);
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let (mut producer, mut consumer) = ring(256);
        let mut reader = FrameReader::new(10);
        let big = [&[1u8; 100][..]];
        let mut writer = FrameWriter::new(FrameHeader::new(100), &big);
        assert!(writer.pump(&mut producer).unwrap().finished);
        let skipped = reader.pump(&mut consumer).unwrap().0.unwrap();
        assert!(skipped.is_too_large(10));
        assert_eq!(skipped.payload, None);
        let small = [&b"ok"[..]];
        let mut writer = FrameWriter::new(FrameHeader::new(2), &small);
        assert!(writer.pump(&mut producer).unwrap().finished);
        assert_eq!(reader.pump(&mut consumer).unwrap().0.unwrap(), frame(b"ok"));
    }

    #[test]
    fn a_spilled_frame_is_its_header_alone() {
        let (mut producer, mut consumer) = ring(64);
        let header = FrameHeader::with_descriptors(5 << 20, 1, true).unwrap();
        let mut writer = FrameWriter::new(header, &[]);
        assert_eq!(writer.pump(&mut producer).unwrap().moved, 16);
        let read = FrameReader::new(usize::MAX).pump(&mut consumer).unwrap();
        assert_eq!(
            read.0,
            Some(Frame {
                header,
                payload: None
            })
        );
        assert_eq!(read.1, 16);
    }

    #[test]
    fn empty_payloads_are_frames_too() {
        let (mut producer, mut consumer) = ring(64);
        let mut writer = FrameWriter::new(FrameHeader::new(0), &[]);
        assert_eq!(
            writer.pump(&mut producer).unwrap(),
            Pumped {
                moved: 16,
                finished: true
            }
        );
        assert_eq!(
            FrameReader::new(0).pump(&mut consumer).unwrap().0.unwrap(),
            frame(b"")
        );
    }
}
