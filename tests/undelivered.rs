//! Results a caller does not read stay bounded: through the real gateway,
//! an HTTP/2 client sends unary calls of large results on one connection
//! and never reads the responses. Past its connection's share of
//! `--max-undelivered-bytes`, its calls that no worker has started are held
//! back, and another caller's calls run meanwhile; once it goes, its calls
//! held back do not run.

mod common;

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use common::{Gateway, MARKER, TRANSPORTS, assert_response_contains, call};
use prost::Message as _;

/// A unary `Execute` request as gRPC frames it.
fn grpc_execute(payload: Bytes) -> Bytes {
    let message = mysticchallenge::pb::ExecuteRequest { payload }.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap());
    framed.put_slice(&message);
    framed.freeze()
}

/// Sends `count` calls of `payload` on one HTTP/2 connection and returns
/// the connection, whose responses nobody reads (their data is never
/// released, so the gateway's window to it stays shut).
async fn send_without_reading(
    url: &str,
    payload: &Bytes,
    count: usize,
) -> (
    h2::client::SendRequest<Bytes>,
    Vec<h2::client::ResponseFuture>,
) {
    let address = url.trim_start_matches("grpc://");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut responses = Vec::new();
    for _ in 0..count {
        client = client.ready().await.unwrap();
        let request = http::Request::post(format!(
            "http://{address}/mysticchallenge.v1.Gateway/Execute"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(grpc_execute(payload.clone()), true).unwrap();
        responses.push(response);
    }
    (client, responses)
}

#[tokio::test]
async fn unary_results_a_caller_does_not_read_hold_back_only_its_own_calls() {
    for &transport in TRANSPORTS {
        // A connection's share: an eighth of 64 MiB, two 4 MiB results.
        let flags = ["--workers", "1", "--max-undelivered-bytes", "67108864"];
        let mut gateway = Gateway::start(transport, &flags).await;
        let (connection, responses) =
            send_without_reading(&gateway.url, &call("result_4m"), 12).await;
        // Its share filled, the rest of its calls wait; the worker is free
        // for another caller.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answered =
            tokio::time::timeout(Duration::from_secs(10), gateway.execute(call("marker")))
                .await
                .expect("another caller's call is not held up by one that does not read");
        assert_response_contains(&answered.unwrap(), MARKER);
        let served = gateway.calls_served().await;
        assert!(
            served <= 5,
            "{served} calls served: the caller that does not read got more than its share"
        );
        // It goes: what it had held back does not run. (Its calls are
        // cancelled one by one as it goes: one freed before the next is
        // cancelled may still be taken.)
        drop((connection, responses));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = gateway.calls_served().await;
        assert!(
            after <= served + 2,
            "{} of its calls ran after it went",
            after - served
        );
        assert_eq!(gateway.restarts().await, 0);
        assert!(gateway.terminate().await.success());
    }
}
