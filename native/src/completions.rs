//! `Completions`: how calls made from asyncio finish on its loop. Each
//! call runs on the client's runtime; its outcome goes into one queue per
//! loop, and an eventfd the loop watches (`loop.add_reader`) is rung only
//! when the queue was empty, so calls that finish together cost the loop
//! one wake-up, not one each (`distribute_challenge/_client.py` drains
//! it and completes the futures).

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use mysticchallenge::client::CallFailure;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use rustix::event::{EventfdFlags, eventfd};
use tokio::task::AbortHandle;

use crate::answer::{self, Answer};
use crate::process::ThisProcess;
use crate::runtime;

type Outcome = Result<Answer, CallFailure>;

/// One asyncio loop's finished calls.
#[pyclass(module = "mystic_native._native", frozen)]
pub struct Completions {
    shared: ThisProcess<Arc<Shared>>,
}

struct Shared {
    bell: OwnedFd,
    finished: Mutex<Vec<(u64, Outcome)>>,
    /// The calls running, by token, to cancel them; a call leaves it when
    /// its outcome is drained (or it is cancelled).
    running: Mutex<HashMap<u64, AbortHandle>>,
}

impl Shared {
    fn finish(&self, token: u64, outcome: Outcome) {
        let mut finished = self.finished.lock().expect("finished calls");
        let first = finished.is_empty();
        finished.push((token, outcome));
        drop(finished);
        if first {
            // Cannot fail short of 2^64 - 1 rings not read.
            let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
        }
    }
}

impl Completions {
    /// Runs `call` on the client's runtime; its outcome comes out of
    /// [`Completions::drain`] under `token`.
    pub fn spawn<F>(&self, py: Python<'_>, token: u64, call: F) -> PyResult<()>
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let shared = Arc::clone(self.shared.get()?);
        let running = runtime::shared(py)?.spawn({
            let shared = Arc::clone(&shared);
            async move {
                let outcome = call.await;
                shared.finish(token, outcome);
            }
        });
        let mut calls = shared.running.lock().expect("running calls");
        calls.insert(token, running.abort_handle());
        Ok(())
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Completions> {
        let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|error| PyOSError::new_err(format!("cannot make an eventfd: {error}")))?;
        Ok(Completions {
            shared: ThisProcess::new(Arc::new(Shared {
                bell,
                finished: Mutex::new(Vec::new()),
                running: Mutex::new(HashMap::new()),
            })),
        })
    }

    /// The descriptor the loop watches: readable when calls finished.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.shared.get()?.bell.as_raw_fd())
    }

    /// The calls finished since the last drain: `(token, ok, value)`, the
    /// value a result or the exception to raise.
    fn drain(&self, py: Python<'_>) -> PyResult<Vec<(u64, bool, Py<PyAny>)>> {
        let shared = self.shared.get()?;
        // Read the bell before taking the queue: a call that finishes after
        // the take finds it empty and rings again.
        let mut rung = [0u8; 8];
        let _ = rustix::io::read(&shared.bell, &mut rung);
        let finished = std::mem::take(&mut *shared.finished.lock().expect("finished calls"));
        let mut running = shared.running.lock().expect("running calls");
        for (token, _) in &finished {
            running.remove(token);
        }
        drop(running);
        finished
            .into_iter()
            .map(|(token, outcome)| {
                let (ok, value) = answer::to_python(py, outcome)?;
                Ok((token, ok, value))
            })
            .collect()
    }

    /// Cancels the call of `token` (its stream is reset: the gateway
    /// forgets it, or stops it if it runs); nothing if it finished.
    fn cancel(&self, token: u64) -> PyResult<()> {
        let shared = self.shared.get()?;
        if let Some(call) = shared.running.lock().expect("running calls").remove(&token) {
            call.abort();
        }
        Ok(())
    }
}
