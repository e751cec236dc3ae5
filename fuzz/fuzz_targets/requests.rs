//! Fuzzes the request decoding path: the bytes of an `ExecuteRequest` as they
//! arrive in a gRPC message, decoded by prost and split by the service into
//! call and function. Every input must give a request or a typed error,
//! never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mysticchallenge::pb::ExecuteRequest;
use mysticchallenge::error::GatewayError;
use mysticchallenge::server::parse_request;
use mysticchallenge::wire::calls::{CALL_MAGIC, FUNCTION_MAGIC};
use mysticchallenge::wire::segmented;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, message)) = data.split_first() else { return };
    let limit = [0usize, 4, 64, 1 << 20][usize::from(shape) % 4];
    let Ok(request) = ExecuteRequest::decode(message) else { return };
    let len = request.payload.len();
    let magic = [CALL_MAGIC, segmented::CALL_MAGIC, FUNCTION_MAGIC]
        .iter()
        .any(|magic| request.payload.starts_with(*magic));
    match parse_request(request, limit) {
        Ok(call) => assert!(magic && len <= limit && call.arguments().len() < len),
        // Without a magic it is never a call; with one it may still be malformed.
        Err(err) => assert!(
            matches!(err, GatewayError::InvalidRequest | GatewayError::PayloadTooLarge { .. }),
            "{err}"
        ),
    }
});
