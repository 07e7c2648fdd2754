//! The one text layer for mail, on mail-parser and encoding_rs: bytes in a declared
//! charset to UTF-8 (the WHATWG encodings with mail-parser's aliases: ISO-2022-JP,
//! Shift_JIS, GB18030, Big5, EUC-KR, KOI8-R, ISO-8859-*, windows-125x …), RFC 2047
//! encoded words in header values, the decoded text of a message for search and
//! previews (transfer encodings, charsets, HTML as text), and case-insensitive matching
//! of Unicode text. Every protocol decodes through here.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::html::html_to_text;

use crate::summary::Part;

/// Converts `bytes` declared as `label` to UTF-8; None when the charset is unknown.
/// UTF-8 itself is checked (invalid sequences become U+FFFD).
pub fn decode(label: &str, bytes: &[u8]) -> Option<String> {
    decoder(label).map(|d| d(bytes))
}

/// The converter for a charset label (UTF-8 included); None when it is unknown.
pub fn decoder(label: &str) -> Option<fn(&[u8]) -> String> {
    let l = label.trim().trim_matches('"');
    if l.eq_ignore_ascii_case("utf-8") || l.eq_ignore_ascii_case("utf8") {
        return Some(|b| String::from_utf8_lossy(b).into_owned());
    }
    charset_decoder(l.as_bytes())
}

/// The charsets named when a client asks for one that is unknown (IMAP BADCHARSET):
/// the common ones; every WHATWG label is taken.
pub const COMMON_CHARSETS: &[&str] = &[
    "UTF-8",
    "US-ASCII",
    "ISO-8859-1",
    "ISO-8859-2",
    "ISO-8859-5",
    "ISO-8859-7",
    "ISO-8859-15",
    "WINDOWS-1250",
    "WINDOWS-1251",
    "WINDOWS-1252",
    "KOI8-R",
    "ISO-2022-JP",
    "SHIFT_JIS",
    "EUC-JP",
    "GB2312",
    "GB18030",
    "BIG5",
    "EUC-KR",
];

/// Whether a charset label is one this layer converts.
pub fn known_charset(label: &str) -> bool {
    decode(label, b"").is_some()
}

/// Decodes RFC 2047 encoded words in a header value (raw 8-bit text, RFC 6532 UTF-8,
/// is kept); whitespace between two adjacent encoded words is dropped, and adjacent
/// words in one charset are decoded together, so a character split between two words
/// (as some mailers write them) comes out whole. A word in an unknown charset is kept
/// as it was unless its bytes are UTF-8. The word scanner is ours: mail-parser drops
/// the last bytes of base64 words without padding, which real mail has; the charsets
/// are the library's.
pub fn decode_words(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut lit_start = 0;
    // The run of adjacent words in one charset not yet decoded: (charset, bytes, source).
    let mut pending: Option<(&str, Vec<u8>, &str)> = None;
    let mut i = 0;
    while i + 1 < bytes.len() {
        // '=' is ASCII, so `i` is a char boundary here.
        if bytes[i] == b'='
            && bytes[i + 1] == b'?'
            && let Some((charset, raw, len)) = encoded_word(&s[i..])
        {
            let between = &s[lit_start..i];
            let adjacent = pending.is_some() && between.chars().all(char::is_whitespace);
            match pending.take() {
                Some((cs, mut acc, src)) if adjacent && cs.eq_ignore_ascii_case(charset) => {
                    acc.extend_from_slice(&raw);
                    pending = Some((cs, acc, src));
                }
                previous => {
                    if let Some((cs, acc, src)) = previous {
                        flush_word(&mut out, cs, acc, src);
                    }
                    if !adjacent {
                        out.push_str(between);
                    }
                    pending = Some((charset, raw, &s[i..i + len]));
                }
            }
            i += len;
            lit_start = i;
            continue;
        }
        i += 1;
    }
    if let Some((cs, acc, src)) = pending {
        flush_word(&mut out, cs, acc, src);
    }
    out.push_str(&s[lit_start..]);
    out
}

/// Appends a run of encoded words' bytes decoded; in an unknown charset, the bytes if
/// they are UTF-8, else the words as they were written.
fn flush_word(out: &mut String, charset: &str, raw: Vec<u8>, source: &str) {
    match decode(charset, &raw) {
        Some(d) => out.push_str(&d),
        None => match String::from_utf8(raw) {
            Ok(d) => out.push_str(&d),
            Err(_) => out.push_str(source),
        },
    }
}

/// `=?charset?B|Q?text?=` at the start of `s`: its charset (without an RFC 2231
/// language), the bytes it carries and the word's length.
fn encoded_word(s: &str) -> Option<(&str, Vec<u8>, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    let rest = &body[q1 + 1..];
    let mut enc_chars = rest.chars();
    let enc = enc_chars.next()?;
    let rest = enc_chars.as_str().strip_prefix('?')?;
    let end = rest.find('?')?;
    if !rest[end..].starts_with("?=") || charset.is_empty() || charset.contains(char::is_whitespace) {
        return None;
    }
    let text = &rest[..end];
    let raw = match enc {
        'B' | 'b' => LENIENT_B64.decode(text.trim()).ok()?,
        'Q' | 'q' => q_decode(text),
        _ => return None,
    };
    // RFC 2231 allows "charset*language".
    let charset = charset.split('*').next().unwrap_or(charset);
    // "=?" + charset + "?" + enc + "?" + text + "?="
    let len = 2 + q1 + 1 + enc.len_utf8() + 1 + end + 2;
    Some((charset, raw, len))
}

/// Padding is often wrong in the wild; accept it either way.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn q_decode(text: &str) -> Vec<u8> {
    // '_' is a space; an escaped underscore (=5F) is not touched by this.
    let spaced: Vec<u8> = text.bytes().map(|b| if b == b'_' { b' ' } else { b }).collect();
    let mut out = Vec::with_capacity(spaced.len());
    unhex_into(&mut out, &spaced, b'=');
    out
}

/// Appends `input` with each `MARK` + two hex digits as the byte they name (QP's `=XX`,
/// RFC 2231's `%XX`); a mark without two hex digits stays as it is.
fn unhex_into(out: &mut Vec<u8>, input: &[u8], mark: u8) {
    let mut i = 0;
    while i < input.len() {
        if input[i] == mark
            && let (Some(h), Some(l)) =
                (input.get(i + 1).and_then(|&c| hex_digit(c)), input.get(i + 2).and_then(|&c| hex_digit(c)))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
}

/// Text whose charset is not declared, declared as US-ASCII or UTF-8 but is not, as
/// UTF-8: kept when it is UTF-8 (and not ISO-2022-JP, which is 7-bit), else decoded in
/// the encoding chardetng (Firefox's detector for undeclared legacy text) finds likeliest.
pub fn undeclared(bytes: &[u8]) -> String {
    if !bytes.contains(&0x1b)
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return s.to_string();
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
    detector.feed(bytes, true);
    let encoding = detector.guess(None, chardetng::Utf8Detection::Allow);
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// Whether a charset label says "ASCII or UTF-8", where 8-bit bytes that are not UTF-8
/// mean the label is wrong and the text is detected instead.
fn utf8_or_ascii(label: &str) -> bool {
    let l = label.trim().trim_matches('"');
    ["us-ascii", "ascii", "utf-8", "utf8", "ansi_x3.4-1968"].iter().any(|a| l.eq_ignore_ascii_case(a))
}

/// Converts text declared (or not) in `charset` to UTF-8: the declared charset when it
/// is known and not merely "ASCII or UTF-8", else [`undeclared`].
pub fn to_utf8(charset: Option<&str>, bytes: &[u8]) -> String {
    match charset.filter(|c| !utf8_or_ascii(c)).and_then(|c| decode(c, bytes)) {
        Some(t) => t,
        None => undeclared(bytes),
    }
}

/// The text of one leaf part as UTF-8: transfer encoding undone (an unknown one is
/// taken as it is), charset converted, HTML turned into text.
pub fn part_text(msg: &[u8], part: &Part) -> String {
    let text = part_decoded(msg, part);
    if part.media_subtype == "html" { html_text(&text) } else { text }
}

/// The content of one leaf part as UTF-8, as written (HTML stays HTML): transfer
/// encoding undone (an unknown one is taken as it is), charset converted.
pub fn part_decoded(msg: &[u8], part: &Part) -> String {
    let raw = raw_of(msg, part.body_start, part.end);
    let data = transfer_decode(part.encoding.as_deref(), raw);
    let data = data.as_deref().unwrap_or(raw);
    to_utf8(param(&part.params, "charset").as_deref(), data)
}

/// The first text part a reader would see: text/plain before text/html, attachments skipped.
fn first_text(p: &Part, html: bool) -> Option<&Part> {
    if !p.children.is_empty() {
        return p.children.iter().find_map(|c| first_text(c, html));
    }
    let attachment = p.disposition.as_ref().is_some_and(|d| d.0 == "attachment");
    let wanted = if html { "html" } else { "plain" };
    (p.media_type == "text" && p.media_subtype == wanted && !attachment).then_some(p)
}

/// PREVIEW (RFC 8970): up to 256 characters of the message's text, decoded, with
/// markup and runs of white space squeezed out.
pub fn preview(msg: &[u8], root: &Part) -> String {
    let Some(part) = first_text(root, false).or_else(|| first_text(root, true)) else { return String::new() };
    let text = part_text(msg, part);
    let mut out = String::new();
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.chars().count() >= 256 {
            break;
        }
    }
    out
}

/// What a message's body holds for people to read, in order: text leaves (text/*
/// parts, inside attached messages too) and the header blocks of attached messages.
enum Piece<'a> {
    Text(&'a Part),
    /// An attached message's own part: its header block is `header_start..body_start`.
    Header(&'a Part),
}

fn pieces(root: &Part) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, false)];
    while let Some((p, embedded)) = stack.pop() {
        if embedded {
            out.push(Piece::Header(p));
        }
        if p.children.is_empty() {
            if p.media_type == "text" {
                out.push(Piece::Text(p));
            }
        } else {
            let message = p.media_type == "message";
            stack.extend(p.children.iter().rev().map(|c| (c, message)));
        }
    }
    out
}

/// The text leaves of a message (text/* parts, inside attached messages too), in order.
pub fn text_parts(root: &Part) -> Vec<&Part> {
    pieces(root)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t),
            Piece::Header(_) => None,
        })
        .collect()
}

fn raw_of(msg: &[u8], start: u32, end: u32) -> &[u8] {
    msg.get(start as usize..(end as usize).min(msg.len())).unwrap_or(&[])
}

/// The body of a message as text: every text part decoded, and the header blocks of
/// attached messages with their encoded words decoded, separated by line breaks.
pub fn body_text(msg: &[u8], root: &Part) -> String {
    let mut out = String::new();
    for piece in pieces(root) {
        if !out.is_empty() {
            out.push('\n');
        }
        match piece {
            Piece::Text(part) => out.push_str(&part_text(msg, part)),
            Piece::Header(part) => {
                let head = undeclared(raw_of(msg, part.header_start, part.body_start));
                out.push_str(&decode_words(&head));
            }
        }
    }
    out
}

/// The body text worth keeping at delivery for search: None when the raw bytes already
/// are that text (plain text parts in UTF-8 or ASCII, not transfer-encoded; attached
/// messages' headers without encoded words), so SEARCH decodes nothing; otherwise the
/// decoded text in search form (case-mapped, [`casemap`]), made once here instead of
/// per query.
pub fn search_text(msg: &[u8], root: &Part) -> Option<String> {
    let readable = |raw: &[u8]| !raw.contains(&0x1b) && std::str::from_utf8(raw).is_ok();
    let raw_is_text = pieces(root).iter().all(|piece| match piece {
        Piece::Text(p) => {
            let plain_encoding = p.encoding.as_deref().is_none_or(|e| {
                let e = e.trim();
                e.is_empty() || ["7bit", "8bit", "binary"].iter().any(|x| e.eq_ignore_ascii_case(x))
            });
            p.media_subtype != "html"
                && plain_encoding
                && param(&p.params, "charset").is_none_or(|c| utf8_or_ascii(&c))
                && readable(raw_of(msg, p.body_start, p.end))
        }
        Piece::Header(p) => {
            let head = raw_of(msg, p.header_start, p.body_start);
            readable(head) && !head.windows(2).any(|w| w == b"=?")
        }
    });
    if raw_is_text { None } else { Some(casemap(&body_text(msg, root))) }
}

/// HTML as plain text (tags dropped, entities decoded), for search and previews.
pub fn html_text(html: &str) -> String {
    html_to_text(html)
}

/// A parameter of a Content-Type or Content-Disposition as people read it: RFC 2231
/// (`name*` with `charset'language'%XX`, continuations already joined at parse) or
/// RFC 2047 encoded words in a quoted value, as some mailers write file names.
pub fn param(params: &[(String, String)], name: &str) -> Option<String> {
    let starred = format!("{name}*");
    if let Some((_, v)) = params.iter().find(|(n, _)| n.eq_ignore_ascii_case(&starred)) {
        return Some(rfc2231_value(v));
    }
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| decode_words(v))
}

/// `charset'language'percent-encoded` to text; a value without the two quotes is taken
/// as percent-encoded UTF-8.
fn rfc2231_value(v: &str) -> String {
    let (charset, encoded) = match v.split_once('\'') {
        Some((c, rest)) => (Some(c), rest.split_once('\'').map_or(rest, |(_, e)| e)),
        None => (None, v),
    };
    let mut bytes = Vec::with_capacity(encoded.len());
    unhex_into(&mut bytes, encoded.as_bytes(), b'%');
    to_utf8(charset.filter(|c| !c.is_empty()), &bytes)
}

/// A part's content with its Content-Transfer-Encoding undone; None for an unknown
/// encoding (IMAP's UNKNOWN-CTE).
pub fn transfer_decode(encoding: Option<&str>, data: &[u8]) -> Option<Vec<u8>> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("7bit" | "8bit" | "binary" | "") => Some(data.to_vec()),
        Some("base64") => Some(base64_decode(data)),
        Some("quoted-printable") => Some(qp_decode(data)),
        Some(_) => None,
    }
}

fn b64_value(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Base64 as found in mail: line breaks and stray characters skipped, padding optional.
pub fn base64_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        if c == b'=' {
            break;
        }
        let Some(v) = b64_value(c) else { continue };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (RFC 2045 §6.7): trailing whitespace dropped, `=` at the end of a
/// line (before optional padding) joins lines, `=XX` is a byte; malformed escapes stay.
pub fn qp_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for raw in data.split_inclusive(|&b| b == b'\n') {
        let (line, eol): (&[u8], &[u8]) = if let Some(l) = raw.strip_suffix(b"\r\n") {
            (l, b"\r\n")
        } else if let Some(l) = raw.strip_suffix(b"\n") {
            (l, b"\r\n")
        } else {
            (raw, b"")
        };
        let line = line.trim_ascii_end();
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        unhex_into(&mut out, line, b'=');
        if !soft {
            out.extend_from_slice(eol);
        }
    }
    out
}

/// The comparison form of text for i;unicode-casemap (RFC 5051): the full Unicode
/// upper-case mapping (so "ß" and "SS" are equal) rather than titlecase plus NFKD,
/// which would need normalisation tables; for most scripts the result is the same.
pub fn casemap(s: &str) -> String {
    s.chars().flat_map(char::to_uppercase).collect()
}

/// Whether `needle` occurs in `hay`, case-insensitively for all of Unicode (without
/// copying when both are ASCII).
pub fn contains_casemapped(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        return hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    }
    casemap(hay).contains(&casemap(needle))
}

/// A message's first `most` header fields, unfolded, names lower-cased: (name, value);
/// at most 256 KiB of header is read.
pub fn header_fields(message: &[u8], most: usize) -> Vec<(String, String)> {
    let limit = message.len().min(256 * 1024);
    let end = message[..limit].windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(limit);
    let head = String::from_utf8_lossy(&message[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if out.len() == most {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// RFC 2047 B words of at most 45 bytes of UTF-8 each (whole characters), folded.
pub fn encode_words(s: &str) -> String {
    if s.is_ascii() && !s.contains("=?") {
        return s.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text with `\n` line ends: lines of at most
/// 76 characters, soft breaks, `=` and 8-bit bytes escaped, trailing blanks protected.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let piece = if b == b'=' || b >= 0x80 || (b < 0x20 && b != b'\t') || (last && (b == b' ' || b == b'\t')) {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if col + piece.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            out.push_str(&piece);
            col += piece.len();
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets_of_the_world() {
        assert_eq!(decode("ISO-8859-1", b"Gr\xfc\xdfe").as_deref(), Some("Grüße"));
        assert_eq!(decode("windows-1252", b"\x80 5").as_deref(), Some("€ 5"));
        assert_eq!(decode("koi8-r", b"\xf0\xd2\xc9\xd7\xc5\xd4").as_deref(), Some("Привет"));
        assert_eq!(decode("windows-1251", b"\xcf\xf0\xe8\xe2\xe5\xf2").as_deref(), Some("Привет"));
        assert_eq!(decode("Shift_JIS", b"\x93\xfa\x96\x7b").as_deref(), Some("日本"));
        assert_eq!(decode("iso-2022-jp", b"\x1b$BF|K\\\x1b(B").as_deref(), Some("日本"));
        assert_eq!(decode("GB2312", b"\xd6\xd0\xce\xc4").as_deref(), Some("中文"));
        assert_eq!(decode("big5", b"\xa4\xa4\xa4\xe5").as_deref(), Some("中文"));
        assert_eq!(decode("euc-kr", b"\xc7\xd1\xb1\xb9").as_deref(), Some("한국"));
        assert_eq!(decode("utf-8", "añ".as_bytes()).as_deref(), Some("añ"));
        assert!(decode("x-unknown-charset", b"x").is_none() && !known_charset("nonsense"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("=?iso-2022-jp?B?GyRCRnxLXBsoQg==?= news"), "日本 news");
        assert_eq!(decode_words("=?koi8-r?Q?=F0=D2=C9=D7=C5=D4?= =?utf-8?Q?_w?="), "Привет w");
        assert_eq!(decode_words("plain =?bogus"), "plain =?bogus");
        assert_eq!(decode_words("Grüße (raw UTF-8)"), "Grüße (raw UTF-8)");
        assert_eq!(decode_words("a =?UTF-8?B?w6k=?= b"), "a é b");
        // "é" split between two words, then a word in another charset.
        assert_eq!(decode_words("=?utf-8?B?ww==?=\r\n =?UTF-8?B?qSB4?= =?iso-8859-1?q?_=E9?="), "é x é");
        assert_eq!(decode_words("=?x-unknown?q?=FF?= z"), "=?x-unknown?q?=FF?= z");
    }

    #[test]
    fn text_of_a_message() {
        let body_text = |m: &[u8]| body_text(m, &crate::MessageSummary::parse(m).root);
        let msg = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=F0=D2=C9=D7=C5=D4\r\n--b\r\nContent-Type: text/html; charset=shift_jis\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+k/qWezwvYj4=\r\n--b--\r\n";
        let t = body_text(msg);
        assert!(t.contains("Привет") && t.contains("日本") && !t.contains("<b>"), "{t}");
        assert!(contains_casemapped(&t, "ПРИВЕТ") && contains_casemapped("Straße", "STRASSE"));
        assert!(body_text(b"").is_empty() || body_text(b"").trim().is_empty());
    }
    #[test]
    fn qp_follows_rfc2045() {
        let enc = b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\nfoo_bar\r\n";
        assert_eq!(qp_decode(enc), b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo_bar\r\n");
        assert_eq!(qp_decode(b"a=3Db=ZZ"), b"a=b=ZZ");
    }

    #[test]
    fn undeclared_text_is_detected() {
        assert_eq!(undeclared("déjà".as_bytes()), "déjà");
        assert_eq!(undeclared(b"Gr\xfc\xdfe aus K\xf6ln, sch\xf6ne Gr\xfc\xdfe"), "Grüße aus Köln, schöne Grüße");
        assert_eq!(undeclared(b"\x1b$BF|K\\\x1b(B"), "日本");
        assert_eq!(to_utf8(Some("us-ascii"), b"caf\xe9"), "café");
        assert_eq!(to_utf8(Some("koi8-r"), b"\xf0\xd2\xc9\xd7\xc5\xd4"), "Привет");
        assert_eq!(to_utf8(Some("x-unknown"), "ok ü".as_bytes()), "ok ü");
    }

    #[test]
    fn parameters_in_every_form() {
        let p = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(
            param(&p(&[("filename*", "utf-8''%E6%97%A5%E6%9C%AC.pdf")]), "filename").as_deref(),
            Some("日本.pdf")
        );
        assert_eq!(
            param(&p(&[("filename*", "iso-8859-1'de'Gr%FC%DFe.txt")]), "FILENAME").as_deref(),
            Some("Grüße.txt")
        );
        assert_eq!(param(&p(&[("name", "=?koi8-r?B?8NLJ18XU?=.doc")]), "name").as_deref(), Some("Привет.doc"));
        assert_eq!(param(&p(&[("name", "plain.txt")]), "name").as_deref(), Some("plain.txt"));
        assert_eq!(param(&p(&[]), "name"), None);
    }

    #[test]
    fn search_text_only_when_raw_is_not_the_text() {
        let s = |m: &[u8]| search_text(m, &crate::MessageSummary::parse(m).root);
        assert_eq!(s(b"Subject: x\r\n\r\nplain \xc3\xa9\r\n"), None);
        assert_eq!(
            s(b"Content-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n").as_deref(),
            Some("ПРИВЕТ\r\n")
        );
        assert_eq!(s(b"Content-Transfer-Encoding: base64\r\n\r\nw6k=\r\n").as_deref(), Some("É"));
        assert_eq!(
            s(b"Content-Type: text/html\r\n\r\n<p>a &amp; b</p>\r\n").map(|t| t.trim().to_string()).as_deref(),
            Some("A & B")
        );
        assert_eq!(s(b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\r\n"), None);
    }

    #[test]
    fn previews() {
        const MSG: &[u8] = b"From: a@b\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\none\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n";
        let s = crate::MessageSummary::parse(MSG);
        assert_eq!(preview(MSG, &s.root), "one");
        let qp = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe,\r\n\r\n  das   ist=\r\n ein Test\r\n";
        let s = crate::MessageSummary::parse(qp);
        assert_eq!(preview(qp, &s.root), "Grüße, das ist ein Test");
        let html = b"Content-Type: text/html\r\n\r\n<html><body><p>Hello <b>there</b></p></body></html>\r\n";
        let s = crate::MessageSummary::parse(html);
        assert_eq!(preview(html, &s.root), "Hello there");
        let long = format!("Subject: x\r\n\r\n{}\r\n", "é".repeat(300));
        let s = crate::MessageSummary::parse(long.as_bytes());
        assert_eq!(preview(long.as_bytes(), &s.root).chars().count(), 256);
    }
}
