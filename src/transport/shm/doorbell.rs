//! The doorbell: one end of a Unix socket pair that carries wake-ups only,
//! never payloads; the other end is the worker's stdin. After a side
//! publishes bytes or frees space in a ring it writes one byte; a side with
//! nothing to do waits for a byte. EOF is how each side learns that the
//! other died.
//!
//! A socket pair has no name: no other process can connect to it, squat on
//! it or find it in the file system, and nothing of it is left behind when
//! the gateway is killed.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What a worker sends once it has mapped its segment.
pub const READY: &[u8] = b"ready\n";

/// The gateway's end of a worker's doorbell.
#[derive(Debug)]
pub struct Doorbell {
    stream: UnixStream,
    scratch: [u8; 64],
}

impl Doorbell {
    /// A connected pair: our end, and the worker's (blocking, as a child's
    /// stdin should be). Call from within the tokio runtime.
    pub fn pair() -> io::Result<(Doorbell, OwnedFd)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let doorbell = Doorbell {
            stream: UnixStream::from_std(ours)?,
            scratch: [0; 64],
        };
        Ok((doorbell, OwnedFd::from(theirs)))
    }

    /// Waits for the worker's greeting; whether it said `ready\n`.
    pub async fn handshake(&mut self) -> io::Result<bool> {
        let mut greeting = [0u8; READY.len()];
        self.stream.read_exact(&mut greeting).await?;
        Ok(greeting == READY)
    }

    /// Wakes the peer.
    pub async fn ring(&mut self) -> io::Result<()> {
        self.stream.write_all(b"!").await
    }

    /// Waits until the peer rings (any number of rings count as one).
    /// EOF means the peer is gone: `UnexpectedEof`.
    pub async fn wait(&mut self) -> io::Result<()> {
        match self.stream.read(&mut self.scratch).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }
}
