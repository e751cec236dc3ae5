//! The client's tokio runtime: one per process, made at the first call
//! (again in a child made by `os.fork()`, whose parent's runtime has no
//! threads there: that one is left alone, never shut down). Reached only
//! with the GIL held, so that no other thread of the process can hold its
//! lock when Python forks.

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// Threads of the runtime: the connections' tasks and the calls of
/// asyncio callers run there; a blocking call runs on its caller's thread.
const THREADS: usize = 1;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime.
pub fn runtime(_py: Python<'_>) -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, runtime)) = *slot
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .thread_name("mystic-client")
        .enable_all()
        .build()
        .map_err(|error| {
            PyRuntimeError::new_err(format!("cannot start the client's runtime: {error}"))
        })?;
    // Lives as long as the process: its connections serve every later call.
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}
