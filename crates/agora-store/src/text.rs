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
use mail_parser::{MessageParser, PartType};

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
/// is kept); whitespace between two adjacent encoded words is dropped. A word in an
/// unknown charset is kept as it was unless its bytes are UTF-8. The word scanner is
/// ours: mail-parser drops the last bytes of base64 words without padding, which real
/// mail has; the charsets are the library's.
pub fn decode_words(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut lit_start = 0;
    let mut after_word = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        // '=' is ASCII, so `i` is a char boundary here.
        if bytes[i] == b'='
            && bytes[i + 1] == b'?'
            && let Some((text, len)) = encoded_word(&s[i..])
        {
            let between = &s[lit_start..i];
            if !(after_word && between.chars().all(char::is_whitespace)) {
                out.push_str(between);
            }
            out.push_str(&text);
            i += len;
            lit_start = i;
            after_word = true;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[lit_start..]);
    out
}

/// `=?charset?B|Q?text?=` at the start of `s`: the decoded text and the word's length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
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
    let decoded = match decode(charset, &raw) {
        Some(d) => d,
        None => String::from_utf8(raw).ok()?,
    };
    // "=?" + charset + "?" + enc + "?" + text + "?="
    let len = 2 + q1 + 1 + enc.len_utf8() + 1 + end + 2;
    Some((decoded, len))
}

/// Padding is often wrong in the wild; accept it either way.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn q_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                out.push((hex(b[i + 1]) << 4) | hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Value of an ASCII hex digit (callers check `is_ascii_hexdigit` first).
fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => (c | 0x20).wrapping_sub(b'a').wrapping_add(10),
    }
}

/// The text of every text part of a message (text/plain as it is, text/html as
/// text), decoded from its transfer encoding and charset, parts separated by a line.
pub fn body_text(msg: &[u8]) -> String {
    let Some(m) = MessageParser::default().parse(msg) else { return String::new() };
    let mut out = String::new();
    for part in &m.parts {
        // Only leaf text parts; a message/rfc822 part's own parts are in the list too.
        let text = match &part.body {
            PartType::Text(t) => t.to_string(),
            PartType::Html(h) => html_text(h),
            _ => continue,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&text);
    }
    out
}

/// HTML as plain text (tags dropped, entities decoded), for search and previews.
pub fn html_text(html: &str) -> String {
    html_to_text(html)
}

/// The comparison form of text for i;unicode-casemap (RFC 5051): the full Unicode
/// upper-case mapping (so "ß" and "SS" are equal) rather than titlecase plus NFKD,
/// which would need normalisation tables; for most scripts the result is the same.
pub fn casemap(s: &str) -> String {
    s.chars().flat_map(char::to_uppercase).collect()
}

/// Whether `needle` occurs in `hay`, case-insensitively for all of Unicode.
pub fn contains_casemapped(hay: &str, needle: &str) -> bool {
    needle.is_empty() || casemap(hay).contains(&casemap(needle))
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
    }

    #[test]
    fn text_of_a_message() {
        let msg = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=F0=D2=C9=D7=C5=D4\r\n--b\r\nContent-Type: text/html; charset=shift_jis\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+k/qWezwvYj4=\r\n--b--\r\n";
        let t = body_text(msg);
        assert!(t.contains("Привет") && t.contains("日本") && !t.contains("<b>"), "{t}");
        assert!(contains_casemapped(&t, "ПРИВЕТ") && contains_casemapped("Straße", "STRASSE"));
        assert!(body_text(b"").is_empty() || body_text(b"").trim().is_empty());
    }
}
