//! `WorkerLink`: a worker's whole channel to the gateway, one transport or
//! the other, as its serve loop (`worker_shim/_loop.py`) drives it: say
//! ready, receive a request (a [`Message`]), send the response.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::buffer::HeldBytes;
use crate::handover;
use crate::message::Message;
use crate::pipe::PipeLink;
use crate::shm::ShmLink;

enum Inner {
    Pipe(PipeLink),
    Shm(ShmLink),
}

/// The worker's end of its link (the descriptor it is given, which it
/// takes over), speaking `transport` ("pipe" or "shm").
#[pyclass(module = "mystic_native._native", unsendable)]
pub struct WorkerLink {
    inner: Inner,
}

#[pymethods]
impl WorkerLink {
    #[new]
    fn new(fd: i32, transport: &str, max_payload_bytes: usize) -> PyResult<WorkerLink> {
        let link = handover::take(fd)?;
        let inner = match transport {
            "pipe" => Inner::Pipe(PipeLink::new(link, max_payload_bytes)),
            "shm" => Inner::Shm(ShmLink::new(link, max_payload_bytes)),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown transport {other:?}: pipe or shm"
                )));
            }
        };
        Ok(WorkerLink { inner })
    }

    /// Tells the gateway, once, that the worker takes calls.
    fn ready(&mut self, py: Python<'_>) -> PyResult<()> {
        match &mut self.inner {
            Inner::Pipe(link) => link.ready(py),
            Inner::Shm(link) => link.ready(py),
        }
    }

    /// Waits for the next request, the GIL released.
    fn receive(&mut self, py: Python<'_>) -> PyResult<Message> {
        match &mut self.inner {
            Inner::Pipe(link) => link.receive(py),
            Inner::Shm(link) => link.receive(py),
        }
    }

    /// Sends one response made of `pieces` (buffers, in order), with the
    /// result `segment` (a descriptor the caller keeps open) if given.
    #[pyo3(signature = (pieces, segment = None))]
    fn send(
        &mut self,
        py: Python<'_>,
        pieces: &Bound<'_, PyList>,
        segment: Option<i32>,
    ) -> PyResult<()> {
        let held = pieces
            .iter()
            .map(|piece| HeldBytes::get(&piece))
            .collect::<PyResult<Vec<_>>>()?;
        let bytes: Vec<&[u8]> = held.iter().map(HeldBytes::bytes).collect();
        let segment = segment.map(handover::borrow).transpose()?;
        match &mut self.inner {
            Inner::Pipe(link) => link.send(py, &bytes, segment),
            Inner::Shm(link) => link.send(py, &bytes, segment),
        }
    }
}
