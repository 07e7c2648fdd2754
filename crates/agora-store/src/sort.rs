//! SORT (RFC 5256) and display sorting (RFC 5957): sort keys from the cached envelope, plus
//! the pieces THREAD shares: base subject extraction, sent-date parsing, RFC 2047 decoding.

use std::cmp::Ordering;

use crate::summary::EnvelopeFields;
use crate::text::decode_words;

use crate::address::{Address, first_label, parse_addresses};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

impl SortKey {
    /// The key named by a SORT criterion atom (case-insensitive), e.g. "DISPLAYFROM".
    pub fn from_atom(atom: &str) -> Option<SortKey> {
        const KEYS: [(&str, SortKey); 9] = [
            ("ARRIVAL", SortKey::Arrival),
            ("CC", SortKey::Cc),
            ("DATE", SortKey::Date),
            ("FROM", SortKey::From),
            ("SIZE", SortKey::Size),
            ("SUBJECT", SortKey::Subject),
            ("TO", SortKey::To),
            ("DISPLAYFROM", SortKey::DisplayFrom),
            ("DISPLAYTO", SortKey::DisplayTo),
        ];
        KEYS.iter().find(|(name, _)| name.eq_ignore_ascii_case(atom)).map(|&(_, key)| key)
    }
}

/// One sort criterion: the key and whether it is REVERSEd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Criterion {
    pub key: SortKey,
    pub reverse: bool,
}

pub struct SortItem<'a> {
    pub seq: u32,
    pub size: u64,
    /// Unix seconds.
    pub internal_date: i64,
    pub envelope: &'a EnvelopeFields,
}

/// A computed key; one criterion always yields the same variant for every message.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Num(i128),
    Text(String),
}

fn key_value(key: SortKey, item: &SortItem<'_>) -> Value {
    let e = item.envelope;
    match key {
        SortKey::Arrival => Value::Num(item.internal_date.into()),
        SortKey::Date => Value::Num(sent_date(e, item.internal_date).into()),
        SortKey::Size => Value::Num(item.size.into()),
        SortKey::From => Value::Text(casemap(&first_mailbox(e.from.as_deref()))),
        SortKey::To => Value::Text(casemap(&first_mailbox(e.to.as_deref()))),
        SortKey::Cc => Value::Text(casemap(&first_mailbox(e.cc.as_deref()))),
        SortKey::Subject => Value::Text(casemap(&base_subject(e.subject.as_deref().unwrap_or("")).0)),
        SortKey::DisplayFrom => Value::Text(casemap(&display_name(e.from.as_deref()))),
        SortKey::DisplayTo => Value::Text(casemap(&display_name(e.to.as_deref()))),
    }
}

/// Returns the items' `seq` values in sorted order. Ties on all criteria are broken by `seq`
/// ascending (RFC 5256: sequence order is the final tiebreaker, and REVERSE does not apply to it).
pub fn sort(criteria: &[Criterion], items: &[SortItem<'_>]) -> Vec<u32> {
    // Keys are computed once per message, not once per comparison.
    let keys: Vec<Vec<Value>> =
        items.iter().map(|item| criteria.iter().map(|c| key_value(c.key, item)).collect()).collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        for (i, c) in criteria.iter().enumerate() {
            let o = keys[a][i].cmp(&keys[b][i]);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        items[a].seq.cmp(&items[b].seq)
    });
    order.into_iter().map(|i| items[i].seq).collect()
}

/// The comparison form of a string for i;unicode-casemap (RFC 5051). We use the full Unicode
/// upper-case mapping (so "ß" and "SS" compare equal) rather than titlecase plus NFKD, which
/// would need normalization tables; for ASCII and most scripts the result is the same.
pub fn casemap(s: &str) -> String {
    crate::text::casemap(s)
}

/// The sent date (RFC 5256 §2.2): the Date header in UTC, else the internal date.
pub fn sent_date(e: &EnvelopeFields, internal_date: i64) -> i64 {
    e.date.as_deref().and_then(parse_date).unwrap_or(internal_date)
}

/// addr-mailbox of the first address (RFC 5256 FROM/TO/CC). A leading group counts as its
/// ENVELOPE form, a group-start element whose mailbox is the group name.
fn first_mailbox(value: Option<&str>) -> String {
    match value.map(parse_addresses).unwrap_or_default().into_iter().next() {
        Some(Address::Mailbox { mailbox, .. }) => mailbox.unwrap_or_default(),
        Some(Address::GroupStart(name)) => name,
        Some(Address::GroupEnd) | None => String::new(),
    }
}

/// RFC 5957: the decoded display name of the first address, else its addr-spec (a
/// group's name for a group).
fn display_name(value: Option<&str>) -> String {
    value.map(first_label).unwrap_or_default()
}

/// RFC 5256 §2.1 base subject (after RFC 2047 decoding), for sorting and threading; also returns
/// whether the subject was a reply/forward (is_reply_or_fwd in RFC 5256 terms).
///
/// The base subject keeps its case; compare it through [`casemap`].
pub fn base_subject(raw: &str) -> (String, bool) {
    // (1) Decode, then turn tabs and line breaks into spaces and collapse runs of spaces.
    let decoded = decode_words(raw);
    let mut norm = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c };
        if c != ' ' || !norm.ends_with(' ') {
            norm.push(c);
        }
    }
    let mut s = norm.as_str();
    let mut reply = false;
    loop {
        // (2) Trailing "(fwd)" and whitespace.
        loop {
            s = s.trim_end_matches(' ');
            match strip_suffix_ci(s, "(fwd)") {
                Some(rest) => {
                    s = rest;
                    reply = true;
                }
                None => break,
            }
        }
        // (3) to (5): leaders, then a lone leading blob if something is left after it.
        loop {
            let before = s.len();
            loop {
                if let Some(rest) = s.strip_prefix(' ') {
                    s = rest;
                } else if let Some(rest) = strip_refwd_leader(s) {
                    s = rest;
                    reply = true;
                } else {
                    break;
                }
            }
            if let Some(rest) = strip_blob(s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // (6) A "[fwd: ...]" wrapper: unwrap and start over.
        if strip_prefix_ci(s, "[fwd:").is_some() && s.ends_with(']') {
            s = &s[5..s.len() - 1];
            reply = true;
            continue;
        }
        return (s.to_string(), reply);
    }
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) { s.get(prefix.len()..) } else { None }
}

fn strip_suffix_ci<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    if tail.eq_ignore_ascii_case(suffix) { s.get(..cut) } else { None }
}

/// subj-blob: "[" *BLOBCHAR "]" *WSP; returns what follows.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    if !rest[end..].starts_with(']') {
        return None;
    }
    Some(rest[end + 1..].trim_start_matches(' '))
}

/// *subj-blob subj-refwd, where subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":".
fn strip_refwd_leader(s: &str) -> Option<&str> {
    let mut t = s;
    while let Some(rest) = strip_blob(t) {
        t = rest;
    }
    let t = strip_prefix_ci(t, "re").or_else(|| {
        let t = strip_prefix_ci(t, "fw")?;
        Some(strip_prefix_ci(t, "d").unwrap_or(t))
    })?;
    let t = t.trim_start_matches(' ');
    let t = strip_blob(t).unwrap_or(t);
    t.strip_prefix(':')
}

/// Parses an RFC 5322 Date header value (also obsolete forms: missing weekday, 2-digit years,
/// named zones like GMT/UT/EST/EDT/...) to unix seconds in UTC; None if unparseable.
pub fn parse_date(value: &str) -> Option<i64> {
    let cleaned = strip_comments(value);
    let toks: Vec<&str> = cleaned.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).collect();
    let mut i = 0;
    // An optional day name (any word that is not a month, to tolerate misspellings).
    if toks.first().is_some_and(|t| t.chars().all(|c| c.is_ascii_alphabetic()) && month(t).is_none()) {
        i = 1;
    }
    // "22 Feb" normally; "Feb 22" is seen from some broken mailers.
    let (day, mon) = match (toks.get(i).and_then(|t| number(t)), toks.get(i + 1).and_then(|t| month(t))) {
        (Some(d), Some(m)) => (d, m),
        _ => (toks.get(i + 1).and_then(|t| number(t))?, toks.get(i).and_then(|t| month(t))?),
    };
    let year_tok = toks.get(i + 2)?;
    let year = number(year_tok)?;
    let year = match year_tok.len() {
        // RFC 5322 §4.3: two-digit years below 50 are 20xx; three-digit years add 1900.
        1 | 2 if year < 50 => year + 2000,
        1 | 2 => year + 1900,
        3 => year + 1900,
        _ => year,
    };
    let mut hms = toks.get(i + 3)?.split(':');
    let hour = number(hms.next()?)?;
    let min = number(hms.next()?)?;
    let sec = match hms.next() {
        Some(s) => number(s)?,
        None => 0,
    };
    if hms.next().is_some() || hour > 23 || min > 59 || sec > 60 || !(1..=9999).contains(&year) {
        return None;
    }
    if day < 1 || day > days_in_month(year, mon) {
        return None;
    }
    let offset = toks.get(i + 4).map_or(0, |z| zone_offset(z));
    let days = days_from_civil(year, mon, day);
    Some(days * 86400 + hour * 3600 + min * 60 + sec - offset)
}

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let head = s.get(..3)?;
    MONTHS.iter().position(|m| m.eq_ignore_ascii_case(head)).map(|p| p as i64 + 1)
}

/// Zone offset east of UTC in seconds. Unknown zones (including military letters, RFC 5322
/// §4.3) count as UTC rather than making the whole date invalid.
fn zone_offset(z: &str) -> i64 {
    let numeric = |digits: &str| -> Option<i64> {
        let digits: String = digits.chars().filter(|&c| c != ':').collect();
        if digits.len() != 4 {
            return None;
        }
        let n = number(&digits)?;
        let (h, m) = (n / 100, n % 100);
        if m > 59 { None } else { Some(h * 3600 + m * 60) }
    };
    if let Some(d) = z.strip_prefix('+') {
        return numeric(d).unwrap_or(0);
    }
    if let Some(d) = z.strip_prefix('-') {
        return numeric(d).map_or(0, |o| -o);
    }
    let hours = match z.to_ascii_uppercase().as_str() {
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => 0,
    };
    hours * 3600
}

fn days_in_month(year: i64, mon: i64) -> i64 {
    match mon {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12).
fn days_from_civil(year: i64, mon: i64, day: i64) -> i64 {
    // Count years from March so that the leap day is the last day of the year.
    let y = if mon <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mon + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Removes (possibly nested) RFC 5322 comments.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut esc = false;
    for c in s.chars() {
        if depth > 0 {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                out.push(' ');
            }
        } else if c == '(' {
            depth = 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// Test data and helpers shared with the THREAD tests: imaptest's mbox files (Dovecot imaptest,
/// MIT) embedded, so the tests run without the checkout, and a small mbox reader.
#[cfg(test)]
pub(crate) mod mbox {
    use crate::summary::EnvelopeFields;

    use super::parse_date;

    pub(crate) struct Msg {
        pub internal_date: i64,
        /// With CRLF line endings, as the store would hold it.
        pub size: u64,
        pub envelope: EnvelopeFields,
    }

    /// Splits an mbox on "From " lines; the internal date comes from that line.
    pub(crate) fn parse(text: &str) -> Vec<Msg> {
        let mut msgs = Vec::new();
        let mut cur: Option<(i64, String)> = None;
        for line in text.split_inclusive('\n') {
            if line.starts_with("From ") {
                if let Some((date, body)) = cur.take() {
                    msgs.push(build(date, &body));
                }
                cur = Some((from_line_date(line), String::new()));
            } else if let Some((_, body)) = cur.as_mut() {
                body.push_str(line);
            }
        }
        if let Some((date, body)) = cur {
            msgs.push(build(date, &body));
        }
        msgs
    }

    /// "From user@domain  Fri Feb 22 17:06:23 2008 [+0200]"; no zone means UTC.
    fn from_line_date(line: &str) -> i64 {
        let t: Vec<&str> = line.split_whitespace().collect();
        let zone = t.get(7).copied().unwrap_or("+0000");
        let date = format!("{}, {} {} {} {} {zone}", t[2], t[4], t[3], t[6], t[5]);
        parse_date(&date).expect("mbox From line date")
    }

    fn build(internal_date: i64, body: &str) -> Msg {
        let size = (body.len() + body.matches('\n').count()) as u64;
        // The envelope as delivery parses it.
        let envelope = crate::MessageSummary::parse(body.as_bytes()).envelope;
        Msg { internal_date, size, envelope }
    }

    /// An imaptest mbox, read where the project's imaptest runner reads the scripts
    /// ($IMAPTEST_TESTS, else ../shared/imaptest/tests); None when they are not there.
    pub(crate) fn load(name: &str) -> Option<String> {
        let dir = std::env::var_os("IMAPTEST_TESTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/imaptest/tests"));
        std::fs::read_to_string(dir.join(format!("{name}.mbox"))).ok()
    }

    /// The named imaptest mbox; without the data the calling test returns (fails under
    /// AGORA_REQUIRE_PEERS).
    macro_rules! load_mbox {
        ($name:literal) => {
            match crate::sort::mbox::load($name) {
                Some(text) => text,
                None => {
                    // Silent only where the peers are optional; CI sets AGORA_REQUIRE_PEERS.
                    assert!(
                        std::env::var_os("AGORA_REQUIRE_PEERS").is_none(),
                        "imaptest mbox {} not found (set IMAPTEST_TESTS)",
                        $name
                    );
                    eprintln!("skipping: imaptest mbox {} not found", $name);
                    return;
                }
            }
        };
    }
    pub(crate) use load_mbox;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "subject reverse size" -> criteria.
    fn criteria(spec: &str) -> Vec<Criterion> {
        let mut out = Vec::new();
        let mut reverse = false;
        for word in spec.split_whitespace() {
            if word.eq_ignore_ascii_case("reverse") {
                reverse = true;
            } else {
                out.push(Criterion { key: SortKey::from_atom(word).expect("sort key"), reverse });
                reverse = false;
            }
        }
        out
    }

    fn sort_mbox(mbox_text: &str, spec: &str) -> Vec<u32> {
        let msgs = mbox::parse(mbox_text);
        let items: Vec<SortItem<'_>> = msgs
            .iter()
            .zip(1..)
            .map(|(m, seq)| SortItem { seq, size: m.size, internal_date: m.internal_date, envelope: &m.envelope })
            .collect();
        sort(&criteria(spec), &items)
    }

    fn check(mbox_text: &str, cases: &[(&str, &[u32])]) {
        for (spec, want) in cases {
            assert_eq!(sort_mbox(mbox_text, spec), *want, "sort ({spec})");
        }
    }

    #[test]
    fn imaptest_sort_subject() {
        check(
            &mbox::load_mbox!("sort-subject"),
            &[
                ("subject", &[9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]),
                ("reverse subject", &[4, 8, 2, 7, 12, 13, 15, 6, 3, 5, 11, 14, 1, 9, 10]),
                ("subject reverse size", &[10, 9, 1, 14, 11, 5, 3, 6, 15, 13, 12, 7, 2, 8, 4]),
            ],
        );
    }

    #[test]
    fn imaptest_sort_date() {
        check(
            &mbox::load_mbox!("sort-date"),
            &[
                ("date", &[1, 3, 7, 5, 2, 4, 6]),
                ("reverse date", &[2, 4, 6, 5, 3, 7, 1]),
                ("date reverse size", &[1, 7, 3, 5, 6, 4, 2]),
            ],
        );
    }

    #[test]
    fn imaptest_sort_arrival() {
        check(
            &mbox::load_mbox!("sort-arrival"),
            &[
                ("arrival", &[1, 3, 2, 4, 5]),
                ("reverse arrival", &[2, 4, 5, 3, 1]),
                ("arrival reverse size", &[1, 3, 5, 4, 2]),
            ],
        );
    }

    #[test]
    fn imaptest_sort_size() {
        check(
            &mbox::load_mbox!("sort-size"),
            &[
                ("size", &[1, 8, 2, 6, 3, 5, 4, 7]),
                ("reverse size", &[4, 7, 3, 5, 2, 6, 1, 8]),
                ("size reverse arrival", &[8, 1, 6, 2, 5, 3, 7, 4]),
            ],
        );
    }

    #[test]
    fn imaptest_sort_addresses() {
        let mut cases: Vec<(String, &[u32])> = Vec::new();
        for key in ["from", "to", "cc"] {
            cases.push((key.to_string(), &[3, 1, 2]));
            cases.push((format!("reverse {key}"), &[1, 2, 3]));
            cases.push((format!("{key} reverse arrival"), &[3, 2, 1]));
        }
        let cases: Vec<(&str, &[u32])> = cases.iter().map(|(s, w)| (s.as_str(), *w)).collect();
        check(&mbox::load_mbox!("sort-addresses"), &cases);
    }

    #[test]
    fn imaptest_sort_display() {
        check(
            &mbox::load_mbox!("sort-display-from"),
            &[("displayfrom", &[2, 3, 4, 1, 5]), ("reverse displayfrom", &[5, 1, 4, 3, 2])],
        );
        check(
            &mbox::load_mbox!("sort-display-to"),
            &[("displayto", &[6, 2, 3, 8, 4, 1, 5, 7]), ("reverse displayto", &[7, 5, 1, 4, 8, 3, 2, 6])],
        );
    }

    #[test]
    fn base_subjects() {
        let cases = [
            ("", "", false),
            ("=?iso-8859-1?q?_?=", "", false),
            ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", true),
            ("Re: [FWD: c]", "c", true),
            ("[xyz]", "[xyz]", false),
            ("[xyz] foo", "foo", false),
            ("Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x", false),
            ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon", true),
            ("=?us-ascii?b?UmU6IGM=?=", "c", true),
            ("Re[2]: \t hello   world", "hello world", true),
            ("RE : x", "x", true),
            ("Read: x", "Read: x", false),
            ("foo (fwd)", "foo", true),
            ("[list] [tag] topic", "topic", false),
            ("=?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=", "café au lait", false),
        ];
        for (raw, base, reply) in cases {
            assert_eq!(base_subject(raw), (base.to_string(), reply), "{raw:?}");
        }
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("=?ISO-8859-1?Q?Andr=E9?= Pirard"), "André Pirard");
        assert_eq!(decode_words("=?utf-8?b?w6k=?= =?utf-8?b?w6k?="), "éé");
        assert_eq!(decode_words("a =?utf-8?q?b?= c"), "a b c");
        assert_eq!(decode_words("=?windows-1252?q?=80?="), "€");
        assert_eq!(decode_words("=?iso-8859-15?q?=A4?="), "€");
        assert_eq!(decode_words("=?us-ascii*en?q?x?="), "x");
        // Every charset mail meets; an unknown one as UTF-8 if it is that.
        assert_eq!(decode_words("=?koi8-r?q?=C1?="), "а");
        assert_eq!(decode_words("=?x-unknown?q?plain?="), "plain");
        assert_eq!(decode_words("=?broken"), "=?broken");
        assert_eq!(decode_words("ünïcode =?utf-8?x?y?="), "ünïcode =?utf-8?x?y?=");
    }

    #[test]
    fn dates() {
        let base = parse_date("Fri, 22 Feb 2008 00:00:00 +0000");
        assert_eq!(base, Some(1_203_638_400));
        assert_eq!(parse_date("22 Feb 2008 02:00:00 +0200"), base);
        assert_eq!(parse_date("Fri, 22 Feb 08 00:00:00 GMT"), base);
        assert_eq!(parse_date("Fri, 22 Feb 108 00:00 UT"), base);
        assert_eq!(parse_date("Thu, 21 Feb 2008 19:00:00 EST"), base);
        assert_eq!(parse_date("Thu, 21 Feb 2008 20:00:00 EDT (comment)"), base);
        assert_eq!(parse_date("Thu, 21 Feb 2008 16:00:00 PST"), base);
        assert_eq!(parse_date("Fri,22 feb 2008 00:00:00 Z"), base);
        assert_eq!(parse_date("Fri, 22 Feb 2008 00:00:00"), base);
        assert_eq!(parse_date("Fri, 22 Feb 2008 01:30:00 +0130"), base);
        assert_eq!(parse_date("Thu, 1 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date("1 Jan 99 00:00:00 +0000"), Some(915_148_800));
        assert_eq!(parse_date("29 Feb 2000 00:00:00 +0000"), Some(951_782_400));
        assert_eq!(parse_date("31 Dec 1969 23:59:59 +0000"), Some(-1));
        for bad in
            ["", "garbage", "30 Feb 2008 00:00:00 +0000", "22 Foo 2008 00:00:00", "22 Feb 2008 24:00:00", "22 Feb 2008"]
        {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn date_falls_back_to_internal_date() {
        let bad = EnvelopeFields { date: Some("not a date".into()), ..Default::default() };
        let good = EnvelopeFields { date: Some("Thu, 1 Jan 1970 00:00:10 +0000".into()), ..Default::default() };
        let items = [
            SortItem { seq: 1, size: 0, internal_date: 20, envelope: &bad },
            SortItem { seq: 2, size: 0, internal_date: 0, envelope: &good },
            SortItem { seq: 3, size: 0, internal_date: 5, envelope: &bad },
        ];
        assert_eq!(sort(&criteria("date"), &items), [3, 2, 1]);
        assert_eq!(sort(&criteria("reverse date"), &items), [1, 2, 3]);
        assert_eq!(sort(&[], &items), [1, 2, 3]);
        assert!(sort(&criteria("date"), &[]).is_empty());
    }

    #[test]
    fn unicode_subjects_compare_case_insensitively() {
        let a = EnvelopeFields { subject: Some("=?utf-8?q?=C3=A9t=C3=A9?=".into()), ..Default::default() };
        let b = EnvelopeFields { subject: Some("ÉTÉ".into()), ..Default::default() };
        let c = EnvelopeFields { subject: Some("été 2".into()), ..Default::default() };
        let items = [
            SortItem { seq: 1, size: 3, internal_date: 0, envelope: &c },
            SortItem { seq: 2, size: 2, internal_date: 0, envelope: &b },
            SortItem { seq: 3, size: 1, internal_date: 0, envelope: &a },
        ];
        assert_eq!(sort(&criteria("subject"), &items), [2, 3, 1]);
        assert_eq!(sort(&criteria("subject size"), &items), [3, 2, 1]);
    }
}
