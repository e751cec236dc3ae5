//! Byte budgets: how many bytes of one kind the gateway holds, against a
//! bound. The request bytes being received (`--max-receiving-bytes`), the
//! results not yet delivered (`--max-undelivered-bytes`) and each caller's
//! share of those are budgets.
//!
//! A holder alone always fits, whatever its size, so that nothing is
//! refused (or kept waiting) for ever; others fit while the total stays
//! within the bound. Bytes are taken either for a moment's check
//! ([`Budget::try_take`], given back by hand) or as a [`Held`], given back
//! when it is dropped; waiters ([`Budget::take`]) take their turn in the
//! order they came, so that a large holder is not passed for ever by small
//! ones, and are woken as bytes are given back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::{Mutex, Notify};

/// A bound on bytes, and what is taken of it.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
    /// Held by the waiter whose turn it is (tokio's mutex is fair).
    turn: Mutex<()>,
}

/// The budget had no room: `used` bytes were taken of `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub used: usize,
    pub limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            freed: Notify::new(),
            turn: Mutex::new(()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the bound is reached (by at least one byte held).
    pub fn is_full(&self) -> bool {
        let used = self.used();
        used > 0 && used >= self.limit
    }

    /// Takes `len` more bytes for a holder that holds `held` already: they
    /// fit within the bound, or the holder is alone.
    pub fn try_take(&self, held: usize, len: usize) -> Result<(), Full> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let total = used.checked_add(len)?;
                (used == held || total <= self.limit).then_some(total)
            })
            .map(drop)
            .map_err(|used| Full {
                used,
                limit: self.limit,
            })
    }

    /// Takes `len` bytes for a new holder, if they fit.
    pub fn hold(self: &Arc<Self>, len: usize) -> Result<Held, Full> {
        self.try_take(0, len)?;
        Ok(self.held(len))
    }

    /// Takes `len` bytes past the bound if need be, for a holder that
    /// keeps its own count (and gives them back with [`Budget::give_back`]).
    pub fn take_past_bound(&self, len: usize) {
        self.used.fetch_add(len, Ordering::Relaxed);
    }

    /// Takes `len` bytes, past the bound if need be: for what is held
    /// already and only counted (the holder decides what to do about a
    /// full budget).
    pub fn count(self: &Arc<Self>, len: usize) -> Held {
        self.used.fetch_add(len, Ordering::Relaxed);
        self.held(len)
    }

    /// Takes `len` bytes for a new holder, waiting until they fit, after
    /// those that waited before it. Cancel-safe: nothing is taken until it
    /// returns.
    pub async fn take(self: &Arc<Self>, len: usize) -> Held {
        if let Ok(held) = self.hold_if_first(len) {
            return held;
        }
        let _turn = self.turn.lock().await;
        loop {
            let freed = self.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(held) = self.hold(len) {
                return held;
            }
            freed.await;
        }
    }

    /// [`Budget::hold`], unless others are waiting their turn.
    fn hold_if_first(self: &Arc<Self>, len: usize) -> Result<Held, Full> {
        match self.turn.try_lock() {
            Ok(_nobody_waits) => self.hold(len),
            Err(_) => Err(Full {
                used: self.used(),
                limit: self.limit,
            }),
        }
    }

    /// Gives back `len` bytes taken by [`Budget::try_take`].
    pub fn give_back(&self, len: usize) {
        if len > 0 {
            self.used.fetch_sub(len, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    /// Resolves once some bytes are given back after this call (even if it
    /// is first polled later).
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    fn held(self: &Arc<Self>, len: usize) -> Held {
        Held {
            budget: Arc::clone(self),
            len,
        }
    }
}

/// Bytes taken from a budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    len: usize,
}

impl Held {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.len);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_holder_alone_always_fits_and_others_must_share_the_bound() {
        let budget = Budget::new(100);
        budget.try_take(0, 80).unwrap();
        // Alone, a holder may grow past the bound ...
        budget.try_take(80, 80).unwrap();
        // ... but a second one cannot join while it passes it.
        assert_eq!(
            budget.try_take(0, 1),
            Err(Full {
                used: 160,
                limit: 100
            })
        );
        budget.give_back(160);
        let first = budget.hold(60).unwrap();
        let _second = budget.hold(40).unwrap();
        assert!(budget.is_full());
        assert!(budget.hold(1).is_err());
        drop(first);
        assert_eq!(budget.used(), 40);
        assert!(!budget.is_full());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_its_bytes_once_enough_are_given_back() {
        let budget = Budget::new(100);
        let first = budget.hold(70).unwrap();
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.take(50).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        let counted = budget.count(10);
        assert_eq!(budget.used(), 80);
        drop(first);
        let held = waiting.await.unwrap();
        assert_eq!((held.len(), budget.used()), (50, 60));
        drop((held, counted));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_take_their_turn_so_a_large_one_is_not_passed_for_ever() {
        let budget = Budget::new(100);
        let small = budget.hold(30).unwrap();
        let large = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.take(90).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A small one that would fit now waits behind the large one ...
        let later = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.take(10).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!later.is_finished());
        // ... which gets its bytes once there is room for it.
        drop(small);
        let large = large.await.unwrap();
        assert_eq!(large.len(), 90);
        let later = later.await.unwrap();
        assert_eq!(budget.used(), 100);
        drop((large, later));
        // One larger than the whole bound gets in alone.
        assert_eq!(budget.take(500).await.len(), 500);
    }
}
