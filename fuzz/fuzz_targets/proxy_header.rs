//! Fuzzes the PROXY protocol decoder: never reads past its input.
#![no_main]
use agora_net::proxy::{Decoded, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Done { consumed, .. }) = decode(data) {
        assert!(consumed <= data.len());
    }
});
