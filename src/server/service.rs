//! The `mysticchallenge.v1.Gateway` gRPC service: thin handlers that validate
//! a request, hand it to the pool and map the outcome to a status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::connections::ConnectionInfo;
use super::deadline::{Arrival, call_deadline, client_deadline, timeout_header};
use super::delivery::{Delivering, UnaryResult};
use super::refusals::Refusals;
use super::stream::{self, StreamContext};
use crate::error::{Direction, GatewayError};
use crate::functions::{self, FunctionCache};
use crate::pb;
use crate::pool::{Delivery, Pool, WorkerSnapshot, WorkerState};
use crate::segments::{self, CallSegments, Door};
use crate::transport::TransportKind;

/// Checks an `ExecuteRequest` against the payload limit and splits its
/// payload into call and function (see [`functions`]).
pub fn parse_request(
    request: pb::ExecuteRequest,
    limit: usize,
) -> Result<functions::Request, GatewayError> {
    parse_payload(request.payload, limit)
}

/// As [`parse_request`], for one call's payload (of either RPC).
pub fn parse_payload(payload: Bytes, limit: usize) -> Result<functions::Request, GatewayError> {
    if payload.len() > limit {
        return Err(GatewayError::PayloadTooLarge {
            direction: Direction::Request,
            size: payload.len(),
            limit,
        });
    }
    functions::Request::parse(payload)
}

/// As [`parse_payload`], with the segments the call names taken from
/// `door` (see [`segments::claim`]).
pub fn parse_call(
    payload: Bytes,
    limit: usize,
    door: Option<&Door>,
) -> Result<(functions::Request, Option<CallSegments>), GatewayError> {
    let len = payload.len();
    let request = parse_payload(payload, limit)?;
    let segments = segments::claim(door, request.call(), len, limit)?;
    Ok((request, segments))
}

/// The gateway's gRPC API.
#[derive(Debug)]
pub struct GatewayService {
    pub pool: Pool,
    pub functions: Arc<FunctionCache>,
    pub transport: TransportKind,
    pub max_payload_bytes: usize,
    pub call_timeout: Option<Duration>,
    pub refusals: Refusals,
    /// Cancelled when the gateway starts to stop: streams take no more calls.
    pub stopping: CancellationToken,
    /// Where callers on this host hand over segments, if it could be opened.
    pub door: Option<Arc<Door>>,
}

/// The response header that suggests a stream's window (calls in flight).
pub const WINDOW_HEADER: &str = "mystic-window";
/// The request header of a stream that bounds each of its calls, in
/// `grpc-timeout`'s format.
pub const CALL_TIMEOUT_HEADER: &str = "mystic-call-timeout";

/// How many results a stream buffers for tonic before its task waits.
const STREAM_RESPONSES_BUFFERED: usize = 2;

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let arrival = request.extensions().get::<Arrival>().copied();
        let deadline = call_deadline(request.metadata(), arrival, self.call_timeout);
        // The unary calls of one connection share one part of the results
        // budget: past it, those not started wait until it reads.
        let share = request.extensions().get::<ConnectionInfo>().map(|info| {
            let owned = info.unary_share.get_or_init(|| self.pool.share());
            Arc::clone(owned.share())
        });
        let payload = request.into_inner().payload;
        let submitted = match parse_call(payload, self.max_payload_bytes, self.door.as_deref()) {
            Ok((request, segments)) => self.functions.resolve(request).await.and_then(|call| {
                let call = call.with_segments(segments);
                // Kept only once queued: a refused call leaves nothing behind.
                let kept = call.clone();
                let pending = self.pool.submit(call, deadline, share.as_ref())?;
                self.functions.keep(&kept);
                Ok(pending)
            }),
            Err(err) => Err(err),
        };
        let pending = submitted.map_err(|err| self.refusals.refuse(err))?;
        let Delivery {
            payload,
            undelivered,
        } = pending.outcome().await.map_err(|err| match err {
            // The one refusal decided after the call was queued.
            GatewayError::QueueWait(_) => self.refusals.refuse(err),
            other => other.into(),
        })?;
        let mut response = Response::new(pb::ExecuteResponse { payload });
        // Counted until HTTP/2 has taken it (`delivery.rs`).
        response
            .extensions_mut()
            .insert(UnaryResult(Arc::new(undelivered)));
        Ok(response)
    }

    type ExecuteStreamStream = Delivering<Result<pb::StreamResponse, Status>>;

    async fn execute_stream(
        &self,
        request: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let arrival = request.extensions().get::<Arrival>().copied();
        let metadata = request.metadata();
        let per_call = match (
            self.call_timeout,
            timeout_header(metadata, CALL_TIMEOUT_HEADER),
        ) {
            (Some(server), Some(client)) => Some(server.min(client)),
            (server, client) => server.or(client),
        };
        let context = StreamContext {
            pool: self.pool.clone(),
            functions: Arc::clone(&self.functions),
            refusals: self.refusals.clone(),
            max_payload_bytes: self.max_payload_bytes,
            deadline: client_deadline(metadata, arrival),
            per_call,
            stopping: self.stopping.clone(),
            door: self.door.clone(),
        };
        let (out, responses) = tokio::sync::mpsc::channel(STREAM_RESPONSES_BUFFERED);
        tokio::spawn(stream::serve_stream(context, request.into_inner(), out));
        let mut response = Response::new(Delivering::new(responses));
        let window = stream::suggested_window(self.pool.workers().len());
        response
            .metadata_mut()
            .insert(WINDOW_HEADER, window.to_string().parse().expect("digits"));
        Ok(response)
    }

    async fn get_workers(
        &self,
        _request: Request<pb::GetWorkersRequest>,
    ) -> Result<Response<pb::GetWorkersResponse>, Status> {
        let slots = self.pool.workers();
        let ready = slots.iter().filter(|slot| slot.state.serves()).count();
        let workers: Vec<pb::WorkerInfo> = slots.into_iter().map(worker_info).collect();
        Ok(Response::new(pb::GetWorkersResponse {
            count: u32::try_from(workers.len()).unwrap_or(u32::MAX),
            transport: self.transport.as_str().to_owned(),
            workers,
            ready: u32::try_from(ready).unwrap_or(u32::MAX),
            segment_socket: self
                .door
                .as_ref()
                .map(|door| door.name().to_owned())
                .unwrap_or_default(),
        }))
    }
}

fn worker_info(slot: WorkerSnapshot) -> pb::WorkerInfo {
    let state = match slot.state {
        WorkerState::Starting => pb::WorkerState::Starting,
        WorkerState::Idle => pb::WorkerState::Idle,
        WorkerState::Busy => pb::WorkerState::Busy,
        WorkerState::Restarting => pb::WorkerState::Restarting,
        WorkerState::Stopped => pb::WorkerState::Stopped,
    };
    pb::WorkerInfo {
        index: u32::try_from(slot.index).unwrap_or(u32::MAX),
        pid: slot.pid.unwrap_or(0),
        state: state.into(),
        calls_served: slot.calls_served,
        restarts: slot.restarts,
        recycled: slot.recycled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(payload: Bytes) -> pb::ExecuteRequest {
        pb::ExecuteRequest { payload }
    }

    #[test]
    fn requests_must_be_encoded_calls() {
        let call = functions::encode::attached(b"f", b"args");
        assert!(parse_request(request(call), 100).is_ok());
        for bad in [&b""[..], b"MCQ", b"XXXX1234", b"mcq2abc"] {
            let err = parse_request(request(Bytes::from_static(bad)), 100).unwrap_err();
            assert_eq!(err, GatewayError::InvalidRequest);
        }
    }

    #[test]
    fn requests_over_the_limit_are_refused_first() {
        let err = parse_request(request(Bytes::from_static(b"MCQ2 too long")), 8).unwrap_err();
        assert_eq!(
            err,
            GatewayError::PayloadTooLarge {
                direction: Direction::Request,
                size: 13,
                limit: 8
            }
        );
    }
}
