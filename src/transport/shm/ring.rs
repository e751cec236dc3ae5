//! Single-producer single-consumer byte rings in memory shared with another
//! process, behind the safe [`Producer`] / [`Consumer`] pair. With
//! `mapping`, this is one of the two modules of the crate that hold
//! `unsafe` code.
//!
//! A ring is a control block (two cache lines: the producer's `head` and the
//! consumer's `tail`, both free-running `u64` byte counts) and `capacity`
//! data bytes, where byte `n` of the stream lives at `n % capacity`. The
//! other process may be buggy or hostile: every counter read from shared
//! memory is checked before use, so a corrupt ring is an error, never an
//! out-of-bounds access. Data is only ever copied in and out with raw
//! pointers; no Rust reference to the shared data bytes is created.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::mapping::Mapping;

/// Bytes of a ring's control block: `head` in the first cache line, `tail`
/// in the second.
pub const CONTROL_BYTES: usize = 128;
const HEAD_OFFSET: usize = 0;
const TAIL_OFFSET: usize = 64;

/// The counters of a ring do not describe a possible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt ring: head {head}, tail {tail}, capacity {capacity}")]
pub struct CorruptRing {
    pub head: u64,
    pub tail: u64,
    pub capacity: usize,
}

/// Where one ring sits inside a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPlacement {
    pub control_offset: usize,
    pub data_offset: usize,
    pub capacity: usize,
}

/// A placement that does not fit the mapping or is misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring placement {0:?} does not fit a mapping of {1} bytes")]
pub struct BadPlacement(pub RingPlacement, pub usize);

/// Both ends share this: the checked placement and the mapping it lives in.
struct RingMemory {
    mapping: Arc<dyn Mapping>,
    placement: RingPlacement,
}

impl RingMemory {
    fn new(mapping: Arc<dyn Mapping>, placement: RingPlacement) -> Result<Self, BadPlacement> {
        let len = mapping.size();
        let fits =
            |offset: usize, size: usize| offset.checked_add(size).is_some_and(|end| end <= len);
        let control_end = placement.control_offset.checked_add(CONTROL_BYTES);
        let data_end = placement.data_offset.checked_add(placement.capacity);
        let disjoint = match (control_end, data_end) {
            (Some(control_end), Some(data_end)) => {
                control_end <= placement.data_offset || data_end <= placement.control_offset
            }
            _ => false,
        };
        let valid = placement.capacity > 0
            && placement.control_offset % 64 == 0
            && fits(placement.control_offset, CONTROL_BYTES)
            && fits(placement.data_offset, placement.capacity)
            && disjoint
            && (mapping.base().as_ptr() as usize) % 64 == 0;
        if !valid {
            return Err(BadPlacement(placement, len));
        }
        Ok(RingMemory { mapping, placement })
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `new` checked that the control block lies inside the
        // mapping, which `Mapping` keeps alive while `self.mapping` is held;
        // the base is 64-byte aligned and offsets are multiples of 8, so the
        // pointer is aligned for `AtomicU64`. All access to the counters,
        // from both processes, is atomic.
        unsafe {
            let ptr = self
                .mapping
                .base()
                .as_ptr()
                .add(self.placement.control_offset + offset);
            AtomicU64::from_ptr(ptr.cast::<u64>())
        }
    }

    fn head(&self) -> &AtomicU64 {
        self.counter(HEAD_OFFSET)
    }

    fn tail(&self) -> &AtomicU64 {
        self.counter(TAIL_OFFSET)
    }

    fn capacity(&self) -> usize {
        self.placement.capacity
    }

    /// Splits `len` bytes starting at stream position `position` into at most
    /// two runs inside the data area: `(start, len)` pairs.
    fn runs(&self, position: u64, len: usize) -> [(usize, usize); 2] {
        let capacity = self.capacity();
        debug_assert!(len <= capacity);
        let start = (position % capacity as u64) as usize;
        let first = len.min(capacity - start);
        [(start, first), (0, len - first)]
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: `new` checked that the data area lies inside the mapping.
        unsafe { self.mapping.base().as_ptr().add(self.placement.data_offset) }
    }

    /// Copies `src` into the data area at stream position `position`.
    /// The caller ensures that the range is free (owned by the producer).
    fn copy_in(&self, position: u64, src: &[u8]) {
        let mut copied = 0;
        for (start, run) in self.runs(position, src.len()) {
            // SAFETY: `runs` keeps `start + len` within `capacity`, so the
            // destination is inside the data area; `src` is a separate Rust
            // slice, so the ranges cannot overlap. The consumer does not read
            // this range until `head` is published after the copy.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(copied),
                    self.data().add(start),
                    run,
                );
            }
            copied += run;
        }
    }

    /// Copies `len` bytes at stream position `position` out to `dst`. The
    /// caller ensures that the range is filled (owned by the consumer).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes and must not point into
    /// the shared mapping.
    unsafe fn copy_out(&self, position: u64, dst: *mut u8, len: usize) {
        let mut copied = 0;
        for (start, run) in self.runs(position, len) {
            // SAFETY: `runs` keeps `start + run` within `capacity`, so the
            // source is inside the data area; the caller vouches for `dst`
            // (`copied + run <= len`), which lies outside the mapping, so the
            // ranges cannot overlap. The producer does not write this range
            // until `tail` moves past it.
            unsafe {
                std::ptr::copy_nonoverlapping(self.data().add(start), dst.add(copied), run);
            }
            copied += run;
        }
    }
}

/// A word in shared memory through which a side says it is about to sleep
/// (the doorbells ring only a side that did: `doorbell.rs`).
pub struct SleepFlag {
    mapping: Arc<dyn Mapping>,
    offset: usize,
}

impl SleepFlag {
    /// The flag at `offset` of `mapping` (4-byte aligned, inside it).
    pub fn new(mapping: Arc<dyn Mapping>, offset: usize) -> Result<SleepFlag, BadFlag> {
        let fits = offset
            .checked_add(4)
            .is_some_and(|end| end <= mapping.size());
        if !fits || offset % 4 != 0 {
            return Err(BadFlag(offset, mapping.size()));
        }
        Ok(SleepFlag { mapping, offset })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: `new` checked that the word lies inside the mapping, which
        // `self.mapping` keeps alive; the base is 64-byte aligned and the
        // offset a multiple of 4, so the pointer is aligned for `AtomicU32`.
        // Both processes touch the word only atomically.
        unsafe { AtomicU32::from_ptr(self.mapping.base().as_ptr().add(self.offset).cast()) }
    }

    /// Says this side is about to sleep. SYNC POINT: SeqCst, with the
    /// fence in the waker's [`SleepFlag::take`]: either this side sees what
    /// the waker published, or the waker sees the flag and rings.
    pub fn raise(&self) {
        self.word().store(1, Ordering::SeqCst);
    }

    /// Says this side is awake after all.
    pub fn lower(&self) {
        self.word().store(0, Ordering::Relaxed);
    }

    /// Whether the side was about to sleep (the flag is lowered): then it
    /// must be rung. SYNC POINT: the fence orders the publication before
    /// this look (pairs with [`SleepFlag::raise`]).
    pub fn take(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.word().swap(0, Ordering::SeqCst) == 1
    }
}

/// A flag that does not fit the mapping or is misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a flag at offset {0} does not fit a mapping of {1} bytes")]
pub struct BadFlag(pub usize, pub usize);

/// The writing end of a ring.
pub struct Producer {
    memory: RingMemory,
    /// Our own `head`: the shared copy is only ever written from this.
    head: u64,
    /// Bytes copied in after `head`, not yet published.
    staged: u64,
}

/// The reading end of a ring.
pub struct Consumer {
    memory: RingMemory,
    /// Our own `tail`: the shared copy is only ever written from this.
    tail: u64,
}

/// Creates both ends of a fresh ring, setting its counters to zero. Only the
/// process that creates the segment does this, before any peer maps it.
pub fn create(
    mapping: Arc<dyn Mapping>,
    placement: RingPlacement,
) -> Result<(Producer, Consumer), BadPlacement> {
    let producer = attach_producer(Arc::clone(&mapping), placement)?;
    producer.memory.head().store(0, Ordering::Relaxed);
    producer.memory.tail().store(0, Ordering::Relaxed);
    let consumer = attach_consumer(mapping, placement)?;
    Ok((
        Producer {
            head: 0,
            staged: 0,
            ..producer
        },
        consumer,
    ))
}

/// Attaches the writing end to a ring in `mapping`, resuming at its `head`.
pub fn attach_producer(
    mapping: Arc<dyn Mapping>,
    placement: RingPlacement,
) -> Result<Producer, BadPlacement> {
    let memory = RingMemory::new(mapping, placement)?;
    // SYNC POINT: pairs with the consumer's Release store of `tail` (none
    // yet); reading our own counter needs no ordering.
    let head = memory.head().load(Ordering::Relaxed);
    Ok(Producer {
        memory,
        head,
        staged: 0,
    })
}

/// Attaches the reading end to a ring in `mapping`, resuming at its `tail`.
pub fn attach_consumer(
    mapping: Arc<dyn Mapping>,
    placement: RingPlacement,
) -> Result<Consumer, BadPlacement> {
    let memory = RingMemory::new(mapping, placement)?;
    let tail = memory.tail().load(Ordering::Relaxed);
    Ok(Consumer { memory, tail })
}

impl Producer {
    /// Bytes that can be written now (staged bytes count as written).
    pub fn free(&self) -> Result<usize, CorruptRing> {
        // SYNC POINT: Acquire pairs with the consumer's Release store of
        // `tail` in `Consumer::read`: the bytes it released are no longer read.
        let tail = self.memory.tail().load(Ordering::Acquire);
        let used = self.head.wrapping_add(self.staged).wrapping_sub(tail);
        let capacity = self.memory.capacity();
        if used > capacity as u64 {
            return Err(CorruptRing {
                head: self.head,
                tail,
                capacity,
            });
        }
        Ok(capacity - used as usize)
    }

    /// Copies as much of `src` as fits after what is staged already,
    /// without publishing it (see [`Producer::publish`]); returns how much.
    pub fn stage(&mut self, src: &[u8]) -> Result<usize, CorruptRing> {
        let len = src.len().min(self.free()?);
        if len > 0 {
            self.memory
                .copy_in(self.head.wrapping_add(self.staged), &src[..len]);
            self.staged += len as u64;
        }
        Ok(len)
    }

    /// Makes what was staged readable, all at once; returns how much.
    pub fn publish(&mut self) -> usize {
        let staged = std::mem::take(&mut self.staged);
        if staged > 0 {
            self.head = self.head.wrapping_add(staged);
            // SYNC POINT: Release pairs with the consumer's Acquire load of
            // `head` in `Consumer::available`: the bytes copied in are
            // visible before the new head is.
            self.memory.head().store(self.head, Ordering::Release);
        }
        staged as usize
    }

    /// Writes as much of `src` as fits and publishes it; returns how much.
    pub fn write(&mut self, src: &[u8]) -> Result<usize, CorruptRing> {
        self.stage(src)?;
        Ok(self.publish())
    }
}

impl Consumer {
    /// Bytes that can be read now.
    pub fn available(&self) -> Result<usize, CorruptRing> {
        // SYNC POINT: Acquire pairs with the producer's Release store of
        // `head` in `Producer::write`.
        let head = self.memory.head().load(Ordering::Acquire);
        let filled = head.wrapping_sub(self.tail);
        let capacity = self.memory.capacity();
        if filled > capacity as u64 {
            return Err(CorruptRing {
                head,
                tail: self.tail,
                capacity,
            });
        }
        Ok(filled as usize)
    }

    /// Copies up to `dst.len()` readable bytes out without releasing them;
    /// returns how many.
    pub fn peek(&self, dst: &mut [u8]) -> Result<usize, CorruptRing> {
        let len = dst.len().min(self.available()?);
        // SAFETY: `dst` is a live Rust slice of at least `len` bytes, outside
        // the mapping.
        unsafe { self.memory.copy_out(self.tail, dst.as_mut_ptr(), len) };
        Ok(len)
    }

    /// Where the next `len` readable bytes lie, if all of them are readable
    /// and in one piece (not across the ring's end): read them in place,
    /// then [`Consumer::skip`] them. The pointer stays valid while the
    /// consumer (and its mapping) lives; the producer does not write there
    /// until they are skipped.
    pub fn in_place(&self, len: usize) -> Result<Option<*const u8>, CorruptRing> {
        if len > self.available()? {
            return Ok(None);
        }
        let [(start, first), _] = self.memory.runs(self.tail, len);
        if first < len {
            return Ok(None);
        }
        // SAFETY: `runs` keeps `start + len` within the data area.
        Ok(Some(unsafe { self.memory.data().add(start).cast_const() }))
    }

    /// Reads up to `dst.len()` bytes and releases their space; returns how many.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, CorruptRing> {
        let len = dst.len().min(self.available()?);
        // SAFETY: `dst` is a live Rust slice of at least `len` bytes, outside
        // the mapping.
        unsafe { self.memory.copy_out(self.tail, dst.as_mut_ptr(), len) };
        self.release(len);
        Ok(len)
    }

    /// Appends up to `want` readable bytes to `dst`, without zero-filling it
    /// first, and releases their space; returns how many.
    pub fn read_into(&mut self, dst: &mut Vec<u8>, want: usize) -> Result<usize, CorruptRing> {
        let len = want.min(self.available()?);
        dst.reserve(len);
        let filled = dst.len();
        // SAFETY: `reserve` made room for `len` more bytes after `filled`;
        // the vector's buffer is heap memory outside the mapping.
        unsafe {
            self.memory
                .copy_out(self.tail, dst.as_mut_ptr().add(filled), len)
        };
        // SAFETY: the `len` bytes after `filled` were initialised just above.
        unsafe { dst.set_len(filled + len) };
        self.release(len);
        Ok(len)
    }

    /// Hands `len` read bytes back to the producer.
    fn release(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(len as u64);
        // SYNC POINT: Release pairs with the producer's Acquire load of
        // `tail` in `Producer::free`: the copy out is done before the
        // producer may overwrite these bytes.
        self.memory.tail().store(self.tail, Ordering::Release);
    }

    /// Drops up to `len` readable bytes without copying them; returns how many.
    pub fn skip(&mut self, len: usize) -> Result<usize, CorruptRing> {
        let len = len.min(self.available()?);
        self.release(len);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::HeapMapping;
    use super::*;

    fn ring(capacity: usize) -> (Arc<HeapMapping>, Producer, Consumer) {
        let mapping = HeapMapping::new(CONTROL_BYTES + capacity);
        let placement = RingPlacement {
            control_offset: 0,
            data_offset: CONTROL_BYTES,
            capacity,
        };
        let (producer, consumer) = create(mapping.clone(), placement).unwrap();
        (mapping, producer, consumer)
    }

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let (_mapping, mut producer, mut consumer) = ring(8);
        assert_eq!(producer.write(b"abcdef").unwrap(), 6);
        let mut out = [0u8; 4];
        assert_eq!(consumer.read(&mut out).unwrap(), 4);
        assert_eq!(&out, b"abcd");
        // Wraps: 2 bytes at the end, 4 at the start.
        assert_eq!(producer.write(b"ghijklmn").unwrap(), 6);
        assert_eq!(producer.free().unwrap(), 0);
        let mut out = [0u8; 16];
        assert_eq!(consumer.read(&mut out).unwrap(), 8);
        assert_eq!(&out[..8], b"efghijkl");
        assert_eq!(consumer.available().unwrap(), 0);
    }

    #[test]
    fn full_and_empty_rings_move_nothing() {
        let (_mapping, mut producer, mut consumer) = ring(4);
        assert_eq!(consumer.read(&mut [0; 4]).unwrap(), 0);
        assert_eq!(producer.write(b"1234").unwrap(), 4);
        assert_eq!(producer.write(b"5").unwrap(), 0);
        assert_eq!(consumer.skip(3).unwrap(), 3);
        assert_eq!(producer.free().unwrap(), 3);
    }

    #[test]
    fn corrupt_counters_are_errors() {
        let (mapping, mut producer, mut consumer) = ring(16);
        mapping.poke_u64(HEAD_OFFSET, 1000);
        assert!(consumer.read(&mut [0; 4]).is_err());
        mapping.poke_u64(TAIL_OFFSET, 999);
        assert!(producer.write(b"x").is_err());
    }

    #[test]
    fn placements_outside_the_mapping_are_refused() {
        let mapping: Arc<dyn Mapping> = HeapMapping::new(256);
        let bad = [
            RingPlacement {
                control_offset: 0,
                data_offset: 128,
                capacity: 129,
            },
            RingPlacement {
                control_offset: 8,
                data_offset: 128,
                capacity: 8,
            },
            RingPlacement {
                control_offset: 0,
                data_offset: 64,
                capacity: 8,
            },
            RingPlacement {
                control_offset: 0,
                data_offset: 128,
                capacity: 0,
            },
            RingPlacement {
                control_offset: usize::MAX - 10,
                data_offset: 128,
                capacity: 8,
            },
        ];
        for placement in bad {
            assert!(
                attach_consumer(Arc::clone(&mapping), placement).is_err(),
                "{placement:?}"
            );
        }
    }
}
