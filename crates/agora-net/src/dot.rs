//! Dot-stuffing, the framing of multi-line blocks in text protocols (SMTP DATA, POP3
//! multi-line replies, NNTP articles): every line ends in CRLF, a line starting with
//! "." gets another in front, and a lone "." ends the block. Pure.

/// Appends `msg` as a dot-stuffed block: every line ends in CRLF (bare LF and CR are
/// repaired: a lone CR would end a line early for some readers), lines starting with
/// "." get another, then the terminating ".". With `body_lines`, only the header and
/// that many body lines (POP3 TOP). Returns how many dots were added in front of lines:
/// the block is then that many plus three bytes (".\r\n") longer than the message it
/// carries, as POP3's "+OK n octets" counts it.
pub fn stuff(msg: &[u8], body_lines: Option<u32>, out: &mut Vec<u8>) -> usize {
    out.reserve(msg.len() + msg.len() / 32 + 8);
    let mut in_body = false;
    let mut body_count = 0u32;
    let mut dots = 0;
    let mut rest = msg;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if in_body && let Some(max) = body_lines {
            if body_count >= max {
                break;
            }
            body_count += 1;
        }
        // Lone CRs go first, and only then is the line checked for a leading dot: "\r."
        // must not become an unstuffed "." that ends the block early.
        let kept: std::borrow::Cow<'_, [u8]> = if memchr::memchr(b'\r', line).is_some() {
            line.iter().copied().filter(|&b| b != b'\r').collect::<Vec<u8>>().into()
        } else {
            line.into()
        };
        if kept.first() == Some(&b'.') {
            out.push(b'.');
            dots += 1;
        }
        out.extend_from_slice(&kept);
        out.extend_from_slice(b"\r\n");
        if !in_body && line.is_empty() {
            in_body = true;
        }
    }
    out.extend_from_slice(b".\r\n");
    dots
}

/// One line of a dot-stuffed block as received.
#[derive(Debug, PartialEq, Eq)]
pub enum Unstuffed<'a> {
    /// The lone "." that ends the block.
    End,
    /// The line's content without its line end and without the stuffed dot.
    /// `bare_newline`: it did not end in CRLF, or held a CR or LF inside, which could
    /// smuggle a second message past a reader that splits lines differently.
    Line { content: &'a [u8], bare_newline: bool },
}

/// Reads one received line (as read, ending in LF).
pub fn unstuff(line: &[u8]) -> Unstuffed<'_> {
    if line == b".\r\n" {
        return Unstuffed::End;
    }
    let crlf = line.ends_with(b"\r\n");
    let content = if crlf { &line[..line.len() - 2] } else { line.strip_suffix(b"\n").unwrap_or(line) };
    let bare_newline = !crlf || content.contains(&b'\r') || content.contains(&b'\n');
    Unstuffed::Line { content: content.strip_prefix(b".").unwrap_or(content), bare_newline }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_repairs_line_ends_and_round_trips() {
        let mut out = Vec::new();
        let dots = stuff(b"Subject: x\n\n.hidden\r\nlone\rcr\nlast", None, &mut out);
        assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\nlonecr\r\nlast\r\n.\r\n");
        // The message as carried, CRLF throughout: "Subject: x\r\n\r\n.hidden\r\nlonecr\r\nlast\r\n".
        assert_eq!((dots, out.len() - dots - 3), (1, 37));
        let mut back = Vec::new();
        for line in out.split_inclusive(|&b| b == b'\n') {
            match unstuff(line) {
                Unstuffed::End => break,
                Unstuffed::Line { content, bare_newline } => {
                    assert!(!bare_newline);
                    back.extend_from_slice(content);
                    back.extend_from_slice(b"\r\n");
                }
            }
        }
        assert_eq!(back, b"Subject: x\r\n\r\n.hidden\r\nlonecr\r\nlast\r\n");
    }

    /// Found by the `dot` fuzz target: the dot check came before lone CRs were dropped,
    /// so a line "\r." went out as "." and ended a POP3 reply in the middle of a message.
    #[test]
    fn a_line_that_is_a_dot_after_its_lone_cr_is_dropped_is_still_stuffed() {
        let mut out = Vec::new();
        stuff(b"Subject: x\r\n\r\nbefore\r\n\r.\r\nafter\r\n", None, &mut out);
        assert_eq!(out, b"Subject: x\r\n\r\nbefore\r\n..\r\nafter\r\n.\r\n");
    }

    #[test]
    fn top_takes_the_header_and_some_body_lines() {
        let mut out = Vec::new();
        stuff(b"A: 1\r\n\r\none\r\ntwo\r\nthree\r\n", Some(2), &mut out);
        assert_eq!(out, b"A: 1\r\n\r\none\r\ntwo\r\n.\r\n");
    }

    #[test]
    fn bare_line_ends_are_flagged() {
        assert_eq!(unstuff(b".\r\n"), Unstuffed::End);
        assert_eq!(unstuff(b"..x\r\n"), Unstuffed::Line { content: b".x", bare_newline: false });
        for bad in [&b"x\n"[..], b"a\rb\r\n", b"x"] {
            assert!(matches!(unstuff(bad), Unstuffed::Line { bare_newline: true, .. }), "{bad:?}");
        }
    }
}
