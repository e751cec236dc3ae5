//! What belongs to the process that made it: the client's runtime and
//! everything running on it (connections, calls) exist in one process
//! only. A child made by `os.fork()` has none of the threads behind them,
//! and may even have inherited one of their locks held; so there an
//! object made before the fork is never used (a clear error says why) and
//! never dropped (its memory is left alone rather than touched).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// `T`, usable in the process that made it only.
pub struct ThisProcess<T> {
    pid: u32,
    inner: Option<T>,
}

impl<T> ThisProcess<T> {
    pub fn new(inner: T) -> ThisProcess<T> {
        ThisProcess {
            pid: std::process::id(),
            inner: Some(inner),
        }
    }

    /// The value, in the process that made it.
    pub fn get(&self) -> PyResult<&T> {
        match &self.inner {
            Some(inner) if self.pid == std::process::id() => Ok(inner),
            _ => Err(PyRuntimeError::new_err(
                "this client object was made in another process (before os.fork()); \
                 its connections stayed there: make calls through the decorated function, \
                 which connects again in each process",
            )),
        }
    }
}

impl<T> Drop for ThisProcess<T> {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            std::mem::forget(self.inner.take());
        }
    }
}
