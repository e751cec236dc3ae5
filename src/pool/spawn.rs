//! What the worker actor needs from a worker process, as two traits: a
//! [`Spawner`] starts one, a [`WorkerProcess`] is watched and stopped. The
//! gateway's spawner forks workers from the template or runs `<python> -m
//! worker_shim` (`launcher.rs`, `process.rs`); unit tests hand the actor
//! scripted processes that speak the pipe protocol over the link.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::Duration;

use super::startup::StartError;

/// Starts worker processes.
pub trait Spawner: Send + Sync + 'static {
    type Process: WorkerProcess;

    /// Starts slot `index`'s worker with `transport_args` (what its link
    /// speaks) and `link` (its end of the link, its fd 0).
    fn spawn(
        &self,
        index: usize,
        transport_args: &[String],
        link: OwnedFd,
    ) -> impl Future<Output = Result<Self::Process, StartError>> + Send;

    /// What is being run, for error messages (the interpreter's path).
    fn program(&self) -> String;
}

/// A running worker process.
pub trait WorkerProcess: Send + 'static {
    fn pid(&self) -> u32;

    /// Waits for the process to exit. Cancel-safe.
    fn wait(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send;

    /// Kills the process (and what it started) at once.
    fn kill(&self);

    /// Stops the worker: the caller has already dropped its link (EOF asks
    /// the worker to exit); then SIGTERM, then SIGKILL.
    fn stop(self) -> impl Future<Output = Option<ExitStatus>> + Send;

    /// The last lines the worker wrote to stderr, oldest first.
    fn stderr_tail(&self) -> Vec<String>;

    /// Gives the stderr drain a moment to log what a dead worker wrote last.
    fn settle_stderr(&mut self) -> impl Future<Output = ()> + Send;

    /// Waits up to `limit` for the process to exit.
    fn wait_for(&mut self, limit: Duration) -> impl Future<Output = Option<ExitStatus>> + Send {
        async move { tokio::time::timeout(limit, self.wait()).await.ok()?.ok() }
    }
}
