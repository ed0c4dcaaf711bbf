//! The store's messages (see [`crate::store`]): lengths, encoding and decoding.

use super::decode::Reader;
use super::encode::{bytes_len, put_bytes, put_count, put_str, str_len};
use super::{DecodeError, MAX_LIST_LEN, ty};
use crate::message::{Message, STORE_BUCKETS};
use crate::store::{StoreEntry, StoreOp, StoreOpKind, StoreResult, Version};

const VERSION_LEN: usize = 16;
/// Bytes of the smallest entry (empty name, a deletion): key, name length, version, expiry, flag.
const MIN_ENTRY_LEN: usize = 16 + 2 + VERSION_LEN + 8 + 1;

/// Encoded bytes of a routed [`StoreOp`] (after the routed type byte).
pub(super) fn op_len(op: &StoreOp) -> usize {
    8 + 4
        + str_len(&op.name)
        + 1
        + match &op.kind {
            StoreOpKind::Get => 0,
            StoreOpKind::Put { value, expect, .. } => bytes_len(value) + 8 + opt_len(*expect),
            StoreOpKind::Delete { expect } => opt_len(*expect),
        }
}

fn opt_len(v: Option<Version>) -> usize {
    1 + if v.is_some() { VERSION_LEN } else { 0 }
}

fn entry_len(e: &StoreEntry) -> usize {
    16 + str_len(&e.name) + VERSION_LEN + 8 + 1 + e.value.as_ref().map_or(0, |v| bytes_len(v))
}

/// Encoded bytes of a store message's body (after the type byte).
pub(super) fn body_len(msg: &Message) -> usize {
    match msg {
        Message::StoreReply { result, .. } => {
            8 + 1
                + match &**result {
                    StoreResult::Written(_) | StoreResult::Conflict(_) => VERSION_LEN,
                    StoreResult::Found { value, .. } => VERSION_LEN + 8 + bytes_len(value),
                    StoreResult::NotFound | StoreResult::TimedOut => 0,
                    StoreResult::Failed(text) => str_len(text),
                }
        }
        Message::StoreWrite { entries, .. } => 8 + 2 + entries.iter().map(entry_len).sum::<usize>(),
        Message::StoreAck { .. } => 8 + 1,
        Message::StoreRead { .. } => 8 + 16,
        Message::StoreValue { entry, .. } => 8 + 1 + entry.as_ref().map_or(0, |e| entry_len(e)),
        Message::StoreSync { buckets } => 2 + 8 * buckets.len(),
        Message::StoreKeys { keys, .. } => 4 + 2 + keys.len() * (16 + VERSION_LEN) + 1,
        Message::IdDeliver {
            identity, payload, ..
        } => 8 + str_len(identity) + bytes_len(payload),
        Message::IdAck { .. } => 8 + 1,
        _ => 0,
    }
}

fn put_version(v: Version, out: &mut Vec<u8>) {
    out.extend_from_slice(&v.hlc.to_be_bytes());
    out.extend_from_slice(&v.node.to_be_bytes());
}

fn put_opt(v: Option<Version>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_version(v, out);
        }
    }
}

fn put_entry(e: &StoreEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.key.to_bytes());
    put_str(&e.name, out);
    put_version(e.version, out);
    out.extend_from_slice(&e.expires_ms.to_be_bytes());
    match &e.value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_bytes(v, out);
        }
    }
}

/// A routed [`StoreOp`] (after the routed type byte).
pub(super) fn put_op(op: &StoreOp, out: &mut Vec<u8>) {
    out.extend_from_slice(&op.id.to_be_bytes());
    out.extend_from_slice(&op.timeout_ms.to_be_bytes());
    put_str(&op.name, out);
    match &op.kind {
        StoreOpKind::Get => out.push(1),
        StoreOpKind::Put {
            value,
            ttl_ms,
            expect,
        } => {
            out.push(2);
            put_bytes(value, out);
            out.extend_from_slice(&ttl_ms.to_be_bytes());
            put_opt(*expect, out);
        }
        StoreOpKind::Delete { expect } => {
            out.push(3);
            put_opt(*expect, out);
        }
    }
}

/// A store message: its type byte and body.
///
/// # Panics
/// If a list is longer than [`MAX_LIST_LEN`] (a bug of the caller, as in `put_list`).
pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::StoreReply { op, result } => {
            out.push(ty::STORE_REPLY);
            out.extend_from_slice(&op.to_be_bytes());
            match &**result {
                StoreResult::Written(v) => {
                    out.push(1);
                    put_version(*v, out);
                }
                StoreResult::Found {
                    version,
                    value,
                    expires_ms,
                } => {
                    out.push(2);
                    put_version(*version, out);
                    out.extend_from_slice(&expires_ms.to_be_bytes());
                    put_bytes(value, out);
                }
                StoreResult::NotFound => out.push(3),
                StoreResult::Conflict(v) => {
                    out.push(4);
                    put_version(*v, out);
                }
                StoreResult::Failed(text) => {
                    out.push(5);
                    put_str(text, out);
                }
                StoreResult::TimedOut => out.push(6),
            }
        }
        Message::StoreWrite { nonce, entries } => {
            assert!(entries.len() <= MAX_LIST_LEN, "{} entries", entries.len());
            out.push(ty::STORE_WRITE);
            out.extend_from_slice(&nonce.to_be_bytes());
            put_count(entries.len(), out);
            for e in entries {
                put_entry(e, out);
            }
        }
        Message::StoreAck { nonce, stored } => {
            out.push(ty::STORE_ACK);
            out.extend_from_slice(&nonce.to_be_bytes());
            out.push(u8::from(*stored));
        }
        Message::StoreRead { nonce, key } => {
            out.push(ty::STORE_READ);
            out.extend_from_slice(&nonce.to_be_bytes());
            out.extend_from_slice(&key.to_bytes());
        }
        Message::StoreValue { nonce, entry } => {
            out.push(ty::STORE_VALUE);
            out.extend_from_slice(&nonce.to_be_bytes());
            match entry {
                None => out.push(0),
                Some(e) => {
                    out.push(1);
                    put_entry(e, out);
                }
            }
        }
        Message::StoreSync { buckets } => {
            assert!(buckets.len() <= MAX_LIST_LEN, "{} buckets", buckets.len());
            out.push(ty::STORE_SYNC);
            put_count(buckets.len(), out);
            for b in buckets {
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        Message::StoreKeys {
            buckets,
            keys,
            reply,
        } => {
            assert!(keys.len() <= MAX_LIST_LEN, "{} keys", keys.len());
            out.push(ty::STORE_KEYS);
            out.extend_from_slice(&buckets.to_be_bytes());
            put_count(keys.len(), out);
            for (k, v) in keys {
                out.extend_from_slice(&k.to_bytes());
                put_version(*v, out);
            }
            out.push(u8::from(*reply));
        }
        Message::IdDeliver {
            id,
            identity,
            payload,
        } => {
            out.push(ty::ID_DELIVER);
            out.extend_from_slice(&id.to_be_bytes());
            put_str(identity, out);
            put_bytes(payload, out);
        }
        Message::IdAck { id, delivered } => {
            out.push(ty::ID_ACK);
            out.extend_from_slice(&id.to_be_bytes());
            out.push(u8::from(*delivered));
        }
        _ => {}
    }
}

impl Reader<'_> {
    fn version(&mut self, what: &'static str) -> Result<Version, DecodeError> {
        Ok(Version {
            hlc: self.u64(what)?,
            node: self.u64(what)?,
        })
    }

    fn opt_version(&mut self, what: &'static str) -> Result<Option<Version>, DecodeError> {
        Ok(if self.bool(what)? {
            Some(self.version(what)?)
        } else {
            None
        })
    }

    /// A u16 count of items of at least `min` bytes each, checked against what is left.
    fn count(&mut self, min: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(what)?);
        if n > MAX_LIST_LEN || n * min > self.0.len() {
            return Err(DecodeError::Malformed(what));
        }
        Ok(n)
    }

    fn entry(&mut self) -> Result<StoreEntry, DecodeError> {
        Ok(StoreEntry {
            key: self.key("entry key")?,
            name: self.string("entry name")?,
            version: self.version("entry version")?,
            expires_ms: self.u64("entry expiry")?,
            value: if self.bool("entry flag")? {
                Some(self.bytes("entry value")?)
            } else {
                None
            },
        })
    }

    /// A routed [`StoreOp`] (after the routed type byte).
    pub(super) fn store_op(&mut self) -> Result<StoreOp, DecodeError> {
        let id = self.u64("store op id")?;
        let timeout_ms = self.u32("store op timeout")?;
        let name = self.string("store op name")?;
        let kind = match self.u8("store op kind")? {
            1 => StoreOpKind::Get,
            2 => StoreOpKind::Put {
                value: self.bytes("store put value")?,
                ttl_ms: self.u64("store put ttl")?,
                expect: self.opt_version("store put expect")?,
            },
            3 => StoreOpKind::Delete {
                expect: self.opt_version("store delete expect")?,
            },
            _ => return Err(DecodeError::Malformed("store op kind")),
        };
        Ok(StoreOp {
            id,
            timeout_ms,
            name,
            kind,
        })
    }

    /// A store message's body, of type `t` (one of the store types).
    pub(super) fn store_message(&mut self, t: u8) -> Result<Message, DecodeError> {
        Ok(match t {
            ty::STORE_REPLY => {
                let op = self.u64("store reply op")?;
                let result = match self.u8("store result")? {
                    1 => StoreResult::Written(self.version("store written")?),
                    2 => StoreResult::Found {
                        version: self.version("store found")?,
                        expires_ms: self.u64("store found expiry")?,
                        value: self.bytes("store found value")?,
                    },
                    3 => StoreResult::NotFound,
                    4 => StoreResult::Conflict(self.version("store conflict")?),
                    5 => StoreResult::Failed(self.string("store failure")?),
                    6 => StoreResult::TimedOut,
                    _ => return Err(DecodeError::Malformed("store result")),
                };
                Message::StoreReply {
                    op,
                    result: Box::new(result),
                }
            }
            ty::STORE_WRITE => {
                let nonce = self.u64("store write nonce")?;
                let n = self.count(MIN_ENTRY_LEN, "store write count")?;
                let entries = (0..n).map(|_| self.entry()).collect::<Result<_, _>>()?;
                Message::StoreWrite { nonce, entries }
            }
            ty::STORE_ACK => Message::StoreAck {
                nonce: self.u64("store ack nonce")?,
                stored: self.bool("store ack flag")?,
            },
            ty::STORE_READ => Message::StoreRead {
                nonce: self.u64("store read nonce")?,
                key: self.key("store read key")?,
            },
            ty::STORE_VALUE => Message::StoreValue {
                nonce: self.u64("store value nonce")?,
                entry: if self.bool("store value flag")? {
                    Some(Box::new(self.entry()?))
                } else {
                    None
                },
            },
            ty::STORE_SYNC => {
                let n = self.count(8, "store sync count")?;
                if n != STORE_BUCKETS {
                    return Err(DecodeError::Malformed("store sync count"));
                }
                let buckets = (0..n)
                    .map(|_| self.u64("store sync bucket"))
                    .collect::<Result<_, _>>()?;
                Message::StoreSync { buckets }
            }
            ty::STORE_KEYS => {
                let buckets = self.u32("store keys buckets")?;
                let n = self.count(16 + VERSION_LEN, "store keys count")?;
                let keys = (0..n)
                    .map(|_| {
                        Ok((
                            self.key("store keys key")?,
                            self.version("store keys version")?,
                        ))
                    })
                    .collect::<Result<_, DecodeError>>()?;
                Message::StoreKeys {
                    buckets,
                    keys,
                    reply: self.bool("store keys flag")?,
                }
            }
            ty::ID_DELIVER => Message::IdDeliver {
                id: self.u64("id deliver id")?,
                identity: self.string("id deliver identity")?,
                payload: self.bytes("id deliver payload")?,
            },
            ty::ID_ACK => Message::IdAck {
                id: self.u64("id ack id")?,
                delivered: self.bool("id ack flag")?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}
