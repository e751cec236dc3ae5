//! The gateway's end of the shared-memory transport against the worker's
//! (`worker.rs`, on a thread), over a real link, rings and bells: frames of
//! every size, wrap-around, descriptors in order with their frames, an
//! oversized response, and a worker that dies mid-frame.

use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::frame::FrameWriter;
use super::link::{self, SPILL_BYTES};
use super::worker::{Payload, WorkerError, WorkerSide};
use super::{Prepared, ShmTransport, rings};
use crate::segments::Sealed;
use crate::transport::TransportError;
use crate::wire::FrameHeader;

const RING_BYTES: usize = 64 << 10;
/// A test that hangs fails instead.
const PATIENCE: Duration = Duration::from_secs(20);

/// A worker's link: our end and the worker's.
fn link_sockets() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

async fn pair(max_payload_bytes: usize) -> (ShmTransport, OwnedFd) {
    let (ours, theirs) = link_sockets();
    let transport = Prepared::new(RING_BYTES)
        .unwrap()
        .connect(ours, max_payload_bytes)
        .unwrap();
    (transport, theirs)
}

/// A worker on a thread: shakes hands, then runs `script`.
fn worker<T: Send + 'static>(
    link: OwnedFd,
    max_payload_bytes: usize,
    script: impl FnOnce(&mut WorkerSide) -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        let mut side = WorkerSide::connect(link, max_payload_bytes).unwrap();
        script(&mut side)
    })
}

fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    bytes
}

async fn call(
    transport: &mut ShmTransport,
    request: Vec<u8>,
) -> Result<crate::transport::Incoming, TransportError> {
    tokio::time::timeout(PATIENCE, transport.call(Bytes::from(request), None))
        .await
        .expect("the call ended")
}

#[tokio::test]
async fn frames_of_every_size_round_trip_and_wrap_round_the_rings() {
    // Sizes around the ring's (64 KiB), past it (streamed through), and
    // odd ones, so that headers land everywhere in the ring.
    let sizes = [
        0, 1, 15, 16, 17, 1000, 65_519, 65_536, 200_000, 3, 40_000, 40_000, 40_000,
    ];
    let (mut transport, link) = pair(1 << 30).await;
    let worker = worker(link, 1 << 30, move |side| {
        for _ in sizes {
            let request = side.receive().unwrap();
            let mut answer = request.payload.as_ref().to_vec();
            answer.reverse();
            side.send(&[b"<", &answer, b">"], None).unwrap();
        }
    });
    transport.handshake().await.unwrap();
    for (n, size) in sizes.into_iter().enumerate() {
        let request = bytes_of(size, n as u8);
        let incoming = call(&mut transport, request.clone()).await.unwrap();
        let mut expected = request;
        expected.reverse();
        assert_eq!(incoming.payload.len(), size + 2, "size {size}");
        assert_eq!(&incoming.payload[1..=size], &expected[..], "size {size}");
        assert!(incoming.segment.is_none());
    }
    worker.join().unwrap();
}

#[tokio::test]
async fn descriptors_come_in_order_with_the_frames_that_announce_them() {
    let (mut transport, link) = pair(1 << 30).await;
    let worker = worker(link, 1 << 30, |side| {
        // A large request (spilled) with the caller's segment.
        let request = side.receive().unwrap();
        assert!(matches!(request.payload, Payload::Spilled(_)));
        assert_eq!(request.payload.as_ref(), &bytes_of(2 * SPILL_BYTES, 1)[..]);
        let arguments = read_all(request.segment.as_ref().unwrap());
        assert_eq!(arguments, b"the caller's arguments");
        // A large response (spilled) with a result segment.
        let result = Sealed::write("test-result", &[b"a result"]).unwrap();
        let response = bytes_of(3 * SPILL_BYTES, 2);
        side.send(&[&response], Some(result.fd())).unwrap();
        // Then a small one with a segment, and one with none.
        let request = side.receive().unwrap();
        assert!(matches!(request.payload, Payload::Owned(_)));
        assert!(request.segment.is_none());
        let result = Sealed::write("test-result", &[b"another"]).unwrap();
        side.send(&[b"small"], Some(result.fd())).unwrap();
        side.receive().unwrap();
        side.send(&[b"bare"], None).unwrap();
    });
    transport.handshake().await.unwrap();
    let arguments = Sealed::write("test-arguments", &[b"the caller's arguments"]).unwrap();
    let request = Bytes::from(bytes_of(2 * SPILL_BYTES, 1));
    let incoming = transport.call(request, Some(arguments.fd())).await.unwrap();
    assert_eq!(&incoming.payload[..], &bytes_of(3 * SPILL_BYTES, 2)[..]);
    assert_eq!(read_all(incoming.segment.as_ref().unwrap()), b"a result");
    let incoming = call(&mut transport, b"small".to_vec()).await.unwrap();
    assert_eq!(&incoming.payload[..], b"small");
    assert_eq!(read_all(incoming.segment.as_ref().unwrap()), b"another");
    let incoming = call(&mut transport, b"bare".to_vec()).await.unwrap();
    assert_eq!(&incoming.payload[..], b"bare");
    assert!(incoming.segment.is_none());
    worker.join().unwrap();
}

#[tokio::test]
async fn an_oversized_response_is_refused_and_the_worker_stays_usable() {
    let limit = 1000;
    let (mut transport, link) = pair(limit).await;
    let worker = worker(link, 1 << 30, |side| {
        for response in [
            bytes_of(5000, 0),
            bytes_of(2 * SPILL_BYTES, 0),
            b"fits".to_vec(),
        ] {
            side.receive().unwrap();
            side.send(&[&response], None).unwrap();
        }
    });
    transport.handshake().await.unwrap();
    for size in [5000, 2 * SPILL_BYTES] {
        match call(&mut transport, b"call".to_vec()).await {
            Err(TransportError::ResponseTooLarge {
                size: got,
                limit: 1000,
            }) => assert_eq!(got, size),
            other => panic!("expected ResponseTooLarge, got {other:?}"),
        }
    }
    let incoming = call(&mut transport, b"call".to_vec()).await.unwrap();
    assert_eq!(&incoming.payload[..], b"fits");
    worker.join().unwrap();
}

#[tokio::test]
async fn a_worker_that_dies_mid_frame_ends_the_call_with_an_error() {
    let (mut transport, link) = pair(1 << 30).await;
    // A worker that writes a header and part of its payload, then dies.
    let worker = std::thread::spawn(move || {
        let (rings, bells) = link::worker_handshake(link.as_fd()).unwrap();
        let mut side = rings::attach(&rings).unwrap();
        link::send_message(link.as_fd(), link::READY, None).unwrap();
        let mut request = vec![0; 64];
        while side.incoming.available().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        side.incoming.read(&mut request).unwrap();
        side.outgoing
            .write(&FrameHeader::new(100).encode())
            .unwrap();
        side.outgoing.write(b"only part of it").unwrap();
        drop(bells);
    });
    transport.handshake().await.unwrap();
    let outcome = call(&mut transport, b"call".to_vec()).await;
    assert!(
        matches!(outcome, Err(TransportError::Closed)),
        "{outcome:?}"
    );
    worker.join().unwrap();
}

#[test]
fn a_worker_whose_gateway_is_gone_hears_so() {
    let (ours, theirs) = link_sockets();
    drop(ours);
    assert!(matches!(
        WorkerSide::connect(theirs, 1 << 20),
        Err(WorkerError::Gone)
    ));
}

#[tokio::test]
async fn a_worker_whose_gateway_goes_mid_frame_hears_so() {
    let (mut transport, link) = pair(1 << 30).await;
    let worker = worker(link, 1 << 30, |side| side.receive().map(drop));
    transport.handshake().await.unwrap();
    // A header announcing more than follows, then the gateway goes.
    transport
        .side
        .outgoing
        .write(&FrameHeader::new(100).encode())
        .unwrap();
    transport.side.outgoing.write(b"part").unwrap();
    drop(transport);
    assert!(matches!(worker.join().unwrap(), Err(WorkerError::Gone)));
}

#[tokio::test]
async fn a_reader_that_takes_a_whole_frame_does_not_wake_the_writer() {
    let (mut transport, link) = pair(1 << 30).await;
    let worker = worker(link, 1 << 30, |side| side.receive().map(drop));
    transport.handshake().await.unwrap();
    // The gateway says it sleeps (as it will, waiting for the answer), then
    // sends a frame that fits; the worker takes it whole.
    transport.side.mine.raise();
    let pieces: [&[u8]; 1] = [b"hello"];
    transport
        .send_frame(FrameWriter::new(FrameHeader::new(5), &pieces))
        .await
        .unwrap();
    worker.join().unwrap().unwrap();
    assert!(
        transport.side.mine.take(),
        "the worker woke the gateway for nothing"
    );
}
