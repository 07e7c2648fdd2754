//! Address lists (RFC 5322 with the obsolete forms real mail has): one parser for
//! every service. It is ours because IMAP's ENVELOPE needs the parts exactly as
//! written (encoded words and punycode kept), which the libraries do not give;
//! [`display`] gives the same addresses as people read them (names decoded, IDN
//! domains in Unicode).

/// One element of an ENVELOPE address list (RFC 9051 §7.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Mailbox { name: Option<String>, route: Option<String>, mailbox: Option<String>, host: Option<String> },
    GroupStart(String),
    GroupEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Comment(String),
    Literal(String),
    Special(char),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut q = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                q.push(n);
                            }
                        }
                        '\r' | '\n' => {}
                        _ => q.push(c),
                    }
                }
                out.push(Tok::Quoted(q));
            }
            '(' => {
                chars.next();
                let mut depth = 1;
                let mut q = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '(' => {
                            depth += 1;
                            q.push(c);
                        }
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                            q.push(c);
                        }
                        '\\' => {
                            if let Some(n) = chars.next() {
                                q.push(n);
                            }
                        }
                        _ => q.push(c),
                    }
                }
                out.push(Tok::Comment(q));
            }
            '[' => {
                let mut q = String::new();
                for c in chars.by_ref() {
                    q.push(c);
                    if c == ']' {
                        break;
                    }
                }
                out.push(Tok::Literal(q));
            }
            '<' | '>' | '@' | ',' | ';' | ':' | '.' => {
                chars.next();
                out.push(Tok::Special(c));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t\r\n\"()<>@,;:.[]".contains(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                if w.is_empty() {
                    // A stray ')' or ']': skipped, or the scan would stand still.
                    chars.next();
                } else {
                    out.push(Tok::Word(w));
                }
            }
        }
    }
    out
}

/// Parses an address-list header value into ENVELOPE address elements (raw parts).
pub fn parse_addresses(value: &str) -> Vec<Address> {
    let toks = tokenize(value);
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    // Words of the current phrase or local part, with the dots between them.
    let mut words: Vec<Tok> = Vec::new();
    let mut comment: Option<String> = None;
    let phrase = |words: &[Tok]| -> Option<String> {
        let parts: Vec<String> = words
            .iter()
            .filter_map(|t| match t {
                Tok::Word(w) | Tok::Quoted(w) => Some(w.clone()),
                Tok::Special('.') => Some(".".into()),
                _ => None,
            })
            .collect();
        if parts.is_empty() { None } else { Some(parts.join(" ").replace(" . ", ".").replace(" .", ".")) }
    };
    let local_part = |words: &[Tok]| -> String {
        words
            .iter()
            .map(|t| match t {
                Tok::Word(w) | Tok::Quoted(w) => w.clone(),
                Tok::Special('.') => ".".into(),
                _ => String::new(),
            })
            .collect()
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Special(':') if !in_group => {
                out.push(Address::GroupStart(phrase(&words).unwrap_or_default()));
                words.clear();
                comment = None;
                in_group = true;
                i += 1;
            }
            Tok::Special(';') => {
                if let Some(m) = bare_mailbox(&words, &local_part) {
                    out.push(m);
                }
                words.clear();
                comment = None;
                if in_group {
                    out.push(Address::GroupEnd);
                    in_group = false;
                }
                i += 1;
            }
            Tok::Special(',') => {
                if let Some(m) = bare_mailbox(&words, &local_part) {
                    out.push(m);
                }
                words.clear();
                comment = None;
                i += 1;
            }
            Tok::Special('<') => {
                // angle-addr: [route ":"] local "@" domain ">"
                let name = phrase(&words).or(comment.take());
                words.clear();
                i += 1;
                let mut route = None;
                if matches!(toks.get(i), Some(Tok::Special('@'))) {
                    let mut r = String::new();
                    while i < toks.len() && !matches!(toks[i], Tok::Special(':') | Tok::Special('>')) {
                        r.push_str(&tok_text(&toks[i]));
                        i += 1;
                    }
                    if matches!(toks.get(i), Some(Tok::Special(':'))) {
                        i += 1;
                    }
                    route = Some(r);
                }
                let mut local = Vec::new();
                while i < toks.len() && !matches!(toks[i], Tok::Special('@') | Tok::Special('>')) {
                    if !matches!(toks[i], Tok::Comment(_)) {
                        local.push(toks[i].clone());
                    }
                    i += 1;
                }
                let mut host = None;
                if matches!(toks.get(i), Some(Tok::Special('@'))) {
                    i += 1;
                    let mut h = String::new();
                    while i < toks.len() && !matches!(toks[i], Tok::Special('>')) {
                        if !matches!(toks[i], Tok::Comment(_)) {
                            h.push_str(&tok_text(&toks[i]));
                        }
                        i += 1;
                    }
                    host = Some(h);
                }
                if matches!(toks.get(i), Some(Tok::Special('>'))) {
                    i += 1;
                }
                let mailbox = local_part(&local);
                if !mailbox.is_empty() || host.is_some() {
                    out.push(Address::Mailbox { name, route, mailbox: Some(mailbox), host });
                }
                // Skip to the end of this address.
                while i < toks.len() && !matches!(toks[i], Tok::Special(',') | Tok::Special(';')) {
                    i += 1;
                }
            }
            Tok::Special('@') => {
                // addr-spec: the words so far are the local part.
                let mailbox = local_part(&words);
                words.clear();
                i += 1;
                let mut h = String::new();
                while i < toks.len() && !matches!(toks[i], Tok::Special(',') | Tok::Special(';')) {
                    match &toks[i] {
                        Tok::Comment(c) => comment = Some(c.clone()),
                        t => h.push_str(&tok_text(t)),
                    }
                    i += 1;
                }
                let name = comment.take().map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
                out.push(Address::Mailbox { name, route: None, mailbox: Some(mailbox), host: Some(h) });
            }
            Tok::Comment(c) => {
                comment = Some(c.clone());
                i += 1;
            }
            t => {
                words.push(t.clone());
                i += 1;
            }
        }
    }
    if let Some(m) = bare_mailbox(&words, &local_part) {
        out.push(m);
    }
    if in_group {
        out.push(Address::GroupEnd);
    }
    out
}

/// An address as people read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The display name (or the comment that stands for it), encoded words decoded.
    pub name: Option<String>,
    /// `local@domain` with the domain in Unicode; the bare local part when there is no
    /// domain; empty for a group without members.
    pub address: String,
    /// The group the address is listed under, decoded.
    pub group: Option<String>,
}

impl Shown {
    /// The name when there is one, else the address (RFC 5957's display form).
    pub fn label(&self) -> &str {
        match self.name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ if self.address.is_empty() => self.group.as_deref().unwrap_or(""),
            _ => &self.address,
        }
    }
}

/// The addresses of a header value as people read them; a group without members is one
/// entry with an empty address, so "undisclosed-recipients:;" still shows.
pub fn display(value: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut group: Option<(String, bool)> = None;
    for a in parse_addresses(value) {
        match a {
            Address::GroupStart(g) => group = Some((crate::text::decode_words(&g).trim().to_string(), false)),
            Address::GroupEnd => {
                if let Some((g, false)) = group.take() {
                    out.push(Shown { name: None, address: String::new(), group: Some(g) });
                }
            }
            Address::Mailbox { name, mailbox, host, .. } => {
                let name = name.map(|n| crate::text::decode_words(&n).trim().to_string()).filter(|n| !n.is_empty());
                let local = quote_local(mailbox.as_deref().unwrap_or(""));
                let address = match host.as_deref().filter(|h| !h.is_empty()) {
                    Some(h) => format!("{local}@{}", unicode_domain(h)),
                    None => local,
                };
                if let Some(g) = group.as_mut() {
                    g.1 = true;
                }
                out.push(Shown { name, address, group: group.as_ref().map(|g| g.0.clone()) });
            }
        }
    }
    out
}

/// The display form of the first address of a header value (SORT=DISPLAY, lists); a
/// group shows as its name, as clients show it.
pub fn first_label(value: &str) -> String {
    match display(value).into_iter().next() {
        Some(Shown { group: Some(g), .. }) => g,
        Some(s) => s.label().to_string(),
        None => String::new(),
    }
}

/// A domain as people read it: A-labels (`xn--`) turned into Unicode when they are valid.
pub fn unicode_domain(host: &str) -> String {
    if !host.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"xn--")) {
        return host.to_string();
    }
    match idna::domain_to_unicode(host) {
        (u, Ok(())) => u,
        _ => host.to_string(),
    }
}

/// A local part that needs quoting to be read back as one (spaces, specials) gets it.
fn quote_local(local: &str) -> String {
    let plain = |c: char| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if !local.is_empty()
        && local.chars().all(plain)
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
    {
        return local.to_string();
    }
    let mut q = String::with_capacity(local.len() + 2);
    q.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) | Tok::Quoted(w) | Tok::Literal(w) => w.clone(),
        Tok::Comment(_) => String::new(),
        Tok::Special(c) => c.to_string(),
    }
}

/// Words left without '@' (e.g. "undisclosed-recipients"): a mailbox with no host.
fn bare_mailbox(words: &[Tok], local_part: &dyn Fn(&[Tok]) -> String) -> Option<Address> {
    if words.is_empty() {
        return None;
    }
    Some(Address::Mailbox { name: None, route: None, mailbox: Some(local_part(words)), host: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = parse_addresses("\"Doe, John\" <john@x.org>, jane@y.org (Jane), <@r1,@r2:u@h>");
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0],
            Address::Mailbox {
                name: Some("Doe, John".into()),
                route: None,
                mailbox: Some("john".into()),
                host: Some("x.org".into())
            }
        );
        assert_eq!(
            a[1],
            Address::Mailbox {
                name: Some("Jane".into()),
                route: None,
                mailbox: Some("jane".into()),
                host: Some("y.org".into())
            }
        );
        assert!(matches!(&a[2], Address::Mailbox { route: Some(r), .. } if r == "@r1,@r2"));
        assert!(parse_addresses("").is_empty());
        for junk in ["<<<", "@@", "a:b:c;;", "\"unterminated", "(((", "<@x", ",,,", ")", "a ] b", "x@y)"] {
            let _ = parse_addresses(junk);
        }
    }

    #[test]
    fn shown_as_people_read_them() {
        let v = "Team: =?UTF-8?B?0JjQstCw0L0=?= <ivan@xn--j1agbc.xn--p1ai>, \"a b\"@x.org;, =?ISO-2022-JP?B?GyRCRnxLXBsoQg==?= <n@jp.example>, undisclosed-recipients:;";
        let s = display(v);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].name.as_deref(), Some("Иван"));
        assert_eq!(s[0].address, "ivan@окно.рф");
        assert_eq!(s[0].group.as_deref(), Some("Team"));
        assert_eq!((s[1].address.as_str(), s[1].label()), ("\"a b\"@x.org", "\"a b\"@x.org"));
        assert_eq!((s[2].label(), s[2].group.as_deref()), ("日本", None));
        assert_eq!((s[3].label(), s[3].address.as_str()), ("undisclosed-recipients", ""));
        assert_eq!(first_label("bob@xn--bcher-kva.example"), "bob@bücher.example");
        assert_eq!(unicode_domain("xn--invalid--.example"), "xn--invalid--.example");
    }
}
