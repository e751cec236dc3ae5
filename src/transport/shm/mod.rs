//! The shared-memory transport: per worker, one sealed memfd holding a
//! request ring and a response ring (`rings`), two eventfds as doorbells
//! (`bells`), and the link, a seqpacket socket pair (`link`) that carries
//! the handshake and descriptors (segments, and payloads too large for a
//! ring, spilled to a segment of their own). Payloads are never
//! base64-encoded and never cross a socket; a frame larger than a ring
//! streams through it with flow control.
//!
//! - `mapping`: mapping memfds (the rings', and segments read in place);
//!   `ring`: the SPSC byte rings and their sleep flags; `bells`: eventfd
//!   doorbells. Only these three hold `unsafe`.
//! - `frame`: resumable frame reader and writer (the header is the wire's).
//! - `rings`: the rings' layout, creating them and attaching to them.
//! - `link`: the link's messages and handshake.
//! - `worker`: the worker's side, blocking (the extension runs it).
//!
//! The worker starts with its link alone (fd 0); it says `hello` once it
//! has made itself undumpable, and only then is sent its rings and bells.
//! None of them has a name another process could find or pre-create, the
//! rings cannot be resized under the gateway, and once the worker has
//! mapped them no process can map them writable again (`seal_writes`).
//! Nothing of them outlives the processes.

#[allow(unsafe_code)]
pub mod bells;
pub mod frame;
pub mod link;
#[allow(unsafe_code)]
pub mod mapping;
#[allow(unsafe_code)]
pub mod ring;
pub mod rings;
#[cfg(test)]
mod transport_tests;
#[cfg(test)]
mod vectors;
pub mod worker;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::Bytes;

use super::{Incoming, TransportError, off_runtime_if_large};
use crate::segments::Sealed;
use crate::wire::FrameHeader;
use bells::{AsyncBell, Bells, wake};
use frame::{FrameError, FrameReader, FrameWriter};
use link::{AsyncLink, SPILL_BYTES};
use mapping::{FrozenBytes, MapError};
use ring::CorruptRing;
use rings::{RingsError, Side};

/// Default `--ring-bytes`.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;

/// What can go wrong with a worker's shared memory.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error(transparent)]
    Rings(#[from] RingsError),

    #[error("cannot create the doorbells: {0}")]
    Bells(#[source] io::Error),

    #[error("the worker broke the link's handshake: {0}")]
    Handshake(#[source] io::Error),

    #[error("the worker broke the shared-memory protocol: {0}")]
    Frame(#[from] FrameError),

    #[error("the worker broke the shared-memory protocol: {0}")]
    Corrupt(#[from] CorruptRing),

    #[error("the worker's spilled response cannot be read: {0}")]
    Spilled(String),
}

/// A worker's rings and bells, made before the worker starts.
pub struct Prepared {
    side: Side,
    rings: OwnedFd,
    bells: Bells,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("rings", &self.rings)
            .field("bells", &self.bells)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Creates rings of `ring_bytes` each and the bells.
    pub fn new(ring_bytes: usize) -> Result<Prepared, ShmError> {
        let (side, rings) = rings::create(ring_bytes)?;
        let bells = Bells::new().map_err(ShmError::Bells)?;
        Ok(Prepared { side, rings, bells })
    }

    /// Our end, over `link` (a seqpacket socket), ready for the worker's
    /// handshake. Call from within the tokio runtime.
    pub fn connect(self, link: OwnedFd, max_payload_bytes: usize) -> io::Result<ShmTransport> {
        Ok(ShmTransport {
            link: AsyncLink::new(link)?,
            side: self.side,
            bell: AsyncBell::new(self.bells.gateway)?,
            worker_bell: self.bells.worker,
            rings: Some(self.rings),
            max_payload_bytes,
        })
    }
}

/// Our end of one worker's rings, bells and link.
pub struct ShmTransport {
    link: AsyncLink,
    side: Side,
    /// Rung by the worker; we sleep on it.
    bell: AsyncBell,
    /// Rung by us; the worker sleeps on it.
    worker_bell: OwnedFd,
    /// Until the handshake: the rings' memfd, to send, then seal.
    rings: Option<OwnedFd>,
    max_payload_bytes: usize,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport")
            .field("handshake_done", &self.rings.is_none())
            .finish_non_exhaustive()
    }
}

impl ShmTransport {
    /// Waits for the worker's `hello` (it is not dumpable any more), sends
    /// it its rings and bells, waits for `ready` (it has mapped them), then
    /// seals the rings against any further way of writing them.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        let Some(rings) = self.rings.take() else {
            return Ok(());
        };
        let broke = link_broken;
        self.link.expect(link::HELLO).await.map_err(broke)?;
        let fds = [rings.as_fd(), self.bell.as_fd(), self.worker_bell.as_fd()];
        self.link.send(link::RINGS, &fds).await.map_err(broke)?;
        self.link.expect(link::READY).await.map_err(broke)?;
        mapping::seal_writes(&rings).map_err(|err| ShmError::Rings(err.into()))?;
        Ok(())
    }

    /// Sends the request frame (its descriptors first: `segment`, and the
    /// request itself when it is too large for the ring), then reads the
    /// response frame and the descriptors it announces.
    ///
    /// Each side rings the other's bell only when the other said it is
    /// about to sleep (`bells.rs`), after publishing bytes or freeing
    /// space: a busy pair exchanges frames without a system call.
    pub async fn call(
        &mut self,
        request: Bytes,
        segment: Option<BorrowedFd<'_>>,
    ) -> Result<Incoming, TransportError> {
        let len = request.len();
        let spilled = if len >= SPILL_BYTES {
            let payload = request.clone();
            let sealed = off_runtime_if_large(len, move || {
                Sealed::write("mysticchallenge-request", &[&payload])
            })
            .await?;
            Some(sealed)
        } else {
            None
        };
        let fds: Vec<BorrowedFd<'_>> = spilled.iter().map(Sealed::fd).chain(segment).collect();
        self.link
            .send_descriptors(&fds)
            .await
            .map_err(TransportError::from_io)?;
        let header = FrameHeader::with_descriptors(len as u64, fds.len(), spilled.is_some())
            .map_err(|err| ShmError::Frame(err.into()))?;
        let whole = [&request[..]];
        let pieces: &[&[u8]] = if spilled.is_some() { &[] } else { &whole };
        self.send_frame(FrameWriter::new(header, pieces)).await?;
        drop(spilled);
        crate::hops::hop_in_call("written");
        let answer = self.receive_frame().await;
        crate::hops::hop_in_call("read");
        answer
    }

    async fn send_frame(&mut self, mut writer: FrameWriter<'_>) -> Result<(), TransportError> {
        let ShmTransport {
            side,
            bell,
            worker_bell,
            link,
            ..
        } = self;
        loop {
            let pumped = writer.pump(&mut side.outgoing).map_err(ShmError::from)?;
            if pumped.moved > 0 {
                wake(&side.peer, worker_bell.as_fd())?;
            }
            if pumped.finished {
                return Ok(());
            }
            let outgoing = &side.outgoing;
            let space = bell.wait_until(&side.mine, || {
                Ok::<_, TransportError>(outgoing.free().map_err(ShmError::from)? > 0)
            });
            wait_or_hear(space, link).await?;
        }
    }

    async fn receive_frame(&mut self) -> Result<Incoming, TransportError> {
        let limit = self.max_payload_bytes;
        let mut reader = FrameReader::new(limit);
        let frame = {
            let ShmTransport {
                side,
                bell,
                worker_bell,
                link,
                ..
            } = self;
            loop {
                let (frame, moved) = reader.pump(&mut side.incoming).map_err(ShmError::from)?;
                if let Some(frame) = frame {
                    break frame;
                }
                if moved > 0 {
                    // Part of a frame: the worker may be waiting for the
                    // space freed (`frame.rs`).
                    wake(&side.peer, worker_bell.as_fd())?;
                }
                let incoming = &side.incoming;
                let bytes = bell.wait_until(&side.mine, || {
                    Ok::<_, TransportError>(incoming.available().map_err(ShmError::from)? > 0)
                });
                wait_or_hear(bytes, link).await?;
            }
        };
        let header = frame.header;
        let announced = self
            .link
            .receive_descriptors(header.descriptors(), header.is_spilled())
            .await
            .map_err(link_broken)?;
        if frame.is_too_large(limit) {
            return Err(TransportError::ResponseTooLarge {
                size: usize::try_from(header.len).unwrap_or(usize::MAX),
                limit,
            });
        }
        let payload = match (frame.payload, announced.spilled) {
            (Some(payload), _) => Bytes::from(payload),
            (None, Some(spilled)) => read_spilled(spilled, header.len)?,
            (None, None) => unreachable!("a spilled frame's segment is sorted out first"),
        };
        Ok(Incoming {
            payload,
            segment: announced.segment,
        })
    }
}

/// Waits for `ready` (the ring's bell), taking the descriptors the worker
/// sends ahead of its frame meanwhile; a worker that closes its link ends
/// the wait (`Closed`), even mid-frame.
async fn wait_or_hear(
    ready: impl Future<Output = Result<(), TransportError>>,
    link: &mut AsyncLink,
) -> Result<(), TransportError> {
    tokio::pin!(ready);
    loop {
        tokio::select! {
            // The ring first: a worker that wrote its frame and then went
            // (its bell rung before its link closed) is heard out.
            biased;
            outcome = &mut ready => return outcome,
            heard = link.take_ahead() => heard.map_err(link_broken)?,
        }
    }
}

fn link_broken(err: io::Error) -> TransportError {
    match err.kind() {
        io::ErrorKind::InvalidData => ShmError::Handshake(err).into(),
        _ => TransportError::from_io(err),
    }
}

/// A spilled payload of `len` bytes, read in place.
fn read_spilled(fd: OwnedFd, len: u64) -> Result<Bytes, ShmError> {
    let bytes =
        FrozenBytes::map(&fd).map_err(|err: MapError| ShmError::Spilled(err.to_string()))?;
    let size = bytes.as_ref().len();
    if size as u64 != len {
        return Err(ShmError::Spilled(format!(
            "{size} bytes where its frame says {len}"
        )));
    }
    Ok(Bytes::from_owner(bytes))
}
