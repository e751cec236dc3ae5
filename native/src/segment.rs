//! A segment that came with a request (a sealed memfd: a call's pickle and
//! its large buffers): the descriptor, which the worker maps
//! (`mystic_wire._segments`) and closes once the call is done with it.

use std::os::fd::{AsRawFd, OwnedFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A segment the worker received.
#[pyclass(module = "mystic_native._native")]
pub struct Segment {
    fd: Option<OwnedFd>,
}

impl Segment {
    pub fn new(fd: OwnedFd) -> Segment {
        Segment { fd: Some(fd) }
    }
}

#[pymethods]
impl Segment {
    /// Its descriptor, while it is open.
    fn fileno(&self) -> PyResult<i32> {
        self.fd
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| PyValueError::new_err("the segment is closed"))
    }

    /// Closes its descriptor (its mappings stay).
    fn close(&mut self) {
        self.fd = None;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.fd.is_none()
    }
}
