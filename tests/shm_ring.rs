//! Property tests of the shared-memory ring and frame layer: random message
//! sizes, wrap-around, full and empty rings, and a producer and a consumer
//! on different threads.

use std::sync::Arc;

use mysticchallenge::transport::shm::frame::{FrameReader, FrameWriter};
use mysticchallenge::transport::shm::mapping::{HeapMapping, Mapping};
use mysticchallenge::transport::shm::ring::{
    CONTROL_BYTES, Consumer, Producer, RingPlacement, create,
};
use mysticchallenge::wire::FrameHeader;
use proptest::prelude::*;

fn ring(capacity: usize) -> (Producer, Consumer) {
    let mapping: Arc<dyn Mapping> = HeapMapping::new(CONTROL_BYTES + capacity);
    let placement = RingPlacement {
        control_offset: 0,
        data_offset: CONTROL_BYTES,
        capacity,
    };
    create(mapping, placement).unwrap()
}

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Interleaved partial writes and reads of random sizes deliver the byte
    /// stream in order, and the ring never reports more than it holds.
    #[test]
    fn bytes_arrive_in_order(capacity in 1usize..300, steps in prop::collection::vec((0usize..400, 0usize..400), 1..60)) {
        let (mut producer, mut consumer) = ring(capacity);
        let stream = message(steps.iter().map(|(w, _)| w).sum(), 7);
        let (mut sent, mut received) = (0, Vec::new());
        for (write, read) in steps {
            let end = (sent + write).min(stream.len());
            sent += producer.write(&stream[sent..end]).unwrap();
            let held = consumer.available().unwrap();
            prop_assert!(held <= capacity);
            prop_assert_eq!(held + producer.free().unwrap(), capacity);
            let mut buffer = vec![0u8; read];
            let got = consumer.read(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..got]);
        }
        let mut rest = vec![0u8; capacity];
        let got = consumer.read(&mut rest).unwrap();
        received.extend_from_slice(&rest[..got]);
        prop_assert_eq!(&received[..], &stream[..sent]);
    }

    /// Frames of random sizes, many larger than the ring, written in
    /// pieces of random sizes, stream through it.
    #[test]
    fn frames_of_any_size_stream_through(log_capacity in 4u32..10, sizes in prop::collection::vec((0usize..3000, 0usize..3000), 1..12)) {
        let capacity = 1usize << log_capacity;
        let (mut producer, mut consumer) = ring(capacity);
        let mut reader = FrameReader::new(usize::MAX);
        for (index, (size, cut)) in sizes.into_iter().enumerate() {
            let payload = message(size, index as u8);
            let (head, tail) = payload.split_at(cut.min(size));
            let pieces = [head, tail];
            let mut writer = FrameWriter::new(FrameHeader::new(size as u64), &pieces);
            let received = loop {
                writer.pump(&mut producer).unwrap();
                if let (Some(frame), _) = reader.pump(&mut consumer).unwrap() {
                    break frame;
                }
            };
            prop_assert!(writer.pump(&mut producer).unwrap().finished);
            prop_assert_eq!(received.payload, Some(payload));
        }
        prop_assert_eq!(consumer.available().unwrap(), 0);
    }
}

#[test]
fn a_producer_and_a_consumer_on_different_threads_agree() {
    let (mut producer, mut consumer) = ring(4096);
    let sizes: Vec<usize> = (0..300).map(|i| (i * 7919) % 20_000).collect();
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| message(n, i as u8))
        .collect();
    let to_send = expected.clone();
    let writer = std::thread::spawn(move || {
        for payload in to_send {
            let pieces = [&payload[..]];
            let mut frame = FrameWriter::new(FrameHeader::new(payload.len() as u64), &pieces);
            while !frame.pump(&mut producer).unwrap().finished {
                std::thread::yield_now();
            }
        }
    });
    let mut reader = FrameReader::new(usize::MAX);
    for payload in expected {
        let received = loop {
            match reader.pump(&mut consumer).unwrap() {
                (Some(frame), _) => break frame,
                (None, _) => std::thread::yield_now(),
            }
        };
        assert_eq!(received.payload, Some(payload));
    }
    writer.join().unwrap();
}
