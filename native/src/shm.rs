//! The worker's side of the shared-memory transport, for Python: the
//! crate's [`WorkerSide`] (the protocol: `transport/shm/` in the gateway's
//! crate), run with the GIL released.

use std::os::fd::{BorrowedFd, OwnedFd};

use mysticchallenge::transport::shm::worker::{WorkerError, WorkerSide};
use pyo3::prelude::*;

use crate::errors::{GatewayGone, ProtocolError};
use crate::message::Message;
use crate::pipe::link_failed;
use crate::segment::Segment;

pub enum ShmLink {
    /// Before the handshake: the link, and the payload limit.
    Waiting(Option<OwnedFd>, usize),
    Connected(WorkerSide),
}

impl ShmLink {
    pub fn new(link: OwnedFd, max_payload_bytes: usize) -> ShmLink {
        ShmLink::Waiting(Some(link), max_payload_bytes)
    }

    /// Shakes hands: takes the rings and bells, maps the rings and says
    /// it is ready.
    pub fn ready(&mut self, py: Python<'_>) -> PyResult<()> {
        let ShmLink::Waiting(link, max) = self else {
            return Ok(());
        };
        let link = link
            .take()
            .ok_or_else(|| ProtocolError::new_err("the handshake failed before"))?;
        let max = *max;
        let side = py
            .detach(|| WorkerSide::connect(link, max))
            .map_err(to_python)?;
        *self = ShmLink::Connected(side);
        Ok(())
    }

    fn side(&mut self) -> PyResult<&mut WorkerSide> {
        match self {
            ShmLink::Connected(side) => Ok(side),
            ShmLink::Waiting(..) => Err(ProtocolError::new_err("the link has not shaken hands")),
        }
    }

    /// Waits for the next request (the GIL released).
    pub fn receive(&mut self, py: Python<'_>) -> PyResult<Message> {
        let side = self.side()?;
        let request = py.detach(|| side.receive()).map_err(to_python)?;
        let segment = match request.segment {
            Some(fd) => Some(Py::new(py, Segment::new(fd))?),
            None => None,
        };
        Ok(Message::new(request.payload, segment))
    }

    /// Sends one response made of `pieces` (`segment` with it), the GIL
    /// released: the pieces are held, as a socket's `send` holds them.
    pub fn send(
        &mut self,
        py: Python<'_>,
        pieces: &[&[u8]],
        segment: Option<BorrowedFd<'_>>,
    ) -> PyResult<()> {
        let side = self.side()?;
        py.detach(|| side.send(pieces, segment)).map_err(to_python)
    }
}

/// The one place the worker side's errors become Python exceptions.
fn to_python(err: WorkerError) -> PyErr {
    match err {
        WorkerError::Gone => GatewayGone::new_err(err.to_string()),
        WorkerError::Protocol(what) => ProtocolError::new_err(what),
        WorkerError::Io(io) => link_failed(io),
    }
}
