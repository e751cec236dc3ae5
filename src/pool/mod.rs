//! The worker pool: a bounded job queue and one actor per worker slot.
//!
//! - [`Pool`]: the cheap, cloneable handle the gRPC service submits calls to.
//! - [`PendingCall`]: a submitted call, awaited for its outcome.
//! - [`PoolTasks`]: the running actors; waits for start-up and shuts down.
//! - `worker`: the per-slot actor; `spawn`: what the actor needs from a
//!   process (traits); `process`: the real OS process; `queue`: jobs;
//!   `restart`: backoff; `startup`: start-up errors; `status`: the status board.

mod process;
mod queue;
mod restart;
#[cfg(test)]
mod scripted;
mod spawn;
mod startup;
mod status;
mod worker;
#[cfg(test)]
mod worker_tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use process::describe_exit;
pub use queue::Deadline;
pub use startup::StartError;
pub use status::{WorkerSnapshot, WorkerState};

use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::transport;
use process::PythonSpawner;
use queue::{Job, JobQueue, JobResult};
use spawn::Spawner;
use status::StatusBoard;
use worker::WorkerActor;

/// Handle to submit calls and read the pool's status.
#[derive(Debug, Clone)]
pub struct Pool {
    queue: JobQueue,
    board: StatusBoard,
    metrics: Arc<Metrics>,
}

/// The actors behind a [`Pool`].
#[derive(Debug)]
pub struct PoolTasks {
    queue: JobQueue,
    abort: CancellationToken,
    actors: JoinSet<()>,
    first_starts: Vec<oneshot::Receiver<Result<(), StartError>>>,
}

/// How big the pool is and how patient.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub workers: usize,
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub startup_timeout: Duration,
}

impl From<&Config> for PoolSettings {
    fn from(config: &Config) -> Self {
        PoolSettings {
            workers: config.workers,
            queue_capacity: config.queue_capacity,
            queue_max_bytes: config.queue_max_bytes,
            startup_timeout: config.startup_timeout,
        }
    }
}

/// A call in the queue or on a worker.
#[derive(Debug)]
pub struct PendingCall {
    response: oneshot::Receiver<JobResult>,
    deadline: Option<Deadline>,
}

impl Pool {
    /// Starts one actor per worker, each running `config.python -m
    /// worker_shim` over `transport`. Each spawns its process at once; wait
    /// for them with [`PoolTasks::ready`].
    pub fn spawn(
        config: &Config,
        transport: transport::Spec,
        metrics: Arc<Metrics>,
    ) -> (Pool, PoolTasks) {
        let spawner = PythonSpawner {
            python: config.python.clone(),
            memory_limit: config.worker_memory_bytes,
        };
        Pool::spawn_with(PoolSettings::from(config), spawner, transport, metrics)
    }

    /// As [`Pool::spawn`], with workers started by `spawner`.
    fn spawn_with<S: Spawner>(
        settings: PoolSettings,
        spawner: S,
        transport: transport::Spec,
        metrics: Arc<Metrics>,
    ) -> (Pool, PoolTasks) {
        let (queue, jobs) = JobQueue::bounded(settings.queue_capacity, settings.queue_max_bytes);
        let board = StatusBoard::new(settings.workers);
        let abort = CancellationToken::new();
        let spawner = Arc::new(spawner);
        let transport = Arc::new(transport);
        let mut actors = JoinSet::new();
        let mut first_starts = Vec::with_capacity(settings.workers);
        for index in 0..settings.workers {
            let (report, first_start) = oneshot::channel();
            let actor = WorkerActor {
                index,
                spawner: Arc::clone(&spawner),
                transport: Arc::clone(&transport),
                jobs: jobs.clone(),
                board: board.clone(),
                abort: abort.clone(),
                startup_timeout: settings.startup_timeout,
                metrics: Arc::clone(&metrics),
            };
            actors.spawn(actor.run(report));
            first_starts.push(first_start);
        }
        let pool = Pool {
            queue: queue.clone(),
            board,
            metrics,
        };
        let tasks = PoolTasks {
            queue,
            abort,
            actors,
            first_starts,
        };
        (pool, tasks)
    }

    /// Queues one call for the next free worker. A refusal (queue full,
    /// shutting down) is returned at once; the caller counts it.
    pub fn submit(
        &self,
        payload: Bytes,
        deadline: Option<Deadline>,
    ) -> Result<PendingCall, GatewayError> {
        let (reply, response) = oneshot::channel();
        let queued = self.queue.reserve(payload.len())?;
        self.queue.submit(Job {
            payload,
            deadline,
            reply,
            queued_at: tokio::time::Instant::now(),
            queued,
        })?;
        Ok(PendingCall { response, deadline })
    }

    /// Every worker slot, in index order.
    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        self.board.snapshot()
    }

    /// How many workers can take a call now, updated as it changes.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<usize> {
        self.board.serving()
    }
}

impl PendingCall {
    /// Waits for the call's response, or its deadline.
    pub async fn outcome(self) -> Result<Bytes, GatewayError> {
        let response = async {
            self.response
                .await
                .unwrap_or(Err(GatewayError::ShuttingDown))
        };
        match self.deadline {
            None => response.await,
            Some(deadline) => tokio::select! {
                biased;
                response = response => response,
                () = tokio::time::sleep_until(deadline.at) => Err(GatewayError::Timeout(deadline.budget)),
            },
        }
    }
}

impl crate::metrics::Scrape for Pool {
    fn scrape(&self) -> String {
        let busy = self
            .workers()
            .iter()
            .filter(|slot| slot.state == WorkerState::Busy)
            .count();
        self.metrics.render(self.queue.waiting(), busy)
    }
}

impl PoolTasks {
    /// Waits until every worker has completed its first handshake. The
    /// first failure is returned; the caller should then shut down.
    pub async fn ready(&mut self) -> Result<(), StartError> {
        for first_start in self.first_starts.drain(..) {
            // A dropped sender means the actor stopped: only on shutdown.
            if let Ok(Err(err)) = first_start.await {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Refuses new calls, stops every worker (killing any still mid-call)
    /// and waits for the actors to finish.
    pub async fn shutdown(mut self) {
        self.queue.close();
        self.abort.cancel();
        while let Some(joined) = self.actors.join_next().await {
            if let Err(err) = joined {
                tracing::error!(cause = %err, "a worker actor failed");
            }
        }
    }
}
