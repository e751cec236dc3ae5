//! The client's calls: `Execute`, `GetWorkers` and `ExecuteStream`, sent
//! with tonic's generated client over the target's connections, bounded
//! by the call's deadline (sent to the gateway as `grpc-timeout` and kept
//! here too, so that a gateway that never answers cannot hold the caller).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use super::dial::{Sender, Tls};
use super::failure::CallFailure;
use super::gateway::Gateway;
use super::target::{Link, Target};
use crate::pb::gateway_client::GatewayClient;
use crate::pb::{
    ExecuteRequest, GetWorkersRequest, GetWorkersResponse, StreamRequest, StreamResponse,
};
use crate::server::service::WINDOW_HEADER;

/// Responses read ahead of a stream's reader: a few, so that the gateway
/// waits (HTTP/2 flow control) for a reader that does not read.
const STREAM_READ_AHEAD: usize = 4;

/// What each call carries besides its message: metadata (the token, a
/// stream's call timeout) and a deadline.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    metadata: MetadataMap,
    timeout: Option<Duration>,
}

impl CallOptions {
    /// `pairs` as ASCII metadata; `timeout` for the whole call.
    pub fn new(
        pairs: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<CallOptions, CallFailure> {
        let mut metadata = MetadataMap::with_capacity(pairs.len());
        for (key, value) in pairs {
            let key: AsciiMetadataKey = key
                .parse()
                .map_err(|_| CallFailure::invalid(format!("{key:?} is not a metadata key")))?;
            let value: AsciiMetadataValue = value.parse().map_err(|_| {
                CallFailure::invalid(format!("the value of metadata {key} is not a header value"))
            })?;
            metadata.append(key, value);
        }
        Ok(CallOptions { metadata, timeout })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        request
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|timeout| Instant::now() + timeout)
    }
}

/// Runs `work` until `deadline`, if any.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, CallFailure>>,
) -> Result<T, CallFailure> {
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(CallFailure::deadline_exceeded())),
    }
}

/// One call: runs `payload` (a request in the wire format) and returns the
/// response's payload.
pub async fn execute(
    target: &Target,
    payload: Bytes,
    options: &CallOptions,
) -> Result<Bytes, CallFailure> {
    within(options.deadline(), async {
        let mut client = client(target).await?;
        let response = client
            .execute(options.request(ExecuteRequest { payload }))
            .await
            .map_err(|status| CallFailure::from_status(&status))?;
        Ok(response.into_inner().payload)
    })
    .await
}

/// The gateway's workers.
pub async fn get_workers(
    target: &Target,
    options: &CallOptions,
) -> Result<GetWorkersResponse, CallFailure> {
    within(options.deadline(), async {
        let mut client = client(target).await?;
        let response = client
            .get_workers(options.request(GetWorkersRequest {}))
            .await
            .map_err(|status| CallFailure::from_status(&status))?;
        Ok(response.into_inner())
    })
    .await
}

/// An open `ExecuteStream`, in two halves that can be used apart: calls
/// go out through `sender`, results come in through `receiver`. Dropping
/// the receiver cancels the stream.
pub struct CallStream {
    pub sender: StreamSender,
    pub receiver: StreamReceiver,
    /// The gateway's suggested window (`mystic-window`), if it sent one.
    pub window: Option<u32>,
}

/// The sending half of a stream.
pub struct StreamSender(Option<mpsc::UnboundedSender<StreamRequest>>);

impl StreamSender {
    /// Sends a message of calls; false once the stream has ended.
    pub fn send(&self, message: StreamRequest) -> bool {
        self.0
            .as_ref()
            .is_some_and(|outbox| outbox.send(message).is_ok())
    }

    /// Tells the gateway that no more calls come.
    pub fn finish(&mut self) {
        self.0 = None;
    }
}

/// The receiving half of a stream.
pub struct StreamReceiver {
    inbox: mpsc::Receiver<Result<StreamResponse, CallFailure>>,
    reader: AbortHandle,
}

impl StreamReceiver {
    /// The next response; `None` once the gateway ended the stream.
    pub async fn receive(&mut self) -> Option<Result<StreamResponse, CallFailure>> {
        self.inbox.recv().await
    }

    /// What cancels the stream from elsewhere (a receive may be waiting).
    pub fn canceller(&self) -> AbortHandle {
        self.reader.clone()
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens a stream; returns once the gateway sent its headers.
pub async fn open_stream(
    target: &Target,
    options: &CallOptions,
) -> Result<CallStream, CallFailure> {
    let deadline = options.deadline();
    let (outbox, requests) = mpsc::unbounded_channel();
    let response = within(deadline, async {
        let mut client = client(target).await?;
        let request = options.request(UnboundedReceiverStream::new(requests));
        client
            .execute_stream(request)
            .await
            .map_err(|status| CallFailure::from_status(&status))
    })
    .await?;
    let window = response
        .metadata()
        .get(WINDOW_HEADER)
        .and_then(|value| value.to_str().ok()?.parse().ok());
    let mut responses = response.into_inner();
    let (results, inbox) = mpsc::channel(STREAM_READ_AHEAD);
    let reader = tokio::spawn(async move {
        loop {
            let next = within(deadline, async {
                responses
                    .message()
                    .await
                    .map_err(|status| CallFailure::from_status(&status))
            });
            let event = match next.await {
                Ok(Some(message)) => Ok(message),
                Ok(None) => return,
                Err(failure) => Err(failure),
            };
            let failed = event.is_err();
            if results.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(CallStream {
        sender: StreamSender(Some(outbox)),
        receiver: StreamReceiver {
            inbox,
            reader: reader.abort_handle(),
        },
        window,
    })
}

async fn client(target: &Target) -> Result<GatewayClient<Connection>, CallFailure> {
    let Link { sender, gateway } = target.connection().await?;
    let connection = Connection {
        sender,
        gateway,
        tls: target.tls().cloned(),
    };
    Ok(
        GatewayClient::with_origin(connection, target.origin().clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
}

/// A connection as the tower service tonic's client sends through. A
/// request the connection could not take because it had closed (the
/// gateway ended it: idle, or unanswered pings while no call drove it) is
/// sent once more on a new connection to the same gateway: it was never
/// sent. Other failures (the connection closed or broke under the call)
/// are `UNAVAILABLE`, as gRPC reports a lost connection; tonic passes a
/// `Status` through as it is.
#[derive(Clone)]
struct Connection {
    sender: Sender,
    gateway: Arc<Gateway>,
    tls: Option<Tls>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, Status>> + Send>>;

fn lost(error: hyper::Error) -> Status {
    Status::unavailable(format!("the connection to the gateway failed: {error}"))
}

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // HTTP/2 multiplexes: a closed connection is found in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> ResponseFuture {
        let first = self.sender.try_send_request(request);
        let gateway = Arc::clone(&self.gateway);
        let tls = self.tls.clone();
        Box::pin(async move {
            let mut refused = match first.await {
                Ok(response) => return Ok(response),
                Err(refused) => refused,
            };
            let Some(request) = refused.take_message() else {
                return Err(lost(refused.into_error()));
            };
            let mut sender = gateway
                .connection(tls.as_ref())
                .await
                .map_err(|failure| Status::unavailable(failure.message))?;
            sender.send_request(request).await.map_err(lost)
        })
    }
}
