//! Fuzzes the pipe transport's response reader with whatever a broken or
//! hostile worker might write on its link: every input must end in a
//! response or a `TransportError`, never a panic, a hang or an allocation
//! past the payload limit.

#![no_main]

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mysticchallenge::transport::TransportError;
use mysticchallenge::transport::pipe::PipeTransport;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, written)) = data.split_first() else { return };
    let limit = [0usize, 1, 3, 64, 4096][usize::from(shape) % 5];
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    // The worker's side: writes the input, then reads the requests until
    // the gateway's side goes.
    let written = written.to_vec();
    let worker = std::thread::spawn(move || {
        let _ = theirs.write_all(&written);
        let _ = theirs.shutdown(Shutdown::Write);
        let _ = std::io::copy(&mut theirs, &mut std::io::sink());
        written.len()
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut transport = PipeTransport::new(OwnedFd::from(ours), limit).unwrap();
        if shape & 0x80 != 0 && transport.handshake().await.is_err() {
            return;
        }
        // Every call consumes at least one line's `\n`, so this bound is
        // never reached unless a call fails to make progress.
        for _ in 0..=data.len() {
            match transport.call(Bytes::from_static(b"MCQ2"), None).await {
                Ok(incoming) => assert!(incoming.payload.len() <= limit),
                Err(TransportError::Closed) => return,
                // A bad line: the reader stays in step with the stream.
                Err(_) => {}
            }
        }
        panic!("the reader stopped making progress");
    });
    worker.join().unwrap();
});
