//! Tunnels: ordered, chunked, credit-throttled message streams between two applications.
//!
//! Sending: a message is cut into chunks of at most the node's chunk limit; the first chunk
//! carries the whole message's length, continuations 0. A chunk goes out only when the credit
//! the node granted covers it. Receiving: chunks are reassembled; the node may start a message
//! only within the buffer this side granted, and the buffer is re-granted as the application
//! takes whole messages.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use petal_protocol::relay::{CHUNK_LIMIT, ClientPacket};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::conn::Inner;
use crate::error::{Ended, Error};
use crate::pool::lock;
use crate::transport::PushError;

/// One end of a tunnel: an ordered stream of whole messages in each direction.
///
/// Obtained from [`Connection::tunnel`](crate::Connection::tunnel) (outbound) or
/// [`ServiceHandler::handle_tunnel`](crate::ServiceHandler::handle_tunnel) (inbound). All
/// methods take `&self`; share a tunnel between a sending and a receiving task with an `Arc`.
/// Dropping it closes it without waiting for the acknowledgement.
///
/// ```no_run
/// # async fn demo(conn: petal_client::Connection) -> Result<(), petal_client::Error> {
/// use std::time::Duration;
/// let tunnel = conn.tunnel("echo", Duration::from_secs(1)).await?;
/// tunnel.send(&b"hello"[..], Duration::from_secs(1)).await?;
/// let reply = tunnel.recv().await?;
/// tunnel.close().await?;
/// # Ok(()) }
/// ```
pub struct Tunnel {
    shared: Arc<TunnelShared>,
    inner: Arc<Inner>,
}

/// A tunnel's state, shared by its [`Tunnel`] and the reader task.
pub(crate) struct TunnelShared {
    id: u64,
    /// Receive buffer granted to the node, in bytes.
    buffer: u64,
    state: Mutex<TunState>,
    /// Held for a whole message by `send`, so messages never interleave.
    send_lock: tokio::sync::Mutex<()>,
    credit_changed: Notify,
    recv_ready: Notify,
    ended_notify: Notify,
}

struct TunState {
    /// Largest chunk payload this side may send.
    chunk_limit: u64,
    /// Bytes this side may still send.
    credit: u64,
    /// Set until the node confirms an outbound open.
    opening: Option<oneshot::Sender<Result<(), Error>>>,
    /// A message being reassembled.
    partial: Option<Partial>,
    /// Whole messages waiting for `recv`.
    ready: VecDeque<Bytes>,
    /// Bytes received and not yet granted back (partial and ready messages).
    outstanding: u64,
    /// How the tunnel ended.
    end: Option<Ended>,
    /// This side sent (or will send) TUN_CLOSE.
    local_close: bool,
}

struct Partial {
    size: u64,
    data: BytesMut,
}

impl TunnelShared {
    fn new(
        id: u64,
        buffer: u64,
        chunk_limit: u64,
        opening: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Self {
        TunnelShared {
            id,
            buffer,
            state: Mutex::new(TunState {
                chunk_limit: chunk_limit.clamp(1, CHUNK_LIMIT),
                credit: 0,
                opening,
                partial: None,
                ready: VecDeque::new(),
                outstanding: 0,
                end: None,
                local_close: false,
            }),
            send_lock: tokio::sync::Mutex::new(()),
            credit_changed: Notify::new(),
            recv_ready: Notify::new(),
            ended_notify: Notify::new(),
        }
    }

    /// Ends the tunnel (the first end wins) and wakes everyone waiting on it.
    pub(crate) fn finish(&self, end: Ended) {
        let opening = {
            let mut st = lock(&self.state);
            if st.end.is_none() {
                st.end = Some(end);
            }
            st.opening
                .take()
                .map(|tx| (tx, st.end.as_ref().map(Ended::to_error)))
        };
        if let Some((tx, Some(error))) = opening {
            let _ = tx.send(Err(error));
        }
        self.credit_changed.notify_waiters();
        self.recv_ready.notify_waiters();
        self.ended_notify.notify_waiters();
    }

    /// The node granted `space` more bytes.
    pub(crate) fn add_credit(&self, space: u64) {
        let mut st = lock(&self.state);
        st.credit = st.credit.saturating_add(space);
        drop(st);
        self.credit_changed.notify_waiters();
    }

    /// A chunk from the node: reassemble, re-grant what is dropped, give up on the tunnel if
    /// the node breaks the framing or the credit.
    pub(crate) fn on_transfer(&self, inner: &Inner, size: u64, payload: Bytes) {
        match self.reassemble(size, payload) {
            Ok((regrant, wake)) => {
                inner.grant(self.id, regrant);
                if wake {
                    self.recv_ready.notify_waiters();
                }
            }
            Err(what) => {
                tracing::warn!(tunnel = self.id, %what, "tunnel protocol violation, closing it");
                lock(&inner.tunnels).map.remove(&self.id);
                inner.send_control(ClientPacket::TunClose { id: self.id });
                self.finish(Ended::Broken(format!("tunnel {}: {what}", self.id)));
            }
        }
    }

    /// The reassembly state machine: returns the bytes to re-grant at once and whether a whole
    /// message became ready.
    fn reassemble(&self, size: u64, payload: Bytes) -> Result<(u64, bool), String> {
        let len = payload.len() as u64;
        let mut st = lock(&self.state);
        if st.end.is_some() || st.local_close {
            return Ok((0, false));
        }
        let mut regrant = 0;
        if size == 0 {
            let Some(partial) = st.partial.as_mut() else {
                // The tail of a message never started here: nothing to append it to.
                return Ok((len, false));
            };
            if partial.data.len() as u64 + len > partial.size {
                return Err(format!(
                    "chunks exceed their message's size of {} bytes",
                    partial.size
                ));
            }
            partial.data.extend_from_slice(&payload);
            let done = partial.data.len() as u64 == partial.size;
            st.outstanding += len;
            if done {
                if let Some(partial) = st.partial.take() {
                    st.ready.push_back(partial.data.freeze());
                }
            }
            return Ok((0, done));
        }
        if let Some(dropped) = st.partial.take() {
            // The sender gave up mid-message: drop it and give its bytes back.
            let n = dropped.data.len() as u64;
            st.outstanding -= n;
            regrant += n;
        }
        if size > self.buffer {
            return Err(format!(
                "a message of {size} bytes exceeds the buffer of {}",
                self.buffer
            ));
        }
        if len > size {
            return Err(format!(
                "a first chunk of {len} bytes exceeds its message's {size}"
            ));
        }
        if st.outstanding + len > self.buffer {
            return Err("the node sent beyond the granted credit".to_owned());
        }
        st.outstanding += len;
        if len == size {
            st.ready.push_back(payload);
            return Ok((regrant, true));
        }
        let capacity = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = BytesMut::with_capacity(capacity);
        data.extend_from_slice(&payload);
        st.partial = Some(Partial { size, data });
        Ok((regrant, false))
    }
}

impl TunnelShared {
    /// Takes the next whole message and the bytes to grant back for it (0 once the tunnel
    /// ended); the end's error once nothing is buffered; `None` to wait.
    fn take_message(&self) -> Option<Result<(Bytes, u64), Error>> {
        let mut st = lock(&self.state);
        if let Some(message) = st.ready.pop_front() {
            let n = message.len() as u64;
            st.outstanding -= n;
            let regrant = if st.end.is_none() { n } else { 0 };
            return Some(Ok((message, regrant)));
        }
        st.end.as_ref().map(|end| Err(end.to_error()))
    }
}

/// Opens an outbound tunnel: allocates an id, sends TUN_INIT, waits for TUN_CONFIRM.
pub(crate) async fn open(
    inner: &Arc<Inner>,
    cluster: &str,
    timeout_ms: u64,
) -> Result<Tunnel, Error> {
    let id = inner
        .next_tunnel
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(TunnelShared::new(
        id,
        inner.options.tunnel_buffer,
        1,
        Some(tx),
    ));
    {
        let mut tunnels = lock(&inner.tunnels);
        if let Some(ended) = &tunnels.ended {
            return Err(ended.to_error());
        }
        tunnels.map.insert(id, shared.clone());
    }
    // Created now so that dropping this future (or failing) cleans up through `Drop`.
    let tunnel = Tunnel {
        shared,
        inner: inner.clone(),
    };
    let init = ClientPacket::TunInit {
        id,
        cluster: cluster.to_owned(),
        timeout_ms,
    };
    if let Err(e) = inner.send(init).await {
        lock(&inner.tunnels).map.remove(&id);
        tunnel
            .shared
            .finish(Ended::Closed("connection closing".to_owned()));
        return Err(e);
    }
    match rx.await {
        Ok(Ok(())) => Ok(tunnel),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(inner.ended_error()),
    }
}

/// The node's answer to an outbound open.
pub(crate) fn confirmed(inner: &Inner, id: u64, chunk_limit: Option<u64>) {
    let Some(shared) = inner.tunnel(id) else {
        inner.counters.ignored("confirmation of an unknown tunnel");
        inner.counters.unexpected_confirm();
        return;
    };
    let Some(chunk_limit) = chunk_limit else {
        lock(&inner.tunnels).map.remove(&id);
        let opening = lock(&shared.state).opening.take();
        if let Some(tx) = opening {
            let _ = tx.send(Err(Error::Timeout));
        }
        shared.finish(Ended::Closed("tunnel open timed out".to_owned()));
        return;
    };
    let mut st = lock(&shared.state);
    let Some(tx) = st.opening.take() else {
        drop(st);
        inner.counters.ignored("second confirmation of a tunnel");
        inner.counters.unexpected_confirm();
        return;
    };
    st.chunk_limit = chunk_limit.clamp(1, CHUNK_LIMIT);
    let abandoned = st.local_close;
    drop(st);
    inner.grant(id, shared.buffer);
    if abandoned || tx.send(Ok(())).is_err() {
        // The opener went away: close the tunnel the node just built.
        lock(&shared.state).local_close = true;
        inner.send_control(ClientPacket::TunClose { id });
    }
}

/// An inbound tunnel offer: confirm it with a fresh id, grant the buffer, hand it to the
/// service handler on a task of its own.
pub(crate) fn accept(inner: &Arc<Inner>, build_id: u64, chunk_limit: u64) {
    let Some(service) = &inner.service else {
        inner.counters.ignored("tunnel offered to a plain client");
        return;
    };
    let id = inner
        .next_tunnel
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let shared = Arc::new(TunnelShared::new(
        id,
        inner.options.tunnel_buffer,
        chunk_limit,
        None,
    ));
    {
        let mut tunnels = lock(&inner.tunnels);
        if tunnels.ended.is_some() {
            return;
        }
        tunnels.map.insert(id, shared.clone());
    }
    inner.send_control(ClientPacket::TunConfirm {
        build_id,
        tun_id: id,
    });
    inner.grant(id, shared.buffer);
    let tunnel = Tunnel {
        shared,
        inner: inner.clone(),
    };
    let callbacks = service.callbacks.clone();
    tokio::spawn(async move { callbacks.tunnel(tunnel) });
}

/// TUN_CLOSE from the node: the far end closed (or failed), or the acknowledgement of ours.
pub(crate) fn closed(inner: &Inner, id: u64, reason: String) {
    let removed = lock(&inner.tunnels).map.remove(&id);
    match removed {
        Some(shared) => shared.finish(Ended::Closed(reason)),
        None => inner.counters.ignored("close of an unknown tunnel"),
    }
}

/// Runs `fut` until `deadline`, if any; `None` when the deadline passed first.
async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut).await.ok(),
        None => Some(fut.await),
    }
}

impl Tunnel {
    /// Sends one message (not empty), waiting for credit chunk by chunk.
    ///
    /// Fails with [`Error::Timeout`] when `timeout` passes first. Parts of the message may have
    /// gone out by then; the receiver drops that partial message, and the tunnel stays usable:
    /// the next send starts a fresh message. Fails with [`Error::Closed`] or
    /// [`Error::Broken`] once the tunnel or connection has ended.
    pub async fn send(&self, message: impl Into<Bytes>, timeout: Duration) -> Result<(), Error> {
        let message = message.into();
        if message.is_empty() {
            return Err(Error::Invalid("a tunnel message cannot be empty"));
        }
        let deadline = Instant::now().checked_add(timeout);
        within(deadline, self.send_message(message))
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// The body of `send`; cancel-safe between chunks (credit is taken and the chunk queued in
    /// one step).
    async fn send_message(&self, message: Bytes) -> Result<(), Error> {
        let shared = &self.shared;
        let _serial = shared.send_lock.lock().await;
        let total = message.len();
        let mut offset = 0;
        while offset < total {
            let chunk_limit = self.wait_credit(total - offset).await?;
            let n = chunk_limit.min(total - offset);
            self.inner.out.room().await;
            {
                let mut st = lock(&shared.state);
                if let Some(end) = &st.end {
                    return Err(end.to_error());
                }
                // Only this sender spends credit, and it was checked: it still covers `n`.
                st.credit -= n as u64;
            }
            let chunk = ClientPacket::TunTransfer {
                id: shared.id,
                size: if offset == 0 { total as u64 } else { 0 },
                payload: message.slice(offset..offset + n),
            };
            if let Err(e) = self.inner.out.push(chunk) {
                return Err(match e {
                    PushError::Ended => self.inner.ended_error(),
                    PushError::Invalid(e) => Error::Protocol(e),
                });
            }
            offset += n;
        }
        Ok(())
    }

    /// Waits until the credit covers the next chunk of a message with `left` bytes to go;
    /// returns the chunk limit.
    async fn wait_credit(&self, left: usize) -> Result<usize, Error> {
        let shared = &self.shared;
        loop {
            let notified = shared.credit_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = lock(&shared.state);
                if let Some(end) = &st.end {
                    return Err(end.to_error());
                }
                if st.local_close {
                    return Err(Error::Closed("tunnel closed".to_owned()));
                }
                let chunk_limit = usize::try_from(st.chunk_limit).unwrap_or(usize::MAX);
                if st.credit >= chunk_limit.min(left) as u64 {
                    return Ok(chunk_limit);
                }
            }
            notified.await;
        }
    }

    /// Receives the next whole message, in order, and grants its bytes back to the node.
    ///
    /// After the tunnel ended, returns the messages still buffered, then
    /// [`Error::Closed`] with the far end's reason (`""` for a graceful close) or
    /// [`Error::Broken`].
    pub async fn recv(&self) -> Result<Bytes, Error> {
        let shared = &self.shared;
        loop {
            let notified = shared.recv_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match shared.take_message() {
                Some(Ok((message, regrant))) => {
                    self.inner.grant(shared.id, regrant);
                    return Ok(message);
                }
                Some(Err(e)) => return Err(e),
                None => notified.await,
            }
        }
    }

    /// Closes the tunnel: stops sends in progress, sends TUN_CLOSE after the chunks already
    /// queued, and waits for the node's acknowledgement. `Ok` also when the tunnel had already
    /// been closed; [`Error::Broken`] if it broke.
    pub async fn close(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let first = {
            let mut st = lock(&shared.state);
            let first = st.end.is_none() && !st.local_close;
            st.local_close = true;
            first
        };
        if first {
            shared.credit_changed.notify_waiters();
            let _serial = shared.send_lock.lock().await;
            self.inner
                .send(ClientPacket::TunClose { id: shared.id })
                .await?;
        }
        loop {
            let notified = shared.ended_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &lock(&shared.state).end {
                Some(Ended::Broken(what)) => return Err(Error::Broken(what.clone())),
                Some(Ended::Closed(_)) => return Ok(()),
                None => {}
            }
            notified.await;
        }
    }

    /// The tunnel's id on this connection.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Largest chunk this side sends: the node's chunk limit, at most 65536 bytes.
    pub fn chunk_limit(&self) -> u64 {
        lock(&self.shared.state).chunk_limit
    }

    /// Whether the tunnel has ended (closed or broken).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).end.is_some()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let send_close = {
            let mut st = lock(&self.shared.state);
            let send = st.end.is_none() && !st.local_close && st.opening.is_none();
            st.local_close = true;
            send
        };
        if send_close {
            self.inner
                .send_control(ClientPacket::TunClose { id: self.shared.id });
        }
        self.shared.credit_changed.notify_waiters();
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("Tunnel")
            .field("id", &self.shared.id)
            .field("credit", &st.credit)
            .field("end", &st.end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
