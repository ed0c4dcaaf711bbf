//! The relay protocol v1 decoders, both directions: a stream of bytes decodes packet after
//! packet until it is incomplete (`Ok(None)`) or invalid (an error), never panicking; neither
//! outcome consumes anything; each decoded packet re-encodes to bytes of its stated length
//! that decode to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petal_protocol::relay::{ClientPacket, Limits, NodePacket};

fuzz_target!(|data: &[u8]| {
    let Some((&which, stream)) = data.split_first() else {
        return;
    };
    // Small limits, so that the fuzzer reaches them.
    let limits = Limits {
        max_message: 4096,
        max_string: 256,
        max_chunk: 1024,
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        if which & 1 == 0 {
            match ClientPacket::decode(&mut buf, &limits) {
                Ok(Some(p)) => {
                    assert!(buf.len() < before, "a packet consumes bytes");
                    let mut out = Vec::new();
                    p.encode(&mut out);
                    assert_eq!(out.len(), p.encoded_len());
                    let mut again = BytesMut::from(&out[..]);
                    let q = ClientPacket::decode(&mut again, &limits).expect("own bytes");
                    assert_eq!(q.as_ref(), Some(&p));
                    assert!(again.is_empty());
                }
                Ok(None) | Err(_) => {
                    assert_eq!(buf.len(), before, "nothing consumed");
                    break;
                }
            }
        } else {
            match NodePacket::decode(&mut buf, &limits) {
                Ok(Some(p)) => {
                    assert!(buf.len() < before, "a packet consumes bytes");
                    let mut out = Vec::new();
                    p.encode(&mut out);
                    assert_eq!(out.len(), p.encoded_len());
                    let mut again = BytesMut::from(&out[..]);
                    let q = NodePacket::decode(&mut again, &limits).expect("own bytes");
                    assert_eq!(q.as_ref(), Some(&p));
                    assert!(again.is_empty());
                }
                Ok(None) | Err(_) => {
                    assert_eq!(buf.len(), before, "nothing consumed");
                    break;
                }
            }
        }
    }
});
