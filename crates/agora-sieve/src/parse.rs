//! The Sieve grammar (RFC 5228 §8.2) into a tree of commands and tests, then each
//! command and test checked against its signature and the extensions the script
//! requires, giving the typed program that `run` walks.

use std::collections::HashSet;

use crate::lex::{Spanned, Tok, lex};
use crate::matching::{Cmp, Match, MatchType, Rel};
use crate::{EXTENSIONS, Error};

/// Blocks and tests nested deeper than this are refused.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone)]
enum Arg {
    Tag(String),
    Num(u64),
    /// A string (false) or a string list (true).
    Strs(Vec<String>, bool),
}

#[derive(Debug, Clone)]
struct RawTest {
    name: String,
    line: usize,
    args: Vec<Arg>,
    tests: Vec<RawTest>,
}

#[derive(Debug, Clone)]
struct RawCmd {
    test: RawTest,
    block: Option<Vec<RawCmd>>,
}

struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(1, |t| t.1)
    }
    fn err<T>(&self, m: impl Into<String>) -> Result<T, Error> {
        Err(Error { line: self.line(), message: m.into() })
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t
    }

    fn commands(&mut self, depth: usize) -> Result<Vec<RawCmd>, Error> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if *t == Tok::RBrace {
                break;
            }
            out.push(self.command(depth)?);
        }
        Ok(out)
    }

    fn command(&mut self, depth: usize) -> Result<RawCmd, Error> {
        if depth > MAX_DEPTH {
            return self.err("blocks nested too deeply");
        }
        let line = self.line();
        let name = match self.next() {
            Some(Tok::Ident(n)) => n,
            _ => return Err(Error { line, message: "a command was expected".into() }),
        };
        let (args, tests) = self.arguments(depth)?;
        let block = match self.next() {
            Some(Tok::Semicolon) => None,
            Some(Tok::LBrace) => {
                let b = self.commands(depth + 1)?;
                if self.next() != Some(Tok::RBrace) {
                    return self.err("missing '}'");
                }
                Some(b)
            }
            _ => return Err(Error { line, message: format!("missing ';' after {name}") }),
        };
        Ok(RawCmd { test: RawTest { name, line, args, tests }, block })
    }

    fn arguments(&mut self, depth: usize) -> Result<(Vec<Arg>, Vec<RawTest>), Error> {
        let mut args = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Tag(_)) => {
                    if let Some(Tok::Tag(t)) = self.next() {
                        args.push(Arg::Tag(t));
                    }
                }
                Some(Tok::Number(_)) => {
                    if let Some(Tok::Number(n)) = self.next() {
                        args.push(Arg::Num(n));
                    }
                }
                Some(Tok::Str(_)) => {
                    if let Some(Tok::Str(s)) = self.next() {
                        args.push(Arg::Strs(vec![s], false));
                    }
                }
                Some(Tok::LBracket) => {
                    self.next();
                    let mut l = Vec::new();
                    loop {
                        match self.next() {
                            Some(Tok::Str(s)) => l.push(s),
                            _ => return self.err("a string was expected in the list"),
                        }
                        match self.next() {
                            Some(Tok::Comma) => continue,
                            Some(Tok::RBracket) => break,
                            _ => return self.err("missing ']'"),
                        }
                    }
                    args.push(Arg::Strs(l, true));
                }
                _ => break,
            }
        }
        let mut tests = Vec::new();
        match self.peek() {
            Some(Tok::Ident(_)) => tests.push(self.test(depth + 1)?),
            Some(Tok::LParen) => {
                self.next();
                loop {
                    tests.push(self.test(depth + 1)?);
                    match self.next() {
                        Some(Tok::Comma) => continue,
                        Some(Tok::RParen) => break,
                        _ => return self.err("missing ')'"),
                    }
                }
            }
            _ => {}
        }
        Ok((args, tests))
    }

    fn test(&mut self, depth: usize) -> Result<RawTest, Error> {
        if depth > MAX_DEPTH {
            return self.err("tests nested too deeply");
        }
        let line = self.line();
        let name = match self.next() {
            Some(Tok::Ident(n)) => n,
            _ => return Err(Error { line, message: "a test was expected".into() }),
        };
        let (args, tests) = self.arguments(depth)?;
        Ok(RawTest { name, line, args, tests })
    }
}

/// An `:index` (RFC 5260 §6): the Nth field, counted from the end with `:last`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Index {
    pub n: u64,
    pub last: bool,
}

/// Which part of an address a test compares (RFC 5228 §2.7.4, RFC 5233).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    All,
    Local,
    Domain,
    User,
    Detail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transform {
    Raw,
    Text,
    Content,
}

#[derive(Debug, Clone)]
pub(crate) enum Zone {
    /// The server's own zone (UTC).
    Local,
    Original,
    Offset(i64),
}

#[derive(Debug, Clone)]
pub(crate) enum DupId {
    MessageId,
    Header(String),
    Unique(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    True,
    False,
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
    Address { m: Match, part: Part, index: Option<Index>, headers: Vec<String>, keys: Vec<String> },
    Envelope { m: Match, part: Part, fields: Vec<String>, keys: Vec<String> },
    Header { m: Match, index: Option<Index>, headers: Vec<String>, keys: Vec<String> },
    Exists(Vec<String>),
    Size { over: bool, limit: u64 },
    Body { m: Match, transform: Transform, types: Vec<String>, keys: Vec<String> },
    HasFlag { m: Match, vars: Option<Vec<String>>, keys: Vec<String> },
    Str { m: Match, sources: Vec<String>, keys: Vec<String> },
    Date { m: Match, zone: Zone, index: Option<Index>, header: String, part: String, keys: Vec<String> },
    CurrentDate { m: Match, zone: Zone, part: String, keys: Vec<String> },
    MailboxExists(Vec<String>),
    Duplicate { handle: String, id: DupId, seconds: Option<u64>, last: bool },
    Suite(crate::testsuite::Test),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum FlagOp {
    Set,
    Add,
    Remove,
}

/// `set`'s modifiers (RFC 5229 §4.1), applied in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Modifier {
    Lower,
    Upper,
    LowerFirst,
    UpperFirst,
    QuoteWildcard,
    QuoteRegex,
    Length,
}

impl Modifier {
    fn precedence(self) -> u8 {
        match self {
            Modifier::Lower | Modifier::Upper => 40,
            Modifier::LowerFirst | Modifier::UpperFirst => 30,
            Modifier::QuoteWildcard | Modifier::QuoteRegex => 20,
            Modifier::Length => 10,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct VacationCmd {
    pub seconds: Option<u64>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub addresses: Vec<String>,
    pub mime: bool,
    pub handle: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    If(Vec<(Test, Vec<Cmd>)>, Option<Vec<Cmd>>),
    Stop,
    Return,
    Keep { flags: Option<Vec<String>> },
    Discard,
    FileInto { mailbox: String, copy: bool, create: bool, flags: Option<Vec<String>> },
    Redirect { address: String, copy: bool },
    Reject { reason: String, extended: bool },
    Flags { op: FlagOp, var: Option<String>, flags: Vec<String> },
    Set { mods: Vec<Modifier>, name: String, value: String },
    Vacation(Box<VacationCmd>),
    Include { global: bool, once: bool, optional: bool, name: String },
    Global(Vec<String>),
    AddHeader { last: bool, name: String, value: String },
    DeleteHeader { index: Option<Index>, m: Match, name: String, patterns: Option<Vec<String>> },
    Suite(crate::testsuite::Command),
}

/// What a script is made of once checked.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub cmds: Vec<Cmd>,
    pub caps: HashSet<String>,
}

pub(crate) fn program(text: &str) -> Result<Program, Error> {
    program_in(text, false)
}

/// With `testsuite`, the commands and tests of the public Sieve test suites' own
/// extension (vnd.dovecot.testsuite) are known too; only the test runner asks for them.
pub(crate) fn program_in(text: &str, testsuite: bool) -> Result<Program, Error> {
    let toks = lex(text)?;
    let mut p = Parser { toks, pos: 0 };
    let raw = p.commands(0)?;
    if p.pos < p.toks.len() {
        return p.err("unexpected '}'");
    }
    let mut c = Checker { caps: HashSet::new(), testsuite };
    let first = raw.iter().take_while(|r| r.test.name == "require").count();
    for r in &raw[..first] {
        c.require(r)?;
    }
    let mut rest = raw[first..].to_vec();
    if c.has("encoded-character") {
        for r in &mut rest {
            decode_cmd(r)?;
        }
    }
    let cmds = c.block(&rest)?;
    Ok(Program { cmds, caps: c.caps })
}

struct Checker {
    caps: HashSet<String>,
    testsuite: bool,
}

/// The arguments of one command or test, taken apart as its signature says.
pub(crate) struct Args<'a> {
    name: &'a str,
    line: usize,
    items: Vec<Arg>,
    pos: usize,
}

impl Args<'_> {
    pub(crate) fn err<T>(&self, m: impl std::fmt::Display) -> Result<T, Error> {
        Err(Error { line: self.line, message: format!("{}: {m}", self.name) })
    }
    /// The next tag, if the next argument is one.
    pub(crate) fn tag(&mut self) -> Option<String> {
        match self.items.get(self.pos) {
            Some(Arg::Tag(t)) => {
                self.pos += 1;
                Some(t.clone())
            }
            _ => None,
        }
    }
    pub(crate) fn string(&mut self, what: &str) -> Result<String, Error> {
        match self.items.get(self.pos) {
            Some(Arg::Strs(l, false)) => {
                self.pos += 1;
                Ok(l[0].clone())
            }
            _ => self.err(format!("{what} must be a string")),
        }
    }
    pub(crate) fn strings(&mut self, what: &str) -> Result<Vec<String>, Error> {
        match self.items.get(self.pos) {
            Some(Arg::Strs(l, _)) => {
                self.pos += 1;
                Ok(l.clone())
            }
            _ => self.err(format!("{what} must be a string list")),
        }
    }
    pub(crate) fn number(&mut self, what: &str) -> Result<u64, Error> {
        match self.items.get(self.pos) {
            Some(Arg::Num(n)) => {
                self.pos += 1;
                Ok(*n)
            }
            _ => self.err(format!("{what} must be a number")),
        }
    }
    fn at_tag(&self) -> bool {
        matches!(self.items.get(self.pos), Some(Arg::Tag(_)))
    }
    pub(crate) fn done(&self) -> Result<(), Error> {
        if self.pos < self.items.len() {
            return self.err("too many arguments");
        }
        Ok(())
    }
}

/// The tags several tests share: comparator, match type, address part, index, zone.
#[derive(Default)]
pub(crate) struct Common {
    pub(crate) cmp: Option<Cmp>,
    pub(crate) mt: Option<MatchType>,
    part: Option<Part>,
    pub(crate) index: Option<Index>,
    last: bool,
    zone: Option<Zone>,
}

impl Checker {
    fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }
    fn need(&self, a: &Args, cap: &str) -> Result<(), Error> {
        if self.has(cap) { Ok(()) } else { a.err(format!("needs require \"{cap}\"")) }
    }

    fn require(&mut self, r: &RawCmd) -> Result<(), Error> {
        let a = Args { name: "require", line: r.test.line, items: r.test.args.clone(), pos: 0 };
        if r.block.is_some() || !r.test.tests.is_empty() || a.items.len() != 1 {
            return a.err("takes one string list");
        }
        let mut a = a;
        for cap in a.strings("the capabilities")? {
            let cap = cap.to_ascii_lowercase();
            if cap == "comparator-i;octet" || cap == "comparator-i;ascii-casemap" {
                continue;
            }
            let suite = self.testsuite && cap == "vnd.dovecot.testsuite";
            if !suite && !EXTENSIONS.contains(&cap.as_str()) {
                return a.err(format!("unknown extension \"{cap}\""));
            }
            // Requiring an extension brings what it is built on.
            if cap == "vacation-seconds" {
                self.caps.insert("vacation".into());
            }
            self.caps.insert(cap);
        }
        Ok(())
    }

    /// Takes one of the shared tags, if `t` is one; false if it is not.
    fn common(&self, a: &mut Args, t: &str, c: &mut Common) -> Result<bool, Error> {
        let twice = |a: &Args| a.err(format!(":{t} given twice or with a conflicting tag"));
        match t {
            "comparator" => {
                if c.cmp.is_some() {
                    return twice(a);
                }
                let name = a.string("the comparator")?.to_ascii_lowercase();
                c.cmp = Some(match name.as_str() {
                    "i;octet" => Cmp::Octet,
                    "i;ascii-casemap" => Cmp::CaseMap,
                    "i;ascii-numeric" => {
                        self.need(a, "comparator-i;ascii-numeric")?;
                        Cmp::Numeric
                    }
                    _ => return a.err(format!("unknown comparator \"{name}\"")),
                });
            }
            "is" | "contains" | "matches" | "regex" | "value" | "count" => {
                if c.mt.is_some() {
                    return twice(a);
                }
                c.mt = Some(match t {
                    "is" => MatchType::Is,
                    "contains" => MatchType::Contains,
                    "matches" => MatchType::Matches,
                    "regex" => {
                        self.need(a, "regex")?;
                        MatchType::Regex
                    }
                    _ => {
                        self.need(a, "relational")?;
                        let op = a.string("the relation")?.to_ascii_lowercase();
                        let rel = match op.as_str() {
                            "gt" => Rel::Gt,
                            "ge" => Rel::Ge,
                            "lt" => Rel::Lt,
                            "le" => Rel::Le,
                            "eq" => Rel::Eq,
                            "ne" => Rel::Ne,
                            _ => return a.err(format!("unknown relation \"{op}\"")),
                        };
                        if t == "value" { MatchType::Value(rel) } else { MatchType::Count(rel) }
                    }
                });
            }
            "all" | "localpart" | "domain" | "user" | "detail" => {
                if c.part.is_some() {
                    return twice(a);
                }
                if t == "user" || t == "detail" {
                    self.need(a, "subaddress")?;
                }
                c.part = Some(match t {
                    "all" => Part::All,
                    "localpart" => Part::Local,
                    "domain" => Part::Domain,
                    "user" => Part::User,
                    _ => Part::Detail,
                });
            }
            "index" => {
                self.need(a, "index")?;
                let n = a.number("the index")?;
                if n == 0 {
                    return a.err("an index counts from 1");
                }
                c.index = Some(Index { n, last: false });
            }
            "last" => {
                self.need(a, "index")?;
                c.last = true;
            }
            "zone" | "originalzone" => {
                if c.zone.is_some() {
                    return twice(a);
                }
                c.zone = Some(if t == "zone" {
                    let z = a.string("the zone")?;
                    match zone_offset(&z) {
                        Some(o) => Zone::Offset(o),
                        None => return a.err(format!("\"{z}\" is not a zone like +0100")),
                    }
                } else {
                    Zone::Original
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The match from the shared tags, checked against the comparator.
    fn matcher(&self, a: &Args, c: &Common, keys: &[String]) -> Result<Match, Error> {
        let m = Match::new(c.cmp.unwrap_or(Cmp::CaseMap), c.mt.unwrap_or(MatchType::Is));
        if m.cmp == Cmp::Numeric && matches!(m.mt, MatchType::Contains | MatchType::Matches | MatchType::Regex) {
            return a.err("i;ascii-numeric compares only whole values");
        }
        if m.mt == MatchType::Regex && !self.has("variables") {
            for k in keys {
                if let Err(e) = crate::matching::regex(k, m.cmp) {
                    return a.err(format!("bad regular expression \"{k}\": {e}"));
                }
            }
        }
        Ok(m)
    }

    /// test_error's tags: the shared ones, checked, as a match and an index.
    fn suite_common(&self, a: &mut Args, t: &str, c: &mut Common) -> Result<bool, Error> {
        self.common(a, t, c)
    }

    fn index(&self, a: &Args, c: &Common) -> Result<Option<Index>, Error> {
        match (c.index, c.last) {
            (Some(i), last) => Ok(Some(Index { last, ..i })),
            (None, true) => a.err(":last needs :index"),
            (None, false) => Ok(None),
        }
    }

    fn test(&self, r: &RawTest) -> Result<Test, Error> {
        let mut a = Args { name: &r.name, line: r.line, items: r.args.clone(), pos: 0 };
        let no_tests = |a: &Args| if r.tests.is_empty() { Ok(()) } else { a.err("takes no tests") };
        let mut c = Common::default();
        let t = match r.name.as_str() {
            "true" | "false" => {
                a.done()?;
                no_tests(&a)?;
                if r.name == "true" { Test::True } else { Test::False }
            }
            "not" => {
                a.done()?;
                if r.tests.len() != 1 {
                    return a.err("takes one test");
                }
                Test::Not(Box::new(self.test(&r.tests[0])?))
            }
            "allof" | "anyof" => {
                a.done()?;
                if r.tests.is_empty() {
                    return a.err("takes a list of tests");
                }
                let l = r.tests.iter().map(|t| self.test(t)).collect::<Result<Vec<_>, _>>()?;
                if r.name == "allof" { Test::AllOf(l) } else { Test::AnyOf(l) }
            }
            "exists" => {
                no_tests(&a)?;
                let h = a.strings("the header names")?;
                a.done()?;
                Test::Exists(h)
            }
            "size" => {
                no_tests(&a)?;
                let over = match a.tag().as_deref() {
                    Some("over") => true,
                    Some("under") => false,
                    _ => return a.err("needs :over or :under"),
                };
                let limit = a.number("the limit")?;
                a.done()?;
                Test::Size { over, limit }
            }
            "address" | "envelope" | "header" | "body" | "hasflag" | "string" | "date" | "currentdate" => {
                no_tests(&a)?;
                match r.name.as_str() {
                    "envelope" => self.need(&a, "envelope")?,
                    "body" => self.need(&a, "body")?,
                    "hasflag" => self.need(&a, "imap4flags")?,
                    "string" => self.need(&a, "variables")?,
                    "date" | "currentdate" => self.need(&a, "date")?,
                    _ => {}
                }
                let mut transform = None;
                let mut types = Vec::new();
                while let Some(t) = a.tag() {
                    if r.name == "body" && ["raw", "text", "content"].contains(&t.as_str()) {
                        if transform.is_some() {
                            return a.err("one transform only");
                        }
                        transform = Some(match t.as_str() {
                            "raw" => Transform::Raw,
                            "text" => Transform::Text,
                            _ => {
                                types = a.strings("the content types")?;
                                Transform::Content
                            }
                        });
                        continue;
                    }
                    if !self.common(&mut a, &t, &mut c)? {
                        return a.err(format!("unknown tag :{t}"));
                    }
                    let ok = match t.as_str() {
                        "all" | "localpart" | "domain" | "user" | "detail" => {
                            r.name == "address" || r.name == "envelope"
                        }
                        "index" | "last" => ["address", "header", "date"].contains(&r.name.as_str()),
                        "zone" | "originalzone" => r.name == "date" || (r.name == "currentdate" && t == "zone"),
                        _ => true,
                    };
                    if !ok {
                        return a.err(format!("does not take :{t}"));
                    }
                }
                let positional = self.positional(&mut a)?;
                let want = match r.name.as_str() {
                    "date" => 3,
                    "currentdate" => 2,
                    "body" => 1,
                    "hasflag" => 0,
                    _ => 2,
                };
                let (mut first, keys) = match (positional.len(), r.name.as_str()) {
                    (1, "hasflag") => (None, positional[0].clone()),
                    (2, "hasflag") => (Some(positional[0].clone()), positional[1].clone()),
                    (n, _) if n == want && n > 0 => (None, positional[n - 1].clone()),
                    _ => return a.err("wrong number of arguments"),
                };
                if r.name == "string" && c.cmp.is_none() {
                    // The string test compares octets unless told (as Pigeonhole does).
                    c.cmp = Some(Cmp::Octet);
                }
                let m = self.matcher(&a, &c, &keys)?;
                let index = self.index(&a, &c)?;
                let part = c.part.unwrap_or(Part::All);
                let zone = c.zone.clone().unwrap_or(Zone::Local);
                let one = |a: &Args, l: &Vec<String>, what: &str| -> Result<String, Error> {
                    if l.len() == 1 { Ok(l[0].clone()) } else { a.err(format!("{what} must be one string")) }
                };
                match r.name.as_str() {
                    "address" => Test::Address { m, part, index, headers: positional[0].clone(), keys },
                    "envelope" => {
                        for f in &positional[0] {
                            if !["from", "to", "auth"].contains(&f.to_ascii_lowercase().as_str()) {
                                return a.err(format!("no envelope part \"{f}\""));
                            }
                        }
                        Test::Envelope { m, part, fields: positional[0].clone(), keys }
                    }
                    "header" => Test::Header { m, index, headers: positional[0].clone(), keys },
                    "body" => Test::Body { m, transform: transform.unwrap_or(Transform::Text), types, keys },
                    "hasflag" => Test::HasFlag { m, vars: first.take(), keys },
                    "string" => Test::Str { m, sources: positional[0].clone(), keys },
                    "date" => Test::Date {
                        m,
                        zone,
                        index,
                        header: one(&a, &positional[0], "the header name")?,
                        part: date_part(&a, &positional[1])?,
                        keys,
                    },
                    _ => Test::CurrentDate { m, zone, part: date_part(&a, &positional[0])?, keys },
                }
            }
            "mailboxexists" => {
                self.need(&a, "mailbox")?;
                no_tests(&a)?;
                let l = a.strings("the mailbox names")?;
                a.done()?;
                Test::MailboxExists(l)
            }
            "duplicate" => {
                self.need(&a, "duplicate")?;
                no_tests(&a)?;
                let (mut handle, mut id, mut seconds, mut last) = (String::new(), DupId::MessageId, None, false);
                while let Some(t) = a.tag() {
                    match t.as_str() {
                        "handle" => handle = a.string("the handle")?,
                        "header" if matches!(id, DupId::MessageId) => id = DupId::Header(a.string("the header")?),
                        "uniqueid" if matches!(id, DupId::MessageId) => id = DupId::Unique(a.string("the id")?),
                        "seconds" => seconds = Some(a.number("the seconds")?),
                        "last" => last = true,
                        _ => return a.err(format!("unknown or conflicting tag :{t}")),
                    }
                }
                a.done()?;
                Test::Duplicate { handle, id, seconds, last }
            }
            other if self.has("vnd.dovecot.testsuite") && other.starts_with("test_") => {
                Test::Suite(crate::testsuite::test(&mut a, other, |a, t, c| self.suite_common(a, t, c))?)
            }
            other => return a.err(format!("unknown test \"{other}\"")),
        };
        Ok(t)
    }

    /// The string-list arguments after the tags.
    fn positional(&self, a: &mut Args) -> Result<Vec<Vec<String>>, Error> {
        let mut out = Vec::new();
        while a.pos < a.items.len() {
            if a.at_tag() {
                return a.err("tags must come before the other arguments");
            }
            out.push(a.strings("an argument")?);
        }
        Ok(out)
    }

    fn command(&mut self, r: &RawCmd) -> Result<Cmd, Error> {
        let t = &r.test;
        let mut a = Args { name: &t.name, line: t.line, items: t.args.clone(), pos: 0 };
        if t.name != "if" && t.name != "elsif" && t.name != "else" && t.name != "test" {
            if r.block.is_some() {
                return a.err("takes no block");
            }
            if !t.tests.is_empty() {
                return a.err("takes no test");
            }
        }
        let cmd = match t.name.as_str() {
            "if" => {
                let block = r.block.as_ref().ok_or(Error { line: t.line, message: "if needs a block".into() })?;
                a.done()?;
                if t.tests.len() != 1 {
                    return a.err("takes one test");
                }
                let test = self.test(&t.tests[0])?;
                let body = self.block(block)?;
                Cmd::If(vec![(test, body)], None)
            }
            "elsif" | "else" => return a.err("without if"),
            "require" => return a.err("must come before any other command"),
            "stop" => {
                a.done()?;
                Cmd::Stop
            }
            "keep" | "fileinto" => {
                let mut flags = None;
                let (mut copy, mut create) = (false, false);
                if t.name == "fileinto" {
                    self.need(&a, "fileinto")?;
                }
                while let Some(tag) = a.tag() {
                    match tag.as_str() {
                        "flags" => {
                            self.need(&a, "imap4flags")?;
                            flags = Some(a.strings("the flags")?);
                        }
                        "copy" if t.name == "fileinto" => {
                            self.need(&a, "copy")?;
                            copy = true;
                        }
                        "create" if t.name == "fileinto" => {
                            self.need(&a, "mailbox")?;
                            create = true;
                        }
                        _ => return a.err(format!("unknown tag :{tag}")),
                    }
                }
                if t.name == "keep" {
                    a.done()?;
                    Cmd::Keep { flags }
                } else {
                    let mailbox = a.string("the mailbox")?;
                    a.done()?;
                    Cmd::FileInto { mailbox, copy, create, flags }
                }
            }
            "discard" => {
                a.done()?;
                Cmd::Discard
            }
            "redirect" => {
                let mut copy = false;
                while let Some(tag) = a.tag() {
                    match tag.as_str() {
                        "copy" => {
                            self.need(&a, "copy")?;
                            copy = true;
                        }
                        _ => return a.err(format!("unknown tag :{tag}")),
                    }
                }
                let address = a.string("the address")?;
                a.done()?;
                if !self.has("variables") && crate::run::normalize_address(&address).is_none() {
                    return a.err(format!("\"{address}\" is not an address"));
                }
                Cmd::Redirect { address, copy }
            }
            "reject" | "ereject" => {
                self.need(&a, &t.name)?;
                let reason = a.string("the reason")?;
                a.done()?;
                Cmd::Reject { reason, extended: t.name == "ereject" }
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need(&a, "imap4flags")?;
                let first = a.strings("the flags")?;
                let cmd = if a.pos < a.items.len() {
                    let flags = a.strings("the flags")?;
                    if first.len() != 1 {
                        return a.err("the variable name must be one string");
                    }
                    self.variable_name(&a, &first[0])?;
                    (Some(first[0].clone()), flags)
                } else {
                    (None, first)
                };
                a.done()?;
                let op = match t.name.as_str() {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                Cmd::Flags { op, var: cmd.0, flags: cmd.1 }
            }
            "set" => {
                self.need(&a, "variables")?;
                let mut mods = Vec::new();
                while let Some(tag) = a.tag() {
                    let m = match tag.as_str() {
                        "lower" => Modifier::Lower,
                        "upper" => Modifier::Upper,
                        "lowerfirst" => Modifier::LowerFirst,
                        "upperfirst" => Modifier::UpperFirst,
                        "quotewildcard" => Modifier::QuoteWildcard,
                        "quoteregex" => {
                            self.need(&a, "regex")?;
                            Modifier::QuoteRegex
                        }
                        "length" => Modifier::Length,
                        _ => return a.err(format!("unknown modifier :{tag}")),
                    };
                    if mods.iter().any(|x: &Modifier| x.precedence() == m.precedence()) {
                        return a.err(format!("modifier :{tag} conflicts with another of the same precedence"));
                    }
                    mods.push(m);
                }
                mods.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
                let name = a.string("the variable name")?;
                self.variable_name(&a, &name)?;
                let value = a.string("the value")?;
                a.done()?;
                Cmd::Set { mods, name: name.to_ascii_lowercase(), value }
            }
            "vacation" => {
                self.need(&a, "vacation")?;
                let mut v = VacationCmd {
                    seconds: None,
                    subject: None,
                    from: None,
                    addresses: Vec::new(),
                    mime: false,
                    handle: None,
                    reason: String::new(),
                };
                while let Some(tag) = a.tag() {
                    match tag.as_str() {
                        "days" if v.seconds.is_none() => v.seconds = Some(a.number("the days")?.saturating_mul(86_400)),
                        "seconds" if v.seconds.is_none() => {
                            self.need(&a, "vacation-seconds")?;
                            v.seconds = Some(a.number("the seconds")?);
                        }
                        "subject" => v.subject = Some(a.string("the subject")?),
                        "from" => v.from = Some(a.string("the from address")?),
                        "addresses" => v.addresses = a.strings("the addresses")?,
                        "mime" => v.mime = true,
                        "handle" => v.handle = Some(a.string("the handle")?),
                        _ => return a.err(format!("unknown or repeated tag :{tag}")),
                    }
                }
                v.reason = a.string("the reason")?;
                a.done()?;
                Cmd::Vacation(Box::new(v))
            }
            "include" => {
                self.need(&a, "include")?;
                let (mut global, mut once, mut optional, mut located) = (false, false, false, false);
                while let Some(tag) = a.tag() {
                    match tag.as_str() {
                        "personal" | "global" if !located => {
                            located = true;
                            global = tag == "global";
                        }
                        "once" => once = true,
                        "optional" => optional = true,
                        _ => return a.err(format!("unknown or repeated tag :{tag}")),
                    }
                }
                let name = a.string("the script name")?;
                a.done()?;
                if !self.has("variables") && !script_name_ok(&name) {
                    return a.err(format!("\"{name}\" is not a script name"));
                }
                Cmd::Include { global, once, optional, name }
            }
            "return" => {
                self.need(&a, "include")?;
                a.done()?;
                Cmd::Return
            }
            "global" => {
                self.need(&a, "include")?;
                self.need(&a, "variables")?;
                let names = a.strings("the variable names")?;
                a.done()?;
                for n in &names {
                    self.variable_name(&a, n)?;
                }
                Cmd::Global(names.iter().map(|n| n.to_ascii_lowercase()).collect())
            }
            "addheader" => {
                self.need(&a, "editheader")?;
                let last = a.tag().map(|t| if t == "last" { Ok(true) } else { a.err(format!("unknown tag :{t}")) });
                let last = last.transpose()?.unwrap_or(false);
                let name = a.string("the field name")?;
                let value = a.string("the value")?;
                a.done()?;
                if !self.has("variables") && !crate::run::field_name_ok(&name) {
                    return a.err(format!("\"{name}\" is not a header field name"));
                }
                Cmd::AddHeader { last, name, value }
            }
            "deleteheader" => {
                self.need(&a, "editheader")?;
                let mut c = Common::default();
                while let Some(tag) = a.tag() {
                    // deleteheader's own :index and :last need no "index" (RFC 5293 §6).
                    match tag.as_str() {
                        "index" => {
                            let n = a.number("the index")?;
                            if n == 0 {
                                return a.err("an index counts from 1");
                            }
                            c.index = Some(Index { n, last: false });
                        }
                        "last" => c.last = true,
                        _ => {
                            if !self.common(&mut a, &tag, &mut c)? || c.part.is_some() || c.zone.is_some() {
                                return a.err(format!("does not take :{tag}"));
                            }
                        }
                    }
                }
                let name = a.string("the field name")?;
                let patterns = if a.pos < a.items.len() { Some(a.strings("the values")?) } else { None };
                a.done()?;
                if matches!(c.mt, Some(MatchType::Count(_))) {
                    return a.err("does not take :count");
                }
                let m = self.matcher(&a, &c, patterns.as_deref().unwrap_or(&[]))?;
                let index = self.index(&a, &c)?;
                Cmd::DeleteHeader { index, m, name, patterns }
            }
            "test" if self.has("vnd.dovecot.testsuite") => {
                let name = a.string("the test name")?;
                a.done()?;
                let block = r.block.as_ref().ok_or(Error { line: t.line, message: "test needs a block".into() })?;
                Cmd::Suite(crate::testsuite::Command::Test { name, body: self.block(block)? })
            }
            other if self.has("vnd.dovecot.testsuite") && other.starts_with("test_") => {
                Cmd::Suite(crate::testsuite::command(&mut a, other)?)
            }
            other => return a.err(format!("unknown command \"{other}\"")),
        };
        Ok(cmd)
    }

    fn variable_name(&self, a: &Args, n: &str) -> Result<(), Error> {
        let ok = !n.is_empty()
            && n.split('.').all(|p| {
                !p.is_empty()
                    && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if ok { Ok(()) } else { a.err(format!("\"{n}\" is not a variable name")) }
    }

    /// A block's commands, with `elsif`/`else` joined to the `if` before them.
    fn block(&mut self, raw: &[RawCmd]) -> Result<Vec<Cmd>, Error> {
        let mut out: Vec<Cmd> = Vec::new();
        for r in raw {
            let t = &r.test;
            match t.name.as_str() {
                "elsif" | "else" => {
                    match out.last() {
                        Some(Cmd::If(_, None)) => {}
                        Some(Cmd::If(_, Some(_))) => {
                            return Err(Error { line: t.line, message: format!("{} after else", t.name) });
                        }
                        _ => return Err(Error { line: t.line, message: format!("{} without if", t.name) }),
                    }
                    let block =
                        r.block.as_ref().ok_or(Error { line: t.line, message: format!("{} needs a block", t.name) })?;
                    if !t.args.is_empty() {
                        return Err(Error { line: t.line, message: format!("{}: takes no arguments", t.name) });
                    }
                    if t.name == "elsif" {
                        if t.tests.len() != 1 {
                            return Err(Error { line: t.line, message: "elsif: takes one test".into() });
                        }
                        let test = self.test(&t.tests[0])?;
                        let body = self.block(block)?;
                        if let Some(Cmd::If(branches, _)) = out.last_mut() {
                            branches.push((test, body));
                        }
                    } else {
                        if !t.tests.is_empty() {
                            return Err(Error { line: t.line, message: "else: takes no test".into() });
                        }
                        let body = self.block(block)?;
                        if let Some(Cmd::If(_, otherwise)) = out.last_mut() {
                            *otherwise = Some(body);
                        }
                    }
                }
                "require" => return Err(Error { line: t.line, message: "require must come first".into() }),
                _ => out.push(self.command(r)?),
            }
        }
        Ok(out)
    }
}

fn date_part(a: &Args, l: &[String]) -> Result<String, Error> {
    const PARTS: &[&str] = &[
        "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601", "std11", "zone",
        "weekday",
    ];
    match l {
        [p] if PARTS.contains(&p.to_ascii_lowercase().as_str()) => Ok(p.to_ascii_lowercase()),
        _ => a.err(format!("unknown date part {l:?}")),
    }
}

/// A script name as `include` may name it: no path, no control characters.
pub(crate) fn script_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// "+0100" or "-0830" as seconds east of UTC.
pub(crate) fn zone_offset(z: &str) -> Option<i64> {
    let b = z.as_bytes();
    if b.len() != 5 || !(b[0] == b'+' || b[0] == b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h: i64 = z[1..3].parse().ok()?;
    let m: i64 = z[3..5].parse().ok()?;
    if m > 59 {
        return None;
    }
    let s = (h * 60 + m) * 60;
    Some(if b[0] == b'-' { -s } else { s })
}

fn decode_cmd(r: &mut RawCmd) -> Result<(), Error> {
    decode_test(&mut r.test)?;
    for c in r.block.iter_mut().flatten() {
        decode_cmd(c)?;
    }
    Ok(())
}

fn decode_test(t: &mut RawTest) -> Result<(), Error> {
    for a in &mut t.args {
        if let Arg::Strs(l, _) = a {
            for s in l {
                *s = encoded_characters(s).map_err(|m| Error { line: t.line, message: m })?;
            }
        }
    }
    for x in &mut t.tests {
        decode_test(x)?;
    }
    Ok(())
}

/// RFC 5228 §2.4.2.4: `${hex:41 42}` and `${unicode:263a}` in strings; anything that
/// is not well formed stays as written.
fn encoded_characters(s: &str) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("${") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let lower = after.as_bytes()[..after.len().min(8)].to_ascii_lowercase();
        let (kind, skip) = if lower.starts_with(b"hex:") {
            (16u8, 4)
        } else if lower.starts_with(b"unicode:") {
            (21, 8)
        } else {
            out.push_str("${");
            rest = after;
            continue;
        };
        let Some(close) = after.find('}') else {
            out.push_str("${");
            rest = after;
            continue;
        };
        let body = &after[skip..close];
        let words: Vec<&str> = body.split_whitespace().collect();
        let ok = !words.is_empty() && words.iter().all(|w| w.len() <= 8 && w.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            out.push_str("${");
            rest = after;
            continue;
        }
        if kind == 16 {
            let bytes: Vec<u8> = words.iter().filter_map(|w| u8::from_str_radix(w, 16).ok()).collect();
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            for w in words {
                let c = u32::from_str_radix(w, 16).ok().and_then(char::from_u32);
                match c {
                    Some(c) => out.push(c),
                    None => return Err(format!("${{unicode:{w}}} is not a character")),
                }
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
