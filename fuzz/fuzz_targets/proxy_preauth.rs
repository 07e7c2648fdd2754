//! Fuzzes what a front-end reads from a client before login: IMAP command words
//! (atoms, quoted strings, literal announcements), SASL PLAIN responses (what decodes
//! encodes back the same) and the webmail cookie in a request head; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agora_proxy::fuzz_preauth(data);
});
