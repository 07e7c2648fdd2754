//! Fuzzes the delivery-time MIME parse: every part's offsets lie within the message.
#![no_main]
use agora_store::{MessageSummary, Part};
use libfuzzer_sys::fuzz_target;

fn check(p: &Part, len: usize) {
    assert!(p.header_start as usize <= len && p.body_start as usize <= len && p.end as usize <= len);
    assert!(p.header_start <= p.end);
    for c in &p.children {
        check(c, len);
    }
}

fuzz_target!(|data: &[u8]| {
    let s = MessageSummary::parse(data);
    check(&s.root, data.len());
});
