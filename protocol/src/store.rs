//! The replicated key-value store's messages: an application's operation routed to the key's
//! home, the home's answer, and what replicas exchange (writes, reads, anti-entropy digests).
//!
//! A key's *home* is the node numerically closest to the key (the hash of its name); its
//! *replicas* are the `k` nodes closest to it, home included, all within the home's leaf set.

use bytes::Bytes;

use crate::id::Key;

/// The version of a stored value: a hybrid logical clock reading of the node that wrote it
/// (milliseconds in the high 48 bits, a counter in the low 16), then the low 64 bits of that
/// node's id to break ties. Versions of one key are totally ordered; the greater one wins.
/// [`Version::NONE`] (zero) stands for "no value": a conditional write that expects it creates
/// the key only when it does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock reading: `millis << 16 | counter`.
    pub hlc: u64,
    /// Tie-break: the low 64 bits of the writing node's id.
    pub node: u64,
}

impl Version {
    /// No value (absent, deleted or expired).
    pub const NONE: Version = Version { hlc: 0, node: 0 };

    /// The wall-clock milliseconds of the clock reading.
    pub const fn millis(self) -> u64 {
        self.hlc >> 16
    }
}

impl std::fmt::Display for Version {
    /// `hlc.node` in hexadecimal (what [`Version::from_str`](std::str::FromStr) reads back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{:x}", self.hlc, self.node)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    /// Reads `hlc.node` in hexadecimal, as [`Version`] displays.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a version (hex hlc.node, as printed)");
        let (hlc, node) = s.split_once('.').ok_or_else(bad)?;
        Ok(Version {
            hlc: u64::from_str_radix(hlc, 16).map_err(|_| bad())?,
            node: u64::from_str_radix(node, 16).map_err(|_| bad())?,
        })
    }
}

/// An application's operation on one key, routed to the key's home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOp {
    /// The origin node's id for the operation (the home's answer names it).
    pub id: u64,
    /// The origin's timeout, in milliseconds; the home gives up on replicas before it.
    pub timeout_ms: u32,
    /// The key's name (the route's key is its hash: the home checks that they agree).
    pub name: String,
    /// What is asked.
    pub kind: StoreOpKind,
}

/// What a [`StoreOp`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOpKind {
    /// The key's latest value.
    Get,
    /// Writes `value`; with `expect`, only if the key's current version is `expect`
    /// ([`Version::NONE`]: only if the key has no value).
    Put {
        /// The value.
        value: Bytes,
        /// Time to live in milliseconds (0: for ever).
        ttl_ms: u64,
        /// Compare-and-set: the version the key must have.
        expect: Option<Version>,
    },
    /// Deletes the key; with `expect`, only if its current version is `expect`.
    Delete {
        /// Compare-and-delete: the version the key must have.
        expect: Option<Version>,
    },
}

/// The home's answer to a [`StoreOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreResult {
    /// The write (put or delete) was stored by a write quorum, under this version.
    Written(Version),
    /// The key's value.
    Found {
        /// Its version.
        version: Version,
        /// Its value.
        value: Bytes,
        /// When it expires, in wall-clock milliseconds (0: never).
        expires_ms: u64,
    },
    /// The key has no value (never written, deleted or expired).
    NotFound,
    /// A conditional write found another version (the current one; [`Version::NONE`]: none).
    Conflict(Version),
    /// The operation failed; the text says why (quorum not reached, limits).
    Failed(String),
    /// No answer came within the operation's timeout (the origin node decides this one; a
    /// write may still have been stored).
    TimedOut,
}

/// A key's stored state, as replicas exchange it: a value or a deletion (tombstone), with its
/// version and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    /// The key (the hash of `name`).
    pub key: Key,
    /// The key's name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// When it expires, in wall-clock milliseconds (0: never; a tombstone always expires).
    pub expires_ms: u64,
    /// The value; `None` for a deletion.
    pub value: Option<Bytes>,
}

impl StoreEntry {
    /// Bytes the entry holds besides its inline size (name and value).
    pub fn heap_bytes(&self) -> usize {
        self.name.len() + self.value.as_ref().map_or(0, Bytes::len)
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn a_version_reads_back_what_it_prints() {
        for v in [
            Version::NONE,
            Version {
                hlc: 0x1234_5678_9abc,
                node: u64::MAX,
            },
        ] {
            assert_eq!(v.to_string().parse::<Version>(), Ok(v));
        }
        assert!("12".parse::<Version>().is_err());
        assert!("x.1".parse::<Version>().is_err());
    }
}

/// The outcome of an identity operation (register, send, who).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdResult {
    /// The registration is in the registry: messages to the identity reach the connection.
    Registered,
    /// The message reached this many nodes holding the identity (each delivered it to every
    /// local connection that holds it).
    Sent {
        /// Nodes that delivered it.
        nodes: u32,
    },
    /// The nodes that hold the identity (a presence query's answer).
    Holders(Vec<crate::NodeInfo>),
    /// No live node holds the identity.
    Unknown,
    /// The operation failed; the text says why.
    Failed(String),
    /// No outcome within the operation's timeout.
    TimedOut,
}

/// The topic on which a key's changes are published: subscribing to it watches the key (a
/// plain relay v1 client can too). Its tree's root is the key's home, which publishes each
/// acknowledged write and delete of the key there as a [`Change`].
pub fn watch_topic(name: &str) -> String {
    format!("petal-kv/{name}")
}

/// A change of a watched key, as published on its [`watch_topic`]: a text header line, then
/// the value's bytes as stored:
/// `put <version> <expires_ms>\n<value>` or `del <version>\n` (versions as [`Version`]
/// displays them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The write's version.
    pub version: Version,
    /// The value written; `None` for a deletion.
    pub value: Option<Bytes>,
    /// When the value expires, in wall-clock milliseconds (0: never).
    pub expires_ms: u64,
}

impl Change {
    /// The event payload.
    pub fn encode(&self) -> Bytes {
        match &self.value {
            Some(v) => {
                let mut out = format!("put {} {}\n", self.version, self.expires_ms).into_bytes();
                out.extend_from_slice(v);
                Bytes::from(out)
            }
            None => Bytes::from(format!("del {}\n", self.version)),
        }
    }

    /// Reads an event payload; `None` when it is not a change.
    pub fn decode(payload: &Bytes) -> Option<Change> {
        let end = payload.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&payload[..end]).ok()?;
        let mut words = head.split(' ');
        let (kind, version) = (words.next()?, words.next()?.parse().ok()?);
        match kind {
            "put" => {
                let expires_ms = words.next()?.parse().ok()?;
                Some(Change {
                    version,
                    value: Some(payload.slice(end + 1..)),
                    expires_ms,
                })
            }
            "del" if end + 1 == payload.len() => Some(Change {
                version,
                value: None,
                expires_ms: 0,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod change_tests {
    use super::{Change, Version};
    use bytes::Bytes;

    #[test]
    fn a_change_reads_back_what_it_encodes() {
        let v = Version { hlc: 77, node: 5 };
        for c in [
            Change {
                version: v,
                value: Some(Bytes::from_static(b"a\nb")),
                expires_ms: 12,
            },
            Change {
                version: v,
                value: Some(Bytes::new()),
                expires_ms: 0,
            },
            Change {
                version: v,
                value: None,
                expires_ms: 0,
            },
        ] {
            assert_eq!(Change::decode(&c.encode()), Some(c));
        }
        assert_eq!(
            &Change {
                version: v,
                value: None,
                expires_ms: 0
            }
            .encode()[..],
            b"del 4d.5\n"
        );
        for bad in [&b"put 1.1\nx"[..], b"del 1.1\nx", b"hello", b"put x.1 0\n"] {
            assert_eq!(Change::decode(&Bytes::copy_from_slice(bad)), None);
        }
    }
}
