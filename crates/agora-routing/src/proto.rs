//! The routing protocol's words (ours: Exchange's never was documented), pure. After
//! STARTTLS, each side proves it holds the organisation's secret with an HMAC over both
//! nonces, both node names and the TLS session's channel binding, so a proof is good
//! for that one session only; then the two compare digests and exchange tables.
//!
//! ```text
//! S: 220 NODE agora-routing 1          C: STARTTLS        S: 220 go ahead
//! C: HELLO NODE NONCE                  S: 250 NODE NONCE PROOF
//! C: PROVE PROOF                       S: 250 welcome
//! C: DIGEST HEX MAJOR MINOR            S: 250 HEX MAJOR MINOR
//! C: TABLE LEN <LEN octets>            S: 250 HEX MAJOR MINOR   (after merging it)
//! C: GET                               S: 250 LEN <LEN octets>
//! C: QUIT                              S: 221 bye
//! ```

/// The longest command line taken.
pub const MAX_LINE: usize = 512;

/// One command from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartTls,
    Hello { node: String, nonce: [u8; 16] },
    Prove([u8; 32]),
    Digest { digest: String, major: u64, minor: u64 },
    Table(usize),
    Get,
    Quit,
    Noop,
}

pub use agora_mail::routing::{Side, constant_time_eq, hex, nonce, proof, unhex};

/// Parses one command line (without its line end); Err with the reply to give.
pub fn parse(line: &[u8]) -> Result<Command, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "500 not text")?;
    let w: Vec<&str> = line.split(' ').collect();
    let verb = w[0].to_ascii_uppercase();
    let n = w.len();
    Ok(match (verb.as_str(), n) {
        ("STARTTLS", 1) => Command::StartTls,
        ("HELLO", 3) => {
            if !agora_mail::routing::valid_name(w[1]) {
                return Err("501 bad node name");
            }
            Command::Hello { node: w[1].to_string(), nonce: unhex(w[2]).ok_or("501 bad nonce")? }
        }
        ("PROVE", 2) => Command::Prove(unhex(w[1]).ok_or("501 bad proof")?),
        ("DIGEST", 4) => {
            if unhex::<32>(w[1]).is_none() {
                return Err("501 bad digest");
            }
            let num = |s: &str| s.parse::<u64>().map_err(|_| "501 bad version");
            Command::Digest { digest: w[1].to_string(), major: num(w[2])?, minor: num(w[3])? }
        }
        ("TABLE", 2) => {
            let len = w[1].parse::<usize>().map_err(|_| "501 bad length")?;
            if len > agora_mail::routing::MAX_TABLE {
                return Err("552 table too large");
            }
            Command::Table(len)
        }
        ("GET", 1) => Command::Get,
        ("QUIT", 1) => Command::Quit,
        ("NOOP", 1) => Command::Noop,
        ("STARTTLS" | "HELLO" | "PROVE" | "DIGEST" | "TABLE" | "GET" | "QUIT" | "NOOP", _) => {
            return Err("501 wrong number of arguments");
        }
        _ => return Err("500 unknown command"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_refuse() {
        assert_eq!(parse(b"starttls"), Ok(Command::StartTls));
        let h = parse(format!("HELLO a1 {}", hex(&[7; 16])).as_bytes());
        assert_eq!(h, Ok(Command::Hello { node: "a1".into(), nonce: [7; 16] }));
        assert_eq!(parse(b"HELLO a1"), Err("501 wrong number of arguments"));
        assert_eq!(parse(b"HELLO a/1 00"), Err("501 bad node name"));
        assert_eq!(parse(b"TABLE 99999999"), Err("552 table too large"));
        assert_eq!(parse(b"DIGEST zz 1 2"), Err("501 bad digest"));
        assert_eq!(parse(b"\xff"), Err("500 not text"));
        assert_eq!(parse(b"EHLO x"), Err("500 unknown command"));
    }
}
