//! Fuzzes the ManageSieve codec: any bytes decode to a command, a need for more input
//! or an error answered with NO, never a panic; a command decodes the same from its own
//! octets and no earlier; a literal asked for stays within the limits; and every string
//! a response writes reads back as itself.
#![no_main]
use agora_managesieve::codec::{self, Command, Decoded, Limits, MAX_STRING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_line: 512, max_script: 2048 };
    match codec::decode(data, &limits) {
        Decoded::Done(cmd, used) => {
            assert!(used > 0 && used <= data.len());
            assert_eq!(codec::decode(&data[..used], &limits), Decoded::Done(cmd, used));
            let step = (used / 16).max(1);
            for cut in (0..used).step_by(step) {
                assert!(
                    matches!(codec::decode(&data[..cut], &limits), Decoded::Incomplete { .. }),
                    "a prefix of {cut} octets decided"
                );
            }
        }
        Decoded::Incomplete { literal: Some(n) } => assert!(n > 0 && n <= limits.max_script.max(MAX_STRING)),
        Decoded::Incomplete { literal: None } => {}
        Decoded::Error(e) => assert!(e.reply().starts_with(b"NO")),
    }
    if let Decoded::Done(_, used) = codec::decode_response(data, &limits) {
        assert!(used <= data.len());
    }
    let _ = codec::literal_suffix(data);
    if let Ok(text) = std::str::from_utf8(data)
        && text.len() as u64 <= MAX_STRING
    {
        let line = format!("GETSCRIPT {}\r\n", codec::string(text));
        assert_eq!(
            codec::decode(line.as_bytes(), &Limits::default()),
            Decoded::Done(Command::GetScript(text.to_string()), line.len())
        );
    }
});
