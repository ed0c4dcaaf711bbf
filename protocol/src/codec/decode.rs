//! Decoding: frames to messages, never panicking on what a peer sends.

use bytes::Bytes;

use super::{DecodeError, LEN_PREFIX, MAX_LIST_LEN, VERSION, ty};
use crate::id::{Key, NodeId};
use crate::message::{
    Ask, AskKind, CastMsg, DescendMsg, EventId, EventSeq, Load, Message, NodeInfo, ReplyResult,
    RouteMsg, Routed, Sibling, Want,
};

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
        ty::PONG_PING => Message::PongPing {
            nonce: r.u64("pong-ping nonce")?,
            ping: r.u64("pong-ping ping")?,
        },
        ty::ROUTE => r.route()?,
        ty::ROUTE_ACK => Message::RouteAck {
            hop_seq: r.u64("route ack")?,
        },
        ty::ROUTE_ACKS => Message::RouteAcks {
            hop_seqs: r.route_acks()?,
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
        ty::DISCOVER => Message::Discover {
            nonce: r.u64("discover nonce")?,
            want: match r.u8("discover want")? {
                0 => Want::Probe,
                1 => Want::LeafSet,
                2 => Want::Row(r.row()?),
                _ => return Err(DecodeError::Malformed("discover want")),
            },
        },
        ty::HEARTBEAT => Message::Heartbeat,
        ty::SUSPECT => Message::Suspect {
            node: NodeId(u128::from_be_bytes(r.array("suspect node")?)),
        },
        ty::DISCOVER_REPLY => Message::DiscoverReply {
            nonce: r.u64("discover reply nonce")?,
            rows: r.u8("discover reply rows")?,
            entries: r.list()?,
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
            height: r.u8("graft height")?,
        },
        ty::PRUNE => Message::Prune {
            group: r.key("prune group")?,
        },
        ty::REDIRECT => Message::Redirect {
            group: r.key("redirect group")?,
            siblings: r.siblings()?,
        },
        ty::CAST => Message::cast(CastMsg {
            group: r.key("cast group")?,
            seq: r.event_seq("cast seq")?,
            event: EventId {
                origin: NodeId::from_bytes(r.array("cast origin")?),
                nonce: r.u64("cast nonce")?,
            },
            payload: r.bytes("cast payload")?,
        }),
        ty::DESCEND => Message::descend(DescendMsg {
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
            params: r.tunnel_params()?,
        },
        ty::TUNNEL_DATA => Message::TunnelData {
            tunnel: r.u64("tunnel id")?,
            sender_tunnel: r.u64("sender tunnel id")?,
            seq: r.u64("tunnel data seq")?,
            size: r.u64("tunnel data size")?,
            payload: r.bytes("tunnel data payload")?,
        },
        ty::TUNNEL_ALLOW => Message::TunnelAllow {
            tunnel: r.u64("tunnel id")?,
            sender_tunnel: r.u64("sender tunnel id")?,
            consumed: r.u64("tunnel allow consumed")?,
        },
        ty::TUNNEL_CLOSE => Message::TunnelClose {
            tunnel: r.u64("tunnel id")?,
            reason: r.string("tunnel close reason")?,
        },
        ty::STORE_REPLY..=ty::ID_ACK => r.store_message(t)?,
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// A bounds-checked reader over a frame body. Running out of bytes inside a frame whose length
/// was complete is malformed input, not truncation.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
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

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(super) fn key(&mut self, what: &'static str) -> Result<Key, DecodeError> {
        Ok(Key::from_bytes(self.array(what)?))
    }

    /// A u32-length-prefixed payload. A length beyond the frame's remaining bytes is malformed
    /// (checked before anything is allocated).
    pub(super) fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, what)?))
    }

    /// A u16-length-prefixed UTF-8 string.
    pub(super) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
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

    fn tunnel_params(&mut self) -> Result<crate::TunnelParams, DecodeError> {
        Ok(crate::TunnelParams {
            window: self.u64("tunnel window")?,
            chunk_limit: self.u32("tunnel chunk limit")?,
        })
    }

    fn ask(&mut self) -> Result<Ask, DecodeError> {
        let id = self.u64("ask id")?;
        let timeout_ms = self.u32("ask timeout")?;
        let kind = match self.u8("ask kind")? {
            ty::ASK_REQUEST => AskKind::Request {
                payload: self.bytes("request payload")?,
            },
            ty::ASK_TUNNEL => AskKind::Tunnel(self.tunnel_params()?),
            _ => return Err(DecodeError::Malformed("ask kind")),
        };
        Ok(Ask {
            id,
            timeout_ms,
            kind,
        })
    }

    pub(super) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
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

    fn siblings(&mut self) -> Result<Vec<Sibling>, DecodeError> {
        let n = usize::from(self.u16("sibling count")?);
        // Each sibling takes at least 27 bytes: reject impossible counts before allocating.
        if n > MAX_LIST_LEN || n * 27 > self.0.len() {
            return Err(DecodeError::Malformed("sibling count"));
        }
        (0..n)
            .map(|_| {
                Ok(Sibling {
                    info: self.info()?,
                    rtt_us: self.u32("sibling rtt")?,
                })
            })
            .collect()
    }

    /// The body of a `Route`.
    fn route(&mut self) -> Result<Message, DecodeError> {
        let key = Key::from_bytes(self.array("route key")?);
        let origin = self.info()?;
        let hops = self.u8("route hops")?;
        let hop_seq = self.u64("route hop_seq")?;
        let body = match self.u8("routed type")? {
            ty::ROUTED_JOIN => Routed::Join,
            ty::ROUTED_LOOKUP => Routed::Lookup {
                lookup: self.u64("lookup id")?,
            },
            ty::ROUTED_PUBLISH => Routed::Publish {
                nonce: self.u64("publish nonce")?,
                payload: self.bytes("publish payload")?,
            },
            ty::ROUTED_ASK => Routed::Ask(self.ask()?),
            ty::ROUTED_STORE => Routed::Store(Box::new(self.store_op()?)),
            _ => return Err(DecodeError::Malformed("routed type")),
        };
        Ok(Message::route(RouteMsg {
            key,
            origin,
            hops,
            hop_seq,
            body,
        }))
    }

    /// The sequence numbers of a `RouteAcks`: at least one, at most [`MAX_LIST_LEN`].
    fn route_acks(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = usize::from(self.u16("acknowledgement count")?);
        if n == 0 || n > MAX_LIST_LEN || n * 8 > self.0.len() {
            return Err(DecodeError::Malformed("acknowledgement count"));
        }
        (0..n).map(|_| self.u64("route ack")).collect()
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
