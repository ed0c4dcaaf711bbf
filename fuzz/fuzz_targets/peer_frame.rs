//! The peer frame decoder (`petal_protocol::codec`): any bytes give a message or an error,
//! never a panic; a decoded message encodes to a frame of its stated length that decodes to
//! the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petal_protocol::codec;

/// Small enough that the fuzzer reaches the frame-length limit.
const MAX_FRAME: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok((msg, used)) = codec::decode(data, MAX_FRAME) else {
        return;
    };
    assert!(
        used > 0 && used <= data.len(),
        "consumed {used} of {}",
        data.len()
    );
    let frame = codec::to_vec(&msg);
    assert_eq!(frame.len(), codec::encoded_len(&msg));
    let back = codec::decode_exact(&frame, frame.len().max(MAX_FRAME)).expect("own frame");
    assert_eq!(back, msg);
});
