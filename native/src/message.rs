//! A request as the worker's link hands it to Python: its bytes, exported
//! without a copy (`memoryview(message)`), and the segment that came with
//! it, if any. The message owns its bytes (a pipe's decoded line, a frame
//! copied off the ring, or the mapping of a segment the request was spilled
//! to), so a view of them stays valid however long Python keeps it: a
//! function may keep an argument that was unpickled in place.

use std::ffi::c_int;

use mysticchallenge::transport::shm::worker::Payload;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::buffer::{self, Exported};
use crate::segment::Segment;

/// One request from the gateway.
#[pyclass(module = "mystic_native._native", frozen)]
pub struct Message {
    payload: Payload,
    segment: Option<Py<Segment>>,
}

impl Message {
    pub fn new(payload: Payload, segment: Option<Py<Segment>>) -> Message {
        Message { payload, segment }
    }
}

#[pymethods]
impl Message {
    /// The segment that came with the request (a call's arguments), if any.
    #[getter]
    fn segment(&self, py: Python<'_>) -> Option<Py<Segment>> {
        self.segment.as_ref().map(|segment| segment.clone_ref(py))
    }

    fn __len__(&self) -> usize {
        self.payload.as_ref().len()
    }

    /// # Safety
    /// Called by Python with a view to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let bytes = slf.get().payload.as_ref();
        let memory = Exported {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            writable: false,
        };
        // SAFETY: the bytes are the message's own and never change or move
        // (the class is frozen); the view holds a reference to the message,
        // so they outlive it.
        unsafe { buffer::fill(view, flags, memory, slf.into_any()) }
    }
}
