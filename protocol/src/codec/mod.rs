//! The versioned binary frame codec for node-to-node messages.
//!
//! # Frame layout
//! ```text
//! +----------------+---------+------+---------------------+
//! | length: u32 BE | version | type | body (length-2 B)   |
//! +----------------+---------+------+---------------------+
//! ```
//! `length` counts the bytes after itself (version, type and body). Integers are big-endian. A
//! [`NodeInfo`](crate::NodeInfo) is its 16-byte id followed by an address: tag `4` + 4 bytes + port, or tag `6` +
//! 16 bytes + port (u16). A list is a u16 count followed by its items, at most [`MAX_LIST_LEN`].
//!
//! Other field encodings: a [`Key`](crate::Key) is its 16 big-endian bytes; a [`Load`](crate::Load) is `members`,
//! `capacity`, `inflight` (3 × u32); an [`EventSeq`](crate::EventSeq) is `epoch`, `seq` (2 × u64); an
//! [`EventId`](crate::EventId) is `origin` (16-byte id), `nonce` (u64). A byte
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
//! 0x0d  Graft          group key | load Load | seen EventSeq | rejoin bool | height u8
//! 0x0e  Prune          group key
//! 0x0f  Cast           group key | seq EventSeq | event EventId | payload
//! 0x10  Descend        group key | requester NodeInfo | hops u8 | hop_seq u64 | ask
//! 0x11  Reply          id u64 | result
//! 0x12  TunnelAccept   tunnel u64 | peer_tunnel u64 | params
//! 0x13  TunnelData     tunnel u64 | sender_tunnel u64 | seq u64 | size u64 | payload
//! 0x14  TunnelAllow    tunnel u64 | sender_tunnel u64 | consumed u64
//! 0x15  TunnelClose    tunnel u64 | reason string
//! 0x16  JoinBusy       contacts list
//! 0x17  Discover       nonce u64 | want (tag u8: 0 = Probe, 1 = LeafSet, 2 = Row: row u8)
//! 0x18  DiscoverReply  nonce u64 | rows u8 | entries list
//! 0x19  Heartbeat      (nothing)
//! 0x1a  Suspect        node id (16 bytes)
//! 0x1b  Redirect       group key | siblings (u16 count, then per sibling: NodeInfo | rtt_us u32)
//! 0x1c  PongPing       nonce u64 | ping u64
//! 0x1d  StoreReply     op u64 | store result
//! 0x1e  StoreWrite     nonce u64 | entries (u16 count, then entry each)
//! 0x1f  StoreAck       nonce u64 | stored flag
//! 0x20  StoreRead      nonce u64 | key
//! 0x21  StoreValue     nonce u64 | flag | [entry]
//! 0x22  StoreSync      buckets (u16 count = 16, then u64 each)
//! 0x23  StoreKeys      buckets u32 | keys (u16 count, then key | version each) | reply flag
//! 0x24  IdDeliver      id u64 | identity string | payload
//! 0x25  IdAck          id u64 | delivered flag
//! 0x26  RouteAcks      hop_seqs (u16 count, 1 to MAX_LIST_LEN, then u64 each)
//!
//! routed (a tag byte, then):
//! 0x01  Join           (nothing)
//! 0x02  Lookup         lookup u64
//! 0x03  Publish        nonce u64 | payload
//! 0x04  Ask            ask
//! 0x05  Store          store op
//!
//! ask:     id u64 | timeout_ms u32 | kind tag u8 (1 = Request: payload; 2 = Tunnel: params)
//! params:  window u64 | chunk_limit u32
//! result:  tag u8 (1 = Ok: payload; 2 = Fault: string)
//!
//! version:      hlc u64 | node u64
//! opt version:  flag u8 (0: none; 1: version follows)
//! store op:     id u64 | timeout_ms u32 | name string | kind tag u8 (1 = Get; 2 = Put:
//!               payload, ttl_ms u64, opt version; 3 = Delete: opt version)
//! store result: tag u8 (1 = Written: version; 2 = Found: version, expires_ms u64, payload;
//!               3 = NotFound; 4 = Conflict: version; 5 = Failed: string; 6 = TimedOut)
//! entry:        key | name string | version | expires_ms u64 | flag u8 (1: payload follows;
//!               0: a deletion)
//! ```
//!
//! Decoding never panics: oversized, truncated, unknown or malformed input is a [`DecodeError`].

mod decode;
mod encode;
mod store;

pub use decode::{decode, decode_exact};
pub use encode::{encode, encode_head, encoded_len, to_vec};

/// The frame format version this codec writes and accepts. Nodes of another version refuse
/// each other's frames with [`DecodeError::UnsupportedVersion`] rather than misread them.
///
/// - 1: the first format.
/// - 2: `Graft` carries the subtree height; `Discover`, `DiscoverReply`, `Suspect` and
///   `Redirect` added (proximity and liveness, issue 15).
/// - 3: `PongPing` added (a pinged node measures the pinger in the same exchange).
/// - 4: routed publishes and casts carry an event identity (issue 16).
/// - 5: the replicated store's messages (`Route` body `Store`, `StoreReply` ... `StoreKeys`)
///   and identity deliveries (`IdDeliver`, `IdAck`).
/// - 6: `RouteAcks` added (a link's batch of acknowledgements in one frame).
pub const VERSION: u8 = 6;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Default upper bound on a frame's length (after the prefix), used by [`decode()`].
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
    pub(super) const DISCOVER: u8 = 0x17;
    pub(super) const DISCOVER_REPLY: u8 = 0x18;
    pub(super) const HEARTBEAT: u8 = 0x19;
    pub(super) const SUSPECT: u8 = 0x1a;
    pub(super) const REDIRECT: u8 = 0x1b;
    pub(super) const PONG_PING: u8 = 0x1c;
    pub(super) const STORE_REPLY: u8 = 0x1d;
    pub(super) const STORE_WRITE: u8 = 0x1e;
    pub(super) const STORE_ACK: u8 = 0x1f;
    pub(super) const STORE_READ: u8 = 0x20;
    pub(super) const STORE_VALUE: u8 = 0x21;
    pub(super) const STORE_SYNC: u8 = 0x22;
    pub(super) const STORE_KEYS: u8 = 0x23;
    pub(super) const ID_DELIVER: u8 = 0x24;
    pub(super) const ID_ACK: u8 = 0x25;
    pub(super) const ROUTE_ACKS: u8 = 0x26;
    pub(super) const ROUTED_JOIN: u8 = 0x01;
    pub(super) const ROUTED_LOOKUP: u8 = 0x02;
    pub(super) const ROUTED_PUBLISH: u8 = 0x03;
    pub(super) const ROUTED_ASK: u8 = 0x04;
    pub(super) const ROUTED_STORE: u8 = 0x05;
    pub(super) const ASK_REQUEST: u8 = 1;
    pub(super) const ASK_TUNNEL: u8 = 2;
    pub(super) const RESULT_OK: u8 = 1;
    pub(super) const RESULT_FAULT: u8 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Key, NodeId};
    use crate::message::{Ask, AskKind, DescendMsg, EventSeq, Message, NodeInfo, ReplyResult};
    use bytes::Bytes;

    fn info(id: u128) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: "10.0.0.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn ping_layout_is_stable() {
        let bytes = to_vec(&Message::Ping { nonce: 7 });
        // The version byte is pinned here: a format change must bump it on purpose.
        assert_eq!(bytes, [0, 0, 0, 10, 6, 1, 0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn tunnel_allow_layout_is_stable() {
        let bytes = to_vec(&Message::TunnelAllow {
            tunnel: 0x0102,
            sender_tunnel: 3,
            consumed: 5,
        });
        assert_eq!(
            bytes,
            [
                0, 0, 0, 26, // length
                VERSION, 0x14, // version, type
                0, 0, 0, 0, 0, 0, 1, 2, // tunnel
                0, 0, 0, 0, 0, 0, 0, 3, // sender's tunnel
                0, 0, 0, 0, 0, 0, 0, 5, // consumed
            ]
        );
    }

    /// A batch of acknowledgements: a count, then the sequence numbers; an empty or overlong
    /// count, or one the body cannot hold, is malformed.
    #[test]
    fn route_acks_layout_is_stable_and_counts_are_checked() {
        let bytes = to_vec(&Message::RouteAcks {
            hop_seqs: vec![1, 0x0203],
        });
        assert_eq!(
            bytes,
            [
                0, 0, 0, 20, // length
                VERSION, 0x26, // version, type
                0, 2, // count
                0, 0, 0, 0, 0, 0, 0, 1, // first
                0, 0, 0, 0, 0, 0, 2, 3, // second
            ]
        );
        let most = Message::RouteAcks {
            hop_seqs: (0..MAX_LIST_LEN as u64).collect(),
        };
        let bytes = to_vec(&most);
        assert_eq!(
            decode(&bytes, DEFAULT_MAX_FRAME_LEN),
            Ok((most, bytes.len()))
        );
        for (count, body) in [(0u16, 0usize), (3, 16), (1025, 1025 * 8)] {
            let mut frame = vec![0; 4];
            frame.extend_from_slice(&[VERSION, 0x26]);
            frame.extend_from_slice(&count.to_be_bytes());
            frame.resize(frame.len() + body, 0);
            let len = u32::try_from(frame.len() - 4).unwrap();
            frame[..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                decode(&frame, DEFAULT_MAX_FRAME_LEN),
                Err(DecodeError::Malformed("acknowledgement count")),
                "count {count}, {body} bytes"
            );
        }
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
                0, 0, 0, 17, VERSION, 0x11, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 2, b'h', b'i'
            ]
        );
        let fault = to_vec(&Message::Reply {
            id: 3,
            result: ReplyResult::Fault("é".into()),
        });
        assert_eq!(
            fault,
            [
                0, 0, 0, 15, VERSION, 0x11, 0, 0, 0, 0, 0, 0, 0, 3, 2, 0, 2, 0xc3, 0xa9
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
        let mut bytes = to_vec(&Message::cast(crate::CastMsg {
            group: Key(9),
            seq: EventSeq { epoch: 1, seq: 2 },
            event: crate::EventId {
                origin: crate::NodeId(5),
                nonce: 6,
            },
            payload: Bytes::from_static(b"abc"),
        }));
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
        let mut bytes = to_vec(&Message::descend(DescendMsg {
            group: Key(1),
            requester: info(2),
            hops: 0,
            hop_seq: 0,
            ask: Ask {
                id: 1,
                timeout_ms: 10,
                kind: AskKind::Tunnel(crate::TunnelParams {
                    window: 1,
                    chunk_limit: 1,
                }),
            },
        }));
        // The kind tag sits before the 12 bytes of tunnel parameters.
        let n = bytes.len();
        bytes[n - 13] = 0;
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
        // A node of the first format (before grafts carried heights) is refused, not misread.
        bytes[4] = 1;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::UnsupportedVersion(1)));
        // Nor is one of the second (no `PongPing`: it would drop the connection at the first).
        bytes[4] = 2;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::UnsupportedVersion(2)));
        bytes[4] = VERSION;
        bytes[5] = 0xee;
        assert_eq!(decode(&bytes, 64), Err(DecodeError::UnknownType(0xee)));
    }

    #[test]
    fn a_short_body_is_malformed_not_truncated() {
        // A complete frame whose body ends inside the nonce.
        let bytes = [0, 0, 0, 4, VERSION, 1, 0, 0];
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
    fn a_pong_ping_is_two_nonces() {
        let bytes = to_vec(&Message::PongPing { nonce: 1, ping: 2 });
        let mut want = vec![0, 0, 0, 18, VERSION, 0x1c];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(bytes, want);
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
