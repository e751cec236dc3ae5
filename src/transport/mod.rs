//! How one request reaches a worker and its response comes back.
//!
//! [`Transport`] is the one type the worker actor talks to; it dispatches to
//! the implementation chosen on the command line, so the actor does not know
//! which one runs.
//!
//! - [`pipe`]: base64 lines over the worker's stdin/stdout.

pub mod pipe;
pub mod shm;

use bytes::Bytes;

pub use pipe::PipeTransport;

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
}

impl Transport {
    /// Waits for the worker to say it is ready.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.handshake().await,
        }
    }

    /// Sends one request and waits for its response.
    ///
    /// Not cancel-safe: if the future is dropped midway, the worker must be
    /// replaced.
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, TransportError> {
        match self {
            Transport::Pipe(pipe) => pipe.call(request).await,
        }
    }
}
