//! A bare tonic echo server for benchmarks: the gateway's gRPC API and HTTP/2
//! settings, with `Execute` answering its request payload as is (and
//! `ExecuteStream` each call's, one message of results per message of calls)
//! and no workers behind it. `benches/python/echo.py` measures the Python client
//! against it, to show what the gRPC hop alone costs.
//!
//! `cargo run --release --example echo_server -- 127.0.0.1:0` prints
//! `serving grpc://HOST:PORT` once it listens.

use mysticchallenge::pb;
use mysticchallenge::pb::gateway_server::{Gateway, GatewayServer};
use mysticchallenge::server::{http2_server, incoming};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

struct Echo;

#[tonic::async_trait]
impl Gateway for Echo {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let payload = request.into_inner().payload;
        Ok(Response::new(pb::ExecuteResponse { payload }))
    }

    type ExecuteStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::StreamResponse, Status>> + Send>,
    >;

    async fn execute_stream(
        &self,
        request: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let echoed = request.into_inner().map(|message| {
            let results = message?
                .calls
                .into_iter()
                .map(|call| pb::StreamResult {
                    id: call.id,
                    outcome: Some(pb::stream_result::Outcome::Payload(call.payload)),
                })
                .collect();
            Ok(pb::StreamResponse { results })
        });
        Ok(Response::new(Box::pin(echoed)))
    }

    async fn get_workers(
        &self,
        _request: Request<pb::GetWorkersRequest>,
    ) -> Result<Response<pb::GetWorkersResponse>, Status> {
        Ok(Response::new(pb::GetWorkersResponse {
            count: 0,
            transport: "echo".into(),
            workers: vec![],
            ready: 0,
            segment_socket: String::new(),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("serving grpc://{}", listener.local_addr()?);
    let service = GatewayServer::new(Echo)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    http2_server()
        .add_service(service)
        .serve_with_incoming(incoming(listener))
        .await?;
    Ok(())
}
