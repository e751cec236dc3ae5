//! The pipe transport: the original line protocol over the worker's
//! stdin/stdout.
//!
//! The worker writes `ready\n` once. Each request is one line, the base64 of
//! the payload plus `\n`; each response is one line in the same form. Lines
//! are bounded by the payload limit: an oversized response is read to its end
//! and discarded, so the stream stays in step and the worker stays usable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::TransportError;

/// Ways a worker breaks the line protocol.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("expected `ready` as the first line, got `{0}`")]
    NotReady(String),

    #[error("the response line is not valid base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
}

/// What a worker writes once it can take calls.
const READY_LINE: &[u8] = b"ready";

/// Longest first line read while waiting for `ready` (long enough to show
/// whatever else a broken worker printed).
const HANDSHAKE_LINE_LIMIT: usize = 1024;

/// Payloads at least this large are base64-coded off the async runtime.
const BLOCKING_CODEC_THRESHOLD: usize = 256 * 1024;

/// Read buffer for the worker's stdout.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The line buffer is kept between calls up to this size; one that grew
/// past it for a large response is given back.
const KEEP_LINE_BYTES: usize = 4 << 20;

type Writer = Box<dyn AsyncWrite + Send + Unpin>;
type Reader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;

/// One worker's stdin (requests) and stdout (responses).
pub struct PipeTransport {
    requests: Writer,
    responses: Reader,
    max_payload_bytes: usize,
    line: Vec<u8>,
}

impl std::fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTransport")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish_non_exhaustive()
    }
}

impl PipeTransport {
    /// Wraps the worker's stdin and stdout.
    pub fn new(
        requests: impl AsyncWrite + Send + Unpin + 'static,
        responses: impl AsyncRead + Send + Unpin + 'static,
        max_payload_bytes: usize,
    ) -> Self {
        PipeTransport {
            requests: Box::new(requests),
            responses: BufReader::with_capacity(READ_BUFFER_BYTES, Box::new(responses)),
            max_payload_bytes,
            line: Vec::new(),
        }
    }

    /// Waits for the `ready` line.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        self.read_line(HANDSHAKE_LINE_LIMIT).await?;
        if self.line != READY_LINE {
            let shown = String::from_utf8_lossy(&self.line[..self.line.len().min(80)]).into_owned();
            return Err(PipeError::NotReady(shown).into());
        }
        Ok(())
    }

    /// Writes one request line and reads one response line.
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, TransportError> {
        let line = off_runtime_if_large(request.len(), move || encode_line(&request)).await;
        self.requests.write_all(&line).await?;
        self.requests.flush().await?;
        drop(line);

        self.read_line(base64::encoded_len(self.max_payload_bytes, true).unwrap_or(usize::MAX))
            .await?;
        let line = std::mem::take(&mut self.line);
        let decoded = off_runtime_if_large(line.len(), move || {
            let decoded = BASE64.decode(&line);
            (decoded, line)
        })
        .await;
        let (decoded, mut line) = decoded;
        line.clear();
        if line.capacity() <= KEEP_LINE_BYTES {
            self.line = line;
        }
        let payload = decoded.map_err(PipeError::NotBase64)?;
        if payload.len() > self.max_payload_bytes {
            return Err(TransportError::ResponseTooLarge {
                size: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        Ok(Bytes::from(payload))
    }

    /// Reads one line, without its `\n`, into `self.line`. A line longer
    /// than `limit` is consumed to its end and refused.
    async fn read_line(&mut self, limit: usize) -> Result<(), TransportError> {
        self.line.clear();
        let cap = limit.saturating_add(1) as u64;
        let read = (&mut self.responses)
            .take(cap)
            .read_until(b'\n', &mut self.line)
            .await?;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            return Ok(());
        }
        if read == 0 || self.line.len() as u64 != cap {
            return Err(TransportError::Closed);
        }
        let seen = self.line.len() + self.discard_rest_of_line().await?;
        self.line.clear();
        Err(TransportError::ResponseTooLarge {
            size: seen / 4 * 3,
            limit: self.max_payload_bytes,
        })
    }

    /// Skips to the end of the current line; returns how many bytes it skipped.
    async fn discard_rest_of_line(&mut self) -> Result<usize, TransportError> {
        let mut skipped = 0;
        loop {
            let buffer = self.responses.fill_buf().await?;
            if buffer.is_empty() {
                return Err(TransportError::Closed);
            }
            if let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
                self.responses.consume(end + 1);
                return Ok(skipped + end);
            }
            let len = buffer.len();
            self.responses.consume(len);
            skipped += len;
        }
    }
}

fn encode_line(payload: &[u8]) -> Vec<u8> {
    let mut line = String::with_capacity(base64::encoded_len(payload.len(), true).unwrap_or(0) + 1);
    BASE64.encode_string(payload, &mut line);
    line.push('\n');
    line.into_bytes()
}

/// Runs a CPU-bound step inline for small inputs and on the blocking pool for
/// large ones, so that base64 of a big payload does not stall other calls.
async fn off_runtime_if_large<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if len < BLOCKING_CODEC_THRESHOLD {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    /// A transport wired to an in-memory "worker": returns the transport and
    /// the worker's ends (its stdin to read, its stdout to write).
    fn wired(limit: usize) -> (PipeTransport, BufReader<DuplexStream>, DuplexStream) {
        let (gateway_out, worker_in) = duplex(1 << 16);
        let (worker_out, gateway_in) = duplex(1 << 16);
        (
            PipeTransport::new(gateway_out, gateway_in, limit),
            BufReader::new(worker_in),
            worker_out,
        )
    }

    #[tokio::test]
    async fn handshake_wants_ready() {
        let (mut transport, _stdin, mut stdout) = wired(1024);
        stdout.write_all(b"ready\n").await.unwrap();
        transport.handshake().await.unwrap();

        let (mut transport, _stdin, mut stdout) = wired(1024);
        stdout.write_all(b"Traceback\n").await.unwrap();
        let err = transport.handshake().await.unwrap_err();
        assert!(
            matches!(err, TransportError::Pipe(PipeError::NotReady(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn handshake_sees_eof_as_closed() {
        let (mut transport, _stdin, stdout) = wired(1024);
        drop(stdout);
        assert!(matches!(
            transport.handshake().await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn call_round_trips_through_base64_lines() {
        let (mut transport, mut stdin, mut stdout) = wired(1024);
        let worker = tokio::spawn(async move {
            let mut line = String::new();
            stdin.read_line(&mut line).await.unwrap();
            let request = BASE64.decode(line.trim_end()).unwrap();
            assert_eq!(request, b"\x00payload\n");
            stdout.write_all(&encode_line(b"answer")).await.unwrap();
            stdout.write_all(&encode_line(b"")).await.unwrap();
            (stdin, stdout)
        });
        let response = transport
            .call(Bytes::from_static(b"\x00payload\n"))
            .await
            .unwrap();
        assert_eq!(&response[..], b"answer");
        let _ends = worker.await.unwrap();
        // A zero-length payload is an empty line.
        let (mut stdin, _stdout) = _ends;
        let writer = tokio::spawn(async move {
            let mut line = String::new();
            stdin.read_line(&mut line).await.unwrap();
            line
        });
        let empty = transport.call(Bytes::new()).await.unwrap();
        assert!(empty.is_empty());
        assert_eq!(writer.await.unwrap(), "\n");
    }

    #[tokio::test]
    async fn oversized_response_is_refused_and_the_stream_stays_in_step() {
        let (mut transport, _stdin, mut stdout) = wired(16);
        let big = vec![7u8; 4096];
        let writer = tokio::spawn(async move {
            stdout.write_all(&encode_line(&big)).await.unwrap();
            stdout.write_all(&encode_line(b"small")).await.unwrap();
            stdout
        });
        let err = transport.call(Bytes::from_static(b"a")).await.unwrap_err();
        match err {
            TransportError::ResponseTooLarge { size, limit } => {
                assert_eq!(limit, 16);
                assert!(size >= 4000, "{size}");
            }
            other => panic!("unexpected {other}"),
        }
        let response = transport.call(Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(&response[..], b"small");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn garbage_response_is_a_protocol_error() {
        let (mut transport, _stdin, mut stdout) = wired(1024);
        stdout.write_all(b"not base64!\n").await.unwrap();
        let err = transport.call(Bytes::from_static(b"a")).await.unwrap_err();
        assert!(
            matches!(err, TransportError::Pipe(PipeError::NotBase64(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn eof_midline_is_closed() {
        let (mut transport, _stdin, mut stdout) = wired(1024);
        stdout.write_all(b"YWJj").await.unwrap();
        drop(stdout);
        assert!(matches!(
            transport.call(Bytes::from_static(b"a")).await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn large_payloads_pass_through_the_blocking_codec() {
        let (mut transport, mut stdin, mut stdout) = wired(4 << 20);
        let payload: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let expected = payload.clone();
        let echo = tokio::spawn(async move {
            let mut line = Vec::new();
            stdin.read_until(b'\n', &mut line).await.unwrap();
            stdout.write_all(&line).await.unwrap();
            (stdin, stdout)
        });
        let response = transport.call(Bytes::from(payload)).await.unwrap();
        assert_eq!(&response[..], &expected[..]);
        drop(echo.await.unwrap());
    }
}
