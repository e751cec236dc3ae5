//! `Client`: the Python client's calls to one target (one gateway, a list,
//! or a DNS name), over the crate's client (`mysticchallenge::client`):
//! a blocking call waits with the GIL released, driving its own request
//! and answer (the [`runtime::driven`] runtime, with connections of its
//! own); a call from asyncio, and a stream, run on the [`runtime::shared`]
//! runtime (a call from asyncio finishes through [`Completions`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mysticchallenge::client::{self as calls, CallFailure, CallOptions, Place, Target, TargetSpec};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use tokio::runtime::Runtime;

use crate::answer::{self, Answer};
use crate::completions::Completions;
use crate::process::ThisProcess;
use crate::runtime;

/// Metadata pairs, as Python gives them.
type Metadata = Vec<(String, String)>;

/// The connections to one target and the calls over them.
#[pyclass(module = "mystic_native._native", frozen)]
pub struct Client {
    targets: ThisProcess<Targets>,
}

/// One target's gateways twice, for connections on each runtime.
struct Targets {
    driven: Arc<Target>,
    shared: Arc<Target>,
}

fn options(metadata: &Metadata, timeout: Option<f64>) -> PyResult<CallOptions> {
    let timeout = timeout
        .map(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)))
        .transpose()
        .map_err(|error| PyValueError::new_err(format!("invalid timeout: {error}")))?;
    // A value that is not a header's (a token with a newline) is the caller's.
    CallOptions::new(metadata, timeout).map_err(|failure| PyValueError::new_err(failure.message))
}

/// Runs `call` to its end on this thread (see [`runtime::wait`]).
pub fn block_on<F>(py: Python<'_>, runtime: &Runtime, call: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = Result<Answer, CallFailure>> + Send,
{
    let outcome = runtime::wait(py, runtime, call)?;
    let (ok, value) = answer::to_python(py, outcome)?;
    if ok {
        Ok(value)
    } else {
        Err(PyErr::from_value(value.into_bound(py)))
    }
}

#[pymethods]
impl Client {
    /// `gateways`: `HOST:PORT` or `unix:PATH` each; `dns`: `NAME:PORT` to
    /// resolve instead; `authority`: the `HOST:PORT` calls name and TLS
    /// checks, when not the only gateway's; `ca_pem`: what TLS trusts (the
    /// system's roots if None).
    #[new]
    #[pyo3(signature = (gateways, *, dns=None, tls=false, ca_pem=None, authority=None))]
    fn new(
        gateways: Vec<String>,
        dns: Option<String>,
        tls: bool,
        ca_pem: Option<Vec<u8>>,
        authority: Option<String>,
    ) -> PyResult<Client> {
        let places = gateways
            .into_iter()
            .map(|gateway| match gateway.strip_prefix("unix:") {
                Some(path) => Place::Unix(path.into()),
                None => Place::Tcp(gateway),
            })
            .collect();
        let spec = TargetSpec {
            places,
            dns,
            authority,
            tls,
            ca_pem,
        };
        let target = |spec| {
            Target::new(spec)
                .map(Arc::new)
                .map_err(|error| PyValueError::new_err(error.to_string()))
        };
        Ok(Client {
            targets: ThisProcess::new(Targets {
                driven: target(spec.clone())?,
                shared: target(spec)?,
            }),
        })
    }

    /// Runs one call (`payload` in the wire format); returns the response's.
    #[pyo3(signature = (payload, metadata, timeout=None))]
    fn execute(
        &self,
        py: Python<'_>,
        payload: PyBackedBytes,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let call = Call::Execute(Bytes::from_owner(payload));
        self.wait(py, call, &metadata, timeout)
    }

    /// As `execute`, finishing under `token` on `completions`.
    #[pyo3(signature = (completions, token, payload, metadata, timeout=None))]
    fn execute_async(
        &self,
        py: Python<'_>,
        completions: &Completions,
        token: u64,
        payload: PyBackedBytes,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let call = Call::Execute(Bytes::from_owner(payload));
        self.start(py, completions, token, call, &metadata, timeout)
    }

    /// The gateway's workers (see `answer.rs` for the tuple).
    #[pyo3(signature = (metadata, timeout=None))]
    fn get_workers(
        &self,
        py: Python<'_>,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.wait(py, Call::GetWorkers, &metadata, timeout)
    }

    /// As `get_workers`, finishing under `token` on `completions`.
    #[pyo3(signature = (completions, token, metadata, timeout=None))]
    fn get_workers_async(
        &self,
        py: Python<'_>,
        completions: &Completions,
        token: u64,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        self.start(py, completions, token, Call::GetWorkers, &metadata, timeout)
    }

    /// Opens an `ExecuteStream` (a `Stream`), once the gateway answered.
    #[pyo3(signature = (metadata, timeout=None))]
    fn open_stream(
        &self,
        py: Python<'_>,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.wait(py, Call::OpenStream, &metadata, timeout)
    }

    /// As `open_stream`, finishing under `token` on `completions`.
    #[pyo3(signature = (completions, token, metadata, timeout=None))]
    fn open_stream_async(
        &self,
        py: Python<'_>,
        completions: &Completions,
        token: u64,
        metadata: Metadata,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        self.start(py, completions, token, Call::OpenStream, &metadata, timeout)
    }
}

/// What a client can be asked.
enum Call {
    Execute(Bytes),
    GetWorkers,
    OpenStream,
}

impl Call {
    async fn run(self, target: &Target, options: &CallOptions) -> Result<Answer, CallFailure> {
        match self {
            Call::Execute(payload) => calls::execute(target, payload, options)
                .await
                .map(Answer::Payload),
            Call::GetWorkers => calls::get_workers(target, options)
                .await
                .map(Answer::Workers),
            Call::OpenStream => calls::open_stream(target, options)
                .await
                .map(Answer::Opened),
        }
    }
}

impl Client {
    /// Runs `call` from this thread, blocking: on the runtime this thread
    /// drives, but a stream on the shared one (it progresses on its own).
    fn wait(
        &self,
        py: Python<'_>,
        call: Call,
        metadata: &Metadata,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let targets = self.targets.get()?;
        let options = options(metadata, timeout)?;
        let (target, runtime) = match call {
            Call::OpenStream => (&targets.shared, runtime::shared(py)?),
            _ => (&targets.driven, runtime::driven(py)?),
        };
        block_on(py, runtime, async move { call.run(target, &options).await })
    }

    /// Starts `call` on the shared runtime, finishing under `token` on
    /// `completions`.
    fn start(
        &self,
        py: Python<'_>,
        completions: &Completions,
        token: u64,
        call: Call,
        metadata: &Metadata,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let target = Arc::clone(&self.targets.get()?.shared);
        let options = options(metadata, timeout)?;
        completions.spawn(py, token, async move { call.run(&target, &options).await })
    }
}

/// `get_workers` of every client at once (one that cannot be reached
/// costs its own wait, not the others'): `(ok, value)` each, in order.
#[pyfunction]
#[pyo3(signature = (clients, metadata, timeout=None))]
pub fn get_workers_of_each(
    py: Python<'_>,
    clients: Vec<Py<Client>>,
    metadata: Metadata,
    timeout: Option<f64>,
) -> PyResult<Vec<(bool, Py<PyAny>)>> {
    let options = options(&metadata, timeout)?;
    let targets = clients
        .iter()
        .map(|client| Ok(Arc::clone(&client.get().targets.get()?.shared)))
        .collect::<PyResult<Vec<_>>>()?;
    let runtime = runtime::shared(py)?;
    let outcomes = py.detach(|| {
        let asked: Vec<_> = targets
            .into_iter()
            .map(|target| {
                let options = options.clone();
                runtime.spawn(async move { calls::get_workers(&target, &options).await })
            })
            .collect();
        runtime.block_on(async {
            let mut outcomes = Vec::with_capacity(asked.len());
            for answer in asked {
                outcomes.push(answer.await.unwrap_or_else(|error| {
                    Err(CallFailure::unavailable(format!(
                        "the call did not finish: {error}"
                    )))
                }));
            }
            outcomes
        })
    });
    outcomes
        .into_iter()
        .map(|outcome| answer::to_python(py, outcome.map(Answer::Workers)))
        .collect()
}
