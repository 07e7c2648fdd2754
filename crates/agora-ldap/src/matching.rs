//! Matching rules: how values of each syntax are folded and compared for equality,
//! substrings, ordering, approximate and extensible matches (RFC 4517 §4.2).

use std::cmp::Ordering;

use crate::schema::Syntax;

/// Trims, collapses runs of spaces and lower-cases (caseIgnoreMatch's preparation).
pub fn fold_space_case(s: &str) -> String {
    fold_space(s).to_lowercase()
}

/// Trims and collapses runs of spaces (caseExactMatch's preparation).
pub fn fold_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// A text value folded the way its syntax compares for equality.
pub fn fold_text(syntax: Syntax, s: &str) -> String {
    match syntax {
        Syntax::Text | Syntax::PostalAddress | Syntax::Oid => fold_space_case(s),
        Syntax::Ia5 => fold_space(s).to_ascii_lowercase(),
        Syntax::Dn => crate::dn::normalize(s).unwrap_or_else(|| fold_space_case(s)),
        Syntax::Phone => s.chars().filter(|c| !c.is_whitespace() && *c != '-').collect::<String>().to_lowercase(),
        Syntax::Boolean => s.trim().to_ascii_uppercase(),
        Syntax::Uuid => s.trim().to_ascii_lowercase(),
        Syntax::Time => fold_time(s).unwrap_or_else(|| s.trim().to_string()),
        Syntax::Integer => fold_integer(s),
        Syntax::Octets | Syntax::Jpeg | Syntax::Certificate => s.to_string(),
    }
}

/// GeneralizedTime as 14 digits (seconds added if absent, fraction dropped), UTC.
fn fold_time(s: &str) -> Option<String> {
    let s = s.trim();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let base = match digits.len() {
        10 => format!("{digits}0000"),
        12 => format!("{digits}00"),
        14 => digits,
        _ => return None,
    };
    Some(base)
}

fn fold_integer(s: &str) -> String {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t),
    };
    let d = digits.trim_start_matches('0');
    let d = if d.is_empty() { "0" } else { d };
    if neg && d != "0" { format!("-{d}") } else { d.to_string() }
}

/// A stored or asserted value prepared for equality: binary syntaxes as they are,
/// text folded (None: not valid text).
pub fn prepare(syntax: Syntax, value: &[u8]) -> Option<Vec<u8>> {
    if syntax.is_binary() {
        return Some(value.to_vec());
    }
    let s = std::str::from_utf8(value).ok()?;
    Some(fold_text(syntax, s).into_bytes())
}

pub fn equal(syntax: Syntax, stored: &[u8], asserted: &[u8]) -> bool {
    match (prepare(syntax, stored), prepare(syntax, asserted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Orders two values as the syntax's ordering rule does; None when it has none.
pub fn order(syntax: Syntax, stored: &[u8], asserted: &[u8]) -> Option<Ordering> {
    let (a, b) = (prepare(syntax, stored)?, prepare(syntax, asserted)?);
    match syntax {
        Syntax::Integer => {
            let (x, y) = (
                std::str::from_utf8(&a).ok()?.parse::<i128>().ok()?,
                std::str::from_utf8(&b).ok()?.parse::<i128>().ok()?,
            );
            Some(x.cmp(&y))
        }
        Syntax::Text | Syntax::PostalAddress | Syntax::Ia5 | Syntax::Time | Syntax::Uuid | Syntax::Phone => {
            Some(a.cmp(&b))
        }
        _ => None,
    }
}

/// Substring match on folded text: `initial*any*...*final`.
pub fn substrings(syntax: Syntax, stored: &[u8], initial: Option<&str>, any: &[String], last: Option<&str>) -> bool {
    if syntax.is_binary() {
        return false;
    }
    let Ok(text) = std::str::from_utf8(stored) else { return false };
    let value = fold_text(syntax, text);
    // Each asserted piece is folded alike, but not trimmed away when it is all spaces.
    let fold = |p: &str| {
        let f = fold_text(syntax, p);
        if f.is_empty() { p.to_lowercase() } else { f }
    };
    let mut rest = value.as_str();
    if let Some(i) = initial {
        let i = fold(i);
        match rest.strip_prefix(i.as_str()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for a in any {
        let a = fold(a);
        match rest.find(a.as_str()) {
            Some(pos) => rest = &rest[pos + a.len()..],
            None => return false,
        }
    }
    match last {
        Some(f) => rest.ends_with(fold(f).as_str()),
        None => true,
    }
}

/// Approximate match: equal once case, spaces and punctuation are ignored.
pub fn approx(syntax: Syntax, stored: &[u8], asserted: &[u8]) -> bool {
    if syntax.is_binary() {
        return stored == asserted;
    }
    let squash = |b: &[u8]| -> Option<String> {
        let s = std::str::from_utf8(b).ok()?;
        Some(s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect())
    };
    match (squash(stored), squash(asserted)) {
        (Some(a), Some(b)) => !a.is_empty() && a == b,
        _ => false,
    }
}

/// An extensible match under a named rule; None if the rule is unknown here.
pub fn by_rule(rule: &str, syntax: Syntax, stored: &[u8], asserted: &[u8]) -> Option<bool> {
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    Some(match rule {
        "caseExactMatch" | "caseExactIA5Match" => match (text(stored), text(asserted)) {
            (Some(a), Some(b)) => fold_space(&a) == fold_space(&b),
            _ => false,
        },
        "caseIgnoreMatch" | "caseIgnoreIA5Match" => match (text(stored), text(asserted)) {
            (Some(a), Some(b)) => fold_space_case(&a) == fold_space_case(&b),
            _ => false,
        },
        "caseIgnoreOrderingMatch" => match (text(stored), text(asserted)) {
            (Some(a), Some(b)) => fold_space_case(&a) < fold_space_case(&b),
            _ => false,
        },
        "caseExactOrderingMatch" => match (text(stored), text(asserted)) {
            (Some(a), Some(b)) => fold_space(&a) < fold_space(&b),
            _ => false,
        },
        "caseIgnoreSubstringsMatch" | "caseExactSubstringsMatch" | "caseIgnoreIA5SubstringsMatch" => {
            let Some(pattern) = text(asserted) else { return Some(false) };
            let parts: Vec<&str> = pattern.split('*').collect();
            let (first, last) = (parts[0], parts[parts.len() - 1]);
            let any: Vec<String> = if parts.len() > 2 {
                parts[1..parts.len() - 1].iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            };
            let first = (!first.is_empty()).then_some(first);
            let last = (parts.len() > 1 && !last.is_empty()).then_some(last);
            if rule == "caseExactSubstringsMatch" {
                let Some(v) = text(stored) else { return Some(false) };
                let v = fold_space(&v);
                let mut rest = v.as_str();
                if let Some(f) = first {
                    match rest.strip_prefix(f) {
                        Some(r) => rest = r,
                        None => return Some(false),
                    }
                }
                for a in &any {
                    match rest.find(a.as_str()) {
                        Some(p) => rest = &rest[p + a.len()..],
                        None => return Some(false),
                    }
                }
                last.is_none_or(|l| rest.ends_with(l))
            } else {
                substrings(Syntax::Text, stored, first, &any, last)
            }
        }
        "distinguishedNameMatch" => equal(Syntax::Dn, stored, asserted),
        "telephoneNumberMatch" => equal(Syntax::Phone, stored, asserted),
        "octetStringMatch" | "certificateExactMatch" => stored == asserted,
        "booleanMatch" => equal(Syntax::Boolean, stored, asserted),
        "generalizedTimeMatch" => equal(Syntax::Time, stored, asserted),
        "generalizedTimeOrderingMatch" => order(Syntax::Time, stored, asserted) == Some(Ordering::Less),
        "uuidMatch" => equal(Syntax::Uuid, stored, asserted),
        "uuidOrderingMatch" => order(Syntax::Uuid, stored, asserted) == Some(Ordering::Less),
        "objectIdentifierMatch" => equal(Syntax::Oid, stored, asserted),
        "integerMatch" => equal(Syntax::Integer, stored, asserted),
        "integerOrderingMatch" => order(Syntax::Integer, stored, asserted) == Some(Ordering::Less),
        _ => {
            let _ = syntax;
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_follows_the_syntax() {
        assert!(equal(Syntax::Text, b"Ann  Lee", b" ann lee"));
        assert!(equal(Syntax::Ia5, b"Ann@Example.COM", b"ann@example.com"));
        assert!(equal(Syntax::Phone, b"+1 555-0100", b"+15550100"));
        assert!(equal(Syntax::Boolean, b"TRUE", b"true"));
        assert!(equal(Syntax::Dn, b"uid=Ann,dc=X", b"UID=ann, dc=x"));
        assert!(!equal(Syntax::Octets, b"A", b"a"));
        assert!(equal(Syntax::Time, b"20261202120000Z", b"202612021200Z"));
    }

    #[test]
    fn substrings_and_ordering() {
        let any = vec!["ri".to_string()];
        assert!(substrings(Syntax::Text, b"Maria Lee", Some("MA"), &any, Some("lee")));
        assert!(!substrings(Syntax::Text, b"Maria Lee", Some("lee"), &[], None));
        assert!(substrings(Syntax::Ia5, b"ann@example.com", Some("ann"), &[], None));
        assert_eq!(order(Syntax::Integer, b"10", b"9"), Some(Ordering::Greater));
        assert_eq!(order(Syntax::Text, b"b", b"A"), Some(Ordering::Greater));
        assert_eq!(order(Syntax::Dn, b"x", b"y"), None);
    }

    #[test]
    fn rules_by_name() {
        assert_eq!(by_rule("caseExactMatch", Syntax::Text, b"Ann", b"ann"), Some(false));
        assert_eq!(by_rule("caseIgnoreMatch", Syntax::Text, b"Ann", b"ann"), Some(true));
        assert_eq!(by_rule("caseIgnoreSubstringsMatch", Syntax::Text, b"Annabel", b"ann*l"), Some(true));
        assert_eq!(by_rule("caseExactSubstringsMatch", Syntax::Text, b"Annabel", b"ann*"), Some(false));
        assert_eq!(by_rule("noSuchRule", Syntax::Text, b"a", b"a"), None);
        assert!(approx(Syntax::Text, b"O'Brien", b"obrien"));
    }
}
