//! Fuzzes the POP3 codec: commands parse or answer an error in POP3's words, and any
//! stored message is written as a well-formed dot-stuffed multi-line body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = agora_pop3::codec::parse(data) {
        assert!(e.reply().starts_with("-ERR"));
    }
    let mut out = Vec::new();
    let lines = data.first().map(|&b| u32::from(b % 8));
    agora_pop3::codec::write_multiline(data, lines, &mut out);
    assert!(out.ends_with(b"\r\n.\r\n"));
    assert!(!out[..out.len() - 3].windows(5).any(|w| w == b"\r\n.\r\n"), "dot-stuffed");
});
