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

/// What matching may spend in one run: compiled regular expressions (each key once)
/// and a budget of steps, so no script ties up a delivery.
#[derive(Debug)]
pub(crate) struct Work {
    pub budget: u64,
    regexes: std::collections::HashMap<(String, bool), Option<regex::Regex>>,
}

impl Work {
    pub(crate) fn new(budget: u64) -> Work {
        Work { budget, regexes: std::collections::HashMap::new() }
    }
    pub(crate) fn exhausted(&self) -> bool {
        self.budget == 0
    }
    fn spend(&mut self, n: usize) -> bool {
        self.budget = self.budget.saturating_sub(n as u64 + 1);
        self.budget > 0
    }
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
    pub(crate) fn one(&self, value: &str, key: &str, captures: Option<&mut Vec<String>>, work: &mut Work) -> bool {
        if !work.spend(value.len() + key.len()) {
            return false;
        }
        match self.mt {
            MatchType::Is => self.equal(value, key),
            MatchType::Contains => match self.cmp {
                Cmp::Octet => value.contains(key),
                _ => value.to_ascii_lowercase().contains(&key.to_ascii_lowercase()),
            },
            MatchType::Matches => glob(value, key, self.cmp == Cmp::CaseMap, captures, &mut work.budget),
            MatchType::Regex => match work
                .regexes
                .entry((key.to_string(), self.cmp == Cmp::CaseMap))
                .or_insert_with(|| regex(key, self.cmp).ok())
            {
                Some(re) => match re.captures(value) {
                    Some(c) => {
                        if let Some(out) = captures {
                            out.clear();
                            out.extend(c.iter().map(|m| m.map_or(String::new(), |m| m.as_str().to_string())));
                        }
                        true
                    }
                    None => false,
                },
                None => false,
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
/// Captures hold what each wildcard matched, after the whole value. Iterative, with
/// only the last `*` ever widened (enough for `*` and `?`): time O(value × pattern),
/// no recursion, whatever the input.
pub(crate) fn glob(
    value: &str,
    pattern: &str,
    fold: bool,
    captures: Option<&mut Vec<String>>,
    budget: &mut u64,
) -> bool {
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
    // Each pattern position's wildcard number, for its capture.
    let mut slot = vec![usize::MAX; pat.len()];
    let mut wild = 0;
    for (k, p) in pat.iter().enumerate() {
        if !matches!(p, P::Ch(_)) {
            slot[k] = wild;
            wild += 1;
        }
    }
    let v: Vec<char> = value.chars().collect();
    let eq = |a: char, b: char| if fold { a.eq_ignore_ascii_case(&b) } else { a == b };
    let mut spans = vec![(0usize, 0usize); wild];
    let (mut i, mut j) = (0, 0);
    // The last star: its pattern position and where its run starts and now ends.
    let mut star: Option<(usize, usize, usize)> = None;
    while i < v.len() {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match pat.get(j) {
            Some(P::Ch(c)) if eq(v[i], *c) => {
                i += 1;
                j += 1;
            }
            Some(P::One) => {
                spans[slot[j]] = (i, i + 1);
                i += 1;
                j += 1;
            }
            Some(P::Star) => {
                spans[slot[j]] = (i, i);
                star = Some((j, i, i));
                j += 1;
            }
            _ => match star {
                // Widen the last star by one character and try again after it.
                Some((sj, start, end)) => {
                    let end = end + 1;
                    spans[slot[sj]] = (start, end);
                    star = Some((sj, start, end));
                    i = end;
                    j = sj + 1;
                }
                None => return false,
            },
        }
    }
    while let Some(P::Star) = pat.get(j) {
        spans[slot[j]] = (v.len(), v.len());
        j += 1;
    }
    if j != pat.len() {
        return false;
    }
    if let Some(out) = captures {
        out.clear();
        out.push(value.to_string());
        out.extend(spans.iter().map(|&(a, b)| v[a..b].iter().collect::<String>()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_t(value: &str, pattern: &str, fold: bool, captures: Option<&mut Vec<String>>) -> bool {
        glob(value, pattern, fold, captures, &mut u64::MAX.clone())
    }

    fn w() -> Work {
        Work::new(u64::MAX)
    }

    #[test]
    fn globs_and_captures() {
        let mut c = Vec::new();
        assert!(glob_t("Hello World", "hello *", true, Some(&mut c)));
        assert_eq!(c, ["Hello World", "World"]);
        assert!(!glob_t("Hello World", "hello *", false, None));
        assert!(glob_t("a.b@c", "?.*@*", true, Some(&mut c)));
        assert_eq!(c, ["a.b@c", "a", "b", "c"]);
        assert!(glob_t("x*y", "x\\*y", false, None) && !glob_t("xzy", "x\\*y", false, None));
        assert!(glob_t("", "*", false, None) && !glob_t("", "?", false, None));
        // Patterns that explode a backtracking matcher stay quick and right.
        let long = "a".repeat(200);
        assert!(!glob_t(&long, "*a*a*a*a*a*a*a*a*a*a*b", false, None));
        assert!(glob_t(&long, "*a*a*a*a*a*a*a*a*a*a", false, None));
        let body = format!("{}keyword{}", "x".repeat(300_000), "y".repeat(10));
        assert!(glob_t(&body, "*keyword*", false, None), "far into a long value");
        let q = "?".repeat(30_000);
        assert!(!glob_t(&"z".repeat(29_999), &q, false, None) && glob_t(&"z".repeat(30_000), &q, false, None));
        let mut c = Vec::new();
        assert!(glob_t("a-b-c", "*-*", false, Some(&mut c)));
        assert_eq!(c, ["a-b-c", "a", "b-c"], "the first star takes the shortest run");
    }

    #[test]
    fn comparators() {
        let n = Match::new(Cmp::Numeric, MatchType::Value(Rel::Gt));
        assert!(n.one("10", "9", None, &mut w()) && !n.one("9", "10", None, &mut w()));
        assert!(n.one("abc", "99999999999999999999999", None, &mut w()), "no digits is infinity");
        assert!(Match::new(Cmp::Numeric, MatchType::Is).one("007", "7", None, &mut w()));
        let c = Match::new(Cmp::CaseMap, MatchType::Contains);
        assert!(c.one("Hello", "ELL", None, &mut w()));
        assert!(!Match::new(Cmp::Octet, MatchType::Contains).one("Hello", "ELL", None, &mut w()));
        assert!(Match::new(Cmp::Numeric, MatchType::Count(Rel::Ge)).count(3, "2"));
        let mut caps = Vec::new();
        assert!(Match::new(Cmp::CaseMap, MatchType::Regex).one(
            "Re: [list] Hi",
            "\\[(.*)\\]",
            Some(&mut caps),
            &mut w()
        ));
        assert_eq!(caps, ["[list]", "list"]);
        assert!(regex("(", Cmp::Octet).is_err());
    }
}
