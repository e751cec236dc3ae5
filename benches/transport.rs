//! One worker round trip through each transport, with a real Python worker
//! running `echo(data)`: the request crosses the transport, is unpickled and
//! run, and the result is pickled and comes back. Also two plain memcpys of
//! each payload, the floor the shared-memory transport is measured against.
//!
//! Needs the repo's virtualenv (`make venv`) or `$MYSTIC_PYTHON`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mysticchallenge::functions::{FunctionCache, WorkerCall};
use mysticchallenge::gateway::{launch_settings, pool_settings};
use mysticchallenge::metrics::Metrics;
use mysticchallenge::pool::Pool;
use mysticchallenge::transport::Spec;
use mysticchallenge::wire::Request;
use mysticchallenge::{Args, Config};

const SIZES: [usize; 6] = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20];

fn python() -> String {
    std::env::var("MYSTIC_PYTHON").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".venv/bin/python")
            .to_string_lossy()
            .into_owned()
    })
}

/// A call of `echo` on `size` bytes, as the gateway hands it to a worker:
/// after the first round trip, by digest.
fn echo_call(runtime: &tokio::runtime::Runtime, size: usize) -> WorkerCall {
    let request = Request::parse(echo_request(size)).unwrap();
    runtime
        .block_on(FunctionCache::new(1 << 20, usize::MAX).resolve(request))
        .unwrap()
}

fn echo_request(size: usize) -> Bytes {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/echo_request.py");
    let output = std::process::Command::new(python())
        .arg(script)
        .arg(size.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Bytes::from(output.stdout)
}

fn round_trips(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let requests: Vec<(usize, WorkerCall)> = SIZES
        .iter()
        .map(|&size| (size, echo_call(&runtime, size)))
        .collect();
    let mut group = c.benchmark_group("worker_round_trip");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for transport in ["pipe", "shm"] {
        let python = python();
        let args = [
            "mysticchallenge",
            "--workers",
            "1",
            "--transport",
            transport,
            "--python",
            &python,
        ];
        let config = Config::try_from(Args::parse_from(args)).unwrap();
        let spec = Spec::new(
            config.transport,
            config.max_payload_bytes,
            config.ring_bytes,
        );
        let metrics = std::sync::Arc::new(Metrics::new(config.workers, transport));
        let (settings, launch) = (pool_settings(&config), launch_settings(&config));
        let (pool, mut tasks) =
            runtime.block_on(async { Pool::spawn(settings, launch, spec, metrics) });
        runtime.block_on(tasks.ready()).unwrap();
        for (size, request) in &requests {
            group.throughput(Throughput::Bytes(*size as u64));
            group.measurement_time(Duration::from_secs(if *size >= 16 << 20 { 20 } else { 3 }));
            group.bench_with_input(BenchmarkId::new(transport, size), request, |b, request| {
                b.to_async(&runtime).iter(|| async {
                    let pending = pool.submit(request.clone(), None, None).unwrap();
                    let response = pending.outcome().await.unwrap();
                    assert!(response.payload.len() > *size);
                });
            });
        }
        runtime.block_on(tasks.shutdown());
    }
    for &size in &SIZES {
        let source = vec![7u8; size];
        let mut middle = vec![0u8; size];
        let mut destination = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("two_memcpys", size), |b| {
            b.iter(|| {
                middle.copy_from_slice(&source);
                destination.copy_from_slice(&middle);
                std::hint::black_box(&destination);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
