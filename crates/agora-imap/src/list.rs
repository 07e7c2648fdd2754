//! Which names LIST and LSUB return, and with which attributes: RFC 9051 §6.3.9 with
//! LIST-EXTENDED (RFC 5258: SUBSCRIBED, RECURSIVEMATCH, CHILDINFO, \NonExistent) and
//! SPECIAL-USE (RFC 6154). Pure: the session supplies mailboxes and subscriptions.

use std::collections::{BTreeMap, BTreeSet};

use agora_store::SpecialUse;

/// The hierarchy separator of every personal mailbox name.
pub const SEP: u8 = b'/';

/// Matches a LIST pattern: `*` matches anything, `%` anything but the separator.
/// Dynamic programming, so hostile patterns cost O(pattern × name), never exponential.
pub fn pattern_match(pattern: &[u8], name: &[u8]) -> bool {
    // ok[j]: the pattern so far matches name[..j].
    let mut ok = vec![false; name.len() + 1];
    ok[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' | b'%' => {
                let mut reach = false;
                for j in 0..=name.len() {
                    reach |= ok[j];
                    next[j] = reach;
                    if p == b'%' && j < name.len() && name[j] == SEP {
                        reach = false;
                    }
                }
            }
            c => {
                for j in 0..name.len() {
                    next[j + 1] = ok[j] && name[j] == c;
                }
            }
        }
        ok = next;
        if !ok.contains(&true) {
            return false;
        }
    }
    ok[name.len()]
}

/// A LIST or LSUB request, options already validated.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub reference: String,
    pub patterns: Vec<String>,
    pub lsub: bool,
    /// Selection: SUBSCRIBED, RECURSIVEMATCH, SPECIAL-USE.
    pub subscribed: bool,
    pub recursive: bool,
    pub special_use: bool,
    /// Return: SUBSCRIBED (the \Subscribed attribute on every entry).
    pub return_subscribed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub attrs: Vec<&'static str>,
    /// CHILDINFO ("SUBSCRIBED") extended data.
    pub childinfo: bool,
    /// The name is an existing, selectable mailbox (LIST-STATUS answers only for these).
    pub selectable: bool,
}

fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.bytes().enumerate().filter(|&(_, b)| b == SEP).map(move |(i, _)| &name[..i]).filter(|a| !a.is_empty())
}

/// The entries a request returns, INBOX first, then by name.
pub fn list(req: &Request, mailboxes: &[(String, Option<SpecialUse>)], subscriptions: &[String]) -> Vec<Entry> {
    let existing: BTreeMap<&str, Option<SpecialUse>> = mailboxes.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let subs: BTreeSet<&str> = subscriptions.iter().map(String::as_str).collect();
    let full: Vec<String> = req.patterns.iter().map(|p| format!("{}{p}", req.reference)).collect();
    let matches = |name: &str| {
        full.iter().any(|p| {
            if name == "INBOX" {
                pattern_match(p.to_ascii_uppercase().as_bytes(), b"INBOX")
            } else {
                pattern_match(p.as_bytes(), name.as_bytes())
            }
        })
    };
    let below = |set: &dyn Fn(&str) -> bool, name: &str| -> bool {
        let prefix = format!("{name}/");
        existing.keys().chain(subs.iter()).any(|n| n.starts_with(&prefix) && set(n))
    };
    let has_children = |name: &str| below(&|n| existing.contains_key(n), name);
    // A name with a subscribed descendant the patterns do not reach (RECURSIVEMATCH).
    let hidden_subscribed_child = |name: &str| below(&|n| subs.contains(n) && !matches(n), name);
    let children_attr = |name: &str| if has_children(name) { "\\HasChildren" } else { "\\HasNoChildren" };

    let mut out: BTreeMap<&str, Entry> = BTreeMap::new();
    if req.lsub {
        for &s in &subs {
            if matches(s) {
                out.insert(s, Entry { name: s.into(), attrs: Vec::new(), childinfo: false, selectable: false });
            }
            // RFC 3501 §6.3.9: a parent reached by "%" whose subscribed child is not is
            // listed too, as \Noselect.
            for a in ancestors(s) {
                if !subs.contains(a) && matches(a) && hidden_subscribed_child(a) {
                    out.entry(a).or_insert(Entry {
                        name: a.into(),
                        attrs: vec!["\\Noselect"],
                        childinfo: false,
                        selectable: false,
                    });
                }
            }
        }
    } else if req.subscribed {
        for &s in &subs {
            if matches(s) {
                let mut attrs = vec!["\\Subscribed"];
                match existing.get(s) {
                    Some(su) => {
                        attrs.push(children_attr(s));
                        attrs.extend(su.map(|u| u.as_str()));
                    }
                    None => attrs.push("\\NonExistent"),
                }
                let childinfo = req.recursive && hidden_subscribed_child(s);
                out.insert(s, Entry { name: s.into(), attrs, childinfo, selectable: existing.contains_key(s) });
            }
            if !req.recursive {
                continue;
            }
            for a in ancestors(s) {
                if subs.contains(a) || out.contains_key(a) || !matches(a) || !hidden_subscribed_child(a) {
                    continue;
                }
                let attrs = match existing.get(a) {
                    Some(su) => {
                        let mut v = vec![children_attr(a)];
                        v.extend(su.map(|u| u.as_str()));
                        v
                    }
                    None => vec!["\\NonExistent", "\\HasChildren"],
                };
                out.insert(a, Entry { name: a.into(), attrs, childinfo: true, selectable: existing.contains_key(a) });
            }
        }
    } else {
        let mut names: BTreeSet<&str> = existing.keys().copied().collect();
        for n in existing.keys() {
            names.extend(ancestors(n));
        }
        for n in names {
            if !matches(n) {
                continue;
            }
            let mut attrs = Vec::new();
            let selectable = match existing.get(n) {
                Some(su) => {
                    attrs.push(children_attr(n));
                    attrs.extend(su.map(|u| u.as_str()));
                    true
                }
                None => {
                    attrs.extend(["\\Noselect", "\\HasChildren"]);
                    false
                }
            };
            if req.special_use && !existing.get(n).is_some_and(Option::is_some) {
                continue;
            }
            if req.return_subscribed && subs.contains(n) {
                attrs.push("\\Subscribed");
            }
            out.insert(n, Entry { name: n.into(), attrs, childinfo: false, selectable });
        }
    }
    if req.subscribed && req.special_use {
        out.retain(|n, _| existing.get(n).is_some_and(Option::is_some));
    }
    let mut v: Vec<Entry> = out.into_values().collect();
    v.sort_by_key(|e| (e.name != "INBOX", e.name.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Entry]) -> Vec<String> {
        v.iter()
            .map(|e| format!("{} {}{}", e.name, e.attrs.join(" "), if e.childinfo { " +CHILDINFO" } else { "" }))
            .collect()
    }

    #[test]
    fn patterns() {
        assert!(pattern_match(b"*", b"a/b"));
        assert!(pattern_match(b"%", b"a"));
        assert!(!pattern_match(b"%", b"a/b"));
        assert!(pattern_match(b"a/%", b"a/b"));
        assert!(pattern_match(b"S*t", b"Sent"));
        assert!(pattern_match(b"%3/%", b"test3/test4"));
        assert!(!pattern_match(b"%t*4", b"x/y"));
        assert!(pattern_match(b"", b""));
        assert!(!pattern_match(b"", b"a"));
        // Many stars stay cheap.
        let hostile = "*a".repeat(200) + "b";
        assert!(!pattern_match(hostile.as_bytes(), "a".repeat(1000).as_bytes()));
    }

    #[test]
    fn listings() {
        let boxes: Vec<(String, Option<SpecialUse>)> = ["INBOX", "m", "m/t1", "m/t2", "m/t2/t1", "m/t4/t5", "m/t8/t8"]
            .iter()
            .map(|n| (n.to_string(), None))
            .collect();
        let subs: Vec<String> =
            ["m/t1", "m/t2/t1", "m/t6", "m/t8/t8", "m/t8/t9"].iter().map(|s| s.to_string()).collect();
        let req =
            |pat: &[&str]| Request { patterns: pat.iter().map(|s| s.to_string()).collect(), ..Request::default() };
        assert_eq!(
            names(&list(&req(&["m/%"]), &boxes, &subs)),
            [
                "m/t1 \\HasNoChildren",
                "m/t2 \\HasChildren",
                "m/t4 \\Noselect \\HasChildren",
                "m/t8 \\Noselect \\HasChildren"
            ]
        );
        let sub = Request { subscribed: true, ..req(&["m/*"]) };
        assert_eq!(
            names(&list(&sub, &boxes, &subs)),
            [
                "m/t1 \\Subscribed \\HasNoChildren",
                "m/t2/t1 \\Subscribed \\HasNoChildren",
                "m/t6 \\Subscribed \\NonExistent",
                "m/t8/t8 \\Subscribed \\HasNoChildren",
                "m/t8/t9 \\Subscribed \\NonExistent"
            ]
        );
        let rec = Request { subscribed: true, recursive: true, ..req(&["m/t2%"]) };
        assert_eq!(names(&list(&rec, &boxes, &subs)), ["m/t2 \\HasChildren +CHILDINFO"]);
        let rec = Request { subscribed: true, recursive: true, ..req(&["m/t2", "m/t2/t1"]) };
        assert_eq!(names(&list(&rec, &boxes, &subs)), ["m/t2/t1 \\Subscribed \\HasNoChildren"]);
        let lsub = Request { lsub: true, ..req(&["m/%"]) };
        assert_eq!(names(&list(&lsub, &boxes, &subs)), ["m/t1 ", "m/t2 \\Noselect", "m/t6 ", "m/t8 \\Noselect"]);
        assert_eq!(names(&list(&req(&["inbox"]), &boxes, &subs)), ["INBOX \\HasNoChildren"]);
    }
}
