//! Results that are finished but not yet delivered: what the gateway holds
//! for callers who have not read them yet.
//!
//! Every result a worker answers (a response, a chunk of a streamed call's
//! items, a result segment held for its caller) takes its bytes from one
//! budget (`--max-undelivered-bytes`) before it is handed on, and gives them
//! back once delivered ([`Undelivered`] travels with it until then). A
//! worker whose result finds no room waits with it, busy: results then pile
//! up in no process but the worker that made them.
//!
//! So that one caller who stops reading cannot take the whole budget and
//! with it every worker, each caller (a stream of calls, or the unary calls
//! of one connection) has a [`Share`]: an eighth of the budget. Past its
//! share, a caller's calls that no worker has started are held back: a
//! worker that takes one from the queue hands it back to its caller
//! ([`Share::park`]), and a task of the share's queues it again once the
//! caller has read enough (`Pool::share`). They wait as they came, once in
//! memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::queue::Job;
use crate::budget::{Budget, Held};

/// A result on its way to its caller, and the bytes it holds of the
/// budgets until it is delivered (dropped).
#[derive(Debug)]
pub struct Delivery {
    pub payload: Bytes,
    pub undelivered: Undelivered,
}

/// The bytes a result holds of the gateway's budget and of its caller's
/// share, given back when dropped.
#[derive(Debug, Default)]
pub struct Undelivered {
    held: Vec<Held>,
}

impl Undelivered {
    /// What nothing holds (a refusal's message, say).
    pub fn none() -> Self {
        Undelivered::default()
    }

    pub(crate) fn new(total: Held, share: Option<Held>) -> Self {
        Undelivered {
            held: std::iter::once(total).chain(share).collect(),
        }
    }

    /// Joins what `other` holds to this.
    pub fn join(&mut self, other: Undelivered) {
        self.held.extend(other.held);
    }
}

/// The fraction of the budget one caller may hold undelivered before its
/// waiting calls are held back.
const SHARE_DIVISOR: usize = 8;
/// How often a share with calls held back looks whether its caller has
/// read, besides being woken when it does.
const HELD_BACK_CHECK: Duration = Duration::from_millis(10);

/// One caller's share of the results budget, and its calls held back.
#[derive(Debug)]
pub struct Share {
    undelivered: Arc<Budget>,
    /// Calls a worker handed back; None once the caller has gone.
    parked: Mutex<Option<VecDeque<Job>>>,
    /// A call was held back, or the caller has gone.
    changed: Notify,
}

impl Share {
    /// A new caller's share of `total`.
    pub(super) fn of(total: &Budget) -> Arc<Share> {
        Arc::new(Share {
            undelivered: Budget::new((total.limit() / SHARE_DIVISOR).max(1)),
            parked: Mutex::new(Some(VecDeque::new())),
            changed: Notify::new(),
        })
    }

    /// Counts `len` bytes of a result of this caller's.
    pub(super) fn count(&self, len: usize) -> Held {
        self.undelivered.count(len)
    }

    /// Whether the caller holds its share or more undelivered.
    pub fn is_full(&self) -> bool {
        self.undelivered.is_full()
    }

    /// Holds `job` back for the caller; gives it back if the caller has
    /// gone (the job is then the worker's to drop).
    pub(super) fn park(&self, job: Job) -> Result<(), Job> {
        match self.lock().as_mut() {
            Some(parked) => {
                parked.push_back(job);
                self.changed.notify_one();
                Ok(())
            }
            None => Err(job),
        }
    }

    /// Whether calls are held back.
    pub fn has_parked(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|parked| !parked.is_empty())
    }

    /// The calls held back, in order, to queue again.
    pub(super) fn unpark(&self) -> VecDeque<Job> {
        self.lock().as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Puts back calls that found no room in the queue, ahead of the rest.
    pub(super) fn repark(&self, mut jobs: VecDeque<Job>) {
        if let Some(parked) = self.lock().as_mut() {
            jobs.append(parked);
            *parked = jobs;
        }
    }

    /// Resolves once some of the caller's results are delivered after this
    /// call (even if it is first polled later).
    pub fn delivered(&self) -> tokio::sync::futures::Notified<'_> {
        self.undelivered.freed()
    }

    /// Whether the caller has gone.
    fn is_closed(&self) -> bool {
        self.lock().is_none()
    }

    /// Waits until a call is held back, some of the caller's results are
    /// delivered, or the caller goes (or a little while, when calls are
    /// held back: a delivery may come between a look and the wait).
    async fn changed(&self) {
        let tick = async {
            if self.has_parked() {
                tokio::time::sleep(HELD_BACK_CHECK).await;
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = self.changed.notified() => {}
            () = self.undelivered.freed() => {}
            () = tick => {}
        }
    }

    /// The caller has gone: what was held back goes, and nothing more is.
    /// (Held-back calls refer to their share: closing is what frees both.)
    pub fn close(&self) {
        self.lock().take();
        self.changed.notify_one();
    }

    /// Queues the calls held back again (through `requeue`) whenever the
    /// caller has read enough, until it goes.
    pub(super) async fn requeue_while_open(&self, requeue: impl Fn(&Share)) {
        while !self.is_closed() {
            if self.has_parked() && !self.is_full() {
                requeue(self);
            }
            self.changed().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<VecDeque<Job>>> {
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A caller's share, closed when the caller (a stream, a connection)
/// drops it.
#[derive(Debug)]
pub struct OwnedShare(pub(super) Arc<Share>);

impl OwnedShare {
    pub fn share(&self) -> &Arc<Share> {
        &self.0
    }

    /// Closes it now, before it is dropped.
    pub fn close(&self) {
        self.0.close();
    }
}

impl Drop for OwnedShare {
    fn drop(&mut self) {
        self.0.close();
    }
}
