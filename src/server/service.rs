//! The `mysticchallenge.v1.Gateway` gRPC service: thin handlers that validate
//! a request, hand it to the pool and map the outcome to a status.

use std::time::Duration;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::deadline::{Arrival, call_deadline};
use super::refusals::Refusals;
use crate::error::{Direction, GatewayError};
use crate::pb;
use crate::pool::{Pool, WorkerSnapshot, WorkerState};
use crate::transport::TransportKind;

/// Every encoded call starts with these bytes (see `mystic_wire/_codec.py`).
pub const REQUEST_MAGIC: &[u8] = b"MCQ1";

/// A request that passed validation.
#[derive(Debug)]
pub struct CallRequest {
    pub payload: Bytes,
}

impl CallRequest {
    /// Checks an `ExecuteRequest` against the payload limit and the codec's magic.
    pub fn parse(request: pb::ExecuteRequest, limit: usize) -> Result<Self, GatewayError> {
        let payload = request.payload;
        if payload.len() > limit {
            return Err(GatewayError::PayloadTooLarge {
                direction: Direction::Request,
                size: payload.len(),
                limit,
            });
        }
        if !payload.starts_with(REQUEST_MAGIC) {
            return Err(GatewayError::InvalidRequest);
        }
        Ok(CallRequest { payload })
    }
}

/// The gateway's gRPC API.
#[derive(Debug)]
pub struct GatewayService {
    pub pool: Pool,
    pub transport: TransportKind,
    pub max_payload_bytes: usize,
    pub call_timeout: Option<Duration>,
    pub refusals: Refusals,
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let arrival = request.extensions().get::<Arrival>().copied();
        let deadline = call_deadline(request.metadata(), arrival, self.call_timeout);
        let pending = CallRequest::parse(request.into_inner(), self.max_payload_bytes)
            .and_then(|call| self.pool.submit(call.payload, deadline))
            .map_err(|err| self.refusals.refuse(err))?;
        let payload = pending.outcome().await.map_err(|err| match err {
            // The one refusal decided after the call was queued.
            GatewayError::QueueWait(_) => self.refusals.refuse(err),
            other => other.into(),
        })?;
        Ok(Response::new(pb::ExecuteResponse { payload }))
    }

    async fn get_workers(
        &self,
        _request: Request<pb::GetWorkersRequest>,
    ) -> Result<Response<pb::GetWorkersResponse>, Status> {
        let workers: Vec<pb::WorkerInfo> =
            self.pool.workers().into_iter().map(worker_info).collect();
        Ok(Response::new(pb::GetWorkersResponse {
            count: u32::try_from(workers.len()).unwrap_or(u32::MAX),
            transport: self.transport.as_str().to_owned(),
            workers,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payload: &'static [u8]) -> pb::ExecuteRequest {
        pb::ExecuteRequest {
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn requests_need_the_magic() {
        assert!(CallRequest::parse(request(b"MCQ1rest"), 100).is_ok());
        assert!(CallRequest::parse(request(b"MCQ1"), 100).is_ok());
        for bad in [&b""[..], b"MCQ", b"XXXX1234", b"mcq1abc"] {
            let payload = Bytes::from_static(bad);
            let err = CallRequest::parse(pb::ExecuteRequest { payload }, 100).unwrap_err();
            assert_eq!(err, GatewayError::InvalidRequest);
        }
    }

    #[test]
    fn requests_over_the_limit_are_refused_first() {
        let err = CallRequest::parse(request(b"MCQ1 too long"), 8).unwrap_err();
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
