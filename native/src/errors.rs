//! The two ways a worker's link ends, as Python exceptions (the worker's
//! serve loop, `worker_shim/_loop.py`, turns them into exit statuses).

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
