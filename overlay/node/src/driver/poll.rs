//! Busy polling of the node task ([`crate::Options::busy_poll`]).

use std::time::{Duration, Instant};

/// When the node task last handled input, and how long after it the task keeps polling.
#[derive(Debug)]
pub(super) struct BusyPoll {
    limit: Duration,
    last: Option<Instant>,
}

impl BusyPoll {
    pub(super) fn new(limit: Duration) -> Self {
        BusyPoll { limit, last: None }
    }

    /// Polling is on at all.
    pub(super) fn on(&self) -> bool {
        !self.limit.is_zero()
    }

    /// With nothing waiting: true while the task should look again rather than sleep (within
    /// the window after the last input); once it is past, false until the next input.
    pub(super) fn keep_polling(&mut self) -> bool {
        self.keep_polling_at(machine_now())
    }

    fn keep_polling_at(&mut self, now: Instant) -> bool {
        let keep = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.limit);
        if !keep {
            self.last = None;
        }
        keep
    }

    /// The task handled input just now.
    pub(super) fn handled(&mut self) {
        if self.on() {
            self.last = Some(machine_now());
        }
    }
}

/// The machine's clock, not tokio's: under a simulated clock (turmoil), which stands still
/// while a task keeps running, polling would never end.
#[expect(
    clippy::disallowed_methods,
    reason = "busy polling is bounded in real time, never simulated time"
)]
fn machine_now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_lasts_the_window_after_input_and_stops_until_the_next() {
        let mut p = BusyPoll::new(Duration::from_micros(50));
        assert!(p.on());
        let t = machine_now();
        assert!(!p.keep_polling_at(t), "no input yet: sleep");
        p.last = Some(t);
        assert!(p.keep_polling_at(t + Duration::from_micros(49)));
        assert!(!p.keep_polling_at(t + Duration::from_micros(50)), "past it");
        assert!(
            !p.keep_polling_at(t + Duration::from_micros(10)),
            "closed until the next input"
        );
        p.handled();
        assert!(p.last.is_some(), "input opens the window again");
    }

    #[test]
    fn zero_is_off() {
        let mut p = BusyPoll::new(Duration::ZERO);
        assert!(!p.on());
        p.handled();
        assert!(p.last.is_none() && !p.keep_polling());
    }
}
