//! One worker's shared-memory segment: its layout (mirrored by
//! `worker_shim/_shm.py` and pinned by `tests/vectors/`), and creating it,
//! in sealed memory (`mapping::SealedMemory`), with both rings in place.
//!
//! ```text
//! 0     magic "MYSTSHM1"
//! 8     layout version (u32 LE) = 1
//! 12    data offset (u32 LE) = 4096
//! 16    ring bytes (u64 LE), the capacity of each ring
//! 64    request ring control   (head at 64, tail at 128), gateway -> worker
//! 192   response ring control  (head at 192, tail at 256), worker -> gateway
//! 4096  request ring data, then response ring data
//! ```

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::mapping::{Mapping, MemoryError, OutOfBounds, SealedMemory, write_at};
use super::ring::{self, BadPlacement, Consumer, Producer, RingPlacement};

pub const SEGMENT_MAGIC: &[u8; 8] = b"MYSTSHM1";
pub const LAYOUT_VERSION: u32 = 1;
pub const DATA_OFFSET: usize = 4096;
pub const REQUEST_CONTROL: usize = 64;
pub const RESPONSE_CONTROL: usize = 192;
/// Smallest ring: one page.
pub const MIN_RING_BYTES: usize = 4096;
/// The page size the rings are pre-faulted with (the smallest on Linux).
const PAGE_BYTES: usize = 4096;
/// How much of each ring is faulted in (mapped) before the worker starts:
/// what the first small calls touch. The rest is mapped as traffic first
/// reaches it, once per page for the segment's life, which saves start-up
/// time and page tables; the memory itself is allocated in full at creation
/// (`SealedMemory::create`). Mirrored in `worker_shim/_shm.py`.
pub const PREFAULT_BYTES: usize = 64 << 10;

/// The 64 header bytes of a segment whose rings hold `ring_bytes` each.
pub fn header_bytes(ring_bytes: usize) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(DATA_OFFSET as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(ring_bytes as u64).to_le_bytes());
    header
}

/// Where the two rings sit in a segment with rings of `ring_bytes`.
pub fn placements(ring_bytes: usize) -> (RingPlacement, RingPlacement) {
    let requests = RingPlacement {
        control_offset: REQUEST_CONTROL,
        data_offset: DATA_OFFSET,
        capacity: ring_bytes,
    };
    let responses = RingPlacement {
        control_offset: RESPONSE_CONTROL,
        data_offset: DATA_OFFSET + ring_bytes,
        capacity: ring_bytes,
    };
    (requests, responses)
}

/// A segment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Memory(#[from] MemoryError),

    #[error("ring size {0} is not a power of two of at least {MIN_RING_BYTES} bytes")]
    BadRingSize(usize),

    #[error("the segment layout does not fit its mapping: {0}")]
    Placement(#[from] BadPlacement),

    #[error("the segment layout does not fit its mapping: {0}")]
    OutOfBounds(#[from] OutOfBounds),
}

/// The gateway's side of a fresh segment, and the file to hand its worker.
pub struct Segment {
    pub requests: Producer,
    pub responses: Consumer,
    /// The segment's memfd, for the worker to map.
    pub file: OwnedFd,
    /// The gateway's own descriptor of it, to seal it against writes once
    /// the worker has mapped it (`mapping::seal_writes`).
    pub seal_later: OwnedFd,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Creates a segment with two empty rings of `ring_bytes` each.
    pub fn create(ring_bytes: usize) -> Result<Segment, SegmentError> {
        if ring_bytes < MIN_RING_BYTES || !ring_bytes.is_power_of_two() {
            return Err(SegmentError::BadRingSize(ring_bytes));
        }
        let size = DATA_OFFSET + 2 * ring_bytes;
        let (memory, file) = SealedMemory::create("mysticchallenge-rings", size)?;
        let mapping: Arc<dyn Mapping> = memory;
        let (request_place, response_place) = placements(ring_bytes);
        let (requests, _) = ring::create(Arc::clone(&mapping), request_place)?;
        let (_, responses) = ring::create(Arc::clone(&mapping), response_place)?;
        // The magic goes in last: a peer that sees it sees initialised rings.
        write_at(mapping.as_ref(), 0, &header_bytes(ring_bytes))?;
        // Fault in the start of each ring now, off the latency path of the
        // first calls; the rest waits until traffic reaches it.
        for place in [request_place, response_place] {
            let start = place.data_offset;
            let end = start + place.capacity.min(PREFAULT_BYTES);
            for offset in (start..end).step_by(PAGE_BYTES) {
                write_at(mapping.as_ref(), offset, &[0])?;
            }
        }
        let seal_later = file.try_clone().map_err(MemoryError::Map)?;
        Ok(Segment {
            requests,
            responses,
            file,
            seal_later,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_layout_is_pinned() {
        let header = header_bytes(1 << 20);
        assert_eq!(&header[..8], b"MYSTSHM1");
        assert_eq!(&header[8..16], &[1, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&header[16..24], &[0, 0, 0x10, 0, 0, 0, 0, 0]);
        assert!(header[24..].iter().all(|byte| *byte == 0));
    }

    #[test]
    fn a_segment_is_a_sealed_file_of_its_layouts_size() {
        let segment = Segment::create(4096).unwrap();
        let file = std::fs::File::from(segment.file);
        assert_eq!(
            file.metadata().unwrap().len(),
            (DATA_OFFSET + 2 * 4096) as u64
        );
        assert!(file.set_len(0).is_err(), "the segment could be truncated");
        drop(segment.seal_later);
    }

    #[test]
    fn odd_ring_sizes_are_refused() {
        for bad in [0, 100, 4095, 4097, 3 * 4096] {
            assert!(matches!(
                Segment::create(bad),
                Err(SegmentError::BadRingSize(_))
            ));
        }
    }
}
