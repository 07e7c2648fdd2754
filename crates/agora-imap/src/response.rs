//! IMAP response data, pure: strings (quoted or literal), ENVELOPE with RFC 5322
//! address parsing, BODY/BODYSTRUCTURE from the part tree cached at delivery, dates.

use agora_store::address::{Address, parse_addresses};
use agora_store::{EnvelopeFields, Part};

/// The refusal of a charset this server does not convert, naming the common ones it does.
pub fn bad_charset(tag: &str) -> String {
    format!("{tag} NO [BADCHARSET ({})] Unsupported charset\r\n", agora_store::text::COMMON_CHARSETS.join(" "))
}

/// Appends `s` as an IMAP string: quoted when it can be, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024 && s.iter().all(|&b| b != b'\r' && b != b'\n' && b != 0 && b < 0x80);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// Appends `data` as a literal, whatever it holds (message bodies and sections).
pub fn literal(out: &mut Vec<u8>, data: &[u8]) {
    // Data with NUL can only travel as literal8 (RFC 3516 §4.2).
    let eight = if data.contains(&0) { "~" } else { "" };
    out.extend_from_slice(format!("{eight}{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
}

/// A string, or NIL.
pub fn nstring(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn address_list(out: &mut Vec<u8>, value: Option<&str>) {
    let addrs = value.map(parse_addresses).unwrap_or_default();
    if addrs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in addrs {
        out.push(b'(');
        match a {
            Address::Mailbox { name, route, mailbox, host } => {
                nstring(out, name.as_deref());
                out.push(b' ');
                nstring(out, route.as_deref());
                out.push(b' ');
                nstring(out, mailbox.as_deref());
                out.push(b' ');
                nstring(out, host.as_deref());
            }
            Address::GroupStart(g) => {
                out.extend_from_slice(b"NIL NIL ");
                string(out, g.as_bytes());
                out.extend_from_slice(b" NIL");
            }
            Address::GroupEnd => out.extend_from_slice(b"NIL NIL NIL NIL"),
        }
        out.push(b')');
    }
    out.push(b')');
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !parse_addresses(s).is_empty())
}

/// ENVELOPE: date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id.
/// Sender and Reply-To default to From (RFC 9051 §7.5.2).
pub fn envelope(out: &mut Vec<u8>, e: &EnvelopeFields) {
    let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    out.push(b'(');
    nstring(out, text(&e.date).as_deref());
    out.push(b' ');
    nstring(out, text(&e.subject).as_deref());
    out.push(b' ');
    address_list(out, e.from.as_deref());
    out.push(b' ');
    address_list(out, nonempty(&e.sender).or(e.from.as_deref()));
    out.push(b' ');
    address_list(out, nonempty(&e.reply_to).or(e.from.as_deref()));
    for v in [&e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        address_list(out, v.as_deref());
    }
    out.push(b' ');
    nstring(out, text(&e.in_reply_to).as_deref());
    out.push(b' ');
    nstring(out, text(&e.message_id).as_deref());
    out.push(b')');
}

fn params(out: &mut Vec<u8>, ps: &[(String, String)]) {
    if ps.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in ps.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

fn disposition(out: &mut Vec<u8>, d: &Option<(String, Vec<(String, String)>)>) {
    match d {
        Some((kind, ps)) if !kind.is_empty() => {
            out.push(b'(');
            string(out, kind.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            params(out, ps);
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
}

fn language(out: &mut Vec<u8>, l: &Option<String>) {
    let langs: Vec<&str> =
        l.as_deref().map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).collect()).unwrap_or_default();
    match langs.len() {
        0 => out.extend_from_slice(b"NIL"),
        1 => string(out, langs[0].as_bytes()),
        _ => {
            out.push(b'(');
            for (i, x) in langs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, x.as_bytes());
            }
            out.push(b')');
        }
    }
}

/// BODY (`extensible` false) or BODYSTRUCTURE (true) of `part`.
pub fn body_structure(out: &mut Vec<u8>, part: &Part, extensible: bool) {
    out.push(b'(');
    if part.media_type == "multipart" {
        if part.children.is_empty() {
            // A multipart must hold a part: describe one empty text part, as Dovecot does.
            out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0");
            out.extend_from_slice(if extensible { b" NIL NIL NIL NIL)" } else { b")" });
        }
        for c in &part.children {
            body_structure(out, c, extensible);
        }
        out.push(b' ');
        string(out, part.media_subtype.to_ascii_uppercase().as_bytes());
        if extensible {
            out.push(b' ');
            params(out, &part.params);
            out.push(b' ');
            disposition(out, &part.disposition);
            out.push(b' ');
            language(out, &part.language);
            out.push(b' ');
            nstring(out, part.location.as_deref());
        }
        out.push(b')');
        return;
    }
    string(out, part.media_type.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    string(out, part.media_subtype.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    if part.params.is_empty() && part.media_type == "text" {
        out.extend_from_slice(b"(\"CHARSET\" \"us-ascii\")");
    } else {
        params(out, &part.params);
    }
    out.push(b' ');
    nstring(out, part.id.as_deref());
    out.push(b' ');
    nstring(out, part.description.as_deref());
    out.push(b' ');
    let enc = part.encoding.as_deref().map(|e| e.to_ascii_uppercase()).unwrap_or_else(|| "7BIT".into());
    string(out, enc.as_bytes());
    out.push(b' ');
    out.extend_from_slice(part.end.saturating_sub(part.body_start).to_string().as_bytes());
    if part.media_type == "message" && (part.media_subtype == "rfc822" || part.media_subtype == "global") {
        out.push(b' ');
        envelope(out, part.inner_envelope.as_deref().unwrap_or(&EnvelopeFields::default()));
        out.push(b' ');
        match part.children.first() {
            Some(inner) => body_structure(out, inner, extensible),
            None => out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)"),
        }
        out.push(b' ');
        out.extend_from_slice(part.lines.to_string().as_bytes());
    } else if part.media_type == "text" {
        out.push(b' ');
        out.extend_from_slice(part.lines.to_string().as_bytes());
    }
    if extensible {
        out.push(b' ');
        nstring(out, part.md5.as_deref());
        out.push(b' ');
        disposition(out, &part.disposition);
        out.push(b' ');
        language(out, &part.language);
        out.push(b' ');
        nstring(out, part.location.as_deref());
    }
    out.push(b')');
}

/// INTERNALDATE as IMAP writes it: `"17-Jul-1996 02:44:25 +0000"`.
pub fn internal_date(secs: i64) -> String {
    use agora_store::time;
    let (year, month, d, h, m, s) = time::split(secs);
    format!("\"{d:02}-{}-{year} {h:02}:{m:02}:{s:02} +0000\"", time::MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_store::MessageSummary;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings() {
        assert_eq!(s(|o| string(o, b"a \"b\" \\c")), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(s(|o| string(o, b"two\r\nlines")), "{10}\r\ntwo\r\nlines");
        assert_eq!(s(|o| string(o, "é".as_bytes())), "{2}\r\né");
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
    }

    #[test]
    fn a_multipart_without_parts_still_holds_one() {
        let m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno parts at all\r\n";
        let root = MessageSummary::parse(m).root;
        assert_eq!(
            s(|o| body_structure(o, &root, true)),
            "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0 NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"x\") NIL NIL NIL)"
        );
        assert_eq!(
            s(|o| body_structure(o, &root, false)),
            "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0) \"MIXED\")"
        );
    }

    /// The imaptest scripts hold Dovecot's answers: where they are present, the
    /// envelope and body structure of every test message must match them.
    fn imaptest_dir() -> Option<std::path::PathBuf> {
        let dir = std::env::var_os("IMAPTEST_TESTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/imaptest/tests"));
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("imaptest scripts not found (set IMAPTEST_TESTS): comparison skipped");
            None
        }
    }

    /// Messages of an mbox file, with CRLF line ends as APPEND would store them.
    fn mbox(text: &str) -> Vec<Vec<u8>> {
        let mut msgs: Vec<String> = Vec::new();
        for line in text.split_inclusive('\n') {
            if line.starts_with("From ") {
                msgs.push(String::new());
            } else if let Some(m) = msgs.last_mut() {
                m.push_str(line);
            }
        }
        msgs.into_iter()
            .map(|m| {
                let m = m.strip_suffix('\n').map(str::to_string).unwrap_or(m);
                m.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
            })
            .collect()
    }

    fn expected(script: &str, item: &str) -> Vec<String> {
        script
            .lines()
            .filter_map(|l| {
                l.strip_prefix("* ")
                    .and_then(|l| l.split_once(&format!(" FETCH ({item} ")))
                    .map(|(_, v)| v.strip_suffix(')').unwrap_or(v).to_string())
            })
            .collect()
    }

    #[test]
    fn envelopes_match_imaptest() {
        let Some(dir) = imaptest_dir() else { return };
        let script = std::fs::read_to_string(dir.join("fetch-envelope")).unwrap();
        let msgs = mbox(&std::fs::read_to_string(dir.join("fetch-envelope.mbox")).unwrap());
        let want = expected(&script, "ENVELOPE");
        assert_eq!(want.len(), msgs.len());
        for (m, w) in msgs.iter().zip(want) {
            let got = s(|o| envelope(o, &MessageSummary::parse(m).envelope));
            assert_eq!(got.to_ascii_lowercase(), w.to_ascii_lowercase());
        }
    }

    #[test]
    fn body_structures_match_imaptest() {
        let Some(dir) = imaptest_dir() else { return };
        let script = std::fs::read_to_string(dir.join("fetch-bodystructure")).unwrap();
        let msgs = mbox(&std::fs::read_to_string(dir.join("fetch-bodystructure.mbox")).unwrap());
        let want = expected(&script, "BODY");
        assert_eq!(want.len(), msgs.len());
        for (m, w) in msgs.iter().zip(want) {
            let got = s(|o| body_structure(o, &MessageSummary::parse(m).root, false));
            assert_eq!(got.to_ascii_lowercase(), w.to_ascii_lowercase());
        }
    }
}
