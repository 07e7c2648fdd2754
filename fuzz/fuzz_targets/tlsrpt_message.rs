//! Fuzzes the reading of TLS reports (RFC 8460) out of received mail: the header look,
//! MIME, gzip and JSON. Never a panic; a report read back is summarised and, written
//! out and read again, comes back the same.
#![no_main]
use agora_mail::tlsrpt::{looks_like_report, message, parse_message, summary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_report(data);
    if let Some(report) = parse_message(data) {
        let _ = summary(&report, &["example.org".into()], 0);
        let again = message(&report, (0, 86_399), "a@example.org", "b@example.net", "example.net", "mx.example.org");
        assert_eq!(parse_message(&again).as_ref(), Some(&report));
    }
});
