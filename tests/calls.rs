//! Calls through the real gateway and real Python workers: results, the
//! worker table, health, concurrency, and callers that leave early.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Gateway, MARKER, TRANSPORTS, assert_response_contains, call};
use mysticchallenge::pb::WorkerState;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn serves_a_call_and_describes_its_workers() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;

        let channel = tonic::transport::Endpoint::new(gateway.url.replace("grpc://", "http://"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for service in ["", "mysticchallenge.v1.Gateway"] {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            let health = HealthClient::new(channel.clone())
                .check(request)
                .await
                .unwrap();
            assert_eq!(
                health.into_inner().status(),
                ServingStatus::Serving,
                "{service:?}"
            );
        }

        let response = gateway.execute(call("marker")).await.unwrap();
        assert_response_contains(&response, MARKER);

        let workers = gateway.workers().await;
        assert_eq!(workers.count, 2);
        assert_eq!(workers.transport, transport);
        assert_eq!(workers.workers.len(), 2);
        for (index, worker) in workers.workers.iter().enumerate() {
            assert_eq!(worker.index as usize, index);
            assert_ne!(worker.pid, 0);
            assert_eq!(worker.state(), WorkerState::Idle);
            assert_eq!(worker.restarts, 0);
        }
        assert_eq!(gateway.calls_served().await, 1);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn concurrent_calls_all_complete_and_use_every_worker() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        let client = gateway.client().await;
        let payload = call("pid_after_sleep");
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let mut client = client.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    let request = mysticchallenge::pb::ExecuteRequest { payload };
                    client
                        .execute(request)
                        .await
                        .map(|response| response.into_inner().payload)
                })
            })
            .collect();
        let mut per_pid: HashMap<Vec<u8>, usize> = HashMap::new();
        for handle in calls {
            let response = handle.await.unwrap().expect("every call succeeds");
            let start = response
                .windows(4)
                .position(|w| w == b"pid:")
                .expect("pid marker");
            let pid: Vec<u8> = response[start..]
                .iter()
                .copied()
                .take_while(|byte| *byte != b';')
                .collect();
            *per_pid.entry(pid).or_default() += 1;
        }
        assert_eq!(per_pid.values().sum::<usize>(), 40);
        assert_eq!(per_pid.len(), 2, "both workers served calls: {per_pid:?}");
        assert_eq!(gateway.calls_served().await, 40);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn a_call_whose_caller_left_before_it_started_is_not_run() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &["--workers", "1"]).await;
        // Occupy the only worker.
        let busy = {
            let mut client = gateway.client().await;
            let payload = call("sleep_1s");
            tokio::spawn(async move {
                client
                    .execute(mysticchallenge::pb::ExecuteRequest { payload })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Queue a second call, then walk away from it.
        let abandoned = {
            let mut client = gateway.client().await;
            let payload = call("marker");
            tokio::spawn(async move {
                client
                    .execute(mysticchallenge::pb::ExecuteRequest { payload })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        abandoned.abort();
        busy.await.unwrap().expect("the first call completes");
        // Let the worker reach the abandoned job: it must skip it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(gateway.calls_served().await, 1);
        let response = gateway.execute(call("marker")).await.unwrap();
        assert_response_contains(&response, MARKER);
        assert_eq!(gateway.calls_served().await, 2);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn megabyte_payloads_stream_through_a_one_page_ring_both_ways() {
    let mut gateway = Gateway::start("shm", &["--ring-bytes", "4096"]).await;
    for _ in 0..3 {
        let response = gateway.execute(call("echo_1m")).await.unwrap();
        assert!(response.starts_with(b"MCR1"));
        assert!(response.len() > 2 << 20, "{}", response.len());
        let forward: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        assert_response_contains(&response, &forward[..4096]);
    }
    assert_eq!(gateway.restarts().await, 0);
    assert!(gateway.terminate().await.success());
}
