//! Fuzzes the DATA decoder: never more body than the limit, and the end-of-data line
//! is only ever a lone "." with CRLF.
#![no_main]
use agora_smtp::codec::DataDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = DataDecoder::new(4096);
    for line in data.split_inclusive(|&b| b == b'\n') {
        if d.push_line(line) {
            assert_eq!(line, b".\r\n");
            break;
        }
    }
    assert!(d.body.len() <= 4096);
    let _ = d.fault();
    let mut c = DataDecoder::new(4096);
    c.push_chunk(data);
    c.check_chunked();
});
