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
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mysticchallenge::passing;
use mysticchallenge::transport::lines::LineBuffer;
use mysticchallenge::transport::shm::worker::Payload;
use pyo3::prelude::*;

use crate::errors::{GatewayGone, ProtocolError};
use crate::message::Message;
use crate::segment::Segment;

pub struct PipeLink {
    link: OwnedFd,
    lines: LineBuffer,
    /// The largest request payload, and the longest line that may carry
    /// one (its base64).
    max_payload_bytes: usize,
    max_line: usize,
}

impl PipeLink {
    pub fn new(link: OwnedFd, max_payload_bytes: usize) -> PipeLink {
        PipeLink {
            link,
            lines: LineBuffer::new(),
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
            let (line, segment) = self.read_line()?;
            let payload = BASE64.decode(self.lines.bytes(line)).map_err(|err| {
                ProtocolError::new_err(format!("a request line is not base64 ({err})"))
            })?;
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

    /// Reads one line: where it lies in the buffer (without its `\n`), and
    /// the descriptor it came with.
    fn read_line(&mut self) -> PyResult<(Range<usize>, Option<OwnedFd>)> {
        let mut fds = Vec::new();
        loop {
            if let Some(line) = self.lines.take_line() {
                if fds.len() > 1 {
                    return Err(ProtocolError::new_err(
                        "a request line came with more than one descriptor",
                    ));
                }
                return Ok((line, fds.pop()));
            }
            if self.lines.pending() > self.max_line {
                return Err(ProtocolError::new_err(format!(
                    "a request line is over {} bytes, longer than the payload limit allows",
                    self.max_line
                )));
            }
            match passing::receive(self.link.as_fd(), self.lines.spare(), &mut fds, true) {
                Ok(0) if self.lines.pending() == 0 => {
                    return Err(GatewayGone::new_err("the gateway closed the link"));
                }
                Ok(0) => {
                    return Err(ProtocolError::new_err(format!(
                        "the link ended inside a request line ({} bytes)",
                        self.lines.pending()
                    )));
                }
                Ok(read) => self.lines.filled(read),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(link_failed(err)),
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
