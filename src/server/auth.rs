//! Who may call: the bearer-token check in front of the gateway service.
//!
//! With `--auth-token-file`, every `Execute` and `GetWorkers` call must carry
//! `authorization: Bearer <token>`. What is compared are the SHA-256 digests
//! of the presented and the expected token, in constant time (`subtle`): the
//! comparison takes the same time whatever the presented token's length and
//! wherever it first differs, so it reveals neither. The health service stays
//! open: it says only whether the gateway is serving.
//!
//! A call let through is admitted on its connection (see `connections.rs`):
//! it keeps the connection in use. A refused call is not, and neither is a
//! health check of a gateway with a token: neither earns a connection its
//! place.

use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use super::connections::Call;
use super::refusals::Refusals;
use crate::error::GatewayError;

/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";
const BEARER: &[u8] = b"Bearer ";

/// A token's SHA-256 digest: what is kept and compared, so that every
/// comparison is of the same length.
type TokenDigest = [u8; SHA256_OUTPUT_LEN];

fn token_digest(token: &[u8]) -> TokenDigest {
    digest(&SHA256, token)
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest")
}

/// A tonic interceptor that lets a call through only with the right token
/// (or always, when the gateway runs without one).
#[derive(Debug, Clone)]
pub struct TokenCheck {
    /// The expected token's digest; the token itself is not kept.
    expected: Option<TokenDigest>,
    refusals: Refusals,
}

impl TokenCheck {
    /// Checks against `expected`; refusals go through `refusals`.
    pub fn new(expected: Option<Vec<u8>>, refusals: Refusals) -> Self {
        TokenCheck {
            expected: expected.as_deref().map(token_digest),
            refusals,
        }
    }

    /// The interceptor in front of the health service.
    pub fn health(&self) -> HealthCheck {
        HealthCheck {
            admits: self.expected.is_none(),
        }
    }

    fn allows(&self, request: &Request<()>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        // A missing or malformed header is compared too (as an empty
        // token): every refusal costs the same.
        let presented = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(BEARER));
        let matches = token_digest(presented.unwrap_or_default()).ct_eq(expected);
        presented.is_some() && bool::from(matches)
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.allows(&request) {
            admit(&request);
            return Ok(request);
        }
        Err(self.refusals.refuse(GatewayError::Unauthenticated))
    }
}

/// A tonic interceptor that lets every health check through, and admits
/// it only when the gateway has no token (with one, anyone may check
/// health, but doing so does not hold a connection open).
#[derive(Debug, Clone, Copy)]
pub struct HealthCheck {
    admits: bool,
}

impl tonic::service::Interceptor for HealthCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.admits {
            admit(&request);
        }
        Ok(request)
    }
}

/// Admits `request`'s call on its connection.
fn admit(request: &Request<()>) {
    if let Some(call) = request.extensions().get::<Call>() {
        call.admit();
    }
}

/// Why a token file's content cannot be the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("is empty; put the token callers must send in it")]
    Empty,
    #[error(
        "holds byte {byte:#04x} at offset {offset}, which a client cannot send in a header; use printable ASCII without spaces (for example `openssl rand -hex 32`)"
    )]
    Unsendable { byte: u8, offset: usize },
}

/// Reads a token file: its content without surrounding whitespace, which
/// must be printable ASCII so that every client can send it as metadata.
pub fn read_token(content: &[u8]) -> Result<Vec<u8>, TokenError> {
    let token = content.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    match token.iter().position(|byte| !byte.is_ascii_graphic()) {
        Some(offset) => Err(TokenError::Unsendable {
            byte: token[offset],
            offset,
        }),
        None => Ok(token.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::service::Interceptor as _;

    use super::*;
    use crate::metrics::Metrics;
    use crate::server::connections::Activity;

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
        let refusals = Refusals::new(Arc::clone(&metrics));
        let mut check = TokenCheck::new(read_token(b"s3cret\n").ok(), refusals);
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

    /// `authorization` on a call of a connection doing `activity`; returns
    /// the request and the call, held apart from it.
    fn call_on(
        activity: &Arc<Activity>,
        authorization: Option<&'static str>,
    ) -> (Request<()>, Call) {
        let mut request = request(authorization);
        let call = Call::new(Arc::clone(activity));
        request.extensions_mut().insert(call.clone());
        (request, call)
    }

    #[test]
    fn only_calls_let_through_keep_their_connection_in_use() {
        let refusals = Refusals::new(Arc::new(Metrics::new(1, "pipe")));
        let activity = Arc::new(Activity::new());
        let mut check = TokenCheck::new(Some(b"s3cret".to_vec()), refusals.clone());
        let (refused, _held) = call_on(&activity, Some("Bearer wrong"));
        assert!(check.call(refused).is_err());
        let (health, _held) = call_on(&activity, None);
        assert!(check.health().call(health).is_ok());
        assert_eq!(activity.open_calls(), 0, "refused calls and health checks");
        let (passed, held) = call_on(&activity, Some("Bearer s3cret"));
        assert!(check.call(passed).is_ok());
        assert_eq!(activity.open_calls(), 1);
        drop(held);
        assert_eq!(activity.open_calls(), 0);

        // Without a token, health checks count too.
        let open = TokenCheck::new(None, refusals);
        let (health, _held) = call_on(&activity, None);
        assert!(open.health().call(health).is_ok());
        assert_eq!(activity.open_calls(), 1);
    }

    #[test]
    fn only_a_fixed_length_digest_of_the_token_is_kept_and_compared() {
        let refusals = Refusals::new(Arc::new(Metrics::new(1, "pipe")));
        for token in [&b"t"[..], b"a-much-longer-token-of-forty-two-characters"] {
            let check = TokenCheck::new(Some(token.to_vec()), refusals.clone());
            assert_eq!(check.expected, Some(token_digest(token)));
        }
        // A presented token of any length is reduced to the same length.
        assert_eq!(token_digest(b"").len(), token_digest(&[7; 4096]).len());
    }

    #[test]
    fn without_a_token_every_call_passes_and_blank_files_hold_none() {
        let refusals = Refusals::new(Arc::new(Metrics::new(1, "pipe")));
        let mut check = TokenCheck::new(None, refusals);
        assert!(check.call(request(None)).is_ok());
    }

    #[test]
    fn token_files_must_hold_a_sendable_token() {
        assert_eq!(read_token(b"  tok-3n_\r\n").unwrap(), b"tok-3n_");
        assert_eq!(read_token(b" \n"), Err(TokenError::Empty));
        assert_eq!(
            read_token(b"two words"),
            Err(TokenError::Unsendable {
                byte: b' ',
                offset: 3
            })
        );
        assert_eq!(
            read_token("caf\u{e9}".as_bytes()),
            Err(TokenError::Unsendable {
                byte: 0xc3,
                offset: 3
            })
        );
    }
}
