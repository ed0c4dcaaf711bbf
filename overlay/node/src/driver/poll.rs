//! Busy polling of the node task ([`crate::Options::busy_poll`]).

use std::time::{Duration, Instant};

/// When the node task last handled input, and how long after it the task keeps polling.
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

    /// With nothing waiting: true while the task should look again rather than sleep.
    pub(super) fn keep_polling(&mut self) -> bool {
        let keep = self.last.is_some_and(|t| t.elapsed() < self.limit);
        if keep {
            // Let another thread that wants this CPU run first (a peer or the application
            // pinned to the same CPU): polling must not take the CPU away from the input it
            // waits for. With none waiting the call returns at once.
            std::thread::yield_now();
        } else {
            self.last = None;
        }
        keep
    }

    /// The task handled something (an input or a timer) just now.
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
