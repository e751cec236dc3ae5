//! The shared-memory ring alone: frames of 64 MiB streamed through a 4 MiB
//! ring by a producer and a consumer on two threads (GB/s of payload).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mysticchallenge::transport::shm::frame::{FrameReader, FrameWriter};
use mysticchallenge::transport::shm::mapping::{HeapMapping, Mapping};
use mysticchallenge::transport::shm::ring::{CONTROL_BYTES, RingPlacement, create};
use mysticchallenge::wire::FrameHeader;

fn stream_frames(c: &mut Criterion) {
    let ring_bytes = 4 << 20;
    let mut group = c.benchmark_group("ring");
    group.sample_size(20);
    for size in [64usize << 10, 1 << 20, 64 << 20] {
        let payload = Arc::new(vec![0xA5u8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("frame_{}KiB_through_4MiB_ring", size >> 10), |b| {
            b.iter_custom(|iterations| {
                let mapping: Arc<dyn Mapping> = HeapMapping::new(CONTROL_BYTES + ring_bytes);
                let placement = RingPlacement {
                    control_offset: 0,
                    data_offset: CONTROL_BYTES,
                    capacity: ring_bytes,
                };
                let (mut producer, mut consumer) = create(mapping, placement).unwrap();
                let to_send = Arc::clone(&payload);
                let start = std::time::Instant::now();
                let writer = std::thread::spawn(move || {
                    for _ in 0..iterations {
                        let pieces = [to_send.as_slice()];
                        let header = FrameHeader::new(to_send.len() as u64);
                        let mut frame = FrameWriter::new(header, &pieces);
                        while !frame.pump(&mut producer).unwrap().finished {
                            std::hint::spin_loop();
                        }
                    }
                });
                let mut reader = FrameReader::new(usize::MAX);
                for _ in 0..iterations {
                    loop {
                        if let (Some(frame), _) = reader.pump(&mut consumer).unwrap() {
                            assert_eq!(frame.payload.map(|p| p.len()), Some(size));
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                writer.join().unwrap();
                start.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, stream_frames);
criterion_main!(benches);
