//! Runs Dovecot imaptest's scripted conformance tests against the real server.
//!
//! The scripts are read from `$IMAPTEST_TESTS`, else `../shared/imaptest/tests` beside
//! the project; without either the run says so and checks nothing. Every script whose
//! `capabilities:` the server advertises is run with imaptest's own rules (its parser,
//! list directives, variables and relative sequences, as the imaptest of the scripts' revision); the result of each
//! and the totals are printed. The test fails if the server stops answering, and on any
//! conformance failure unless `AGORA_IMAPTEST_LENIENT=1` (for work in progress).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Agora;

const USER: &str = "imaptest@example.org";
const PASSWORD: &str = "imaptest-pw";
/// The second user that scripts with `user 2: $user2` log in as.
const USER2: &str = "imaptest2@example.org";
const MAILBOX: &str = "imaptest";
/// "Matched everything" from the matchers, as imaptest's UINT_MAX.
const ALL: u32 = u32::MAX;

fn scripts_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("IMAPTEST_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/imaptest/tests"));
    dir.is_dir().then_some(dir)
}

// ---------------------------------------------------------------------------------------
// IMAP arguments, parsed the way imaptest parses both the scripts and the server.

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Nil,
    Atom(Vec<u8>),
    /// Quoted string or literal.
    Str(Vec<u8>),
    List(Vec<Arg>),
}

impl Arg {
    fn astring(&self) -> Option<&[u8]> {
        match self {
            Arg::Atom(s) | Arg::Str(s) => Some(s),
            _ => None,
        }
    }

    fn atom(&self) -> Option<&[u8]> {
        match self {
            Arg::Atom(s) => Some(s),
            _ => None,
        }
    }
}

fn show(args: &[Arg]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match a {
            Arg::Nil => out.push_str("NIL"),
            Arg::Atom(s) => out.push_str(&String::from_utf8_lossy(s)),
            Arg::Str(s) if s.len() > 200 || s.contains(&b'\n') => out.push_str(&format!("{{{}}}", s.len())),
            Arg::Str(s) => out.push_str(&format!("{:?}", String::from_utf8_lossy(s))),
            Arg::List(l) => out.push_str(&format!("({})", show(l))),
        }
    }
    out
}

/// Atoms take every character but space, CR and LF (and ')' inside a list); "NIL" is nil;
/// quoted strings and literals ({n}, {n+}, ~{n}) are strings.
fn parse_args(s: &[u8]) -> Vec<Arg> {
    fn literal(s: &[u8], i: usize) -> Option<(Vec<u8>, usize)> {
        let open = if s[i] == b'~' { i + 1 } else { i };
        if s.get(open) != Some(&b'{') {
            return None;
        }
        let close = open + s[open..].iter().position(|&b| b == b'}')?;
        let n: usize = std::str::from_utf8(&s[open + 1..close]).ok()?.trim_end_matches('+').parse().ok()?;
        if s.get(close + 1..close + 3) != Some(b"\r\n") {
            return None;
        }
        let start = close + 3;
        let end = (start + n).min(s.len());
        Some((s[start..end].to_vec(), end))
    }
    fn list(s: &[u8], i: &mut usize, depth: usize) -> Vec<Arg> {
        let mut out = Vec::new();
        while *i < s.len() {
            match s[*i] {
                b' ' | b'\r' | b'\n' => *i += 1,
                b')' if depth > 0 => {
                    *i += 1;
                    return out;
                }
                b'(' => {
                    *i += 1;
                    out.push(Arg::List(list(s, i, depth + 1)));
                }
                b'"' => {
                    *i += 1;
                    let mut w = Vec::new();
                    while *i < s.len() && s[*i] != b'"' {
                        if s[*i] == b'\\' && *i + 1 < s.len() {
                            *i += 1;
                        }
                        w.push(s[*i]);
                        *i += 1;
                    }
                    *i += 1;
                    out.push(Arg::Str(w));
                }
                b'{' | b'~' if literal(s, *i).is_some() => {
                    let (data, end) = literal(s, *i).unwrap();
                    out.push(Arg::Str(data));
                    *i = end;
                }
                _ => {
                    let start = *i;
                    while *i < s.len() && !b" \r\n".contains(&s[*i]) && !(depth > 0 && s[*i] == b')') {
                        *i += 1;
                    }
                    let w = &s[start..*i];
                    out.push(if w.eq_ignore_ascii_case(b"nil") { Arg::Nil } else { Arg::Atom(w.to_vec()) });
                }
            }
        }
        out
    }
    list(s, &mut 0, 0)
}

// ---------------------------------------------------------------------------------------
// Scripts.

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum State {
    NonAuth,
    Auth,
    Created,
    Appended,
    Selected,
}

#[derive(Clone, Copy, PartialEq)]
enum Existence {
    Must,
    MustNot,
    May,
}

struct Untagged {
    existence: Existence,
    args: Vec<Arg>,
}

struct TestCmd {
    tag: u32,
    text: Vec<u8>,
    reply: Option<Vec<Arg>>,
}

#[derive(Default)]
struct Group {
    conn: usize,
    cmds: Vec<TestCmd>,
    untagged: Vec<Untagged>,
    pending: usize,
    bye: bool,
    sleep_ms: u64,
}

impl Group {
    /// The session ends with this group (LOGOUT, or a BYE is expected).
    fn logs_out(&self) -> bool {
        self.bye || self.cmds.iter().any(|c| c.text.eq_ignore_ascii_case(b"logout"))
    }
}

struct Test {
    caps: Vec<String>,
    connections: usize,
    /// `user N: $user2`: connection N logs in as the second user.
    second_user: Vec<usize>,
    state: State,
    /// Messages appended at setup; `usize::MAX` for the whole mbox.
    messages: usize,
    ignore_extra: bool,
    groups: Vec<Group>,
}

/// Joins `{{{` … `}}}` blocks into their line as literals (`~{{{` for binary ones, whose
/// lines keep the file's own line ends) and yields the logical lines.
fn logical_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut multi: Option<(Vec<u8>, usize, usize, bool)> = None; // text, literal start, last line end, binary
    let open = |line: &[u8]| -> Option<(Vec<u8>, bool)> {
        let head = line.strip_suffix(b"{{{")?;
        Some(match head.strip_suffix(b"~") {
            Some(h) => (h.to_vec(), true),
            None => (head.to_vec(), false),
        })
    };
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") {
        lines.pop();
    }
    for line in lines {
        if let Some((buf, start, last_end, binary)) = multi.as_mut() {
            let Some(rest) = line.strip_prefix(b"}}}") else {
                buf.extend_from_slice(line);
                *last_end = buf.len();
                buf.extend_from_slice(if *binary { b"\n" } else { b"\r\n" });
                continue;
            };
            buf.truncate(*last_end);
            let size = buf.len() - *start;
            let head = format!("{}{{{size}}}\r\n", if *binary { "~" } else { "" });
            buf.splice(*start..*start, head.into_bytes());
            if let Some((h, b)) = open(rest) {
                buf.extend_from_slice(&h);
                *start = buf.len();
                *last_end = buf.len();
                *binary = b;
                continue;
            }
            buf.extend_from_slice(rest);
            out.push(std::mem::take(buf));
            multi = None;
            continue;
        }
        if let Some((h, b)) = open(line) {
            let len = h.len();
            multi = Some((h, len, len, b));
            continue;
        }
        out.push(line.to_vec());
    }
    out
}

fn is_untagged(line: &[u8]) -> Option<Existence> {
    match line.get(..2) {
        Some(b"* ") => Some(Existence::Must),
        Some(b"! ") => Some(Existence::MustNot),
        Some(b"? ") => Some(Existence::May),
        _ => None,
    }
}

/// "[tagN] ok|no|bad|\"\" rest": the tag (0 if none), the expected reply word and the rest.
fn cmd_reply(line: &[u8]) -> (u32, Option<Vec<Arg>>, &[u8]) {
    let word = |l: &[u8]| l.split(|&b| b == b' ').next().unwrap_or(b"").to_ascii_lowercase();
    let mut line = line;
    let mut tag = 0;
    let w = word(line);
    if let Some(n) = w.strip_prefix(b"tag")
        && let Some(n) = std::str::from_utf8(n).ok().and_then(|n| n.parse::<u32>().ok())
        && n > 0
        && line.contains(&b' ')
    {
        tag = n;
        line = &line[w.len() + 1..];
    }
    let w = word(line);
    let reply = match w.as_slice() {
        b"ok" | b"no" | b"bad" => Some(w.clone()),
        b"\"\"" => Some(Vec::new()),
        _ => None,
    };
    match reply {
        Some(r) => {
            let mut rest = &line[w.len()..];
            if rest.first() == Some(&b' ') {
                rest = &rest[1..];
            }
            (tag, Some(vec![Arg::Atom(r)]), rest)
        }
        None => (tag, None, line),
    }
}

/// Adds imaptest's default list directives to an expected untagged reply.
fn add_defaults(args: &mut [Arg]) {
    let first = args.first().and_then(Arg::atom).unwrap_or(b"");
    let name = if first.first().is_some_and(|c| *c == b'$' || c.is_ascii_digit()) {
        args.get(1).and_then(Arg::atom).unwrap_or(b"")
    } else {
        first
    }
    .to_ascii_lowercase();
    let directive = |l: &mut Vec<Arg>, d: &[&str]| {
        let has = l.first().and_then(Arg::atom).is_some_and(|a| a.starts_with(b"$!"));
        if !has {
            for x in d.iter().rev() {
                l.insert(0, Arg::Atom(x.as_bytes().to_vec()));
            }
        }
    };
    for (i, a) in args.iter_mut().enumerate() {
        let Arg::List(l) = a else { continue };
        match name.as_slice() {
            b"list" | b"lsub" if i == 1 => directive(l, &["$!unordered"]),
            b"status" if i == 2 => directive(l, &["$!unordered=2"]),
            b"fetch" if i == 2 => {
                directive(l, &["$!unordered=2"]);
                // FLAGS (…) inside the FETCH list: a set, \Recent and attachment flags ignored.
                let mut prev: Vec<u8> = Vec::new();
                for x in l.iter_mut() {
                    if let Arg::Atom(w) = x {
                        prev = w.to_ascii_lowercase();
                    } else if let Arg::List(f) = x
                        && prev == b"flags"
                    {
                        directive(
                            f,
                            &[
                                "$!unordered",
                                "$!noextra",
                                "$!ignore=\\recent",
                                "$!ignore=$HasAttachment",
                                "$!ignore=$HasNoAttachment",
                            ],
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

fn parse_test(text: &[u8]) -> Result<Test, String> {
    let mut t = Test {
        caps: Vec::new(),
        connections: 1,
        second_user: Vec::new(),
        state: State::Selected,
        messages: usize::MAX,
        ignore_extra: true,
        groups: Vec::new(),
    };
    let lines = logical_lines(text);
    let mut header = true;
    let mut skip_stack: Vec<(bool, bool)> = Vec::new(); // (outer skip, else seen)
    let mut skip = false;
    let mut group_open = false;
    for line in &lines {
        if line.is_empty() {
            header = false;
            continue;
        }
        if line[0] == b'#' {
            continue;
        }
        let s = String::from_utf8_lossy(line);
        if header {
            let (k, v) = s.split_once(':').ok_or("header without ':'")?;
            let v = v.trim();
            match k.trim().to_lowercase().as_str() {
                "capabilities" => t.caps = v.split_whitespace().map(str::to_string).collect(),
                "connections" => t.connections = if v == "n" { 2 } else { v.parse().map_err(|_| "connections")? },
                "ignore_extra_untagged" => t.ignore_extra = v.starts_with('y'),
                "messages" => t.messages = if v == "all" { usize::MAX } else { v.parse().unwrap_or(0) },
                "state" => {
                    t.state = match v.to_lowercase().as_str() {
                        "nonauth" => State::NonAuth,
                        "auth" => State::Auth,
                        "created" => State::Created,
                        "appended" => State::Appended,
                        "selected" => State::Selected,
                        _ => return Err(format!("unknown state {v}")),
                    }
                }
                k if k.starts_with("user ") => {
                    let n: usize = k[5..].trim().parse().map_err(|_| format!("bad setting {k}"))?;
                    if v != "$user2" {
                        return Err(format!("only $user2 is known as another user, not {v}"));
                    }
                    t.second_user.push(n);
                }
                _ => return Err(format!("unknown setting {k}")),
            }
            continue;
        }
        if let Some(env) = s.strip_prefix("!ifenv ").or_else(|| s.strip_prefix("!ifnenv ")) {
            let mut missing = std::env::var_os(env).is_none();
            if s.starts_with("!ifnenv ") {
                missing = !missing;
            }
            skip_stack.push((skip, false));
            skip = skip || missing;
            continue;
        }
        if s == "!else" {
            let top = skip_stack.last_mut().ok_or("!else without !ifenv")?;
            top.1 = true;
            if !top.0 {
                skip = !skip;
            }
            continue;
        }
        if s == "!endif" {
            skip = skip_stack.pop().ok_or("!endif without !ifenv")?.0;
            continue;
        }
        if skip {
            continue;
        }
        if group_open {
            let g = t.groups.last_mut().unwrap();
            if let Some(ms) = s.strip_prefix("!sleep ") {
                g.sleep_ms = ms.trim().trim_end_matches("ms").parse().unwrap_or(0);
                continue;
            }
            if s.starts_with("!output ") {
                continue;
            }
            if let Some(existence) = is_untagged(line) {
                let mut args = parse_args(&line[2..]);
                add_defaults(&mut args);
                let name = args.iter().take(2).filter_map(Arg::atom).any(|a| a.eq_ignore_ascii_case(b"bye"));
                if name && existence == Existence::Must {
                    g.bye = true;
                }
                g.untagged.push(Untagged { existence, args });
                continue;
            }
            if g.pending > 0 {
                let mut l2: &[u8] = line;
                if t.connections > 1
                    && let Some((n, rest)) = s.split_once(' ')
                    && n.parse::<usize>().is_ok()
                {
                    l2 = &line[line.len() - rest.len()..];
                }
                let (tag, reply, _) = cmd_reply(l2);
                if reply.is_some() {
                    let cmd = g.cmds.iter_mut().find(|c| c.tag == tag).ok_or("reply for unknown tag")?;
                    if cmd.reply.is_some() {
                        return Err("command already has a reply".into());
                    }
                    let mut args = parse_args(l2);
                    if tag != 0 {
                        args.remove(0);
                    }
                    cmd.reply = Some(args);
                    g.pending -= 1;
                    continue;
                }
            }
        }
        let new_group = !group_open || t.groups.last().is_some_and(|g| g.pending == 0);
        if new_group {
            t.groups.push(Group::default());
            group_open = true;
        }
        let g = t.groups.last_mut().unwrap();
        let mut body: &[u8] = line;
        if t.connections > 1 {
            let (n, rest) = s.split_once(' ').ok_or("missing client index")?;
            let n: usize = n.parse().map_err(|_| "missing client index")?;
            if n == 0 || n > t.connections {
                return Err("bad client index".into());
            }
            if !g.cmds.is_empty() && g.conn != n - 1 {
                return Err("pipelined commands on different connections".into());
            }
            g.conn = n - 1;
            body = &line[line.len() - rest.len()..];
        }
        let (tag, reply, rest) = cmd_reply(body);
        if tag == 0 && g.pending > 0 {
            return Err("missing reply from previous command group".into());
        }
        if g.cmds.is_empty()
            && let Some(existence) = is_untagged(rest)
        {
            // A banner check: matched against the greeting.
            let mut args = parse_args(&rest[2..]);
            add_defaults(&mut args);
            g.untagged.push(Untagged { existence, args });
            continue;
        }
        if reply.is_none() {
            g.pending += 1;
        }
        g.cmds.push(TestCmd { tag, text: rest.to_vec(), reply });
    }
    if t.groups.last().is_some_and(|g| g.pending > 0) {
        return Err("missing reply at the end".into());
    }
    let has_logout = t.groups.iter().any(|g| g.cmds.iter().any(|c| c.text.eq_ignore_ascii_case(b"logout") || g.bye));
    if !has_logout {
        t.groups.push(Group {
            cmds: vec![TestCmd { tag: 0, text: b"logout".to_vec(), reply: Some(vec![Arg::Atom(b"ok".to_vec())]) }],
            ..Group::default()
        });
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------
// Matching, as imaptest's test-exec.c.

#[derive(Clone, Default)]
struct Vars {
    map: HashMap<String, Vec<u8>>,
    /// The current command's sequence map for `$N` (0 = expunged).
    seqmap: Vec<u32>,
}

impl Vars {
    fn relative_seq(&self, n: u32) -> Vec<u8> {
        if n == 0 {
            return b"<zero seq>".to_vec();
        }
        match self.seqmap.get(n as usize - 1) {
            None => b"<out of range>".to_vec(),
            Some(0) => b"<expunged>".to_vec(),
            Some(s) => s.to_string().into_bytes(),
        }
    }

    fn var_name(pat: &[u8], p: &mut usize) -> Vec<u8> {
        if pat.get(*p) == Some(&b'{') {
            let end = pat[*p..].iter().position(|&b| b == b'}').map_or(pat.len(), |x| *p + x);
            let name = pat[*p + 1..end].to_vec();
            *p = (end + 1).min(pat.len());
            name
        } else {
            let start = *p;
            while *p < pat.len() && (pat[*p].is_ascii_alphanumeric() || pat[*p] == b'_') {
                *p += 1;
            }
            pat[start..*p].to_vec()
        }
    }

    /// Expands variables in a command line; an unbound variable is an error.
    fn expand_all(&self, line: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(line.len());
        let mut p = 0;
        while p < line.len() {
            if line[p] != b'$' || p + 1 == line.len() {
                out.push(line[p]);
                p += 1;
                continue;
            }
            p += 1;
            match line[p] {
                b'$' => {
                    out.push(b'$');
                    p += 1;
                }
                b'!' => {
                    while p + 1 < line.len() && line[p + 1] != b' ' {
                        p += 1;
                    }
                    p += 1;
                }
                _ => {
                    let name = Self::var_name(line, &mut p);
                    let s = String::from_utf8_lossy(&name).into_owned();
                    if let Ok(n) = s.parse::<u32>() {
                        out.extend(self.relative_seq(n));
                    } else {
                        out.extend(self.map.get(&s).ok_or(format!("uninitialized variable ${s}"))?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Expands a pattern against the server's value, binding unbound variables to the
    /// text they cover; None on a mismatch found on the way. Also says whether the final
    /// comparison is case-insensitive.
    fn expand_input(&mut self, pat: &[u8], input: &[u8]) -> (Option<Vec<u8>>, bool) {
        let mut icase = true;
        let mut out = Vec::new();
        let (mut p, mut q) = (0, 0);
        while p < pat.len() {
            if pat[p] != b'$' || pat.get(p + 1) == Some(&b'$') {
                if pat[p] == b'$' {
                    p += 1;
                }
                if input.get(q).map(u8::to_ascii_uppercase) != Some(pat[p].to_ascii_uppercase()) {
                    return (None, icase);
                }
                q += 1;
                out.push(pat[p]);
                p += 1;
                continue;
            }
            p += 1;
            let name = String::from_utf8_lossy(&Self::var_name(pat, &mut p)).into_owned();
            let value: Vec<u8> = if let Ok(n) = name.parse::<u32>() {
                self.relative_seq(n)
            } else if let Some(text) = name.strip_prefix("case:") {
                icase = false;
                text.as_bytes().to_vec()
            } else if let Some(v) = self.map.get(&name).filter(|_| !name.is_empty()) {
                v.clone()
            } else {
                // Unbound: it covers the input up to the pattern's next character.
                let rest = &pat[p..];
                let stop = match rest {
                    [] => None,
                    [b'$', b'$', ..] => Some(b'$'),
                    [b'$', ..] => {
                        let mut p2 = 1;
                        let next = Self::var_name(rest, &mut p2);
                        self.map.get(&*String::from_utf8_lossy(&next)).and_then(|v| v.first().copied())
                    }
                    [c, ..] => Some(*c),
                };
                let end = match stop {
                    None => input.len(),
                    Some(c) => input[q.min(input.len())..]
                        .iter()
                        .position(|&b| if icase { b.eq_ignore_ascii_case(&c) } else { b == c })
                        .map_or(input.len(), |x| q + x),
                };
                let v = input[q.min(input.len())..end.max(q.min(input.len()))].to_vec();
                if name.is_empty() {
                    v
                } else {
                    self.map.insert(name, v.clone());
                    v
                }
            };
            out.extend_from_slice(&value);
            for b in &value {
                if input.get(q) != Some(b) {
                    return (None, icase);
                }
                q += 1;
            }
        }
        (Some(out), icase)
    }

    /// test_imap_match_args: ALL when `m` matches `a` (as a prefix when `prefix`), else how
    /// many leading elements matched.
    fn match_args(&mut self, m: &[Arg], a: &[Arg], max: u32, prefix: bool) -> u32 {
        let (mut ret, mut mi, mut ai, mut max) = (0u32, 0usize, 0usize, max);
        while mi < m.len() && max > 0 {
            let arg = a.get(ai);
            match &m[mi] {
                Arg::Nil => {
                    if arg != Some(&Arg::Nil) {
                        return ret;
                    }
                }
                Arg::Atom(s) | Arg::Str(s) => {
                    if s == b"$" && matches!(arg, Some(Arg::List(_))) {
                        // "$" skips over a list.
                    } else if s == b"$]" {
                        while let Some(Arg::Atom(x)) = a.get(ai)
                            && !x.contains(&b']')
                        {
                            ai += 1;
                        }
                    } else {
                        let Some(astr) = arg.and_then(Arg::astring) else { return ret };
                        // imaptest compares C strings: both sides end at their first NUL.
                        let cut = |x: &[u8]| x.iter().position(|&b| b == 0).map_or(x.len(), |p| p);
                        let (s, astr) = (&s[..cut(s)], &astr[..cut(astr)]);
                        let (Some(want), icase) = self.expand_input(s, astr) else { return ret };
                        let eq = |x: &[u8], y: &[u8]| if icase { x.eq_ignore_ascii_case(y) } else { x == y };
                        let ok = if prefix && mi + 1 == m.len() {
                            astr.len() >= want.len() && eq(&astr[..want.len()], &want)
                        } else {
                            eq(astr, &want)
                        };
                        if !ok {
                            return ret;
                        }
                    }
                }
                Arg::List(ml) => {
                    let Some(Arg::List(al)) = arg else { return ret };
                    let sub = self.match_list(ml, al);
                    if sub != ALL {
                        return ret + sub;
                    }
                }
            }
            ret += 1;
            mi += 1;
            ai += 1;
            max -= 1;
        }
        if prefix || ai >= a.len() || max == 0 { ALL } else { ret }
    }

    /// test_imap_match_list: a list with its leading `$!` directives.
    fn match_list(&mut self, m: &[Arg], a: &[Arg]) -> u32 {
        let (mut unordered, mut chain, mut noextra) = (false, 1usize, None::<bool>);
        let (mut ignores, mut bans) = (Vec::new(), Vec::new());
        let mut m = m;
        while let Some(d) = m.first().and_then(Arg::atom).and_then(|x| x.strip_prefix(b"$!")) {
            let d = String::from_utf8_lossy(d).into_owned();
            if let Some(rest) = d.strip_prefix("unordered") {
                unordered = true;
                noextra.get_or_insert(false);
                if let Some(n) = rest.strip_prefix('=') {
                    chain = n.parse().unwrap_or(1).max(1);
                }
            } else if d == "ordered" {
                unordered = false;
            } else if d == "extra" {
                noextra = Some(false);
            } else if d == "noextra" {
                noextra = Some(true);
            } else if let Some(x) = d.strip_prefix("ignore=") {
                ignores.push(x.to_string());
            } else if let Some(x) = d.strip_prefix("ban=") {
                bans.push(x.to_string());
            }
            m = &m[1..];
        }
        let noextra = noextra.unwrap_or(true);
        if !unordered {
            return self.match_args(m, a, ALL, false);
        }
        if !a.len().is_multiple_of(chain) {
            return 0;
        }
        let mut matched = vec![false; a.len()];
        let mut ret = 0;
        for want in m.chunks(chain) {
            let found =
                (0..a.len()).step_by(chain).find(|&i| self.match_args(want, &a[i..], chain as u32, false) == ALL);
            match found {
                Some(i) => matched[i] = true,
                None => return ret,
            }
            ret += 1;
        }
        let listed = |l: &[String], s: &[u8]| l.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(s));
        for i in (0..a.len()).step_by(chain) {
            if matched[i] {
                continue;
            }
            let Some(s) = a[i].astring() else { continue };
            if (noextra && !listed(&ignores, s)) || (!noextra && listed(&bans, s)) {
                return ret;
            }
        }
        ALL
    }
}

// ---------------------------------------------------------------------------------------
// The client side.

struct Client {
    id: usize,
    r: BufReader<TcpStream>,
    w: TcpStream,
    next: u32,
    /// Messages in the selected mailbox as this session has been told.
    exists: u32,
    greeting: Vec<Arg>,
}

enum Resp {
    Untagged(Vec<Arg>),
    Tagged(String, Vec<Arg>),
    Continue,
}

impl Client {
    fn connect(addr: &str, id: usize) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut c = Client { id, r: BufReader::new(s.try_clone()?), w: s, next: 0, exists: 0, greeting: Vec::new() };
        if let Resp::Untagged(g) = c.response()? {
            c.greeting = g;
        }
        Ok(c)
    }

    /// One response, with any literals it carries; EXISTS/EXPUNGE are counted.
    fn response(&mut self) -> std::io::Result<Resp> {
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.r.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            raw.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let lit = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|p| &t[p + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut data = vec![0u8; n];
                    self.r.read_exact(&mut data)?;
                    raw.extend_from_slice(&data);
                }
                None => break,
            }
        }
        if raw.starts_with(b"+") {
            return Ok(Resp::Continue);
        }
        let (tag, rest) = match raw.iter().position(|&b| b == b' ') {
            Some(p) => (&raw[..p], &raw[p + 1..]),
            None => (&raw[..], &b""[..]),
        };
        let args = parse_args(rest);
        if tag == b"*" {
            if let (Some(n), Some(w)) = (args.first().and_then(Arg::atom), args.get(1).and_then(Arg::atom)) {
                let n = std::str::from_utf8(n).ok().and_then(|n| n.parse::<u32>().ok());
                if let Some(n) = n {
                    if w.eq_ignore_ascii_case(b"exists") {
                        self.exists = n;
                    } else if w.eq_ignore_ascii_case(b"expunge") {
                        self.exists = self.exists.saturating_sub(1);
                    }
                }
            }
            return Ok(Resp::Untagged(args));
        }
        Ok(Resp::Tagged(String::from_utf8_lossy(tag).into_owned(), args))
    }

    /// Sends a command (literals become LITERAL+); returns its tag.
    fn send(&mut self, text: &[u8]) -> std::io::Result<String> {
        self.next += 1;
        let tag = format!("{}.{}", self.id, self.next);
        let mut out = format!("{tag} ").into_bytes();
        let mut rest = text;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            let size = line
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|p| (p, &t[p + 1..])))
                .and_then(|(p, d)| {
                    Some((p, std::str::from_utf8(d).ok()?.trim_end_matches('+').parse::<usize>().ok()?))
                });
            let Some((open, n)) = size else {
                out.extend_from_slice(&rest[..=nl]);
                rest = &rest[nl + 1..];
                continue;
            };
            out.extend_from_slice(&line[..open]);
            out.extend_from_slice(format!("{{{n}+}}\r\n").as_bytes());
            let body = &rest[nl + 1..];
            let n = n.min(body.len());
            out.extend_from_slice(&body[..n]);
            rest = &body[n..];
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out)?;
        Ok(tag)
    }

    /// Runs a setup command to its tagged reply; returns (untagged, tagged).
    fn run(&mut self, text: &[u8]) -> std::io::Result<(Vec<Vec<Arg>>, Vec<Arg>)> {
        let tag = self.send(text)?;
        let mut untagged = Vec::new();
        loop {
            match self.response()? {
                Resp::Tagged(t, args) if t == tag => return Ok((untagged, args)),
                Resp::Untagged(args) => untagged.push(args),
                _ => {}
            }
        }
    }

    fn run_ok(&mut self, text: &[u8]) -> Result<Vec<Vec<Arg>>, Outcome> {
        let (u, t) = self.run(text).map_err(|e| Outcome::Dead(format!("{}: {e}", String::from_utf8_lossy(text))))?;
        if t.first().and_then(Arg::atom).is_some_and(|w| w.eq_ignore_ascii_case(b"ok")) {
            Ok(u)
        } else {
            Err(Outcome::Fail(format!("setup {} failed: {}", String::from_utf8_lossy(text), show(&t))))
        }
    }
}

/// Messages of an mbox with the IMAP date-time of each From line; LF becomes CRLF.
fn mbox(text: &[u8]) -> Vec<(Vec<u8>, String)> {
    let mut msgs: Vec<(Vec<u8>, String)> = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if let Some(from) = line.strip_prefix(b"From ") {
            msgs.push((Vec::new(), from_line_date(&String::from_utf8_lossy(from))));
        } else if let Some((m, _)) = msgs.last_mut() {
            let mut prev = m.last().copied().unwrap_or(0);
            for &b in line {
                if b == b'\n' && prev != b'\r' {
                    m.push(b'\r');
                }
                m.push(b);
                prev = b;
            }
        }
    }
    msgs
}

/// "sender  Fri Feb 22 17:06:23 2008 [+0200]" → "22-Feb-2008 17:06:23 +0200".
fn from_line_date(from: &str) -> String {
    let w: Vec<&str> = from.split_whitespace().collect();
    match w.as_slice() {
        [_, _, mon, day, time, year, rest @ ..] => {
            let tz = rest.first().filter(|z| z.starts_with(['+', '-'])).copied().unwrap_or("+0000");
            format!("{:0>2}-{mon}-{year} {time} {tz}", day)
        }
        _ => "01-Jan-2000 00:00:00 +0000".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Running a test.

enum Outcome {
    Pass(usize),
    Skip,
    Fail(String),
    /// The server stopped answering: always a failure.
    Dead(String),
}

fn quote(s: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Does an APPEND's argument text already carry its message (a literal or CATENATE)?
fn append_has_body(args: &[u8]) -> bool {
    let a = parse_args(args);
    let mut i = 0;
    if a.get(i + 1).is_some_and(|x| matches!(x, Arg::List(_))) {
        i += 1;
    }
    if a.get(i + 1).is_some_and(|x| matches!(x, Arg::Str(_))) {
        i += 1;
    }
    match a.get(i + 1) {
        Some(Arg::Str(_)) => true,
        Some(Arg::Atom(w)) => w.eq_ignore_ascii_case(b"catenate"),
        _ => false,
    }
}

struct Run<'a> {
    test: &'a Test,
    conns: Vec<Client>,
    vars: Vars,
    msgs: Vec<(Vec<u8>, String)>,
    next_msg: usize,
}

impl Run<'_> {
    fn next_message(&mut self) -> (Vec<u8>, String) {
        let m = self.msgs[self.next_msg % self.msgs.len()].clone();
        self.next_msg += 1;
        m
    }

    fn setup(&mut self, caps: &mut String) -> Result<(), Outcome> {
        let state = self.test.state;
        let dead = |e: std::io::Error| Outcome::Dead(format!("setup: {e}"));
        if state == State::NonAuth {
            return Ok(());
        }
        for (i, c) in self.conns.iter_mut().enumerate() {
            let user = if self.test.second_user.contains(&(i + 1)) { USER2 } else { USER };
            c.run_ok(format!("LOGIN {user} {PASSWORD}").as_bytes())?;
        }
        let c = &mut self.conns[0];
        let u = c.run_ok(b"CAPABILITY")?;
        *caps = u.first().map(|a| show(a)).unwrap_or_default();
        if !self.test.caps.iter().all(|need| caps.split_whitespace().any(|x| x.eq_ignore_ascii_case(need))) {
            return Err(Outcome::Skip);
        }
        let mut names = Vec::new();
        let mut subscribed = Vec::new();
        for (cmd, into) in [("LIST", &mut names), ("LSUB", &mut subscribed)] {
            let (u, _) = c.run(format!("{cmd} \"\" \"{MAILBOX}*\"").as_bytes()).map_err(dead)?;
            into.extend(u.iter().filter_map(|r| r.get(3).and_then(Arg::astring).map(<[u8]>::to_vec)));
        }
        for list in [&mut names, &mut subscribed] {
            list.sort_by_key(|n| std::cmp::Reverse(n.to_ascii_lowercase()));
        }
        for n in &names {
            c.run(&[b"DELETE ".as_slice(), &quote(n)].concat()).map_err(dead)?;
        }
        for n in &subscribed {
            c.run(&[b"UNSUBSCRIBE ".as_slice(), &quote(n)].concat()).map_err(dead)?;
        }
        if state == State::Auth {
            return Ok(());
        }
        self.conns[0].run_ok(format!("CREATE {MAILBOX}").as_bytes())?;
        if state == State::Created {
            return Ok(());
        }
        let count = if self.test.messages == usize::MAX { self.msgs.len() } else { self.test.messages };
        for _ in 0..count {
            let (m, date) = self.next_message();
            let mut cmd = format!("APPEND \"{MAILBOX}\" \"{date}\" {{{}}}\r\n", m.len()).into_bytes();
            cmd.extend_from_slice(&m);
            self.conns[0].run_ok(&cmd)?;
        }
        if state == State::Appended {
            return Ok(());
        }
        // Connections of the second user stay unselected: the mailbox is the first's.
        let second = self.test.second_user.clone();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if !second.contains(&(i + 1)) {
                c.run_ok(format!("SELECT \"{MAILBOX}\"").as_bytes())?;
            }
        }
        Ok(())
    }

    /// test_handle_untagged_match for one reply.
    fn untagged(&mut self, g: &Group, args: &[Arg], st: &mut GroupState, tag: Option<&str>) -> Result<(), String> {
        if g.untagged.is_empty() && (self.test.ignore_extra || g.logs_out()) {
            return Ok(());
        }
        let prefix = args
            .first()
            .and_then(Arg::atom)
            .is_some_and(|w| [&b"ok"[..], b"no", b"bad", b"bye"].iter().any(|x| w.eq_ignore_ascii_case(x)));
        let mut found_some = false;
        for (i, ut) in g.untagged.iter().enumerate() {
            if st.found[i] {
                continue;
            }
            let saved = self.vars.clone();
            if let Some(t) = tag {
                self.vars.map.insert("tag".into(), t.as_bytes().to_vec());
            }
            let n = self.vars.match_args(&ut.args, args, ALL, prefix);
            self.vars.map.remove("tag");
            if n == ALL {
                if ut.existence == Existence::MustNot {
                    return Err(format!("unexpected untagged match: {} (reply {})", show(&ut.args), show(args)));
                }
                st.found[i] = true;
                found_some = true;
                continue;
            }
            if st.best[i].0 < n || st.best[i].1.is_empty() {
                st.best[i] = (n, show(args));
            }
            self.vars = saved;
        }
        if !found_some && !self.test.ignore_extra && st.first_extra.is_none() {
            st.first_extra = Some(show(args));
        }
        Ok(())
    }

    fn group(&mut self, gi: usize) -> Result<(), Outcome> {
        let test = self.test;
        let g = &test.groups[gi];
        let fail = |s: String| Outcome::Fail(s);
        let mut st = GroupState {
            found: vec![false; g.untagged.len()],
            best: vec![(0, String::new()); g.untagged.len()],
            first_extra: None,
        };
        let ci = g.conn;
        self.vars.seqmap = (1..=self.conns[ci].exists).collect();
        if g.cmds.is_empty() {
            let greeting = self.conns[ci].greeting.clone();
            self.untagged(g, &greeting, &mut st, None).map_err(fail)?;
            return finish(g, &st);
        }
        let mut pending: Vec<(String, usize)> = Vec::new();
        let mut sent = Vec::new();
        for (k, c) in g.cmds.iter().enumerate() {
            let mut text = self.vars.expand_all(&c.text).map_err(fail)?;
            let lower = String::from_utf8_lossy(&text).to_lowercase();
            if lower == "append" || (lower.starts_with("append ") && !append_has_body(&text[7..])) {
                let (m, date) = self.next_message();
                text = if lower == "append" {
                    format!("APPEND \"{MAILBOX}\" \"{date}\" {{{}}}\r\n", m.len()).into_bytes()
                } else {
                    [&text[..], format!(" {{{}}}\r\n", m.len()).as_bytes()].concat()
                };
                text.extend_from_slice(&m);
            }
            sent.push(String::from_utf8_lossy(&text[..text.len().min(120)]).into_owned());
            let tag =
                self.conns[ci].send(&text).map_err(|e| Outcome::Dead(format!("{}: {e}", sent.last().unwrap())))?;
            pending.push((tag, k));
        }
        let first_tag = pending.first().map(|p| p.0.clone());
        while !pending.is_empty() {
            let resp = match self.conns[ci].response() {
                Ok(r) => r,
                Err(_) if g.logs_out() => break,
                Err(e) => return Err(Outcome::Dead(format!("after {sent:?}: {e}"))),
            };
            match resp {
                Resp::Continue => {}
                Resp::Untagged(args) => {
                    self.untagged(g, &args, &mut st, first_tag.as_deref()).map_err(fail)?;
                    if let (Some(n), Some(w)) = (args.first().and_then(Arg::atom), args.get(1).and_then(Arg::atom))
                        && w.eq_ignore_ascii_case(b"expunge")
                        && let Some(seq) = std::str::from_utf8(n).ok().and_then(|n| n.parse::<u32>().ok())
                    {
                        let count = self.vars.seqmap.len() as u32;
                        if seq <= count {
                            for s in self.vars.seqmap.iter_mut().skip(seq as usize - 1) {
                                if *s == seq {
                                    *s = 0;
                                } else if *s > seq {
                                    *s -= 1;
                                }
                            }
                        }
                    }
                }
                Resp::Tagged(tag, args) => {
                    let Some(pos) = pending.iter().position(|p| p.0 == tag) else { continue };
                    let (_, k) = pending.remove(pos);
                    let want = g.cmds[k].reply.clone().unwrap_or_default();
                    self.vars.map.insert("tag".into(), tag.into_bytes());
                    let n = self.vars.match_args(&want, &args, ALL, true);
                    self.vars.map.remove("tag");
                    if n != ALL {
                        return Err(fail(format!(
                            "{}: expected tagged reply '{}', got '{}'",
                            sent[k],
                            show(&want),
                            show(&args)
                        )));
                    }
                }
            }
        }
        if g.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(g.sleep_ms));
        }
        finish(g, &st).map_err(|e| match e {
            Outcome::Fail(s) => Outcome::Fail(format!("after {sent:?}: {s}")),
            o => o,
        })
    }
}

struct GroupState {
    found: Vec<bool>,
    best: Vec<(u32, String)>,
    first_extra: Option<String>,
}

fn finish(g: &Group, st: &GroupState) -> Result<(), Outcome> {
    let missing: Vec<usize> =
        (0..g.untagged.len()).filter(|&i| g.untagged[i].existence == Existence::Must && !st.found[i]).collect();
    if let Some(&first) = missing.first() {
        return Err(Outcome::Fail(format!(
            "missing {} untagged replies; first: {}; best match: {}",
            missing.len(),
            show(&g.untagged[first].args),
            st.best[first].1
        )));
    }
    if let Some(x) = &st.first_extra {
        return Err(Outcome::Fail(format!("unexpected untagged reply: {x}")));
    }
    Ok(())
}

fn run_test(a: &Agora, dir: &Path, name: &str) -> Outcome {
    let Ok(text) = std::fs::read(dir.join(name)) else { return Outcome::Skip };
    let test = match parse_test(&text) {
        Ok(t) => t,
        Err(e) if e.contains("second user") => return Outcome::Skip,
        Err(e) => return Outcome::Fail(format!("script not understood: {e}")),
    };
    let addr = format!("{}:10143", a.ip);
    let mbox_file =
        if dir.join(format!("{name}.mbox")).exists() { format!("{name}.mbox") } else { "default.mbox".into() };
    let msgs = mbox(&std::fs::read(dir.join(mbox_file)).unwrap_or_default());
    let mut conns = Vec::new();
    for i in 0..test.connections {
        match Client::connect(&addr, i + 1) {
            Ok(c) => conns.push(c),
            Err(e) => return Outcome::Dead(format!("connect: {e}")),
        }
    }
    let mut vars = Vars::default();
    for (k, v) in [
        ("user", USER),
        ("user2", USER2),
        ("username", "imaptest"),
        ("domain", "example.org"),
        ("password", PASSWORD),
        ("mailbox", MAILBOX),
        ("mailbox_url", MAILBOX),
    ] {
        vars.map.insert(k.into(), v.as_bytes().to_vec());
    }
    let mut run = Run { test: &test, conns, vars, msgs, next_msg: 0 };
    let mut caps = String::new();
    if let Err(o) = run.setup(&mut caps) {
        return o;
    }
    if test.state == State::NonAuth {
        let caps = match run.conns[0].run(b"CAPABILITY") {
            Ok((u, _)) => u.first().map(|a| show(a)).unwrap_or_default(),
            Err(e) => return Outcome::Dead(format!("CAPABILITY: {e}")),
        };
        if !test.caps.iter().all(|need| caps.split_whitespace().any(|x| x.eq_ignore_ascii_case(need))) {
            return Outcome::Skip;
        }
    }
    for gi in 0..test.groups.len() {
        if let Err(o) = run.group(gi) {
            return o;
        }
    }
    Outcome::Pass(test.groups.len())
}

#[test]
fn imaptest_scripts() {
    let Some(dir) = scripts_dir() else {
        let why = "imaptest scripts not found: set IMAPTEST_TESTS or provide ../shared/imaptest/tests";
        // CI has them: there, running nothing is a failure, not a pass.
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "{why} (AGORA_REQUIRE_PEERS is set)");
        eprintln!("{why}; nothing run");
        return;
    };
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            "[server]\nhostname = \"mx.example.org\"\ndomain = \"example.org\"\n[auth]\nplaintext_without_tls = true\n",
        )
        .unwrap();
    });
    for u in [USER, USER2] {
        a.cli_ok(&["user", "add", u, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".mbox"))
        .collect();
    names.sort();
    let only = std::env::var("IMAPTEST_ONLY").ok();
    let (mut pass, mut fail, mut skip, mut groups, mut dead) = (0, Vec::new(), 0, 0, Vec::new());
    for name in &names {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
            continue;
        }
        match run_test(&a, &dir, name) {
            Outcome::Pass(n) => {
                pass += 1;
                groups += n;
                println!("imaptest {name}: passes");
            }
            Outcome::Skip => skip += 1,
            Outcome::Fail(why) => {
                println!("imaptest {name}: FAILS: {why}");
                fail.push(name.clone());
            }
            Outcome::Dead(why) => {
                println!("imaptest {name}: SERVER STOPPED ANSWERING: {why}");
                dead.push(name.clone());
            }
        }
    }
    println!(
        "imaptest totals: scripts passing {pass} ({groups} command groups), failing {}, skipped for capabilities not offered {skip}",
        fail.len()
    );
    assert!(dead.is_empty(), "the server stopped answering during {dead:?}");
    // The server is still up and answering after every script.
    let mut c = Client::connect(&format!("{}:10143", a.ip), 99).unwrap();
    let (_, t) = c.run(b"NOOP").unwrap();
    assert!(t.first().and_then(Arg::atom).is_some_and(|w| w.eq_ignore_ascii_case(b"ok")));
    if std::env::var_os("AGORA_IMAPTEST_LENIENT").is_none() {
        assert!(fail.is_empty(), "imaptest conformance failures: {fail:?}");
    }
}

#[test]
fn matcher_follows_imaptest_rules() {
    let mut v = Vars::default();
    let m = |s: &str| {
        let mut a = parse_args(s.as_bytes());
        add_defaults(&mut a);
        a
    };
    // FETCH items in any order; FLAGS a set that ignores \Recent but allows nothing else.
    assert_eq!(
        v.match_args(
            &m("1 fetch (uid $u flags (\\seen))"),
            &parse_args(b"1 FETCH (FLAGS (\\Seen \\Recent) UID 7)"),
            ALL,
            false
        ),
        ALL
    );
    assert_eq!(v.map.get("u").map(Vec::as_slice), Some(&b"7"[..]));
    assert_ne!(
        v.match_args(&m("1 fetch (flags (\\seen))"), &parse_args(b"1 FETCH (FLAGS (\\Seen \\Deleted))"), ALL, false),
        ALL
    );
    // A bound variable must match again.
    assert_ne!(v.match_args(&m("2 fetch (uid $u)"), &parse_args(b"2 FETCH (UID 8)"), ALL, false), ALL);
    // Status replies match on their start.
    assert_eq!(v.match_args(&m("ok [uidnext 5]"), &parse_args(b"OK [UIDNEXT 5] Predicted"), ALL, true), ALL);
    // LIST attributes are a set with extra ones allowed unless banned.
    assert_eq!(
        v.match_args(
            &m("list (\\noselect) \"/\" $mailbox"),
            &parse_args(b"LIST (\\HasChildren \\Noselect) \"/\" box"),
            ALL,
            false
        ),
        ALL
    );
    assert_ne!(
        v.match_args(
            &m("list ($!unordered $!ban=\\noselect) \"/\" x"),
            &parse_args(b"LIST (\\Noselect) \"/\" x"),
            ALL,
            false
        ),
        ALL
    );
    // Literal blocks become literals.
    let lines = logical_lines(b"* 1 fetch (body[] {{{\nab\ncd\n}}})\n");
    assert_eq!(lines[0], b"* 1 fetch (body[] {6}\r\nab\r\ncd)".to_vec());
}
