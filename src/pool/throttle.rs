//! How many of a process's stderr lines reach the log: [`LogThrottle`], a
//! token bucket per worker (and one for the template).
//!
//! A process may log a burst of [`BURST`] lines at once, then
//! [`PER_SECOND`] a second. Lines past that are counted, not logged, and
//! the count is reported ([`Dropped`]) once [`REPORT_EVERY`] has passed
//! since the first of them, or when the stream ends: a flood costs the log
//! a bounded number of lines a second, and the log says how big it was.
//! Time is tokio's, so the tests run it paused.

use std::time::Duration;

use tokio::time::Instant;

/// Lines a process may log at once, after a quiet spell.
pub const BURST: u32 = 500;
/// Lines a process may log a second, over time.
pub const PER_SECOND: u32 = 50;
/// How long dropped lines are counted before the count is logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What one line costs: the bucket holds time, refilled as time passes.
const LINE_COST: Duration = Duration::from_millis(1000 / PER_SECOND as u64);
/// What the bucket holds when full: [`BURST`] lines.
const CAPACITY: Duration = LINE_COST.saturating_mul(BURST);

/// The lines one process may still log, and those it dropped since the last
/// report.
#[derive(Debug)]
pub struct LogThrottle {
    credit: Duration,
    refilled_at: Instant,
    dropped: u64,
    /// When the first line not yet reported was dropped.
    dropping_since: Option<Instant>,
}

/// Lines that were not logged: how many, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub lines: u64,
    pub over: Duration,
}

impl LogThrottle {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> LogThrottle {
        LogThrottle {
            credit: CAPACITY,
            refilled_at: now,
            dropped: 0,
            dropping_since: None,
        }
    }

    /// Whether a line that came at `now` may be logged; if not, it is counted.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.credit = (self.credit + elapsed).min(CAPACITY);
        self.refilled_at = self.refilled_at.max(now);
        if let Some(left) = self.credit.checked_sub(LINE_COST) {
            self.credit = left;
            return true;
        }
        self.dropped += 1;
        self.dropping_since.get_or_insert(now);
        false
    }

    /// When the lines dropped so far are to be reported (`None`: none were).
    pub fn report_due(&self) -> Option<Instant> {
        self.dropping_since.map(|since| since + REPORT_EVERY)
    }

    /// The dropped lines to log at `now`: once [`REPORT_EVERY`] has passed
    /// since the first of them, or at once when the stream `ended`. The
    /// count then starts again from zero.
    pub fn report(&mut self, now: Instant, ended: bool) -> Option<Dropped> {
        let since = self.dropping_since?;
        if !ended && now < since + REPORT_EVERY {
            return None;
        }
        self.dropping_since = None;
        Some(Dropped {
            lines: std::mem::take(&mut self.dropped),
            over: now.saturating_duration_since(since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    /// Offers `lines` lines at the current instant; how many were admitted.
    fn offer(throttle: &mut LogThrottle, lines: u32) -> u32 {
        let now = Instant::now();
        (0..lines).map(|_| u32::from(throttle.admit(now))).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_logged_then_lines_are_counted() {
        let mut throttle = LogThrottle::new(Instant::now());
        assert_eq!(offer(&mut throttle, BURST + 1000), BURST);
        assert_eq!(throttle.report(Instant::now(), false), None, "not due yet");
        advance(Duration::from_millis(100)).await;
        // A tenth of a second refills a tenth of the rate.
        assert_eq!(offer(&mut throttle, 100), PER_SECOND / 10);
        advance(REPORT_EVERY).await;
        let dropped = throttle.report(Instant::now(), false).unwrap();
        assert_eq!(dropped.lines, 1000 + 100 - u64::from(PER_SECOND / 10));
        assert_eq!(dropped.over, REPORT_EVERY + Duration::from_millis(100));
        assert_eq!(throttle.report(Instant::now(), true), None, "reported once");
        assert_eq!(throttle.report_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_logs_the_rate_and_one_report_a_period() {
        let mut throttle = LogThrottle::new(Instant::now());
        assert_eq!(offer(&mut throttle, BURST), BURST);
        let (mut logged, mut reports, mut dropped) = (0, 0, 0);
        // Ten seconds of 100 lines every 10 ms (10,000 lines a second).
        for _ in 0..1000 {
            advance(Duration::from_millis(10)).await;
            logged += offer(&mut throttle, 100);
            if let Some(report) = throttle.report(Instant::now(), false) {
                reports += 1;
                dropped += report.lines;
            }
        }
        assert_eq!(logged, 10 * PER_SECOND);
        // One a period, each due a period after the first line it counts:
        // at 1.01 s, 2.02 s, ... 9.09 s; the rest when the stream ends.
        assert_eq!(reports, 9);
        dropped += throttle.report(Instant::now(), true).unwrap().lines;
        assert_eq!(dropped + u64::from(logged), 100_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_refills_the_burst_and_no_more() {
        let mut throttle = LogThrottle::new(Instant::now());
        assert_eq!(offer(&mut throttle, BURST + 1), BURST);
        advance(Duration::from_secs(3600)).await;
        assert_eq!(offer(&mut throttle, 2 * BURST), BURST);
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_stream_reports_at_once() {
        let mut throttle = LogThrottle::new(Instant::now());
        assert_eq!(
            throttle.report(Instant::now(), true),
            None,
            "nothing dropped"
        );
        offer(&mut throttle, BURST + 3);
        let due = throttle.report_due().unwrap();
        assert_eq!(due, Instant::now() + REPORT_EVERY);
        let dropped = throttle.report(Instant::now(), true).unwrap();
        assert_eq!(dropped.lines, 3);
    }
}
