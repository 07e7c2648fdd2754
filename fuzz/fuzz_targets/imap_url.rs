//! Fuzzes IMAP URL parsing (URLAUTH's GENURLAUTH/URLFETCH and submission's BURL) and the
//! 7-bit conversion of a message: no panic, and a conversion is all ASCII and decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(u) = agora_store::urlauth::parse(text)
    {
        assert!(u.uid > 0 && !u.mailbox.is_empty());
        assert!(text.starts_with(&u.rump) || u.rump.is_empty());
    }
    if let Some(out) = agora_store::section::seven_bit(data) {
        assert!(out.is_ascii());
    }
});
