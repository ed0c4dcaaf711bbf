//! The versioned binary frame codec for node-to-node messages.
//!
//! # Frame layout
//! ```text
//! +----------------+---------+------+---------------------+
//! | length: u32 BE | version | type | body (length-2 B)   |
//! +----------------+---------+------+---------------------+
//! ```
//! `length` counts the bytes after itself (version, type and body). Integers are big-endian. A
//! [`NodeInfo`] is its 16-byte id followed by an address: tag `4` + 4 bytes + port, or tag `6` +
//! 16 bytes + port (u16). A list is a u16 count followed by its items, at most [`MAX_LIST_LEN`].
//!
//! Other field encodings: a [`Key`] is its 16 big-endian bytes; a [`Load`] is `members`,
//! `capacity`, `inflight` (3 × u32); an [`EventSeq`] is `epoch`, `seq` (2 × u64). A byte
//! payload is a u32 length followed by the bytes. A string (fault text, close reason) is a u16
//! length followed by UTF-8 bytes, at most [`MAX_STR_LEN`] bytes: the encoder truncates a longer
//! string at the last char boundary that fits, and the decoder rejects invalid UTF-8 as
//! [`DecodeError::Malformed`]. Flags are one byte, `0` or `1`.
//!
//! # Message bodies
//! ```text
//! type  message        body
//! 0x01  Ping           nonce u64
//! 0x02  Pong           nonce u64
//! 0x03  Route          key | origin NodeInfo | hops u8 | hop_seq u64 | routed
//! 0x04  RouteAck       hop_seq u64
//! 0x05  JoinReply      entries list | leaf list | last flag
//! 0x06  Announce       reply flag
//! 0x07  AnnounceAck    leaf list
//! 0x08  LeafSet        leaf list | reply flag
//! 0x09  RowRequest     row u8
//! 0x0a  RowReply       row u8 | entries list
//! 0x0b  Leave          leaf list
//! 0x0c  LookupReply    lookup u64 | owner NodeInfo | hops u8
//! 0x0d  Graft          group key | load Load | seen EventSeq | rejoin bool
//! 0x0e  Prune          group key
//! 0x0f  Cast           group key | seq EventSeq | payload
//! 0x10  Descend        group key | requester NodeInfo | hops u8 | hop_seq u64 | ask
//! 0x11  Reply          id u64 | result
//! 0x12  TunnelAccept   tunnel u64 | peer_tunnel u64
//! 0x13  TunnelData     tunnel u64 | seq u64 | size u64 | payload
//! 0x14  TunnelAllow    tunnel u64 | bytes u64
//! 0x15  TunnelClose    tunnel u64 | reason string
//! 0x16  JoinBusy       contacts list
//!
//! routed (a tag byte, then):
//! 0x01  Join           (nothing)
//! 0x02  Lookup         lookup u64
//! 0x03  Publish        payload
//! 0x04  Ask            ask
//!
//! ask:     id u64 | timeout_ms u32 | kind tag u8 (1 = Request: payload; 2 = Tunnel: nothing)
//! result:  tag u8 (1 = Ok: payload; 2 = Fault: string)
//! ```
//!
//! Decoding never panics: oversized, truncated, unknown or malformed input is a [`DecodeError`].

use crate::id::{Key, NodeId};
use bytes::Bytes;

use crate::message::{
    Ask, AskKind, DescendMsg, EventSeq, Load, Message, NodeInfo, ReplyResult, RouteMsg, Routed,
};

/// The frame format version this codec writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Default upper bound on a frame's length (after the prefix), used by [`decode`].
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;
/// Most items a list in a frame may carry.
pub const MAX_LIST_LEN: usize = 1024;
/// Most bytes a string (fault text, close reason) may take in a frame; longer strings are
/// truncated at a char boundary when encoded.
pub const MAX_STR_LEN: usize = u16::MAX as usize;

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the frame needs; a stream reader should wait for `needed` more bytes.
    #[error("truncated frame: {needed} more bytes needed")]
    Truncated {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The frame's version byte is not [`VERSION`].
    #[error("unsupported frame version {0} (this node speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The message type byte is unknown.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The body is malformed (what is wrong is named).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The body is longer than its message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

mod ty {
    pub(super) const PING: u8 = 0x01;
    pub(super) const PONG: u8 = 0x02;
    pub(super) const ROUTE: u8 = 0x03;
    pub(super) const ROUTE_ACK: u8 = 0x04;
    pub(super) const JOIN_REPLY: u8 = 0x05;
    pub(super) const ANNOUNCE: u8 = 0x06;
    pub(super) const ANNOUNCE_ACK: u8 = 0x07;
    pub(super) const LEAF_SET: u8 = 0x08;
    pub(super) const ROW_REQUEST: u8 = 0x09;
    pub(super) const ROW_REPLY: u8 = 0x0a;
    pub(super) const LEAVE: u8 = 0x0b;
    pub(super) const LOOKUP_REPLY: u8 = 0x0c;
    pub(super) const GRAFT: u8 = 0x0d;
    pub(super) const PRUNE: u8 = 0x0e;
    pub(super) const CAST: u8 = 0x0f;
    pub(super) const DESCEND: u8 = 0x10;
    pub(super) const REPLY: u8 = 0x11;
    pub(super) const TUNNEL_ACCEPT: u8 = 0x12;
    pub(super) const TUNNEL_DATA: u8 = 0x13;
    pub(super) const TUNNEL_ALLOW: u8 = 0x14;
    pub(super) const TUNNEL_CLOSE: u8 = 0x15;
    pub(super) const JOIN_BUSY: u8 = 0x16;
    pub(super) const ROUTED_JOIN: u8 = 0x01;
    pub(super) const ROUTED_LOOKUP: u8 = 0x02;
    pub(super) const ROUTED_PUBLISH: u8 = 0x03;
    pub(super) const ROUTED_ASK: u8 = 0x04;
    pub(super) const ASK_REQUEST: u8 = 1;
    pub(super) const ASK_TUNNEL: u8 = 2;
    pub(super) const RESULT_OK: u8 = 1;
    pub(super) const RESULT_FAULT: u8 = 2;
}

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
        Message::Route(r) => {
            16 + info_len(&r.origin)
                + 1
                + 8
                + 1
                + match &r.body {
                    Routed::Join => 0,
                    Routed::Lookup { .. } => 8,
                    Routed::Publish { payload } => bytes_len(payload),
                    Routed::Ask(ask) => ask_len(ask),
                }
        }
        Message::JoinReply { entries, leaf, .. } => list(entries) + list(leaf) + 1,
        Message::Announce { .. } => 1,
        Message::AnnounceAck { leaf } | Message::Leave { leaf } => list(leaf),
        Message::JoinBusy { contacts } => list(contacts),
        Message::LeafSet { leaf, .. } => list(leaf) + 1,
        Message::RowRequest { .. } => 1,
        Message::RowReply { entries, .. } => 1 + list(entries),
        Message::LookupReply { owner, .. } => 8 + info_len(owner) + 1,
        Message::Graft { .. } => 16 + LOAD_LEN + EVENT_SEQ_LEN + 1,
        Message::Prune { .. } => 16,
        Message::Cast { payload, .. } => 16 + EVENT_SEQ_LEN + bytes_len(payload),
        Message::Descend(d) => 16 + info_len(&d.requester) + 1 + 8 + ask_len(&d.ask),
        Message::Reply { result, .. } => {
            8 + 1
                + match result {
                    ReplyResult::Ok(payload) => bytes_len(payload),
                    ReplyResult::Fault(text) => str_len(text),
                }
        }
        Message::TunnelAccept { .. } | Message::TunnelAllow { .. } => 16,
        Message::TunnelData { payload, .. } => 24 + bytes_len(payload),
        Message::TunnelClose { reason, .. } => 8 + str_len(reason),
    };
    LEN_PREFIX + 2 + body
}

/// Encoded bytes of a [`Load`].
const LOAD_LEN: usize = 3 * 4;
/// Encoded bytes of an [`EventSeq`].
const EVENT_SEQ_LEN: usize = 2 * 8;

fn bytes_len(payload: &[u8]) -> usize {
    4 + payload.len()
}

fn str_len(s: &str) -> usize {
    2 + str_cut(s).len()
}

fn ask_len(ask: &Ask) -> usize {
    8 + 4
        + 1
        + match &ask.kind {
            AskKind::Request { payload } => bytes_len(payload),
            AskKind::Tunnel => 0,
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

fn encode_body(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Ping { nonce } => {
            out.push(ty::PING);
            out.extend_from_slice(&nonce.to_be_bytes());
        }
        Message::Pong { nonce } => {
            out.push(ty::PONG);
            out.extend_from_slice(&nonce.to_be_bytes());
        }
        Message::Route(r) => {
            out.push(ty::ROUTE);
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
                Routed::Publish { payload } => {
                    out.push(ty::ROUTED_PUBLISH);
                    put_bytes(payload, out);
                }
                Routed::Ask(ask) => {
                    out.push(ty::ROUTED_ASK);
                    put_ask(ask, out);
                }
            }
        }
        Message::RouteAck { hop_seq } => {
            out.push(ty::ROUTE_ACK);
            out.extend_from_slice(&hop_seq.to_be_bytes());
        }
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
        } => {
            out.push(ty::GRAFT);
            out.extend_from_slice(&group.to_bytes());
            put_load(load, out);
            put_event_seq(seen, out);
            out.push(u8::from(*rejoin));
        }
        Message::Prune { group } => {
            out.push(ty::PRUNE);
            out.extend_from_slice(&group.to_bytes());
        }
        Message::Cast {
            group,
            seq,
            payload,
        } => {
            out.push(ty::CAST);
            out.extend_from_slice(&group.to_bytes());
            put_event_seq(seq, out);
            put_bytes(payload, out);
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
        Message::TunnelAccept {
            tunnel,
            peer_tunnel,
        } => {
            out.push(ty::TUNNEL_ACCEPT);
            out.extend_from_slice(&tunnel.to_be_bytes());
            out.extend_from_slice(&peer_tunnel.to_be_bytes());
        }
        Message::TunnelData {
            tunnel,
            seq,
            size,
            payload,
        } => {
            out.push(ty::TUNNEL_DATA);
            out.extend_from_slice(&tunnel.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            put_bytes(payload, out);
        }
        Message::TunnelAllow { tunnel, bytes } => {
            out.push(ty::TUNNEL_ALLOW);
            out.extend_from_slice(&tunnel.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Message::TunnelClose { tunnel, reason } => {
            out.push(ty::TUNNEL_CLOSE);
            out.extend_from_slice(&tunnel.to_be_bytes());
            put_str(reason, out);
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

fn put_ask(ask: &Ask, out: &mut Vec<u8>) {
    out.extend_from_slice(&ask.id.to_be_bytes());
    out.extend_from_slice(&ask.timeout_ms.to_be_bytes());
    match &ask.kind {
        AskKind::Request { payload } => {
            out.push(ty::ASK_REQUEST);
            put_bytes(payload, out);
        }
        AskKind::Tunnel => out.push(ty::ASK_TUNNEL),
    }
}

#[expect(
    clippy::expect_used,
    reason = "a payload beyond u32::MAX bytes is a caller's bug (every producer bounds payloads far below the frame limit), as a list beyond MAX_LIST_LEN is in put_list"
)]
fn put_bytes(payload: &[u8], out: &mut Vec<u8>) {
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
fn put_str(s: &str, out: &mut Vec<u8>) {
    let s = str_cut(s);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_info(info: &NodeInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&info.id.to_bytes());
    crate::addr::put(info.addr, out);
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the length is asserted to be at most MAX_LIST_LEN (1024) first"
)]
fn put_list(list: &[NodeInfo], out: &mut Vec<u8>) {
    // Producers bound their lists by configuration far below MAX_LIST_LEN; a longer list is a
    // bug in the caller, not hostile input.
    assert!(list.len() <= MAX_LIST_LEN, "list of {} items", list.len());
    out.extend_from_slice(&(list.len() as u16).to_be_bytes());
    for info in list {
        put_info(info, out);
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns the message and the number of bytes it used. [`DecodeError::Truncated`] means that
/// `buf` holds a prefix of a valid-length frame: a stream reader waits for more bytes. Every other
/// error means the stream is broken and the link should be closed.
pub fn decode(buf: &[u8], max_frame_len: usize) -> Result<(Message, usize), DecodeError> {
    if buf.len() < LEN_PREFIX {
        return Err(DecodeError::Truncated {
            needed: LEN_PREFIX - buf.len(),
        });
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame_len {
        return Err(DecodeError::TooLarge {
            len,
            max: max_frame_len,
        });
    }
    let total = LEN_PREFIX + len;
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            needed: total - buf.len(),
        });
    }
    let mut r = Reader(&buf[LEN_PREFIX..total]);
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let msg = decode_body(&mut r)?;
    if !r.0.is_empty() {
        return Err(DecodeError::TrailingBytes(r.0.len()));
    }
    Ok((msg, total))
}

/// Decodes a buffer that must hold exactly one whole frame.
pub fn decode_exact(buf: &[u8], max_frame_len: usize) -> Result<Message, DecodeError> {
    let (msg, used) = decode(buf, max_frame_len)?;
    if used != buf.len() {
        return Err(DecodeError::TrailingBytes(buf.len() - used));
    }
    Ok(msg)
}

fn decode_body(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let t = r.u8("message type")?;
    Ok(match t {
        ty::PING => Message::Ping {
            nonce: r.u64("ping nonce")?,
        },
        ty::PONG => Message::Pong {
            nonce: r.u64("pong nonce")?,
        },
        ty::ROUTE => {
            let key = Key::from_bytes(r.array("route key")?);
            let origin = r.info()?;
            let hops = r.u8("route hops")?;
            let hop_seq = r.u64("route hop_seq")?;
            let body = match r.u8("routed type")? {
                ty::ROUTED_JOIN => Routed::Join,
                ty::ROUTED_LOOKUP => Routed::Lookup {
                    lookup: r.u64("lookup id")?,
                },
                ty::ROUTED_PUBLISH => Routed::Publish {
                    payload: r.bytes("publish payload")?,
                },
                ty::ROUTED_ASK => Routed::Ask(r.ask()?),
                _ => return Err(DecodeError::Malformed("routed type")),
            };
            Message::Route(RouteMsg {
                key,
                origin,
                hops,
                hop_seq,
                body,
            })
        }
        ty::ROUTE_ACK => Message::RouteAck {
            hop_seq: r.u64("route ack")?,
        },
        ty::JOIN_REPLY => Message::JoinReply {
            entries: r.list()?,
            leaf: r.list()?,
            last: r.bool("join reply flag")?,
        },
        ty::ANNOUNCE => Message::Announce {
            reply: r.bool("announce flag")?,
        },
        ty::ANNOUNCE_ACK => Message::AnnounceAck { leaf: r.list()? },
        ty::JOIN_BUSY => Message::JoinBusy {
            contacts: r.list()?,
        },
        ty::LEAF_SET => Message::LeafSet {
            leaf: r.list()?,
            reply: r.bool("leaf set flag")?,
        },
        ty::ROW_REQUEST => Message::RowRequest { row: r.row()? },
        ty::ROW_REPLY => Message::RowReply {
            row: r.row()?,
            entries: r.list()?,
        },
        ty::LEAVE => Message::Leave { leaf: r.list()? },
        ty::LOOKUP_REPLY => Message::LookupReply {
            lookup: r.u64("lookup id")?,
            owner: r.info()?,
            hops: r.u8("lookup hops")?,
        },
        ty::GRAFT => Message::Graft {
            group: r.key("graft group")?,
            load: r.load()?,
            seen: r.event_seq("graft seen")?,
            rejoin: r.bool("graft rejoin")?,
        },
        ty::PRUNE => Message::Prune {
            group: r.key("prune group")?,
        },
        ty::CAST => Message::Cast {
            group: r.key("cast group")?,
            seq: r.event_seq("cast seq")?,
            payload: r.bytes("cast payload")?,
        },
        ty::DESCEND => Message::Descend(DescendMsg {
            group: r.key("descend group")?,
            requester: r.info()?,
            hops: r.u8("descend hops")?,
            hop_seq: r.u64("descend hop_seq")?,
            ask: r.ask()?,
        }),
        ty::REPLY => Message::Reply {
            id: r.u64("reply id")?,
            result: match r.u8("reply result")? {
                ty::RESULT_OK => ReplyResult::Ok(r.bytes("reply payload")?),
                ty::RESULT_FAULT => ReplyResult::Fault(r.string("reply fault")?),
                _ => return Err(DecodeError::Malformed("reply result")),
            },
        },
        ty::TUNNEL_ACCEPT => Message::TunnelAccept {
            tunnel: r.u64("tunnel id")?,
            peer_tunnel: r.u64("peer tunnel id")?,
        },
        ty::TUNNEL_DATA => Message::TunnelData {
            tunnel: r.u64("tunnel id")?,
            seq: r.u64("tunnel data seq")?,
            size: r.u64("tunnel data size")?,
            payload: r.bytes("tunnel data payload")?,
        },
        ty::TUNNEL_ALLOW => Message::TunnelAllow {
            tunnel: r.u64("tunnel id")?,
            bytes: r.u64("tunnel allow bytes")?,
        },
        ty::TUNNEL_CLOSE => Message::TunnelClose {
            tunnel: r.u64("tunnel id")?,
            reason: r.string("tunnel close reason")?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// A bounds-checked reader over a frame body. Running out of bytes inside a frame whose length
/// was complete is malformed input, not truncation.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn key(&mut self, what: &'static str) -> Result<Key, DecodeError> {
        Ok(Key::from_bytes(self.array(what)?))
    }

    /// A u32-length-prefixed payload. A length beyond the frame's remaining bytes is malformed
    /// (checked before anything is allocated).
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, what)?))
    }

    /// A u16-length-prefixed UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Malformed(what))
    }

    fn load(&mut self) -> Result<Load, DecodeError> {
        Ok(Load {
            members: self.u32("load members")?,
            capacity: self.u32("load capacity")?,
            inflight: self.u32("load inflight")?,
        })
    }

    fn event_seq(&mut self, what: &'static str) -> Result<EventSeq, DecodeError> {
        Ok(EventSeq {
            epoch: self.u64(what)?,
            seq: self.u64(what)?,
        })
    }

    fn ask(&mut self) -> Result<Ask, DecodeError> {
        let id = self.u64("ask id")?;
        let timeout_ms = self.u32("ask timeout")?;
        let kind = match self.u8("ask kind")? {
            ty::ASK_REQUEST => AskKind::Request {
                payload: self.bytes("request payload")?,
            },
            ty::ASK_TUNNEL => AskKind::Tunnel,
            _ => return Err(DecodeError::Malformed("ask kind")),
        };
        Ok(Ask {
            id,
            timeout_ms,
            kind,
        })
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    fn row(&mut self) -> Result<u8, DecodeError> {
        let row = self.u8("row")?;
        if usize::from(row) >= crate::id::DIGITS {
            return Err(DecodeError::Malformed("row index"));
        }
        Ok(row)
    }

    fn info(&mut self) -> Result<NodeInfo, DecodeError> {
        let id = NodeId::from_bytes(self.array("node id")?);
        let (addr, used) =
            crate::addr::parse(self.0).ok_or(DecodeError::Malformed("node address"))?;
        self.0 = &self.0[used..];
        Ok(NodeInfo { id, addr })
    }

    fn list(&mut self) -> Result<Vec<NodeInfo>, DecodeError> {
        let n = usize::from(self.u16("list length")?);
        if n > MAX_LIST_LEN {
            return Err(DecodeError::Malformed("list length"));
        }
        // Each entry takes at least 23 bytes: reject impossible counts before allocating.
        if n * 23 > self.0.len() {
            return Err(DecodeError::Malformed("list length"));
        }
        (0..n).map(|_| self.info()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u128) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: "10.0.0.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn ping_layout_is_stable() {
        let bytes = to_vec(&Message::Ping { nonce: 7 });
        assert_eq!(bytes, [0, 0, 0, 10, 1, 1, 0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn tunnel_allow_layout_is_stable() {
        let bytes = to_vec(&Message::TunnelAllow {
            tunnel: 0x0102,
            bytes: 5,
        });
        assert_eq!(
            bytes,
            [
                0, 0, 0, 18, // length
                1, 0x14, // version, type
                0, 0, 0, 0, 0, 0, 1, 2, // tunnel
                0, 0, 0, 0, 0, 0, 0, 5, // bytes
            ]
        );
    }

    #[test]
    fn reply_layouts_are_stable() {
        let ok = to_vec(&Message::Reply {
            id: 3,
            result: ReplyResult::Ok(Bytes::from_static(b"hi")),
        });
        assert_eq!(
            ok,
            [
                0, 0, 0, 17, 1, 0x11, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 2, b'h', b'i'
            ]
        );
        let fault = to_vec(&Message::Reply {
            id: 3,
            result: ReplyResult::Fault("é".into()),
        });
        assert_eq!(
            fault,
            [
                0, 0, 0, 15, 1, 0x11, 0, 0, 0, 0, 0, 0, 0, 3, 2, 0, 2, 0xc3, 0xa9
            ]
        );
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        // 'é' is two bytes: 32768 of them take 65536 bytes, one more than a string may.
        let reason = "é".repeat(MAX_STR_LEN / 2 + 1);
        let msg = Message::TunnelClose { tunnel: 1, reason };
        let bytes = to_vec(&msg);
        assert_eq!(bytes.len(), encoded_len(&msg));
        let Message::TunnelClose { reason, .. } =
            decode_exact(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap()
        else {
            panic!("not a tunnel close");
        };
        assert_eq!(reason.len(), MAX_STR_LEN - 1);
        assert_eq!(reason, "é".repeat(MAX_STR_LEN / 2));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let mut bytes = to_vec(&Message::TunnelClose {
            tunnel: 1,
            reason: "ab".into(),
        });
        let n = bytes.len();
        bytes[n - 1] = 0xff;
        assert_eq!(
            decode(&bytes, 64),
            Err(DecodeError::Malformed("tunnel close reason"))
        );
    }

    #[test]
    fn a_payload_longer_than_its_frame_is_malformed() {
        let mut bytes = to_vec(&Message::Cast {
            group: Key(9),
            seq: EventSeq { epoch: 1, seq: 2 },
            payload: Bytes::from_static(b"abc"),
        });
        // The payload's length prefix sits right before its 3 bytes.
        let at = bytes.len() - 3 - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(&bytes, DEFAULT_MAX_FRAME_LEN),
            Err(DecodeError::Malformed("cast payload"))
        );
    }

    #[test]
    fn unknown_ask_kind_and_result_tags_are_malformed() {
        let mut bytes = to_vec(&Message::Reply {
            id: 1,
            result: ReplyResult::Fault(String::new()),
        });
        bytes[14] = 3;
        assert_eq!(
            decode(&bytes, 64),
            Err(DecodeError::Malformed("reply result"))
        );
        let mut bytes = to_vec(&Message::Descend(DescendMsg {
            group: Key(1),
            requester: info(2),
            hops: 0,
            hop_seq: 0,
            ask: Ask {
                id: 1,
                timeout_ms: 10,
                kind: AskKind::Tunnel,
            },
        }));
        let n = bytes.len();
        bytes[n - 1] = 0;
        assert_eq!(decode(&bytes, 128), Err(DecodeError::Malformed("ask kind")));
    }

    #[test]
    fn rejects_oversize_before_reading_the_body() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(
            decode(&bytes, 1024),
            Err(DecodeError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
    }

    #[test]
    fn truncated_input_asks_for_more() {
        let bytes = to_vec(&Message::LeafSet {
            leaf: vec![info(1), info(2)],
            reply: true,
        });
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode(&bytes[..cut], DEFAULT_MAX_FRAME_LEN),
                Err(DecodeError::Truncated { .. })
            ));
        }
        assert!(decode(&bytes, DEFAULT_MAX_FRAME_LEN).is_ok());
    }

    #[test]
    fn wrong_version_and_type_are_typed_errors() {
        let mut bytes = to_vec(&Message::Announce { reply: true });
        bytes[4] = 9;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::UnsupportedVersion(9)));
        bytes[4] = VERSION;
        bytes[5] = 0xee;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::UnknownType(0xee)));
    }

    #[test]
    fn a_short_body_is_malformed_not_truncated() {
        // A complete frame whose body ends inside the nonce.
        let bytes = [0, 0, 0, 4, 1, 1, 0, 0];
        assert_eq!(
            decode(&bytes, 64),
            Err(DecodeError::Malformed("ping nonce"))
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = to_vec(&Message::Announce { reply: true });
        bytes.push(0);
        bytes[3] += 1;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn two_frames_in_a_row() {
        let mut bytes = to_vec(&Message::Ping { nonce: 1 });
        encode(&Message::Pong { nonce: 1 }, &mut bytes);
        let (a, used) = decode(&bytes, 64).unwrap();
        let (b, _) = decode(&bytes[used..], 64).unwrap();
        assert_eq!(a, Message::Ping { nonce: 1 });
        assert_eq!(b, Message::Pong { nonce: 1 });
    }
}
