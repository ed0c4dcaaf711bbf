//! The LAN discovery beacon: a fixed-length UDP datagram, authenticated with the network key.
//!
//! Nodes on a LAN announce themselves by multicasting beacons. Every member of a network holds
//! the same 32-byte pre-shared *network key*; a beacon is sealed with AES-256-GCM under a key
//! derived from it, so only members can read a beacon and nobody without the key can forge one.
//!
//! ## Format (version 1, [`BEACON_LEN`] = 60 bytes)
//! ```text
//!  offset  len  field
//!       0    4  magic "PTLB"                     \
//!       4    1  version = 1                       } clear header (17 bytes), the AEAD's
//!       5   12  nonce (random per beacon)        /  associated data
//!      17   27  AES-256-GCM ciphertext of the body:
//!                  0  16  node id (big-endian, NodeId::to_bytes)
//!                 16   2  peer port (u16, big-endian)
//!                 18   1  flags: bit 0 = ready; bits 1..7 must be 0
//!                 19   8  boot nonce (u64, big-endian; random per process start)
//!      44   16  AES-256-GCM tag (over the header and the ciphertext)
//! ```
//! The AEAD key is `HKDF-SHA256(salt = "petal beacon v1", ikm = network key, info = "aead key")`,
//! so the network key itself is never used as a cipher key here and a beacon key cannot be
//! confused with a key derived for another purpose.
//!
//! ## What a stranger sees
//! Someone on the LAN without the network key sees only that a Petal beacon (magic and version)
//! of fixed length was sent from some address and UDP source port, and a random nonce. The node
//! id, the peer port, the ready flag and the boot nonce are encrypted: a stranger cannot tell
//! which node sent a beacon, whether two beacons come from the same process, or which port it
//! listens on (beyond what the IP and UDP headers of its own traffic reveal). Beacons sealed
//! for another network fail authentication, as does any modification of any byte.
//!
//! ## What it does not protect against
//! A beacon can be *replayed* verbatim by anyone who captured it (it carries no timestamp):
//! a receiver must treat a beacon only as a hint where to dial, and rely on the authenticated
//! link handshake for the peer's identity. A member of the network (who holds the key) can
//! forge beacons for any node id.
//!
//! Nonces must not repeat under one key: pass 12 fresh random bytes to every [`BeaconKey::seal`]
//! (random 96-bit nonces are safe for far more beacons than a network ever sends).

use std::fmt;

use petal_protocol::NodeId;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

/// The length of every beacon datagram in bytes.
pub const BEACON_LEN: usize = 60;
/// The first four bytes of every beacon.
pub const BEACON_MAGIC: [u8; 4] = *b"PTLB";
/// The format version this module writes and reads.
pub const BEACON_VERSION: u8 = 1;

/// The HKDF salt of the beacon key.
const HKDF_SALT: &[u8] = b"petal beacon v1";
/// The HKDF info of the beacon key.
const HKDF_INFO: &[u8] = b"aead key";

/// The clear header: magic, version, nonce.
const HEADER_LEN: usize = 4 + 1 + NONCE_LEN;
/// The plaintext body: id, port, flags, boot nonce.
const BODY_LEN: usize = 16 + 2 + 1 + 8;
/// The AES-256-GCM tag.
const TAG_LEN: usize = 16;
const _: () = assert!(HEADER_LEN + BODY_LEN + TAG_LEN == BEACON_LEN);

/// Flag bit 0: the node is ready to accept links.
const FLAG_READY: u8 = 0x01;

/// What a beacon tells the members of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beacon {
    /// The announcing node.
    pub id: NodeId,
    /// The port of its peer listener (on the beacon's source address).
    pub port: u16,
    /// Whether it accepts links now.
    pub ready: bool,
    /// Random per process start: a different value for the same id means the node restarted.
    pub boot: u64,
}

/// Why a datagram is not a valid beacon.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BeaconError {
    /// The datagram does not have [`BEACON_LEN`] bytes.
    #[error("not a petal beacon: {0} bytes instead of {BEACON_LEN}")]
    Length(usize),
    /// The datagram does not start with [`BEACON_MAGIC`].
    #[error("not a petal beacon (wrong magic)")]
    Magic,
    /// A beacon of a format version this node does not speak.
    #[error("petal beacon of unsupported version {0} (this node speaks version {BEACON_VERSION})")]
    Version(u8),
    /// Authentication failed: sealed with another network key, or modified on the way.
    #[error("beacon from another network or forged (authentication failed)")]
    Unauthentic,
    /// An authentic beacon with flag bits this version does not define.
    #[error("beacon with unknown flag bits {0:#04x}")]
    Flags(u8),
}

/// The beacon cipher of one network, derived from its network key.
pub struct BeaconKey {
    key: LessSafeKey,
}

impl fmt::Debug for BeaconKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeaconKey(..)")
    }
}

impl BeaconKey {
    /// Derives the beacon key from the network's pre-shared key (HKDF-SHA256).
    #[expect(
        clippy::expect_used,
        reason = "HKDF-SHA256 fails only for an output longer than 255 hashes; ours is one AES-256 key"
    )]
    pub fn new(network_key: &[u8; 32]) -> BeaconKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(network_key);
        let okm = prk
            .expand(&[HKDF_INFO], &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        BeaconKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        }
    }

    /// Seals `beacon` into a datagram. `nonce` must be fresh random bytes for every beacon.
    #[expect(
        clippy::expect_used,
        reason = "AES-GCM sealing fails only for inputs beyond 2^36 bytes; a beacon body is 27"
    )]
    pub fn seal(&self, beacon: &Beacon, nonce: [u8; 12]) -> [u8; BEACON_LEN] {
        let mut out = [0u8; BEACON_LEN];
        let (header, rest) = out.split_at_mut(HEADER_LEN);
        header[..4].copy_from_slice(&BEACON_MAGIC);
        header[4] = BEACON_VERSION;
        header[5..].copy_from_slice(&nonce);
        let (body, tag_out) = rest.split_at_mut(BODY_LEN);
        body[..16].copy_from_slice(&beacon.id.to_bytes());
        body[16..18].copy_from_slice(&beacon.port.to_be_bytes());
        body[18] = if beacon.ready { FLAG_READY } else { 0 };
        body[19..].copy_from_slice(&beacon.boot.to_be_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&*header),
                body,
            )
            .expect("AES-GCM seals 27 bytes");
        tag_out.copy_from_slice(tag.as_ref());
        out
    }

    /// Opens a received datagram. Checks the length, magic and version, then authenticates
    /// the whole datagram before looking at the body. Never panics.
    pub fn open(&self, datagram: &[u8]) -> Result<Beacon, BeaconError> {
        let datagram: &[u8; BEACON_LEN] = datagram
            .try_into()
            .map_err(|_| BeaconError::Length(datagram.len()))?;
        if datagram[..4] != BEACON_MAGIC {
            return Err(BeaconError::Magic);
        }
        if datagram[4] != BEACON_VERSION {
            return Err(BeaconError::Version(datagram[4]));
        }
        let (header, sealed) = datagram.split_at(HEADER_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[5..]);
        let mut buf = [0u8; BODY_LEN + TAG_LEN];
        buf.copy_from_slice(sealed);
        let body = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut buf,
            )
            .map_err(|_| BeaconError::Unauthentic)?;
        let flags = body[18];
        if flags & !FLAG_READY != 0 {
            return Err(BeaconError::Flags(flags));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[..16]);
        let mut boot = [0u8; 8];
        boot.copy_from_slice(&body[19..27]);
        Ok(Beacon {
            id: NodeId::from_bytes(id),
            port: u16::from_be_bytes([body[16], body[17]]),
            ready: flags & FLAG_READY != 0,
            boot: u64::from_be_bytes(boot),
        })
    }
}
