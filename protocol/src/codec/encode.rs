//! Encoding: messages to frames, and their exact lengths without encoding.

use super::{LEN_PREFIX, MAX_LIST_LEN, MAX_STR_LEN, VERSION, ty};
use crate::message::{
    Ask, AskKind, EventSeq, Load, Message, NodeInfo, ReplyResult, RouteMsg, Routed, Sibling, Want,
};

/// Appends the frame of `msg` (length prefix included) to `out`.
///
/// # Panics
/// If a payload or the whole frame exceeds `u32::MAX` bytes, or a list [`MAX_LIST_LEN`] items:
/// bugs of the caller (every producer bounds them far below the frame limit), not hostile input.
#[expect(
    clippy::expect_used,
    reason = "a frame beyond u32::MAX bytes is a caller's bug, as a payload beyond it is in put_bytes"
)]
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(VERSION);
    encode_body(msg, out);
    let len =
        u32::try_from(out.len() - start - LEN_PREFIX).expect("frame longer than u32::MAX bytes");
    out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// Appends the frame of `msg` to `out` but for its last bytes, which it returns: they must
/// follow for the frame to be whole. A tunnel chunk's payload is left out this way, so that a
/// writer can put it where it goes (a link record, say) without copying it through a frame
/// buffer first; every other message is encoded whole (an empty tail).
#[expect(
    clippy::expect_used,
    reason = "a frame beyond u32::MAX bytes is a caller's bug, as in encode"
)]
pub fn encode_head<'m>(msg: &'m Message, out: &mut Vec<u8>) -> &'m [u8] {
    let Message::TunnelData {
        tunnel,
        sender_tunnel,
        seq,
        size,
        payload,
    } = msg
    else {
        encode(msg, out);
        return &[];
    };
    let len =
        u32::try_from(encoded_len(msg) - LEN_PREFIX).expect("frame longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(VERSION);
    put_tunnel_head([*tunnel, *sender_tunnel, *seq, *size], payload.len(), out);
    payload
}

/// A tunnel chunk's fields before its payload's bytes (its length included).
#[expect(
    clippy::expect_used,
    reason = "a payload beyond u32::MAX bytes is a caller's bug, as in put_bytes"
)]
fn put_tunnel_head(fields: [u64; 4], payload_len: usize, out: &mut Vec<u8>) {
    out.push(ty::TUNNEL_DATA);
    put_u64s(&fields, out);
    let len = u32::try_from(payload_len).expect("payload longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_be_bytes());
}

/// The frame of `msg` as a new vector.
pub fn to_vec(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    encode(msg, &mut out);
    out
}

/// Exact length in bytes of the frame of `msg`, prefix included, without encoding it.
pub fn encoded_len(msg: &Message) -> usize {
    let list = |l: &[NodeInfo]| 2 + l.iter().map(info_len).sum::<usize>();
    let body = match msg {
        Message::Ping { .. } | Message::Pong { .. } | Message::RouteAck { .. } => 8,
        Message::PongPing { .. } => 16,
        Message::RouteAcks { hop_seqs } => 2 + 8 * hop_seqs.len(),
        Message::Route(r) => {
            16 + info_len(&r.origin)
                + 1
                + 8
                + 1
                + match &r.body {
                    Routed::Join => 0,
                    Routed::Lookup { .. } => 8,
                    Routed::Publish { payload, .. } => 8 + bytes_len(payload),
                    Routed::Ask(ask) => ask_len(ask),
                    Routed::Store(op) => super::store::op_len(op),
                }
        }
        Message::JoinReply { entries, leaf, .. } => list(entries) + list(leaf) + 1,
        Message::Announce { .. } => 1,
        Message::AnnounceAck { leaf } | Message::Leave { leaf } => list(leaf),
        Message::JoinBusy { contacts } => list(contacts),
        Message::Discover { want, .. } => 8 + if matches!(want, Want::Row(_)) { 2 } else { 1 },
        Message::DiscoverReply { entries, .. } => 8 + 1 + list(entries),
        Message::Heartbeat => 0,
        Message::Suspect { .. } => 16,
        Message::LeafSet { leaf, .. } => list(leaf) + 1,
        Message::RowRequest { .. } => 1,
        Message::RowReply { entries, .. } => 1 + list(entries),
        Message::LookupReply { owner, .. } => 8 + info_len(owner) + 1,
        Message::Graft { .. } => 16 + LOAD_LEN + EVENT_SEQ_LEN + 1 + 1,
        Message::Prune { .. } => 16,
        Message::Redirect { siblings, .. } => {
            16 + 2
                + siblings
                    .iter()
                    .map(|s| info_len(&s.info) + 4)
                    .sum::<usize>()
        }
        Message::Cast(c) => 16 + EVENT_SEQ_LEN + EVENT_ID_LEN + bytes_len(&c.payload),
        Message::Descend(d) => 16 + info_len(&d.requester) + 1 + 8 + ask_len(&d.ask),
        Message::Reply { result, .. } => {
            8 + 1
                + match result {
                    ReplyResult::Ok(payload) => bytes_len(payload),
                    ReplyResult::Fault(text) => str_len(text),
                }
        }
        Message::TunnelAccept { .. } => 16 + TUNNEL_PARAMS_LEN,
        Message::TunnelAllow { .. } => 24,
        Message::TunnelData { payload, .. } => 32 + bytes_len(payload),
        Message::TunnelClose { reason, .. } => 8 + str_len(reason),
        Message::StoreReply { .. }
        | Message::StoreWrite { .. }
        | Message::StoreAck { .. }
        | Message::StoreRead { .. }
        | Message::StoreValue { .. }
        | Message::StoreSync { .. }
        | Message::StoreKeys { .. }
        | Message::IdDeliver { .. }
        | Message::IdAck { .. } => super::store::body_len(msg),
    };
    LEN_PREFIX + 2 + body
}

/// Encoded bytes of a [`Load`].
const LOAD_LEN: usize = 3 * 4;
/// Encoded bytes of an [`EventSeq`].
const EVENT_SEQ_LEN: usize = 2 * 8;
/// Encoded bytes of a [`TunnelParams`](crate::TunnelParams).
const TUNNEL_PARAMS_LEN: usize = 8 + 4;
/// Encoded bytes of an [`EventId`](crate::EventId).
const EVENT_ID_LEN: usize = 16 + 8;

pub(super) fn bytes_len(payload: &[u8]) -> usize {
    4 + payload.len()
}

pub(super) fn str_len(s: &str) -> usize {
    2 + str_cut(s).len()
}

fn ask_len(ask: &Ask) -> usize {
    8 + 4
        + 1
        + match &ask.kind {
            AskKind::Request { payload } => bytes_len(payload),
            AskKind::Tunnel(_) => TUNNEL_PARAMS_LEN,
        }
}

/// `s` cut to at most [`MAX_STR_LEN`] bytes at a char boundary.
fn str_cut(s: &str) -> &str {
    if s.len() <= MAX_STR_LEN {
        return s;
    }
    let mut end = MAX_STR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn info_len(info: &NodeInfo) -> usize {
    16 + crate::addr::encoded_len(info.addr)
}

/// The bodies of the nearest-node search's two messages.
fn encode_discover(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Discover { nonce, want } => {
            out.push(ty::DISCOVER);
            out.extend_from_slice(&nonce.to_be_bytes());
            match want {
                Want::Probe => out.push(0),
                Want::LeafSet => out.push(1),
                Want::Row(row) => out.extend_from_slice(&[2, *row]),
            }
        }
        Message::DiscoverReply {
            nonce,
            rows,
            entries,
        } => {
            out.push(ty::DISCOVER_REPLY);
            out.extend_from_slice(&nonce.to_be_bytes());
            out.push(*rows);
            put_list(entries, out);
        }
        _ => {}
    }
}

/// Pings and pongs.
fn encode_liveness(msg: &Message, out: &mut Vec<u8>) {
    let (ty, nonce, ping) = match *msg {
        Message::Ping { nonce } => (ty::PING, nonce, None),
        Message::Pong { nonce } => (ty::PONG, nonce, None),
        Message::PongPing { nonce, ping } => (ty::PONG_PING, nonce, Some(ping)),
        _ => return,
    };
    out.push(ty);
    out.extend_from_slice(&nonce.to_be_bytes());
    if let Some(ping) = ping {
        out.extend_from_slice(&ping.to_be_bytes());
    }
}

fn encode_body(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Ping { .. } | Message::Pong { .. } | Message::PongPing { .. } => {
            encode_liveness(msg, out);
        }
        Message::Route(r) => {
            out.push(ty::ROUTE);
            put_route(r, out);
        }
        Message::RouteAck { hop_seq } => {
            out.push(ty::ROUTE_ACK);
            out.extend_from_slice(&hop_seq.to_be_bytes());
        }
        Message::RouteAcks { hop_seqs } => put_route_acks(hop_seqs, out),
        Message::JoinReply {
            entries,
            leaf,
            last,
        } => {
            out.push(ty::JOIN_REPLY);
            put_list(entries, out);
            put_list(leaf, out);
            out.push(u8::from(*last));
        }
        Message::Announce { reply } => {
            out.push(ty::ANNOUNCE);
            out.push(u8::from(*reply));
        }
        Message::AnnounceAck { leaf } => {
            out.push(ty::ANNOUNCE_ACK);
            put_list(leaf, out);
        }
        Message::JoinBusy { contacts } => {
            out.push(ty::JOIN_BUSY);
            put_list(contacts, out);
        }
        Message::Discover { .. } | Message::DiscoverReply { .. } => encode_discover(msg, out),
        Message::Heartbeat => out.push(ty::HEARTBEAT),
        Message::Suspect { node } => {
            out.push(ty::SUSPECT);
            out.extend_from_slice(&node.0.to_be_bytes());
        }
        Message::LeafSet { leaf, reply } => {
            out.push(ty::LEAF_SET);
            put_list(leaf, out);
            out.push(u8::from(*reply));
        }
        Message::RowRequest { row } => {
            out.push(ty::ROW_REQUEST);
            out.push(*row);
        }
        Message::RowReply { row, entries } => {
            out.push(ty::ROW_REPLY);
            out.push(*row);
            put_list(entries, out);
        }
        Message::Leave { leaf } => {
            out.push(ty::LEAVE);
            put_list(leaf, out);
        }
        Message::LookupReply {
            lookup,
            owner,
            hops,
        } => {
            out.push(ty::LOOKUP_REPLY);
            out.extend_from_slice(&lookup.to_be_bytes());
            put_info(owner, out);
            out.push(*hops);
        }
        Message::Graft {
            group,
            load,
            seen,
            rejoin,
            height,
        } => {
            out.push(ty::GRAFT);
            out.extend_from_slice(&group.to_bytes());
            put_load(load, out);
            put_event_seq(seen, out);
            out.push(u8::from(*rejoin));
            out.push(*height);
        }
        Message::Prune { group } => {
            out.push(ty::PRUNE);
            out.extend_from_slice(&group.to_bytes());
        }
        Message::Redirect { group, siblings } => {
            out.push(ty::REDIRECT);
            out.extend_from_slice(&group.to_bytes());
            put_siblings(siblings, out);
        }
        Message::Cast(c) => {
            out.push(ty::CAST);
            out.extend_from_slice(&c.group.to_bytes());
            put_event_seq(&c.seq, out);
            out.extend_from_slice(&c.event.origin.to_bytes());
            out.extend_from_slice(&c.event.nonce.to_be_bytes());
            put_bytes(&c.payload, out);
        }
        Message::Descend(d) => {
            out.push(ty::DESCEND);
            out.extend_from_slice(&d.group.to_bytes());
            put_info(&d.requester, out);
            out.push(d.hops);
            out.extend_from_slice(&d.hop_seq.to_be_bytes());
            put_ask(&d.ask, out);
        }
        Message::Reply { id, result } => {
            out.push(ty::REPLY);
            out.extend_from_slice(&id.to_be_bytes());
            put_result(result, out);
        }
        Message::TunnelAccept {
            tunnel,
            peer_tunnel,
            params,
        } => {
            out.push(ty::TUNNEL_ACCEPT);
            out.extend_from_slice(&tunnel.to_be_bytes());
            out.extend_from_slice(&peer_tunnel.to_be_bytes());
            put_tunnel_params(params, out);
        }
        Message::TunnelData {
            tunnel,
            sender_tunnel,
            seq,
            size,
            payload,
        } => {
            put_tunnel_head([*tunnel, *sender_tunnel, *seq, *size], payload.len(), out);
            out.extend_from_slice(payload);
        }
        Message::TunnelAllow {
            tunnel,
            sender_tunnel,
            consumed,
        } => {
            out.push(ty::TUNNEL_ALLOW);
            put_u64s(&[*tunnel, *sender_tunnel, *consumed], out);
        }
        Message::TunnelClose { tunnel, reason } => {
            out.push(ty::TUNNEL_CLOSE);
            out.extend_from_slice(&tunnel.to_be_bytes());
            put_str(reason, out);
        }
        _ => super::store::encode(msg, out),
    }
}

/// A Route's body after its type byte: key, origin, hops, hop_seq and what is routed.
fn put_route(r: &RouteMsg, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.key.to_bytes());
    put_info(&r.origin, out);
    out.push(r.hops);
    out.extend_from_slice(&r.hop_seq.to_be_bytes());
    match &r.body {
        Routed::Join => out.push(ty::ROUTED_JOIN),
        Routed::Lookup { lookup } => {
            out.push(ty::ROUTED_LOOKUP);
            out.extend_from_slice(&lookup.to_be_bytes());
        }
        Routed::Publish { nonce, payload } => {
            out.push(ty::ROUTED_PUBLISH);
            out.extend_from_slice(&nonce.to_be_bytes());
            put_bytes(payload, out);
        }
        Routed::Ask(ask) => {
            out.push(ty::ROUTED_ASK);
            put_ask(ask, out);
        }
        Routed::Store(op) => {
            out.push(ty::ROUTED_STORE);
            super::store::put_op(op, out);
        }
    }
}

/// A Reply's result: its tag, then the payload or the fault text.
fn put_result(result: &ReplyResult, out: &mut Vec<u8>) {
    match result {
        ReplyResult::Ok(payload) => {
            out.push(ty::RESULT_OK);
            put_bytes(payload, out);
        }
        ReplyResult::Fault(text) => {
            out.push(ty::RESULT_FAULT);
            put_str(text, out);
        }
    }
}

fn put_load(load: &Load, out: &mut Vec<u8>) {
    out.extend_from_slice(&load.members.to_be_bytes());
    out.extend_from_slice(&load.capacity.to_be_bytes());
    out.extend_from_slice(&load.inflight.to_be_bytes());
}

fn put_event_seq(seq: &EventSeq, out: &mut Vec<u8>) {
    out.extend_from_slice(&seq.epoch.to_be_bytes());
    out.extend_from_slice(&seq.seq.to_be_bytes());
}

fn put_u64s(values: &[u64], out: &mut Vec<u8>) {
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_tunnel_params(p: &crate::TunnelParams, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.window.to_be_bytes());
    out.extend_from_slice(&p.chunk_limit.to_be_bytes());
}

fn put_ask(ask: &Ask, out: &mut Vec<u8>) {
    out.extend_from_slice(&ask.id.to_be_bytes());
    out.extend_from_slice(&ask.timeout_ms.to_be_bytes());
    match &ask.kind {
        AskKind::Request { payload } => {
            out.push(ty::ASK_REQUEST);
            put_bytes(payload, out);
        }
        AskKind::Tunnel(params) => {
            out.push(ty::ASK_TUNNEL);
            put_tunnel_params(params, out);
        }
    }
}

#[expect(
    clippy::expect_used,
    reason = "a payload beyond u32::MAX bytes is a caller's bug (every producer bounds payloads far below the frame limit), as a list beyond MAX_LIST_LEN is in put_list"
)]
pub(super) fn put_bytes(payload: &[u8], out: &mut Vec<u8>) {
    // Producers bound payloads far below the frame limit; one that does not fit the u32 prefix
    // is a bug in the caller, not hostile input.
    let len = u32::try_from(payload.len()).expect("payload longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes `s` cut to [`MAX_STR_LEN`] bytes at a char boundary.
#[expect(
    clippy::cast_possible_truncation,
    reason = "str_cut bounds the length to MAX_STR_LEN, which is u16::MAX"
)]
pub(super) fn put_str(s: &str, out: &mut Vec<u8>) {
    let s = str_cut(s);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_info(info: &NodeInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&info.id.to_bytes());
    crate::addr::put(info.addr, out);
}

fn put_route_acks(hop_seqs: &[u64], out: &mut Vec<u8>) {
    out.push(ty::ROUTE_ACKS);
    assert!(
        hop_seqs.len() <= MAX_LIST_LEN,
        "{} acknowledgements in one frame",
        hop_seqs.len()
    );
    put_count(hop_seqs.len(), out);
    for s in hop_seqs {
        out.extend_from_slice(&s.to_be_bytes());
    }
}

fn put_siblings(list: &[Sibling], out: &mut Vec<u8>) {
    assert!(
        list.len() <= MAX_LIST_LEN,
        "list of {} siblings",
        list.len()
    );
    put_count(list.len(), out);
    for s in list {
        put_info(&s.info, out);
        out.extend_from_slice(&s.rtt_us.to_be_bytes());
    }
}

/// A list's u16 count (the callers asserted it is at most [`MAX_LIST_LEN`]).
pub(super) fn put_count(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
}

fn put_list(list: &[NodeInfo], out: &mut Vec<u8>) {
    // Producers bound their lists by configuration far below MAX_LIST_LEN; a longer list is a
    // bug in the caller, not hostile input.
    assert!(list.len() <= MAX_LIST_LEN, "list of {} items", list.len());
    put_count(list.len(), out);
    for info in list {
        put_info(info, out);
    }
}
