//! The extension's exceptions: the two ways a worker's link ends (the
//! worker's serve loop, `worker_shim/_loop.py`, turns them into exit
//! statuses), and a client call's failure (`distribute_challenge/_status.py`
//! turns it into the client's exceptions).

use pyo3::create_exception;
use pyo3::exceptions::{PyEOFError, PyException};

create_exception!(
    _native,
    GatewayGone,
    PyEOFError,
    "The gateway closed its end: the worker's normal way to end (exit 0)."
);

create_exception!(
    _native,
    ProtocolError,
    PyException,
    "The gateway sent what the link's protocol does not allow (exit 1)."
);

create_exception!(
    _native,
    CallFailed,
    PyException,
    "A client call failed: args are (code, message, kind), the gRPC status \
     code, its message and the gateway's mystic-error word (or None)."
);

/// The Python exception for a failed call.
pub fn call_failed(failure: mysticchallenge::client::CallFailure) -> pyo3::PyErr {
    CallFailed::new_err((failure.code, failure.message, failure.kind))
}
