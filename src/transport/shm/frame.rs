//! Frames on a ring: a 16-byte header ([`FrameHeader`], the wire's), the
//! payload, and zero padding to the next multiple of 16 bytes, so that every
//! header starts 16-byte aligned in the ring.
//!
//! [`FrameWriter`] and [`FrameReader`] are resumable: each `pump` moves as
//! many bytes as the ring allows now, so a payload larger than the ring
//! streams through it while the peer drains it.

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

    /// The payload was over the limit; it was skipped, so the next frame can
    /// be read.
    #[error("frame payload of {len} bytes is over the limit of {limit} bytes")]
    TooLarge { len: u64, limit: usize },
}

/// Writes one frame, a piece at a time.
#[derive(Debug)]
pub struct FrameWriter<P> {
    header: [u8; HEADER_BYTES],
    payload: P,
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

impl<P: AsRef<[u8]>> FrameWriter<P> {
    pub fn new(payload: P) -> Self {
        let len = payload.as_ref().len() as u64;
        FrameWriter {
            header: FrameHeader::new(len).encode(),
            payload,
            done: 0,
            total: HEADER_BYTES as u64 + len + padding(len),
        }
    }

    /// Writes what fits now.
    pub fn pump(&mut self, ring: &mut Producer) -> Result<Pumped, CorruptRing> {
        const ZEROS: [u8; HEADER_BYTES] = [0; HEADER_BYTES];
        let payload = self.payload.as_ref();
        let header_end = HEADER_BYTES as u64;
        let payload_end = header_end + payload.len() as u64;
        let mut moved = 0;
        while self.done < self.total {
            let piece: &[u8] = if self.done < header_end {
                &self.header[self.done as usize..]
            } else if self.done < payload_end {
                &payload[(self.done - header_end) as usize..]
            } else {
                &ZEROS[..(self.total - self.done) as usize]
            };
            let written = ring.write(piece)?;
            if written == 0 {
                break;
            }
            self.done += written as u64;
            moved += written;
        }
        Ok(Pumped {
            moved,
            finished: self.done == self.total,
        })
    }
}

/// Reads one frame, a piece at a time.
#[derive(Debug)]
pub struct FrameReader {
    limit: usize,
    header: [u8; HEADER_BYTES],
    header_have: usize,
    /// Set once the header is read.
    len: Option<u64>,
    payload: Vec<u8>,
    /// Payload and padding bytes still to skip (oversized frames).
    skipping: bool,
    consumed_after_header: u64,
}

impl FrameReader {
    /// A reader that refuses payloads over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameReader {
            limit,
            header: [0; HEADER_BYTES],
            header_have: 0,
            len: None,
            payload: Vec::new(),
            skipping: false,
            consumed_after_header: 0,
        }
    }

    /// Reads what is there now. `Ok(Some(payload))` once the frame is complete.
    pub fn pump(&mut self, ring: &mut Consumer) -> Result<(Option<Vec<u8>>, usize), FrameError> {
        let mut moved = 0;
        let len = match self.len {
            Some(len) => len,
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
                } else {
                    self.payload = Vec::with_capacity((header.len as usize).min(INITIAL_RESERVE));
                }
                self.len = Some(header.len);
                header.len
            }
        };
        let body = len + padding(len);
        while self.consumed_after_header < body {
            let left = body - self.consumed_after_header;
            let got = if self.skipping {
                ring.skip(usize::try_from(left).unwrap_or(usize::MAX))?
            } else if self.consumed_after_header < len {
                let want = (len - self.consumed_after_header) as usize;
                ring.read_into(&mut self.payload, want)?
            } else {
                ring.skip(left as usize)?
            };
            if got == 0 {
                return Ok((None, moved));
            }
            moved += got;
            self.consumed_after_header += got as u64;
        }
        let limit = self.limit;
        let skipped = self.skipping;
        let payload = std::mem::take(&mut self.payload);
        *self = FrameReader::new(limit);
        if skipped {
            return Err(FrameError::TooLarge { len, limit });
        }
        Ok((Some(payload), moved))
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

    #[test]
    fn a_frame_larger_than_the_ring_streams_through_it() {
        let (mut producer, mut consumer) = ring(64);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut writer = FrameWriter::new(&payload);
        let mut reader = FrameReader::new(1 << 20);
        let received = loop {
            writer.pump(&mut producer).unwrap();
            if let (Some(frame), _) = reader.pump(&mut consumer).unwrap() {
                break frame;
            }
        };
        assert_eq!(received, payload);
        assert!(writer.pump(&mut producer).unwrap().finished);
        assert_eq!(consumer.available().unwrap(), 0);
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let (mut producer, mut consumer) = ring(256);
        let mut reader = FrameReader::new(10);
        let mut big = FrameWriter::new(vec![1u8; 100]);
        assert!(big.pump(&mut producer).unwrap().finished);
        assert_eq!(
            reader.pump(&mut consumer).unwrap_err(),
            FrameError::TooLarge {
                len: 100,
                limit: 10
            }
        );
        let mut small = FrameWriter::new(b"ok".to_vec());
        assert!(small.pump(&mut producer).unwrap().finished);
        assert_eq!(reader.pump(&mut consumer).unwrap().0.unwrap(), b"ok");
    }

    #[test]
    fn empty_payloads_are_frames_too() {
        let (mut producer, mut consumer) = ring(64);
        let mut writer = FrameWriter::new(Vec::new());
        assert_eq!(
            writer.pump(&mut producer).unwrap(),
            Pumped {
                moved: 16,
                finished: true
            }
        );
        assert_eq!(
            FrameReader::new(0).pump(&mut consumer).unwrap().0.unwrap(),
            b""
        );
    }
}
