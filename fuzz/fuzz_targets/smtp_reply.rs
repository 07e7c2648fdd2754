//! Fuzzes the reply parser of the SMTP client: a remote server's bytes give a reply
//! line or an error, never a panic in the delivery lane.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((code, _, _)) = agora_smtp::codec::parse_reply_line(data) {
        assert!((200..600).contains(&code));
    }
});
