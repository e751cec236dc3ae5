//! Fuzzes the shared-memory frame decoder over a ring whose bytes and
//! counters come from the input, as a buggy or hostile peer might leave them:
//! every input must end in a frame or an error, never a panic or an
//! out-of-bounds access.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mysticchallenge::transport::shm::frame::FrameReader;
use mysticchallenge::transport::shm::mapping::HeapMapping;
use mysticchallenge::transport::shm::ring::{CONTROL_BYTES, RingPlacement, attach_consumer, create};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let capacity = 16usize << (shape % 8);
    let limit = [0usize, 1, 64, 4096, usize::MAX][usize::from(shape >> 5) % 5];
    let mapping = HeapMapping::new(CONTROL_BYTES + capacity);
    let placement = RingPlacement { control_offset: 0, data_offset: CONTROL_BYTES, capacity };
    let (mut producer, mut consumer) = create(mapping.clone(), placement).unwrap();
    let mut reader = FrameReader::new(limit);
    // The first 16 bytes may overwrite the counters, as a hostile peer could.
    let (counters, stream) = rest.split_at(rest.len().min(16));
    if counters.len() == 16 && shape & 0x10 != 0 {
        mapping.poke_u64(0, u64::from_le_bytes(counters[..8].try_into().unwrap()));
        mapping.poke_u64(64, u64::from_le_bytes(counters[8..].try_into().unwrap()));
        consumer = attach_consumer(mapping.clone(), placement).unwrap();
    }
    let mut fed = 0;
    loop {
        let written = producer.write(&stream[fed..]).unwrap_or(0);
        fed += written;
        match reader.pump(&mut consumer) {
            Ok((_, moved)) if moved == 0 && written == 0 => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
