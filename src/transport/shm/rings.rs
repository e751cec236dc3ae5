//! One worker's rings: the layout of the memory they live in (pinned by
//! `tests/vectors/`), creating it (the gateway) and attaching to it (the
//! worker, through the extension), each side getting its ends of both
//! rings and both sides' sleep flags.
//!
//! ```text
//! 0     magic "MYSTSHM1"
//! 8     layout version (u32 LE) = 2
//! 12    data offset (u32 LE) = 4096
//! 16    ring bytes (u64 LE), the capacity of each ring
//! 64    request ring control   (head at 64, tail at 128), gateway -> worker
//! 192   response ring control  (head at 192, tail at 256), worker -> gateway
//! 320   the gateway's sleep flag (u32), on a cache line of its own
//! 384   the worker's sleep flag (u32)
//! 4096  request ring data, then response ring data
//! ```
//!
//! The memory is a sealed memfd (`mapping::SealedMemory`); the worker gets
//! it over its link once it is not dumpable (`shm/mod.rs`).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::mapping::{
    MapAs, MapError, MappedFile, Mapping, MemoryError, OutOfBounds, SealedMemory, write_at,
};
use super::ring::{self, BadFlag, BadPlacement, Consumer, Producer, RingPlacement, SleepFlag};

pub const RINGS_MAGIC: &[u8; 8] = b"MYSTSHM1";
pub const LAYOUT_VERSION: u32 = 2;
pub const DATA_OFFSET: usize = 4096;
pub const REQUEST_CONTROL: usize = 64;
pub const RESPONSE_CONTROL: usize = 192;
pub const GATEWAY_FLAG: usize = 320;
pub const WORKER_FLAG: usize = 384;
/// Smallest ring: one page.
pub const MIN_RING_BYTES: usize = 4096;
/// The page size the rings are pre-faulted with (the smallest on Linux).
const PAGE_BYTES: usize = 4096;
/// How much of each ring is faulted in before the worker starts: what the
/// first small calls touch. The rest is mapped as traffic first reaches
/// it; the memory itself is allocated in full at creation.
pub const PREFAULT_BYTES: usize = 64 << 10;

/// The 64 header bytes of rings of `ring_bytes` each.
pub fn header_bytes(ring_bytes: usize) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[..8].copy_from_slice(RINGS_MAGIC);
    header[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(DATA_OFFSET as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(ring_bytes as u64).to_le_bytes());
    header
}

/// Where the two rings sit with rings of `ring_bytes`.
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

/// The rings could not be made or attached to.
#[derive(Debug, thiserror::Error)]
pub enum RingsError {
    #[error(transparent)]
    Memory(#[from] MemoryError),

    #[error("ring size {0} is not a power of two of at least {MIN_RING_BYTES} bytes")]
    BadRingSize(usize),

    #[error("the rings' layout does not fit their memory: {0}")]
    Placement(#[from] BadPlacement),

    #[error("the rings' layout does not fit their memory: {0}")]
    OutOfBounds(#[from] OutOfBounds),

    #[error("the rings' layout does not fit their memory: {0}")]
    Flag(#[from] BadFlag),

    #[error("cannot map the rings: {0}")]
    Map(#[from] MapError),

    #[error("the rings' header is not this version's ({0})")]
    BadHeader(String),
}

/// One side's view: the end of the ring it writes (the gateway: requests;
/// the worker: responses), the end of the one it reads, its own sleep
/// flag and its peer's.
pub struct Side {
    pub outgoing: Producer,
    pub incoming: Consumer,
    pub mine: SleepFlag,
    pub peer: SleepFlag,
}

/// Creates rings of `ring_bytes` each, empty; the gateway's view, and the
/// memfd to hand the worker.
pub fn create(ring_bytes: usize) -> Result<(Side, OwnedFd), RingsError> {
    if ring_bytes < MIN_RING_BYTES || !ring_bytes.is_power_of_two() {
        return Err(RingsError::BadRingSize(ring_bytes));
    }
    let size = DATA_OFFSET + 2 * ring_bytes;
    let (memory, file) = SealedMemory::create("mysticchallenge-rings", size)?;
    let mapping: Arc<dyn Mapping> = memory;
    let (request_place, response_place) = placements(ring_bytes);
    let (requests, _) = ring::create(Arc::clone(&mapping), request_place)?;
    let (_, responses) = ring::create(Arc::clone(&mapping), response_place)?;
    let side = Side {
        outgoing: requests,
        incoming: responses,
        mine: SleepFlag::new(Arc::clone(&mapping), GATEWAY_FLAG)?,
        peer: SleepFlag::new(Arc::clone(&mapping), WORKER_FLAG)?,
    };
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
    Ok((side, file))
}

/// Attaches to rings the gateway made (`fd`, their memfd): the worker's
/// view. The header is checked before anything is read through it.
pub fn attach(fd: &OwnedFd) -> Result<Side, RingsError> {
    let file = MappedFile::map(fd, MapAs::Shared, DATA_OFFSET)?;
    let header = file
        .read(0, 24)
        .ok_or_else(|| RingsError::BadHeader("too small".into()))?;
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let data_offset = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let ring_bytes = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if &header[..8] != RINGS_MAGIC || version != LAYOUT_VERSION {
        return Err(RingsError::BadHeader(format!(
            "magic {:?}, version {version}",
            String::from_utf8_lossy(&header[..8])
        )));
    }
    let ring_bytes = usize::try_from(ring_bytes).unwrap_or(usize::MAX);
    let fits = DATA_OFFSET
        .checked_add(ring_bytes.saturating_mul(2))
        .is_some_and(|end| end <= file.len());
    if data_offset as usize != DATA_OFFSET
        || ring_bytes < MIN_RING_BYTES
        || !ring_bytes.is_power_of_two()
        || !fits
    {
        return Err(RingsError::BadHeader(format!(
            "rings of {ring_bytes} bytes from {data_offset} in {} bytes",
            file.len()
        )));
    }
    let mapping = file
        .for_rings()
        .expect("mapped shared, so it can hold rings");
    let (request_place, response_place) = placements(ring_bytes);
    Ok(Side {
        outgoing: ring::attach_producer(Arc::clone(&mapping), response_place)?,
        incoming: ring::attach_consumer(Arc::clone(&mapping), request_place)?,
        mine: SleepFlag::new(Arc::clone(&mapping), WORKER_FLAG)?,
        peer: SleepFlag::new(mapping, GATEWAY_FLAG)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_layout_is_pinned() {
        let header = header_bytes(1 << 20);
        assert_eq!(&header[..8], b"MYSTSHM1");
        assert_eq!(&header[8..16], &[2, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&header[16..24], &[0, 0, 0x10, 0, 0, 0, 0, 0]);
        assert!(header[24..].iter().all(|byte| *byte == 0));
    }

    #[test]
    fn both_sides_see_each_others_bytes_and_flags() {
        let (mut gateway, file) = create(4096).unwrap();
        let metadata = std::fs::File::from(file.try_clone().unwrap()).metadata();
        assert_eq!(metadata.unwrap().len(), (DATA_OFFSET + 2 * 4096) as u64);
        let mut worker = attach(&file).unwrap();
        assert_eq!(gateway.outgoing.write(b"request").unwrap(), 7);
        let mut buf = [0u8; 16];
        assert_eq!(worker.incoming.read(&mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"request");
        assert_eq!(worker.outgoing.write(b"response").unwrap(), 8);
        assert_eq!(gateway.incoming.read(&mut buf).unwrap(), 8);
        // A side that says it sleeps is seen, once, by the other.
        worker.mine.raise();
        assert!(gateway.peer.take());
        assert!(!gateway.peer.take());
        gateway.mine.raise();
        assert!(worker.peer.take());
    }

    #[test]
    fn odd_ring_sizes_and_foreign_memory_are_refused() {
        for bad in [0, 100, 4095, 4097, 3 * 4096] {
            assert!(matches!(create(bad), Err(RingsError::BadRingSize(_))));
        }
        // A memfd that is not sealed is not attached to.
        let fd = rustix::fs::memfd_create("not-rings", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 3 * 4096).unwrap();
        assert!(matches!(attach(&fd), Err(RingsError::Map(_))));
    }
}
