//! How one request reaches a worker and its response comes back.
//!
//! The transport is chosen once, as a [`Spec`] built from the command line;
//! the worker actor asks it to [`Spec::prepare`] each new worker's channel
//! and never names an implementation.
//!
//! - [`TransportKind`]: the choice on the command line.
//! - [`Spec`]: what every worker's channel is made from (for shm, the
//!   private runtime directory too).
//! - [`Prepared`]: what must exist before a worker starts (a segment, a
//!   socket) and the arguments that tell the worker where it is;
//!   [`Prepared::connect`] wires it to the started process.
//! - [`Transport`]: the channel to one worker: a handshake, then calls.
//! - [`pipe`]: base64 lines over the worker's stdin/stdout.
//! - [`shm`]: shared-memory rings with a Unix-socket doorbell.

pub mod pipe;
pub mod shm;

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

pub use pipe::{PipeError, PipeTransport};
use shm::runtime_dir::RuntimeDir;
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

/// The transport every worker of a gateway uses, set up once.
#[derive(Debug, Clone)]
pub enum Spec {
    Pipe {
        max_payload_bytes: usize,
    },
    Shm {
        max_payload_bytes: usize,
        ring_bytes: usize,
        /// Where doorbell sockets live; removed with the last clone.
        runtime_dir: Arc<RuntimeDir>,
    },
}

/// The transport cannot be set up for this gateway at all.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot create the private runtime directory for shared memory: {0}; set XDG_RUNTIME_DIR to a directory of yours, or start the gateway with --transport pipe"
    )]
    RuntimeDir(#[source] std::io::Error),
}

impl Spec {
    /// Sets up `kind` for a gateway: for shm, creates the private runtime
    /// directory (removing what killed gateways left behind).
    pub fn new(
        kind: TransportKind,
        max_payload_bytes: usize,
        ring_bytes: usize,
    ) -> Result<Spec, SetupError> {
        Ok(match kind {
            TransportKind::Pipe => Spec::Pipe { max_payload_bytes },
            TransportKind::Shm => Spec::Shm {
                max_payload_bytes,
                ring_bytes,
                runtime_dir: Arc::new(RuntimeDir::create().map_err(SetupError::RuntimeDir)?),
            },
        })
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            Spec::Pipe { .. } => TransportKind::Pipe,
            Spec::Shm { .. } => TransportKind::Shm,
        }
    }

    /// Sets up the channel for slot `index`'s `generation`-th process.
    pub fn prepare(&self, index: usize, generation: u64) -> Result<Prepared, TransportError> {
        match self {
            Spec::Pipe { max_payload_bytes } => Ok(Prepared::Pipe {
                max_payload_bytes: *max_payload_bytes,
            }),
            Spec::Shm {
                max_payload_bytes,
                ring_bytes,
                runtime_dir,
            } => {
                let prepared = shm::Prepared::new(
                    runtime_dir,
                    *ring_bytes,
                    *max_payload_bytes,
                    index,
                    generation,
                )?;
                Ok(Prepared::Shm(Box::new(prepared)))
            }
        }
    }
}

/// A channel set up for a worker that has not started yet.
#[derive(Debug)]
pub enum Prepared {
    Pipe { max_payload_bytes: usize },
    Shm(Box<shm::Prepared>),
}

impl Prepared {
    /// Command-line arguments that tell `worker_shim` how to reach us.
    pub fn worker_args(&self) -> Vec<String> {
        match self {
            Prepared::Pipe { .. } => vec!["--transport".into(), "pipe".into()],
            Prepared::Shm(shm) => shm.worker_args(),
        }
    }

    /// Wires the channel to the started worker's stdin and stdout.
    pub fn connect(
        self,
        stdin: impl AsyncWrite + Send + Unpin + 'static,
        stdout: impl AsyncRead + Send + Unpin + 'static,
    ) -> Transport {
        match self {
            Prepared::Pipe { max_payload_bytes } => {
                Transport::Pipe(PipeTransport::new(stdin, stdout, max_payload_bytes))
            }
            // The shm worker ignores its stdio; dropping our ends is harmless.
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
