//! One parse of a message at delivery: header fields for ENVELOPE and the MIME tree
//! with byte offsets, so that reads (IMAP FETCH, webmail) never re-parse the body.

use serde::{Deserialize, Serialize};

/// Nesting deeper than this is treated as an opaque leaf: bounds stack use on hostile input.
const MAX_DEPTH: usize = 32;
/// More parts than this in one multipart are kept as one opaque leaf.
const MAX_PARTS: usize = 1000;

/// Raw (unfolded, undecoded) header values that IMAP's ENVELOPE is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeFields {
    pub date: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub sender: Option<String>,
    pub reply_to: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub bcc: Option<String>,
    pub in_reply_to: Option<String>,
    pub message_id: Option<String>,
    /// Not part of ENVELOPE: kept for THREAD=REFERENCES (RFC 5256).
    #[serde(default)]
    pub references: Option<String>,
}

/// One MIME part. Offsets are absolute byte positions in the stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub header_start: u32,
    pub body_start: u32,
    pub end: u32,
    /// Lower-cased media type and subtype; text/plain when absent.
    pub media_type: String,
    pub media_subtype: String,
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub description: Option<String>,
    pub encoding: Option<String>,
    pub md5: Option<String>,
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Option<String>,
    pub location: Option<String>,
    /// Body lines, counted for text/* and message/rfc822 parts.
    pub lines: u32,
    pub children: Vec<Part>,
    /// For message/rfc822: the encapsulated message's envelope fields.
    pub inner_envelope: Option<Box<EnvelopeFields>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    pub envelope: EnvelopeFields,
    pub root: Part,
    /// Lines of the whole body, whatever its type (NNTP's overview counts them);
    /// 0 in summaries written before it was kept.
    #[serde(default)]
    pub body_lines: u32,
    /// Where SEARCH finds the body's decoded text, decided when the body was stored.
    #[serde(default, skip_serializing_if = "BodyText::is_unknown")]
    pub body_text: BodyText,
}

/// Where a message's decoded body text is, for SEARCH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyText {
    /// Stored before this was decided: decode when asked.
    #[default]
    Unknown,
    /// The raw text parts are the text (UTF-8 or ASCII, no transfer encoding).
    Raw,
    /// Decoded at delivery and kept beside the body.
    Kept,
}

impl BodyText {
    fn is_unknown(&self) -> bool {
        *self == BodyText::Unknown
    }
}

impl MessageSummary {
    pub fn parse(msg: &[u8]) -> MessageSummary {
        let (headers, body_start) = split_headers(msg, 0, msg.len());
        let envelope = envelope_of(&headers);
        let root = parse_part(msg, 0, msg.len(), &headers, body_start, DefaultType::Text, 0);
        let body_lines = count_lines(&msg[body_start.min(msg.len())..]);
        MessageSummary { envelope, root, body_lines, body_text: BodyText::Unknown }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum DefaultType {
    Text,
    Message,
}

/// A header field: lower-cased name, unfolded raw value.
type Header = (String, String);

/// Splits the header block of `msg[start..end]`; returns the fields and where the body
/// starts. Values are UTF-8 (RFC 6532) when they are; undeclared 8-bit text in another
/// charset is detected and converted, so it reads right everywhere downstream.
fn split_headers(msg: &[u8], start: usize, end: usize) -> (Vec<Header>, usize) {
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pos = start;
    let mut body = end;
    while pos < end {
        let line_end = find_line_end(msg, pos, end);
        let line = &msg[pos..line_end];
        let next = next_line(msg, line_end, end);
        let content = trim_eol(line);
        if content.is_empty() {
            body = next;
            break;
        }
        if (content[0] == b' ' || content[0] == b'\t') && !raw.is_empty() {
            if let Some(last) = raw.last_mut() {
                last.1.extend_from_slice(content);
            }
        } else if let Some(colon) = content.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&content[..colon]).trim().to_ascii_lowercase();
            raw.push((name, content[colon + 1..].to_vec()));
        } else if raw.is_empty() && pos == start {
            // Not a header at all: the whole part is body.
            return (Vec::new(), start);
        }
        pos = next;
    }
    let headers = raw
        .into_iter()
        .map(|(n, v)| match String::from_utf8(v) {
            Ok(v) => (n, v),
            Err(e) => (n, crate::text::undeclared(e.as_bytes())),
        })
        .collect();
    (headers, body)
}

fn find_line_end(msg: &[u8], pos: usize, end: usize) -> usize {
    msg[pos..end].iter().position(|&b| b == b'\n').map_or(end, |i| pos + i)
}

fn next_line(_msg: &[u8], line_end: usize, end: usize) -> usize {
    (line_end + 1).min(end)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((&last, rest)) = l.split_last() {
        if last == b'\r' || last == b'\n' {
            l = rest;
        } else {
            break;
        }
    }
    l
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn envelope_of(headers: &[Header]) -> EnvelopeFields {
    let get = |n: &str| header(headers, n).map(|v| v.trim().to_string());
    EnvelopeFields {
        date: get("date"),
        subject: get("subject"),
        from: get("from"),
        sender: get("sender"),
        reply_to: get("reply-to"),
        to: get("to"),
        cc: get("cc"),
        bcc: get("bcc"),
        in_reply_to: get("in-reply-to"),
        message_id: get("message-id"),
        references: get("references"),
    }
}

/// Parses `type/subtype; a=b; c="d"` (also used for Content-Disposition, without the slash).
fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_unquoted(value, b';').into_iter();
    let head = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut params = Vec::new();
    for p in parts {
        if let Some(eq) = p.find('=') {
            let name = p[..eq].trim().to_ascii_lowercase();
            let mut v = p[eq + 1..].trim().to_string();
            if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                v = unquote(&v[1..v.len() - 1]);
            }
            if !name.is_empty() {
                params.push((name, v));
            }
        }
    }
    (head, join_continuations(params))
}

/// Most continuation sections of one RFC 2231 parameter that are joined.
const MAX_SECTIONS: usize = 100;

/// RFC 2231 continuations (`name*0`, `name*1*` …) joined into one parameter where the
/// first section was: `name*` with the encoded value when the first section is encoded
/// (plain sections percent-encoded to match), else `name`. IMAP shows the joined form,
/// as Dovecot does; [`crate::text::param`] decodes it for people.
fn join_continuations(params: Vec<(String, String)>) -> Vec<(String, String)> {
    fn section(name: &str) -> Option<(&str, usize, bool)> {
        let (base, rest) = name.split_once('*')?;
        let (num, encoded) = match rest.strip_suffix('*') {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let n = num.parse::<usize>().ok().filter(|&n| n < MAX_SECTIONS && (n == 0 || !num.starts_with('0')))?;
        Some((base, n, encoded))
    }
    if !params.iter().any(|(n, _)| section(n).is_some()) {
        return params;
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(params.len());
    for (i, (name, _)) in params.iter().enumerate() {
        let Some((base, n, _)) = section(name) else {
            out.push(params[i].clone());
            continue;
        };
        if n != 0 || params[..i].iter().any(|(m, _)| section(m).is_some_and(|(b, k, _)| k == 0 && b == base)) {
            continue;
        }
        let mut sections: Vec<(usize, bool, &str)> = params
            .iter()
            .filter_map(|(m, v)| section(m).filter(|(b, _, _)| *b == base).map(|(_, k, e)| (k, e, v.as_str())))
            .collect();
        sections.sort_by_key(|s| s.0);
        sections.dedup_by_key(|s| s.0);
        let first_encoded = sections[0].1;
        let mut value = String::new();
        for (k, (num, encoded, v)) in sections.iter().enumerate() {
            if *num != k {
                break;
            }
            if first_encoded && !encoded {
                for b in v.bytes() {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        value.push(b as char);
                    } else {
                        value.push_str(&format!("%{b:02X}"));
                    }
                }
            } else {
                value.push_str(v);
            }
        }
        out.push((if first_encoded { format!("{base}*") } else { base.to_string() }, value));
    }
    out
}

fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

fn split_unquoted(value: &str, sep: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut esc = false;
    for &b in value.as_bytes() {
        if esc {
            esc = false;
        } else if quoted && b == b'\\' {
            esc = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            out.push(String::from_utf8_lossy(&cur).to_string());
            cur.clear();
            continue;
        }
        cur.push(b);
    }
    out.push(String::from_utf8_lossy(&cur).to_string());
    out
}

fn count_lines(body: &[u8]) -> u32 {
    let n = body.iter().filter(|&&b| b == b'\n').count();
    let partial = !body.is_empty() && body.last() != Some(&b'\n');
    (n + usize::from(partial)) as u32
}

fn parse_part(
    msg: &[u8],
    header_start: usize,
    end: usize,
    headers: &[Header],
    body_start: usize,
    default: DefaultType,
    depth: usize,
) -> Part {
    let (media_type, media_subtype, params) = match header(headers, "content-type") {
        Some(ct) => {
            let (full, params) = parse_params(ct);
            match full.split_once('/') {
                Some((t, s)) if !t.trim().is_empty() && !s.trim().is_empty() => {
                    (t.trim().to_string(), s.trim().to_string(), params)
                }
                _ => default_type(default),
            }
        }
        None => default_type(default),
    };
    let trimmed = |n: &str| header(headers, n).map(|v| v.trim().to_string());
    let mut part = Part {
        header_start: header_start as u32,
        body_start: body_start as u32,
        end: end as u32,
        id: trimmed("content-id"),
        description: trimmed("content-description"),
        encoding: trimmed("content-transfer-encoding"),
        md5: trimmed("content-md5"),
        disposition: header(headers, "content-disposition").map(parse_params),
        language: trimmed("content-language"),
        location: trimmed("content-location"),
        media_type,
        media_subtype,
        params,
        ..Part::default()
    };
    let body = &msg[body_start.min(end)..end];
    if depth >= MAX_DEPTH {
        return part;
    }
    if part.media_type == "multipart" {
        let boundary = part.params.iter().find(|(n, _)| n == "boundary").map(|(_, v)| v.clone());
        if let Some(boundary) = boundary.filter(|b| !b.is_empty()) {
            let child_default = if part.media_subtype == "digest" { DefaultType::Message } else { DefaultType::Text };
            for (s, e) in split_multipart(msg, body_start, end, boundary.as_bytes()) {
                let (h, bs) = split_headers(msg, s, e);
                part.children.push(parse_part(msg, s, e, &h, bs, child_default, depth + 1));
            }
        }
    } else if part.media_type == "message" && (part.media_subtype == "rfc822" || part.media_subtype == "global") {
        part.lines = count_lines(body);
        let (h, bs) = split_headers(msg, body_start, end);
        part.inner_envelope = Some(Box::new(envelope_of(&h)));
        part.children.push(parse_part(msg, body_start, end, &h, bs, DefaultType::Text, depth + 1));
    } else if part.media_type == "text" {
        part.lines = count_lines(body);
    }
    part
}

fn default_type(d: DefaultType) -> (String, String, Vec<(String, String)>) {
    match d {
        DefaultType::Text => ("text".into(), "plain".into(), vec![("charset".into(), "us-ascii".into())]),
        DefaultType::Message => ("message".into(), "rfc822".into(), Vec::new()),
    }
}

/// Byte ranges of the body parts between `--boundary` delimiter lines.
/// Each part ends before the CRLF that precedes the next delimiter (RFC 2046 §5.1.1).
fn split_multipart(msg: &[u8], start: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut pos = start;
    let mut current: Option<usize> = None;
    while pos < end {
        let line_end = find_line_end(msg, pos, end);
        let line = trim_eol(&msg[pos..line_end]);
        if line.len() >= 2 + boundary.len() && line.starts_with(b"--") && &line[2..2 + boundary.len()] == boundary {
            let rest = &line[2 + boundary.len()..];
            let closing = rest.starts_with(b"--");
            if closing || rest.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(s) = current.take() {
                    // The line break before the delimiter belongs to the delimiter.
                    let mut e = pos;
                    if e > s && msg[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && msg[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push((s, e.max(s)));
                    if parts.len() >= MAX_PARTS {
                        return parts;
                    }
                }
                if closing {
                    return parts;
                }
                current = Some(next_line(msg, line_end, end));
            }
        }
        pos = next_line(msg, line_end, end);
        if pos == line_end {
            break;
        }
    }
    if let Some(s) = current {
        parts.push((s, end));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_message() {
        let m = b"From: a@b.c\r\nSubject: hi\r\n there\r\nTo: x@y.z\r\n\r\nline1\r\nline2\r\n";
        let s = MessageSummary::parse(m);
        assert_eq!(s.envelope.subject.as_deref(), Some("hi there"));
        assert_eq!(s.envelope.from.as_deref(), Some("a@b.c"));
        assert_eq!(s.root.media_type, "text");
        assert_eq!(s.root.lines, 2);
        assert_eq!(&m[s.root.body_start as usize..], b"line1\r\nline2\r\n");
    }

    #[test]
    fn multipart_with_nested_message() {
        let m = b"Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npreamble\r\n--xx\r\n\r\nhello\r\n--xx\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--xx--\r\n";
        let s = MessageSummary::parse(m);
        assert_eq!(s.root.children.len(), 2);
        let first = &s.root.children[0];
        assert_eq!(&m[first.body_start as usize..first.end as usize], b"hello");
        let inner = &s.root.children[1];
        assert_eq!(inner.media_subtype, "rfc822");
        assert_eq!(inner.inner_envelope.as_ref().and_then(|e| e.subject.as_deref()), Some("inner"));
        assert_eq!(inner.children[0].media_type, "text");
    }

    #[test]
    fn rfc2231_continuations_are_joined() {
        let m = b"Content-Type: application/pdf;\r\n name*0*=utf-8''%E6%97%A5;\r\n name*1*=%E6%9C%AC;\r\n name*2=\" x.pdf\"\r\nContent-Disposition: attachment; filename*1=\"rt.txt\"; filename*0=\"pa\"; size=3\r\n\r\nx";
        let s = MessageSummary::parse(m);
        assert_eq!(s.root.params, vec![("name*".to_string(), "utf-8''%E6%97%A5%E6%9C%AC%20x.pdf".to_string())]);
        let d = s.root.disposition.as_ref().unwrap();
        assert_eq!(d.1, vec![("filename".to_string(), "part.txt".to_string()), ("size".to_string(), "3".to_string())]);
        assert_eq!(crate::text::param(&s.root.params, "name").as_deref(), Some("日本 x.pdf"));
    }

    #[test]
    fn undeclared_8bit_headers_are_read() {
        let s =
            MessageSummary::parse(b"Subject: Gr\xfc\xdfe aus K\xf6ln\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@x.de>\r\n\r\nx");
        assert_eq!(s.envelope.subject.as_deref(), Some("Grüße aus Köln"));
        assert_eq!(s.envelope.from.as_deref(), Some("=?utf-8?q?J=C3=B6rg?= <j@x.de>"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for m in [&b""[..], b"\r\n", b"::::", b"Content-Type: multipart/x; boundary=\r\n\r\n--\r\n", b"\xff\xfe\n\n"] {
            let _ = MessageSummary::parse(m);
        }
        let deep: Vec<u8> = (0..200).flat_map(|_| b"Content-Type: message/rfc822\r\n\r\n".iter().copied()).collect();
        let _ = MessageSummary::parse(&deep);
    }
}
