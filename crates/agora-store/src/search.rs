//! Searching a mailbox, below the protocols (IMAP SEARCH builds these criteria from its
//! command; the webmail's search builds the same). Evaluation for one message: flags,
//! sizes, dates and sequence sets from the metadata, addresses and subject from the
//! cached envelope, BODY/TEXT/HEADER from the message. Text matches the raw bytes (ASCII case-insensitive) or the decoded text
//! (encoded words, transfer encodings and charsets undone, i;unicode-casemap), so a
//! word finds a message whatever charset it was sent in.

use crate::text::{contains_casemapped, decode_words};
use crate::{Flags, MessageMeta};

/// One element of a sequence set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqItem {
    One(u32),
    Range(u32, u32),
}

/// A sequence set, or `$` (the saved search result, RFC 5182). Ranges keep the
/// client's order; `STAR` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Items(Vec<SeqItem>),
    Saved,
}

/// `*` in a sequence set: 0, which no sequence number or UID can be
/// (4294967295 is a valid UID, so it cannot stand for `*`).
pub const STAR: u32 = 0;

/// Search criteria, as IMAP SEARCH (RFC 9051 with CONDSTORE, WITHIN, OBJECTID and
/// SAVEDATE) defines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(String),
    Before(Date),
    Body(String),
    Cc(String),
    Deleted,
    Draft,
    Flagged,
    From(String),
    Header(String, String),
    Keyword(String),
    Larger(u64),
    New,
    Not(Box<SearchKey>),
    Old,
    On(Date),
    Or(Box<SearchKey>, Box<SearchKey>),
    Recent,
    Seen,
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Since(Date),
    Smaller(u64),
    Subject(String),
    Text(String),
    To(String),
    Uid(SeqSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    Seq(SeqSet),
    And(Vec<SearchKey>),
    ModSeq(u64),
    Younger(u64),
    Older(u64),
    EmailId(String),
    ThreadId(String),
    SavedBefore(Date),
    SavedOn(Date),
    SavedSince(Date),
    SaveDateSupported,
}

/// A calendar date (`1-Feb-2024`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

/// EMAILID (RFC 8474): from the content address, so copies of a message share it.
pub fn email_id(blob: &str) -> String {
    format!("M{}", &blob[..blob.len().min(24)])
}

pub struct Ctx<'a> {
    pub seq: u32,
    pub count: u32,
    pub max_uid: u32,
    pub meta: &'a MessageMeta,
    pub body: Option<&'a [u8]>,
    /// \Recent in this session.
    pub recent: bool,
    /// The saved result of SEARCHRES (`$`), as ascending UIDs.
    pub saved: &'a [u32],
    /// The body text kept at delivery in search form (case-mapped), when there is one.
    pub kept: Option<String>,
    /// The message's decoded body text otherwise, made the first time a key needs it.
    pub text: std::cell::OnceCell<String>,
}

impl Ctx<'_> {
    /// Whether the body text has `needle` in any case: the text kept at delivery, else
    /// the text of the raw parts (which for most mail are the text already).
    fn body_text_has(&self, needle: &str) -> bool {
        if let Some(kept) = &self.kept {
            return needle.is_empty() || kept.contains(&crate::text::casemap(needle));
        }
        let text = self
            .text
            .get_or_init(|| self.body.map(|b| crate::text::body_text(b, &self.meta.summary.root)).unwrap_or_default());
        contains_casemapped(text, needle)
    }
}

pub fn needs_body(key: &SearchKey) -> bool {
    match key {
        SearchKey::Body(_) | SearchKey::Text(_) | SearchKey::Header(..) => true,
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::And(ks) => ks.iter().any(needs_body),
        _ => false,
    }
}

/// What matching `key` against `meta` must read: the body when a key looks into the
/// message, and with it (one read) the text kept at delivery when a key matches body
/// text. (None, None) when the keys need neither, or the body cannot be read.
pub async fn read_for(
    store: &dyn crate::Store,
    key: &SearchKey,
    meta: &MessageMeta,
) -> (Option<Vec<u8>>, Option<String>) {
    if needs_text(key) && meta.summary.body_text == crate::BodyText::Kept {
        match store.read_blob_for_search(&meta.blob).await {
            Ok((body, kept)) => (Some(body), kept),
            Err(_) => (None, None),
        }
    } else if needs_body(key) {
        (store.read_blob(&meta.blob).await.ok(), None)
    } else {
        (None, None)
    }
}

/// True if the key matches body text (BODY, TEXT), which may have been kept decoded.
pub fn needs_text(key: &SearchKey) -> bool {
    match key {
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        SearchKey::Not(k) => needs_text(k),
        SearchKey::Or(a, b) => needs_text(a) || needs_text(b),
        SearchKey::And(ks) => ks.iter().any(needs_text),
        _ => false,
    }
}

/// True if the key needs the parsed envelope (addresses, subject, sent date) or the
/// message itself; flag, size, date, UID and MODSEQ keys are answered from the index.
pub fn needs_meta(key: &SearchKey) -> bool {
    use SearchKey::*;
    match key {
        From(_) | To(_) | Cc(_) | Bcc(_) | Subject(_) | SentBefore(_) | SentOn(_) | SentSince(_) => true,
        Body(_) | Text(_) | Header(..) => true,
        Not(k) => needs_meta(k),
        Or(a, b) => needs_meta(a) || needs_meta(b),
        And(ks) => ks.iter().any(needs_meta),
        _ => false,
    }
}

/// True if the key uses MODSEQ (it enables CONDSTORE, RFC 7162 §3.1).
pub fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::And(ks) => ks.iter().any(uses_modseq),
        _ => false,
    }
}

/// A header value raw or with its encoded words decoded, in any case.
fn text_field(value: &str, needle: &str) -> bool {
    contains_ci(value.as_bytes(), needle)
        || (value.contains("=?") || !value.is_ascii() || !needle.is_ascii())
            && contains_casemapped(&decode_words(value), needle)
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    if n.is_empty() {
        return true;
    }
    hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn in_set(set: &SeqSet, n: u32, star: u32) -> bool {
    let SeqSet::Items(items) = set else { return false };
    let s = |x: u32| if x == STAR { star } else { x };
    items.iter().any(|i| match *i {
        SeqItem::One(x) => s(x) == n,
        SeqItem::Range(a, b) => {
            let (lo, hi) = (s(a).min(s(b)), s(a).max(s(b)));
            n >= lo && n <= hi
        }
    })
}

fn days_from_civil(d: Date) -> i64 {
    crate::time::days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day))
}

/// The day (days since the epoch) of a Date header: "[Wkd, ]d Mon yyyy ...".
fn sent_day(date: &str) -> Option<i64> {
    let s = date.split_once(',').map_or(date, |(_, r)| r);
    let mut it = s.split_whitespace();
    let day: u8 = it.next()?.parse().ok()?;
    let mon = it.next()?.to_ascii_lowercase();
    let month = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        .iter()
        .position(|m| mon.starts_with(m))? as u8
        + 1;
    let year: u16 = it.next()?.parse().ok()?;
    Some(days_from_civil(Date { year, month, day }))
}

fn header_value(msg: &[u8], name: &str) -> Vec<u8> {
    let end = msg.windows(4).position(|w| w == b"\r\n\r\n").map_or(msg.len(), |i| i + 2);
    let mut out = Vec::new();
    let mut inside = false;
    for line in msg[..end].split_inclusive(|&b| b == b'\n') {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if inside {
                out.extend_from_slice(line);
            }
            continue;
        }
        inside = line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()] == b':';
        if inside {
            out.extend_from_slice(&line[name.len() + 1..]);
        }
    }
    out
}

/// Address headers match on each parsed address — display name or `mailbox@host`,
/// comments and routes removed — as well as on the raw text.
fn address_field(value: &Option<String>, needle: &str) -> bool {
    let Some(v) = value.as_deref() else { return false };
    if text_field(v, needle) {
        return true;
    }
    crate::address::parse_addresses(v).iter().any(|a| match a {
        crate::address::Address::Mailbox { name, mailbox, host, .. } => {
            let addr = format!("{}@{}", mailbox.as_deref().unwrap_or(""), host.as_deref().unwrap_or(""));
            contains_ci(addr.as_bytes(), needle) || name.as_deref().is_some_and(|n| text_field(n, needle))
        }
        _ => false,
    })
}

pub fn matches(key: &SearchKey, c: &Ctx<'_>) -> bool {
    use SearchKey::*;
    let m = c.meta;
    let env = &m.summary.envelope;
    let field = |v: &Option<String>, s: &str| v.as_deref().is_some_and(|v| text_field(v, s));
    let day = m.internal_date.div_euclid(86_400);
    let sent = env.date.as_deref().and_then(sent_day).unwrap_or(day);
    match key {
        All => true,
        Recent => c.recent,
        Old => !c.recent,
        New => c.recent && !m.flags.contains(Flags::SEEN),
        Answered => m.flags.contains(Flags::ANSWERED),
        Deleted => m.flags.contains(Flags::DELETED),
        Draft => m.flags.contains(Flags::DRAFT),
        Flagged => m.flags.contains(Flags::FLAGGED),
        Seen => m.flags.contains(Flags::SEEN),
        Unanswered => !m.flags.contains(Flags::ANSWERED),
        Undeleted => !m.flags.contains(Flags::DELETED),
        Undraft => !m.flags.contains(Flags::DRAFT),
        Unflagged => !m.flags.contains(Flags::FLAGGED),
        Unseen => !m.flags.contains(Flags::SEEN),
        Keyword(k) => m.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)),
        Unkeyword(k) => !m.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)),
        Larger(n) => m.size > *n,
        Smaller(n) => m.size < *n,
        Before(d) => day < days_from_civil(*d),
        On(d) => day == days_from_civil(*d),
        Since(d) => day >= days_from_civil(*d),
        SentBefore(d) => sent < days_from_civil(*d),
        SentOn(d) => sent == days_from_civil(*d),
        SentSince(d) => sent >= days_from_civil(*d),
        From(s) => address_field(&env.from, s),
        To(s) => address_field(&env.to, s),
        Cc(s) => address_field(&env.cc, s),
        Bcc(s) => address_field(&env.bcc, s),
        Subject(s) => field(&env.subject, s),
        Header(name, s) => c.body.is_some_and(|b| {
            let v = header_value(b, name);
            if s.is_empty() {
                !v.is_empty() || contains_ci(&b[..b.len().min(65536)], &format!("{name}:"))
            } else {
                text_field(&crate::text::undeclared(&v), s)
            }
        }),
        Body(s) => c.body.is_some_and(|b| {
            contains_ci(b.get(m.summary.root.body_start as usize..).unwrap_or(&[]), s) || c.body_text_has(s)
        }),
        Text(s) => c.body.is_some_and(|b| {
            contains_ci(b, s) || {
                let head = &b[..(m.summary.root.body_start as usize).min(b.len())];
                text_field(&crate::text::undeclared(head), s) || c.body_text_has(s)
            }
        }),
        Uid(SeqSet::Saved) | Seq(SeqSet::Saved) => c.saved.binary_search(&m.uid).is_ok(),
        Uid(set) => in_set(set, m.uid, c.max_uid),
        Seq(set) => in_set(set, c.seq, c.count),
        ModSeq(n) => m.modseq >= *n,
        Younger(secs) => crate::now() - m.internal_date <= *secs as i64,
        Older(secs) => crate::now() - m.internal_date >= *secs as i64,
        EmailId(id) => email_id(&m.blob).eq_ignore_ascii_case(id),
        ThreadId(_) => false,
        SavedBefore(d) => m.saved > 0 && m.saved.div_euclid(86_400) < days_from_civil(*d),
        SavedOn(d) => m.saved > 0 && m.saved.div_euclid(86_400) == days_from_civil(*d),
        SavedSince(d) => m.saved > 0 && m.saved.div_euclid(86_400) >= days_from_civil(*d),
        SaveDateSupported => true,
        Not(k) => !matches(k, c),
        Or(a, b) => matches(a, c) || matches(b, c),
        And(ks) => ks.iter().all(|k| matches(k, c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_headers() {
        assert_eq!(sent_day("Thu, 1 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            sent_day("15 Feb 2007 01:02:03 +0200"),
            Some(days_from_civil(Date { year: 2007, month: 2, day: 15 }))
        );
        assert_eq!(sent_day("garbage"), None);
        let msg = b"X-Thing: one\r\n two\r\nSubject: s\r\n\r\nX-Thing: body";
        assert_eq!(header_value(msg, "x-thing"), b" one\r\n two\r\n");
        assert!(contains_ci(b"Hello World", "WORLD"));
    }
}
