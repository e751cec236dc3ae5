//! The pool's status board: one entry per worker slot, written by that slot's
//! actor and read by `GetWorkers`, and how many workers can take a call now,
//! watched by the health service.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// What a worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// A process was spawned and has not finished its handshake.
    Starting,
    /// Waiting for a call.
    Idle,
    /// Running a call.
    Busy,
    /// The process died; waiting out the restart backoff.
    Restarting,
    /// Stopped for good.
    Stopped,
}

impl WorkerState {
    /// Whether a worker in this state has a live process that serves calls.
    pub fn serves(self) -> bool {
        matches!(self, WorkerState::Idle | WorkerState::Busy)
    }
}

/// One worker slot as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub index: usize,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub calls_served: u64,
    /// Processes this slot has had after its first, for any reason.
    pub restarts: u64,
    /// Of those, replacements of a worker that reached a recycling bound.
    pub recycled: u64,
}

/// Shared, cheaply cloned status of every slot.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    slots: Arc<[Mutex<WorkerSnapshot>]>,
    /// Slots whose worker [serves](WorkerState::serves) calls.
    serving: Arc<watch::Sender<usize>>,
}

impl StatusBoard {
    pub fn new(workers: usize) -> Self {
        let slots = (0..workers)
            .map(|index| {
                Mutex::new(WorkerSnapshot {
                    index,
                    pid: None,
                    state: WorkerState::Starting,
                    calls_served: 0,
                    restarts: 0,
                    recycled: 0,
                })
            })
            .collect();
        StatusBoard {
            slots,
            serving: Arc::new(watch::Sender::new(0)),
        }
    }

    /// How many workers serve calls, updated as their states change.
    pub fn serving(&self) -> watch::Receiver<usize> {
        self.serving.subscribe()
    }

    /// Every slot, in index order.
    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        (0..self.slots.len())
            .map(|index| self.slot(index).clone())
            .collect()
    }

    /// Updates one slot.
    pub fn update(&self, index: usize, change: impl FnOnce(&mut WorkerSnapshot)) {
        let mut slot = self.slot(index);
        let served = slot.state.serves();
        change(&mut slot);
        let serves = slot.state.serves();
        // Counted under the slot's lock, so that updates of one slot are
        // counted in the order they happen.
        if served != serves {
            self.serving.send_modify(|count| {
                if serves {
                    *count += 1;
                } else {
                    *count -= 1;
                }
            });
        }
    }

    fn slot(&self, index: usize) -> MutexGuard<'_, WorkerSnapshot> {
        // A panic while holding this lock leaves a plain struct behind: still usable.
        self.slots[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_show_in_snapshots() {
        let board = StatusBoard::new(2);
        board.update(1, |slot| {
            slot.pid = Some(42);
            slot.state = WorkerState::Busy;
            slot.calls_served += 1;
        });
        let snapshot = board.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].state, WorkerState::Starting);
        assert_eq!(snapshot[1].pid, Some(42));
        assert_eq!(snapshot[1].state, WorkerState::Busy);
        assert_eq!(snapshot[1].calls_served, 1);
    }

    #[test]
    fn the_serving_count_follows_the_states() {
        let board = StatusBoard::new(2);
        let serving = board.serving();
        assert_eq!(*serving.borrow(), 0);
        board.update(0, |slot| slot.state = WorkerState::Idle);
        board.update(1, |slot| slot.state = WorkerState::Idle);
        board.update(1, |slot| slot.state = WorkerState::Busy);
        assert_eq!(*serving.borrow(), 2);
        board.update(0, |slot| slot.state = WorkerState::Restarting);
        board.update(1, |slot| slot.calls_served += 1);
        assert_eq!(*serving.borrow(), 1);
        board.update(1, |slot| slot.state = WorkerState::Stopped);
        assert_eq!(*serving.borrow(), 0);
    }
}
