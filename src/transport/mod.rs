//! How one request reaches a worker and its response comes back, over the
//! worker's *link*: a socket pair whose other end is the worker's fd 0.
//!
//! The transport is chosen once, as a [`Spec`] built from the command line;
//! the worker actor asks it to [`Spec::prepare`] each new worker's link
//! and never names an implementation.
//!
//! - [`TransportKind`]: the choice on the command line.
//! - [`Spec`]: what every worker's link is made from.
//! - [`Prepared`]: a link made before its worker starts: the worker's end,
//!   the arguments that tell it what it speaks; [`Prepared::connect`] makes
//!   it a [`Transport`] once the worker runs.
//! - [`Transport`]: the link to one worker: a handshake, then calls, each a
//!   payload and at most one segment (a sealed memfd) each way.
//! - [`pipe`]: base64 lines over a stream socket (the original design's
//!   protocol); [`lines`]: the line buffer both of its ends read through.
//! - [`shm`]: shared-memory rings with eventfd doorbells; the link, a
//!   seqpacket socket, carries descriptors.
//!
//! A worker gets nothing at start but sockets (its link, and its stderr):
//! nothing another process of its user could open through `/proc` in the
//! moment before it makes itself undumpable. Memory it is sent later.

pub mod lines;
pub mod pipe;
pub mod shm;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use bytes::Bytes;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::segments::SegmentError;
pub use pipe::{PipeError, PipeTransport};
pub use shm::{DEFAULT_RING_BYTES, ShmError, ShmTransport};

/// How payloads reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Base64 lines over the worker's link.
    Pipe,
    /// Per-worker shared-memory rings with eventfd doorbells.
    Shm,
}

impl TransportKind {
    /// The name used on the command line, in `GetWorkers` and by the worker shim.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Pipe => "pipe",
            TransportKind::Shm => "shm",
        }
    }
}

/// The transport every worker of a gateway uses, chosen once.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: TransportKind,
    /// The largest payload either way, in bytes.
    pub max_payload_bytes: usize,
    /// The capacity of each shared-memory ring.
    pub ring_bytes: usize,
}

impl Spec {
    pub fn new(kind: TransportKind, max_payload_bytes: usize, ring_bytes: usize) -> Spec {
        Spec {
            kind,
            max_payload_bytes,
            ring_bytes,
        }
    }

    /// The largest payload either way, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Makes the link for a new worker (and, for shm, its rings).
    pub fn prepare(&self) -> Result<Prepared, TransportError> {
        let (kind, rings) = match self.kind {
            TransportKind::Pipe => (SocketType::STREAM, None),
            TransportKind::Shm => (
                SocketType::SEQPACKET,
                Some(Box::new(shm::Prepared::new(self.ring_bytes)?)),
            ),
        };
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
                .map_err(io::Error::from)?;
        Ok(Prepared {
            spec: self.clone(),
            ours,
            theirs: Some(theirs),
            rings,
        })
    }
}

/// A worker's link, made before the worker starts.
#[derive(Debug)]
pub struct Prepared {
    spec: Spec,
    ours: OwnedFd,
    theirs: Option<OwnedFd>,
    rings: Option<Box<shm::Prepared>>,
}

impl Prepared {
    /// Command-line arguments that tell `worker_shim` what its link speaks.
    pub fn worker_args(&self) -> Vec<String> {
        vec![
            "--transport".into(),
            self.spec.kind.as_str().into(),
            "--max-payload-bytes".into(),
            self.spec.max_payload_bytes.to_string(),
        ]
    }

    /// The worker's end of the link (its fd 0). Taken once, by the spawner.
    pub fn worker_end(&mut self) -> OwnedFd {
        self.theirs.take().expect("the worker's end is taken once")
    }

    /// Our end, ready for the worker's handshake. Call from within the
    /// tokio runtime.
    pub fn connect(self) -> Result<Transport, TransportError> {
        let limit = self.spec.max_payload_bytes;
        Ok(match self.rings {
            None => Transport::Pipe(PipeTransport::new(self.ours, limit)?),
            Some(rings) => Transport::Shm(Box::new(rings.connect(self.ours, limit)?)),
        })
    }
}

/// What came back from a worker for one request.
#[derive(Debug)]
pub struct Incoming {
    pub payload: Bytes,
    /// The segment that came with it (a result's), unchecked.
    pub segment: Option<OwnedFd>,
}

/// A failure of one exchange with a worker.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The worker closed its end: it exited or is about to.
    #[error("the worker closed its link")]
    Closed,

    #[error("i/o error talking to the worker: {0}")]
    Io(#[from] io::Error),

    /// The worker broke the pipe protocol.
    #[error("the worker broke the protocol: {0}")]
    Pipe(#[from] PipeError),

    /// The shared memory could not be set up, or the worker broke its protocol.
    #[error(transparent)]
    Shm(#[from] ShmError),

    /// The worker said it does not hold the function it was just sent.
    #[error("the worker asked for the function the call had just brought it")]
    UnexpectedMiss,

    /// The worker's result segment is not one the gateway takes.
    #[error("the worker's result segment was refused: {0}")]
    Segment(#[from] SegmentError),

    /// The worker answered with a result segment where none belongs, or
    /// named one it did not send.
    #[error("the worker's response and the segment with it do not match")]
    UnexpectedSegment,

    /// The worker's response was over the payload limit. It was read and
    /// discarded, so the worker can serve the next call.
    #[error("the response is {size} bytes or more, over the limit of {limit} bytes")]
    ResponseTooLarge { size: usize, limit: usize },
}

impl TransportError {
    /// An i/o error on the link: the worker's end closed, or a real one.
    pub fn from_io(err: io::Error) -> TransportError {
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => TransportError::Closed,
            _ => TransportError::Io(err),
        }
    }
}

/// The link to one worker process.
#[derive(Debug)]
pub enum Transport {
    Pipe(PipeTransport),
    Shm(Box<ShmTransport>),
}

impl Transport {
    /// Waits for the worker to say it is ready (for shm, handing it its
    /// rings on the way).
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.handshake().await,
            Transport::Shm(shm) => shm.handshake().await,
        }
    }

    /// Sends one request (`segment` with it) and waits for its response.
    ///
    /// Not cancel-safe: if the future is dropped midway, the worker must be
    /// replaced.
    pub async fn call(
        &mut self,
        request: Bytes,
        segment: Option<BorrowedFd<'_>>,
    ) -> Result<Incoming, TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.call(request, segment).await,
            Transport::Shm(shm) => shm.call(request, segment).await,
        }
    }
}

/// Payloads at least this large are coded or copied off the async runtime.
const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// Runs a CPU-bound step inline for small inputs and on the blocking pool
/// for large ones, so that a big payload does not stall other calls.
async fn off_runtime_if_large<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if len < BLOCKING_THRESHOLD {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}
