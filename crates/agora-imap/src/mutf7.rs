//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3). The store keeps names in UTF-8;
//! sessions without UTF8=ACCEPT (RFC 6855) see and send them in modified UTF-7.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn flush(units: &mut Vec<u16>, out: &mut String) {
    if units.is_empty() {
        return;
    }
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let n = chunk.len() + 1;
        for k in 0..n {
            out.push(B64[(v >> (18 - 6 * k)) as usize & 63] as char);
        }
    }
    out.push('-');
    units.clear();
}

/// UTF-8 to modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut units: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut units, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut units, &mut out);
    out
}

/// Modified UTF-7 to UTF-8; None if the name is not valid modified UTF-7 (raw 8-bit
/// bytes, bad base64, encoded printable ASCII, broken UTF-16).
pub fn decode(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..=0x7e).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = i + 1 + b[i + 1..].iter().position(|&x| x == b'-')?;
        if end == i + 1 {
            out.push('&');
            i = end + 1;
            continue;
        }
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut bytes = Vec::new();
        for &x in &b[i + 1..end] {
            let v = B64.iter().position(|&y| y == x)? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        // Leftover bits must be zero padding; the bytes must be whole UTF-16 units.
        if acc != 0 || bytes.len() % 2 != 0 {
            return None;
        }
        let units: Vec<u16> = bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
        let s = String::from_utf16(&units).ok()?;
        if s.chars().any(|ch| (' '..='~').contains(&ch)) {
            return None;
        }
        out.push_str(&s);
        i = end + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(encode("p\u{e4}\u{e4}"), "p&AOQA5A-");
        assert_eq!(decode("p&AOQA5A-").as_deref(), Some("p\u{e4}\u{e4}"));
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").as_deref(), Some("Tom & Jerry"));
        // RFC 3501's example: ~peter/mail/台北/日本語
        assert_eq!(encode("~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        for s in ["INBOX", "a/b", "\u{1f600} smile", "日本語&x", ""] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s), "{s}");
        }
        assert!(decode("&AGE-").is_none(), "encoded ASCII");
        assert!(decode("&AOQ").is_none(), "unterminated");
        assert!(decode("p\u{e4}").is_none(), "raw 8-bit");
        assert!(decode("&2D0-").is_none(), "lone surrogate");
        assert_eq!(decode("&2D3eAA-").as_deref(), Some("\u{1f600}"));
    }
}
