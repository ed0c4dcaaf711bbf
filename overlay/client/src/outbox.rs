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
//! The queue is bounded by [`Options::write_buffer`](crate::Options): [`Outbox::room`] waits
//! while it is full. Control packets (credit, tunnel confirmations and closes) skip that wait,
//! so the reader task never waits for the writer.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use petal_protocol::relay::ClientPacket;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::pool::lock;

/// Rounds of others' bytes a submitter writes before handing over to the writer task.
const INLINE_ROUNDS: usize = 4;
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
            }),
            sink: Mutex::new(Some(Box::pin(sink))),
            writer_wake: Notify::new(),
            room: Notify::new(),
            high_water: high_water.max(1),
        }
    }

    /// Waits until the queue has room (or the outbox refuses everything).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.closed || st.dead || st.queued.len() < self.high_water {
                    return;
                }
                st.waiters = true;
            }
            notified.await;
        }
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
