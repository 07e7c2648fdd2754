//! The Sieve lexer (RFC 5228 §8.1): identifiers, tags, numbers with K/M/G, quoted and
//! multi-line strings, the punctuation, and both kinds of comment.

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Ident(String),
    Tag(String),
    Number(u64),
    Str(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Semicolon,
}

/// A token and the line it starts on.
pub(crate) type Spanned = (Tok, usize);

pub(crate) fn lex(text: &str) -> Result<Vec<Spanned>, Error> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut out = Vec::new();
    let err = |line: usize, m: &str| Error { line, message: m.to_string() };
    while i < b.len() {
        let c = b[i];
        let start = line;
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(err(start, "unterminated comment"));
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'[' | b']' | b'(' | b')' | b'{' | b'}' | b',' | b';' => {
                out.push((
                    match c {
                        b'[' => Tok::LBracket,
                        b']' => Tok::RBracket,
                        b'(' => Tok::LParen,
                        b')' => Tok::RParen,
                        b'{' => Tok::LBrace,
                        b'}' => Tok::RBrace,
                        b',' => Tok::Comma,
                        _ => Tok::Semicolon,
                    },
                    start,
                ));
                i += 1;
            }
            b'"' => {
                i += 1;
                let mut s = Vec::new();
                loop {
                    match b.get(i) {
                        None => return Err(err(start, "unterminated string")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        // Any escaped character stands for itself (§2.4.2).
                        Some(b'\\') if i + 1 < b.len() => {
                            if b[i + 1] == b'\n' {
                                line += 1;
                            }
                            s.push(b[i + 1]);
                            i += 2;
                        }
                        Some(&ch) => {
                            // A line break inside a string is CRLF, as in mail (§2.4.2).
                            if ch == b'\n' {
                                line += 1;
                                if s.last() != Some(&b'\r') {
                                    s.push(b'\r');
                                }
                            }
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(String::from_utf8_lossy(&s).into_owned()), start));
            }
            b':' => {
                let (id, n) = ident(&b[i + 1..]);
                if id.is_empty() {
                    return Err(err(start, "a tag needs a name after ':'"));
                }
                out.push((Tok::Tag(id.to_ascii_lowercase()), start));
                i += 1 + n;
            }
            b'0'..=b'9' => {
                let mut v: u64 = 0;
                while i < b.len() && b[i].is_ascii_digit() {
                    v = v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b[i] - b'0')))
                        .ok_or(err(start, "number too large"))?;
                    i += 1;
                }
                let mult = match b.get(i).map(u8::to_ascii_uppercase) {
                    Some(b'K') => 1 << 10,
                    Some(b'M') => 1 << 20,
                    Some(b'G') => 1 << 30,
                    _ => 1,
                };
                if mult > 1 {
                    i += 1;
                }
                out.push((Tok::Number(v.checked_mul(mult).ok_or(err(start, "number too large"))?), start));
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let (id, n) = ident(&b[i..]);
                i += n;
                if id.eq_ignore_ascii_case("text") && b.get(i) == Some(&b':') {
                    i += 1;
                    let (s, lines, used) = multiline(&b[i..]).ok_or(err(start, "unterminated text: block"))?;
                    i += used;
                    line += lines;
                    out.push((Tok::Str(s), start));
                } else {
                    out.push((Tok::Ident(id.to_ascii_lowercase()), start));
                }
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(start, &format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

fn ident(b: &[u8]) -> (String, usize) {
    let n = b
        .iter()
        .enumerate()
        .take_while(|(k, c)| c.is_ascii_alphabetic() || **c == b'_' || (*k > 0 && c.is_ascii_digit()))
        .count();
    (String::from_utf8_lossy(&b[..n]).into_owned(), n)
}

/// `text:` then optional spaces and a comment to the end of the line, then lines up to
/// one holding only "."; a leading ".." stands for "." (§2.4.2). Lines end in CRLF
/// whatever the script was saved with, as in quoted strings. Returns the text, the
/// line breaks passed and the bytes used.
fn multiline(b: &[u8]) -> Option<(String, usize, usize)> {
    let mut i = 0;
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if b.get(i) == Some(&b'#') {
        while i < b.len() && b[i] != b'\n' {
            i += 1;
        }
    }
    if b.get(i) == Some(&b'\r') {
        i += 1;
    }
    if b.get(i) != Some(&b'\n') {
        return None;
    }
    i += 1;
    let mut lines = 1;
    let mut out = Vec::new();
    loop {
        let end = b[i..].iter().position(|&c| c == b'\n').map(|p| i + p)?;
        let mut l = &b[i..end];
        let cr = l.last() == Some(&b'\r');
        if cr {
            l = &l[..l.len() - 1];
        }
        lines += 1;
        i = end + 1;
        if l == b"." {
            break;
        }
        let l = if l.starts_with(b"..") { &l[1..] } else { l };
        out.extend_from_slice(l);
        let _ = cr;
        out.extend_from_slice(b"\r\n");
    }
    Some((String::from_utf8_lossy(&out).into_owned(), lines, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = lex("if header :contains \"subject\" [\"a\\\"b\", \"c\"] { fileinto \"x\"; } # c\n/* x\ny */ 10K")
            .expect("lexes");
        let toks: Vec<Tok> = t.into_iter().map(|(t, _)| t).collect();
        assert_eq!(toks[0], Tok::Ident("if".into()));
        assert_eq!(toks[2], Tok::Tag("contains".into()));
        assert_eq!(toks[5], Tok::Str("a\"b".into()));
        assert_eq!(*toks.last().expect("some"), Tok::Number(10240));
    }

    #[test]
    fn multiline_strings() {
        let t = lex("vacation text: # here\r\nline one\r\n..dot\r\n.\r\n;\nstop;").expect("lexes");
        assert_eq!(t[1], (Tok::Str("line one\r\n.dot\r\n".into()), 1));
        assert_eq!(t[3], (Tok::Ident("stop".into()), 6));
        assert!(lex("x text:\nno end").is_err());
        assert!(lex("\"open").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("99999999999999999999").is_err());
    }
}
