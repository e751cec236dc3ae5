//! The worker pool: a bounded job queue and one actor per worker slot.
//!
//! - [`Pool`]: the cheap, cloneable handle the gRPC service submits calls to.
//! - [`PendingCall`]: a submitted call, awaited for its outcome (forgotten
//!   if dropped first); [`PendingItems`]: one that streams its items.
//! - [`Delivery`]: a result and what it holds of the results budget until
//!   it is delivered; [`Share`]: one caller's share of it (`results`).
//! - [`PoolTasks`]: the running actors; waits for start-up and shuts down.
//! - [`PoolSettings`], [`LaunchSettings`]: the pool's own settings (the
//!   wiring, `gateway.rs`, builds them from the gateway's `Config`).
//! - `worker`: the per-slot actor (supervision: start, serve, restart,
//!   recycle); `conversation`: what it says to its process about one call
//!   (functions by digest, streamed items, result segments, the results
//!   budget); `spawn`: what the actor needs from a process (traits);
//!   `launcher`: starting real ones, through `template` (the process that
//!   forks workers) or directly; `process`: the real OS process; `stderr`:
//!   its stderr in the log, rate-limited by `throttle`; `adopted`: forked
//!   workers and their orphans; `queue`: jobs; `restart`: backoff;
//!   `recycle`: when a worker is replaced; `startup`: start-up errors;
//!   `status`: the status board.

mod adopted;
mod conversation;
#[cfg(test)]
mod conversation_tests;
mod launcher;
mod process;
mod queue;
mod recycle;
mod restart;
mod results;
#[cfg(test)]
mod scripted;
mod spawn;
mod startup;
mod status;
mod stderr;
mod template;
mod throttle;
mod worker;
#[cfg(test)]
mod worker_tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use launcher::LaunchSettings;
pub use process::describe_exit;
pub use queue::{Deadline, expiry};
pub use recycle::Recycle;
pub use results::{Delivery, OwnedShare, Share, Undelivered};
pub use startup::StartError;
pub use status::{WorkerSnapshot, WorkerState};

use crate::budget::Budget;
use crate::error::GatewayError;
use crate::functions::WorkerCall;
use crate::metrics::Metrics;
use crate::transport;
use launcher::Launcher;
use queue::{Claim, Job, JobQueue, JobResult};
use spawn::Spawner;
use status::StatusBoard;
use worker::WorkerActor;

/// Handle to submit calls and read the pool's status.
#[derive(Debug, Clone)]
pub struct Pool {
    queue: JobQueue,
    board: StatusBoard,
    metrics: Arc<Metrics>,
    max_queue_wait: Option<Duration>,
    /// Results finished, not yet delivered (`--max-undelivered-bytes`).
    results: Arc<Budget>,
}

/// The actors behind a [`Pool`].
#[derive(Debug)]
pub struct PoolTasks {
    queue: JobQueue,
    /// To answer what is still queued once the actors have stopped.
    leftovers: queue::JobReceiver,
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
    /// Longest a call waits for a worker before it is refused.
    pub max_queue_wait: Option<Duration>,
    pub recycle: Recycle,
    /// Bytes of results finished but not yet delivered.
    pub max_undelivered_bytes: usize,
}

/// A call in the queue or on a worker. Dropped before its outcome, it is
/// forgotten: still queued, it is freed at once and never runs; running, it
/// runs to its end and its outcome is dropped.
#[derive(Debug)]
pub struct PendingCall {
    response: oneshot::Receiver<JobResult>,
    deadline: Option<Deadline>,
    claim: AbandonOnDrop,
    max_queue_wait: Option<Duration>,
}

/// The items of a call that streams them ([`Pool::submit_items`]), then
/// its last response. Dropping it stops the call: the worker is told to
/// close the iterator, which runs the function's `finally`.
#[derive(Debug)]
pub struct PendingItems {
    /// Chunks of items as the worker sends them; ends before the outcome.
    pub items: mpsc::Receiver<Delivery>,
    pub call: PendingCall,
}

/// How many chunks of items wait in the gateway for a slow caller before
/// the worker is asked for no more.
const ITEMS_BUFFERED: usize = 1;

#[derive(Debug)]
struct AbandonOnDrop(Claim);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl Pool {
    /// Starts one actor per worker slot (`settings.workers`), each running
    /// a worker started as `launch` says (forked from the template unless
    /// `launch.template` is off) over `transport`. Each starts its process
    /// at once; wait for them with [`PoolTasks::ready`]. Call from within
    /// the tokio runtime.
    pub fn spawn(
        settings: PoolSettings,
        launch: LaunchSettings,
        transport: transport::Spec,
        metrics: Arc<Metrics>,
    ) -> (Pool, PoolTasks) {
        let abort = CancellationToken::new();
        let (launcher, template) = Launcher::new(launch, abort.clone());
        let (pool, mut tasks) = Pool::spawn_with(settings, launcher, transport, metrics, abort);
        if let Some(template) = template {
            tasks.actors.spawn(template);
        }
        (pool, tasks)
    }

    /// As [`Pool::spawn`], with workers started by `spawner`, all stopped
    /// when `abort` is cancelled.
    fn spawn_with<S: Spawner>(
        settings: PoolSettings,
        spawner: S,
        transport: transport::Spec,
        metrics: Arc<Metrics>,
        abort: CancellationToken,
    ) -> (Pool, PoolTasks) {
        let (queue, jobs) = JobQueue::bounded(settings.queue_capacity, settings.queue_max_bytes);
        let board = StatusBoard::new(settings.workers);
        let results = Budget::new(settings.max_undelivered_bytes);
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
                recycle: settings.recycle,
                metrics: Arc::clone(&metrics),
                results: Arc::clone(&results),
            };
            actors.spawn(actor.run(report));
            first_starts.push(first_start);
        }
        let pool = Pool {
            queue: queue.clone(),
            board,
            metrics,
            max_queue_wait: settings.max_queue_wait,
            results,
        };
        let tasks = PoolTasks {
            queue,
            leftovers: jobs.clone(),
            abort,
            actors,
            first_starts,
        };
        (pool, tasks)
    }

    /// Queues one call for the next free worker, counted against its
    /// caller's `share` if it has one. A refusal (queue full, shutting
    /// down) is returned at once; the caller counts it.
    pub fn submit(
        &self,
        call: WorkerCall,
        deadline: Option<Deadline>,
        share: Option<&Arc<Share>>,
    ) -> Result<PendingCall, GatewayError> {
        self.queue_job(call, deadline, None, share)
    }

    /// Queues a call whose function returns an iterator, to stream its items:
    /// the worker sends them as it produces them, as fast as the caller
    /// takes them.
    pub fn submit_items(
        &self,
        call: WorkerCall,
        deadline: Option<Deadline>,
        share: Option<&Arc<Share>>,
    ) -> Result<PendingItems, GatewayError> {
        let (sender, items) = mpsc::channel(ITEMS_BUFFERED);
        let call = self.queue_job(call, deadline, Some(sender), share)?;
        Ok(PendingItems { items, call })
    }

    fn queue_job(
        &self,
        call: WorkerCall,
        deadline: Option<Deadline>,
        items: Option<mpsc::Sender<Delivery>>,
        share: Option<&Arc<Share>>,
    ) -> Result<PendingCall, GatewayError> {
        let (reply, response) = oneshot::channel();
        let queued = self.queue.reserve(call.len())?;
        let claim = Claim::new(call, queued);
        self.queue.submit(Job {
            claim: claim.clone(),
            deadline,
            reply,
            items,
            queued_at: tokio::time::Instant::now(),
            share: share.cloned(),
        })?;
        Ok(PendingCall {
            response,
            deadline,
            claim: AbandonOnDrop(claim),
            max_queue_wait: self.max_queue_wait,
        })
    }

    /// A new caller's share of the results budget (see [`Share`]), with a
    /// task that queues its calls held back again as its caller reads.
    /// Dropped (the caller has gone), it is closed: that ends the task, and
    /// drops the calls still held back.
    pub fn share(&self) -> OwnedShare {
        let share = Share::of(&self.results);
        let queue = self.queue.clone();
        let watched = Arc::clone(&share);
        tokio::spawn(async move {
            watched
                .requeue_while_open(|share| requeue(&queue, share))
                .await;
        });
        OwnedShare(share)
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

/// Queues again the calls `share` held back; those the queue has no room
/// for stay held back.
fn requeue(queue: &JobQueue, share: &Share) {
    let mut parked = share.unpark();
    while let Some(job) = parked.pop_front() {
        if let Err(job) = queue.resubmit(job) {
            parked.push_front(job);
            share.repark(parked);
            return;
        }
    }
}

impl PendingCall {
    /// Waits for the call's response, or its deadline. With
    /// `--max-queue-wait`, a call no worker took in time is refused with
    /// [`GatewayError::QueueWait`] (a refusal: the caller counts it).
    pub async fn outcome(self) -> Result<Delivery, GatewayError> {
        let PendingCall {
            mut response,
            deadline,
            claim,
            max_queue_wait,
        } = self;
        let expired = queue::expiry(deadline);
        tokio::pin!(expired);
        if let Some(wait) = max_queue_wait {
            tokio::select! {
                biased;
                answer = &mut response => return answer.unwrap_or(Err(GatewayError::ShuttingDown)),
                budget = &mut expired => return Err(GatewayError::Timeout(budget)),
                () = tokio::time::sleep(wait) => {
                    // Taken back: the payload and its bytes are freed now,
                    // and the worker that pops the job skips it.
                    if claim.0.take().is_some() {
                        return Err(GatewayError::QueueWait(wait));
                    }
                    // A worker took it just now: wait for its answer.
                }
            }
        }
        tokio::select! {
            biased;
            answer = response => answer.unwrap_or(Err(GatewayError::ShuttingDown)),
            budget = expired => Err(GatewayError::Timeout(budget)),
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

    /// Refuses new calls, stops every worker (killing any still mid-call),
    /// waits for the actors to finish, and answers the calls still queued
    /// with [`GatewayError::ShuttingDown`].
    pub async fn shutdown(mut self) {
        self.queue.close();
        self.abort.cancel();
        while let Some(joined) = self.actors.join_next().await {
            if let Err(err) = joined {
                tracing::error!(cause = %err, "a worker actor failed");
            }
        }
        while let Ok(job) = self.leftovers.try_recv() {
            let _ = job.reply.send(Err(GatewayError::ShuttingDown));
        }
    }
}
