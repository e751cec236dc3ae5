//! Bad input through the real gateway: malformed requests and payloads over
//! the limit get clear statuses and leave the service healthy.

mod common;

use bytes::Bytes;
use common::{Gateway, MARKER, TRANSPORTS, assert_response_contains, call};
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
        let response = gateway
            .execute(Bytes::from_static(b"MCQ1 this is not a pickle"))
            .await;
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
            let mut payload = b"MCQ1".to_vec();
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
