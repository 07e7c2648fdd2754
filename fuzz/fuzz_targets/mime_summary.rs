//! Fuzzes the MIME and text layer as delivery and search use it: the delivery-time
//! parse (every part's offsets lie within the message), the body text kept for search
//! and every part's text, RFC 2047 words and address lists of every header line,
//! RFC 2231 parameters, undeclared 8-bit detection, and charset conversion under a
//! label the input names.
#![no_main]
use agora_store::{address, text};
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
    let body = text::body_text(data, &s.root);
    if let Some(kept) = text::search_text(data, &s.root) {
        assert_eq!(kept, text::casemap(&body));
    }
    for part in text::text_parts(&s.root) {
        let _ = text::part_text(data, part);
        let _ = text::param(&part.params, "charset");
    }
    let _ = text::param(&s.root.params, "boundary");
    let _ = text::undeclared(data);
    let lossy = String::from_utf8_lossy(data);
    for line in lossy.lines().take(64) {
        let _ = text::decode_words(line);
        for shown in address::display(line) {
            let _ = shown.label();
        }
    }
    // The first line names a charset for the rest.
    if let Some((label, rest)) = data.split_first().map(|_| data.split_at(data.iter().position(|&b| b == b'\n').unwrap_or(0))) {
        let _ = text::decode(&String::from_utf8_lossy(label), rest);
    }
    let _ = text::contains_casemapped(&lossy, "ß");
});
