//! The worker's side of the pipe transport (the original design's protocol):
//! base64 lines over its link, a stream socket. The worker writes `ready`
//! once; then each request is one line (the base64 of its payload and
//! `\n`), answered with one line. A line may come with a descriptor, on its
//! first byte: a request's call segment, a response's result segment.
//!
//! EOF on the link means the gateway has gone; a last line without its
//! `\n`, a line that is not base64, one longer than the payload limit
//! allows or one with more than one descriptor breaks the protocol.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mysticchallenge::passing;
use mysticchallenge::transport::shm::worker::Payload;
use pyo3::prelude::*;

use crate::errors::{GatewayGone, ProtocolError};
use crate::message::Message;
use crate::segment::Segment;

/// Most bytes read from the link at once.
const READ_BYTES: usize = 64 << 10;
/// A read buffer that grew past this for a large request is given back.
const KEEP_BYTES: usize = 4 << 20;

pub struct PipeLink {
    link: OwnedFd,
    /// Bytes read from the link; `buffer[start..end]` not yet taken. Its
    /// length is its capacity, so a read never zeroes memory again.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// The largest request payload, and the longest line that may carry
    /// one (its base64).
    max_payload_bytes: usize,
    max_line: usize,
}

impl PipeLink {
    pub fn new(link: OwnedFd, max_payload_bytes: usize) -> PipeLink {
        PipeLink {
            link,
            buffer: vec![0; READ_BYTES],
            start: 0,
            end: 0,
            max_payload_bytes,
            max_line: base64::encoded_len(max_payload_bytes, true).unwrap_or(usize::MAX),
        }
    }

    pub fn ready(&mut self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| passing::send_all_blocking(self.link.as_fd(), b"ready\n", &[]))
            .map_err(link_failed)
    }

    /// Waits for the next request line (the GIL released) and decodes it.
    pub fn receive(&mut self, py: Python<'_>) -> PyResult<Message> {
        let (payload, segment) = py.detach(|| {
            let (start, end, segment) = self.read_line()?;
            let payload = BASE64.decode(&self.buffer[start..end]).map_err(|err| {
                ProtocolError::new_err(format!("a request line is not base64 ({err})"))
            })?;
            self.forget_if_empty();
            if payload.len() > self.max_payload_bytes {
                return Err(ProtocolError::new_err(format!(
                    "a request of {} bytes, over the limit of {}",
                    payload.len(),
                    self.max_payload_bytes
                )));
            }
            Ok::<_, PyErr>((payload, segment))
        })?;
        let segment = match segment {
            Some(fd) => Some(Py::new(py, Segment::new(fd))?),
            None => None,
        };
        Ok(Message::new(Payload::Owned(payload), segment))
    }

    /// Reads one line: where it lies in the buffer (without its `\n`) and
    /// the descriptor it came with.
    fn read_line(&mut self) -> PyResult<(usize, usize, Option<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut searched = self.start;
        loop {
            if let Some(at) = self.buffer[searched..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let (start, newline) = (self.start, searched + at);
                self.start = newline + 1;
                if fds.len() > 1 {
                    return Err(ProtocolError::new_err(
                        "a request line came with more than one descriptor",
                    ));
                }
                return Ok((start, newline, fds.pop()));
            }
            if self.end - self.start > self.max_line {
                return Err(ProtocolError::new_err(format!(
                    "a request line is over {} bytes, longer than the payload limit allows",
                    self.max_line
                )));
            }
            let searched_from = self.end - self.start;
            self.make_room();
            searched = self.start + searched_from;
            let read = passing::receive(
                self.link.as_fd(),
                &mut self.buffer[self.end..],
                &mut fds,
                true,
            );
            match read {
                Ok(0) if self.start == self.end => {
                    return Err(GatewayGone::new_err("the gateway closed the link"));
                }
                Ok(0) => {
                    return Err(ProtocolError::new_err(format!(
                        "the link ended inside a request line ({} bytes)",
                        self.end - self.start
                    )));
                }
                Ok(read) => self.end += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(link_failed(err)),
            }
        }
    }

    /// Makes room for at least [`READ_BYTES`] more after `end`: moves what
    /// is unread to the front, then grows the buffer if that is not enough.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buffer.len() - self.end < READ_BYTES {
            let grown = (self.buffer.len() * 2).max(self.end + READ_BYTES);
            self.buffer.resize(grown, 0);
        }
    }

    /// Once every byte read is taken, starts the buffer afresh, giving back
    /// what a large request made it grow to.
    fn forget_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buffer.len() > KEEP_BYTES {
                self.buffer = vec![0; READ_BYTES];
            }
        }
    }

    /// Sends one response line made of `pieces` (the `segment` with it),
    /// the GIL released while it goes.
    pub fn send(
        &mut self,
        py: Python<'_>,
        pieces: &[&[u8]],
        segment: Option<BorrowedFd<'_>>,
    ) -> PyResult<()> {
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        let mut line = String::with_capacity(base64::encoded_len(len, true).unwrap_or(0) + 1);
        {
            let mut encoder = base64::write::EncoderStringWriter::from_consumer(&mut line, &BASE64);
            for piece in pieces {
                io::Write::write_all(&mut encoder, piece).map_err(link_failed)?;
            }
            encoder.into_inner();
        }
        line.push('\n');
        let fds: Vec<BorrowedFd<'_>> = segment.into_iter().collect();
        py.detach(|| passing::send_all_blocking(self.link.as_fd(), line.as_bytes(), &fds))
            .map_err(link_failed)
    }
}

/// The link failed: the gateway has gone, or the socket broke.
pub fn link_failed(err: io::Error) -> PyErr {
    match err.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
            GatewayGone::new_err("the gateway closed the link")
        }
        _ => pyo3::exceptions::PyOSError::new_err(format!("the link failed: {err}")),
    }
}
