//! Fuzzes the SMTP command parser: any bytes give a command or an error reply.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match agora_smtp::codec::parse_command(data) {
        Ok(_) => {}
        Err(e) => assert!(e.reply().ends_with("\r\n")),
    }
});
