//! Bad input through the real gateway: malformed requests and payloads over
//! the limit get clear statuses and leave the service healthy.

mod common;

use bytes::Bytes;
use common::{Gateway, MARKER, TRANSPORTS, assert_response_contains, call};
use mysticchallenge::functions::encode;
use tonic::Code;

#[tokio::test]
async fn a_payload_without_the_magic_is_invalid_argument() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        for garbage in [&b""[..], b"hello", b"\x80\x05not a call"] {
            let status = gateway
                .execute(Bytes::from_static(garbage))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(
                status.metadata().get("mystic-error").unwrap(),
                "invalid-request"
            );
            assert!(
                status.message().contains("distribute_challenge"),
                "{}",
                status.message()
            );
        }
        assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
        assert_eq!(gateway.restarts().await, 0);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn a_garbled_call_is_answered_by_the_worker_not_a_crash() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        let garbled = encode::attached(b"not a pickle", b"nor this");
        let response = gateway.execute(garbled).await;
        let response = response.expect("the worker answers a garbled call with an error payload");
        assert!(response.starts_with(b"MCR1"));
        assert_eq!(gateway.restarts().await, 0);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn payloads_over_the_limit_are_resource_exhausted() {
    for &transport in TRANSPORTS {
        let limit = 4096;
        let mut gateway = Gateway::start(transport, &["--max-payload-bytes", "4096"]).await;
        // Just over our limit (checked by the handler), and far over it
        // (refused by the gRPC decoder before the handler runs).
        for size in [limit + 1, limit * 10] {
            let mut payload = b"MCQ2".to_vec();
            payload.resize(size, b'x');
            let status = gateway.execute(Bytes::from(payload)).await.unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{size}: {status:?}");
            assert_eq!(
                status.metadata().get("mystic-error").unwrap(),
                "payload-too-large"
            );
            assert!(
                status.message().contains("--max-payload-bytes"),
                "{}",
                status.message()
            );
        }
        // A result over the limit: refused, and the worker is kept.
        let status = gateway.execute(call("result_20k")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("response"),
            "{}",
            status.message()
        );
        assert_eq!(gateway.restarts().await, 0);
        assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn the_queue_is_bounded_by_bytes_and_refusals_are_counted() {
    for &transport in TRANSPORTS {
        let metrics_port = common::free_port();
        let metrics_listen = format!("127.0.0.1:{metrics_port}");
        let mut gateway = Gateway::start(
            transport,
            &[
                "--workers",
                "1",
                "--queue-max-bytes",
                "1500000",
                "--metrics-listen",
                &metrics_listen,
            ],
        )
        .await;
        // The one worker is busy; one 1 MiB call fits the queue's byte
        // bound, a second one does not.
        let busy = tokio::spawn(gateway.execute_owned(call("sleep_1s")));
        gateway.wait_for_busy_workers(1).await;
        let queued = tokio::spawn(gateway.execute_owned(call("echo_1m")));
        gateway.wait_for_queue_depth(1, &metrics_listen).await;
        let status = gateway.execute(call("echo_1m")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.metadata().get("mystic-error").unwrap(), "queue-full");
        assert!(
            status.message().contains("--queue-max-bytes"),
            "{}",
            status.message()
        );
        assert!(busy.await.unwrap().is_ok());
        assert!(queued.await.unwrap().is_ok());

        let text = common::scrape(&metrics_listen).await;
        for line in [
            r#"mystic_rejected_calls_total{reason="queue-full"} 1"#,
            r#"mystic_calls_total{worker="0",outcome="ok"} 2"#,
            "mystic_queue_depth 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(gateway.terminate().await.success());
    }
}
