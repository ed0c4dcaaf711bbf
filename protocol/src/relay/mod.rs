//! The relay protocol v1 (`"v1.0-draft2"`): the byte-exact codec between an application's client
//! library and its local node, the protocol of the original Iris node (so the Go, Java and
//! Erlang Iris client libraries can talk to a Petal node). No IO: bytes in, packets out.
//!
//! # Wire format
//! There is no length prefix: a packet is one opcode byte followed by its fields, so a reader
//! parses every field to find where the next packet starts. Field encodings:
//! - varint: unsigned LEB128, at most [`MAX_VARINT_LEN`] bytes and at most `u64::MAX`;
//! - bool: exactly `0x00` or `0x01`;
//! - bin: varint length, then that many bytes (length 0 is legal);
//! - str: as bin, UTF-8 content.
//!
//! ```text
//! op    name          client -> node                       node -> client
//! 0x00  INIT          magic:str version:str cluster:str    magic:str version:str
//! 0x01  DENY          (never sent)                         magic:str reason:str
//! 0x02  CLOSE         (nothing)                            reason:str ("" = graceful ack)
//! 0x03  BROADCAST     cluster:str message:bin              message:bin
//! 0x04  REQUEST       id cluster:str request:bin timeout   id request:bin timeout
//! 0x05  REPLY         id success:bool (reply:bin|fault:str) id timed_out:bool
//!                                                          [success:bool (reply:bin|fault:str)]
//! 0x06  SUBSCRIBE     topic:str                            (never sent)
//! 0x07  UNSUBSCRIBE   topic:str                            (never sent)
//! 0x08  PUBLISH       topic:str event:bin                  topic:str event:bin
//! 0x09  TUN_INIT      id cluster:str timeout               build_id chunk_limit
//! 0x0a  TUN_CONFIRM   build_id tun_id                      id timed_out:bool [chunk_limit]
//! 0x0b  TUN_ALLOW     id space                             id space
//! 0x0c  TUN_TRANSFER  id size payload:bin                  id size payload:bin
//! 0x0d  TUN_CLOSE     id                                   id reason:str ("" = graceful)
//! ```
//! Ids, sizes, credits and timeouts (milliseconds) are varints.
//!
//! Petal's extension (the store's operations, opcodes 0x40-0x42) is negotiated with its own
//! version string; see [`ext`].
//!
//! # Decoding
//! [`ClientPacket::decode`] and [`NodePacket::decode`] take one packet from the front of a
//! [`BytesMut`]. They parse only the headers (opcodes, varints, bools, length prefixes) until the
//! whole packet is present, so retrying on a buffer that holds a large incomplete packet is
//! cheap. A length prefix above the [`Limits`] is rejected as soon as the prefix itself is
//! present. Binary fields of a decoded packet are zero-copy slices of the buffer. Decoding never
//! panics, and when it returns `Ok(None)` or an error it has consumed nothing.
//!
//! Encoders write whatever they are given: keeping strings, messages and chunks within the peer's
//! limits is the caller's business.

use bytes::{Bytes, BytesMut};

mod client;
pub mod ext;
mod node;

pub use client::ClientPacket;
pub use node::{NodePacket, ReplyOutcome};

/// The magic string a client sends in its INIT.
pub const CLIENT_MAGIC: &str = "iris-client-magic";
/// The magic string a node sends in its INIT (accept) and DENY.
pub const RELAY_MAGIC: &str = "iris-relay-magic";
/// The only protocol version this codec speaks.
pub const VERSION: &str = "v1.0-draft2";
/// The TCP port a node listens on (on loopback) unless configured otherwise.
pub const DEFAULT_PORT: u16 = 55555;
/// Largest payload of one TUN_TRANSFER chunk.
pub const CHUNK_LIMIT: u64 = 65536;
/// Credit (bytes) the node grants a client on each tunnel.
pub const NODE_TUNNEL_CREDIT: u64 = 4 << 20;
/// Most bytes a varint may take.
pub const MAX_VARINT_LEN: usize = 10;

/// Decoding limits. A declared length above them is a violation, detected from the length prefix
/// alone, before waiting for the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest binary field (broadcast message, request, reply, event), in bytes.
    pub max_message: usize,
    /// Largest string field (magic, version, cluster, topic, fault, reason), in bytes.
    pub max_string: usize,
    /// Largest TUN_TRANSFER payload, in bytes.
    pub max_chunk: usize,
}

impl Default for Limits {
    /// 64 MiB messages, 65535-byte strings, [`CHUNK_LIMIT`]-byte chunks.
    fn default() -> Self {
        Limits {
            max_message: 64 << 20,
            max_string: u16::MAX as usize,
            // Saturates only where a usize is 16 bits, i.e. where no larger chunk could be held.
            max_chunk: usize::try_from(CHUNK_LIMIT).unwrap_or(usize::MAX),
        }
    }
}

/// Opcodes: the first byte of every packet.
pub mod op {
    /// Handshake (both directions).
    pub const INIT: u8 = 0x00;
    /// Handshake refused (node to client only).
    pub const DENY: u8 = 0x01;
    /// Connection close (client request, node ack or node-side close).
    pub const CLOSE: u8 = 0x02;
    /// Message to every member of a cluster.
    pub const BROADCAST: u8 = 0x03;
    /// Request to one member of a cluster.
    pub const REQUEST: u8 = 0x04;
    /// Answer to a request.
    pub const REPLY: u8 = 0x05;
    /// Subscribe to a topic (client to node only).
    pub const SUBSCRIBE: u8 = 0x06;
    /// Unsubscribe from a topic (client to node only).
    pub const UNSUBSCRIBE: u8 = 0x07;
    /// Event on a topic.
    pub const PUBLISH: u8 = 0x08;
    /// Tunnel open (client: outbound request; node: inbound offer).
    pub const TUN_INIT: u8 = 0x09;
    /// Tunnel confirmation (client: inbound accept; node: outbound result).
    pub const TUN_CONFIRM: u8 = 0x0a;
    /// Tunnel credit grant, cumulative, in bytes.
    pub const TUN_ALLOW: u8 = 0x0b;
    /// One chunk of a tunnel message.
    pub const TUN_TRANSFER: u8 = 0x0c;
    /// Tunnel close.
    pub const TUN_CLOSE: u8 = 0x0d;
}

/// A protocol violation found while decoding; the connection should be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The opcode byte is not one this direction of the protocol uses.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A varint runs past 10 bytes or past `u64::MAX`.
    #[error("varint longer than 10 bytes or above u64::MAX")]
    VarintOverflow,
    /// A bool byte is neither 0x00 nor 0x01.
    #[error("bool byte 0x{0:02x} is neither 0x00 nor 0x01")]
    BadBool(u8),
    /// A string field is not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    BadUtf8,
    /// A length prefix declares more bytes than the limit for its field.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The field (`"message"`, `"topic"`, `"payload"`, ...).
        what: &'static str,
        /// The declared length.
        len: u64,
        /// The limit it exceeds.
        max: usize,
    },
    /// A KV_RESULT's result tag is unknown (the extension, see [`ext`]).
    #[error("unknown store result tag 0x{0:02x}")]
    BadResult(u8),
}

/// Appends `v` as an unsigned LEB128 varint.
#[expect(
    clippy::cast_possible_truncation,
    reason = "each byte takes the low 7 bits of what is left (the high bit is the continuation flag), the last one a value below 0x80"
)]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`put_varint`] writes for `v` (1 to [`MAX_VARINT_LEN`]).
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes a varint from the front of `buf`: `Ok(Some((value, bytes_used)))`, or `Ok(None)` when
/// `buf` ends inside it. Non-minimal encodings are accepted, as Go's `binary.Uvarint` does.
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, RelayError> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(RelayError::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Ok(None)
}

/// Where a packet's fields go: a byte vector ([`ClientPacket::encode`]) or a byte count
/// ([`ClientPacket::encoded_len`]), so both walk the fields with the same code.
trait Sink {
    fn byte(&mut self, b: u8);
    fn varint(&mut self, v: u64);
    fn bin(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
    fn varint(&mut self, v: u64) {
        put_varint(self, v);
    }
    fn bin(&mut self, bytes: &[u8]) {
        put_varint(self, bytes.len() as u64);
        self.extend_from_slice(bytes);
    }
}

/// Writes a packet's bytes but for the contents of its binaries (their lengths are written):
/// for a packet whose last field is its only binary, everything before that binary's bytes.
struct Head<'a>(&'a mut Vec<u8>);

impl Sink for Head<'_> {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
    fn varint(&mut self, v: u64) {
        put_varint(self.0, v);
    }
    fn bin(&mut self, bytes: &[u8]) {
        put_varint(self.0, bytes.len() as u64);
    }
}

/// Counts bytes instead of writing them.
struct Count(usize);

/// The public `encode` and `encoded_len` of a packet type, over its [`Fields`] (which stays
/// private: a packet's fields are written one way only).
macro_rules! packet_encoding {
    ($packet:ty) => {
        impl $packet {
            /// Appends exactly the packet's wire bytes to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) {
                Fields::encode(self, out);
            }

            /// The exact number of bytes [`encode`](Self::encode) appends.
            pub fn encoded_len(&self) -> usize {
                Fields::encoded_len(self)
            }
        }
    };
}
use packet_encoding;

/// A packet that walks its fields into a [`Sink`]: its wire bytes and their count come from the
/// same code.
trait Fields {
    fn write<S: Sink>(&self, s: &mut S);

    /// The exact number of bytes [`Fields::encode`] appends.
    fn encoded_len(&self) -> usize {
        let mut count = Count(0);
        self.write(&mut count);
        count.0
    }

    /// Appends exactly the packet's wire bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        self.write(out);
    }
}

impl Sink for Count {
    fn byte(&mut self, _: u8) {
        self.0 += 1;
    }
    fn varint(&mut self, v: u64) {
        self.0 += varint_len(v);
    }
    fn bin(&mut self, bytes: &[u8]) {
        self.0 += varint_len(bytes.len() as u64) + bytes.len();
    }
}

// ---- Decoding machinery -------------------------------------------------------------------
//
// `decode_with` runs the packet's parser twice. Pass 1 runs over the buffered bytes in scan mode:
// it reads opcodes, varints, bools and length prefixes and checks limits, but neither copies nor
// validates field contents (strings and binaries come out empty), so retrying on an incomplete
// packet costs only its headers. Once pass 1 has found a whole packet, the packet is split off the
// buffer and frozen, and pass 2 parses that frame for real: strings are validated and copied,
// binaries are zero-copy slices of the frame. A frame that is a small part of the buffer is not
// split off: pass 2 parses it in place and copies each binary out on its own (see
// `decode_with`).

/// Why a parse stopped.
enum Stop {
    Incomplete,
    Bad(RelayError),
}

impl From<RelayError> for Stop {
    fn from(e: RelayError) -> Self {
        Stop::Bad(e)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    /// What binaries are made of: nothing in scan mode.
    mode: Mode<'a>,
}

/// How a [`Reader`] builds binaries.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Pass 1: contents are neither read nor copied.
    Scan,
    /// Pass 2 over a frame split off the buffer (`data` views it): binaries are slices of it.
    Slice(&'a Bytes),
    /// Pass 2 over the buffer in place: each binary is copied out.
    Copy,
}

impl<'a> Reader<'a> {
    /// Pass 1: field contents are not read.
    fn scanning(&self) -> bool {
        matches!(self.mode, Mode::Scan)
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        let b = *self.data.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        match decode_varint(self.data.get(self.pos..).unwrap_or_default())? {
            Some((v, used)) => {
                self.pos += used;
                Ok(v)
            }
            None => Err(Stop::Incomplete),
        }
    }

    fn flag(&mut self) -> Result<bool, Stop> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(RelayError::BadBool(b).into()),
        }
    }

    /// A length-prefixed field: checks the prefix against `max`, then skips the content.
    /// Returns where the content lies; `start <= end <= data.len()`.
    fn span(&mut self, what: &'static str, max: usize) -> Result<(usize, usize), Stop> {
        let len = self.varint()?;
        let Some(n) = usize::try_from(len).ok().filter(|&n| n <= max) else {
            return Err(RelayError::TooLong { what, len, max }.into());
        };
        let (start, end) = (self.pos, self.pos.saturating_add(n));
        if end > self.data.len() {
            return Err(Stop::Incomplete);
        }
        self.pos = end;
        Ok((start, end))
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, Stop> {
        let (start, end) = self.span(what, max)?;
        Ok(match self.mode {
            Mode::Scan => Bytes::new(),
            // `data` is the frame, so the span is within it.
            Mode::Slice(f) => f.slice(start..end),
            Mode::Copy => Bytes::copy_from_slice(self.data.get(start..end).unwrap_or_default()),
        })
    }

    fn bin(&mut self, what: &'static str) -> Result<Bytes, Stop> {
        self.bytes(what, self.limits.max_message)
    }

    fn chunk(&mut self) -> Result<Bytes, Stop> {
        self.bytes("payload", self.limits.max_chunk)
    }

    fn string(&mut self, what: &'static str) -> Result<String, Stop> {
        Ok(self.text(what)?.unwrap_or_default().to_owned())
    }

    /// A string shared without copying when cloned (a topic the node hands to every
    /// subscriber's session).
    fn shared_string(&mut self, what: &'static str) -> Result<std::sync::Arc<str>, Stop> {
        static EMPTY: std::sync::LazyLock<std::sync::Arc<str>> =
            std::sync::LazyLock::new(|| std::sync::Arc::from(""));
        Ok(match self.text(what)? {
            Some(s) => std::sync::Arc::from(s),
            None => EMPTY.clone(),
        })
    }

    /// A string's content, checked; `None` in scan mode.
    fn text(&mut self, what: &'static str) -> Result<Option<&'a str>, Stop> {
        let (start, end) = self.span(what, self.limits.max_string)?;
        if self.scanning() {
            return Ok(None);
        }
        let content = self.data.get(start..end).unwrap_or_default();
        match std::str::from_utf8(content) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(RelayError::BadUtf8.into()),
        }
    }
}

fn decode_with<P>(
    buf: &mut BytesMut,
    limits: &Limits,
    parse: fn(&mut Reader<'_>) -> Result<P, Stop>,
) -> Result<Option<P>, RelayError> {
    let mut scan = Reader {
        data: &buf[..],
        pos: 0,
        limits,
        mode: Mode::Scan,
    };
    let total = match parse(&mut scan) {
        Ok(_) => scan.pos,
        Err(Stop::Incomplete) => return Ok(None),
        Err(Stop::Bad(e)) => return Err(e),
    };
    // A frame that is a small part of the buffer is parsed in place and its binaries copied
    // out one by one: a zero-copy slice would keep the whole read buffer alive for as long as
    // the holder keeps the payload (a parked request, an event kept for replays), while budgets
    // count the payload's bytes. (Copying the frame whole and slicing that copy cost a second
    // allocation a frame, the slices' shared header, besides the copy.) A larger frame is
    // split off and frozen, and its binaries are slices of it.
    if total.saturating_mul(2) < buf.capacity() {
        let mut build = Reader {
            data: &buf[..total],
            pos: 0,
            limits,
            mode: Mode::Copy,
        };
        // Pass 2 rereads what pass 1 accepted, so it stops only on the content checks pass 1
        // skips (bad UTF-8, a malformed identity result), and nothing has been consumed yet.
        let packet = match parse(&mut build) {
            Ok(packet) => packet,
            Err(Stop::Incomplete) => return Ok(None),
            Err(Stop::Bad(e)) => return Err(e),
        };
        bytes::Buf::advance(buf, total);
        return Ok(Some(packet));
    }
    let frame = buf.split_to(total).freeze();
    let mut build = Reader {
        data: &frame[..],
        pos: 0,
        limits,
        mode: Mode::Slice(&frame),
    };
    let stop = match parse(&mut build) {
        Ok(packet) => return Ok(Some(packet)),
        Err(stop) => stop,
    };
    // A content check failed (bad UTF-8, a malformed identity result): put the bytes back, so
    // that an error consumes nothing. Error path only, hence the copy.
    let rest = buf.split();
    buf.extend_from_slice(&frame);
    buf.extend_from_slice(&rest);
    match stop {
        Stop::Incomplete => Ok(None),
        Stop::Bad(e) => Err(e),
    }
}
