//! [`GatewayError`], every way a call can fail inside the gateway, its
//! [`ErrorKind`] (one word per case, used for the `mystic-error` metadata and
//! for metric labels alike), and the one place where those failures become
//! gRPC statuses.
//!
//! Each status also carries the trailing metadata key [`ERROR_KIND_KEY`] so
//! that clients can tell apart failures that share a code (a full queue and an
//! oversized payload are both `RESOURCE_EXHAUSTED`).

use std::time::Duration;

use tonic::{Code, Status};

/// Metadata key naming the kind of a gateway failure.
pub const ERROR_KIND_KEY: &str = "mystic-error";

/// Which side of a call a payload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Response => "response",
        })
    }
}

/// A call that the gateway could not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error(
        "the request payload is not an encoded call (bad magic); send calls with the distribute_challenge client"
    )]
    InvalidRequest,

    #[error(
        "the request's attached function does not have the digest its call names; send calls with the distribute_challenge client"
    )]
    FunctionMismatch,

    #[error(
        "the gateway does not hold the function this call names by digest (it restarted or evicted it); send the call again with the function attached (the distribute_challenge client does so by itself)"
    )]
    FunctionUnknown,

    #[error(
        "the {direction} payload is {size} bytes, over the gateway's limit of {limit} bytes; send less data per call or raise --max-payload-bytes"
    )]
    PayloadTooLarge {
        direction: Direction,
        size: usize,
        limit: usize,
    },

    #[error(
        "the gateway's queue is full ({capacity} calls waiting for a worker); retry later or start the gateway with more --workers"
    )]
    QueueFull { capacity: usize },

    #[error(
        "the gateway's queue holds {queued} payload bytes and this call's {size} would pass its limit of {limit}; retry later or raise --queue-max-bytes"
    )]
    QueueBytesFull {
        queued: usize,
        size: usize,
        limit: usize,
    },

    #[error(
        "the gateway is receiving {receiving} bytes of other requests and this one's {size} would pass its limit of {limit}; retry later or raise --max-receiving-bytes"
    )]
    ReceivingFull {
        receiving: usize,
        size: usize,
        limit: usize,
    },

    #[error(
        "no worker was free within --max-queue-wait ({}s); nothing ran: retry, or send the call to another gateway", .0.as_secs_f64()
    )]
    QueueWait(Duration),

    #[error(
        "the call ran longer than its {}s deadline; its worker was stopped and replaced", .0.as_secs_f64()
    )]
    Timeout(Duration),

    #[error(
        "worker {worker} (pid {pid}) died during the call: {cause}; the worker was restarted, the call was not retried"
    )]
    WorkerCrashed {
        worker: usize,
        pid: u32,
        cause: String,
    },

    #[error("the gateway is shutting down; retry against a running gateway")]
    ShuttingDown,

    #[error("the call has no valid token (`authorization: Bearer <token>` is missing or wrong)")]
    Unauthenticated,

    #[error(
        "the gateway holds no shared-memory session or segment by the name this call gives (the caller's connection to it closed, or the gateway restarted); send the call again inline (the distribute_challenge client does so by itself)"
    )]
    SegmentUnknown,
}

/// What kind of failure a [`GatewayError`] is: the word clients read in the
/// `mystic-error` metadata and dashboards read in metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    FunctionUnknown,
    PayloadTooLarge,
    QueueFull,
    QueueWait,
    CallTimeout,
    WorkerCrashed,
    Unavailable,
    Unauthenticated,
    SegmentUnknown,
}

impl ErrorKind {
    /// The kind's one spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid-request",
            ErrorKind::FunctionUnknown => "function-unknown",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::QueueFull => "queue-full",
            ErrorKind::QueueWait => "queue-wait",
            ErrorKind::CallTimeout => "call-timeout",
            ErrorKind::WorkerCrashed => "worker-crashed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::SegmentUnknown => "segment-unknown",
        }
    }

    /// The gRPC status code failures of this kind are sent with.
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidRequest => Code::InvalidArgument,
            ErrorKind::FunctionUnknown | ErrorKind::SegmentUnknown => Code::FailedPrecondition,
            ErrorKind::PayloadTooLarge | ErrorKind::QueueFull | ErrorKind::QueueWait => {
                Code::ResourceExhausted
            }
            ErrorKind::CallTimeout => Code::DeadlineExceeded,
            ErrorKind::WorkerCrashed => Code::Aborted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
        }
    }
}

impl GatewayError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::InvalidRequest | GatewayError::FunctionMismatch => {
                ErrorKind::InvalidRequest
            }
            GatewayError::FunctionUnknown => ErrorKind::FunctionUnknown,
            GatewayError::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            GatewayError::QueueFull { .. }
            | GatewayError::QueueBytesFull { .. }
            | GatewayError::ReceivingFull { .. } => ErrorKind::QueueFull,
            GatewayError::QueueWait(_) => ErrorKind::QueueWait,
            GatewayError::Timeout(_) => ErrorKind::CallTimeout,
            GatewayError::WorkerCrashed { .. } => ErrorKind::WorkerCrashed,
            GatewayError::ShuttingDown => ErrorKind::Unavailable,
            GatewayError::Unauthenticated => ErrorKind::Unauthenticated,
            GatewayError::SegmentUnknown => ErrorKind::SegmentUnknown,
        }
    }
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        let kind = err.kind();
        let mut status = Status::new(kind.code(), err.to_string());
        status.metadata_mut().insert(
            ERROR_KIND_KEY,
            tonic::metadata::MetadataValue::from_static(kind.as_str()),
        );
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_code_and_kind() {
        let cases = [
            (
                GatewayError::InvalidRequest,
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                GatewayError::PayloadTooLarge {
                    direction: Direction::Request,
                    size: 2,
                    limit: 1,
                },
                Code::ResourceExhausted,
                "payload-too-large",
            ),
            (
                GatewayError::QueueFull { capacity: 1 },
                Code::ResourceExhausted,
                "queue-full",
            ),
            (
                GatewayError::QueueWait(Duration::from_millis(100)),
                Code::ResourceExhausted,
                "queue-wait",
            ),
            (
                GatewayError::Timeout(Duration::from_secs(1)),
                Code::DeadlineExceeded,
                "call-timeout",
            ),
            (
                GatewayError::WorkerCrashed {
                    worker: 0,
                    pid: 1,
                    cause: "exit code 3".into(),
                },
                Code::Aborted,
                "worker-crashed",
            ),
            (GatewayError::ShuttingDown, Code::Unavailable, "unavailable"),
            (
                GatewayError::FunctionUnknown,
                Code::FailedPrecondition,
                "function-unknown",
            ),
            (
                GatewayError::FunctionMismatch,
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                GatewayError::Unauthenticated,
                Code::Unauthenticated,
                "unauthenticated",
            ),
            (
                GatewayError::SegmentUnknown,
                Code::FailedPrecondition,
                "segment-unknown",
            ),
        ];
        for (err, code, kind) in cases {
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert_eq!(status.metadata().get(ERROR_KIND_KEY).unwrap(), kind);
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let err = GatewayError::PayloadTooLarge {
            direction: Direction::Response,
            size: 10,
            limit: 5,
        };
        assert!(err.to_string().contains("--max-payload-bytes"));
        let err = GatewayError::WorkerCrashed {
            worker: 1,
            pid: 42,
            cause: "killed by signal 9 (SIGKILL)".into(),
        };
        assert!(err.to_string().contains("signal 9 (SIGKILL)"));
    }
}
