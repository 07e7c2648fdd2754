//! Fuzzes the IMAP command parser (the largest decoder): any bytes give a command or a
//! parse error, never a panic; literal framing is checked on the same input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = agora_imap::command::literal_suffix(data);
    let _ = agora_imap::command::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = agora_imap::command::parse_section(text);
    }
});
