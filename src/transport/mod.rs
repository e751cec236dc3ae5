//! How one request reaches a worker and its response comes back.
//!
//! [`Transport`] is the one type the worker actor talks to; it dispatches to
//! the implementation chosen on the command line, so the actor does not know
//! which one runs.
//!
//! - [`pipe`]: base64 lines over the worker's stdin/stdout.
//! - [`shm`]: shared-memory rings with a Unix-socket doorbell.
//!
//! A worker's transport is made in two steps: [`Prepared`] sets up what must
//! exist before the process starts (a segment, a socket) and names the
//! arguments the worker needs; [`Prepared::connect`] then wires it to the
//! spawned process.

pub mod pipe;
pub mod shm;

use std::sync::Arc;

use bytes::Bytes;
use tokio::process::{ChildStdin, ChildStdout};

use crate::config::TransportKind;
pub use pipe::PipeTransport;
pub use shm::ShmTransport;
use shm::doorbell::DoorbellListener;
use shm::runtime_dir::RuntimeDir;
use shm::segment::Segment;

/// What every worker's transport is made from.
#[derive(Debug, Clone)]
pub struct TransportSpec {
    pub kind: TransportKind,
    pub max_payload_bytes: usize,
    pub ring_bytes: usize,
    /// Where doorbell sockets live; set for the shm transport.
    pub runtime_dir: Option<Arc<RuntimeDir>>,
}

/// A transport set up for a worker that has not started yet.
#[derive(Debug)]
pub enum Prepared {
    Pipe {
        max_payload_bytes: usize,
    },
    Shm {
        segment: Segment,
        listener: DoorbellListener,
        max_payload_bytes: usize,
    },
}

impl Prepared {
    /// Sets up the transport for slot `index`'s `generation`-th process.
    pub fn new(
        spec: &TransportSpec,
        index: usize,
        generation: u64,
    ) -> Result<Prepared, TransportError> {
        let max_payload_bytes = spec.max_payload_bytes;
        match spec.kind {
            TransportKind::Pipe => Ok(Prepared::Pipe { max_payload_bytes }),
            TransportKind::Shm => {
                let runtime_dir = spec.runtime_dir.as_ref().ok_or_else(|| {
                    TransportError::Protocol("the shm transport needs a runtime directory".into())
                })?;
                let name = runtime_dir.segment_name(index, generation);
                let segment = Segment::create(&name, spec.ring_bytes)
                    .map_err(|err| TransportError::Io(std::io::Error::other(err.to_string())))?;
                let listener = DoorbellListener::bind(&runtime_dir.socket_path(index, generation))?;
                Ok(Prepared::Shm {
                    segment,
                    listener,
                    max_payload_bytes,
                })
            }
        }
    }

    /// Command-line arguments that tell `worker_shim` how to reach us.
    pub fn worker_args(&self) -> Vec<String> {
        match self {
            Prepared::Pipe { .. } => vec!["--transport".into(), "pipe".into()],
            Prepared::Shm {
                segment, listener, ..
            } => vec![
                "--transport".into(),
                "shm".into(),
                "--shm-name".into(),
                segment.name.clone(),
                "--doorbell".into(),
                listener.path().to_string_lossy().into_owned(),
            ],
        }
    }

    /// Wires the transport to the started worker's stdin and stdout.
    pub fn connect(self, stdin: ChildStdin, stdout: ChildStdout) -> Transport {
        match self {
            Prepared::Pipe { max_payload_bytes } => {
                Transport::Pipe(PipeTransport::new(stdin, stdout, max_payload_bytes))
            }
            // The shm worker ignores its stdio; dropping our ends is harmless.
            Prepared::Shm {
                segment,
                listener,
                max_payload_bytes,
            } => Transport::Shm(Box::new(ShmTransport::new(
                segment,
                listener,
                max_payload_bytes,
            ))),
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

    /// The worker said something the protocol does not allow.
    #[error("the worker broke the protocol: {0}")]
    Protocol(String),

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
