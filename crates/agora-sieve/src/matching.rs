//! Comparators (RFC 4790: i;octet, i;ascii-casemap, i;ascii-numeric) and match types
//! (:is, :contains, :matches with its captures, :regex, and RFC 5231's :value/:count).

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Octet,
    CaseMap,
    Numeric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rel {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Rel {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Rel::Gt => o == Ordering::Greater,
            Rel::Ge => o != Ordering::Less,
            Rel::Lt => o == Ordering::Less,
            Rel::Le => o != Ordering::Greater,
            Rel::Eq => o == Ordering::Equal,
            Rel::Ne => o != Ordering::Equal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchType {
    Is,
    Contains,
    Matches,
    Regex,
    Value(Rel),
    Count(Rel),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    pub cmp: Cmp,
    pub mt: MatchType,
}

/// The most a compiled regular expression may take (a complexity limit: the regex
/// engine runs in linear time, so size is what is left to bound).
const REGEX_SIZE: usize = 256 * 1024;

pub(crate) fn regex(pattern: &str, cmp: Cmp) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(cmp == Cmp::CaseMap)
        .size_limit(REGEX_SIZE)
        .dfa_size_limit(REGEX_SIZE)
        .nest_limit(64)
        .build()
        .map_err(|e| e.to_string().lines().last().unwrap_or("invalid").trim().to_string())
}

impl Match {
    pub(crate) fn new(cmp: Cmp, mt: MatchType) -> Match {
        Match { cmp, mt }
    }

    /// One value against one key; with `captures`, :matches and :regex fill in what the
    /// wildcards or groups matched (${0} is the whole value).
    pub(crate) fn one(&self, value: &str, key: &str, captures: Option<&mut Vec<String>>) -> bool {
        match self.mt {
            MatchType::Is => self.equal(value, key),
            MatchType::Contains => match self.cmp {
                Cmp::Octet => value.contains(key),
                _ => value.to_ascii_lowercase().contains(&key.to_ascii_lowercase()),
            },
            MatchType::Matches => glob(value, key, self.cmp == Cmp::CaseMap, captures),
            MatchType::Regex => match regex(key, self.cmp) {
                Ok(re) => match re.captures(value) {
                    Some(c) => {
                        if let Some(out) = captures {
                            out.clear();
                            out.extend(c.iter().map(|m| m.map_or(String::new(), |m| m.as_str().to_string())));
                        }
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            },
            MatchType::Value(rel) => rel.holds(self.order(value, key)),
            // Counted by the caller.
            MatchType::Count(_) => false,
        }
    }

    /// Whether the number of values stands in the relation to the key.
    pub(crate) fn count(&self, n: usize, key: &str) -> bool {
        match self.mt {
            MatchType::Count(rel) => rel.holds(self.order(&n.to_string(), key)),
            _ => false,
        }
    }

    fn equal(&self, a: &str, b: &str) -> bool {
        match self.cmp {
            Cmp::Octet => a == b,
            Cmp::CaseMap => a.eq_ignore_ascii_case(b),
            Cmp::Numeric => numeric_cmp(a, b) == Ordering::Equal,
        }
    }

    fn order(&self, a: &str, b: &str) -> Ordering {
        match self.cmp {
            Cmp::Octet => a.as_bytes().cmp(b.as_bytes()),
            Cmp::CaseMap => a.to_ascii_lowercase().as_bytes().cmp(b.to_ascii_lowercase().as_bytes()),
            Cmp::Numeric => numeric_cmp(a, b),
        }
    }
}

/// i;ascii-numeric: the leading digits as a number (of any size); a value without
/// any is bigger than every number.
fn numeric_cmp(a: &str, b: &str) -> Ordering {
    let num = |s: &str| {
        let d = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
        (!d.is_empty()).then(|| {
            let t = d.trim_start_matches('0');
            (t.len(), t.to_string())
        })
    };
    match (num(a), num(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(&y),
    }
}

/// Sieve's wildcard match: `*` any run, `?` one character, `\` escapes the next one.
/// Captures hold what each wildcard matched, after the whole value.
pub(crate) fn glob(value: &str, pattern: &str, fold: bool, captures: Option<&mut Vec<String>>) -> bool {
    #[derive(Clone, Copy)]
    enum P {
        Star,
        One,
        Ch(char),
    }
    let mut pat = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        pat.push(match c {
            '*' => P::Star,
            '?' => P::One,
            '\\' => P::Ch(it.next().unwrap_or('\\')),
            c => P::Ch(c),
        });
    }
    let v: Vec<char> = value.chars().collect();
    let eq = |a: char, b: char| if fold { a.eq_ignore_ascii_case(&b) } else { a == b };
    // Backtracking with the positions of each wildcard, bounded: at most one retry per
    // star per value position (the classic linear-ish greedy-with-fallback matcher).
    let mut spans: Vec<(usize, usize)> = Vec::new();
    fn go(
        pat: &[P],
        v: &[char],
        pi: usize,
        vi: usize,
        spans: &mut Vec<(usize, usize)>,
        eq: &dyn Fn(char, char) -> bool,
        budget: &mut u32,
    ) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if pi == pat.len() {
            return vi == v.len();
        }
        match pat[pi] {
            P::Ch(c) => vi < v.len() && eq(v[vi], c) && go(pat, v, pi + 1, vi + 1, spans, eq, budget),
            P::One => {
                if vi >= v.len() {
                    return false;
                }
                spans.push((vi, vi + 1));
                if go(pat, v, pi + 1, vi + 1, spans, eq, budget) {
                    return true;
                }
                spans.pop();
                false
            }
            P::Star => {
                // Shortest first, so captures are the leftmost, shortest ones (RFC 5229 §3.2).
                for end in vi..=v.len() {
                    spans.push((vi, end));
                    if go(pat, v, pi + 1, end, spans, eq, budget) {
                        return true;
                    }
                    spans.pop();
                }
                false
            }
        }
    }
    let mut budget = 200_000u32;
    let ok = go(&pat, &v, 0, 0, &mut spans, &eq, &mut budget);
    if ok && let Some(out) = captures {
        out.clear();
        out.push(value.to_string());
        out.extend(spans.iter().map(|&(a, b)| v[a..b].iter().collect::<String>()));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_captures() {
        let mut c = Vec::new();
        assert!(glob("Hello World", "hello *", true, Some(&mut c)));
        assert_eq!(c, ["Hello World", "World"]);
        assert!(!glob("Hello World", "hello *", false, None));
        assert!(glob("a.b@c", "?.*@*", true, Some(&mut c)));
        assert_eq!(c, ["a.b@c", "a", "b", "c"]);
        assert!(glob("x*y", "x\\*y", false, None) && !glob("xzy", "x\\*y", false, None));
        assert!(glob("", "*", false, None) && !glob("", "?", false, None));
        // A pattern made to explode gives up rather than spin.
        let long = "a".repeat(200);
        assert!(!glob(&long, "*a*a*a*a*a*a*a*a*a*a*b", false, None));
    }

    #[test]
    fn comparators() {
        let n = Match::new(Cmp::Numeric, MatchType::Value(Rel::Gt));
        assert!(n.one("10", "9", None) && !n.one("9", "10", None));
        assert!(n.one("abc", "99999999999999999999999", None), "no digits is infinity");
        assert!(Match::new(Cmp::Numeric, MatchType::Is).one("007", "7", None));
        let c = Match::new(Cmp::CaseMap, MatchType::Contains);
        assert!(c.one("Hello", "ELL", None));
        assert!(!Match::new(Cmp::Octet, MatchType::Contains).one("Hello", "ELL", None));
        assert!(Match::new(Cmp::Numeric, MatchType::Count(Rel::Ge)).count(3, "2"));
        let mut caps = Vec::new();
        assert!(Match::new(Cmp::CaseMap, MatchType::Regex).one("Re: [list] Hi", "\\[(.*)\\]", Some(&mut caps)));
        assert_eq!(caps, ["[list]", "list"]);
        assert!(regex("(", Cmp::Octet).is_err());
    }
}
