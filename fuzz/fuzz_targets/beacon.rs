//! The discovery beacon decoder: any datagram opens to a beacon or an error, never a panic;
//! an opened beacon sealed again opens to the same beacon.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petal_node::beacon::BeaconKey;

fuzz_target!(|data: &[u8]| {
    let key = BeaconKey::new(&[7; 32]);
    if let Ok(b) = key.open(data) {
        let again = key.open(&key.seal(&b, [1; 12])).expect("own beacon");
        assert_eq!(again, b);
    }
});
