//! Body sections of a stored message (RFC 3501 §6.4.5 numbering), cut by the part
//! offsets kept at delivery: IMAP FETCH and IMAP URLs (URLAUTH, BURL) share them.

use crate::Part;

/// What of a part a section names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Within {
    /// The part's body (the whole message for the empty path).
    Body,
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// The part addressed by a part path: in a multipart, `n` is its n-th child; a message
/// that is not multipart has one part, `1`, its body; the parts of a message/rfc822
/// part are those of the message it encapsulates.
pub fn find_part<'a>(root: &'a Part, path: &[u32]) -> Option<&'a Part> {
    let mut p = root;
    // True while `p` is a message (the root, or one encapsulated in message/rfc822).
    let mut is_message = true;
    for &n in path {
        if !is_message && p.media_type == "message" {
            p = p.children.first()?;
            is_message = true;
        }
        if p.media_type == "multipart" {
            p = p.children.get((n as usize).checked_sub(1)?)?;
        } else if is_message && n == 1 {
            // The single body part of a non-multipart message: the same part.
        } else {
            return None;
        }
        is_message = false;
    }
    Some(p)
}

/// A header block with only (or without) the named fields, ending in its empty line.
pub fn filter_headers(block: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut include = false;
    for line in block.split_inclusive(|&b| b == b'\n') {
        let is_cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !is_cont {
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            include = names.contains(&name) == keep;
        }
        if include {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of a section; empty when the path names no part.
pub fn section_bytes(msg: &[u8], root: &Part, path: &[u32], within: &Within) -> Vec<u8> {
    let clamp =
        |s: usize, e: usize| msg.get(s.min(msg.len())..e.min(msg.len()).max(s.min(msg.len()))).unwrap_or(&[]).to_vec();
    // The part whose header HEADER/TEXT address: the message itself, or an encapsulated one.
    let target = if path.is_empty() { Some(root) } else { find_part(root, path) };
    let Some(part) = target else { return Vec::new() };
    match within {
        Within::Body if path.is_empty() => msg.to_vec(),
        Within::Body => clamp(part.body_start as usize, part.end as usize),
        Within::Mime => clamp(part.header_start as usize, part.body_start as usize),
        text => {
            // HEADER/TEXT of a message/rfc822 part refer to the encapsulated message.
            let m = if !path.is_empty() && part.media_type == "message" {
                part.children.first().unwrap_or(part)
            } else {
                part
            };
            let (hs, bs) = (m.header_start as usize, m.body_start as usize);
            match text {
                Within::Header => clamp(hs, bs),
                Within::Text => clamp(bs, m.end as usize),
                Within::HeaderFields(names) => filter_headers(&clamp(hs, bs), names, true),
                Within::HeaderFieldsNot(names) => filter_headers(&clamp(hs, bs), names, false),
                Within::Body | Within::Mime => Vec::new(),
            }
        }
    }
}

/// A part's content with its transfer encoding undone (RFC 3516 BINARY); a multipart's
/// or an attached message's content with every part inside decoded the same way and
/// labelled `binary` (as Dovecot does); None for an unknown encoding.
pub fn binary_bytes(msg: &[u8], root: &Part, path: &[u32]) -> Option<Vec<u8>> {
    if path.is_empty() {
        return Some(msg.to_vec());
    }
    let p = find_part(root, path)?;
    let mut out = Vec::new();
    match p.media_type.as_str() {
        "multipart" => binary_children(msg, p, &mut out)?,
        "message" if !p.children.is_empty() => binary_entity(msg, &p.children[0], &mut out)?,
        _ => {
            let raw = section_bytes(msg, root, path, &Within::Body);
            return crate::text::transfer_decode(p.encoding.as_deref(), &raw);
        }
    }
    Some(out)
}

fn slice(msg: &[u8], a: u32, b: u32) -> &[u8] {
    let (a, b) = ((a as usize).min(msg.len()), (b as usize).min(msg.len()));
    &msg[a..b.max(a)]
}

/// One entity (header and body) with its content decoded, recursively.
fn binary_entity(msg: &[u8], p: &Part, out: &mut Vec<u8>) -> Option<()> {
    let header = slice(msg, p.header_start, p.body_start);
    match p.media_type.as_str() {
        "multipart" => {
            out.extend_from_slice(header);
            binary_children(msg, p, out)
        }
        "message" if !p.children.is_empty() => {
            out.extend_from_slice(header);
            binary_entity(msg, &p.children[0], out)
        }
        _ => {
            let enc = p.encoding.as_deref().map(|e| e.trim().to_ascii_lowercase());
            let body = slice(msg, p.body_start, p.end);
            if matches!(enc.as_deref(), Some("base64" | "quoted-printable")) {
                out.extend_from_slice(&relabel(header));
                out.extend_from_slice(&crate::text::transfer_decode(enc.as_deref(), body)?);
            } else {
                out.extend_from_slice(header);
                out.extend_from_slice(&crate::text::transfer_decode(enc.as_deref(), body)?);
            }
            Some(())
        }
    }
}

/// A multipart's body: preamble, boundaries and epilogue as they are, each part decoded.
fn binary_children(msg: &[u8], p: &Part, out: &mut Vec<u8>) -> Option<()> {
    let mut at = p.body_start;
    for c in &p.children {
        out.extend_from_slice(slice(msg, at, c.header_start));
        binary_entity(msg, c, out)?;
        at = c.end;
    }
    out.extend_from_slice(slice(msg, at, p.end));
    Some(())
}

/// A header with its Content-Transfer-Encoding field saying `binary`.
fn relabel(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if skipping && cont {
            continue;
        }
        skipping = false;
        if !cont && line.len() > 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:") {
            out.extend_from_slice(b"Content-Transfer-Encoding: binary\r\n");
            skipping = true;
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// The structure of a part as BINARY returns it (URLFETCH with both BINARY and
/// BODYPARTSTRUCTURE, RFC 5524): sizes and lines of the decoded content, transfer
/// encodings named as in the original (as Dovecot answers).
pub fn binary_structure(msg: &[u8], root: &Part, path: &[u32]) -> Option<Part> {
    let p = if path.is_empty() { root } else { find_part(root, path)? };
    let mut entity = Vec::new();
    if path.is_empty() {
        binary_entity(msg, root, &mut entity)?;
    } else {
        entity.extend_from_slice(slice(msg, p.header_start, p.body_start));
        entity.extend_from_slice(&binary_bytes(msg, root, path)?);
    }
    let mut parsed = crate::MessageSummary::parse(&entity).root;
    // Decoded leaves count the line breaks they hold (no partial last line).
    fn same_encodings(orig: &Part, conv: &mut Part, entity: &[u8]) {
        conv.encoding = orig.encoding.clone();
        if conv.children.is_empty() && conv.media_type == "text" {
            conv.lines = slice(entity, conv.body_start, conv.end).iter().filter(|&&b| b == b'\n').count() as u32;
        }
        for (o, c) in orig.children.iter().zip(conv.children.iter_mut()) {
            same_encodings(o, c, entity);
        }
    }
    same_encodings(p, &mut parsed, &entity);
    Some(parsed)
}

/// The message made 7-bit for a next hop without 8BITMIME (RFC 6152 §3): each part whose
/// content has 8-bit octets and no encoding (or 7bit, 8bit, binary) is re-encoded,
/// text as quoted-printable, the rest as base64, its Content-Transfer-Encoding field
/// rewritten. None when nothing needs it, or when the header itself is 8-bit (that
/// needs SMTPUTF8; no conversion exists).
pub fn seven_bit(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.is_ascii() {
        return None;
    }
    let root = crate::MessageSummary::parse(msg).root;
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 4);
    let mut changed = false;
    seven_bit_entity(msg, &root, &mut out, &mut changed)?;
    (changed && out.is_ascii()).then_some(out)
}

fn seven_bit_entity(msg: &[u8], p: &Part, out: &mut Vec<u8>, changed: &mut bool) -> Option<()> {
    let header = slice(msg, p.header_start, p.body_start);
    if !header.is_ascii() {
        return None;
    }
    match p.media_type.as_str() {
        // A multipart whose parts were not all found (no boundary, past the part or
        // depth limits) cannot be converted part by part: None, never a loss.
        "multipart" if p.children.is_empty() => None,
        "multipart" => {
            out.extend_from_slice(header);
            let mut at = p.body_start;
            for c in &p.children {
                let between = slice(msg, at, c.header_start);
                if !between.is_ascii() {
                    return None;
                }
                out.extend_from_slice(between);
                seven_bit_entity(msg, c, out, changed)?;
                at = c.end;
            }
            let rest = slice(msg, at, p.end);
            if !rest.is_ascii() {
                return None;
            }
            out.extend_from_slice(rest);
            Some(())
        }
        "message" if !p.children.is_empty() => {
            out.extend_from_slice(header);
            seven_bit_entity(msg, &p.children[0], out, changed)
        }
        _ => {
            let body = slice(msg, p.body_start, p.end);
            let enc = p.encoding.as_deref().map(|e| e.trim().to_ascii_lowercase());
            let plain = matches!(enc.as_deref(), None | Some("7bit" | "8bit" | "binary" | ""));
            if body.is_ascii() || !plain {
                out.extend_from_slice(header);
                out.extend_from_slice(body);
                return Some(());
            }
            *changed = true;
            let text = p.media_type == "text";
            let label = if text { "quoted-printable" } else { "base64" };
            let header = relabel(header);
            let header = String::from_utf8_lossy(&header)
                .replace("Content-Transfer-Encoding: binary", &format!("Content-Transfer-Encoding: {label}"));
            // A part that had no encoding field gets one (before the empty line).
            let has_field =
                header.lines().any(|l| l.len() >= 26 && l[..26].eq_ignore_ascii_case("content-transfer-encoding:"));
            if !has_field {
                let blank = if header.ends_with("\r\n\r\n") {
                    header.len() - 2
                } else if header.ends_with("\n\n") || header == "\r\n" || header == "\n" {
                    header.len() - if header.ends_with("\r\n") { 2 } else { 1 }
                } else {
                    header.len()
                };
                let (fields, rest) = header.split_at(blank);
                out.extend_from_slice(fields.as_bytes());
                out.extend_from_slice(format!("Content-Transfer-Encoding: {label}\r\n").as_bytes());
                out.extend_from_slice(rest.as_bytes());
            } else {
                out.extend_from_slice(header.as_bytes());
            }
            if text {
                out.extend_from_slice(&qp_encode(body));
            } else {
                out.extend_from_slice(&base64_lines(body));
            }
            Some(())
        }
    }
}

/// Quoted-printable of octets, lines kept (CRLF or LF ends one), at most 76 a line.
fn qp_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 3);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = (b == b'\t' || (32..127).contains(&b)) && b != b'=' && !(last && (b == b' ' || b == b'\t'));
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            }
            col += width;
        }
        if n + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38 + 2);
    for chunk in text.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_conversion() {
        let m = b"From: a@x\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 = ok\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\x10\r\n--b--\r\n";
        let out = seven_bit(m).expect("converted");
        assert!(out.is_ascii());
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D ok\r\n--b"), "{text}");
        assert!(
            text.contains("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAP8Q"),
            "{text}"
        );
        // The content reads back the same.
        let root = crate::MessageSummary::parse(&out).root;
        assert_eq!(binary_bytes(&out, &root, &[1]).expect("decodes"), "caf\u{e9} = ok".as_bytes());
        assert_eq!(seven_bit(b"Subject: plain\r\n\r\nascii\r\n"), None, "nothing to do");
        assert_eq!(seven_bit(b"Subject: caf\xc3\xa9\r\n\r\nx\xc3\xa9\r\n"), None, "an 8-bit header needs SMTPUTF8");
        // Found in review: a multipart whose parts were not found is never cut down.
        let broken = b"Content-Type: multipart/mixed\r\n\r\nno boundary caf\xc3\xa9\r\n";
        assert_eq!(seven_bit(broken), None);
        let epilogue = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\ncaf\xc3\xa9\r\n";
        assert_eq!(seven_bit(epilogue), None);
        // A part without an encoding field gets one before its empty line.
        let bare = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-Content-Transfer-Encoding-Note: no\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n";
        let t = String::from_utf8(seven_bit(bare).expect("converted")).expect("ascii");
        assert!(
            t.contains(
                "X-Content-Transfer-Encoding-Note: no\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9"
            ),
            "{t}"
        );
        let long = [b'\xe9'; 100];
        let qp = qp_encode(&long);
        assert!(qp.split(|&b| b == b'\n').all(|l| l.len() <= 77), "lines stay short");
    }
}
