//! How one request reaches a worker and its response comes back.
//!
//! The transport is chosen once, as a [`Spec`] built from the command line;
//! the worker actor asks it to [`Spec::prepare`] each new worker's channel
//! and never names an implementation.
//!
//! - [`TransportKind`]: the choice on the command line.
//! - [`Spec`]: what every worker's channel is made from.
//! - [`Prepared`]: what must exist before a worker starts (for shm, a
//!   segment and a socket pair), the arguments and the stdio the worker
//!   gets; [`Prepared::connect`] wires it to the started process.
//! - [`Transport`]: the channel to one worker: a handshake, then calls.
//! - [`pipe`]: base64 lines over the worker's stdin/stdout.
//! - [`shm`]: shared-memory rings with a Unix-socket doorbell.

pub mod pipe;
pub mod shm;

use std::os::fd::OwnedFd;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

pub use pipe::{PipeError, PipeTransport};
pub use shm::{DEFAULT_RING_BYTES, ShmError, ShmTransport};

/// How payloads reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Base64 lines over the worker's stdin/stdout.
    Pipe,
    /// Per-worker shared-memory rings with Unix-socket doorbells.
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
pub enum Spec {
    Pipe {
        max_payload_bytes: usize,
    },
    Shm {
        max_payload_bytes: usize,
        ring_bytes: usize,
    },
}

impl Spec {
    pub fn new(kind: TransportKind, max_payload_bytes: usize, ring_bytes: usize) -> Spec {
        match kind {
            TransportKind::Pipe => Spec::Pipe { max_payload_bytes },
            TransportKind::Shm => Spec::Shm {
                max_payload_bytes,
                ring_bytes,
            },
        }
    }

    /// The largest payload either way, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        match *self {
            Spec::Pipe { max_payload_bytes }
            | Spec::Shm {
                max_payload_bytes, ..
            } => max_payload_bytes,
        }
    }

    /// Sets up the channel for a new worker process. Call from within the
    /// tokio runtime.
    pub fn prepare(&self) -> Result<Prepared, TransportError> {
        match *self {
            Spec::Pipe { max_payload_bytes } => Ok(Prepared::Pipe { max_payload_bytes }),
            Spec::Shm {
                max_payload_bytes,
                ring_bytes,
            } => {
                let prepared = shm::Prepared::new(ring_bytes, max_payload_bytes)?;
                Ok(Prepared::Shm(Box::new(prepared)))
            }
        }
    }
}

/// What a worker's stdin and stdout are.
#[derive(Debug)]
pub enum ChildStdio {
    /// Pipes to the gateway: the protocol runs over them.
    Pipes,
    /// These files, made by the transport.
    Given { stdin: OwnedFd, stdout: OwnedFd },
}

/// A channel set up for a worker that has not started yet.
#[derive(Debug)]
pub enum Prepared {
    Pipe { max_payload_bytes: usize },
    Shm(Box<shm::Prepared>),
}

impl Prepared {
    /// Command-line arguments that tell `worker_shim` which transport runs.
    pub fn worker_args(&self) -> Vec<String> {
        let kind = match self {
            Prepared::Pipe { .. } => TransportKind::Pipe,
            Prepared::Shm(_) => TransportKind::Shm,
        };
        vec!["--transport".into(), kind.as_str().into()]
    }

    /// What the worker's stdin and stdout must be (asked once).
    pub fn child_stdio(&mut self) -> ChildStdio {
        match self {
            Prepared::Pipe { .. } => ChildStdio::Pipes,
            Prepared::Shm(shm) => match shm.worker_stdio() {
                Some((stdin, stdout)) => ChildStdio::Given { stdin, stdout },
                None => ChildStdio::Pipes,
            },
        }
    }

    /// Wires the channel to the started worker; `pipes` are its stdin and
    /// stdout when [`Prepared::child_stdio`] asked for pipes.
    pub fn connect(
        self,
        pipes: Option<(
            impl AsyncWrite + Send + Unpin + 'static,
            impl AsyncRead + Send + Unpin + 'static,
        )>,
    ) -> Transport {
        match self {
            Prepared::Pipe { max_payload_bytes } => {
                let (stdin, stdout) = pipes.expect("the pipe transport asks for pipes");
                Transport::Pipe(PipeTransport::new(stdin, stdout, max_payload_bytes))
            }
            Prepared::Shm(shm) => Transport::Shm(Box::new(shm.connect())),
        }
    }
}

/// A failure of one exchange with a worker.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The worker closed its end: it exited or is about to.
    #[error("the worker closed its protocol stream")]
    Closed,

    #[error("i/o error talking to the worker: {0}")]
    Io(#[from] std::io::Error),

    /// The worker broke the pipe protocol.
    #[error("the worker broke the protocol: {0}")]
    Pipe(#[from] PipeError),

    /// The shared memory could not be set up, or the worker broke its protocol.
    #[error(transparent)]
    Shm(#[from] ShmError),

    /// The worker said it does not hold the function it was just sent.
    #[error("the worker asked for the function the call had just brought it")]
    UnexpectedMiss,

    /// The segment channel failed, or the worker broke its protocol.
    #[error(transparent)]
    Segments(#[from] crate::segments::ChannelError),

    /// The worker answered with a result segment to a call whose caller
    /// cannot take one.
    #[error("the worker put its result in shared memory for a caller that cannot map it")]
    UnexpectedSegment,

    /// The worker's response was over the payload limit. It was read and
    /// discarded, so the worker can serve the next call.
    #[error("the response is {size} bytes or more, over the limit of {limit} bytes")]
    ResponseTooLarge { size: usize, limit: usize },
}

/// The channel to one worker process.
#[derive(Debug)]
pub enum Transport {
    Pipe(PipeTransport),
    Shm(Box<ShmTransport>),
}

impl Transport {
    /// Waits for the worker to say it is ready.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.handshake().await,
            Transport::Shm(shm) => shm.handshake().await,
        }
    }

    /// Sends one request and waits for its response.
    ///
    /// Not cancel-safe: if the future is dropped midway, the worker must be
    /// replaced.
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.call(request).await,
            Transport::Shm(shm) => shm.call(request).await,
        }
    }
}
