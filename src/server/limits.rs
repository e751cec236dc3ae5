//! Keeps the payload-limit contract for messages tonic refuses by itself.
//!
//! tonic refuses a request over its decoding limit with `OUT_OF_RANGE` before
//! our handler sees it; the contract says `RESOURCE_EXHAUSTED` with the
//! `payload-too-large` kind. This response hook rewrites exactly that status.
//! (A passed `grpc-timeout` is answered by `deadline.rs`'s layer, through
//! the same mapping, if the pool has not answered first.)

use super::refusals::Refusals;
use crate::error::{Direction, GatewayError};

/// tonic's message for a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";
/// Rewrites tonic's own "message too large" status into the gateway's,
/// refused through `refusals`.
pub fn rewrite_oversized_request<B>(
    limit: usize,
    refusals: Refusals,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |mut response| {
        let Some(status) = tonic::Status::from_header_map(response.headers()) else {
            return response;
        };
        if status.code() != tonic::Code::OutOfRange {
            return response;
        }
        let Some(size) = status
            .message()
            .strip_prefix(TONIC_TOO_LARGE)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|size| size.parse().ok())
        else {
            return response;
        };
        let err = GatewayError::PayloadTooLarge {
            direction: Direction::Request,
            size,
            limit,
        };
        replace(&mut response, refusals.refuse(err));
        response
    }
}

fn replace<B>(response: &mut http::Response<B>, replacement: tonic::Status) {
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if replacement.add_header(headers).is_err() {
        tracing::warn!("could not rewrite an oversized-request status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with(status: tonic::Status) -> http::Response<()> {
        status.into_http()
    }

    fn refusals() -> Refusals {
        Refusals::new(std::sync::Arc::new(crate::metrics::Metrics::new(1, "pipe")))
    }

    #[test]
    fn tonic_too_large_becomes_resource_exhausted() {
        let original = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1064 bytes",
        );
        let rewritten = rewrite_oversized_request(1000, refusals())(response_with(original));
        let status = tonic::Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("2000 bytes"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("1000 bytes"),
            "{}",
            status.message()
        );
        assert_eq!(
            rewritten.headers().get("mystic-error").unwrap(),
            "payload-too-large"
        );
    }

    #[test]
    fn other_statuses_pass_untouched() {
        let original = tonic::Status::out_of_range("something else");
        let rewritten = rewrite_oversized_request(1000, refusals())(response_with(original));
        let status = tonic::Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert_eq!(status.message(), "something else");
        let ok = rewrite_oversized_request(1000, refusals())(http::Response::new(()));
        assert!(ok.headers().is_empty());
    }
}
