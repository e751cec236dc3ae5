//! The `mysticchallenge.v1.Gateway` gRPC service: thin handlers. A call of
//! either RPC is admitted through the one path (`admission.rs`: parsed,
//! its segments claimed, its function resolved, queued); each handler does
//! only what is its own: `Execute` its deadline, its connection's share and
//! its status (a refusal counted once, `refusals.rs`); `ExecuteStream` the
//! stream's deadlines and window, then its task (`stream.rs`); `GetWorkers`
//! the pool's status board.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::admission::{Admission, Admitted};
use super::connections::ConnectionInfo;
use super::deadline::{Arrival, call_deadline, client_deadline, timeout_header};
use super::delivery::{Delivering, UnaryResult};
use super::refusals::Refusals;
use super::stream::{self, StreamContext};
use crate::error::GatewayError;
use crate::pb;
use crate::pool::{Delivery, WorkerSnapshot, WorkerState};
use crate::transport::TransportKind;

/// The gateway's gRPC API.
#[derive(Debug)]
pub struct GatewayService {
    /// The pool, the function cache, the door and the payload limit.
    pub admission: Admission,
    pub transport: TransportKind,
    pub call_timeout: Option<Duration>,
    pub refusals: Refusals,
    /// Cancelled when the gateway starts to stop: streams take no more calls.
    pub stopping: CancellationToken,
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
            let owned = info.unary_share.get_or_init(|| self.admission.pool.share());
            Arc::clone(owned.share())
        });
        let since = arrival.map(|arrival| arrival.0);
        crate::hops::hop("received", since);
        let payload = request.into_inner().payload;
        // One response (no items), and no functions held but the cache's.
        let admitted = self
            .admission
            .admit(payload, deadline, false, share.as_ref(), None)
            .await;
        let Admitted { call: pending, .. } = admitted.map_err(|err| self.refusals.refuse(err))?;
        crate::hops::hop("queued", since);
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
        crate::hops::hop("returned", since);
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
            admission: self.admission.clone(),
            refusals: self.refusals.clone(),
            deadline: client_deadline(metadata, arrival),
            per_call,
            stopping: self.stopping.clone(),
        };
        let (out, responses) = tokio::sync::mpsc::channel(STREAM_RESPONSES_BUFFERED);
        tokio::spawn(stream::serve_stream(context, request.into_inner(), out));
        let mut response = Response::new(Delivering::new(responses));
        let window = stream::suggested_window(self.admission.pool.workers().len());
        response
            .metadata_mut()
            .insert(WINDOW_HEADER, window.to_string().parse().expect("digits"));
        Ok(response)
    }

    async fn get_workers(
        &self,
        _request: Request<pb::GetWorkersRequest>,
    ) -> Result<Response<pb::GetWorkersResponse>, Status> {
        let slots = self.admission.pool.workers();
        let ready = slots.iter().filter(|slot| slot.state.serves()).count();
        let workers: Vec<pb::WorkerInfo> = slots.into_iter().map(worker_info).collect();
        Ok(Response::new(pb::GetWorkersResponse {
            count: u32::try_from(workers.len()).unwrap_or(u32::MAX),
            transport: self.transport.as_str().to_owned(),
            workers,
            ready: u32::try_from(ready).unwrap_or(u32::MAX),
            segment_socket: self
                .admission
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
