//! The doorbell: a Unix stream socket (`interprocess`, tokio flavour) that
//! carries wake-ups only, never payloads. After a side publishes bytes or
//! frees space in a ring it writes one byte; a side with nothing to do waits
//! for a byte. EOF is how each side learns that the other died.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a worker sends once it has mapped its segment.
pub const READY: &[u8] = b"ready\n";

/// A bound socket waiting for its worker to connect.
pub struct DoorbellListener {
    listener: Listener,
    path: PathBuf,
}

/// A connected doorbell.
pub struct Doorbell {
    stream: Stream,
    scratch: [u8; 64],
}

impl DoorbellListener {
    /// Binds a socket at `path` (inside the private runtime directory).
    pub fn bind(path: &Path) -> io::Result<DoorbellListener> {
        let name = path.to_fs_name::<GenericFilePath>()?;
        let listener = ListenerOptions::new().name(name).create_tokio()?;
        Ok(DoorbellListener {
            listener,
            path: path.to_owned(),
        })
    }

    /// Waits for the worker, then removes the socket file: the connection
    /// lives on without it.
    pub async fn accept(self) -> io::Result<Doorbell> {
        let stream = self.listener.accept().await?;
        Ok(Doorbell {
            stream,
            scratch: [0; 64],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for DoorbellListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorbellListener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for DoorbellListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Doorbell {
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
