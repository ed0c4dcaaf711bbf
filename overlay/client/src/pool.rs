//! Bounded handler pools: at most `workers` handlers of one category run at once, and at most
//! `max_bytes` of its deliveries are queued or being handled. Over the byte bound a delivery is
//! dropped and counted: the reader task never waits for an application handler.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes every queued item counts on top of its payload, so that a flood of empty messages is
/// bounded too.
pub(crate) const ITEM_OVERHEAD: usize = 64;

/// One kind of work a pool runs.
pub(crate) trait Job: Send + Sync + 'static {
    /// A delivery waiting for a handler.
    type Item: Send + 'static;
    /// Bytes the item counts against the pool's memory bound.
    fn size(item: &Self::Item) -> usize;
    /// Handles one item.
    fn run(&self, item: Self::Item) -> impl Future<Output = ()> + Send;
}

/// The reader's view of a pool, whatever its job type.
pub(crate) trait Submit<T>: Send + Sync {
    /// Queues `item`, or drops it (counting the drop) when the pool's memory is full.
    fn submit(&self, item: T);
}

/// A bounded pool running one job type on tokio tasks.
pub(crate) struct Pool<J: Job> {
    shared: Arc<Shared<J>>,
}

struct Shared<J: Job> {
    job: J,
    name: &'static str,
    max_workers: usize,
    max_bytes: usize,
    dropped: Arc<AtomicU64>,
    state: Mutex<State<J::Item>>,
}

struct State<T> {
    queue: VecDeque<(T, usize)>,
    /// Bytes queued plus bytes being handled.
    bytes: usize,
    /// Worker tasks alive.
    workers: usize,
}

impl<J: Job> Pool<J> {
    /// A pool named `name` (for logs) whose drops are added to `dropped`.
    pub(crate) fn new(
        job: J,
        name: &'static str,
        max_workers: usize,
        max_bytes: usize,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Pool {
            shared: Arc::new(Shared {
                job,
                name,
                max_workers: max_workers.max(1),
                max_bytes,
                dropped,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    bytes: 0,
                    workers: 0,
                }),
            }),
        }
    }
}

impl<J: Job> Submit<J::Item> for Pool<J> {
    fn submit(&self, item: J::Item) {
        let shared = &self.shared;
        let size = J::size(&item) + ITEM_OVERHEAD;
        let mut st = lock(&shared.state);
        if st.bytes.saturating_add(size) > shared.max_bytes {
            let queued = st.bytes;
            drop(st);
            let total = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                pool = shared.name,
                size,
                queued,
                limit = shared.max_bytes,
                dropped_total = total,
                "handler queue full, delivery dropped"
            );
            return;
        }
        st.bytes += size;
        st.queue.push_back((item, size));
        if st.workers < shared.max_workers {
            st.workers += 1;
            drop(st);
            spawn_worker(shared.clone());
        }
    }
}

fn spawn_worker<J: Job>(shared: Arc<Shared<J>>) {
    tokio::spawn(async move {
        let mut guard = Worker { shared, held: 0 };
        loop {
            let item = {
                let mut st = lock(&guard.shared.state);
                st.bytes -= guard.held;
                guard.held = 0;
                match st.queue.pop_front() {
                    Some((item, size)) => {
                        guard.held = size;
                        item
                    }
                    None => break,
                }
            };
            guard.shared.job.run(item).await;
        }
    });
}

/// Keeps the pool's accounting right however a worker ends (including a panicking handler):
/// releases its bytes, and starts a replacement if work is still queued.
struct Worker<J: Job> {
    shared: Arc<Shared<J>>,
    held: usize,
}

impl<J: Job> Drop for Worker<J> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.bytes -= self.held;
        st.workers -= 1;
        let restart = !st.queue.is_empty() && st.workers < self.shared.max_workers;
        if restart {
            st.workers += 1;
        }
        drop(st);
        if restart {
            if tokio::runtime::Handle::try_current().is_ok() {
                spawn_worker(self.shared.clone());
            } else {
                lock(&self.shared.state).workers -= 1;
            }
        }
    }
}

/// Locks a std mutex, ignoring poisoning (the protected state stays consistent: every critical
/// section here is panic-free).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::{Semaphore, mpsc};

    struct Gate {
        gate: Arc<Semaphore>,
        done: mpsc::UnboundedSender<usize>,
    }

    impl Job for Gate {
        type Item = usize;
        fn size(item: &usize) -> usize {
            *item
        }
        async fn run(&self, item: usize) {
            let _permit = self.gate.acquire().await.expect("gate open");
            let _ = self.done.send(item);
        }
    }

    #[tokio::test]
    async fn bounds_bytes_and_workers() {
        let gate = Arc::new(Semaphore::new(0));
        let (done, mut rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let max = 95 + 4 * ITEM_OVERHEAD;
        let pool = Pool::new(
            Gate {
                gate: gate.clone(),
                done,
            },
            "test",
            2,
            max,
            dropped.clone(),
        );
        for size in [40, 40, 10, 5, 30] {
            pool.submit(size);
        }
        // 40 + 40 + 10 + 5 fit (with the overhead of four items), 30 more does not.
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&pool.shared.state).workers, 2);
        gate.add_permits(100);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.expect("item"));
        }
        got.sort_unstable();
        assert_eq!(got, vec![5, 10, 40, 40]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let st = lock(&pool.shared.state);
        assert_eq!((st.bytes, st.workers), (0, 0));
    }
}
