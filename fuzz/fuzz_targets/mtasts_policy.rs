//! Fuzzes the MTA-STS policy parser and TXT record reader (text fetched from servers
//! we do not control).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = agora_mail::mtasts::txt_id(&text);
    if let Ok(p) = agora_mail::mtasts::Policy::parse(&text, "id", 0) {
        let _ = p.allows("mx.example.org");
        let _ = p.fresh(i64::MAX);
    }
});
