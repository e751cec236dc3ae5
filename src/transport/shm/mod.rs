//! The shared-memory transport: per worker, one segment holding a request
//! ring and a response ring, and one Unix socket used only as a doorbell.
//! Payloads never touch the socket and are never base64-encoded; a message
//! larger than a ring streams through it with flow control.
//!
//! - `mapping`: the memory rings live in (the segment; a heap stand-in for
//!   tests). `ring`: the SPSC byte rings. Only these two hold `unsafe`.
//! - `frame`: frame headers (`rkyv`) and resumable frame reader/writer.
//! - `segment`: the segment layout and its creation.
//! - `doorbell`: the wake-up socket; `runtime_dir`: where sockets live and
//!   the clean-up of leftovers.

pub mod doorbell;
pub mod frame;
#[allow(unsafe_code)]
pub mod mapping;
#[allow(unsafe_code)]
pub mod ring;
pub mod runtime_dir;
pub mod segment;
#[cfg(test)]
mod vectors;

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

use super::TransportError;
use doorbell::{Doorbell, DoorbellListener};
use frame::{FrameError, FrameReader, FrameWriter};
use ring::{Consumer, CorruptRing, Producer};
use runtime_dir::RuntimeDir;
use segment::{Segment, SegmentError};

/// Default `--ring-bytes`.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;

/// What can go wrong with a worker's shared memory.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error(transparent)]
    Segment(#[from] SegmentError),

    #[error("cannot bind the doorbell socket {path}: {source}")]
    Doorbell {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the worker did not say `ready` on its doorbell")]
    NotReady,

    #[error("the worker broke the shared-memory protocol: {0}")]
    Frame(#[from] FrameError),

    #[error("the worker broke the shared-memory protocol: {0}")]
    Corrupt(#[from] CorruptRing),
}

/// A worker's segment and doorbell, made before the worker starts.
#[derive(Debug)]
pub struct Prepared {
    segment: Segment,
    listener: DoorbellListener,
    max_payload_bytes: usize,
}

impl Prepared {
    /// Creates slot `index`'s `generation`-th segment and binds its doorbell.
    pub fn new(
        runtime_dir: &RuntimeDir,
        ring_bytes: usize,
        max_payload_bytes: usize,
        index: usize,
        generation: u64,
    ) -> Result<Prepared, ShmError> {
        let segment = Segment::create(&runtime_dir.segment_name(index, generation), ring_bytes)?;
        let path = runtime_dir.socket_path(index, generation);
        let listener =
            DoorbellListener::bind(&path).map_err(|source| ShmError::Doorbell { path, source })?;
        Ok(Prepared {
            segment,
            listener,
            max_payload_bytes,
        })
    }

    /// Arguments that tell `worker_shim` where its segment and doorbell are.
    pub fn worker_args(&self) -> Vec<String> {
        vec![
            "--transport".into(),
            "shm".into(),
            "--shm-name".into(),
            self.segment.name.clone(),
            "--doorbell".into(),
            self.listener.path().to_string_lossy().into_owned(),
        ]
    }

    /// The gateway's end, ready for the worker's handshake.
    pub fn connect(self) -> ShmTransport {
        ShmTransport {
            requests: self.segment.requests,
            responses: self.segment.responses,
            listener: Some(self.listener),
            bell: None,
            max_payload_bytes: self.max_payload_bytes,
            segment_name: self.segment.name,
        }
    }
}

/// The gateway's end of one worker's segment and doorbell.
pub struct ShmTransport {
    requests: Producer,
    responses: Consumer,
    listener: Option<DoorbellListener>,
    bell: Option<Doorbell>,
    max_payload_bytes: usize,
    segment_name: String,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport")
            .field("segment", &self.segment_name)
            .finish_non_exhaustive()
    }
}

impl ShmTransport {
    /// Waits for the worker to connect to the doorbell and say `ready`.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        let listener = self.listener.take().ok_or(TransportError::Closed)?;
        let mut bell = listener.accept().await.map_err(from_io)?;
        if !bell.handshake().await.map_err(from_io)? {
            return Err(ShmError::NotReady.into());
        }
        self.bell = Some(bell);
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
        let bell = self.bell.as_mut().ok_or(TransportError::Closed)?;
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
