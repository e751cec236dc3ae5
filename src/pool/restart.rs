//! Restart policy: how long a slot waits before it spawns a worker again.
//!
//! The first restart after a healthy run is immediate (a crashed worker is
//! replaced at once); repeated failures to start back off exponentially up
//! to a ceiling, so a broken environment does not spin the CPU.

use std::time::Duration;

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Exponential backoff between restarts of one slot.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::ZERO,
        }
    }
}

impl Backoff {
    /// The delay to wait now; the following one is longer.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).clamp(FIRST_DELAY, MAX_DELAY);
        delay
    }

    /// Called once a worker is up: the next failure restarts at once again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], FIRST_DELAY);
        assert_eq!(delays[2], FIRST_DELAY * 2);
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::ZERO);
    }
}
