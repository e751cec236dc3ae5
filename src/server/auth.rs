//! Who may call: the bearer-token check in front of the gateway service.
//!
//! With `--auth-token-file`, every `Execute` and `GetWorkers` call must carry
//! `authorization: Bearer <token>`; the comparison takes the same time
//! wherever the presented token first differs (`subtle`). The health service
//! stays open: it says only whether the gateway is serving.

use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use crate::error::GatewayError;
use crate::metrics::Metrics;

/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";
const BEARER: &[u8] = b"Bearer ";

/// A tonic interceptor that lets a call through only with the right token
/// (or always, when the gateway runs without one).
#[derive(Debug, Clone)]
pub struct TokenCheck {
    expected: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
}

impl TokenCheck {
    /// Checks against `expected`; refusals are counted in `metrics`.
    pub fn new(expected: Option<Vec<u8>>, metrics: Arc<Metrics>) -> Self {
        TokenCheck {
            expected: expected.map(Arc::from),
            metrics,
        }
    }

    fn allows(&self, request: &Request<()>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(BEARER))
            .is_some_and(|presented| bool::from(presented.ct_eq(expected)))
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.allows(&request) {
            return Ok(request);
        }
        let err = GatewayError::Unauthenticated;
        self.metrics.rejected(&err);
        Err(err.into())
    }
}

/// Reads a token file: its content without surrounding whitespace.
pub fn read_token(text: &str) -> Option<Vec<u8>> {
    let token = text.trim();
    (!token.is_empty()).then(|| token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    fn request(authorization: Option<&'static str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, value.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let metrics = Arc::new(Metrics::new(1, "pipe"));
        let mut check = TokenCheck::new(read_token("s3cret\n"), Arc::clone(&metrics));
        assert!(check.call(request(Some("Bearer s3cret"))).is_ok());
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            let status = check.call(request(wrong)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        }
        assert!(
            metrics
                .render(0, 0)
                .contains(r#"mystic_rejected_calls_total{reason="unauthenticated"} 4"#)
        );
    }

    #[test]
    fn without_a_token_every_call_passes_and_blank_files_hold_none() {
        let mut check = TokenCheck::new(None, Arc::new(Metrics::new(1, "pipe")));
        assert!(check.call(request(None)).is_ok());
        assert_eq!(read_token(" \n"), None);
    }
}
