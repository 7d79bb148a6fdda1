//! The HT (FAST) initiator message parser and MAC check on raw bytes, for every hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sasl2_fast::fast::HtMechanism;
use sasl2_fast::fast::ht::{MAX_AUTHCID_BYTES, parse_initiator};

const TOKEN: &[u8] = b"secret-token:fast-fuzz";
const CB: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    for mech in HtMechanism::all() {
        match parse_initiator(mech.hash, data) {
            Ok(msg) => {
                assert!(!msg.authcid.is_empty() && msg.authcid.len() <= MAX_AUTHCID_BYTES);
                assert!(!msg.authcid.contains('\0'));
                assert_eq!(msg.mac.len(), mech.hash.output_len());
                assert_eq!(msg.authcid.len() + 1 + msg.mac.len(), data.len());
                let ok = mech.verify_initiator(TOKEN, &CB, msg.mac);
                assert_eq!(ok, msg.mac == mech.initiator_mac(TOKEN, &CB).as_slice());
                // What a client builds must parse back to the same parts.
                let built = mech.initiator_message(msg.authcid, TOKEN, &CB);
                let again = parse_initiator(mech.hash, &built).expect("own message parses");
                assert_eq!(again.authcid, msg.authcid);
            }
            Err(_) => {
                // The MAC check on arbitrary bytes (any length) must not panic either.
                let _ = mech.verify_initiator(TOKEN, &CB, data);
                let _ = mech.verify_initiator(data, data, data);
            }
        }
    }
});
