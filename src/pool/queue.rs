//! The bounded job queue that free workers pull from.
//!
//! Pull, not push: a call waits only while every worker is busy. A job whose
//! caller has gone away before a worker takes it is skipped, not run. The
//! queue is bounded by count and by payload bytes, so that a burst of calls
//! cannot make the gateway hold unbounded memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::results::{Delivery, Share};
use crate::error::GatewayError;
use crate::functions::WorkerCall;

/// When a call must be finished by, and the budget it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }
}

/// Sleeps until `deadline` passes, then returns its budget; never returns
/// when there is none.
pub async fn expiry(deadline: Option<Deadline>) -> Duration {
    match deadline {
        Some(deadline) => {
            tokio::time::sleep_until(deadline.at).await;
            deadline.budget
        }
        None => std::future::pending().await,
    }
}

/// What a worker sends back for one job.
pub type JobResult = Result<Delivery, GatewayError>;

/// One call waiting for a worker.
#[derive(Debug)]
pub struct Job {
    /// The payload, taken by the worker that runs the job.
    pub claim: Claim,
    pub deadline: Option<Deadline>,
    pub reply: oneshot::Sender<JobResult>,
    /// For a call that streams its items: where they go, chunk by chunk,
    /// before the call's last response goes to `reply`.
    pub items: Option<mpsc::Sender<Delivery>>,
    pub queued_at: Instant,
    /// Its caller's share of the results budget: past it, the job is held
    /// back for the caller instead of run.
    pub share: Option<Arc<Share>>,
}

/// A queued job's payload and its share of the queue's byte bound (given
/// back when dropped), taken exactly once: by the worker that runs the job,
/// or by its caller, which frees them at once: when it gives up waiting
/// (`--max-queue-wait`, a refusal it answers itself) or goes away (the
/// worker that pops the job counts it as unserved).
#[derive(Debug, Clone)]
pub struct Claim(Arc<Mutex<Claimed>>);

#[derive(Debug)]
enum Claimed {
    Queued(WorkerCall, QueuedBytes),
    /// Taken by a worker, or withdrawn by its caller as a refusal.
    Taken,
    /// Its caller went away before any worker took it.
    Abandoned,
}

/// What a worker finds when it pops a job.
#[derive(Debug)]
pub enum Popped {
    Run(WorkerCall, QueuedBytes),
    /// Already answered (a refusal): skip it.
    Answered,
    /// Its caller has gone: skip it and count it.
    Abandoned,
}

impl Claim {
    pub fn new(call: WorkerCall, queued: QueuedBytes) -> Self {
        Claim(Arc::new(Mutex::new(Claimed::Queued(call, queued))))
    }

    /// The call and its bytes, if no one took them before.
    pub fn take(&self) -> Option<(WorkerCall, QueuedBytes)> {
        let mut claimed = self.lock();
        match std::mem::replace(&mut *claimed, Claimed::Taken) {
            Claimed::Queued(call, queued) => Some((call, queued)),
            Claimed::Abandoned => {
                *claimed = Claimed::Abandoned;
                None
            }
            Claimed::Taken => None,
        }
    }

    /// What the worker popping the job gets.
    pub fn pop(&self) -> Popped {
        let taken = std::mem::replace(&mut *self.lock(), Claimed::Taken);
        match taken {
            Claimed::Queued(call, queued) => Popped::Run(call, queued),
            Claimed::Taken => Popped::Answered,
            Claimed::Abandoned => Popped::Abandoned,
        }
    }

    /// Its caller has gone: a call still queued is freed now, and never runs.
    pub fn abandon(&self) {
        let mut claimed = self.lock();
        if matches!(*claimed, Claimed::Queued(..)) {
            *claimed = Claimed::Abandoned;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Claimed> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Payload bytes a job holds in the queue; released on drop.
#[derive(Debug)]
pub struct QueuedBytes {
    len: usize,
    total: Arc<AtomicUsize>,
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// The sending side, held by the gRPC service.
#[derive(Debug, Clone)]
pub struct JobQueue {
    sender: async_channel::Sender<Job>,
    capacity: usize,
    max_bytes: usize,
    bytes: Arc<AtomicUsize>,
}

/// The receiving side, one clone per worker actor.
pub type JobReceiver = async_channel::Receiver<Job>;

impl JobQueue {
    /// A queue of at most `capacity` jobs holding at most `max_bytes` of
    /// payload (a single job of any size is always let in).
    pub fn bounded(capacity: usize, max_bytes: usize) -> (JobQueue, JobReceiver) {
        let (sender, receiver) = async_channel::bounded(capacity);
        let bytes = Arc::new(AtomicUsize::new(0));
        let queue = JobQueue {
            sender,
            capacity,
            max_bytes,
            bytes,
        };
        (queue, receiver)
    }

    /// Takes `len` bytes of the byte bound for a job about to be submitted;
    /// nothing is taken when the bound would be passed.
    pub fn reserve(&self, len: usize) -> Result<QueuedBytes, GatewayError> {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                queued
                    .checked_add(len)
                    .filter(|&total| queued == 0 || total <= self.max_bytes)
            })
            .map_err(|queued| GatewayError::QueueBytesFull {
                queued,
                size: len,
                limit: self.max_bytes,
            })?;
        Ok(QueuedBytes {
            len,
            total: Arc::clone(&self.bytes),
        })
    }

    /// Enqueues a job without waiting: a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<(), GatewayError> {
        self.sender.try_send(job).map_err(|err| match err {
            async_channel::TrySendError::Full(_) => GatewayError::QueueFull {
                capacity: self.capacity,
            },
            async_channel::TrySendError::Closed(_) => GatewayError::ShuttingDown,
        })
    }

    /// Enqueues again a job a worker handed back (it keeps its share of the
    /// byte bound); the job, if the queue has no room for it now.
    pub fn resubmit(&self, job: Job) -> Result<(), Job> {
        self.sender.try_send(job).map_err(|err| err.into_inner())
    }

    /// Jobs waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.sender.len()
    }

    /// Refuses new jobs; what is queued stays for the receivers.
    pub fn close(&self) {
        self.sender.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::encode;

    fn test_call() -> WorkerCall {
        encode::worker_call(b"f", b"x")
    }

    fn job(queue: &JobQueue) -> (Job, oneshot::Receiver<JobResult>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                claim: Claim::new(test_call(), queue.reserve(1).unwrap()),
                deadline: None,
                reply,
                items: None,
                queued_at: Instant::now(),
                share: None,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn full_queue_refuses_and_closed_queue_says_shutting_down() {
        let (queue, receiver) = JobQueue::bounded(1, 100);
        let (first, _rx1) = job(&queue);
        queue.submit(first).unwrap();
        let (second, _rx2) = job(&queue);
        assert_eq!(
            queue.submit(second).unwrap_err(),
            GatewayError::QueueFull { capacity: 1 }
        );

        queue.close();
        let (third, _rx3) = job(&queue);
        assert_eq!(queue.submit(third).unwrap_err(), GatewayError::ShuttingDown);
        // What was queued before closing is still handed out.
        assert!(receiver.recv().await.is_ok());
        assert!(receiver.recv().await.is_err());
    }

    #[test]
    fn a_claim_is_taken_once_and_frees_its_bytes() {
        let (queue, _receiver) = JobQueue::bounded(10, 100);
        let claim = Claim::new(test_call(), queue.reserve(60).unwrap());
        let other = claim.clone();
        let (call, bytes) = other.take().unwrap();
        assert_eq!(call.digest(), test_call().digest());
        assert!(claim.take().is_none());
        drop(bytes);
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_abandoned_claim_frees_its_bytes_at_once_and_is_skipped() {
        let (queue, _receiver) = JobQueue::bounded(10, 100);
        let claim = Claim::new(test_call(), queue.reserve(60).unwrap());
        claim.abandon();
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
        assert!(claim.take().is_none());
        assert!(matches!(claim.pop(), Popped::Abandoned));
        // A claim a worker took is not abandoned after it.
        let taken = Claim::new(test_call(), queue.reserve(10).unwrap());
        assert!(matches!(taken.pop(), Popped::Run(..)));
        taken.abandon();
        assert!(matches!(taken.pop(), Popped::Answered));
    }

    #[test]
    fn the_byte_bound_refuses_what_would_pass_it_and_frees_on_drop() {
        let (queue, _receiver) = JobQueue::bounded(10, 100);
        // One job of any size gets in, so that no call is refused forever.
        let huge = queue.reserve(1000).unwrap();
        assert!(matches!(
            queue.reserve(1),
            Err(GatewayError::QueueBytesFull {
                queued: 1000,
                size: 1,
                limit: 100
            })
        ));
        drop(huge);
        // Refusals took nothing: the whole bound is free again.
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
        let first = queue.reserve(60).unwrap();
        assert!(queue.reserve(41).is_err());
        let second = queue.reserve(40).unwrap();
        drop((first, second));
        assert!(queue.reserve(100).is_ok());
    }
}
