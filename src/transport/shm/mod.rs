//! The shared-memory transport: per worker, one segment holding a request
//! ring and a response ring, and one Unix socket used only as a doorbell.
//! Payloads never touch the socket and are never base64-encoded; a message
//! larger than a ring streams through it with flow control.
//!
//! - `mapping`: the memory rings live in (the segment; a heap stand-in for
//!   tests). `ring`: the SPSC byte rings. Only these two hold `unsafe`.
//! - `frame`: frame headers (`rkyv`) and resumable frame reader/writer.
//! - `segment`: the segment layout and its creation.
//! - `doorbell`: the wake-up socket.
//!
//! The worker gets its segment (a sealed memfd) as its stdout and its end
//! of the doorbell (a socket pair) as its stdin: neither has a name that
//! another process could find, pre-create or connect to, neither can be
//! resized under the gateway, and nothing of them outlives the processes.

pub mod doorbell;
pub mod frame;
#[allow(unsafe_code)]
pub mod mapping;
#[allow(unsafe_code)]
pub mod ring;
pub mod segment;
#[cfg(test)]
mod vectors;

use std::io;
use std::os::fd::OwnedFd;

use bytes::Bytes;

use super::TransportError;
use doorbell::Doorbell;
use frame::{FrameError, FrameReader, FrameWriter};
use ring::{Consumer, CorruptRing, Producer};
use segment::{Segment, SegmentError};

/// Default `--ring-bytes`.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;

/// What can go wrong with a worker's shared memory.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error(transparent)]
    Segment(#[from] SegmentError),

    #[error("cannot create the doorbell socket pair: {0}")]
    Doorbell(#[source] io::Error),

    #[error("the worker did not say `ready` on its doorbell")]
    NotReady,

    #[error("the worker broke the shared-memory protocol: {0}")]
    Frame(#[from] FrameError),

    #[error("the worker broke the shared-memory protocol: {0}")]
    Corrupt(#[from] CorruptRing),
}

/// A worker's segment and doorbell, made before the worker starts.
pub struct Prepared {
    requests: Producer,
    responses: Consumer,
    bell: Doorbell,
    seal_later: OwnedFd,
    max_payload_bytes: usize,
    /// The worker's stdin (its doorbell end) and stdout (the segment).
    worker_ends: Option<(OwnedFd, OwnedFd)>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("bell", &self.bell)
            .field("worker_ends", &self.worker_ends)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Creates a segment with rings of `ring_bytes` and a doorbell.
    pub fn new(ring_bytes: usize, max_payload_bytes: usize) -> Result<Prepared, ShmError> {
        let segment = Segment::create(ring_bytes)?;
        let (bell, worker_bell) = Doorbell::pair().map_err(ShmError::Doorbell)?;
        Ok(Prepared {
            requests: segment.requests,
            responses: segment.responses,
            bell,
            seal_later: segment.seal_later,
            max_payload_bytes,
            worker_ends: Some((worker_bell, segment.file)),
        })
    }

    /// The worker's stdin and stdout: its end of the doorbell, and the
    /// segment's file. Taken once, by the spawner.
    pub fn worker_stdio(&mut self) -> Option<(OwnedFd, OwnedFd)> {
        self.worker_ends.take()
    }

    /// The gateway's end, ready for the worker's handshake.
    pub fn connect(self) -> ShmTransport {
        ShmTransport {
            requests: self.requests,
            responses: self.responses,
            bell: self.bell,
            seal_later: Some(self.seal_later),
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

/// The gateway's end of one worker's segment and doorbell.
pub struct ShmTransport {
    requests: Producer,
    responses: Consumer,
    bell: Doorbell,
    /// Until the handshake: the segment's file, to seal against writes.
    seal_later: Option<OwnedFd>,
    max_payload_bytes: usize,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport")
            .field("handshake_done", &self.seal_later.is_none())
            .finish_non_exhaustive()
    }
}

impl ShmTransport {
    /// Waits for the worker to say `ready` on the doorbell (it has mapped
    /// its segment by then), then seals the segment against any further way
    /// of writing it.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        if !self.bell.handshake().await.map_err(from_io)? {
            return Err(ShmError::NotReady.into());
        }
        if let Some(file) = self.seal_later.take() {
            mapping::seal_writes(&file)
                .map_err(SegmentError::from)
                .map_err(ShmError::from)?;
        }
        Ok(())
    }

    /// Streams the request frame in, then the response frame out.
    ///
    /// Bells are rung only when the other side may be waiting for them. A
    /// producer rings after every write (the consumer may be waiting for
    /// bytes). A producer waits for space only while part of its frame is
    /// unwritten, so a consumer rings only when it freed space and is about
    /// to wait for the rest of the frame: a blocked producer cannot finish
    /// its frame, so the consumer is bound to reach that point. A call that
    /// fits the rings costs one bell each way. The worker follows the same
    /// rules (`worker_shim/_shm.py`).
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, TransportError> {
        let bell = &mut self.bell;
        let mut writer = FrameWriter::new(request);
        loop {
            let pumped = writer.pump(&mut self.requests).map_err(ShmError::from)?;
            if pumped.moved > 0 {
                bell.ring().await.map_err(from_io)?;
            }
            if pumped.finished {
                break;
            }
            bell.wait().await.map_err(from_io)?;
        }
        let mut reader = FrameReader::new(self.max_payload_bytes);
        loop {
            match reader.pump(&mut self.responses) {
                Ok((Some(payload), _)) => return Ok(Bytes::from(payload)),
                Ok((None, moved)) => {
                    // The frame is unfinished, so the worker may be waiting
                    // for the space just freed (see `call`'s doc).
                    if moved > 0 {
                        bell.ring().await.map_err(from_io)?;
                    }
                    bell.wait().await.map_err(from_io)?;
                }
                Err(FrameError::TooLarge { len, limit }) => {
                    let size = usize::try_from(len).unwrap_or(usize::MAX);
                    return Err(TransportError::ResponseTooLarge { size, limit });
                }
                Err(err) => return Err(ShmError::from(err).into()),
            }
        }
    }
}

fn from_io(err: io::Error) -> TransportError {
    match err.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => TransportError::Closed,
        _ => TransportError::Io(err),
    }
}
