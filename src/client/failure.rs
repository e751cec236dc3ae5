//! Why a call failed, as the client's exception table reads it: a gRPC
//! status code, its message, and the gateway's `mystic-error` word. Every
//! failure the client meets ends up here: statuses the gateway sent, and
//! what happened on the way (no connection, a connection lost, the call's
//! deadline).

use tonic::{Code, Status};

use crate::error::ERROR_KIND_KEY;

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallFailure {
    /// The gRPC status code (`tonic::Code` as its number).
    pub code: i32,
    pub message: String,
    /// The gateway's `mystic-error` trailer, when it sent one.
    pub kind: Option<String>,
}

impl CallFailure {
    /// The failure a status carries. A status tonic made of a transport
    /// error (the connection broke under the call) is `UNAVAILABLE`, as
    /// gRPC reports a lost connection.
    pub fn from_status(status: &Status) -> CallFailure {
        let kind = status
            .metadata()
            .get(ERROR_KIND_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let transport = kind.is_none()
            && status.code() == Code::Unknown
            && std::error::Error::source(status).is_some();
        let code = if transport {
            Code::Unavailable
        } else {
            status.code()
        };
        let message = if status.message().is_empty() {
            code.description().to_owned()
        } else {
            status.message().to_owned()
        };
        CallFailure {
            code: code as i32,
            message,
            kind,
        }
    }

    /// No connection to a gateway could be made.
    pub fn unavailable(message: impl Into<String>) -> CallFailure {
        CallFailure {
            code: Code::Unavailable as i32,
            message: message.into(),
            kind: None,
        }
    }

    /// The call's deadline passed here, before the gateway said anything.
    pub fn deadline_exceeded() -> CallFailure {
        CallFailure {
            code: Code::DeadlineExceeded as i32,
            message: "Deadline Exceeded".to_owned(),
            kind: None,
        }
    }

    /// A request the client cannot send as given (a metadata value that
    /// is not a header's).
    pub fn invalid(message: impl Into<String>) -> CallFailure {
        CallFailure {
            code: Code::InvalidArgument as i32,
            message: message.into(),
            kind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_keeps_its_code_and_the_gateways_word() {
        let mut status = Status::resource_exhausted("the queue is full");
        status
            .metadata_mut()
            .insert(ERROR_KIND_KEY, "queue-full".parse().unwrap());
        let failure = CallFailure::from_status(&status);
        assert_eq!(failure.code, Code::ResourceExhausted as i32);
        assert_eq!(failure.message, "the queue is full");
        assert_eq!(failure.kind.as_deref(), Some("queue-full"));
    }

    #[test]
    fn a_transport_error_under_the_call_is_unavailable() {
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(broken));
        assert_eq!(status.code(), Code::Unknown);
        let failure = CallFailure::from_status(&status);
        assert_eq!(failure.code, Code::Unavailable as i32);
        assert_eq!(failure.kind, None);
    }
}
