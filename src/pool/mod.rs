//! The worker pool: a bounded job queue and one actor per worker slot.
//!
//! - [`Pool`]: the cheap, cloneable handle the gRPC service submits calls to.
//! - [`PoolTasks`]: the running actors; waits for start-up and shuts down.
//! - `worker`: the per-slot actor; `process`: the OS process; `queue`: jobs;
//!   `restart`: backoff; `startup`: start-up errors; `status`: the status board.

mod process;
mod queue;
mod restart;
mod startup;
mod status;
mod worker;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use process::{WorkerSpec, describe_exit};
pub use queue::Deadline;
pub use startup::StartError;
pub use status::{WorkerSnapshot, WorkerState};

use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::transport::TransportSpec;
use crate::transport::shm::runtime_dir::RuntimeDir;
use queue::{Job, JobQueue};
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

impl Pool {
    /// Starts one actor per worker. Each spawns its process at once; wait
    /// for them with [`PoolTasks::ready`].
    pub fn spawn(config: &Config, runtime_dir: Option<Arc<RuntimeDir>>) -> (Pool, PoolTasks) {
        let (queue, jobs) = JobQueue::bounded(config.queue_capacity, config.queue_max_bytes);
        let board = StatusBoard::new(config.workers);
        let metrics = Arc::new(Metrics::new(config.workers, config.transport.as_str()));
        let abort = CancellationToken::new();
        let spec = Arc::new(WorkerSpec {
            python: config.python.clone(),
            transport: TransportSpec {
                kind: config.transport,
                max_payload_bytes: config.max_payload_bytes,
                ring_bytes: config.ring_bytes,
                runtime_dir,
            },
            memory_limit: config.worker_memory_bytes,
        });
        let mut actors = JoinSet::new();
        let mut first_starts = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let (report, first_start) = oneshot::channel();
            let actor = WorkerActor {
                index,
                spec: Arc::clone(&spec),
                jobs: jobs.clone(),
                board: board.clone(),
                abort: abort.clone(),
                startup_timeout: config.startup_timeout,
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
        (
            pool,
            PoolTasks {
                queue,
                abort,
                actors,
                first_starts,
            },
        )
    }

    /// Runs one call on the next free worker and waits for its response.
    pub async fn run(
        &self,
        payload: Bytes,
        deadline: Option<Deadline>,
    ) -> Result<Bytes, GatewayError> {
        let (reply, response) = oneshot::channel();
        self.queue
            .reserve(payload.len())
            .and_then(|queued| {
                self.queue.submit(Job {
                    payload,
                    deadline,
                    reply,
                    queued_at: tokio::time::Instant::now(),
                    queued,
                })
            })
            .inspect_err(|err| self.metrics.rejected(err))?;
        let response = async { response.await.unwrap_or(Err(GatewayError::ShuttingDown)) };
        match deadline {
            None => response.await,
            Some(deadline) => tokio::select! {
                biased;
                response = response => response,
                () = tokio::time::sleep_until(deadline.at) => Err(GatewayError::Timeout(deadline.budget)),
            },
        }
    }

    /// Every worker slot, in index order.
    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        self.board.snapshot()
    }

    /// The pool's metrics, to count refusals that happen before the pool.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
