//! A segment the gateway accepts: a memfd sealed against writes, resizing
//! and further seals, of a size it checked. Nobody, the process that made
//! it included, can change or truncate it any more, so a reader mapping it
//! never sees its bytes change nor faults on a page cut off under it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::SealFlags;

use crate::budget::Held;

/// The seals a segment must carry.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// The page size segments are charged by.
const PAGE_BYTES: usize = 4096;

/// Why a segment was refused.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("the segment is not a memfd that can carry seals: {0}")]
    NotMemfd(#[source] io::Error),

    #[error(
        "the segment is not sealed against writes and resizing (F_SEAL_WRITE, \
         F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_SEAL)"
    )]
    NotSealed,

    #[error("the segment is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },

    #[error("the segment is empty")]
    Empty,
}

/// A checked segment.
#[derive(Debug)]
pub struct Sealed {
    fd: OwnedFd,
    len: usize,
    /// Its place among the descriptors the gateway holds for callers, if
    /// it takes one; given back with the descriptor.
    _slot: Option<Held>,
}

impl Sealed {
    /// Checks that `fd` is a sealed memfd of at most `limit` bytes.
    pub fn check(fd: OwnedFd, limit: usize) -> Result<Sealed, SegmentError> {
        let seals =
            rustix::fs::fcntl_get_seals(&fd).map_err(|err| SegmentError::NotMemfd(err.into()))?;
        if !seals.contains(SEALS) {
            return Err(SegmentError::NotSealed);
        }
        let stat = rustix::fs::fstat(&fd).map_err(|err| SegmentError::NotMemfd(err.into()))?;
        let len = usize::try_from(stat.st_size).unwrap_or(usize::MAX);
        if len == 0 {
            return Err(SegmentError::Empty);
        }
        if len > limit {
            return Err(SegmentError::TooLarge { size: len, limit });
        }
        Ok(Sealed {
            fd,
            len,
            _slot: None,
        })
    }

    /// A new segment holding `pieces` one after the other: a memfd (no
    /// name, mode 0600), written, then sealed against writes, resizing and
    /// further seals.
    pub fn write(label: &str, pieces: &[&[u8]]) -> io::Result<Sealed> {
        use rustix::fs::{MemfdFlags, Mode};

        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        let fd = rustix::fs::memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        let mut at = 0u64;
        for piece in pieces {
            let mut done = 0;
            while done < piece.len() {
                done += rustix::io::pwrite(&fd, &piece[done..], at + done as u64)?;
            }
            at += piece.len() as u64;
        }
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        Ok(Sealed {
            fd,
            len,
            _slot: None,
        })
    }

    /// The segment, holding `slot` for as long as its descriptor lives.
    pub fn with_slot(self, slot: Held) -> Sealed {
        Sealed {
            _slot: Some(slot),
            ..self
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// What it counts against the gateway's byte bounds: its size rounded
    /// up to whole pages (at least one), which is what it occupies; many
    /// tiny segments cost what they hold, and a descriptor each.
    pub fn charge(&self) -> usize {
        self.len.div_ceil(PAGE_BYTES).max(1) * PAGE_BYTES
    }

    /// Never: an empty segment is refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustix::fs::MemfdFlags;

    /// A memfd of `len` bytes with `seals`.
    pub fn memfd(len: u64, seals: SealFlags) -> OwnedFd {
        let fd = rustix::fs::memfd_create(
            "test-segment",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        fd
    }

    pub fn sealed(len: u64) -> Sealed {
        Sealed::check(memfd(len, SEALS), usize::MAX).unwrap()
    }

    #[test]
    fn a_segment_is_charged_whole_pages() {
        assert_eq!(sealed(1).charge(), 4096);
        assert_eq!(sealed(4096).charge(), 4096);
        assert_eq!(sealed(4097).charge(), 8192);
    }

    #[test]
    fn only_sealed_memfds_of_a_bounded_size_pass() {
        assert_eq!(sealed(4096).len(), 4096);
        let unsealed = memfd(4096, SealFlags::SHRINK | SealFlags::GROW);
        assert!(matches!(
            Sealed::check(unsealed, usize::MAX),
            Err(SegmentError::NotSealed)
        ));
        assert!(matches!(
            Sealed::check(memfd(4096, SEALS), 100),
            Err(SegmentError::TooLarge {
                size: 4096,
                limit: 100
            })
        ));
        assert!(matches!(
            Sealed::check(memfd(0, SEALS), 100),
            Err(SegmentError::Empty)
        ));
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        assert!(matches!(
            Sealed::check(file, usize::MAX),
            Err(SegmentError::NotMemfd(_))
        ));
    }
}
