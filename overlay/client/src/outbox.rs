//! The write side: a combining outbox in front of the socket's write half.
//!
//! Packets are encoded whole into one queue buffer, in submission order. Whoever submits to an
//! idle outbox becomes its writer: it writes the queue straight away with non-blocking
//! `poll_write` calls (no task switch on the request path), and keeps writing what others
//! queued meanwhile for a few rounds. Submitters that find a writer active only append (their
//! bytes go out with the active writer's next write: batching under load). When the socket
//! would block, or after those rounds, the writer task takes over and finishes with real
//! wakeups. Nothing here awaits while holding a lock, so cancelling a caller never leaves a
//! packet half written.
//!
//! One submitter alone never finds a writer active: a loop publishing as fast as it can would
//! pay one `send` a packet. So a packet that finds the outbox idle less than
//! [`STREAMING_GAP`] after the previous one did is left to the writer task, which takes
//! everything queued by the time it runs: a stream goes out in batches, and a packet after a
//! pause (a request, an occasional event) is still written at once. Measured with `petal bench`
//! against one `petald` (2 vCPUs, 3 s phases, 2 runs each, against the build before):
//! publish 900-916 k delivered/s against 774-795 k, broadcast 973-975 k against 835-849 k,
//! requests 221-227 k/s at 64 in flight against 214-215 k and 280-283 k at 256 against
//! 254-268 k; with everything pinned to one CPU, publish 1.25-1.28 M against 1.03 M, while
//! single-event latency stayed (p50 11.3-11.4 us), and request p50 was 17.9-18.3 us against
//! 18.0-18.4 (three pairs, this rule on tokio's clock with the decoder change beside it, against
//! the build before both). The gap is measured
//! between submissions, not from the end of a write: on one CPU a write can be preempted by
//! the receiver, and its end then comes after the reply it caused. The clock is tokio's, so
//! that under the turmoil simulator the rule follows simulated time and a scenario's runs stay
//! byte-identical (the real stack's scenarios run this code). A packet left to the writer
//! task leaves only when that task runs: `Connection::close` waits for it, a runtime shut
//! down at once does not.
//!
//! The queue is bounded by [`Options::write_buffer`](crate::Options): [`Outbox::room`] waits
//! while it is full. Control packets (credit, tunnel confirmations and closes) skip that wait,
//! so the reader task never waits for the writer.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use petal_protocol::relay::ClientPacket;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::pool::lock;

/// Rounds of others' bytes a submitter writes before handing over to the writer task.
const INLINE_ROUNDS: usize = 4;
/// A packet that finds the outbox idle this soon after the previous such packet is left to the
/// writer task (see the module docs).
const STREAMING_GAP: Duration = Duration::from_micros(5);
/// Largest queue buffer kept for reuse.
const KEEP_CAPACITY: usize = 1 << 20;

type Sink = Pin<Box<dyn AsyncWrite + Send>>;

/// The outbox; see the module docs.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The write half; locked only by the current writer, never across an await.
    sink: Mutex<Option<Sink>>,
    /// Wakes the writer task (hand-over, error, end).
    writer_wake: Notify,
    /// Wakes submitters waiting for room.
    room: Notify,
    high_water: usize,
    /// [`STREAMING_GAP`] (longer in tests, which must not depend on the machine's speed).
    streaming_gap: Duration,
}

struct State {
    /// Encoded packets not yet taken by a writer.
    queued: Vec<u8>,
    spare: Vec<u8>,
    /// A writer is active (a submitter's inline write or the writer task).
    busy: bool,
    /// Bytes the writer task must finish, and how far they were written.
    handoff: Option<(Vec<u8>, usize)>,
    /// A submitter found the queue full since the last wakeup.
    waiters: bool,
    /// CLOSE is queued: nothing may follow it.
    closed: bool,
    /// CLOSE was written and the write direction shut down.
    shut_down: bool,
    /// Writing failed or the connection ended: nothing more is written.
    dead: bool,
    /// The write error, for the writer task to report.
    error: Option<io::Error>,
    /// When a packet last found no writer active.
    idle_push: Option<Instant>,
}

/// Why a packet was not queued.
#[derive(Debug)]
pub(crate) struct Refused;

impl Outbox {
    /// An outbox writing to `sink`, holding up to about `high_water` queued bytes.
    pub(crate) fn new<W: AsyncWrite + Send + 'static>(sink: W, high_water: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                queued: Vec::with_capacity(4096),
                spare: Vec::with_capacity(4096),
                busy: false,
                handoff: None,
                waiters: false,
                closed: false,
                shut_down: false,
                dead: false,
                error: None,
                idle_push: None,
            }),
            sink: Mutex::new(Some(Box::pin(sink))),
            writer_wake: Notify::new(),
            room: Notify::new(),
            high_water: high_water.max(1),
            streaming_gap: STREAMING_GAP,
        }
    }

    /// Waits until the queue has room (or the outbox refuses everything).
    pub(crate) async fn room(&self) {
        // The common case first, without registering with the `Notify` (whose waiter list
        // has a lock of its own, taken twice per registration): under a request flood that
        // registration was most of this call's cost.
        if self.room_or_refused() {
            return;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if self.room_or_refused_in(&st) {
                    return;
                }
                st.waiters = true;
            }
            notified.await;
        }
    }

    /// True when a packet queued now would be within the bound, or would be refused.
    fn room_or_refused(&self) -> bool {
        self.room_or_refused_in(&lock(&self.state))
    }

    fn room_or_refused_in(&self, st: &State) -> bool {
        st.closed || st.dead || st.queued.len() < self.high_water
    }

    /// Queues `packet` without waiting, writing it at once if no writer is active.
    pub(crate) fn push(&self, packet: &ClientPacket) -> Result<(), Refused> {
        let out = {
            let mut st = lock(&self.state);
            if st.closed || st.dead {
                return Err(Refused);
            }
            packet.encode(&mut st.queued);
            if matches!(packet, ClientPacket::Close) {
                st.closed = true;
            }
            if st.busy {
                return Ok(());
            }
            st.busy = true;
            let now = Instant::now();
            let streaming = st
                .idle_push
                .replace(now)
                .is_some_and(|t| now.saturating_duration_since(t) < self.streaming_gap);
            if streaming {
                let spare = std::mem::take(&mut st.spare);
                let out = std::mem::replace(&mut st.queued, spare);
                st.handoff = Some((out, 0));
                drop(st);
                self.writer_wake.notify_one();
                return Ok(());
            }
            let spare = std::mem::take(&mut st.spare);
            std::mem::replace(&mut st.queued, spare)
        };
        self.write_inline(out);
        Ok(())
    }

    /// Writes `out` (and what gets queued meanwhile, for a few rounds) without blocking; hands
    /// over to the writer task if the socket is not ready.
    fn write_inline(&self, mut out: Vec<u8>) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut sink = lock(&self.sink);
        let Some(sink) = sink.as_mut() else {
            return self.fail(None);
        };
        let mut pos = 0;
        for _ in 0..INLINE_ROUNDS {
            match write_all(sink.as_mut(), &mut cx, &out, &mut pos) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return self.fail(Some(e)),
                Poll::Ready(Ok(())) => {}
            }
            if self.next_round(&mut out).is_none() {
                return;
            }
            pos = 0;
            if out.is_empty() {
                // Everything written: flush (a no-op on TCP) and go idle.
                match sink.as_mut().poll_flush(&mut cx) {
                    Poll::Ready(Ok(())) => return self.idle(out),
                    Poll::Ready(Err(e)) => return self.fail(Some(e)),
                    Poll::Pending => break,
                }
            }
        }
        self.hand_over(out, pos);
    }

    /// After `out` was written: takes what was queued meanwhile (`Some(true)`), or leaves `out`
    /// empty (`Some(false)`); `None` once the outbox is dead.
    fn next_round(&self, out: &mut Vec<u8>) -> Option<bool> {
        let mut st = lock(&self.state);
        if st.dead {
            return None;
        }
        out.clear();
        if st.queued.is_empty() {
            return Some(false);
        }
        std::mem::swap(out, &mut st.queued);
        // The queue is empty again: senders waiting for room may go on.
        let wake = std::mem::take(&mut st.waiters);
        drop(st);
        if wake {
            self.room.notify_waiters();
        }
        Some(true)
    }

    /// The writer found nothing more to write.
    fn idle(&self, mut out: Vec<u8>) {
        let mut st = lock(&self.state);
        if !st.queued.is_empty() || (st.closed && !st.shut_down) {
            // Raced with a submitter that saw `busy`, or CLOSE went out and the write direction
            // must be shut down: the writer task goes on.
            drop(st);
            return self.hand_over(out, 0);
        }
        st.busy = false;
        if out.capacity() <= KEEP_CAPACITY {
            out.clear();
            st.spare = out;
        }
        let wake = std::mem::take(&mut st.waiters);
        drop(st);
        if wake {
            self.room.notify_waiters();
        }
    }

    fn hand_over(&self, out: Vec<u8>, pos: usize) {
        lock(&self.state).handoff = Some((out, pos));
        self.writer_wake.notify_one();
    }

    /// Writing failed (`error`) or the sink is gone: refuse everything from now on.
    fn fail(&self, error: Option<io::Error>) {
        let mut st = lock(&self.state);
        st.dead = true;
        if st.error.is_none() {
            st.error = error;
        }
        drop(st);
        self.writer_wake.notify_one();
        self.room.notify_waiters();
    }

    /// Stops writing and drops the write half (the connection ended).
    pub(crate) fn shut(&self) {
        lock(&self.state).dead = true;
        lock(&self.sink).take();
        self.writer_wake.notify_one();
        self.room.notify_waiters();
    }

    /// The writer task: finishes hand-overs with real wakeups. Returns the write error that
    /// killed the outbox, or `None` when it was shut.
    pub(crate) async fn run_writer(&self) -> Option<io::Error> {
        loop {
            let (mut out, mut pos) = loop {
                let notified = self.writer_wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut st = lock(&self.state);
                    if st.dead {
                        return st.error.take();
                    }
                    if let Some(handoff) = st.handoff.take() {
                        break handoff;
                    }
                }
                notified.await;
            };
            loop {
                let written = poll_fn(|cx| {
                    let mut sink = lock(&self.sink);
                    let Some(sink) = sink.as_mut() else {
                        return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                    };
                    std::task::ready!(write_all(sink.as_mut(), cx, &out, &mut pos))?;
                    sink.as_mut().poll_flush(cx)
                })
                .await;
                if let Err(e) = written {
                    self.fail(Some(e));
                    break;
                }
                match self.next_round(&mut out) {
                    Some(true) => pos = 0,
                    Some(false) => {
                        self.shut_down_after_close().await;
                        self.idle(out);
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}

impl Outbox {
    /// Once CLOSE is written, shuts the write direction down (the node sees end of stream
    /// after CLOSE). A failure there changes nothing: the node has what it needs.
    async fn shut_down_after_close(&self) {
        if !lock(&self.state).closed {
            return;
        }
        let result = poll_fn(|cx| match lock(&self.sink).as_mut() {
            Some(sink) => sink.as_mut().poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        })
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "shutting down the write direction after CLOSE failed");
        }
        lock(&self.state).shut_down = true;
    }
}

/// Writes `buf[*pos..]`, advancing `pos`.
fn write_all(
    mut sink: Pin<&mut (dyn AsyncWrite + Send)>,
    cx: &mut Context<'_>,
    buf: &[u8],
    pos: &mut usize,
) -> Poll<io::Result<()>> {
    while *pos < buf.len() {
        match std::task::ready!(sink.as_mut().poll_write(cx, &buf[*pos..])) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *pos += n,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    fn event(n: u32) -> ClientPacket {
        ClientPacket::Publish {
            topic: "t".to_owned(),
            event: bytes::Bytes::copy_from_slice(&n.to_be_bytes()),
        }
    }

    fn encoded(range: std::ops::Range<u32>) -> Vec<u8> {
        let mut want = Vec::new();
        for n in range {
            event(n).encode(&mut want);
        }
        want
    }

    async fn read_exactly(rd: &mut tokio::io::DuplexStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(60), rd.read_exact(&mut got))
            .await
            .expect("bytes within 60 s")
            .expect("read");
        got
    }

    /// A packet after a pause goes out at once, without the writer task; one right behind
    /// another waits for the writer task, which then sends it.
    #[tokio::test]
    async fn pause_writes_inline_and_stream_goes_to_the_writer_task() {
        let (wr, mut rd) = tokio::io::duplex(1 << 16);
        let mut outbox = Outbox::new(wr, 1 << 16);
        let gap = Duration::from_millis(200);
        outbox.streaming_gap = gap;
        let outbox = Arc::new(outbox);
        outbox.push(&event(0)).expect("queued");
        assert_eq!(
            read_exactly(&mut rd, encoded(0..1).len()).await,
            encoded(0..1)
        );
        tokio::time::sleep(gap * 2).await;
        outbox.push(&event(1)).expect("queued");
        assert_eq!(
            read_exactly(&mut rd, encoded(1..2).len()).await,
            encoded(1..2)
        );

        // Two more back to back: the first (after a pause) inline, the second left queued.
        tokio::time::sleep(gap * 2).await;
        outbox.push(&event(2)).expect("queued");
        outbox.push(&event(3)).expect("queued");
        assert_eq!(
            read_exactly(&mut rd, encoded(2..3).len()).await,
            encoded(2..3)
        );
        let mut more = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(50), rd.read(&mut more)).await;
        assert!(
            early.is_err(),
            "a streamed packet was written without the writer task"
        );
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.run_writer().await }
        });
        assert_eq!(
            read_exactly(&mut rd, encoded(3..4).len()).await,
            encoded(3..4)
        );
        outbox.shut();
        assert!(writer.await.expect("writer task").is_none());
    }

    /// `room` waits while the queue is over its bound (the socket takes nothing), returns at
    /// once while it is under, and wakes its waiter once the writer drains the queue.
    #[tokio::test]
    async fn room_waits_while_the_queue_is_full() {
        // A pipe that takes one frame at most: the rest stays queued.
        let frame = encoded(0..1).len();
        let (wr, mut rd) = tokio::io::duplex(frame);
        let outbox = Arc::new(Outbox::new(wr, 4 * frame));
        tokio::time::timeout(Duration::from_secs(1), outbox.room())
            .await
            .expect("room at once while the queue is empty");
        for n in 0..8 {
            outbox.push(&event(n)).expect("queued");
        }
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "room returned over the bound");
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.run_writer().await }
        });
        assert_eq!(read_exactly(&mut rd, frame * 8).await, encoded(0..8));
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("room once the queue drained")
            .expect("waiter");
        outbox.shut();
        assert!(writer.await.expect("writer task").is_none());
    }

    /// Three submitters in tight loops, their packets left to the writer task: every packet
    /// arrives once, each submitter's in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_arrive_whole_and_in_order() {
        const EACH: u32 = 5_000;
        let (wr, mut rd) = tokio::io::duplex(1 << 12);
        let mut outbox = Outbox::new(wr, 1 << 14);
        // Every packet that finds the outbox idle, but the first, goes to the writer task.
        outbox.streaming_gap = Duration::from_secs(3600);
        let outbox = Arc::new(outbox);
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.run_writer().await }
        });
        let senders: Vec<_> = (0..3u32)
            .map(|s| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    for n in 0..EACH {
                        outbox.room().await;
                        outbox.push(&event(s * EACH + n)).expect("queued");
                    }
                })
            })
            .collect();
        let frame = encoded(0..1).len();
        let got = read_exactly(&mut rd, frame * 3 * EACH as usize).await;
        let mut next = [0u32; 3];
        for chunk in got.chunks(frame) {
            let n = u32::from_be_bytes(chunk[frame - 4..].try_into().expect("4 bytes"));
            let s = (n / EACH) as usize;
            assert_eq!(n % EACH, next[s], "sender {s} out of order");
            next[s] += 1;
        }
        assert_eq!(next, [EACH; 3]);
        for s in senders {
            s.await.expect("sender");
        }
        outbox.shut();
        assert!(writer.await.expect("writer task").is_none());
    }
}
