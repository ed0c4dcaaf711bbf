//! WebSockets that put outside applications into a cluster's patterns:
//!
//! - `GET /v1/clusters/{cluster}/tunnel`: a tunnel to one member of the cluster (opened
//!   within `Petal-Timeout-Ms`, default 5000; 504 when no member takes it in time). Each
//!   WebSocket message (binary or text; empty ones are skipped) is one tunnel message, and each
//!   tunnel message comes as a binary WebSocket message, in order. Flow control is the
//!   tunnel's: while the far end grants no credit the gateway stops reading the WebSocket, so
//!   TCP pushes back on the sender. Either side's close ends both: the WebSocket closes with
//!   1000 when the far end closed the tunnel, 1011 and the reason when it broke; a client's
//!   close frame is answered (the closing handshake), then the tunnel is closed.
//! - `GET /v1/clusters/{cluster}/serve`: become a member of the cluster from outside. The
//!   gateway registers a member on the client's behalf and sends it JSON text messages:
//!   `{"type":"request","id":7,"body":"text"}` (or `"body_b64"` for bytes that are not UTF-8)
//!   and `{"type":"broadcast","body":...}`; the client answers each request once with
//!   `{"type":"reply","id":7,"body":...}` (or `"body_b64"`) or
//!   `{"type":"fault","id":7,"message":"why"}`. A request unanswered within 10 minutes, or
//!   when the WebSocket closes, fails at its requester; at most 1024 wait at once (more fail
//!   with "member busy"). Malformed messages close the WebSocket (1003/1007 with the reason).
//!   Its answers are read while a write to it waits (a member slow to read), and at most
//!   16 MiB wait to be written to it: past them broadcasts to it are dropped (counted in
//!   `member_drops`) and requests fail with "member busy".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use petal_client::{Connection, Error, Options, ServiceHandler, Tunnel};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Pattern;
use crate::{St, error, timeout_of};

/// Requests a WebSocket member may hold unanswered.
const MAX_PENDING: usize = 1024;
/// Bytes that may wait to be written to a WebSocket member. Past them a broadcast to it is
/// dropped (counted in `member_drops`) and a request fails with "member busy", so that a
/// member that does not read cannot grow the gateway's memory (its 1,024 queued messages of up
/// to `max_body` each could otherwise hold a GiB). A single message larger than this still
/// goes when nothing waits.
const MEMBER_QUEUE_BYTES: usize = 16 << 20;
/// The longest a WebSocket member may take to answer.
const MAX_ANSWER: Duration = Duration::from_secs(600);
/// A gateway tunnel's receive buffer: the credit it grants, and the largest message it takes
/// from the far end.
const TUNNEL_BUFFER: u64 = 8 << 20;
/// The longest one tunnel message waits for credit before the tunnel is given up.
const SEND_WAIT: Duration = Duration::from_secs(60);
/// How long a tunnel's WebSocket may take to send its last frame once either side ended.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The WebSocket upgrade of `req` (messages up to `max_body`), with the connection's place in
/// the limits, which the upgraded task keeps.
async fn upgrade(
    req: Request,
    max_body: usize,
) -> Result<(WebSocketUpgrade, Option<petal_admin::http::ConnSlot>), Response> {
    let slot = req
        .extensions()
        .get::<petal_admin::http::ConnSlot>()
        .cloned();
    let (mut parts, _) = req.into_parts();
    WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map(|ws| (ws.max_message_size(max_body), slot))
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                "this path is a WebSocket: send an upgrade request",
            )
        })
}

fn unavailable(e: &Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_unreachable",
        format!("the node does not answer: {e}"),
    )
}

/// The body of `payload` as JSON fields: `body` for UTF-8, `body_b64` otherwise.
pub(crate) fn body_fields(payload: &[u8], obj: &mut serde_json::Map<String, serde_json::Value>) {
    match std::str::from_utf8(payload) {
        Ok(t) => obj.insert("body".into(), t.into()),
        Err(_) => obj.insert(
            "body_b64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(payload)
                .into(),
        ),
    };
}

fn body_of(v: &serde_json::Value) -> Result<Bytes, String> {
    if let Some(t) = v.get("body").and_then(|b| b.as_str()) {
        return Ok(Bytes::copy_from_slice(t.as_bytes()));
    }
    if let Some(b) = v.get("body_b64").and_then(|b| b.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| format!("body_b64 is not base64: {e}"));
    }
    Ok(Bytes::new())
}

pub(crate) async fn tunnel(State(g): St, Path(cluster): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize_query(req.headers(), req.uri().query(), Pattern::Tunnel, &cluster) {
        return r;
    }
    let timeout = match timeout_of(req.headers(), g.opts.default_timeout) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (ws, slot) = match upgrade(req, g.opts.max_body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Its own relay connection: the tunnel's credit and close are its alone.
    let mut o = Options::default();
    o.tunnel_buffer = TUNNEL_BUFFER;
    let conn = match g.dial_with(o).await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    let t = match conn.tunnel(&cluster, timeout).await {
        Ok(t) => t,
        Err(Error::Timeout) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "no member of {cluster:?} took the tunnel within {} ms",
                    timeout.as_millis()
                ),
            );
        }
        Err(e) => return unavailable(&e),
    };
    g.stats.streams.fetch_add(1, Ordering::Relaxed);
    ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        pipe(conn, t, socket).await;
    })
}

/// Why the WebSocket side of a tunnel ended, as told to the task that writes to it.
enum WsEnd {
    /// The client sent a close frame: the WebSocket answers it.
    ClientClosed,
    /// The gateway gave the tunnel up (a message waited too long for credit): 1011 and why.
    GaveUp(String),
}

/// Moves messages both ways until either side ends, then ends the other. A tunnel that ends
/// closes the WebSocket with 1000 when its far end closed it, with 1011 and the reason when it
/// broke or the gateway gave it up; a close from the WebSocket's client is answered with a
/// close frame (the closing handshake) and closes the tunnel.
async fn pipe(conn: Connection, t: Tunnel, socket: WebSocket) {
    let t = Arc::new(t);
    let (mut sink, mut stream) = socket.split();
    let down = t.clone();
    let (ended, mut end_rx) = oneshot::channel::<WsEnd>();
    // Tunnel -> WebSocket; it also writes the WebSocket's last frame. Every exit closes the
    // sink: that writes what the WebSocket still holds, its answer to a client's close frame
    // included (a send after the client's close fails and writes nothing).
    let mut to_ws = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                why = &mut end_rx => {
                    if let Ok(WsEnd::GaveUp(reason)) = why {
                        let frame = CloseFrame { code: 1011, reason: reason.into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                    }
                    break;
                }
                next = down.recv() => next,
            };
            match next {
                Ok(m) => {
                    if sink.send(Message::Binary(m)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let (code, reason) = match e {
                        Error::Closed(r) if r.is_empty() => {
                            (1000, "closed by the far end".to_string())
                        }
                        Error::Closed(r) => (1011, format!("tunnel ended: {r}")),
                        other => (1011, format!("tunnel ended: {other}")),
                    };
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    // WebSocket -> tunnel (not read while the tunnel waits for credit).
    let mut to_ws_done = false;
    loop {
        let sent = tokio::select! {
            _ = &mut to_ws => {
                to_ws_done = true;
                break;
            }
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => t.send(b, SEND_WAIT).await,
                Some(Ok(Message::Text(s))) if !s.is_empty() => {
                    t.send(Bytes::copy_from_slice(s.as_bytes()), SEND_WAIT).await
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = ended.send(WsEnd::ClientClosed);
                    break;
                }
                Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
        };
        match sent {
            Ok(()) => {}
            // No credit within SEND_WAIT: the tunnel is alive, the gateway gives it up.
            Err(Error::Timeout) => {
                let why = format!(
                    "tunnel given up: the far end granted no credit for {} s",
                    SEND_WAIT.as_secs()
                );
                let _ = ended.send(WsEnd::GaveUp(why));
                break;
            }
            // The tunnel ended: `to_ws` reads how, and says so.
            Err(_) => break,
        }
    }
    let _ = t.close().await;
    if !to_ws_done && tokio::time::timeout(CLOSE_WAIT, &mut to_ws).await.is_err() {
        to_ws.abort();
    }
    let _ = conn.close().await;
}

/// Requests waiting for a WebSocket member's answer, by id.
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<Bytes, String>>>>>;

/// A message for a member, with its bytes of the member's queue.
type Outgoing = (Message, Reserved);

/// The member a `serve` WebSocket stands for.
struct WsMember {
    out: mpsc::Sender<Outgoing>,
    pending: Pending,
    next: AtomicU64,
    /// Bytes queued in `out` and not yet written (see [`MEMBER_QUEUE_BYTES`]).
    queued: Arc<AtomicUsize>,
    stats: Arc<crate::GatewayStats>,
}

/// Bytes of a member's queue that one message holds, given back when it is dropped: written,
/// refused by a full channel, or abandoned with its request (a timeout, the member gone).
struct Reserved {
    queued: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.len, Ordering::Relaxed);
    }
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// What a message counts against [`MEMBER_QUEUE_BYTES`].
fn queued_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

impl WsMember {
    /// Takes `m`'s bytes of the member's queue: `None` when they do not fit.
    fn reserve(&self, m: &Message) -> Option<Reserved> {
        let len = queued_len(m);
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let held = Reserved {
            queued: self.queued.clone(),
            len,
        };
        (before == 0 || before + len <= MEMBER_QUEUE_BYTES).then_some(held)
    }
}

impl ServiceHandler for WsMember {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if p.len() >= MAX_PENDING {
                return Err("member busy".into());
            }
            p.insert(id, tx);
        }
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), "request".into());
        obj.insert("id".into(), id.into());
        body_fields(&request, &mut obj);
        let m = text(&obj.into());
        let Some(held) = self.reserve(&m) else {
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            return Err("member busy".into());
        };
        // Sending to the member and its answer, both within MAX_ANSWER.
        let out = self.out.clone();
        let exchange = async move {
            if out.send((m, held)).await.is_err() {
                return Err("the member left");
            }
            rx.await.map_err(|_| "the member left")
        };
        let answer = tokio::time::timeout(MAX_ANSWER, exchange)
            .await
            .unwrap_or(Err("the member did not answer in time"));
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        answer.map_err(String::from)?
    }

    fn handle_drop(&self, reason: String) {
        // The node ended the membership: the WebSocket closes with the reason.
        let frame = CloseFrame {
            code: 1011,
            reason: format!("the node ended the membership: {reason}").into(),
        };
        let close = Message::Close(Some(frame));
        let held = Reserved {
            queued: self.queued.clone(),
            len: 0,
        };
        let _ = self.out.try_send((close, held));
    }

    fn handle_broadcast(&self, message: Bytes) {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), "broadcast".into());
        body_fields(&message, &mut obj);
        // Best effort, as broadcasts are: dropped for a member that does not read.
        let m = text(&obj.into());
        let sent = self
            .reserve(&m)
            .is_some_and(|held| self.out.try_send((m, held)).is_ok());
        if !sent {
            self.stats.member_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) async fn serve(State(g): St, Path(cluster): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize_query(req.headers(), req.uri().query(), Pattern::Serve, &cluster) {
        return r;
    }
    let (ws, slot) = match upgrade(req, g.opts.max_body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (out, rx) = mpsc::channel(1024);
    let pending = Arc::new(Mutex::new(BTreeMap::new()));
    let member = WsMember {
        out,
        pending: pending.clone(),
        next: AtomicU64::new(1),
        queued: Arc::default(),
        stats: g.stats.clone(),
    };
    let registered = match &g.opts.local {
        Some(l) => l.register(Options::default(), &cluster, member).await,
        None => {
            Options::default()
                .register(g.opts.relay_port, &cluster, member)
                .await
        }
    };
    let service = match registered {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    g.stats.streams.fetch_add(1, Ordering::Relaxed);
    ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        member_socket(socket, rx, pending).await;
        // The member leaves: its connection closes, its unanswered requests fail.
        drop(service);
    })
}

/// Runs a member's WebSocket: what the member is sent (`rx`) goes out from a task of its own,
/// so that a member slow to read still has its answers read. In one loop, a write waiting on
/// the member's TCP window held up the member's replies with it, until the connection's write
/// timeout cut it (10 s by default), and its requesters timed out meanwhile.
async fn member_socket(socket: WebSocket, rx: mpsc::Receiver<Outgoing>, pending: Pending) {
    let close = |code: u16, why: String| {
        Some(Message::Close(Some(CloseFrame {
            code,
            reason: why.into(),
        })))
    };
    let (sink, mut stream) = socket.split();
    let (last_tx, last_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_member(sink, rx, last_rx));
    // What to send last, if anything, before the socket closes (`None`: close only).
    let last: Option<Option<Message>> = loop {
        tokio::select! {
            // The writer ended: it sent the node's close, or the socket broke.
            _ = &mut writer => break None,
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => match answer(&t) {
                    Ok((id, result)) => {
                        let waiter = pending
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&id);
                        // An answer to no waiting request (late, or twice) is dropped.
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    Err(why) => break Some(close(1007, why)),
                },
                Some(Ok(Message::Binary(_))) => {
                    break Some(close(1003, "answers are JSON text messages".into()));
                }
                // Closing the socket writes the answer to the client's close frame.
                Some(Ok(Message::Close(_))) => break Some(None),
                Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(last) = last {
        let _ = last_tx.send(last);
        // A member that reads nothing cannot hold the task: its close waits a bounded time.
        if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
            writer.abort();
        }
    } else {
        writer.abort();
    }
    // Unanswered requests fail now.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

/// A member's writer: sends what `rx` brings (each message's bytes of the member's queue
/// given back once written) until the node's close frame, and on `last` its message, if any,
/// then closes the socket. A send that fails closes the socket too: after the client's close
/// frame a send fails, and the close flushes the answer to it.
async fn write_member(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut last: oneshot::Receiver<Option<Message>>,
) {
    loop {
        tokio::select! {
            biased;
            m = &mut last => {
                if let Ok(Some(m)) = m {
                    let _ = sink.send(m).await;
                }
                break;
            }
            m = rx.recv() => match m {
                Some((m @ Message::Close(_), _)) => {
                    let _ = sink.send(m).await;
                    return;
                }
                Some((m, _held)) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                None => return,
            },
        }
    }
    let _ = sink.close().await;
}

/// A member's answer: the request's id and its reply or fault.
fn answer(text: &str) -> Result<(u64, Result<Bytes, String>), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let id = v
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no numeric \"id\"")?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("reply") => Ok((id, Ok(body_of(&v)?))),
        Some("fault") => {
            let m = v.get("message").and_then(|m| m.as_str()).unwrap_or("fault");
            Ok((id, Err(m.to_string())))
        }
        _ => Err("\"type\" must be \"reply\" or \"fault\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_say_why() {
        assert_eq!(
            answer(r#"{"type":"reply","id":3,"body":"hi"}"#).unwrap(),
            (3, Ok(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            answer(r#"{"type":"reply","id":4,"body_b64":"AAE="}"#).unwrap(),
            (4, Ok(Bytes::from_static(&[0, 1])))
        );
        assert_eq!(
            answer(r#"{"type":"fault","id":5,"message":"no"}"#).unwrap(),
            (5, Err("no".into()))
        );
        for (bad, says) in [
            ("{", "not JSON"),
            (r#"{"type":"reply"}"#, "id"),
            (r#"{"type":"nope","id":1}"#, "type"),
            (r#"{"type":"reply","id":1,"body_b64":"!!"}"#, "base64"),
        ] {
            let e = answer(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
