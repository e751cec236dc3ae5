//! `Stream`: an open `ExecuteStream` as `distribute_challenge/_mapping.py`
//! drives it: messages of calls out, messages of results in (blocking
//! with the GIL released, or finishing on an asyncio loop through
//! [`Completions`]). Closing it, or dropping it, cancels the stream.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mysticchallenge::client::{CallFailure, CallStream, StreamReceiver, StreamSender};
use mysticchallenge::pb::{StreamCall, StreamRequest};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use tokio::task::AbortHandle;

use crate::answer::Answer;
use crate::client::block_on;
use crate::completions::Completions;
use crate::process::ThisProcess;
use crate::runtime;

/// One stream's two halves.
#[pyclass(module = "mystic_native._native", frozen)]
pub struct Stream {
    halves: ThisProcess<Halves>,
    window: Option<u32>,
}

struct Halves {
    sender: Mutex<StreamSender>,
    /// Shared with a pending asynchronous receive.
    receiver: Arc<tokio::sync::Mutex<StreamReceiver>>,
    reader: AbortHandle,
}

impl Stream {
    pub fn new(stream: CallStream) -> Stream {
        Stream {
            halves: ThisProcess::new(Halves {
                sender: Mutex::new(stream.sender),
                reader: stream.receiver.canceller(),
                receiver: Arc::new(tokio::sync::Mutex::new(stream.receiver)),
            }),
            window: stream.window,
        }
    }
}

async fn receive(receiver: Arc<tokio::sync::Mutex<StreamReceiver>>) -> Result<Answer, CallFailure> {
    let next = receiver.lock().await.receive().await;
    next.transpose().map(Answer::Results)
}

#[pymethods]
impl Stream {
    /// The gateway's suggested window (its `mystic-window` header), if any.
    #[getter]
    fn window(&self) -> Option<u32> {
        self.window
    }

    /// Sends one message of calls `(id, payload, items)`; false once the
    /// stream has ended (the next receive says why).
    fn send(&self, calls: Vec<(u64, PyBackedBytes, bool)>) -> PyResult<bool> {
        let calls = calls
            .into_iter()
            .map(|(id, payload, items)| StreamCall {
                id,
                payload: Bytes::from_owner(payload),
                items,
            })
            .collect();
        let sender = self.halves.get()?.sender.lock().expect("stream sender");
        Ok(sender.send(StreamRequest { calls }))
    }

    /// No more calls come.
    fn finish_sending(&self) -> PyResult<()> {
        self.halves
            .get()?
            .sender
            .lock()
            .expect("stream sender")
            .finish();
        Ok(())
    }

    /// The next message's results (see `answer.rs`), or None at the
    /// stream's end; raises `CallFailed` if the stream failed.
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let receiver = Arc::clone(&self.halves.get()?.receiver);
        block_on(py, runtime::shared(py)?, receive(receiver))
    }

    /// As `receive`, finishing under `token` on `completions`.
    fn receive_async(&self, py: Python<'_>, completions: &Completions, token: u64) -> PyResult<()> {
        let receiver = Arc::clone(&self.halves.get()?.receiver);
        completions.spawn(py, token, receive(receiver))
    }

    /// Cancels the stream: the gateway forgets calls not started.
    fn close(&self) -> PyResult<()> {
        let halves = self.halves.get()?;
        halves.sender.lock().expect("stream sender").finish();
        // A receive still waiting then hears the end.
        halves.reader.abort();
        Ok(())
    }
}
