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
