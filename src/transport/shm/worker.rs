//! The worker's side of the shared-memory transport, blocking: what the
//! extension (`native/src/shm.rs`) runs for a Python worker, with the GIL
//! released, and what this crate's tests run as a worker peer.
//!
//! [`WorkerSide::connect`] says `hello`, takes the rings and bells, maps
//! the rings and says `ready`. A request is copied off the ring as it comes
//! (its space freed at once, so whatever a function keeps of it stays
//! valid); one spilled to a segment of its own is mapped, read in place.
//! A response of [`SPILL_BYTES`] or more goes in a segment of its own, the
//! rest through the ring.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::bells::{Bell, WaitError, wake};
use super::frame::{FrameError, FrameReader, FrameWriter};
use super::link::{self, Announced, SPILL_BYTES};
use super::mapping::{FrozenBytes, MapError};
use super::ring::CorruptRing;
use super::rings::{self, RingsError, Side};
use crate::segments::Sealed;
use crate::wire::FrameHeader;

/// Why the worker's side stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The gateway closed the link: the worker's normal end.
    #[error("the gateway closed the link")]
    Gone,

    /// The gateway broke the protocol.
    #[error("{0}")]
    Protocol(String),

    #[error("the link failed: {0}")]
    Io(#[source] io::Error),
}

impl WorkerError {
    fn from_io(err: io::Error) -> WorkerError {
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => WorkerError::Gone,
            io::ErrorKind::InvalidData => WorkerError::Protocol(err.to_string()),
            _ => WorkerError::Io(err),
        }
    }
}

impl From<CorruptRing> for WorkerError {
    fn from(err: CorruptRing) -> Self {
        WorkerError::Protocol(format!("a ring is corrupt: {err}"))
    }
}

impl From<FrameError> for WorkerError {
    fn from(err: FrameError) -> Self {
        WorkerError::Protocol(format!("a bad request frame: {err}"))
    }
}

/// A request's bytes, owned.
#[derive(Debug)]
pub enum Payload {
    /// Copied off the ring.
    Owned(Vec<u8>),
    /// The sealed segment it was spilled to, mapped read-only.
    Spilled(FrozenBytes),
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Spilled(frozen) => frozen.as_ref(),
        }
    }
}

/// One request, and the segment that came with it.
#[derive(Debug)]
pub struct Request {
    pub payload: Payload,
    pub segment: Option<OwnedFd>,
}

/// The worker's end of its rings, bells and link.
pub struct WorkerSide {
    link: OwnedFd,
    side: Side,
    /// Rung by the gateway; the worker sleeps on it.
    bell: Bell,
    /// Rung by the worker.
    gateway_bell: OwnedFd,
    max_payload_bytes: usize,
}

impl WorkerSide {
    /// Shakes hands over `link` (a seqpacket socket): the worker must have
    /// made itself undumpable first, since `hello` is what lets the gateway
    /// send it its rings.
    pub fn connect(link: OwnedFd, max_payload_bytes: usize) -> Result<WorkerSide, WorkerError> {
        let (rings, bells) = link::worker_handshake(link.as_fd()).map_err(WorkerError::from_io)?;
        let side = rings::attach(&rings).map_err(|err| {
            let hint = match &err {
                RingsError::Map(MapError::Map(io)) if io.kind() == io::ErrorKind::OutOfMemory => {
                    "; if --worker-memory-bytes is set, it must leave room for 2 x --ring-bytes"
                }
                _ => "",
            };
            WorkerError::Protocol(format!("cannot attach to the rings: {err}{hint}"))
        })?;
        link::send_message(link.as_fd(), link::READY, None).map_err(WorkerError::from_io)?;
        Ok(WorkerSide {
            link,
            side,
            bell: Bell::new(bells.worker),
            gateway_bell: bells.gateway,
            max_payload_bytes,
        })
    }

    /// Waits for the next request.
    pub fn receive(&mut self) -> Result<Request, WorkerError> {
        let max = self.max_payload_bytes;
        let mut reader = FrameReader::new(max);
        let frame = loop {
            let (frame, moved) = reader.pump(&mut self.side.incoming)?;
            if let Some(frame) = frame {
                break frame;
            }
            if moved > 0 {
                // Part of a frame: the gateway may be waiting for the space
                // freed (`frame.rs`).
                wake(&self.side.peer, self.gateway_bell.as_fd()).map_err(WorkerError::Io)?;
            }
            self.wait(|side| Ok(side.incoming.available()? > 0))?;
        };
        let header = frame.header;
        let Announced { spilled, segment } =
            link::receive_descriptors(self.link.as_fd(), header.descriptors(), header.is_spilled())
                .map_err(WorkerError::from_io)?;
        if frame.is_too_large(max) {
            return Err(WorkerError::Protocol(format!(
                "a request of {} bytes, over the limit of {max}",
                header.len
            )));
        }
        let payload = match (frame.payload, spilled) {
            (Some(payload), None) => Payload::Owned(payload),
            (None, Some(spilled)) => {
                let frozen = FrozenBytes::map(&spilled).map_err(|err| {
                    WorkerError::Protocol(format!("the spilled request cannot be mapped: {err}"))
                })?;
                if frozen.as_ref().len() as u64 != header.len {
                    return Err(WorkerError::Protocol(format!(
                        "the spilled request holds {} bytes, its frame says {}",
                        frozen.as_ref().len(),
                        header.len
                    )));
                }
                Payload::Spilled(frozen)
            }
            _ => unreachable!("a spilled frame's segment is sorted out with its descriptors"),
        };
        Ok(Request { payload, segment })
    }

    /// Sends one response made of `pieces` (`segment` with it): through
    /// the ring, or in a segment of its own from [`SPILL_BYTES`] on.
    pub fn send(
        &mut self,
        pieces: &[&[u8]],
        segment: Option<BorrowedFd<'_>>,
    ) -> Result<(), WorkerError> {
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        let spilled = if len >= SPILL_BYTES {
            Some(Sealed::write("mystic-frame", pieces).map_err(WorkerError::Io)?)
        } else {
            None
        };
        let fds: Vec<BorrowedFd<'_>> = spilled.iter().map(Sealed::fd).chain(segment).collect();
        let header = FrameHeader::with_descriptors(len as u64, fds.len(), spilled.is_some())
            .map_err(|err| WorkerError::Protocol(err.to_string()))?;
        link::send_descriptors(self.link.as_fd(), &fds).map_err(WorkerError::from_io)?;
        let carried: &[&[u8]] = if spilled.is_some() { &[] } else { pieces };
        let mut writer = FrameWriter::new(header, carried);
        loop {
            let pumped = writer.pump(&mut self.side.outgoing)?;
            if pumped.moved > 0 {
                wake(&self.side.peer, self.gateway_bell.as_fd()).map_err(WorkerError::Io)?;
            }
            if pumped.finished {
                return Ok(());
            }
            self.wait(|side| Ok(side.outgoing.free()? > 0))?;
        }
    }

    /// Waits until `ready` holds for the rings, or the link closes.
    fn wait(
        &mut self,
        ready: impl Fn(&Side) -> Result<bool, CorruptRing>,
    ) -> Result<(), WorkerError> {
        let side = &self.side;
        match self
            .bell
            .wait_until(&side.mine, self.link.as_fd(), || ready(side))
        {
            Ok(()) => Ok(()),
            Err(WaitError::Gone) => Err(WorkerError::Gone),
            Err(WaitError::Io(err)) => Err(WorkerError::Io(err)),
            Err(WaitError::Ready(err)) => Err(err.into()),
        }
    }
}
