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
    // Every line ends in CRLF, and only the last one is the lone "." that ends the body.
    let all: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(all.last(), Some(&&b".\r\n"[..]));
    for line in &all[..all.len() - 1] {
        assert!(line.ends_with(b"\r\n") && !line[..line.len() - 2].contains(&b'\r'), "{line:?}");
        assert_ne!(*line, b".\r\n", "a line ends the body early");
    }
});
