//! The client's tokio runtimes, made at first use in each process (again in
//! a child made by `os.fork()`, whose parent's runtimes have no threads
//! there: those are left alone, never shut down), and how a blocking call
//! waits on them. Reached only with the GIL held, so that no other thread
//! of the process can hold their lock when Python forks.
//!
//! - [`driven`]: a current-thread runtime that the threads making blocking
//!   calls drive themselves while they wait: a call's request is written,
//!   and its answer read, by its caller's thread, with no hand-off to
//!   another thread (measured: 50 µs of a 250 µs no-op call, BENCHMARKS.md).
//!   Its connections are polled only while some thread waits on a call, so
//!   one the gateway closed meanwhile is dialled again on the next call.
//! - [`shared`]: a multi-thread runtime (one thread) for what must progress
//!   on its own: calls from asyncio and streams.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Builder, Runtime};

/// Threads of the shared runtime.
const SHARED_THREADS: usize = 1;
/// How often a blocking call looks up from its wait for a signal (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

type Slot = Mutex<Option<(u32, &'static Runtime)>>;

static DRIVEN: Slot = Mutex::new(None);
static SHARED: Slot = Mutex::new(None);

/// This process's runtime for blocking calls.
pub fn driven(py: Python<'_>) -> PyResult<&'static Runtime> {
    runtime(py, &DRIVEN, || {
        Builder::new_current_thread().enable_all().build()
    })
}

/// This process's runtime for calls from asyncio and for streams.
pub fn shared(py: Python<'_>) -> PyResult<&'static Runtime> {
    runtime(py, &SHARED, || {
        Builder::new_multi_thread()
            .worker_threads(SHARED_THREADS)
            .thread_name("mystic-client")
            .enable_all()
            .build()
    })
}

fn runtime(
    _py: Python<'_>,
    slot: &Slot,
    build: impl FnOnce() -> std::io::Result<Runtime>,
) -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, runtime)) = *slot
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = build().map_err(|error| {
        PyRuntimeError::new_err(format!("cannot start the client's runtime: {error}"))
    })?;
    // Lives as long as the process: its connections serve every later call.
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

/// Runs `work` to its end on `runtime` from this thread, the GIL released,
/// looking up every [`SIGNAL_CHECK`] for a signal: one whose handler
/// raises (Ctrl-C) drops `work`, which cancels the call.
pub fn wait<F: Future + Send>(py: Python<'_>, runtime: &Runtime, work: F) -> PyResult<F::Output>
where
    F::Output: Send,
{
    let mut work = std::pin::pin!(work);
    loop {
        let slice = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut work).await })
        });
        match slice {
            Ok(output) => return Ok(output),
            Err(_) => py.check_signals()?,
        }
    }
}
