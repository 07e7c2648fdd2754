//! Fuzzes dot-stuffing both ways: any message stuffed and read back line by line gives
//! the message with repaired line ends, and no line of a stuffed block ends it early.
#![no_main]
use agora_net::dot::{Unstuffed, stuff, unstuff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut block = Vec::new();
    let dots = stuff(data, None, &mut block);
    let mut lines = block.split_inclusive(|&b| b == b'\n');
    let mut back = Vec::new();
    loop {
        let line = lines.next().expect("a stuffed block ends with its terminator");
        match unstuff(line) {
            Unstuffed::End => break,
            Unstuffed::Line { content, bare_newline } => {
                assert!(!bare_newline, "stuff() writes CRLF only");
                back.extend_from_slice(content);
                back.extend_from_slice(b"\r\n");
            }
        }
    }
    assert!(lines.next().is_none(), "the terminator is the last line");
    // The size POP3 announces: the block less its added dots and terminator.
    assert_eq!(block.len() - dots - 3, back.len());
    // What comes back is the message with CR dropped and every line ending in CRLF.
    let mut want: Vec<u8> = Vec::new();
    for l in data.split_inclusive(|&b| b == b'\n') {
        want.extend(l.iter().filter(|&&b| b != b'\r' && b != b'\n'));
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(back, want);
    // Any received line: never a panic.
    let _ = unstuff(data);
});
