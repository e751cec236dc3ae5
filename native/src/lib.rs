//! `mystic_native._native`: the native core of mysticchallenge's Python
//! side, built into the same wheel as the gateway (the package
//! `mystic_native` re-exports it). This file only registers what the module
//! exports; each export lives in a file of its own:
//!
//! - [`wire`]: the wire format (the gateway's `mysticchallenge::wire`), for
//!   `mystic_wire`; the constants below are its.
//! - [`worker_link`]: a worker's channel to the gateway (`pipe`, `shm`),
//!   handing requests ([`message`]) and the segments they bring
//!   ([`segment`]) to Python without a copy ([`buffer`]: the buffer
//!   protocol); [`errors`]: how a link ends, how a call fails;
//!   [`handover`]: descriptors Python hands over.
//! - [`client`]: the Python client's calls, over the crate's gRPC client
//!   ([`stream`]: an open stream; [`completions`]: how calls made from
//!   asyncio finish on its loop; [`answer`]: what they return), on one
//!   [`runtime`] per process ([`process`]: what belongs to it).

// `unsafe` only where Python's C interface needs it: the buffer protocol,
// and the descriptors Python hands over.
#![deny(unsafe_code)]

mod answer;
#[allow(unsafe_code)]
mod buffer;
mod client;
mod completions;
mod errors;
#[allow(unsafe_code)]
mod handover;
#[allow(unsafe_code)]
mod message;
mod pipe;
mod process;
mod runtime;
mod segment;
mod shm;
mod stream;
mod wire;
mod worker_link;

use pyo3::prelude::*;

/// The module's contents.
#[pymodule]
mod _native {
    use mysticchallenge::wire::{answers, calls, items, records, segmented};
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::wire::{
        attach, by_digest_header, call_header, encode_body, encode_miss, pack_record, parse_call,
        parse_response, response_header, split_request, strip_kept, unpack_record,
    };

    #[pymodule_export]
    use super::message::Message;
    #[pymodule_export]
    use super::segment::Segment;
    #[pymodule_export]
    use super::worker_link::WorkerLink;

    #[pymodule_export]
    use super::client::{Client, get_workers_of_each};
    #[pymodule_export]
    use super::completions::Completions;
    #[pymodule_export]
    use super::stream::Stream;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = module.py();
        module.add("GatewayGone", py.get_type::<super::errors::GatewayGone>())?;
        module.add(
            "ProtocolError",
            py.get_type::<super::errors::ProtocolError>(),
        )?;
        module.add("CallFailed", py.get_type::<super::errors::CallFailed>())?;
        Ok(())
    }

    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    // Requests, answers, streamed items.
    #[pymodule_export]
    const REQUEST_MAGIC: &[u8] = calls::CALL_MAGIC;
    #[pymodule_export]
    const FUNCTION_MAGIC: &[u8] = calls::FUNCTION_MAGIC;
    #[pymodule_export]
    const DIGEST_BYTES: usize = mysticchallenge::wire::DIGEST_BYTES;
    #[pymodule_export]
    const RESPONSE_MAGIC: &[u8] = answers::RESPONSE_MAGIC;
    #[pymodule_export]
    const MISS_MAGIC: &[u8] = answers::MISS_MAGIC;
    #[pymodule_export]
    const KEPT_MAGIC: &[u8] = answers::KEPT_MAGIC;
    #[pymodule_export]
    const STREAM_MAGIC: &[u8] = items::STREAM_MAGIC;
    #[pymodule_export]
    const CHUNK_MAGIC: &[u8] = items::CHUNK_MAGIC;
    #[pymodule_export]
    const NEXT_REQUEST: &[u8] = items::NEXT;
    #[pymodule_export]
    const CLOSE_REQUEST: &[u8] = items::CLOSE;

    // Calls and results in segments.
    #[pymodule_export]
    const SEGMENT_CALL_MAGIC: &[u8] = segmented::CALL_MAGIC;
    #[pymodule_export]
    const SEGMENT_RESPONSE_MAGIC: &[u8] = segmented::RESPONSE_MAGIC;
    #[pymodule_export]
    const ALIGNMENT: usize = segmented::ALIGNMENT;
    #[pymodule_export]
    const SOURCE_HERE: u64 = segmented::Source::Here as u64;
    #[pymodule_export]
    const SOURCE_IN_CALL: u64 = segmented::Source::InCall as u64;

    // The segment sockets' records.
    #[pymodule_export]
    const RECORD_BYTES: usize = records::RECORD_BYTES;
    #[pymodule_export]
    const TOKEN_BYTES: usize = records::TOKEN_BYTES;
    #[pymodule_export]
    const RECORD_HELLO: &[u8] = &records::HELLO;
    #[pymodule_export]
    const RECORD_PUT: &[u8] = &records::PUT;
    #[pymodule_export]
    const RECORD_GET: &[u8] = &records::GET;
    #[pymodule_export]
    const RECORD_DROP: &[u8] = &records::DROP;
    #[pymodule_export]
    const STATUS_OK: u32 = records::OK;
    #[pymodule_export]
    const STATUS_REFUSED: u32 = records::REFUSED;
    #[pymodule_export]
    const STATUS_TOO_LARGE: u32 = records::TOO_LARGE;
    #[pymodule_export]
    const STATUS_BUSY: u32 = records::BUSY;
    #[pymodule_export]
    const STATUS_UNKNOWN: u32 = records::UNKNOWN;
    #[pymodule_export]
    const STATUS_BAD_REQUEST: u32 = records::BAD_REQUEST;
}
