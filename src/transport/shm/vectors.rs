//! Checks the shared-memory layout against `tests/vectors/shm_layout.txt`,
//! so that it changes only on purpose.

use super::frame::{FrameReader, FrameWriter};
use super::mapping::HeapMapping;
use super::ring::{CONTROL_BYTES, RingPlacement, create};
use super::rings::header_bytes;
use crate::wire::FrameHeader;

const VECTORS: &str = include_str!("../../../tests/vectors/shm_layout.txt");

fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    VECTORS
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, hex) = line.split_once(' ').expect("`name hex` lines");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
                .collect();
            (name, bytes)
        })
        .collect()
}

#[test]
fn every_vector_matches_the_rust_encoding() {
    let all = vectors();
    assert!(all.len() >= 8, "vectors file lost entries");
    for (name, bytes) in all {
        if let Some(len) = name.strip_prefix("frame_header_") {
            let header = FrameHeader::new(len.parse().unwrap());
            assert_eq!(header.encode().as_slice(), bytes, "{name}");
            let array: [u8; 16] = bytes.as_slice().try_into().unwrap();
            assert_eq!(FrameHeader::decode(&array).unwrap(), header, "{name}");
        } else if let Some(flags) = name.strip_prefix("frame_flags_") {
            let fields: Vec<u64> = flags.split('_').map(|f| f.parse().unwrap()).collect();
            let header =
                FrameHeader::with_descriptors(fields[0], fields[1] as usize, fields[2] == 1)
                    .unwrap();
            assert_eq!(header.encode().as_slice(), bytes, "{name}");
            let array: [u8; 16] = bytes.as_slice().try_into().unwrap();
            assert_eq!(FrameHeader::decode(&array).unwrap(), header, "{name}");
        } else if let Some(ring) = name.strip_prefix("rings_header_") {
            let header = header_bytes(ring.parse().unwrap());
            assert_eq!(&header[..bytes.len()], bytes.as_slice(), "{name}");
        } else if name == "frame_hello" {
            let mapping = HeapMapping::new(CONTROL_BYTES + 64);
            let placement = RingPlacement {
                control_offset: 0,
                data_offset: CONTROL_BYTES,
                capacity: 64,
            };
            let (mut producer, mut consumer) = create(mapping, placement).unwrap();
            let hello = [&b"hello"[..]];
            assert!(
                FrameWriter::new(FrameHeader::new(5), &hello)
                    .pump(&mut producer)
                    .unwrap()
                    .finished
            );
            let mut wire = vec![0u8; bytes.len()];
            // The frame's raw bytes, as the ring holds them...
            assert_eq!(consumer.read(&mut wire).unwrap(), bytes.len());
            assert_eq!(wire, bytes, "{name}");
            // ...and the same bytes, written raw, read back as a frame.
            producer.write(&bytes).unwrap();
            let frame = FrameReader::new(16).pump(&mut consumer).unwrap().0.unwrap();
            assert_eq!(frame.payload.unwrap(), b"hello");
        } else {
            panic!("unknown vector {name}");
        }
    }
}
