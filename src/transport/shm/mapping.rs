//! Memory that rings live in: the [`Mapping`] contract, the gateway's
//! shared-memory segment behind it, and raw writes into a mapping to set up
//! a segment before any peer maps it. With `ring`, this is one of the two
//! modules of the crate that hold `unsafe` code.
//!
//! [`HeapMapping`], plain heap memory standing in for a segment, exists for
//! tests, benchmarks and fuzzing only (`cfg(test)` or the `test-support`
//! feature).

use std::ptr::NonNull;
use std::sync::Arc;

/// Memory a ring lives in. Implemented by the shared-memory segment; the
/// owner keeps the mapping alive as long as any ring end holds it.
///
/// # Safety
/// `base()` must point to `size()` bytes that stay mapped, readable and
/// writable for as long as the value lives, and the pointer must be aligned
/// to at least 64 bytes.
pub unsafe trait Mapping: Send + Sync {
    fn base(&self) -> NonNull<u8>;
    fn size(&self) -> usize;
}

/// A range outside a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} do not fit a mapping of {size} bytes")]
pub struct OutOfBounds {
    pub offset: usize,
    pub len: usize,
    pub size: usize,
}

/// Copies `bytes` into `mapping` at `offset` (to initialise a segment
/// header before any peer maps it).
pub fn write_at(mapping: &dyn Mapping, offset: usize, bytes: &[u8]) -> Result<(), OutOfBounds> {
    if offset
        .checked_add(bytes.len())
        .is_none_or(|end| end > mapping.size())
    {
        return Err(OutOfBounds {
            offset,
            len: bytes.len(),
            size: mapping.size(),
        });
    }
    // SAFETY: the range is inside the mapping (checked above), which is valid
    // while `mapping` is borrowed; `bytes` is a separate Rust slice.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            mapping.base().as_ptr().add(offset),
            bytes.len(),
        );
    }
    Ok(())
}

/// A segment from the `shared_memory` crate, mapped into this process.
pub struct SharedSegment(shared_memory::Shmem);

impl SharedSegment {
    pub fn new(shmem: shared_memory::Shmem) -> Arc<Self> {
        Arc::new(SharedSegment(shmem))
    }
}

// SAFETY: `Shmem` is not `Send` only because it holds the mapping's raw
// pointer. The mapping belongs to the whole process and stays valid from any
// thread until the value is dropped; the rings touch it only through atomics
// and raw copies, never through references.
unsafe impl Send for SharedSegment {}
// SAFETY: as above: shared access goes through atomics and raw copies only.
unsafe impl Sync for SharedSegment {}

// SAFETY: `Shmem::as_ptr` points to `Shmem::len` bytes mapped read-write
// until the `Shmem` is dropped; mmap returns page-aligned (so 64-byte
// aligned) addresses.
unsafe impl Mapping for SharedSegment {
    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.0.as_ptr()).expect("mmap never returns null")
    }

    fn size(&self) -> usize {
        self.0.len()
    }
}

#[cfg(any(test, feature = "test-support"))]
pub use heap::HeapMapping;

#[cfg(any(test, feature = "test-support"))]
mod heap {
    use std::ptr::NonNull;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Mapping;

    /// Heap memory standing in for a segment, for tests and benchmarks.
    pub struct HeapMapping {
        ptr: NonNull<u8>,
        layout: std::alloc::Layout,
    }

    impl HeapMapping {
        /// Zeroed, 64-byte aligned memory of `len` bytes.
        pub fn new(len: usize) -> Arc<Self> {
            let layout = std::alloc::Layout::from_size_align(len.max(1), 64).expect("valid layout");
            // SAFETY: the layout has a non-zero size.
            let raw = unsafe { std::alloc::alloc_zeroed(layout) };
            let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
            Arc::new(HeapMapping { ptr, layout })
        }

        /// Overwrites a `u64` at `offset`, as a misbehaving peer might.
        pub fn poke_u64(&self, offset: usize, value: u64) {
            assert!(offset % 8 == 0 && offset + 8 <= self.layout.size());
            // SAFETY: in bounds and aligned (checked above); the write is
            // atomic, matching how the ring reads its counters.
            unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) }
                .store(value, Ordering::SeqCst);
        }
    }

    impl Drop for HeapMapping {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }

    // SAFETY: the allocation is plain memory owned by this value; the ring
    // ends access it only through atomics and raw copies.
    unsafe impl Send for HeapMapping {}
    // SAFETY: as above.
    unsafe impl Sync for HeapMapping {}

    // SAFETY: `ptr` points to `layout.size()` bytes, 64-byte aligned, that
    // live until the value is dropped.
    unsafe impl Mapping for HeapMapping {
        fn base(&self) -> NonNull<u8> {
            self.ptr
        }

        fn size(&self) -> usize {
            self.layout.size()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_outside_the_mapping_are_refused() {
        let mapping = HeapMapping::new(64);
        assert!(write_at(mapping.as_ref(), 60, &[1, 2, 3, 4]).is_ok());
        assert_eq!(
            write_at(mapping.as_ref(), 61, &[1, 2, 3, 4]),
            Err(OutOfBounds {
                offset: 61,
                len: 4,
                size: 64
            })
        );
        assert!(write_at(mapping.as_ref(), usize::MAX, &[1]).is_err());
    }
}
