//! Fuzzes the request decoding path: the bytes of an `ExecuteRequest` as they
//! arrive in a gRPC message, decoded by prost and validated by the service.
//! Every input must give a request or a typed error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mysticchallenge::pb::ExecuteRequest;
use mysticchallenge::server::{CallRequest, REQUEST_MAGIC};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, message)) = data.split_first() else { return };
    let limit = [0usize, 4, 64, 1 << 20][usize::from(shape) % 4];
    let Ok(request) = ExecuteRequest::decode(message) else { return };
    let len = request.payload.len();
    let magic = request.payload.starts_with(REQUEST_MAGIC);
    match CallRequest::parse(request, limit) {
        Ok(call) => assert!(magic && call.payload.len() <= limit),
        Err(err) => assert!(!magic || len > limit, "{err}"),
    }
});
