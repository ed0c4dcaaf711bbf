//! Petal's extension of relay v1 (`"v1.0-draft2+petal1"`): the replicated store's operations.
//!
//! A client that wants them sends [`EXT_VERSION`] in its INIT instead of
//! [`VERSION`](super::VERSION); a Petal node accepts with an INIT carrying the same version,
//! and an Iris node denies it (the client may then retry with plain v1). Plain v1 clients are
//! unaffected: a node refuses these opcodes from them as unknown, as before.
//!
//! ```text
//! op    name        client -> node                                  node -> client
//! 0x40  KV_GET      id key:str timeout                              -
//! 0x41  KV_PUT      id key:str value:bin ttl_ms expect timeout      -
//! 0x42  KV_DELETE   id key:str expect timeout                       -
//! 0x40  KV_RESULT   -                                               id result
//! 0x43  ID_REGISTER id identity:str timeout                         -
//! 0x44  ID_UNREGISTER identity:str                                  -
//! 0x45  ID_SEND     id identity:str message:bin timeout             -
//! 0x46  ID_WHO      id identity:str timeout                         -
//! 0x41  ID_MESSAGE  -                                               identity:str message:bin
//! 0x42  ID_RESULT   -                                               id id_result
//!
//! expect:  00 (none) | 01 hlc node   (compare-and-set on that version; 0 0 = "absent")
//! result:  00 hlc node                      written, under this version
//!          01 hlc node expires_ms value:bin found (expires_ms 0: never)
//!          02                               not found
//!          03 hlc node                      conflict: the current version (0 0: absent)
//!          04 reason:str                    failed
//!          05                               timed out
//! id_result: 00 registered | 01 nodes (sent) | 02 count (id:bin16 addr:str)* (holders)
//!          | 03 unknown | 04 reason:str (failed) | 05 timed out
//! ```
//! Ids (the client's, echoed by KV_RESULT), timeouts, TTLs and version fields are varints.

use super::{Reader, Sink, Stop};
use crate::store::{IdResult, StoreResult, Version};
use crate::{NodeId, NodeInfo};

/// The version string that asks for (and grants) the extension.
pub const EXT_VERSION: &str = "v1.0-draft2+petal1";

/// The extension's opcodes.
pub mod op {
    /// Read a key (client to node).
    pub const KV_GET: u8 = 0x40;
    /// Write a key (client to node).
    pub const KV_PUT: u8 = 0x41;
    /// Delete a key (client to node).
    pub const KV_DELETE: u8 = 0x42;
    /// The outcome of a store operation (node to client).
    pub const KV_RESULT: u8 = 0x40;
    /// Hold an identity (client to node).
    pub const ID_REGISTER: u8 = 0x43;
    /// Let go of an identity (client to node).
    pub const ID_UNREGISTER: u8 = 0x44;
    /// Send a message to an identity (client to node).
    pub const ID_SEND: u8 = 0x45;
    /// Ask which nodes hold an identity (client to node).
    pub const ID_WHO: u8 = 0x46;
    /// A message to an identity the client holds (node to client).
    pub const ID_MESSAGE: u8 = 0x41;
    /// The outcome of an identity operation (node to client).
    pub const ID_RESULT: u8 = 0x42;
}

pub(super) fn write_id_result<S: Sink>(s: &mut S, r: &IdResult) {
    match r {
        IdResult::Registered => s.byte(0),
        IdResult::Sent { nodes } => {
            s.byte(1);
            s.varint(u64::from(*nodes));
        }
        IdResult::Holders(list) => {
            s.byte(2);
            s.varint(list.len() as u64);
            for n in list {
                s.bin(&n.id.to_bytes());
                s.bin(n.addr.to_string().as_bytes());
            }
        }
        IdResult::Unknown => s.byte(3),
        IdResult::Failed(reason) => {
            s.byte(4);
            s.bin(reason.as_bytes());
        }
        IdResult::TimedOut => s.byte(5),
    }
}

/// True for the opcodes of the packets a client sends under the extension (a node refuses
/// them, at the opcode, from a client that did not negotiate it, as plain v1 does).
pub fn is_client_opcode(op: u8) -> bool {
    matches!(
        op,
        op::KV_GET
            | op::KV_PUT
            | op::KV_DELETE
            | op::ID_REGISTER
            | op::ID_UNREGISTER
            | op::ID_SEND
            | op::ID_WHO
    )
}

pub(super) fn write_version<S: Sink>(s: &mut S, v: Version) {
    s.varint(v.hlc);
    s.varint(v.node);
}

pub(super) fn write_expect<S: Sink>(s: &mut S, v: Option<Version>) {
    match v {
        None => s.byte(0),
        Some(v) => {
            s.byte(1);
            write_version(s, v);
        }
    }
}

pub(super) fn write_result<S: Sink>(s: &mut S, r: &StoreResult) {
    match r {
        StoreResult::Written(v) => {
            s.byte(0);
            write_version(s, *v);
        }
        StoreResult::Found {
            version,
            value,
            expires_ms,
        } => {
            s.byte(1);
            write_version(s, *version);
            s.varint(*expires_ms);
            s.bin(value);
        }
        StoreResult::NotFound => s.byte(2),
        StoreResult::Conflict(v) => {
            s.byte(3);
            write_version(s, *v);
        }
        StoreResult::Failed(reason) => {
            s.byte(4);
            s.bin(reason.as_bytes());
        }
        StoreResult::TimedOut => s.byte(5),
    }
}

impl Reader<'_> {
    fn version(&mut self) -> Result<Version, Stop> {
        Ok(Version {
            hlc: self.varint()?,
            node: self.varint()?,
        })
    }

    pub(super) fn expect(&mut self) -> Result<Option<Version>, Stop> {
        Ok(if self.flag()? {
            Some(self.version()?)
        } else {
            None
        })
    }

    pub(super) fn id_result(&mut self) -> Result<IdResult, Stop> {
        Ok(match self.byte()? {
            0 => IdResult::Registered,
            1 => IdResult::Sent {
                nodes: u32::try_from(self.varint()?).unwrap_or(u32::MAX),
            },
            2 => {
                let n = self.varint()?;
                let mut list = Vec::new();
                for _ in 0..n.min(1024) {
                    let id = self.bin("holder id")?;
                    let addr = self.string("holder address")?;
                    if self.scanning() {
                        // Scan mode: contents are not read yet.
                        continue;
                    }
                    let (Ok(id), Ok(addr)) = (<[u8; 16]>::try_from(&id[..]), addr.parse()) else {
                        return Err(super::RelayError::BadResult(2).into());
                    };
                    list.push(NodeInfo {
                        id: NodeId::from_bytes(id),
                        addr,
                    });
                }
                if n > 1024 {
                    return Err(super::RelayError::BadResult(2).into());
                }
                IdResult::Holders(list)
            }
            3 => IdResult::Unknown,
            4 => IdResult::Failed(self.string("reason")?),
            5 => IdResult::TimedOut,
            other => return Err(super::RelayError::BadResult(other).into()),
        })
    }

    pub(super) fn store_result(&mut self) -> Result<StoreResult, Stop> {
        Ok(match self.byte()? {
            0 => StoreResult::Written(self.version()?),
            1 => StoreResult::Found {
                version: self.version()?,
                expires_ms: self.varint()?,
                value: self.bin("value")?,
            },
            2 => StoreResult::NotFound,
            3 => StoreResult::Conflict(self.version()?),
            4 => StoreResult::Failed(self.string("reason")?),
            5 => StoreResult::TimedOut,
            other => return Err(super::RelayError::BadResult(other).into()),
        })
    }
}
