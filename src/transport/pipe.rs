//! The pipe transport: the original design's line protocol, over the
//! worker's link (a stream socket).
//!
//! The worker writes `ready\n` once. Each request is one line, the base64 of
//! the payload plus `\n`; each response is one line in the same form. A line
//! may bring one descriptor, on its first byte: a request's call segment, a
//! response's result segment. Lines are bounded by the payload limit: an
//! oversized response is read to its end and discarded, so the stream stays
//! in step and the worker stays usable.

use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::lines::LineBuffer;
use super::{Incoming, TransportError, off_runtime_if_large};
use crate::passing::AsyncSocket;

/// Ways a worker breaks the line protocol.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("expected `ready` as the first line, got `{0}`")]
    NotReady(String),

    #[error("the response line is not valid base64: {0}")]
    NotBase64(#[source] base64::DecodeError),

    #[error("a line came with {0} descriptors; at most one may come with it")]
    Descriptors(usize),
}

/// What a worker writes once it can take calls.
const READY_LINE: &[u8] = b"ready";

/// Longest first line read while waiting for `ready` (long enough to show
/// whatever else a broken worker printed).
const HANDSHAKE_LINE_LIMIT: usize = 1024;

/// Our end of one worker's link.
pub struct PipeTransport {
    link: AsyncSocket,
    max_payload_bytes: usize,
    lines: LineBuffer,
    /// Descriptors that came with the line being read.
    fds: Vec<OwnedFd>,
}

impl std::fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTransport")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish_non_exhaustive()
    }
}

/// A line read whole: where it lies in the buffer, without its `\n`.
struct Line {
    bytes: Range<usize>,
    segment: Option<OwnedFd>,
}

impl PipeTransport {
    /// Our end of the link (a stream socket). Call from within the tokio
    /// runtime.
    pub fn new(link: OwnedFd, max_payload_bytes: usize) -> std::io::Result<Self> {
        Ok(PipeTransport {
            link: AsyncSocket::new(link)?,
            max_payload_bytes,
            lines: LineBuffer::new(),
            fds: Vec::new(),
        })
    }

    /// Waits for the `ready` line.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        let line = self.read_line(HANDSHAKE_LINE_LIMIT).await?;
        let text = self.lines.bytes(line.bytes);
        if text != READY_LINE || line.segment.is_some() {
            let shown = String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned();
            return Err(PipeError::NotReady(shown).into());
        }
        Ok(())
    }

    /// Writes one request line (`segment` with it) and reads one response
    /// line.
    pub async fn call(
        &mut self,
        request: Bytes,
        segment: Option<BorrowedFd<'_>>,
    ) -> Result<Incoming, TransportError> {
        let line = off_runtime_if_large(request.len(), move || encode_line(&request)).await;
        let fds: Vec<BorrowedFd<'_>> = segment.into_iter().collect();
        self.link
            .send_all(&line, &fds)
            .await
            .map_err(TransportError::from_io)?;
        drop(line);
        crate::hops::hop_in_call("written");

        let limit = base64::encoded_len(self.max_payload_bytes, true).unwrap_or(usize::MAX);
        let line = self.read_line(limit).await?;
        let text = self.lines.bytes(line.bytes);
        let decoded = if text.len() < super::BLOCKING_THRESHOLD {
            BASE64.decode(text)
        } else {
            let text = text.to_vec();
            off_runtime_if_large(text.len(), move || BASE64.decode(text)).await
        };
        let payload = decoded.map_err(PipeError::NotBase64)?;
        crate::hops::hop_in_call("read");
        if payload.len() > self.max_payload_bytes {
            return Err(TransportError::ResponseTooLarge {
                size: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        Ok(Incoming {
            payload: Bytes::from(payload),
            segment: line.segment,
        })
    }

    /// Reads one line and the descriptor that came with it. A line longer
    /// than `limit` is consumed to its end and refused. The line's bytes
    /// stay in the buffer until the next read.
    async fn read_line(&mut self, limit: usize) -> Result<Line, TransportError> {
        let mut skipped = 0;
        loop {
            if let Some(bytes) = self.lines.take_line() {
                let line = Line {
                    segment: self.take_segment()?,
                    bytes,
                };
                if skipped > 0 {
                    return Err(TransportError::ResponseTooLarge {
                        size: (skipped + line.bytes.len()) / 4 * 3,
                        limit: self.max_payload_bytes,
                    });
                }
                return Ok(line);
            }
            if self.lines.pending() > limit {
                // Over the limit: forget what came so far, read on to the end.
                skipped += self.lines.pending();
                self.lines.skip_pending();
            }
            let read = self
                .link
                .receive(self.lines.spare(), &mut self.fds)
                .await
                .map_err(TransportError::from_io)?;
            if read == 0 {
                return Err(TransportError::Closed);
            }
            self.lines.filled(read);
        }
    }

    fn take_segment(&mut self) -> Result<Option<OwnedFd>, PipeError> {
        match self.fds.len() {
            0 | 1 => Ok(self.fds.pop()),
            many => {
                self.fds.clear();
                Err(PipeError::Descriptors(many))
            }
        }
    }
}

fn encode_line(payload: &[u8]) -> Vec<u8> {
    let mut line = String::with_capacity(base64::encoded_len(payload.len(), true).unwrap_or(0) + 1);
    BASE64.encode_string(payload, &mut line);
    line.push('\n');
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::passing;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixStream;

    /// A transport wired to an in-process "worker": the transport and the
    /// worker's end of the link.
    fn wired(limit: usize) -> (PipeTransport, UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        (
            PipeTransport::new(ours.into(), limit).unwrap(),
            UnixStream::from_std(theirs).unwrap(),
        )
    }

    async fn read_request(worker: &mut UnixStream) -> Vec<u8> {
        let mut line = Vec::new();
        BufReader::new(worker)
            .read_until(b'\n', &mut line)
            .await
            .unwrap();
        line
    }

    #[tokio::test]
    async fn handshake_wants_ready() {
        let (mut transport, mut worker) = wired(1024);
        worker.write_all(b"ready\n").await.unwrap();
        transport.handshake().await.unwrap();

        let (mut transport, mut worker) = wired(1024);
        worker.write_all(b"Traceback\n").await.unwrap();
        let err = transport.handshake().await.unwrap_err();
        assert!(
            matches!(err, TransportError::Pipe(PipeError::NotReady(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn handshake_sees_eof_as_closed() {
        let (mut transport, worker) = wired(1024);
        drop(worker);
        assert!(matches!(
            transport.handshake().await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn call_round_trips_through_base64_lines() {
        let (mut transport, mut worker) = wired(1024);
        let echo = tokio::spawn(async move {
            let line = read_request(&mut worker).await;
            let request = BASE64.decode(line.trim_ascii_end()).unwrap();
            assert_eq!(request, b"\x00payload\n");
            worker.write_all(&encode_line(b"answer")).await.unwrap();
            // A zero-length payload is an empty line.
            assert_eq!(read_request(&mut worker).await, b"\n");
            worker.write_all(b"\n").await.unwrap();
            worker
        });
        let response = transport
            .call(Bytes::from_static(b"\x00payload\n"), None)
            .await
            .unwrap();
        assert_eq!(&response.payload[..], b"answer");
        assert!(response.segment.is_none());
        let empty = transport.call(Bytes::new(), None).await.unwrap();
        assert!(empty.payload.is_empty());
        drop(echo.await.unwrap());
    }

    #[tokio::test]
    async fn segments_come_with_their_lines() {
        let (mut transport, worker) = wired(1024);
        let sent = crate::segments::Sealed::write("test", &[b"argument"]).unwrap();
        let worker =
            std::os::unix::net::UnixStream::from(OwnedFd::from(worker.into_std().unwrap()));
        worker.set_nonblocking(false).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut buf, mut fds) = (vec![0u8; 64], Vec::new());
            let read = passing::receive(worker.as_fd(), &mut buf, &mut fds, true).unwrap();
            assert_eq!(&buf[..read], b"YQ==\n");
            assert_eq!(fds.len(), 1, "the call segment comes with its line");
            let line = encode_line(b"result");
            passing::send_all_blocking(worker.as_fd(), &line, &[fds[0].as_fd()]).unwrap();
            worker
        });
        let response = transport
            .call(Bytes::from_static(b"a"), Some(sent.fd()))
            .await
            .unwrap();
        assert_eq!(&response.payload[..], b"result");
        let back = crate::segments::Sealed::check(response.segment.unwrap(), 100).unwrap();
        assert_eq!(back.len(), 8);
        drop(peer.join().unwrap());
    }

    #[tokio::test]
    async fn oversized_response_is_refused_and_the_stream_stays_in_step() {
        let (mut transport, mut worker) = wired(16);
        let big = vec![7u8; 300_000];
        let writer = tokio::spawn(async move {
            worker.write_all(&encode_line(&big)).await.unwrap();
            worker.write_all(&encode_line(b"small")).await.unwrap();
            worker
        });
        let err = transport
            .call(Bytes::from_static(b"a"), None)
            .await
            .unwrap_err();
        match err {
            TransportError::ResponseTooLarge { size, limit } => {
                assert_eq!(limit, 16);
                assert!(size >= 299_000, "{size}");
            }
            other => panic!("unexpected {other}"),
        }
        let response = transport
            .call(Bytes::from_static(b"b"), None)
            .await
            .unwrap();
        assert_eq!(&response.payload[..], b"small");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn garbage_response_is_a_protocol_error() {
        let (mut transport, mut worker) = wired(1024);
        worker.write_all(b"not base64!\n").await.unwrap();
        let err = transport
            .call(Bytes::from_static(b"a"), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Pipe(PipeError::NotBase64(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn eof_midline_is_closed() {
        let (mut transport, mut worker) = wired(1024);
        worker.write_all(b"YWJj").await.unwrap();
        drop(worker);
        assert!(matches!(
            transport.call(Bytes::from_static(b"a"), None).await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn large_payloads_pass_through_the_blocking_codec() {
        let (mut transport, mut worker) = wired(4 << 20);
        let payload: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let expected = payload.clone();
        let echo = tokio::spawn(async move {
            let line = read_request(&mut worker).await;
            worker.write_all(&line).await.unwrap();
            worker
        });
        let response = transport.call(Bytes::from(payload), None).await.unwrap();
        assert_eq!(&response.payload[..], &expected[..]);
        drop(echo.await.unwrap());
    }
}
