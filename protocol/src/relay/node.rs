//! The packets a node sends to a client: their fields, encoder and parser.

use bytes::{Bytes, BytesMut};

use super::ext;
use super::packet_encoding;
use super::{Fields, Limits, Reader, RelayError, Sink, Stop, decode_with, op};
use crate::store::{IdResult, StoreResult};

/// The outcome carried by a node's REPLY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// `00 01 reply`: the service answered.
    Success(Bytes),
    /// `00 00 fault`: the service failed with this text.
    Fault(String),
    /// `01`: no answer in time (or no member, or node shutdown).
    Timeout,
}

/// Packets a node sends to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePacket {
    /// Handshake accepted: `00 magic version`.
    Init {
        /// [`RELAY_MAGIC`](super::RELAY_MAGIC).
        magic: String,
        /// [`VERSION`](super::VERSION).
        version: String,
    },
    /// Handshake refused: `01 magic reason`; the node then closes the connection.
    Deny {
        /// [`RELAY_MAGIC`](super::RELAY_MAGIC).
        magic: String,
        /// Why.
        reason: String,
    },
    /// `02 reason`: close; `""` is the ack of a graceful client close.
    Close {
        /// Why, `""` when graceful.
        reason: String,
    },
    /// `03 message`: a broadcast delivery.
    Broadcast {
        /// The message.
        message: Bytes,
    },
    /// `04 id request timeout_ms`: a request delivery to a service.
    Request {
        /// The node's request id, to be echoed in the client's REPLY.
        id: u64,
        /// The request.
        request: Bytes,
        /// The original timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `05 id timed_out [success (reply | fault)]`: the answer to a client's request.
    Reply {
        /// The client's request id.
        id: u64,
        /// What came of it.
        outcome: ReplyOutcome,
    },
    /// `08 topic event`: an event delivery.
    Publish {
        /// The topic (shared: a node hands the same one to every subscriber).
        topic: std::sync::Arc<str>,
        /// The event.
        event: Bytes,
    },
    /// `09 build_id chunk_limit`: an inbound tunnel offer to a service.
    TunInit {
        /// The node's build id, to be echoed in the client's TUN_CONFIRM.
        build_id: u64,
        /// Largest chunk payload the client may send.
        chunk_limit: u64,
    },
    /// `0a id timed_out [chunk_limit]`: the result of a client's TUN_INIT.
    TunConfirm {
        /// The client's tunnel id.
        id: u64,
        /// `Some(chunk_limit)` when built (`0a id 00 limit`), `None` on timeout or failure
        /// (`0a id 01`).
        chunk_limit: Option<u64>,
    },
    /// `0b id space`: credit grant, cumulative, in bytes.
    TunAllow {
        /// Tunnel id.
        id: u64,
        /// Bytes of credit granted.
        space: u64,
    },
    /// `0c id size payload`: one chunk of a tunnel message.
    TunTransfer {
        /// Tunnel id.
        id: u64,
        /// The whole message's length on a first chunk, 0 on continuations.
        size: u64,
        /// The chunk's bytes.
        payload: Bytes,
    },
    /// `0d id reason`: the tunnel closed (`""` = graceful, also the ack of a client close).
    TunClose {
        /// Tunnel id.
        id: u64,
        /// Why, `""` when graceful.
        reason: String,
    },
    /// `41 identity message` (extension): a message to an identity the client holds.
    IdMessage {
        /// The identity.
        identity: String,
        /// The message.
        message: Bytes,
    },
    /// `42 id result` (extension): the one outcome of an identity operation.
    IdResult {
        /// The client's operation id.
        id: u64,
        /// What came of it.
        result: IdResult,
    },
    /// `40 id result` (extension, see [`ext`]): the one outcome of a store operation.
    KvResult {
        /// The client's operation id.
        id: u64,
        /// What came of it.
        result: StoreResult,
    },
}

impl NodePacket {
    /// The packet's opcode (see [`op`]).
    pub fn opcode(&self) -> u8 {
        match self {
            NodePacket::Init { .. } => op::INIT,
            NodePacket::Deny { .. } => op::DENY,
            NodePacket::Close { .. } => op::CLOSE,
            NodePacket::Broadcast { .. } => op::BROADCAST,
            NodePacket::Request { .. } => op::REQUEST,
            NodePacket::Reply { .. } => op::REPLY,
            NodePacket::Publish { .. } => op::PUBLISH,
            NodePacket::TunInit { .. } => op::TUN_INIT,
            NodePacket::TunConfirm { .. } => op::TUN_CONFIRM,
            NodePacket::TunAllow { .. } => op::TUN_ALLOW,
            NodePacket::TunTransfer { .. } => op::TUN_TRANSFER,
            NodePacket::TunClose { .. } => op::TUN_CLOSE,
            NodePacket::KvResult { .. } => ext::op::KV_RESULT,
            NodePacket::IdMessage { .. } => ext::op::ID_MESSAGE,
            NodePacket::IdResult { .. } => ext::op::ID_RESULT,
        }
    }

    /// Appends the packet's wire bytes but for its last ones, which it returns: they must
    /// follow for the packet to be whole. A tunnel chunk's payload is left out this way, so
    /// that a writer can hand it to a vectored write instead of copying it into its buffer;
    /// every other packet is encoded whole (no tail).
    pub fn encode_head(&self, out: &mut Vec<u8>) -> Option<&Bytes> {
        match self {
            NodePacket::TunTransfer { payload, .. } => {
                // The payload is the packet's last field and its only binary.
                self.write(&mut super::Head(out));
                Some(payload)
            }
            _ => {
                self.encode(out);
                None
            }
        }
    }
}

packet_encoding!(NodePacket);

impl Fields for NodePacket {
    fn write<S: Sink>(&self, s: &mut S) {
        s.byte(self.opcode());
        match self {
            NodePacket::Init {
                magic,
                version: text,
            }
            | NodePacket::Deny {
                magic,
                reason: text,
            } => {
                s.bin(magic.as_bytes());
                s.bin(text.as_bytes());
            }
            NodePacket::Close { reason } => s.bin(reason.as_bytes()),
            NodePacket::Broadcast { message } => s.bin(message),
            NodePacket::Request {
                id,
                request,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(request);
                s.varint(*timeout_ms);
            }
            NodePacket::Reply { id, outcome } => {
                s.varint(*id);
                match outcome {
                    ReplyOutcome::Success(reply) => {
                        s.byte(0);
                        s.byte(1);
                        s.bin(reply);
                    }
                    ReplyOutcome::Fault(fault) => {
                        s.byte(0);
                        s.byte(0);
                        s.bin(fault.as_bytes());
                    }
                    ReplyOutcome::Timeout => s.byte(1),
                }
            }
            NodePacket::Publish { topic, event } => {
                s.bin(topic.as_bytes());
                s.bin(event);
            }
            NodePacket::TunInit {
                build_id: a,
                chunk_limit: b,
            }
            | NodePacket::TunAllow { id: a, space: b } => {
                s.varint(*a);
                s.varint(*b);
            }
            NodePacket::TunConfirm { id, chunk_limit } => {
                s.varint(*id);
                s.byte(u8::from(chunk_limit.is_none()));
                if let Some(limit) = chunk_limit {
                    s.varint(*limit);
                }
            }
            NodePacket::TunTransfer { id, size, payload } => {
                s.varint(*id);
                s.varint(*size);
                s.bin(payload);
            }
            NodePacket::TunClose { id, reason } => {
                s.varint(*id);
                s.bin(reason.as_bytes());
            }
            NodePacket::KvResult { id, result } => {
                s.varint(*id);
                ext::write_result(s, result);
            }
            NodePacket::IdMessage { identity, message } => {
                s.bin(identity.as_bytes());
                s.bin(message);
            }
            NodePacket::IdResult { id, result } => {
                s.varint(*id);
                ext::write_id_result(s, result);
            }
        }
    }
}

impl NodePacket {
    /// Decodes one packet from the front of `buf`. `Ok(None)`: incomplete, read more (nothing
    /// consumed). `Ok(Some(p))`: `buf` advanced past the packet; binary payloads are zero-copy
    /// slices of it. `Err`: protocol violation (nothing consumed; the caller closes the
    /// connection). SUBSCRIBE and UNSUBSCRIBE are never sent by nodes and are unknown.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<NodePacket>, RelayError> {
        decode_with(buf, limits, parse_node)
    }
}

fn parse_node(r: &mut Reader<'_>) -> Result<NodePacket, Stop> {
    // Struct expressions evaluate their fields in source order, i.e. wire order.
    Ok(match r.byte()? {
        op::INIT => NodePacket::Init {
            magic: r.string("magic")?,
            version: r.string("version")?,
        },
        op::DENY => NodePacket::Deny {
            magic: r.string("magic")?,
            reason: r.string("reason")?,
        },
        op::CLOSE => NodePacket::Close {
            reason: r.string("reason")?,
        },
        op::BROADCAST => NodePacket::Broadcast {
            message: r.bin("message")?,
        },
        op::REQUEST => NodePacket::Request {
            id: r.varint()?,
            request: r.bin("request")?,
            timeout_ms: r.varint()?,
        },
        op::REPLY => {
            let id = r.varint()?;
            let outcome = if r.flag()? {
                ReplyOutcome::Timeout
            } else if r.flag()? {
                ReplyOutcome::Success(r.bin("reply")?)
            } else {
                ReplyOutcome::Fault(r.string("fault")?)
            };
            NodePacket::Reply { id, outcome }
        }
        op::PUBLISH => NodePacket::Publish {
            topic: r.shared_string("topic")?,
            event: r.bin("event")?,
        },
        op::TUN_INIT => NodePacket::TunInit {
            build_id: r.varint()?,
            chunk_limit: r.varint()?,
        },
        op::TUN_CONFIRM => {
            let id = r.varint()?;
            let chunk_limit = if r.flag()? { None } else { Some(r.varint()?) };
            NodePacket::TunConfirm { id, chunk_limit }
        }
        op::TUN_ALLOW => NodePacket::TunAllow {
            id: r.varint()?,
            space: r.varint()?,
        },
        op::TUN_TRANSFER => NodePacket::TunTransfer {
            id: r.varint()?,
            size: r.varint()?,
            payload: r.chunk()?,
        },
        op::TUN_CLOSE => NodePacket::TunClose {
            id: r.varint()?,
            reason: r.string("reason")?,
        },
        ext::op::KV_RESULT => NodePacket::KvResult {
            id: r.varint()?,
            result: r.store_result()?,
        },
        ext::op::ID_MESSAGE => NodePacket::IdMessage {
            identity: r.string("identity")?,
            message: r.bin("message")?,
        },
        ext::op::ID_RESULT => NodePacket::IdResult {
            id: r.varint()?,
            result: r.id_result()?,
        },
        other => return Err(RelayError::UnknownOpcode(other).into()),
    })
}
