//! The link's record layer: Noise transport messages (AES-256-GCM, the 64-bit nonce counting
//! up per direction, no associated data), each behind a 2-byte big-endian length.
//!
//! The keys come from the finished handshake's split (`secure::finish`); the
//! records are sealed and opened here with ring directly instead of through snow's transport
//! state, so that a record is encrypted where it is built and decrypted where it arrived:
//! snow's `write_message` copies the plaintext into its output before encrypting it (and its
//! caller had to zero that output first), and its `read_message` copies the ciphertext the
//! same way. The bytes on the wire are the same as snow's (a test seals records with the keys
//! `secure::finish` picks and compares them with what snow's transport state seals, for each
//! side, and opens snow's records), so nodes with either record layer link with each other.

use std::io;

use bytes::BytesMut;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Largest Noise message (handshake or record), tag included.
pub const MAX_RECORD: usize = 65_535;
/// Largest plaintext carried by one record.
pub const MAX_RECORD_PLAIN: usize = MAX_RECORD - TAG_LEN;
pub(crate) const TAG_LEN: usize = 16;
// A record's length goes in a u16 prefix.
const _: () = assert!(MAX_RECORD <= u16::MAX as usize);
/// Bytes of a record's length prefix.
const PREFIX: usize = 2;

/// The 96-bit AES-GCM nonce of Noise: 32 zero bits, then the counter big-endian.
fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

#[expect(
    clippy::expect_used,
    reason = "a 32-byte key is always a valid AES-256 key"
)]
fn aes_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

/// Takes the next nonce of a direction. Noise reserves 2^64 - 1: a link would have to carry
/// that many records first (at a million records a second, half a million years).
fn next_nonce(n: &mut u64) -> io::Result<u64> {
    if *n == u64::MAX {
        return Err(io::Error::other("link record nonces exhausted"));
    }
    *n += 1;
    Ok(*n - 1)
}

/// Seals outgoing link bytes into records (or passes them through on a plaintext link).
pub struct Sealer {
    key: Option<LessSafeKey>,
    nonce: u64,
}

impl Sealer {
    /// A sealer for the sending direction's key of a finished handshake.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Sealer {
            key: Some(aes_key(key)),
            nonce: 0,
        }
    }

    /// A plaintext link's sealer (bytes pass unchanged).
    pub fn plaintext() -> Self {
        Sealer {
            key: None,
            nonce: 0,
        }
    }

    /// True on a plaintext link.
    pub fn is_plaintext(&self) -> bool {
        self.key.is_none()
    }

    /// Appends `plain` to `out` as records (unchanged on a plaintext link).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut w = self.records(out);
        w.write(plain)?;
        w.finish()
    }

    /// A writer that builds records at the end of `out` as bytes are written to it, each
    /// encrypted in place once full and the last by [`RecordWriter::finish`].
    pub fn records<'a>(&'a mut self, out: &'a mut Vec<u8>) -> RecordWriter<'a> {
        RecordWriter {
            sealer: self,
            out,
            open: None,
        }
    }

    /// Encrypts the record whose length prefix is at `out[start..]` (its plaintext runs to the
    /// end of `out`), appends its tag and fills in its length.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a record is at most MAX_RECORD_PLAIN + TAG_LEN = MAX_RECORD = u16::MAX bytes"
    )]
    fn seal_at(&mut self, out: &mut Vec<u8>, start: usize) -> io::Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let n = next_nonce(&mut self.nonce)?;
        let tag = key
            .seal_in_place_separate_tag(nonce(n), Aad::empty(), &mut out[start + PREFIX..])
            .map_err(|_| io::Error::other("sealing a link record"))?;
        out.extend_from_slice(tag.as_ref());
        let len = out.len() - start - PREFIX;
        debug_assert!(len <= MAX_RECORD);
        out[start..start + PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }
}

/// Builds records at the end of a buffer (see [`Sealer::records`]). Bytes written after
/// [`RecordWriter::finish`] start a new record.
pub struct RecordWriter<'a> {
    sealer: &'a mut Sealer,
    out: &'a mut Vec<u8>,
    /// Where the record being filled starts (its length prefix), if one is.
    open: Option<usize>,
}

impl RecordWriter<'_> {
    /// Bytes in the buffer (records and the open record's plaintext so far).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True when the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Plaintext bytes the open record still takes (a whole record's when none is open;
    /// unbounded on a plaintext link).
    pub fn room(&self) -> usize {
        if self.sealer.is_plaintext() {
            return usize::MAX;
        }
        match self.open {
            Some(start) => MAX_RECORD_PLAIN.saturating_sub(self.out.len() - start - PREFIX),
            None => MAX_RECORD_PLAIN,
        }
    }

    /// The buffer, for an encoder to append plaintext to directly (a record is opened first
    /// if none is); then [`RecordWriter::settle`] cuts what went past the record's end.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        self.open_record();
        self.out
    }

    /// Cuts the open record where it is full, if appends through [`RecordWriter::tail`]
    /// reached its end: it is sealed, and the bytes past it go on into the next record.
    pub fn settle(&mut self) -> io::Result<()> {
        let Some(start) = self.open else {
            return Ok(());
        };
        let end = start + PREFIX + MAX_RECORD_PLAIN;
        if self.out.len() < end {
            return Ok(());
        }
        // The bytes past the end move into the next record: at most a frame's worth (every
        // frame but a tunnel chunk is encoded whole through `tail`; a large one, a frame
        // of several records, is copied once more here, as every frame was before records
        // were built in place).
        let excess = self.out.split_off(end);
        self.seal_open()?;
        self.write(&excess)
    }

    /// Appends `bytes`, sealing each record as it fills.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.sealer.is_plaintext() {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        // Appends through `tail` may have filled the open record: cut it first.
        self.settle()?;
        while !bytes.is_empty() {
            self.open_record();
            let room = self.room();
            let n = room.min(bytes.len());
            self.out.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if n == room {
                self.seal_open()?;
            }
        }
        Ok(())
    }

    /// Seals the open record, if any: everything written so far is then whole records.
    pub fn finish(&mut self) -> io::Result<()> {
        self.settle()?;
        self.seal_open()
    }

    fn open_record(&mut self) {
        if self.open.is_none() && !self.sealer.is_plaintext() {
            self.open = Some(self.out.len());
            self.out.extend_from_slice(&[0; PREFIX]);
        }
    }

    fn seal_open(&mut self) -> io::Result<()> {
        match self.open.take() {
            Some(start) => self.sealer.seal_at(self.out, start),
            None => Ok(()),
        }
    }
}

/// Why an incoming record was refused: the link closes.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Authentication failed.
    #[error("record failed authentication (tampered, replayed, reordered or corrupt)")]
    Auth,
    /// A record's length is impossible.
    #[error("record length {0} out of range")]
    Length(usize),
}

/// Opens incoming records (or passes bytes through on a plaintext link).
pub struct Opener {
    key: Option<LessSafeKey>,
    nonce: u64,
}

impl Opener {
    /// An opener for the receiving direction's key of a finished handshake.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Opener {
            key: Some(aes_key(key)),
            nonce: 0,
        }
    }

    /// A plaintext link's opener.
    pub fn plaintext() -> Self {
        Opener {
            key: None,
            nonce: 0,
        }
    }

    /// True on a plaintext link.
    pub fn is_plaintext(&self) -> bool {
        self.key.is_none()
    }

    /// Moves every whole record of `raw` into `plain`, decrypted (everything, unchanged, on a
    /// plaintext link). A partial record stays in `raw`. A record is decrypted where it lies
    /// in `raw`, then its plaintext appended to `plain` (the one copy: frames span records).
    /// On an error `plain` holds what the records before the refused one gave, and `raw` is
    /// garbled (the link closes).
    pub fn open(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> Result<(), OpenError> {
        let Some(key) = &self.key else {
            plain.extend_from_slice(raw);
            raw.clear();
            return Ok(());
        };
        loop {
            if raw.len() < PREFIX {
                return Ok(());
            }
            let len = u16::from_be_bytes([raw[0], raw[1]]) as usize;
            if len < TAG_LEN {
                return Err(OpenError::Length(len));
            }
            if raw.len() < PREFIX + len {
                raw.reserve(PREFIX + len - raw.len());
                return Ok(());
            }
            // The nonce is spent only by a record that opens: a refused one closes the link.
            if self.nonce == u64::MAX {
                return Err(OpenError::Auth);
            }
            let opened = key
                .open_in_place(
                    nonce(self.nonce),
                    Aad::empty(),
                    &mut raw[PREFIX..PREFIX + len],
                )
                .map_err(|_| OpenError::Auth)?;
            plain.extend_from_slice(opened);
            self.nonce += 1;
            let _ = raw.split_to(PREFIX + len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{
        Entropy, Established, Identity, NetworkKey, encode_hello, finish, handshake_state,
    };
    use snow::{HandshakeState, StatelessTransportState};

    /// The two sides of a handshake run in memory, each side's states built twice from the
    /// same seeds (so both runs agree): one finished by `secure::finish` (the node's record
    /// layer) and one turned into snow's own transport state.
    fn session() -> [(Established, StatelessTransportState); 2] {
        let key = NetworkKey::from_bytes([3; 32]);
        let side = |initiator: bool| {
            let seed = if initiator { 1 } else { 2 };
            handshake_state(
                initiator,
                &Identity::from_seed(seed),
                &key,
                Entropy::Seeded(seed),
                1,
            )
        };
        let run = || {
            let (mut ini, mut res) = (side(true), side(false));
            let (mut m, mut p) = (vec![0u8; 1024], vec![0u8; 1024]);
            let hello = encode_hello("10.0.0.1:1".parse().unwrap());
            for turn in 0..3 {
                let (from, to) = if turn % 2 == 0 {
                    (&mut ini, &mut res)
                } else {
                    (&mut res, &mut ini)
                };
                let payload: &[u8] = if turn == 0 { &[] } else { &hello };
                let n = from.write_message(payload, &mut m).unwrap();
                to.read_message(&m[..n], &mut p).unwrap();
            }
            (ini, res)
        };
        let (ini, res) = run();
        let (snow_ini, snow_res) = run();
        let finished =
            |hs: HandshakeState| finish(hs, "10.0.0.1:1".parse().unwrap(), None).unwrap();
        [
            (
                finished(ini),
                snow_ini.into_stateless_transport_mode().unwrap(),
            ),
            (
                finished(res),
                snow_res.into_stateless_transport_mode().unwrap(),
            ),
        ]
    }

    /// snow's records of `plain` from nonce 0: what nodes with snow's record layer send.
    fn snow_records(t: &StatelessTransportState, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, chunk) in plain.chunks(MAX_RECORD_PLAIN).enumerate() {
            let mut rec = vec![0u8; chunk.len() + TAG_LEN];
            let len = t.write_message(n as u64, chunk, &mut rec).unwrap();
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&rec[..len]);
        }
        out
    }

    /// Opens snow-style records (length-prefixed, from nonce 0) with snow's transport state.
    fn snow_open(t: &StatelessTransportState, wire: &[u8]) -> Vec<u8> {
        let (mut at, mut got) = (0, Vec::new());
        for n in 0u64.. {
            if at == wire.len() {
                break;
            }
            let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
            let mut p = vec![0u8; len];
            let k = t
                .read_message(n, &wire[at + 2..at + 2 + len], &mut p)
                .unwrap();
            got.extend_from_slice(&p[..k]);
            at += 2 + len;
        }
        got
    }

    #[test]
    fn records_are_snow_s_both_ways() {
        let [(mut ini, ini_snow), (mut res, res_snow)] = session();
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        for (me, my_snow, peer_snow) in [
            (&mut ini, &ini_snow, &res_snow),
            (&mut res, &res_snow, &ini_snow),
        ] {
            // Sealed here with the keys `finish` picked: byte for byte what snow's transport
            // of the same side seals, and the peer's snow transport opens them.
            let mut wire = Vec::new();
            me.sealer.seal(&data, &mut wire).unwrap();
            assert_eq!(wire, snow_records(my_snow, &data));
            assert_eq!(snow_open(peer_snow, &wire), data);
            // Sealed by the peer's snow transport: opened here.
            let mut raw = BytesMut::from(&snow_records(peer_snow, &data)[..]);
            let mut plain = BytesMut::new();
            me.opener.open(&mut raw, &mut plain).unwrap();
            assert_eq!(&plain[..], &data[..]);
            assert!(raw.is_empty());
        }
        // A record sealed under this side's own sending key (not the peer's) is refused, and
        // leaves the opened bytes as they were.
        let mut raw = BytesMut::from(&snow_records(&ini_snow, b"x")[..]);
        let mut plain = BytesMut::from(&b"kept"[..]);
        assert!(matches!(
            ini.opener.open(&mut raw, &mut plain),
            Err(OpenError::Auth)
        ));
        assert_eq!(&plain[..], b"kept");
    }

    #[test]
    fn the_writer_cuts_records_where_they_fill() {
        let [(a, _), (b, _)] = session();
        let (mut sealer, b_opener) = (a.sealer, b.opener);
        let mut out = Vec::new();
        let mut w = sealer.records(&mut out);
        assert_eq!(w.room(), MAX_RECORD_PLAIN);
        // Direct appends within the room, then writes across two record boundaries.
        w.tail().extend_from_slice(b"head");
        assert_eq!(w.room(), MAX_RECORD_PLAIN - 4);
        let big = vec![9u8; 2 * MAX_RECORD_PLAIN];
        w.write(&big).unwrap();
        assert_eq!(
            w.room(),
            MAX_RECORD_PLAIN - 4,
            "the third record holds the last 4 bytes"
        );
        w.finish().unwrap();
        assert_eq!(out.len(), 4 + big.len() + 3 * (2 + TAG_LEN));
        // A second batch continues the nonces.
        sealer.seal(b"tail", &mut out).unwrap();
        let mut raw = BytesMut::from(&out[..]);
        let mut plain = BytesMut::new();
        let mut opener = b_opener;
        opener.open(&mut raw, &mut plain).unwrap();
        assert_eq!(&plain[..4], b"head");
        assert_eq!(&plain[4..4 + big.len()], &big[..]);
        assert_eq!(&plain[4 + big.len()..], b"tail");
        // Appends through `tail` past a record's end are cut there by `settle`.
        let mut out = Vec::new();
        let mut w = sealer.records(&mut out);
        w.write(b"ab").unwrap();
        let long: Vec<u8> = (0..MAX_RECORD_PLAIN as u32 + 10).map(|i| i as u8).collect();
        w.tail().extend_from_slice(&long);
        w.settle().unwrap();
        assert_eq!(w.room(), MAX_RECORD_PLAIN - 12);
        w.tail().extend_from_slice(b"cd");
        w.finish().unwrap();
        assert_eq!(out.len(), 2 + long.len() + 2 + 2 * (2 + TAG_LEN));
        // Then a write after appends that filled the record: cut first, then continued.
        let mut w2 = sealer.records(&mut out);
        w2.tail().extend_from_slice(&[7u8; MAX_RECORD_PLAIN]);
        w2.write(b"ef").unwrap();
        w2.finish().unwrap();
        let mut raw = BytesMut::from(&out[..]);
        let mut plain = BytesMut::new();
        opener.open(&mut raw, &mut plain).unwrap();
        assert!(raw.is_empty());
        assert_eq!(&plain[..2], b"ab");
        assert_eq!(&plain[2..2 + long.len()], &long[..]);
        let rest = &plain[2 + long.len()..];
        assert_eq!(&rest[..2], b"cd");
        assert_eq!(&rest[2..2 + MAX_RECORD_PLAIN], &[7u8; MAX_RECORD_PLAIN][..]);
        assert_eq!(&rest[2 + MAX_RECORD_PLAIN..], b"ef");
        // A plaintext link passes bytes unchanged.
        let mut plain_sealer = Sealer::plaintext();
        let mut out = Vec::new();
        let mut w = plain_sealer.records(&mut out);
        assert_eq!(w.room(), usize::MAX);
        w.write(&big).unwrap();
        w.finish().unwrap();
        assert_eq!(out, big);
    }
}
