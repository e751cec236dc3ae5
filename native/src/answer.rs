//! What a client call gives back, and how it reaches Python: the response
//! payload as `bytes`, the workers as plain tuples, a stream's results as
//! a list of `(id, outcome, value)`.

use bytes::Bytes;
use mysticchallenge::client::{CallFailure, CallStream};
use mysticchallenge::pb::stream_result::Outcome;
use mysticchallenge::pb::{GetWorkersResponse, StreamResponse};
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::call_failed;
use crate::stream::Stream;

/// A call's result, before Python sees it.
pub enum Answer {
    Payload(Bytes),
    Workers(GetWorkersResponse),
    Opened(CallStream),
    /// A stream's next message, or None at its end.
    Results(Option<StreamResponse>),
}

/// `(ok, value)`: the answer, or the exception to raise.
pub fn to_python(
    py: Python<'_>,
    outcome: Result<Answer, CallFailure>,
) -> PyResult<(bool, Py<PyAny>)> {
    match outcome {
        Ok(answer) => Ok((true, answer.into_python(py)?)),
        Err(failure) => Ok((false, call_failed(failure).into_value(py).into_any())),
    }
}

impl Answer {
    pub fn into_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Answer::Payload(payload) => Ok(PyBytes::new(py, &payload).into_any().unbind()),
            Answer::Workers(info) => workers(py, info),
            Answer::Opened(stream) => Stream::new(stream).into_py_any(py),
            Answer::Results(None) => Ok(py.None()),
            Answer::Results(Some(message)) => results(py, message),
        }
    }
}

/// `(count, transport, ready, segment_socket, workers)`, each worker
/// `(index, pid, state, calls_served, restarts, recycled)`.
fn workers(py: Python<'_>, info: GetWorkersResponse) -> PyResult<Py<PyAny>> {
    let workers: Vec<_> = info
        .workers
        .iter()
        .map(|w| {
            (
                w.index,
                w.pid,
                w.state,
                w.calls_served,
                w.restarts,
                w.recycled,
            )
        })
        .collect();
    (
        info.count,
        info.transport,
        info.ready,
        info.segment_socket,
        workers,
    )
        .into_py_any(py)
}

/// Each result as `(id, "payload" | "items", bytes)` or
/// `(id, "error", (code, kind, message))`.
fn results(py: Python<'_>, message: StreamResponse) -> PyResult<Py<PyAny>> {
    let list = PyList::empty(py);
    for result in message.results {
        let item = match result.outcome {
            Some(Outcome::Payload(payload)) => {
                (result.id, "payload", PyBytes::new(py, &payload)).into_py_any(py)?
            }
            Some(Outcome::Items(items)) => {
                (result.id, "items", PyBytes::new(py, &items)).into_py_any(py)?
            }
            Some(Outcome::Error(error)) => {
                (result.id, "error", (error.code, error.kind, error.message)).into_py_any(py)?
            }
            None => (
                result.id,
                "error",
                (2, "", "the gateway sent a result with no outcome"),
            )
                .into_py_any(py)?,
        };
        list.append(item)?;
    }
    Ok(list.into_any().unbind())
}
