//! Fuzzes the pipe transport's response reader with whatever a broken or
//! hostile worker might write on its stdout: every input must end in a
//! response or a `TransportError`, never a panic, a hang or an allocation
//! past the payload limit.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mysticchallenge::transport::TransportError;
use mysticchallenge::transport::pipe::PipeTransport;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, stdout)) = data.split_first() else { return };
    let limit = [0usize, 1, 3, 64, 4096][usize::from(shape) % 5];
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let reader = std::io::Cursor::new(stdout.to_vec());
        let mut transport = PipeTransport::new(tokio::io::sink(), reader, limit);
        if shape & 0x80 != 0 && transport.handshake().await.is_err() {
            return;
        }
        // Every call consumes at least one line's `\n`, so this bound is
        // never reached unless a call fails to make progress.
        for _ in 0..=stdout.len() {
            match transport.call(Bytes::from_static(b"MCQ2")).await {
                Ok(response) => assert!(response.len() <= limit),
                Err(TransportError::Closed) => return,
                // A bad line: the reader stays in step with the stream.
                Err(_) => {}
            }
        }
        panic!("the reader stopped making progress");
    });
});
