//! BINARY (RFC 3516): a part's content with its Content-Transfer-Encoding undone, and
//! messages appended as literal8 rewritten so that NUL-bearing parts travel as base64
//! (BODY[] never carries a NUL; BINARY[] gives the original bytes back).

use agora_store::{MessageSummary, Part};

#[cfg(test)]
use agora_store::text::base64_decode as decode_base64;
/// The decoded content of a part, or None if its encoding is unknown (UNKNOWN-CTE).
pub use agora_store::text::transfer_decode as decode;

fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 4);
    for (n, chunk) in data.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(T[(v >> 18) as usize & 63]);
        out.push(T[(v >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 { T[(v >> 6) as usize & 63] } else { b'=' });
        out.push(if chunk.len() > 2 { T[v as usize & 63] } else { b'=' });
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn leaves<'a>(p: &'a Part, out: &mut Vec<&'a Part>) {
    if p.children.is_empty() {
        out.push(p);
    }
    for c in &p.children {
        leaves(c, out);
    }
}

/// Rewrites every leaf part whose content holds a NUL byte as base64, so the stored
/// message is valid in a plain literal. Other bytes are left exactly as they were.
pub fn encode_binary_parts(msg: &[u8]) -> Vec<u8> {
    if !msg.contains(&0) {
        return msg.to_vec();
    }
    let summary = MessageSummary::parse(msg);
    let mut found = Vec::new();
    leaves(&summary.root, &mut found);
    let mut parts: Vec<(usize, usize, usize)> = found
        .into_iter()
        .filter(|p| msg.get(p.body_start as usize..p.end as usize).is_some_and(|b| b.contains(&0)))
        .map(|p| (p.header_start as usize, p.body_start as usize, p.end as usize))
        .collect();
    // From the last part back, so earlier offsets stay valid.
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    let mut out = msg.to_vec();
    for (hs, bs, end) in parts {
        let body = encode_base64_lines(&out[bs..end]);
        // The header without its Content-Transfer-Encoding, then ours, then the blank line.
        let header = &out[hs..bs];
        let blank = if header.ends_with(b"\r\n\r\n") || header == b"\r\n" {
            2
        } else if header.ends_with(b"\n\n") || header == b"\n" {
            1
        } else {
            0
        };
        let mut new_header = Vec::with_capacity(header.len() + 40);
        let mut skipping = false;
        for line in header[..header.len() - blank].split_inclusive(|&b| b == b'\n') {
            let cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
            if !cont {
                skipping = line.len() > 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
            }
            if !skipping {
                new_header.extend_from_slice(line);
            }
        }
        new_header.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        out.splice(hs..end, new_header.into_iter().chain(body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(decode_base64(&encode_base64_lines(&[0, 1, 2, 255, 254])), [0, 1, 2, 255, 254]);
    }

    #[test]
    fn nul_parts_become_base64() {
        let msg = b"From: a@b\r\nContent-Transfer-Encoding: binary\r\n\r\n\0\xad\xe4\nmore\r\n";
        let out = encode_binary_parts(msg);
        assert!(!out.contains(&0));
        let s = MessageSummary::parse(&out);
        assert_eq!(s.root.encoding.as_deref(), Some("base64"));
        let body = &out[s.root.body_start as usize..s.root.end as usize];
        assert_eq!(decode_base64(body), b"\0\xad\xe4\nmore\r\n");
        assert!(out.starts_with(b"From: a@b\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        // A multipart keeps its other parts byte for byte.
        let mp = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nplain\r\n--x\r\nContent-Type: application/octet-stream\r\n\r\n\0\0\r\n--x--\r\n";
        let out = encode_binary_parts(mp);
        assert!(!out.contains(&0));
        assert!(out.windows(14).any(|w| w == b"\r\n\r\nplain\r\n--x"), "{:?}", String::from_utf8_lossy(&out));
        assert!(out.windows(8).any(|w| w == b"AAA=\r\n\r\n"), "{:?}", String::from_utf8_lossy(&out));
    }
}
