//! The bounded job queue that free workers pull from.
//!
//! Pull, not push: a call waits only while every worker is busy. A job whose
//! caller has gone away before a worker takes it is skipped, not run.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::GatewayError;

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

/// What a worker sends back for one job.
pub type JobResult = Result<Bytes, GatewayError>;

/// One call waiting for a worker.
#[derive(Debug)]
pub struct Job {
    pub payload: Bytes,
    pub deadline: Option<Deadline>,
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    /// Whether the caller stopped waiting for this job.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The sending side, held by the gRPC service.
#[derive(Debug, Clone)]
pub struct JobQueue {
    sender: async_channel::Sender<Job>,
    capacity: usize,
}

/// The receiving side, one clone per worker actor.
pub type JobReceiver = async_channel::Receiver<Job>;

impl JobQueue {
    pub fn bounded(capacity: usize) -> (JobQueue, JobReceiver) {
        let (sender, receiver) = async_channel::bounded(capacity);
        (JobQueue { sender, capacity }, receiver)
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

    /// Refuses new jobs. Workers still drain what is queued, then stop.
    pub fn close(&self) {
        self.sender.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<JobResult>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                payload: Bytes::from_static(b"x"),
                deadline: None,
                reply,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn full_queue_refuses_and_closed_queue_says_shutting_down() {
        let (queue, receiver) = JobQueue::bounded(1);
        let (first, _rx1) = job();
        queue.submit(first).unwrap();
        let (second, _rx2) = job();
        assert_eq!(
            queue.submit(second).unwrap_err(),
            GatewayError::QueueFull { capacity: 1 }
        );

        queue.close();
        let (third, _rx3) = job();
        assert_eq!(queue.submit(third).unwrap_err(), GatewayError::ShuttingDown);
        // What was queued before closing is still handed out.
        assert!(receiver.recv().await.is_ok());
        assert!(receiver.recv().await.is_err());
    }

    #[test]
    fn a_dropped_caller_marks_the_job_abandoned() {
        let (job, rx) = job();
        assert!(!job.is_abandoned());
        drop(rx);
        assert!(job.is_abandoned());
    }
}
