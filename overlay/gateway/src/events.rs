//! `GET /v1/topics/{topic}/events`: a topic's events as Server-Sent Events, or as a WebSocket
//! when the request asks to upgrade.
//!
//! - **Server-Sent Events** (`text/event-stream`): one event per published message, with one
//!   `data:` line. A payload that is UTF-8 without line breaks is sent as it is (`data: hello`);
//!   any other payload is sent base64-encoded (standard alphabet, padded) under the event type
//!   `base64` (`event: base64` then `data: AAEC`), so `EventSource` users listen for it with
//!   `addEventListener("base64", ...)`. An empty payload comes as `event: empty` with the
//!   placeholder `data: -` (a browser drops an event without data). A comment line
//!   (`: keepalive`) every 15 s keeps proxies from closing an idle stream.
//! - **WebSocket**: one message per event: a text message for a UTF-8 payload, a binary one
//!   otherwise. What the client sends is ignored (a close ends the subscription).
//!
//! Each stream subscribes on its own relay connection and queues at most
//! [`GatewayOptions::event_queue`](crate::GatewayOptions::event_queue) events for its reader;
//! a reader that falls further behind is cut off, counted in `slow_cut`: the event stream
//! ends with `event: error` / `data: slow reader: ...`, the WebSocket with close code 1008 and
//! that reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use petal_client::Connection;
use tokio::sync::mpsc;

use crate::auth::Pattern;
use crate::{Gate, St, error};

/// What a subscription hands its stream.
enum Item {
    Event(Bytes),
    /// The reader fell behind: the stream ends with this reason.
    Slow(String),
}

/// A subscription on its own relay connection: events come out of the receiver; the
/// connection closes when it is dropped.
struct Subscription {
    rx: mpsc::Receiver<Item>,
    conn: Connection,
    /// Bytes of events queued (bounded by `event_queue_bytes`).
    queued: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next item; `None` when the node ended the subscription's connection (checked each
    /// second while nothing comes).
    async fn next(&mut self) -> Option<Item> {
        loop {
            tokio::select! {
                item = self.rx.recv() => {
                    if let Some(Item::Event(e)) = &item {
                        self.queued.fetch_sub(e.len(), Ordering::Relaxed);
                    }
                    return item;
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if self.conn.is_closed() {
                        return None;
                    }
                }
            }
        }
    }
}

async fn subscribe(g: &Arc<Gate>, topic: &str) -> Result<Subscription, Response> {
    // One handler at a time: events keep their order, and the cut-off check is exact.
    let mut o = petal_client::Options::default();
    o.event_handlers = 1;
    let conn = g.dial_with(o).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unreachable",
            format!("the node does not answer: {e}"),
        )
    })?;
    let queue = g.opts.event_queue.max(1);
    let max_bytes = g.opts.event_queue_bytes;
    // One slot more than the queue for the cut-off notice.
    let (tx, rx) = mpsc::channel(queue + 1);
    let stats = g.stats.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let counted = queued.clone();
    let cut = std::sync::atomic::AtomicBool::new(false);
    let handler = move |event: Bytes| {
        if cut.load(Ordering::Relaxed) {
            return;
        }
        let bytes = counted.load(Ordering::Relaxed) + event.len();
        if tx.capacity() <= 1 || bytes > max_bytes {
            cut.store(true, Ordering::Relaxed);
            stats.slow_cut.fetch_add(1, Ordering::Relaxed);
            let why = format!("slow reader: more than {queue} events or {max_bytes} bytes queued");
            let _ = tx.try_send(Item::Slow(why));
            return;
        }
        counted.fetch_add(event.len(), Ordering::Relaxed);
        let _ = tx.try_send(Item::Event(event));
    };
    conn.subscribe(topic, handler).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unreachable",
            format!("cannot subscribe: {e}"),
        )
    })?;
    g.stats.streams.fetch_add(1, Ordering::Relaxed);
    Ok(Subscription { rx, conn, queued })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub(crate) async fn events(State(g): St, Path(topic): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize_query(req.headers(), req.uri().query(), Pattern::Subscribe, &topic)
    {
        return r;
    }
    if is_upgrade(req.headers()) {
        let slot = req
            .extensions()
            .get::<petal_admin::http::ConnSlot>()
            .cloned();
        let (mut parts, _) = req.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.max_message_size(g.opts.max_body),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "websocket_required",
                    "a bad WebSocket upgrade request",
                );
            }
        };
        let sub = match subscribe(&g, &topic).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        // The upgraded connection keeps its place in the connection limits.
        return ws.on_upgrade(move |socket| async move {
            let _slot = slot;
            websocket(g, sub, socket).await;
        });
    }
    let sub = match subscribe(&g, &topic).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let stream = futures_util::stream::unfold((sub, g, false), |(mut sub, g, done)| async move {
        if done {
            return None;
        }
        match sub.next().await? {
            Item::Event(e) => {
                g.stats.events.fetch_add(1, Ordering::Relaxed);
                Some((
                    Ok::<_, std::convert::Infallible>(sse_event(&e)),
                    (sub, g, false),
                ))
            }
            Item::Slow(why) => Some((
                Ok(Event::default().event("error").data(why)),
                (sub, g, true),
            )),
        }
    });
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keepalive"),
        )
        .into_response()
}

/// One event as Server-Sent Events (see the module docs).
pub fn sse_event(payload: &[u8]) -> Event {
    if payload.is_empty() {
        // An event without data is dropped by the browser: the empty payload gets a type of
        // its own and a placeholder.
        return Event::default().event("empty").data("-");
    }
    match std::str::from_utf8(payload) {
        Ok(text) if !text.contains(['\n', '\r']) => Event::default().data(text),
        _ => Event::default()
            .event("base64")
            .data(base64::engine::general_purpose::STANDARD.encode(payload)),
    }
}

/// One event as a WebSocket message: text for UTF-8, binary otherwise.
fn ws_message(e: Bytes) -> Message {
    match std::str::from_utf8(&e) {
        Ok(t) => Message::Text(t.into()),
        Err(_) => Message::Binary(e),
    }
}

/// Most events written to a WebSocket before one flush.
const WS_BATCH: usize = 256;

async fn websocket(g: Arc<Gate>, mut sub: Subscription, mut socket: WebSocket) {
    use futures_util::SinkExt;
    loop {
        tokio::select! {
            item = sub.next() => match item {
                Some(Item::Event(e)) => {
                    // Everything already queued goes out with one flush (one write).
                    if socket.feed(ws_message(e)).await.is_err() {
                        return;
                    }
                    let mut n = 1;
                    let mut slow = None;
                    while n < WS_BATCH {
                        match sub.rx.try_recv() {
                            Ok(Item::Event(e)) => {
                                sub.queued.fetch_sub(e.len(), Ordering::Relaxed);
                                if socket.feed(ws_message(e)).await.is_err() {
                                    return;
                                }
                                n += 1;
                            }
                            Ok(Item::Slow(why)) => {
                                slow = Some(why);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                    g.stats.events.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(why) = slow {
                        let frame = CloseFrame { code: 1008, reason: why.into() };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                        return;
                    }
                }
                Some(Item::Slow(why)) => {
                    let frame = CloseFrame { code: 1008, reason: why.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                None => {
                    let frame = CloseFrame { code: 1011, reason: "the node closed the subscription".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) => {
                    // Closing the socket writes the answer to the client's close frame.
                    let _ = socket.close().await;
                    return;
                }
                Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
