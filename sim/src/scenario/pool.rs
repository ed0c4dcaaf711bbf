//! Independent runs of one scenario on a pool of threads, gathered in run order.
//!
//! Some scenarios are many simulations that share nothing (`cold-start`'s runs over many
//! master seeds, `churn`'s and `churn-messaging`'s runs at several churn rates). Each run owns
//! its simulator and derives its seed from its index, so a run's result does not depend on the
//! thread that computed it or on when; [`map_in_order`] returns the results in run order, so
//! the report is byte for byte the one a single thread writes.
//!
//! How many threads may work is a [`Threads`] budget, which can grow while the runs go on: the
//! `sim` binary running a suite starts every scenario with one thread and raises the budget of
//! a scenario with runs left when the cores of its finished siblings fall idle.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::progress::ChildLine;

/// How often a worker that is over the budget looks whether it was raised.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Stack of the pool's worker threads (the size of a main thread's on Linux).
const WORKER_STACK_BYTES: usize = 8 << 20;

/// The cores of this machine, as `std::thread::available_parallelism` says (1 if unknown).
pub fn available_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// How many threads a scenario's independent runs may use: a budget that starts at some
/// number and may be raised, up to a maximum, while they run. Clones share the budget.
#[derive(Clone, Debug)]
pub struct Threads(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    budget: AtomicUsize,
    max: usize,
    /// Announce the runs on stdout as [`ChildLine::Width`] (a suite's child process).
    announce: bool,
    busy: AtomicUsize,
    peak: AtomicUsize,
}

impl Threads {
    /// `n` threads (at least one), no more, no fewer.
    pub fn fixed(n: usize) -> Self {
        Self::new(n, n, false)
    }

    /// As many threads as the machine has cores.
    pub fn available() -> Self {
        Self::fixed(available_parallelism())
    }

    /// A suite's child process: `budget` threads now, which the parent may raise up to `max`
    /// (see [`Threads::raise`]); the runs are announced on stdout ([`ChildLine::Width`]) so
    /// that the parent knows this scenario can use more.
    pub fn for_child(budget: usize, max: usize) -> Self {
        Self::new(budget, max, true)
    }

    fn new(budget: usize, max: usize, announce: bool) -> Self {
        let max = max.max(1);
        Self(Arc::new(Inner {
            budget: AtomicUsize::new(budget.clamp(1, max)),
            max,
            announce,
            busy: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }))
    }

    /// Raises the budget to `n` (never lowers it, never above the maximum).
    pub fn raise(&self, n: usize) {
        self.0
            .budget
            .fetch_max(n.min(self.0.max), Ordering::Relaxed);
    }

    /// Threads that may work now.
    pub fn budget(&self) -> usize {
        self.0.budget.load(Ordering::Relaxed)
    }

    /// Threads that may ever work.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// The most runs that ran at the same time so far (0 when the scenario has no
    /// independent runs: it ran on its own thread).
    pub fn peak(&self) -> usize {
        self.0.peak.load(Ordering::Relaxed)
    }

    fn enter(&self) -> Busy<'_> {
        let now = self.0.busy.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.peak.fetch_max(now, Ordering::Relaxed);
        Busy(self)
    }
}

/// One run in progress (counted for [`Threads::peak`]).
struct Busy<'a>(&'a Threads);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `run(0)`, `run(1)`, ... `run(runs - 1)` on up to `threads.max()` threads (only as many
/// at a time as the budget allows; the calling thread is one of them) and returns their results
/// in run order.
///
/// Runs start in index order. After a run fails no new run starts; the error returned is the
/// one of the first failed run in index order, which is the error a single thread meets
/// first (every run before it started, and ran to its end).
pub(crate) fn map_in_order<R: Send>(
    threads: &Threads,
    runs: usize,
    run: impl Fn(usize) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    if threads.0.announce {
        ChildLine::Width { runs }.emit();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<anyhow::Result<R>>>> =
        (0..runs).map(|_| Mutex::new(None)).collect();
    let work = |worker: usize| {
        while !failed.load(Ordering::Relaxed) {
            if worker >= threads.budget() {
                if next.load(Ordering::Relaxed) >= runs {
                    return;
                }
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else {
                return;
            };
            let result = {
                let _busy = threads.enter();
                run(i)
            };
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        }
    };
    let work = &work;
    std::thread::scope(|s| {
        for worker in 1..threads.max().min(runs) {
            // A worker that cannot be started leaves its share to the others.
            let _ = std::thread::Builder::new()
                .name(format!("run-worker-{worker}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(s, move || work(worker));
        }
        work(0);
    });
    let mut results = Vec::with_capacity(runs);
    for (i, slot) in slots.into_iter().enumerate() {
        match slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(Ok(r)) => results.push(r),
            Some(Err(e)) => return Err(e),
            None => anyhow::bail!("run {i} did not run"),
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs that take longer the earlier they are, so that on several threads they end in
    /// another order than they started.
    fn uneven(i: usize) -> anyhow::Result<u64> {
        std::thread::sleep(Duration::from_millis(3 * (8 - i as u64 % 8)));
        Ok((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    #[test]
    fn results_come_in_run_order_whatever_the_threads() {
        let single = Threads::fixed(1);
        let one = map_in_order(&single, 20, uneven).unwrap();
        assert_eq!(single.peak(), 1);
        for n in [2, 3, 8, 64] {
            let t = Threads::fixed(n);
            assert_eq!(map_in_order(&t, 20, uneven).unwrap(), one, "{n} threads");
            assert!(t.peak() >= 2 && t.peak() <= n.min(20), "peak {}", t.peak());
        }
        assert_eq!(Threads::fixed(2).peak(), 0, "no run yet");
        assert!(
            map_in_order(&Threads::fixed(4), 0, uneven)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_first_failure_in_run_order_is_returned() {
        let run = |i: usize| {
            std::thread::sleep(Duration::from_millis(if i == 3 { 40 } else { 1 }));
            if i == 3 || i == 5 {
                anyhow::bail!("run {i} failed");
            }
            Ok(i)
        };
        for n in [1, 2, 6] {
            let e = map_in_order(&Threads::fixed(n), 10, run).unwrap_err();
            assert_eq!(e.to_string(), "run 3 failed", "{n} threads");
        }
    }

    #[test]
    fn a_raised_budget_puts_more_threads_to_work() {
        let t = Threads::new(1, 4, false);
        assert_eq!(t.budget(), 1);
        let raiser = t.clone();
        let out = map_in_order(&t, 12, |i| {
            if i == 0 {
                raiser.raise(3);
            }
            std::thread::sleep(Duration::from_millis(150));
            Ok(i)
        })
        .unwrap();
        assert_eq!(out, (0..12).collect::<Vec<_>>());
        assert_eq!(t.budget(), 3);
        assert_eq!(t.peak(), 3);
        t.raise(10);
        assert_eq!(t.budget(), 4, "never above the maximum");
        t.raise(2);
        assert_eq!(t.budget(), 4, "never lowered");
    }
}
