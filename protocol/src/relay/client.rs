//! The packets a client sends to its node: their fields, encoder and parser.

use bytes::{Bytes, BytesMut};

use super::ext;
use super::packet_encoding;
use super::{Fields, Limits, Reader, RelayError, Sink, Stop, decode_with, op};
use crate::store::Version;

/// Packets a client sends to its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPacket {
    /// Handshake: `00 magic version cluster`; `cluster` is `""` for a plain client.
    Init {
        /// [`CLIENT_MAGIC`](super::CLIENT_MAGIC) from a genuine client.
        magic: String,
        /// The client's protocol version ([`VERSION`](super::VERSION) if compatible).
        version: String,
        /// The cluster to serve, `""` for a plain client.
        cluster: String,
    },
    /// Graceful close request: `02`.
    Close,
    /// `03 cluster message`: deliver to every member of `cluster`.
    Broadcast {
        /// Target cluster.
        cluster: String,
        /// The message.
        message: Bytes,
    },
    /// `04 id cluster request timeout_ms`: ask one member of `cluster`.
    Request {
        /// The client's request id, echoed by the node's REPLY.
        id: u64,
        /// Target cluster.
        cluster: String,
        /// The request.
        request: Bytes,
        /// Timeout in milliseconds, enforced by the node.
        timeout_ms: u64,
    },
    /// `05 id success (reply | fault)`: a service's answer to a delivered request.
    Reply {
        /// The node's request id (from the delivered REQUEST).
        id: u64,
        /// `Ok` = success reply, `Err` = fault text.
        result: Result<Bytes, String>,
    },
    /// `06 topic`.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// `07 topic`.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// `08 topic event`.
    Publish {
        /// The topic.
        topic: String,
        /// The event.
        event: Bytes,
    },
    /// `09 id cluster timeout_ms`: open a tunnel to a member of `cluster`.
    TunInit {
        /// The client's tunnel id.
        id: u64,
        /// Target cluster.
        cluster: String,
        /// Timeout in milliseconds, enforced by the node.
        timeout_ms: u64,
    },
    /// `0a build_id tun_id`: accept an inbound tunnel.
    TunConfirm {
        /// The node's build id (from its TUN_INIT).
        build_id: u64,
        /// The client's tunnel id for it from now on.
        tun_id: u64,
    },
    /// `0b id space`: grant credit, cumulative, in bytes.
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
    /// `0d id`: close a tunnel.
    TunClose {
        /// Tunnel id.
        id: u64,
    },
    /// `40 id key timeout_ms` (extension, see [`ext`]): read a stored key.
    KvGet {
        /// The client's operation id, echoed by the node's KV_RESULT.
        id: u64,
        /// The key's name.
        key: String,
        /// Timeout in milliseconds, enforced by the node.
        timeout_ms: u64,
    },
    /// `41 id key value ttl_ms expect timeout_ms` (extension): write a key.
    KvPut {
        /// The client's operation id.
        id: u64,
        /// The key's name.
        key: String,
        /// The value.
        value: Bytes,
        /// Time to live in milliseconds (0: for ever).
        ttl_ms: u64,
        /// Compare-and-set: the version the key must have.
        expect: Option<Version>,
        /// Timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `43 id identity timeout_ms` (extension): hold an identity.
    IdRegister {
        /// The client's operation id, echoed by the node's ID_RESULT.
        id: u64,
        /// The identity.
        identity: String,
        /// Timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `44 identity` (extension): let go of an identity (no answer).
    IdUnregister {
        /// The identity.
        identity: String,
    },
    /// `45 id identity message timeout_ms` (extension): send to an identity's holders.
    IdSend {
        /// The client's operation id.
        id: u64,
        /// The identity.
        identity: String,
        /// The message.
        message: Bytes,
        /// Timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `46 id identity timeout_ms` (extension): which nodes hold an identity.
    IdWho {
        /// The client's operation id.
        id: u64,
        /// The identity.
        identity: String,
        /// Timeout in milliseconds.
        timeout_ms: u64,
    },
    /// `42 id key expect timeout_ms` (extension): delete a key.
    KvDelete {
        /// The client's operation id.
        id: u64,
        /// The key's name.
        key: String,
        /// Compare-and-delete: the version the key must have.
        expect: Option<Version>,
        /// Timeout in milliseconds.
        timeout_ms: u64,
    },
}

impl ClientPacket {
    /// The packet's opcode (see [`op`]).
    pub fn opcode(&self) -> u8 {
        match self {
            ClientPacket::Init { .. } => op::INIT,
            ClientPacket::Close => op::CLOSE,
            ClientPacket::Broadcast { .. } => op::BROADCAST,
            ClientPacket::Request { .. } => op::REQUEST,
            ClientPacket::Reply { .. } => op::REPLY,
            ClientPacket::Subscribe { .. } => op::SUBSCRIBE,
            ClientPacket::Unsubscribe { .. } => op::UNSUBSCRIBE,
            ClientPacket::Publish { .. } => op::PUBLISH,
            ClientPacket::TunInit { .. } => op::TUN_INIT,
            ClientPacket::TunConfirm { .. } => op::TUN_CONFIRM,
            ClientPacket::TunAllow { .. } => op::TUN_ALLOW,
            ClientPacket::TunTransfer { .. } => op::TUN_TRANSFER,
            ClientPacket::TunClose { .. } => op::TUN_CLOSE,
            ClientPacket::KvGet { .. } => ext::op::KV_GET,
            ClientPacket::KvPut { .. } => ext::op::KV_PUT,
            ClientPacket::KvDelete { .. } => ext::op::KV_DELETE,
            ClientPacket::IdRegister { .. } => ext::op::ID_REGISTER,
            ClientPacket::IdUnregister { .. } => ext::op::ID_UNREGISTER,
            ClientPacket::IdSend { .. } => ext::op::ID_SEND,
            ClientPacket::IdWho { .. } => ext::op::ID_WHO,
        }
    }

    /// True for the packets of Petal's extension (a node takes them only from a client that
    /// negotiated [`ext::EXT_VERSION`]).
    pub fn is_extension(&self) -> bool {
        matches!(
            self,
            ClientPacket::KvGet { .. }
                | ClientPacket::KvPut { .. }
                | ClientPacket::KvDelete { .. }
                | ClientPacket::IdRegister { .. }
                | ClientPacket::IdUnregister { .. }
                | ClientPacket::IdSend { .. }
                | ClientPacket::IdWho { .. }
        )
    }
}

packet_encoding!(ClientPacket);

impl Fields for ClientPacket {
    fn write<S: Sink>(&self, s: &mut S) {
        s.byte(self.opcode());
        match self {
            ClientPacket::Init {
                magic,
                version,
                cluster,
            } => {
                s.bin(magic.as_bytes());
                s.bin(version.as_bytes());
                s.bin(cluster.as_bytes());
            }
            ClientPacket::Close => {}
            ClientPacket::Broadcast { cluster, message } => {
                s.bin(cluster.as_bytes());
                s.bin(message);
            }
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(cluster.as_bytes());
                s.bin(request);
                s.varint(*timeout_ms);
            }
            ClientPacket::Reply { id, result } => {
                s.varint(*id);
                s.byte(u8::from(result.is_ok()));
                match result {
                    Ok(reply) => s.bin(reply),
                    Err(fault) => s.bin(fault.as_bytes()),
                }
            }
            ClientPacket::Subscribe { topic } | ClientPacket::Unsubscribe { topic } => {
                s.bin(topic.as_bytes());
            }
            ClientPacket::Publish { topic, event } => {
                s.bin(topic.as_bytes());
                s.bin(event);
            }
            ClientPacket::TunInit {
                id,
                cluster,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(cluster.as_bytes());
                s.varint(*timeout_ms);
            }
            ClientPacket::TunConfirm {
                build_id: a,
                tun_id: b,
            }
            | ClientPacket::TunAllow { id: a, space: b } => {
                s.varint(*a);
                s.varint(*b);
            }
            ClientPacket::TunTransfer { id, size, payload } => {
                s.varint(*id);
                s.varint(*size);
                s.bin(payload);
            }
            ClientPacket::TunClose { id } => s.varint(*id),
            ClientPacket::KvGet {
                id,
                key,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(key.as_bytes());
                s.varint(*timeout_ms);
            }
            ClientPacket::KvPut {
                id,
                key,
                value,
                ttl_ms,
                expect,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(key.as_bytes());
                s.bin(value);
                s.varint(*ttl_ms);
                ext::write_expect(s, *expect);
                s.varint(*timeout_ms);
            }
            ClientPacket::KvDelete {
                id,
                key,
                expect,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(key.as_bytes());
                ext::write_expect(s, *expect);
                s.varint(*timeout_ms);
            }
            ClientPacket::IdRegister {
                id,
                identity,
                timeout_ms,
            }
            | ClientPacket::IdWho {
                id,
                identity,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(identity.as_bytes());
                s.varint(*timeout_ms);
            }
            ClientPacket::IdUnregister { identity } => s.bin(identity.as_bytes()),
            ClientPacket::IdSend {
                id,
                identity,
                message,
                timeout_ms,
            } => {
                s.varint(*id);
                s.bin(identity.as_bytes());
                s.bin(message);
                s.varint(*timeout_ms);
            }
        }
    }
}

impl ClientPacket {
    /// Decodes one packet from the front of `buf`. `Ok(None)`: incomplete, read more (nothing
    /// consumed). `Ok(Some(p))`: `buf` advanced past the packet; binary payloads are zero-copy
    /// slices of it. `Err`: protocol violation (nothing consumed; the caller closes the
    /// connection). Opcode 0x00 is INIT; 0x01 (DENY) is never sent by clients and is unknown.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<ClientPacket>, RelayError> {
        decode_with(buf, limits, parse_client)
    }
}

impl ClientPacket {
    /// Checks the packet's fields against `limits` as [`decode`](Self::decode) would have:
    /// the first field too long, as decoding names it. For packets handed over as values (an
    /// application embedding its node), which never pass through the decoder.
    pub fn check(&self, limits: &Limits) -> Result<(), RelayError> {
        let string = |what: &'static str, s: &str| fits(what, s.len(), limits.max_string);
        let bin = |what: &'static str, b: &[u8]| fits(what, b.len(), limits.max_message);
        match self {
            ClientPacket::Init {
                magic,
                version,
                cluster,
            } => {
                string("magic", magic)?;
                string("version", version)?;
                string("cluster", cluster)
            }
            ClientPacket::Close
            | ClientPacket::TunConfirm { .. }
            | ClientPacket::TunAllow { .. }
            | ClientPacket::TunClose { .. } => Ok(()),
            ClientPacket::Broadcast { cluster, message } => {
                string("cluster", cluster)?;
                bin("message", message)
            }
            ClientPacket::Request {
                cluster, request, ..
            } => {
                string("cluster", cluster)?;
                bin("request", request)
            }
            ClientPacket::Reply { result, .. } => match result {
                Ok(reply) => bin("reply", reply),
                Err(fault) => string("fault", fault),
            },
            ClientPacket::Subscribe { topic } | ClientPacket::Unsubscribe { topic } => {
                string("topic", topic)
            }
            ClientPacket::Publish { topic, event } => {
                string("topic", topic)?;
                bin("event", event)
            }
            ClientPacket::TunInit { cluster, .. } => string("cluster", cluster),
            ClientPacket::TunTransfer { payload, .. } => {
                fits("payload", payload.len(), limits.max_chunk)
            }
            ClientPacket::KvGet { key, .. } | ClientPacket::KvDelete { key, .. } => {
                string("key", key)
            }
            ClientPacket::KvPut { key, value, .. } => {
                string("key", key)?;
                bin("value", value)
            }
            ClientPacket::IdRegister { identity, .. }
            | ClientPacket::IdWho { identity, .. }
            | ClientPacket::IdUnregister { identity } => string("identity", identity),
            ClientPacket::IdSend {
                identity, message, ..
            } => {
                string("identity", identity)?;
                bin("message", message)
            }
        }
    }
}

/// `len` bytes of field `what` within `max`, or the decoder's error for it.
fn fits(what: &'static str, len: usize, max: usize) -> Result<(), RelayError> {
    if len > max {
        return Err(RelayError::TooLong {
            what,
            len: len as u64,
            max,
        });
    }
    Ok(())
}

fn parse_client(r: &mut Reader<'_>) -> Result<ClientPacket, Stop> {
    // Struct expressions evaluate their fields in source order, i.e. wire order.
    Ok(match r.byte()? {
        op::INIT => ClientPacket::Init {
            magic: r.string("magic")?,
            version: r.string("version")?,
            cluster: r.string("cluster")?,
        },
        op::CLOSE => ClientPacket::Close,
        op::BROADCAST => ClientPacket::Broadcast {
            cluster: r.string("cluster")?,
            message: r.bin("message")?,
        },
        op::REQUEST => ClientPacket::Request {
            id: r.varint()?,
            cluster: r.string("cluster")?,
            request: r.bin("request")?,
            timeout_ms: r.varint()?,
        },
        op::REPLY => {
            let id = r.varint()?;
            let result = if r.flag()? {
                Ok(r.bin("reply")?)
            } else {
                Err(r.string("fault")?)
            };
            ClientPacket::Reply { id, result }
        }
        op::SUBSCRIBE => ClientPacket::Subscribe {
            topic: r.string("topic")?,
        },
        op::UNSUBSCRIBE => ClientPacket::Unsubscribe {
            topic: r.string("topic")?,
        },
        op::PUBLISH => ClientPacket::Publish {
            topic: r.string("topic")?,
            event: r.bin("event")?,
        },
        op::TUN_INIT => ClientPacket::TunInit {
            id: r.varint()?,
            cluster: r.string("cluster")?,
            timeout_ms: r.varint()?,
        },
        op::TUN_CONFIRM => ClientPacket::TunConfirm {
            build_id: r.varint()?,
            tun_id: r.varint()?,
        },
        op::TUN_ALLOW => ClientPacket::TunAllow {
            id: r.varint()?,
            space: r.varint()?,
        },
        op::TUN_TRANSFER => ClientPacket::TunTransfer {
            id: r.varint()?,
            size: r.varint()?,
            payload: r.chunk()?,
        },
        op::TUN_CLOSE => ClientPacket::TunClose { id: r.varint()? },
        ext::op::KV_GET => ClientPacket::KvGet {
            id: r.varint()?,
            key: r.string("key")?,
            timeout_ms: r.varint()?,
        },
        ext::op::KV_PUT => ClientPacket::KvPut {
            id: r.varint()?,
            key: r.string("key")?,
            value: r.bin("value")?,
            ttl_ms: r.varint()?,
            expect: r.expect()?,
            timeout_ms: r.varint()?,
        },
        ext::op::KV_DELETE => ClientPacket::KvDelete {
            id: r.varint()?,
            key: r.string("key")?,
            expect: r.expect()?,
            timeout_ms: r.varint()?,
        },
        ext::op::ID_REGISTER => ClientPacket::IdRegister {
            id: r.varint()?,
            identity: r.string("identity")?,
            timeout_ms: r.varint()?,
        },
        ext::op::ID_UNREGISTER => ClientPacket::IdUnregister {
            identity: r.string("identity")?,
        },
        ext::op::ID_SEND => ClientPacket::IdSend {
            id: r.varint()?,
            identity: r.string("identity")?,
            message: r.bin("message")?,
            timeout_ms: r.varint()?,
        },
        ext::op::ID_WHO => ClientPacket::IdWho {
            id: r.varint()?,
            identity: r.string("identity")?,
            timeout_ms: r.varint()?,
        },
        other => return Err(RelayError::UnknownOpcode(other).into()),
    })
}
