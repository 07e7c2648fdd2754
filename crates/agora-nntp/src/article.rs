//! Articles a reader posts, checked and injected (RFC 5536 format, RFC 5537 §3.5
//! injection): the required header fields, the newsgroups, a Message-ID and Date made
//! when absent, Path, Injection-Date and Injection-Info added, and the poster taken
//! from the login — never from what the article says. Articles peers pass on are
//! checked for relaying: the fields every article has, and no loop through this server.

use crate::codec::is_message_id;

/// An article accepted for injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Lower-cased, in the order the article named them, without repeats.
    pub newsgroups: Vec<String>,
    pub message_id: String,
    /// The article as stored and passed on: added header fields first.
    pub article: Vec<u8>,
}

/// Who posts, as the session knows them.
#[derive(Debug, Clone)]
pub struct Poster<'a> {
    pub login: &'a str,
    /// Addresses the login may use in From (its own and those it may send as).
    pub addresses: &'a [String],
    pub ip: std::net::IpAddr,
}

/// Header fields an article may carry once only (RFC 5536 §3).
const SINGLE: &[&str] =
    &["from", "subject", "newsgroups", "message-id", "date", "path", "followup-to", "references", "sender"];
/// Header fields a poster may not set: the injecting agent writes them.
const REMOVED: &[&str] = &["injection-date", "injection-info", "nntp-posting-host", "nntp-posting-date", "xref"];

/// A newsgroup name (RFC 5536 §3.1.4): dot-separated components of letters, digits,
/// `+`, `-` and `_`.
pub fn is_newsgroup(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 497
        && name
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_')))
}

/// A Newsgroups field's names: lower-cased, in order, without repeats; Err names the
/// first malformed one.
fn newsgroup_list(value: &str) -> Result<Vec<String>, String> {
    let mut newsgroups: Vec<String> = Vec::new();
    for g in value.split(',').map(str::trim) {
        if !is_newsgroup(g) {
            return Err(format!("malformed newsgroup name {g:?}"));
        }
        let g = g.to_ascii_lowercase();
        if !newsgroups.contains(&g) {
            newsgroups.push(g);
        }
    }
    Ok(newsgroups)
}

/// The header fields of `head`, each as (name, whole field with its folding), in order.
fn fields(head: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let mut out: Vec<(String, &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end = head[i..].iter().position(|&b| b == b'\n').map_or(head.len(), |p| i + p + 1);
        let continuation = matches!(head[i], b' ' | b'\t');
        if !continuation && i > start {
            out.push(field(&head[start..i])?);
            start = i;
        } else if continuation && i == 0 {
            return Err("the header starts with a continuation line".into());
        }
        i = end;
    }
    if start < head.len() {
        out.push(field(&head[start..])?);
    }
    Ok(out)
}

fn field(raw: &[u8]) -> Result<(String, &[u8]), String> {
    let colon = raw.iter().position(|&b| b == b':').ok_or("a header line without a colon")?;
    let name = std::str::from_utf8(&raw[..colon]).map_err(|_| "a header name that is not ASCII")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("malformed header name {name:?}"));
    }
    Ok((name.to_ascii_lowercase(), raw))
}

/// A field's value, unfolded and trimmed.
fn value(raw: &[u8]) -> String {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(0);
    let text = String::from_utf8_lossy(&raw[colon + 1..]);
    text.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// An article's header fields and body, after the checks every article gets: its size,
/// an empty line after the header, well-formed fields, single fields once.
type Head<'a> = (Vec<(String, &'a [u8])>, &'a [u8]);

fn checked_head(raw: &[u8], max: usize) -> Result<Head<'_>, String> {
    if raw.len() > max {
        return Err(format!("article larger than {max} octets"));
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no empty line after the header")?;
    let (head, body) = (&raw[..split + 2], &raw[split + 4..]);
    let fields = fields(head)?;
    for single in SINGLE {
        if fields.iter().filter(|(n, _)| n == single).count() > 1 {
            return Err(format!("more than one {single} header field"));
        }
    }
    Ok((fields, body))
}

/// Checks and injects a posted article (dot-unstuffed, CRLF line ends). `server` is
/// this server's name (Path and Injection-Info); `now` Unix seconds; `max` the
/// largest article accepted. Err: the reason, for a 441.
pub fn inject(raw: &[u8], poster: &Poster<'_>, server: &str, now: i64, max: usize) -> Result<Injected, String> {
    let (fields, body) = checked_head(raw, max)?;
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, raw)| value(raw));
    for required in ["from", "subject", "newsgroups"] {
        if get(required).is_none_or(|v| v.is_empty()) {
            return Err(format!("no {required} header field"));
        }
    }
    if get("injection-info").is_some() {
        return Err("already injected (it has an Injection-Info field)".into());
    }
    let newsgroups = newsgroup_list(&get("newsgroups").unwrap_or_default())?;
    let message_id = match get("message-id") {
        Some(id) if is_message_id(&id) && id.contains('@') => id,
        Some(id) => return Err(format!("malformed Message-ID {id:?}")),
        None => new_message_id(server, now),
    };
    let from = mail_parser::MessageParser::default()
        .parse_headers(&raw[..raw.len() - body.len()])
        .and_then(|m| m.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_ascii_lowercase))
        .filter(|a| a.contains('@'))
        .ok_or("the From field names no address")?;

    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 256);
    let mut add = |line: String| {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let path = get("path").filter(|p| !p.is_empty()).map_or_else(|| "not-for-mail".to_string(), |p| p.to_string());
    add(format!("Path: {server}!{path}"));
    if get("message-id").is_none() {
        add(format!("Message-ID: {message_id}"));
    }
    if get("date").is_none() {
        add(format!("Date: {}", agora_store::time::rfc5322_date(now)));
    }
    add(format!("Injection-Date: {}", agora_store::time::rfc5322_date(now)));
    add(format!("Injection-Info: {server}; posting-account=\"{}\"; posting-host=\"{}\"", poster.login, poster.ip));
    // The poster may write any From; one it may not use gets the login as Sender.
    let own =
        from == poster.login.to_ascii_lowercase() || poster.addresses.iter().any(|a| a.eq_ignore_ascii_case(&from));
    if !own {
        add(format!("Sender: {}", poster.login));
    }
    for (name, raw) in &fields {
        let replaced = name == "path" || (name == "sender" && !own);
        if !REMOVED.contains(&name.as_str()) && !replaced {
            out.extend_from_slice(raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Injected { newsgroups, message_id, article: out })
}

/// An article a peer passed on, checked for relaying (RFC 5537 §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub newsgroups: Vec<String>,
    /// The path identities it already went through, newest first.
    pub path: Vec<String>,
    /// It carries an Approved field (a moderator let it into a moderated group).
    pub approved: bool,
    /// The article with this server prepended to its Path.
    pub article: Vec<u8>,
}

/// Checks an article offered under `offered_id` by a peer: the fields every article
/// has, the same Message-ID, and no loop (`server` already in its Path). Err: the
/// reason, for a 437 or 439.
pub fn relay(raw: &[u8], offered_id: &str, server: &str, max: usize) -> Result<Relayed, String> {
    let (fields, body) = checked_head(raw, max)?;
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, raw)| value(raw));
    for required in ["from", "date", "newsgroups", "subject", "message-id", "path"] {
        if get(required).is_none_or(|v| v.is_empty()) {
            return Err(format!("no {required} header field"));
        }
    }
    if get("message-id").as_deref() != Some(offered_id) {
        return Err("the Message-ID is not the one offered".into());
    }
    let path_value = get("path").unwrap_or_default();
    let path: Vec<String> = path_value
        .split('!')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty() && !p.starts_with('.'))
        .collect();
    if path.iter().any(|p| p.eq_ignore_ascii_case(server)) {
        return Err(format!("loop: {server} is already in its Path"));
    }
    let newsgroups = newsgroup_list(&get("newsgroups").unwrap_or_default())?;
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + server.len() + 16);
    out.extend_from_slice(format!("Path: {server}!{path_value}\r\n").as_bytes());
    for (name, raw) in &fields {
        if name != "path" && name != "xref" {
            out.extend_from_slice(raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Relayed { newsgroups, path, approved: get("approved").is_some(), article: out })
}

/// Whether an article's header has the field `name` (any case).
pub fn has_field(article: &[u8], name: &str) -> bool {
    let head = &article[..header_len(article)];
    fields(head).is_ok_and(|f| f.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
}

/// The article without every `name` field (folded lines included).
pub fn without_field(article: &[u8], name: &str) -> Vec<u8> {
    let split = header_len(article);
    let Ok(fields) = fields(&article[..split]) else { return article.to_vec() };
    let mut out = Vec::with_capacity(article.len());
    for (n, raw) in &fields {
        if !n.eq_ignore_ascii_case(name) {
            out.extend_from_slice(raw);
        }
    }
    out.extend_from_slice(&article[split..]);
    out
}

/// The article with `line` (a whole field, without its CRLF) as its first field.
pub fn with_field(article: &[u8], line: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(article.len() + line.len() + 2);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(article);
    out
}

/// The header's length, up to (not including) the empty line.
fn header_len(article: &[u8]) -> usize {
    article
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| article.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(article.len())
}

/// The Date field as Unix seconds, when there is one that parses.
pub fn date(article: &[u8]) -> Option<i64> {
    let head = &article[..header_len(article)];
    let fields = fields(head).ok()?;
    let (_, raw) = fields.iter().find(|(n, _)| n == "date")?;
    mail_parser::DateTime::parse_rfc822(&value(raw)).map(|d| d.to_timestamp())
}

fn new_message_id(server: &str, now: i64) -> String {
    let mut r = [0u8; 9];
    if getrandom::fill(&mut r).is_err() {
        // No randomness: the time and a counter still keep ids apart in this process.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        r[..8].copy_from_slice(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    }
    let tail = agora_store::blob::hex(&r);
    format!("<{now:x}.{tail}@{server}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poster() -> Poster<'static> {
        static ADDR: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        Poster {
            login: "alice@example.org",
            addresses: ADDR.get_or_init(|| vec!["sales@example.org".into()]),
            ip: "192.0.2.5".parse().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        }
    }

    fn post(text: &str) -> Result<Injected, String> {
        inject(text.as_bytes(), &poster(), "news.example.org", 1_796_169_600, 1 << 20)
    }

    #[test]
    fn a_plain_post_is_completed() {
        let p = post("From: Alice <alice@example.org>\r\nNewsgroups: Agora.Test, agora.test,agora.other\r\nSubject: hi\r\n\r\nbody\r\n")
            .unwrap();
        assert_eq!(p.newsgroups, vec!["agora.test", "agora.other"]);
        assert!(p.message_id.ends_with("@news.example.org>") && is_message_id(&p.message_id));
        let text = String::from_utf8(p.article).unwrap();
        assert!(text.starts_with("Path: news.example.org!not-for-mail\r\nMessage-ID: <"), "{text}");
        assert!(text.contains("Date: Wed, 2 Dec 2026 00:00:00 +0000\r\n"), "{text}");
        assert!(text.contains(
            "Injection-Info: news.example.org; posting-account=\"alice@example.org\"; posting-host=\"192.0.2.5\"\r\n"
        ));
        assert!(!text.contains("Sender:"), "{text}");
        assert!(text.ends_with("Subject: hi\r\n\r\nbody\r\n"), "{text}");
    }

    #[test]
    fn the_poster_is_the_login() {
        let p = post("From: boss@example.org\r\nSender: boss@example.org\r\nNewsgroups: a.b\r\nSubject: s\r\nMessage-ID: <x@y>\r\nPath: somewhere\r\nXref: forged 1\r\nNNTP-Posting-Host: forged\r\n\r\nb\r\n")
            .unwrap();
        let text = String::from_utf8(p.article).unwrap();
        assert_eq!(p.message_id, "<x@y>");
        assert!(text.contains("Sender: alice@example.org\r\n") && !text.contains("Sender: boss"), "{text}");
        assert!(text.starts_with("Path: news.example.org!somewhere\r\n"), "{text}");
        assert!(!text.contains("forged") && !text.contains("Path: somewhere"), "{text}");
        // An address the login may use needs no Sender.
        let p = post("From: sales@example.org\r\nNewsgroups: a.b\r\nSubject: s\r\n\r\nb\r\n").unwrap();
        assert!(!String::from_utf8(p.article).unwrap().contains("Sender:"));
    }

    #[test]
    fn malformed_articles_are_refused() {
        for (text, why) in [
            ("Newsgroups: a.b\r\nSubject: s\r\n\r\nb\r\n", "no from"),
            ("From: a@b\r\nSubject: s\r\n\r\nb\r\n", "no newsgroups"),
            ("From: a@b\r\nNewsgroups: a.b\r\n\r\nb\r\n", "no subject"),
            ("From: a@b\r\nNewsgroups: a..b\r\nSubject: s\r\n\r\nb\r\n", "malformed newsgroup"),
            ("From: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\nSubject: t\r\n\r\nb\r\n", "more than one subject"),
            ("From: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\nMessage-ID: <nohost>\r\n\r\nb\r\n", "malformed message-id"),
            ("From: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\nInjection-Info: x\r\n\r\nb\r\n", "already injected"),
            ("From: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\n", "no empty line"),
            (" folded\r\nFrom: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\n\r\nb\r\n", "continuation"),
            ("From: nobody\r\nNewsgroups: a.b\r\nSubject: s\r\n\r\nb\r\n", "names no address"),
        ] {
            let err = post(text).expect_err(why);
            assert!(err.to_ascii_lowercase().contains(why), "{why}: {err}");
        }
        let big = format!("From: a@b\r\nNewsgroups: a.b\r\nSubject: s\r\n\r\n{}", "x".repeat(2 << 20));
        assert!(post(&big).unwrap_err().contains("larger than"));
    }

    #[test]
    fn relayed_articles() {
        let a = "Path: inn.test!not-for-mail\r\nFrom: a@b\r\nDate: Wed, 2 Dec 2026 00:00:00 +0000\r\nNewsgroups: Agora.Test\r\nSubject: s\r\nMessage-ID: <m@inn.test>\r\nXref: inn.test agora.test:5\r\n\r\nbody\r\n";
        let r = relay(a.as_bytes(), "<m@inn.test>", "agora.test", 1 << 20).unwrap();
        assert_eq!(r.newsgroups, vec!["agora.test"]);
        assert_eq!(r.path, vec!["inn.test", "not-for-mail"]);
        assert!(!r.approved);
        let text = String::from_utf8(r.article).unwrap();
        assert!(text.starts_with("Path: agora.test!inn.test!not-for-mail\r\nFrom: a@b\r\n"), "{text}");
        assert!(!text.contains("Xref") && text.ends_with("\r\n\r\nbody\r\n"), "{text}");
        assert!(
            relay(a.as_bytes(), "<other@inn.test>", "agora.test", 1 << 20).unwrap_err().contains("not the one offered")
        );
        assert!(relay(a.as_bytes(), "<m@inn.test>", "INN.test", 1 << 20).unwrap_err().contains("loop"));
        let no_date = a.replace("Date: Wed, 2 Dec 2026 00:00:00 +0000\r\n", "");
        assert!(relay(no_date.as_bytes(), "<m@inn.test>", "agora.test", 1 << 20).unwrap_err().contains("no date"));
        let approved = a.replace("Subject: s\r\n", "Subject: s\r\nApproved: mod@b\r\n");
        assert!(relay(approved.as_bytes(), "<m@inn.test>", "agora.test", 1 << 20).unwrap().approved);
    }

    #[test]
    fn fields_added_and_removed() {
        let a = b"From: a@b\r\nApproved: x@y,\r\n  z@w\r\nSubject: s\r\nDate: Wed, 2 Dec 2026 00:00:00 +0000\r\n\r\nApproved: in the body\r\n";
        assert!(has_field(a, "APPROVED") && !has_field(a, "sender"));
        let stripped = without_field(a, "approved");
        assert_eq!(
            stripped,
            b"From: a@b\r\nSubject: s\r\nDate: Wed, 2 Dec 2026 00:00:00 +0000\r\n\r\nApproved: in the body\r\n"
                .to_vec()
        );
        assert!(with_field(&stripped, "Approved: m@b").starts_with(b"Approved: m@b\r\nFrom: a@b\r\n"));
        assert_eq!(date(a), Some(1_796_169_600));
        assert_eq!(date(b"From: a\r\n\r\n"), None);
    }

    #[test]
    fn folded_fields_stay_whole() {
        let p = post("From: a@b\r\nNewsgroups: a.b,\r\n  c.d\r\nSubject: a long\r\n\tsubject\r\n\r\nb\r\n").unwrap();
        assert_eq!(p.newsgroups, vec!["a.b", "c.d"]);
        assert!(String::from_utf8(p.article).unwrap().contains("Subject: a long\r\n\tsubject\r\n"));
    }
}
