//! A worker's channel for segments: a Unix socket pair whose other end is
//! the worker's fd 3. The gateway sends a call's segment (its record
//! carrying the handle the call names it by) just before the call; the
//! worker sends a result's segment just before the response that names it
//! (`MCR2`), so each is there by the time its payload is read.

use std::io;
use std::os::fd::OwnedFd;

use tokio::net::UnixStream;

use super::sealed::{Sealed, SegmentError};
use super::socket;
use crate::wire::records::{self, Record};

/// What can go wrong on a worker's segment channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the worker's segment channel failed: {0}")]
    Io(#[from] io::Error),

    #[error("the worker sent a segment message of kind {0:?} without its segment")]
    Unexpected([u8; 4]),

    #[error("the worker's result segment was refused: {0}")]
    Refused(#[from] SegmentError),
}

/// The gateway's end.
#[derive(Debug)]
pub struct WorkerSegments {
    stream: UnixStream,
}

impl WorkerSegments {
    /// A connected pair: ours, and the worker's (blocking). Call from within
    /// the tokio runtime.
    pub fn pair() -> io::Result<(WorkerSegments, OwnedFd)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let stream = UnixStream::from_std(ours)?;
        Ok((WorkerSegments { stream }, OwnedFd::from(theirs)))
    }

    /// Sends the segment of the call about to be sent, which names it by
    /// `handle`.
    pub async fn send(&self, handle: u64, segment: &Sealed) -> io::Result<()> {
        let mut record = Record::new(records::CALL);
        record.handle = handle;
        socket::send(&self.stream, &record, Some(segment.fd())).await
    }

    /// Receives the segment of the response just read, checked to be sealed
    /// and at most `limit` bytes.
    pub async fn receive(&self, limit: usize) -> Result<Sealed, ChannelError> {
        match socket::receive(&self.stream).await? {
            (record, Some(fd)) if record.kind == records::RESULT => Ok(Sealed::check(fd, limit)?),
            (record, _) => Err(ChannelError::Unexpected(record.kind)),
        }
    }
}
