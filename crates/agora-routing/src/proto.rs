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

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

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

/// Who speaks a proof: the server's and the client's differ, so one cannot be
/// replayed as the other.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Server,
    Client,
}

/// HMAC-SHA256 of the organisation's secret over the session's channel binding, both
/// nonces and both names.
pub fn proof(
    secret: &[u8],
    side: Side,
    binding: &[u8; 32],
    client: (&str, &[u8; 16]),
    server: (&str, &[u8; 16]),
) -> [u8; 32] {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(match side {
        Side::Server => b"agora-routing server\0",
        Side::Client => b"agora-routing client\0",
    });
    m.update(binding);
    for (name, nonce) in [client, server] {
        m.update(&(name.len() as u32).to_be_bytes());
        m.update(name.as_bytes());
        m.update(nonce);
    }
    m.finalize().into_bytes().into()
}

/// Compares two proofs in constant time.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    let _ = getrandom::fill(&mut n);
    n
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

    #[test]
    fn proofs_bind_everything() {
        let (cn, sn) = ([1; 16], [2; 16]);
        let p = proof(b"s", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn));
        assert!(same(&p, &proof(b"s", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn))));
        for other in [
            proof(b"t", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Server, &[9; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[8; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[9; 32], ("a2", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[9; 32], ("a1", &sn), ("b1", &cn)),
        ] {
            assert!(!same(&p, &other));
        }
    }
}
