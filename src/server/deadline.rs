//! A call's deadline: the client's `grpc-timeout` header and the gateway's
//! `--call-timeout`, whichever ends first (for a call of a stream, also the
//! stream's `mystic-call-timeout`, see `stream.rs`).
//!
//! The server enforces the client's `grpc-timeout` too, as tonic's own
//! server does ([`ClientDeadlineLayer`]): from when the request's headers
//! arrived, it answers `DEADLINE_EXCEEDED` (`call-timeout`) once the
//! deadline passes, whatever held the call (a request still arriving, say),
//! even if the client never cancels. So the client's budget counts from the request's [`Arrival`]
//! (stamped as the headers come in) and, for the pool, ends
//! [`AHEAD_OF_CUTOFF`] early: the pool answers first, with
//! `DEADLINE_EXCEEDED` and `call-timeout`, and replaces the worker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;
use tonic::metadata::MetadataMap;

use crate::error::GatewayError;
use crate::pool::Deadline;

/// How much sooner than [`ClientDeadlineLayer`] the pool gives up on a
/// client's deadline.
pub const AHEAD_OF_CUTOFF: Duration = Duration::from_millis(20);

/// The header a client's deadline travels in.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When a request's headers arrived (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// The deadline of a call that arrived at `arrival`, if it has one.
pub fn call_deadline(
    metadata: &MetadataMap,
    arrival: Option<Arrival>,
    call_timeout: Option<Duration>,
) -> Option<Deadline> {
    earliest(
        client_deadline(metadata, arrival),
        call_timeout.map(Deadline::after),
    )
}

/// The client's own deadline (`grpc-timeout`) of a request that arrived at
/// `arrival`, ending [`AHEAD_OF_CUTOFF`] early.
pub fn client_deadline(metadata: &MetadataMap, arrival: Option<Arrival>) -> Option<Deadline> {
    let arrived = arrived(arrival);
    timeout_header(metadata, GRPC_TIMEOUT).map(|budget| Deadline {
        at: arrived + budget - AHEAD_OF_CUTOFF.min(budget / 2),
        budget,
    })
}

fn arrived(arrival: Option<Arrival>) -> Instant {
    arrival.map_or_else(Instant::now, |Arrival(at)| at)
}

/// A duration in `grpc-timeout`'s format under `key`, if there is a valid one.
pub fn timeout_header(metadata: &MetadataMap, key: &str) -> Option<Duration> {
    metadata
        .get(key)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// The deadline that ends first.
pub fn earliest(one: Option<Deadline>, other: Option<Deadline>) -> Option<Deadline> {
    match (one, other) {
        (Some(one), Some(other)) => Some(if one.at <= other.at { one } else { other }),
        (one, other) => one.or(other),
    }
}

/// A tower layer that answers `DEADLINE_EXCEEDED` for a call whose
/// response is not ready at its client's deadline (counted from its
/// [`Arrival`]), as tonic's server answers `CANCELLED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientDeadlineLayer;

impl<S> tower::Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> ClientDeadline<S> {
        ClientDeadline { inner }
    }
}

/// The service [`ClientDeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct ClientDeadline<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ClientDeadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let budget = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let arrival = arrived(request.extensions().get().copied());
        let response = self.inner.call(request);
        let Some(budget) = budget else {
            return Box::pin(response);
        };
        Box::pin(async move {
            match tokio::time::timeout_at(arrival + budget, response).await {
                Ok(response) => response,
                Err(_elapsed) => {
                    let status: tonic::Status = GatewayError::Timeout(budget).into();
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("999m"), Some(Duration::from_millis(999)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("8n"), Some(Duration::from_nanos(8)));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S", "5ΩS"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_shorter_budget_wins_and_the_clients_ends_ahead_of_the_cutoff() {
        let left = |deadline: Option<Deadline>| deadline.unwrap().at - Instant::now();
        let mut metadata = MetadataMap::new();
        assert!(call_deadline(&metadata, None, None).is_none());
        let server = Some(Duration::from_secs(10));
        assert_eq!(
            call_deadline(&metadata, None, server).unwrap().budget,
            Duration::from_secs(10)
        );
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        let client = call_deadline(&metadata, None, server).unwrap();
        assert_eq!(client.budget, Duration::from_millis(1500));
        assert_eq!(
            left(Some(client)),
            Duration::from_millis(1500) - AHEAD_OF_CUTOFF
        );
        let shorter = call_deadline(&metadata, None, Some(Duration::from_secs(1)));
        assert_eq!(shorter.unwrap().budget, Duration::from_secs(1));
        // Counted from the arrival of the headers.
        let arrival = Arrival(Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            left(call_deadline(&metadata, Some(arrival), server)),
            Duration::from_millis(1000) - AHEAD_OF_CUTOFF
        );
        // A tiny budget keeps half of itself.
        metadata.insert("grpc-timeout", "10m".parse().unwrap());
        assert_eq!(
            left(call_deadline(&metadata, None, None)),
            Duration::from_millis(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_unanswered_at_its_clients_deadline_is_cancelled() {
        use tower::{Layer as _, ServiceExt as _};

        let never = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<Body>, std::convert::Infallible>>()
        });
        let service = ClientDeadlineLayer.layer(never);
        let request = |timeout: Option<&str>| {
            let mut request = http::Request::new(());
            if let Some(timeout) = timeout {
                request
                    .headers_mut()
                    .insert(GRPC_TIMEOUT, timeout.parse().unwrap());
            }
            // It arrived half a second ago.
            request
                .extensions_mut()
                .insert(Arrival(Instant::now() - Duration::from_millis(500)));
            request
        };
        let started = Instant::now();
        let response = service.clone().oneshot(request(Some("2S"))).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            response.headers().get("mystic-error").unwrap(),
            "call-timeout"
        );
        // Without a deadline, it waits as long as the call does.
        let waiting =
            tokio::time::timeout(Duration::from_secs(3600), service.oneshot(request(None)));
        assert!(waiting.await.is_err());
    }
}
