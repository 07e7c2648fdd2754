//! Runs Dovecot imaptest's scripted conformance tests against the real server.
//!
//! The scripts are read from `$IMAPTEST_TESTS`, else `../shared/imaptest/tests` beside
//! the project; without either the run says so and checks nothing. Every script whose
//! `capabilities:` the server advertises is run; the result of each and the totals are
//! printed. The test always fails if the server stops answering; conformance failures
//! fail it only with `AGORA_IMAPTEST_STRICT=1` until the IMAP server is complete.
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

fn scripts_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("IMAPTEST_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/imaptest/tests"));
    dir.is_dir().then_some(dir)
}

/// An IMAP value as both sides are compared: case-insensitive atoms and strings, lists.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    List(char, Vec<Tok>),
}

fn tokenize(s: &[u8]) -> Vec<Tok> {
    fn inner(s: &[u8], i: &mut usize, close: Option<u8>) -> Vec<Tok> {
        let mut out = Vec::new();
        while *i < s.len() {
            let c = s[*i];
            if Some(c) == close {
                *i += 1;
                return out;
            }
            match c {
                b' ' | b'\r' | b'\n' => *i += 1,
                b'(' | b'[' => {
                    *i += 1;
                    let end = if c == b'(' { b')' } else { b']' };
                    out.push(Tok::List(c as char, inner(s, i, Some(end))));
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
                    out.push(Tok::Word(String::from_utf8_lossy(&w).to_lowercase()));
                }
                b'{' => {
                    // A literal as the server sent it: {n}\r\n<n bytes>.
                    let close = s[*i..].iter().position(|&b| b == b'}').map_or(s.len(), |p| *i + p);
                    let n: usize = std::str::from_utf8(&s[*i + 1..close])
                        .ok()
                        .and_then(|x| x.trim_end_matches('+').parse().ok())
                        .unwrap_or(0);
                    let start = (close + 3).min(s.len());
                    let end = (start + n).min(s.len());
                    out.push(Tok::Word(String::from_utf8_lossy(&s[start..end]).to_lowercase()));
                    *i = end;
                }
                _ => {
                    let start = *i;
                    while *i < s.len() && !b" ()[]\r\n".contains(&s[*i]) && Some(s[*i]) != close {
                        *i += 1;
                    }
                    out.push(Tok::Word(String::from_utf8_lossy(&s[start..*i]).to_lowercase()));
                }
            }
        }
        out
    }
    inner(s, &mut 0, None)
}

/// Matches an expected token list (with $variables) against an actual one.
fn match_toks(exp: &[Tok], act: &[Tok], vars: &mut HashMap<String, Tok>) -> bool {
    // \\Recent depends on which session saw a message first: unless a script names it,
    // it is left out of the comparison (imaptest tracks it separately).
    let names_recent = exp.iter().any(|t| matches!(t, Tok::Word(w) if w == "\\recent"));
    let act: Vec<Tok> =
        act.iter().filter(|t| names_recent || !matches!(t, Tok::Word(w) if w == "\\recent")).cloned().collect();
    let act = &act[..];
    let mut exp = exp;
    // Status responses (OK, NO, BAD, BYE) match on their start; the text may differ.
    if let Some(Tok::Word(w)) = exp.first()
        && ["ok", "no", "bad", "bye", "preauth"].contains(&w.as_str())
        && act.len() > exp.len()
    {
        return match_toks(exp, &act[..exp.len()], vars);
    }
    if let Some(Tok::Word(w)) = exp.first()
        && w.starts_with("$!")
    {
        // A matching directive: unordered, extra elements allowed.
        exp = &exp[1..];
        let mut local = vars.clone();
        let ok = exp.iter().all(|e| act.iter().any(|a| match_tok(e, a, &mut local)));
        if ok {
            *vars = local;
        }
        return ok;
    }
    // "N FETCH (items)": every expected item must be there with a matching value;
    // the server may send more (FLAGS after an implicit \\Seen, UID after UID FETCH).
    if exp.len() == 3
        && act.len() == 3
        && matches!((&exp[1], &act[1]), (Tok::Word(a), Tok::Word(b)) if a == "fetch" && b == "fetch")
        && let (Tok::List('(', want), Tok::List('(', got)) = (&exp[2], &act[2])
    {
        let mut local = vars.clone();
        if !match_tok(&exp[0], &act[0], &mut local) {
            return false;
        }
        let mut i = 0;
        while i < want.len() {
            // A section name ("body" then "[...]") is part of the key.
            let partial = |v: &[Tok], k: usize| matches!(v.get(k + 2), Some(Tok::Word(w)) if w.starts_with('<'));
            let klen = match want.get(i + 1) {
                Some(Tok::List('[', _)) if partial(want, i) => 3,
                Some(Tok::List('[', _)) => 2,
                _ => 1,
            };
            let Some(value) = want.get(i + klen) else { return false };
            let mut found = false;
            let mut j = 0;
            while j + klen < got.len() {
                let same_key = got.get(j..j + klen) == want.get(i..i + klen);
                if same_key && match_tok(value, &got[j + klen], &mut local) {
                    found = true;
                    break;
                }
                j += 1;
            }
            if !found {
                return false;
            }
            i += klen + 1;
        }
        *vars = local;
        return true;
    }
    // Flag and attribute lists are sets: their order does not matter.
    let is_flag = |t: &Tok| matches!(t, Tok::Word(w) if w.starts_with('\\') || w.starts_with("$$"));
    if !exp.is_empty() && exp.iter().all(is_flag) && exp.len() == act.len() {
        let want: Vec<String> = exp.iter().map(flag_text).collect();
        let got: Vec<String> = act.iter().map(flag_text).collect();
        return want.iter().all(|w| got.contains(w));
    }
    if exp.len() != act.len() {
        return exp.len() == 1 && act.len() == 1 && matches!(&exp[0], Tok::Word(w) if w == "$");
    }
    let mut local = vars.clone();
    let ok = exp.iter().zip(act).all(|(e, a)| match_tok(e, a, &mut local));
    if ok {
        *vars = local;
    }
    ok
}

fn match_tok(e: &Tok, a: &Tok, vars: &mut HashMap<String, Tok>) -> bool {
    match (e, a) {
        (Tok::Word(w), _) if w == "$" => true,
        (Tok::Word(w), _) if w.starts_with('$') && !w[1..].contains('$') && !w.contains('{') => {
            let name = w[1..].to_string();
            match vars.get(&name) {
                Some(v) => v == a,
                None => {
                    vars.insert(name, a.clone());
                    true
                }
            }
        }
        (Tok::Word(w), Tok::Word(x)) if w.starts_with('\u{0}') => {
            // A literal block from the script: compare without trailing line ends.
            let want = w[1..].replace('\u{1}', "\"");
            want.trim_end_matches(['\r', '\n']) == x.trim_end_matches(['\r', '\n'])
        }
        (Tok::Word(w), Tok::Word(x)) => {
            let w = substitute(w, vars);
            w == *x
        }
        (Tok::List(c1, e), Tok::List(c2, x)) => c1 == c2 && match_toks(e, x, vars),
        _ => false,
    }
}

/// A flag as written in a script (`$$` stands for a literal `$`) or sent by the server.
fn flag_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.strip_prefix("$$").map_or_else(|| w.clone(), |k| format!("${k}")),
        Tok::List(..) => String::new(),
    }
}

/// Replaces $name and ${name} by bound values (words only).
fn substitute(s: &str, vars: &HashMap<String, Tok>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                let end = s[i..].find('}').map_or(s.len(), |p| i + p);
                (&s[i + 2..end], end + 1)
            } else {
                let end =
                    s[i + 1..].find(|c: char| !c.is_ascii_alphanumeric() && c != '_').map_or(s.len(), |p| i + 1 + p);
                (&s[i + 1..end], end)
            };
            if let Some(Tok::Word(v)) = vars.get(&name.to_lowercase()) {
                out.push_str(v);
                i = next;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

struct Expect {
    kind: char,
    toks: Vec<Tok>,
}

struct Cmd {
    conn: usize,
    text: String,
    status: Option<String>,
    prefix: Vec<Tok>,
}

struct Group {
    cmds: Vec<Cmd>,
    untagged: Vec<Expect>,
}

struct Script {
    headers: HashMap<String, String>,
    groups: Vec<Group>,
}

fn parse_script(text: &str) -> Script {
    let mut lines = text.lines();
    let mut headers = HashMap::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let multi = headers.get("connections").and_then(|c| c.parse::<usize>().ok()).unwrap_or(1) > 1;
    let mut groups: Vec<Group> = Vec::new();
    let mut awaiting: Option<usize> = None; // form (b): index of command waiting for its status line
    // Joins `{{{` ... `}}}` literal blocks into their line, as one marked word.
    let mut joined: Vec<String> = Vec::new();
    let mut lit: Option<(String, Vec<String>)> = None;
    for raw in lines {
        if let Some((head, body)) = lit.as_mut() {
            if let Some(rest) = raw.strip_prefix("}}}") {
                let content = body.join("\r\n").replace('"', "\u{1}");
                joined.push(format!("{head}\"\u{0}{content}\"{rest}"));
                lit = None;
            } else {
                body.push(raw.to_string());
            }
            continue;
        }
        match raw.strip_suffix("{{{") {
            Some(head) => lit = Some((head.to_string(), Vec::new())),
            None => joined.push(raw.to_string()),
        }
    }
    // A blank line ends a pipelined group.
    let mut group_open = false;
    for raw in &joined {
        let l = raw.trim_end();
        if l.is_empty() {
            group_open = false;
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        if let Some(rest) = l.strip_prefix("* ").or_else(|| l.strip_prefix("! ")).or_else(|| l.strip_prefix("? ")) {
            if let Some(g) = groups.last_mut() {
                g.untagged.push(Expect { kind: l.chars().next().unwrap_or('*'), toks: tokenize(rest.as_bytes()) });
            }
            continue;
        }
        let (conn, body) = match l.split_once(' ') {
            Some((n, rest)) if multi && n.chars().all(|c| c.is_ascii_digit()) => {
                (n.parse::<usize>().unwrap_or(1), rest)
            }
            _ => (1, l),
        };
        let (word, rest) = body.split_once(' ').unwrap_or((body, ""));
        let status = match word.to_lowercase().as_str() {
            "ok" | "no" | "bad" => Some(word.to_lowercase()),
            "\"\"" => Some(String::new()),
            _ => None,
        };
        if let (Some(st), Some(gi)) = (&status, awaiting) {
            // The status line of a form-(b) command.
            if let Some(c) = groups[gi].cmds.last_mut() {
                c.status = Some(st.clone());
                c.prefix = tokenize(rest.as_bytes());
            }
            awaiting = None;
            continue;
        }
        let cmd = match status {
            Some(st) => Cmd { conn, text: rest.to_string(), status: Some(st), prefix: Vec::new() },
            None => Cmd { conn, text: body.to_string(), status: None, prefix: Vec::new() },
        };
        let form_b = cmd.status.is_none();
        // Consecutive commands with no untagged or blank lines between them are pipelined.
        match groups.last_mut() {
            Some(g) if group_open && g.untagged.is_empty() && !form_b && g.cmds.iter().all(|c| c.status.is_some()) => {
                g.cmds.push(cmd)
            }
            _ => groups.push(Group { cmds: vec![cmd], untagged: Vec::new() }),
        }
        group_open = true;
        if form_b {
            awaiting = Some(groups.len() - 1);
        }
    }
    Script { headers, groups }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    next: u32,
}

impl Client {
    fn connect(addr: &str) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Client { r: BufReader::new(s.try_clone()?), w: s, next: 0 };
        c.response()?;
        Ok(c)
    }

    /// One response line, with any literals it carries.
    fn response(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.r.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            out.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let lit = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|p| &t[p + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut data = vec![0u8; n];
                    self.r.read_exact(&mut data)?;
                    out.extend_from_slice(&data);
                }
                None => return Ok(out),
            }
        }
    }

    fn send(&mut self, text: &str) -> std::io::Result<String> {
        self.next += 1;
        let tag = format!("t{}", self.next);
        self.w.write_all(format!("{tag} {text}\r\n").as_bytes())?;
        Ok(tag)
    }

    /// Runs a command to its tagged reply; returns (untagged lines, tagged line).
    fn run(&mut self, text: &str) -> std::io::Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let tag = self.send(text)?;
        let mut untagged = Vec::new();
        loop {
            let r = self.response()?;
            if r.starts_with(format!("{tag} ").as_bytes()) {
                return Ok((untagged, r));
            }
            untagged.push(r);
        }
    }
}

fn mbox(text: &[u8]) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            msgs.push(Vec::new());
        } else if let Some(m) = msgs.last_mut() {
            m.extend_from_slice(line);
        }
    }
    msgs.into_iter()
        .map(|m| {
            let mut out = Vec::with_capacity(m.len() + m.len() / 20);
            let mut prev = 0u8;
            for &b in &m {
                if b == b'\n' && prev != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                prev = b;
            }
            out
        })
        .collect()
}

enum Outcome {
    Pass,
    Skip,
    Fail(String),
    /// The server stopped answering: always a failure.
    Dead(String),
}

fn run_script(a: &Agora, dir: &Path, name: &str, caps: &str) -> Outcome {
    let Ok(text) = std::fs::read_to_string(dir.join(name)) else { return Outcome::Skip };
    let script = parse_script(&text);
    if let Some(need) = script.headers.get("capabilities")
        && !need.split_whitespace().all(|c| caps.split_whitespace().any(|x| x.eq_ignore_ascii_case(c)))
    {
        return Outcome::Skip;
    }
    let addr = format!("{}:10143", a.ip);
    let n = script.headers.get("connections").and_then(|c| c.parse().ok()).unwrap_or(1usize);
    let state = script.headers.get("state").map_or("selected", |s| s.as_str()).to_lowercase();
    let mailbox = format!("imaptest-{}", name.replace(['.', '/'], "-"));
    let mut vars: HashMap<String, Tok> = HashMap::new();
    for (k, v) in [
        ("mailbox", mailbox.as_str()),
        ("user", USER),
        ("username", "imaptest"),
        ("domain", "example.org"),
        ("password", PASSWORD),
    ] {
        vars.insert(k.into(), Tok::Word(v.to_lowercase()));
    }
    let mbox_file =
        if dir.join(format!("{name}.mbox")).exists() { format!("{name}.mbox") } else { "default.mbox".into() };
    let msgs = mbox(&std::fs::read(dir.join(mbox_file)).unwrap_or_default());
    let setup = || -> std::io::Result<Vec<Client>> {
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(Client::connect(&addr)?);
        }
        if state == "nonauth" {
            return Ok(conns);
        }
        for c in &mut conns {
            c.run(&format!("LOGIN {USER} {PASSWORD}"))?;
        }
        if state == "auth" {
            return Ok(conns);
        }
        conns[0].run(&format!("DELETE {mailbox}"))?;
        conns[0].run(&format!("CREATE {mailbox}"))?;
        if state == "created" {
            return Ok(conns);
        }
        let count = match script.headers.get("messages").map(|s| s.as_str()) {
            Some("all") => msgs.len(),
            Some(x) => x.parse().unwrap_or(0),
            None => 0,
        };
        for i in 0..count {
            let Some(m) = msgs.get(i % msgs.len().max(1)) else { break };
            conns[0].run(&format!("APPEND {mailbox} {{{}+}}\r\n{}", m.len(), String::from_utf8_lossy(m)))?;
        }
        if state == "appended" {
            return Ok(conns);
        }
        for c in &mut conns {
            c.run(&format!("SELECT {mailbox}"))?;
        }
        Ok(conns)
    };
    let mut conns = match setup() {
        Ok(c) => c,
        Err(e) => return Outcome::Dead(format!("setup: {e}")),
    };
    let mut next_msg = script.headers.get("messages").and_then(|m| m.parse::<usize>().ok()).unwrap_or(0);
    for g in &script.groups {
        // Commands on one connection are pipelined: sent together, then their replies
        // read. Runs on different connections go one after the other, in script order.
        let mut sent_all: Vec<String> = Vec::new();
        let mut untagged: Vec<Vec<Tok>> = Vec::new();
        for run in g.cmds.chunk_by(|x, y| x.conn == y.conn) {
            let mut pending = Vec::new();
            for c in run {
                let mut text = substitute(&c.text, &vars);
                // "append [mailbox] [flags]" without a message: the next one from the mbox.
                let lower = text.to_lowercase();
                if (lower == "append" || lower.starts_with("append ")) && !text.ends_with('}') && !msgs.is_empty() {
                    let m = &msgs[next_msg % msgs.len()];
                    next_msg += 1;
                    if lower == "append" {
                        text = format!("append {mailbox}");
                    }
                    text = format!("{text} {{{}+}}\r\n{}", m.len(), String::from_utf8_lossy(m));
                }
                let Some(cl) = conns.get_mut(c.conn - 1) else {
                    return Outcome::Fail(format!("no connection {}", c.conn));
                };
                match cl.send(&text) {
                    Ok(tag) => pending.push((c, tag, text)),
                    Err(e) => return Outcome::Dead(format!("{text}: {e}")),
                }
            }
            sent_all.extend(pending.iter().map(|p| p.2.clone()));
            for (c, tag, text) in &pending {
                let cl = &mut conns[c.conn - 1];
                let tagged = loop {
                    match cl.response() {
                        Ok(r) if r.starts_with(format!("{tag} ").as_bytes()) => break r,
                        Ok(r) => {
                            if let Some(rest) = r.strip_prefix(b"* ") {
                                untagged.push(tokenize(rest));
                            }
                        }
                        Err(e) => return Outcome::Dead(format!("{text}: {e}")),
                    }
                };
                let toks = tokenize(&tagged[tag.len() + 1..]);
                if let Some(want) = &c.status
                    && !want.is_empty()
                {
                    let got = match toks.first() {
                        Some(Tok::Word(w)) => w.clone(),
                        _ => String::new(),
                    };
                    if got != *want {
                        return Outcome::Fail(format!(
                            "{text}: expected {want}, got {}",
                            String::from_utf8_lossy(&tagged).trim()
                        ));
                    }
                    if !c.prefix.is_empty() {
                        let n = c.prefix.len().min(toks.len().saturating_sub(1));
                        if !match_toks(&c.prefix, &toks[1..1 + n], &mut vars) {
                            return Outcome::Fail(format!(
                                "{text}: reply {} does not start as expected",
                                String::from_utf8_lossy(&tagged).trim()
                            ));
                        }
                    }
                }
            }
        }
        for e in &g.untagged {
            let found = untagged.iter().any(|u| match_toks(&e.toks, u, &mut vars));
            match e.kind {
                '*' if !found => {
                    return Outcome::Fail(format!("after {sent_all:?}: missing untagged {:?}", e.toks));
                }
                '!' if found => return Outcome::Fail(format!("unexpected untagged {:?}", e.toks)),
                _ => {}
            }
        }
    }
    Outcome::Pass
}

#[test]
fn imaptest_scripts() {
    let Some(dir) = scripts_dir() else {
        eprintln!("imaptest scripts not found: set IMAPTEST_TESTS or provide ../shared/imaptest/tests; nothing run");
        return;
    };
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            "[server]\nhostname = \"mx.example.org\"\ndomain = \"example.org\"\n[auth]\nplaintext_without_tls = true\n",
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", USER, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    let caps = {
        let mut c = Client::connect(&format!("{}:10143", a.ip)).unwrap();
        let (u, _) = c.run("CAPABILITY").unwrap();
        String::from_utf8_lossy(&u[0]).into_owned()
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".mbox"))
        .collect();
    names.sort();
    let (mut pass, mut fail, mut skip, mut dead) = (0, 0, 0, Vec::new());
    for name in &names {
        match run_script(&a, &dir, name, &caps) {
            Outcome::Pass => {
                pass += 1;
                println!("imaptest {name}: passes");
            }
            Outcome::Skip => skip += 1,
            Outcome::Fail(why) => {
                fail += 1;
                println!("imaptest {name}: does not pass yet: {why}");
            }
            Outcome::Dead(why) => {
                println!("imaptest {name}: SERVER STOPPED ANSWERING: {why}");
                dead.push(name.clone());
            }
        }
    }
    println!("imaptest totals: scripts passing {pass}, failing {fail}, skipped for capabilities not offered {skip}");
    assert!(dead.is_empty(), "the server stopped answering during {dead:?}");
    // The server is still up and answering after every script.
    let mut c = Client::connect(&format!("{}:10143", a.ip)).unwrap();
    assert!(c.run("NOOP").unwrap().1.windows(2).any(|w| w == b"OK"));
    if std::env::var_os("AGORA_IMAPTEST_STRICT").is_some() {
        assert_eq!(fail, 0, "imaptest conformance failures");
    }
}
