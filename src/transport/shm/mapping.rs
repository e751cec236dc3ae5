//! Memory that rings live in: the [`Mapping`] contract, the sealed memfd
//! behind it ([`SealedMemory`]), raw writes into a mapping to set up the
//! rings before any peer maps them, and [`MappedFile`]: a memfd another
//! process made, mapped here (a worker's view of its rings; a segment, to
//! read or to unpickle from in place). With `ring`, this is one of the two
//! modules of the crate that hold `unsafe` code.
//!
//! [`HeapMapping`], plain heap memory standing in for a segment, exists for
//! tests, benchmarks and fuzzing only (`cfg(test)` or the `test-support`
//! feature).

use std::os::fd::OwnedFd;
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

/// The memory one worker's rings live in: a memfd (anonymous, with no name
/// anyone could find or pre-create), allocated in full at once, sealed so
/// that no process can ever shrink or grow it, and mapped here. The worker
/// gets the file itself as an inherited descriptor and maps it too; once it
/// has, [`seal_writes`] closes the file to every other way of writing (new
/// writable mappings, `write`, punching holes).
///
/// The seals are what keep a hostile worker from killing the gateway: were
/// the file truncated, the gateway's next touch of the mapping would raise
/// SIGBUS; were pages punched out, they would come back as zeros (a corrupt
/// ring for that worker alone) allocated on the gateway's next touch.
pub struct SealedMemory {
    base: SharedPtr,
    len: usize,
    _map: memmap2::MmapMut,
}

/// The mapping's base address, shared between threads.
struct SharedPtr(NonNull<u8>);

// SAFETY: the pointer is the base of a mapping that belongs to the whole
// process and stays valid, from any thread, while the `MmapMut` beside it
// lives; the rings touch it only through atomics and raw copies, never
// through references.
unsafe impl Send for SharedPtr {}
// SAFETY: as above: shared access goes through atomics and raw copies only.
unsafe impl Sync for SharedPtr {}

/// Why the memory for a worker's rings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot create a memfd: {0}")]
    Create(#[source] nix::Error),
    #[error(
        "cannot allocate {len} bytes of shared memory ({source}); free memory, use a smaller --ring-bytes or fewer --workers"
    )]
    Allocate {
        len: usize,
        #[source]
        source: nix::Error,
    },
    #[error("cannot seal the memfd (sealing it against writes needs Linux 5.1): {0}")]
    Seal(#[source] nix::Error),
    #[error("cannot map the memfd: {0}")]
    Map(#[source] std::io::Error),
}

impl SealedMemory {
    /// `len` zeroed bytes of sealed shared memory, mapped; the file is
    /// returned to be handed to the worker.
    pub fn create(label: &str, len: usize) -> Result<(Arc<SealedMemory>, OwnedFd), MemoryError> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};

        let fd = memfd_create(label, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(MemoryError::Create)?;
        let size = i64::try_from(len).map_err(|_| MemoryError::Allocate {
            len,
            source: nix::Error::EFBIG,
        })?;
        // Every page now, so that running out of memory is an error here
        // rather than a SIGBUS when a ring first touches a page.
        nix::fcntl::posix_fallocate(&fd, 0, size)
            .map_err(|source| MemoryError::Allocate { len, source })?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(MemoryError::Seal)?;
        let file = std::fs::File::from(fd);
        // SAFETY: the file is a memfd only we and the worker we hand it to
        // can reach, sealed against any change of size, so every page of the
        // mapping stays backed for its whole length (a page punched out
        // before `seal_writes` reads as zeros); its contents may change under
        // us, which the rings expect (they copy through raw pointers and
        // check every counter they read).
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(MemoryError::Map)?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        let memory = SealedMemory {
            base: SharedPtr(base),
            len: map.len(),
            _map: map,
        };
        Ok((Arc::new(memory), OwnedFd::from(file)))
    }
}

/// How a [`MappedFile`] is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAs {
    /// Shared, read-write: both processes see each other's writes (rings).
    Shared,
    /// Private, copy-on-write: writes stay this process's (a segment
    /// unpickled in place: its arrays writable, as inline ones are).
    Private,
    /// Shared, read-only (a segment only read).
    ReadOnly,
}

/// A memfd mapped in full, kept mapped while the value (or an `Arc` of it)
/// lives.
pub struct MappedFile {
    base: SharedPtr,
    len: usize,
    how: MapAs,
    _map: Map,
}

enum Map {
    Writable(memmap2::MmapMut),
    ReadOnly(memmap2::Mmap),
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.len)
            .field("how", &self.how)
            .finish_non_exhaustive()
    }
}

/// A memfd that cannot be mapped safely, or failed to map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("the memfd is not sealed against changes")]
    NotSealed,
    #[error("the memfd holds {size} bytes, fewer than {wanted}")]
    TooSmall { size: usize, wanted: usize },
    #[error("cannot map the memfd: {0}")]
    Map(#[from] std::io::Error),
}

impl MappedFile {
    /// Maps all of `fd`, which must hold at least `wanted` bytes and be
    /// sealed against changing size (else a page cut off under the mapping
    /// would fault on its next touch).
    pub fn map(fd: &OwnedFd, how: MapAs, wanted: usize) -> Result<Arc<MappedFile>, MapError> {
        use rustix::fs::SealFlags;

        let seals = rustix::fs::fcntl_get_seals(fd).map_err(|err| MapError::Map(err.into()))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(MapError::NotSealed);
        }
        let size = rustix::fs::fstat(fd)
            .map_err(|err| MapError::Map(err.into()))?
            .st_size;
        let size = usize::try_from(size).unwrap_or(0);
        if size < wanted.max(1) {
            return Err(MapError::TooSmall { size, wanted });
        }
        let file = std::fs::File::from(fd.try_clone()?);
        let mut options = memmap2::MmapOptions::new();
        options.len(size);
        // SAFETY: the file is a memfd sealed against shrinking and growing
        // (checked above), so every page of the mapping stays backed for as
        // long as it lives; its contents may change under a shared mapping,
        // which its readers expect (the rings copy through raw pointers and
        // check every counter they read; a sealed segment cannot be written
        // at all).
        let map = unsafe {
            match how {
                MapAs::Shared => Map::Writable(options.map_mut(&file)?),
                MapAs::Private => Map::Writable(options.map_copy(&file)?),
                MapAs::ReadOnly => Map::ReadOnly(options.map(&file)?),
            }
        };
        let base = match &map {
            Map::Writable(map) => map.as_ptr(),
            Map::ReadOnly(map) => map.as_ptr(),
        };
        let base = NonNull::new(base.cast_mut()).expect("mmap never returns null");
        Ok(Arc::new(MappedFile {
            base: SharedPtr(base),
            len: size,
            how,
            _map: map,
        }))
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.base.0.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether writes through the mapping are allowed.
    pub fn is_writable(&self) -> bool {
        self.how != MapAs::ReadOnly
    }

    /// Copies `len` bytes at `offset` out, or None if they lie outside.
    pub fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        // SAFETY: the range is inside the mapping (checked above), mapped
        // while `self` lives; `out` has room for `len` bytes and is a
        // separate allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Some(out)
    }
}

/// A memfd sealed against every write and change of size, mapped
/// read-only: its bytes can never change, so they are lent out as a plain
/// slice (a payload that came in a segment of its own, read in place).
#[derive(Debug)]
pub struct FrozenBytes(Arc<MappedFile>);

impl FrozenBytes {
    /// Maps `fd`, which must be sealed against writes, shrinking and growing.
    pub fn map(fd: &OwnedFd) -> Result<FrozenBytes, MapError> {
        use rustix::fs::SealFlags;

        let seals = rustix::fs::fcntl_get_seals(fd).map_err(|err| MapError::Map(err.into()))?;
        if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW) {
            return Err(MapError::NotSealed);
        }
        Ok(FrozenBytes(MappedFile::map(fd, MapAs::ReadOnly, 0)?))
    }
}

impl AsRef<[u8]> for FrozenBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes from the base are mapped while the
        // `MappedFile` lives (the `Arc` keeps it); the file is sealed
        // against writes (checked in `map`, and a seal is never removed),
        // so no process can change the bytes while the slice is borrowed.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

impl MappedFile {
    /// The mapping as memory rings may live in, if it is shared and
    /// writable.
    pub fn for_rings(self: Arc<Self>) -> Option<Arc<dyn Mapping>> {
        (self.how == MapAs::Shared).then(|| Arc::new(RingMemory(self)) as Arc<dyn Mapping>)
    }
}

/// A writable [`MappedFile`], as [`Mapping`] wants.
struct RingMemory(Arc<MappedFile>);

// SAFETY: built only from a writable mapping (`MappedFile::for_rings`):
// `base` points to `len` bytes mapped read-write until the `MappedFile` is
// dropped, which the `Arc` prevents while this lives; page-aligned (so
// 64-byte aligned); the seals keep the file at its size.
unsafe impl Mapping for RingMemory {
    fn base(&self) -> NonNull<u8> {
        self.0.base.0
    }

    fn size(&self) -> usize {
        self.0.len
    }
}

/// Seals the memory behind `fd` against every new way of writing it: the
/// mappings made so far (the gateway's, the worker's) keep working, but no
/// process can map it writable again, `write` to it or punch holes in it,
/// and no seal can be added or removed any more. Call once the worker has
/// mapped it. Needs Linux 5.1.
pub fn seal_writes(fd: &OwnedFd) -> Result<(), MemoryError> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};

    let seals = SealFlag::F_SEAL_FUTURE_WRITE | SealFlag::F_SEAL_SEAL;
    fcntl(fd, FcntlArg::F_ADD_SEALS(seals))
        .map(drop)
        .map_err(MemoryError::Seal)
}

// SAFETY: `base` points to `len` bytes mapped read-write until `_map` is
// dropped with the value; mmap returns page-aligned (so 64-byte aligned)
// addresses, and the seals keep the file at its size.
unsafe impl Mapping for SealedMemory {
    fn base(&self) -> NonNull<u8> {
        self.base.0
    }

    fn size(&self) -> usize {
        self.len
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
    fn sealed_memory_cannot_change_size() {
        let (memory, fd) = SealedMemory::create("mystic-test", 8192).unwrap();
        assert_eq!(memory.size(), 8192);
        write_at(memory.as_ref(), 8191, &[7]).unwrap();
        let file = std::fs::File::from(fd);
        assert_eq!(file.metadata().unwrap().len(), 8192);
        for size in [0, 4096, 1 << 20] {
            let err = file.set_len(size).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc_eperm()), "set_len({size})");
        }
        use std::io::Write as _;
        let fd = OwnedFd::from(file.try_clone().unwrap());
        seal_writes(&fd).unwrap();
        let err = (&file).write(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_eperm()));
        // The mapping made before still writes.
        write_at(memory.as_ref(), 0, &[1]).unwrap();
    }

    fn libc_eperm() -> i32 {
        nix::Error::EPERM as i32
    }

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
