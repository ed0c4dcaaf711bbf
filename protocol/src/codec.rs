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
//! Decoding never panics: oversized, truncated, unknown or malformed input is a [`DecodeError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::id::{Key, NodeId};
use crate::message::{Message, NodeInfo, RouteMsg, Routed};

/// The frame format version this codec writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Default upper bound on a frame's length (after the prefix), used by [`decode`].
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;
/// Most items a list in a frame may carry.
pub const MAX_LIST_LEN: usize = 1024;

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
    pub const PING: u8 = 0x01;
    pub const PONG: u8 = 0x02;
    pub const ROUTE: u8 = 0x03;
    pub const ROUTE_ACK: u8 = 0x04;
    pub const JOIN_REPLY: u8 = 0x05;
    pub const ANNOUNCE: u8 = 0x06;
    pub const ANNOUNCE_ACK: u8 = 0x07;
    pub const LEAF_SET: u8 = 0x08;
    pub const ROW_REQUEST: u8 = 0x09;
    pub const ROW_REPLY: u8 = 0x0a;
    pub const LEAVE: u8 = 0x0b;
    pub const LOOKUP_REPLY: u8 = 0x0c;
    pub const ROUTED_JOIN: u8 = 0x01;
    pub const ROUTED_LOOKUP: u8 = 0x02;
}

/// Appends the frame of `msg` (length prefix included) to `out`.
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(VERSION);
    encode_body(msg, out);
    let len = (out.len() - start - LEN_PREFIX) as u32;
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
                + match r.body {
                    Routed::Join => 0,
                    Routed::Lookup { .. } => 8,
                }
        }
        Message::JoinReply { entries, leaf, .. } => list(entries) + list(leaf) + 1,
        Message::Announce { .. } => 1,
        Message::AnnounceAck { leaf } | Message::Leave { leaf } => list(leaf),
        Message::LeafSet { leaf, .. } => list(leaf) + 1,
        Message::RowRequest { .. } => 1,
        Message::RowReply { entries, .. } => 1 + list(entries),
        Message::LookupReply { owner, .. } => 8 + info_len(owner) + 1,
    };
    LEN_PREFIX + 2 + body
}

fn info_len(info: &NodeInfo) -> usize {
    16 + match info.addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
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
            match r.body {
                Routed::Join => out.push(ty::ROUTED_JOIN),
                Routed::Lookup { lookup } => {
                    out.push(ty::ROUTED_LOOKUP);
                    out.extend_from_slice(&lookup.to_be_bytes());
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
    }
}

fn put_info(info: &NodeInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&info.id.to_bytes());
    match info.addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&info.addr.port().to_be_bytes());
}

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

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
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
        let ip = match self.u8("address tag")? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>("ipv4 address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>("ipv6 address")?)),
            _ => return Err(DecodeError::Malformed("address tag")),
        };
        let port = self.u16("port")?;
        Ok(NodeInfo {
            id,
            addr: SocketAddr::new(ip, port),
        })
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
