//! Running a checked script over one message for one recipient: tests read the
//! message (as header edits left it), the envelope and the variables; commands add
//! actions, checked against the limits and each other; what is left at the end is the
//! outcome the mail core carries out. A runtime error keeps the message (RFC 5228
//! §2.10.6) and says why.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use agora_store::address::{Address, parse_addresses};
use agora_store::text::decode_words;

use crate::matching::{Match, MatchType};
use crate::parse::{Cmd, DupId, FlagOp, Index, Modifier, Part, Program, Test, Transform, Zone};
use crate::{Action, Environment, Input, Limits, Outcome, Script, Vacation};

/// Header fields no script may add or remove (RFC 5293 §7: the trace must stay true).
const PROTECTED: &[&str] = &["received", "auto-submitted"];

/// One address as a redirect names it (a bare address or a mailbox with its name, with
/// the white space RFC 5322 allows), as local@domain; None if it is not exactly one.
pub(crate) fn normalize_address(a: &str) -> Option<String> {
    let mut found = None;
    for x in parse_addresses(a) {
        match x {
            Address::Mailbox { mailbox: Some(l), host: Some(h), .. } if found.is_none() => {
                let (l, h) = (l.trim(), h.trim());
                let ok = !l.is_empty()
                    && !h.is_empty()
                    && h.contains(|c: char| c.is_ascii_alphanumeric())
                    && !format!("{l}{h}").chars().any(|c| c.is_control() || c == '<' || c == '>' || c == ',');
                if !ok {
                    return None;
                }
                let local = if l.contains([' ', '"', '\\', '(', ')', ',', ':', ';', '<', '>', '@', '[', ']']) {
                    format!("\"{}\"", l.replace('\\', "\\\\").replace('"', "\\\""))
                } else {
                    l.to_string()
                };
                found = Some(format!("{local}@{h}"));
            }
            _ => return None,
        }
    }
    found
}

pub(crate) fn field_name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Why a run stopped early.
enum Flow {
    Stop,
    Return,
    Error(String),
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<(), Flow>> + Send + 'a>>;
type Check<'a> = Pin<Box<dyn Future<Output = Result<bool, Flow>> + Send + 'a>>;

struct Head {
    /// Name as written, value (folded, as text), and the field's own bytes while it is
    /// untouched (written back exactly: 8-bit text, folding and signatures survive).
    fields: Vec<(String, String, Option<Vec<u8>>)>,
    body: usize,
    /// A message of header only (no empty line) has no body at all (RFC 5173 §5).
    has_body: bool,
    edited: bool,
}

impl Head {
    fn parse(m: &[u8]) -> Head {
        let end = m.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p + 2, p + 4));
        let end = end.or_else(|| m.windows(2).position(|w| w == b"\n\n").map(|p| (p + 1, p + 2)));
        let has_body = end.is_some();
        let (head_end, body) = end.unwrap_or((m.len(), m.len()));
        let mut fields: Vec<(String, String, Option<Vec<u8>>)> = Vec::new();
        for line in m[..head_end].split_inclusive(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            if (line.starts_with(b" ") || line.starts_with(b"\t"))
                && let Some(last) = fields.last_mut()
            {
                last.1.push_str("\r\n");
                last.1.push_str(text);
                if let Some(raw) = last.2.as_mut() {
                    raw.extend_from_slice(line);
                }
                continue;
            }
            match text.split_once(':') {
                Some((n, v)) => fields.push((
                    n.trim_end().to_string(),
                    v.strip_prefix(' ').unwrap_or(v).to_string(),
                    Some(line.to_vec()),
                )),
                // Not a field: kept as it is, never matched.
                None => fields.push((String::new(), String::new(), Some(line.to_vec()))),
            }
        }
        Head { fields, body, has_body, edited: false }
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a (String, String, Option<Vec<u8>>)> + 'a {
        self.fields.iter().filter(move |f| !f.0.is_empty() && f.0.eq_ignore_ascii_case(name))
    }

    /// The values of a field, unfolded and decoded, in order.
    fn values(&self, name: &str) -> Vec<String> {
        self.named(name).map(|f| decode_words(&unfold(&f.1)).trim().to_string()).collect()
    }

    fn raw_values(&self, name: &str) -> Vec<String> {
        self.named(name).map(|f| unfold(&f.1)).collect()
    }

    fn write(&self, m: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(m.len() + 256);
        for (n, v, raw) in &self.fields {
            match raw {
                Some(raw) => {
                    out.extend_from_slice(raw);
                    if !raw.ends_with(b"\n") {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                None => {
                    out.extend_from_slice(n.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(m.get(self.body..).unwrap_or(&[]));
        out
    }
}

fn unfold(v: &str) -> String {
    v.replace("\r\n", "").replace('\n', "")
}

/// The values an index picks (1 is the first, or with `last` the last).
fn pick<T>(mut v: Vec<T>, index: Option<Index>) -> Vec<T> {
    match index {
        None => v,
        Some(Index { n, last }) => {
            let n = n as usize;
            if n == 0 || n > v.len() {
                return Vec::new();
            }
            let i = if last { v.len() - n } else { n - 1 };
            vec![v.swap_remove(i)]
        }
    }
}

struct Run<'a> {
    message: std::borrow::Cow<'a, [u8]>,
    from: String,
    to: String,
    auth: Option<String>,
    now: i64,
    env: &'a dyn Environment,
    limits: &'a Limits,
    head: Head,
    actions: Vec<Action>,
    /// Each action's message: header edits before an action reach it, later ones do not.
    versions: Vec<Option<std::sync::Arc<Vec<u8>>>>,
    keep_cancelled: bool,
    rejected: bool,
    redirects: usize,
    flags: Vec<String>,
    globals: HashMap<String, String>,
    included: HashSet<(bool, String)>,
    includes: usize,
    summary: Option<agora_store::MessageSummary>,
    /// The test suite's state, when a suite file runs.
    ts: Option<Box<crate::testsuite::State>>,
    /// What matching may still spend, and the regular expressions compiled so far.
    work: crate::matching::Work,
    /// Duplicate ids to note once the message is delivered (RFC 7352 §3).
    noted: Vec<(String, u64, bool)>,
}

/// One script's own variables (each included script has its own, RFC 6609 §3.4).
struct Frame {
    vars: HashMap<String, String>,
    global_names: HashSet<String>,
    captures: Vec<String>,
    variables: bool,
}

pub(crate) async fn run(script: &Script, input: &Input<'_>, env: &dyn Environment, limits: &Limits) -> Outcome {
    let mut r = Run::new(input, env, limits, None);
    let mut frame = Frame::new(&script.program);
    let result = r.block(&script.program.cmds, &mut frame, 0).await;
    let error = match result {
        Ok(()) | Err(Flow::Stop) | Err(Flow::Return) => None,
        Err(Flow::Error(e)) => Some(e),
    };
    if let Some(e) = error {
        return Outcome {
            actions: vec![Action::Keep { flags: Vec::new() }],
            messages: vec![None],
            error: Some(e),
            duplicates: Vec::new(),
        };
    }
    if !r.keep_cancelled {
        let flags = r.flags.clone();
        r.add(Action::Keep { flags });
    }
    Outcome { actions: r.actions, messages: r.versions, error: None, duplicates: r.noted }
}

/// Runs a test-suite file: its top-level commands, each `test` block recording its
/// own result.
pub(crate) async fn run_suite(script: &Script, state: crate::testsuite::State) -> crate::testsuite::State {
    struct NoEnv;
    #[async_trait::async_trait]
    impl Environment for NoEnv {
        async fn mailbox_exists(&self, _: &str) -> bool {
            false
        }
        async fn duplicate(&self, _: &str, _: u64) -> bool {
            false
        }
        async fn script(&self, _: &str, _: bool) -> Option<String> {
            None
        }
    }
    let limits = Limits::default();
    let input = Input {
        message: crate::testsuite::DEFAULT_MESSAGE,
        from: "sender@example.com",
        to: "recipient@example.net",
        auth: None,
        now: 1_700_000_000,
    };
    let mut r = Run::new(&input, &NoEnv, &limits, Some(Box::new(state)));
    let mut frame = Frame::new(&script.program);
    if let Err(Flow::Error(e)) = r.block(&script.program.cmds, &mut frame, 0).await
        && let Some(ts) = r.ts.as_mut()
    {
        ts.failed.push(("(outside any test)".into(), e.trim_start_matches(crate::testsuite::FAILED).to_string()));
    }
    r.ts.map(|b| *b).unwrap_or_default()
}

impl Frame {
    fn new(p: &Program) -> Frame {
        Frame {
            vars: HashMap::new(),
            global_names: HashSet::new(),
            captures: Vec::new(),
            variables: p.caps.contains("variables"),
        }
    }
}

impl<'a> Run<'a> {
    /// A run over `input` with nothing done yet (and the test suite's state, if any).
    fn new(
        input: &Input<'a>,
        env: &'a dyn Environment,
        limits: &'a Limits,
        ts: Option<Box<crate::testsuite::State>>,
    ) -> Run<'a> {
        Run {
            message: std::borrow::Cow::Borrowed(input.message),
            from: input.from.to_string(),
            to: input.to.to_string(),
            auth: input.auth.map(str::to_string),
            now: input.now,
            env,
            limits,
            head: Head::parse(input.message),
            actions: Vec::new(),
            versions: Vec::new(),
            keep_cancelled: false,
            rejected: false,
            redirects: 0,
            flags: Vec::new(),
            globals: HashMap::new(),
            included: HashSet::new(),
            includes: 0,
            summary: None,
            ts,
            work: crate::matching::Work::new(limits.max_work),
            noted: Vec::new(),
        }
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, Flow> {
    Err(Flow::Error(m.into()))
}

impl<'a> Run<'a> {
    /// Adds an action, folding duplicates (the same folder or address once).
    fn add(&mut self, a: Action) {
        let target = folder_of(&a);
        if let Some(t) = &target
            && let Some(pos) = self.actions.iter().position(|x| folder_of(x).as_ref() == Some(t))
        {
            // The same folder once; the last flags asked for win (RFC 5232 §3 leaves it
            // open; Pigeonhole does so), and so does the message as edited by then.
            let new_flags = match a {
                Action::Keep { flags } | Action::FileInto { flags, .. } => flags,
                _ => Vec::new(),
            };
            match &mut self.actions[pos] {
                Action::Keep { flags } | Action::FileInto { flags, .. } => *flags = new_flags,
                _ => {}
            }
            self.versions[pos] = self.version();
            return;
        }
        if let Action::Redirect { address } = &a
            && self
                .actions
                .iter()
                .any(|x| matches!(x, Action::Redirect { address: y } if y.eq_ignore_ascii_case(address)))
        {
            return;
        }
        self.actions.push(a);
        self.versions.push(self.version());
    }

    /// The message as header edits have left it so far (None: as received).
    fn version(&self) -> Option<std::sync::Arc<Vec<u8>>> {
        self.head.edited.then(|| std::sync::Arc::new(self.head.write(&self.message)))
    }

    fn var(&self, f: &Frame, name: &str) -> String {
        let name = name.to_ascii_lowercase();
        if let Some(g) = name.strip_prefix("global.") {
            return self.globals.get(g).cloned().unwrap_or_default();
        }
        if f.global_names.contains(&name) {
            return self.globals.get(&name).cloned().unwrap_or_default();
        }
        f.vars.get(&name).cloned().unwrap_or_default()
    }

    fn set_var(&mut self, f: &mut Frame, name: &str, mut value: String) -> Result<(), Flow> {
        truncate(&mut value, self.limits.max_variable_size);
        let name = name.to_ascii_lowercase();
        let (map, key) = if let Some(g) = name.strip_prefix("global.") {
            (&mut self.globals, g.to_string())
        } else if f.global_names.contains(&name) {
            (&mut self.globals, name)
        } else {
            (&mut f.vars, name)
        };
        if !map.contains_key(&key) && map.len() >= self.limits.max_variables {
            return err("too many variables");
        }
        map.insert(key, value);
        Ok(())
    }

    /// A string with `${name}` and `${N}` replaced (RFC 5229 §3); as written when the
    /// script does not use variables.
    fn expand(&self, f: &Frame, s: &str) -> String {
        if !f.variables || !s.contains("${") {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(p) = rest.find("${") {
            out.push_str(&rest[..p]);
            let after = &rest[p + 2..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[p..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                let n: usize = name.parse().unwrap_or(usize::MAX);
                out.push_str(f.captures.get(n).map_or("", String::as_str));
                rest = &after[close + 1..];
            } else if is_var_name(name) {
                out.push_str(&self.var(f, name));
                rest = &after[close + 1..];
            } else {
                // Not a variable reference: kept as written.
                out.push_str("${");
                rest = after;
            }
            if out.len() > self.limits.max_variable_size * 4 {
                break;
            }
        }
        out.push_str(rest);
        out
    }

    fn expand_all(&self, f: &Frame, l: &[String]) -> Vec<String> {
        l.iter().map(|s| self.expand(f, s)).collect()
    }

    fn block<'s>(&'s mut self, cmds: &'s [Cmd], f: &'s mut Frame, depth: usize) -> Step<'s> {
        Box::pin(async move {
            for c in cmds {
                self.command(c, f, depth).await?;
            }
            Ok(())
        })
    }

    fn command<'s>(&'s mut self, c: &'s Cmd, f: &'s mut Frame, depth: usize) -> Step<'s> {
        Box::pin(async move {
            match c {
                Cmd::If(branches, otherwise) => {
                    for (t, body) in branches {
                        if self.test(t, f).await? {
                            return self.block(body, f, depth).await;
                        }
                    }
                    if let Some(body) = otherwise {
                        return self.block(body, f, depth).await;
                    }
                }
                Cmd::Stop => return Err(Flow::Stop),
                Cmd::Return => return Err(Flow::Return),
                Cmd::Keep { flags } => {
                    let flags = self.flags_for(f, flags.as_deref());
                    self.check_room()?;
                    self.add(Action::Keep { flags });
                    self.keep_cancelled = true;
                    self.check_reject()?;
                }
                Cmd::Discard => self.keep_cancelled = true,
                Cmd::FileInto { mailbox, copy, create, flags } => {
                    let mailbox = inbox_case(&self.expand(f, mailbox));
                    if mailbox.is_empty() || mailbox.chars().any(char::is_control) {
                        return err(format!("fileinto: \"{mailbox}\" is not a mailbox name"));
                    }
                    let flags = self.flags_for(f, flags.as_deref());
                    self.check_room()?;
                    self.add(Action::FileInto { mailbox, flags, create: *create });
                    if !copy {
                        self.keep_cancelled = true;
                    }
                    self.check_reject()?;
                }
                Cmd::Redirect { address, copy } => {
                    let given = self.expand(f, address);
                    let Some(address) = normalize_address(&given) else {
                        return err(format!("redirect: \"{given}\" is not an address"));
                    };
                    self.redirects += 1;
                    if self.redirects > self.limits.max_redirects {
                        return err(format!("more than {} redirects", self.limits.max_redirects));
                    }
                    self.check_room()?;
                    self.add(Action::Redirect { address });
                    if !copy {
                        self.keep_cancelled = true;
                    }
                    self.check_reject()?;
                }
                Cmd::Reject { reason, extended } => {
                    if self.rejected {
                        return err("the message is rejected twice");
                    }
                    if self.from.is_empty() {
                        // Nobody to tell: a reject of a bounce discards it (RFC 5429 §2.1).
                        self.keep_cancelled = true;
                        return Ok(());
                    }
                    self.rejected = true;
                    self.keep_cancelled = true;
                    let reason = self.expand(f, reason);
                    self.actions.push(Action::Reject { reason, extended: *extended });
                    self.versions.push(None);
                    self.check_reject()?;
                }
                Cmd::Flags { op, var, flags } => {
                    let given: Vec<String> = flag_words(&self.expand_all(f, flags));
                    let current = match var {
                        Some(v) => flag_words(&[self.var(f, v)]),
                        None => self.flags.clone(),
                    };
                    let next = match op {
                        FlagOp::Set => dedup_flags(given),
                        FlagOp::Add => dedup_flags(current.into_iter().chain(given).collect()),
                        FlagOp::Remove => {
                            current.into_iter().filter(|c| !given.iter().any(|g| g.eq_ignore_ascii_case(c))).collect()
                        }
                    };
                    match var {
                        Some(v) => {
                            let joined = next.join(" ");
                            self.set_var(f, v, joined)?;
                        }
                        None => self.flags = next,
                    }
                }
                Cmd::Set { mods, name, value } => {
                    let mut v = self.expand(f, value);
                    for m in mods {
                        v = modify(*m, &v);
                    }
                    self.set_var(f, name, v)?;
                }
                Cmd::Vacation(v) => {
                    if self.actions.iter().any(|a| matches!(a, Action::Vacation(_))) {
                        return err("vacation is used twice");
                    }
                    let reason = self.expand(f, &v.reason);
                    let subject = v.subject.as_ref().map(|s| self.expand(f, s));
                    let from = v.from.as_ref().map(|s| self.expand(f, s));
                    let addresses = self.expand_all(f, &v.addresses);
                    // Without a handle, the same text is the same reply (RFC 5230 §4.2).
                    let handle = match &v.handle {
                        Some(h) => self.expand(f, h),
                        None => format!(
                            "{}\u{0}{}\u{0}{}",
                            subject.as_deref().unwrap_or(""),
                            from.as_deref().unwrap_or(""),
                            reason
                        ),
                    };
                    let (lo, hi) = self.limits.vacation_seconds;
                    let seconds = v.seconds.unwrap_or(7 * 86_400).clamp(lo, hi);
                    self.check_room()?;
                    self.versions.push(None);
                    self.actions.push(Action::Vacation(Vacation {
                        reason,
                        subject,
                        from,
                        addresses,
                        mime: v.mime,
                        handle,
                        seconds,
                    }));
                    self.check_reject()?;
                }
                Cmd::Include { global, once, optional, name } => {
                    let name = self.expand(f, name);
                    if !crate::parse::script_name_ok(&name) {
                        return err(format!("include: \"{name}\" is not a script name"));
                    }
                    let key = (*global, name.clone());
                    if *once && self.included.contains(&key) {
                        return Ok(());
                    }
                    self.includes += 1;
                    if self.includes > self.limits.max_includes || depth >= self.limits.max_include_depth {
                        return err("too many included scripts");
                    }
                    let text = match &self.ts {
                        Some(ts) => {
                            let dir = ts.dir.join(if *global { "included-global" } else { "included" });
                            std::fs::read_to_string(dir.join(format!("{name}.sieve"))).ok()
                        }
                        None => self.env.script(&name, *global).await,
                    };
                    let Some(text) = text else {
                        if *optional {
                            return Ok(());
                        }
                        return err(format!("include: no script \"{name}\""));
                    };
                    let script = match crate::compile(&text) {
                        Ok(s) => Arc::new(s),
                        Err(e) => return err(format!("include \"{name}\": {e}")),
                    };
                    self.included.insert(key);
                    let mut inner = Frame::new(&script.program);
                    match self.block(&script.program.cmds, &mut inner, depth + 1).await {
                        Ok(()) | Err(Flow::Return) => {}
                        Err(other) => return Err(other),
                    }
                }
                Cmd::Suite(c) => return self.suite_command(c, f, depth).await,
                Cmd::Global(names) => {
                    for n in names {
                        f.global_names.insert(n.clone());
                    }
                }
                Cmd::AddHeader { last, name, value } => {
                    let name = self.expand(f, name);
                    let value = self.expand(f, value);
                    if !field_name_ok(&name) {
                        return err(format!("addheader: \"{name}\" is not a header field name"));
                    }
                    if PROTECTED.contains(&name.to_ascii_lowercase().as_str()) {
                        return Ok(());
                    }
                    if self.head.fields.len() >= self.limits.max_header_fields {
                        return err("too many header fields");
                    }
                    let value = fold(&value);
                    if *last {
                        self.head.fields.push((name, value, None));
                    } else {
                        self.head.fields.insert(0, (name, value, None));
                    }
                    self.head.edited = true;
                }
                Cmd::DeleteHeader { index, m, name, patterns } => {
                    let name = self.expand(f, name);
                    if PROTECTED.contains(&name.to_ascii_lowercase().as_str()) {
                        return Ok(());
                    }
                    let patterns = patterns.as_ref().map(|p| self.expand_all(f, p));
                    let positions: Vec<usize> = self
                        .head
                        .fields
                        .iter()
                        .enumerate()
                        .filter(|(_, (n, _, _))| !n.is_empty() && n.eq_ignore_ascii_case(&name))
                        .map(|(i, _)| i)
                        .collect();
                    let positions = pick(positions, *index);
                    let mut gone = Vec::new();
                    for p in positions {
                        let value = decode_words(&unfold(&self.head.fields[p].1)).trim().to_string();
                        let hit = match &patterns {
                            None => true,
                            Some(keys) => keys.iter().any(|k| m.one(&value, k, None, &mut self.work)),
                        };
                        if hit {
                            gone.push(p);
                        }
                    }
                    if !gone.is_empty() {
                        let mut i = 0;
                        self.head.fields.retain(|_| {
                            i += 1;
                            !gone.contains(&(i - 1))
                        });
                        self.head.edited = true;
                    }
                }
            }
            Ok(())
        })
    }

    fn check_room(&self) -> Result<(), Flow> {
        if self.actions.len() >= self.limits.max_actions {
            return err(format!("more than {} actions", self.limits.max_actions));
        }
        Ok(())
    }

    /// Reject goes with nothing that delivers or replies (RFC 5429 §2.2).
    fn check_reject(&self) -> Result<(), Flow> {
        if self.rejected && self.actions.iter().any(|a| !matches!(a, Action::Reject { .. })) {
            return err("reject cannot be combined with keep, fileinto, redirect or vacation");
        }
        Ok(())
    }

    fn flags_for(&self, f: &Frame, given: Option<&[String]>) -> Vec<String> {
        match given {
            Some(l) => dedup_flags(flag_words(&self.expand_all(f, l))),
            None => self.flags.clone(),
        }
    }

    fn test<'s>(&'s mut self, t: &'s Test, f: &'s mut Frame) -> Check<'s> {
        Box::pin(async move {
            Ok(match t {
                Test::True => true,
                Test::False => false,
                Test::Not(t) => !self.test(t, f).await?,
                Test::AllOf(l) => {
                    for t in l {
                        if !self.test(t, f).await? {
                            return Ok(false);
                        }
                    }
                    true
                }
                Test::AnyOf(l) => {
                    for t in l {
                        if self.test(t, f).await? {
                            return Ok(true);
                        }
                    }
                    false
                }
                Test::Exists(names) => {
                    let names = self.expand_all(f, names);
                    names.iter().all(|n| self.head.named(n).next().is_some())
                }
                Test::Size { over, limit } => {
                    let size = if self.head.edited {
                        self.head.write(&self.message).len() as u64
                    } else {
                        self.message.len() as u64
                    };
                    if *over { size > *limit } else { size < *limit }
                }
                Test::Header { m, index, headers, keys } => {
                    let mut values = Vec::new();
                    for h in self.expand_all(f, headers) {
                        values.extend(pick(self.head.values(&h), *index));
                    }
                    self.matches(f, m, values, keys)?
                }
                Test::Address { m, part, index, headers, keys } => {
                    let mut values = Vec::new();
                    for h in self.expand_all(f, headers) {
                        for raw in pick(self.head.raw_values(&h), *index) {
                            for a in parse_addresses(&raw) {
                                if let Address::Mailbox { mailbox, host, .. } = a {
                                    let local = mailbox.unwrap_or_default();
                                    let full = match host.as_deref().filter(|h| !h.is_empty()) {
                                        Some(h) => format!("{local}@{h}"),
                                        None => local,
                                    };
                                    if let Some(v) = address_part(&full, *part, self.limits.separator) {
                                        values.push(v);
                                    }
                                }
                            }
                        }
                    }
                    self.matches(f, m, values, keys)?
                }
                Test::Envelope { m, part, fields, keys } => {
                    let mut values = Vec::new();
                    for field in self.expand_all(f, fields) {
                        let v = match field.to_ascii_lowercase().as_str() {
                            "from" => Some(self.from.as_str()),
                            "to" => Some(self.to.as_str()),
                            _ => self.auth.as_deref(),
                        };
                        let Some(v) = v else { continue };
                        // The null sender is the empty string in every part (RFC 5228 §5.4).
                        if v.is_empty() {
                            values.push(String::new());
                        } else if let Some(x) = address_part(v, *part, self.limits.separator) {
                            values.push(x);
                        }
                    }
                    self.matches(f, m, values, keys)?
                }
                Test::Body { m, transform, types, keys } => {
                    let values = self.body(*transform, types);
                    self.matches(f, m, values, keys)?
                }
                Test::HasFlag { m, vars, keys } => {
                    let values = match vars {
                        Some(v) => dedup_flags(flag_words(&v.iter().map(|n| self.var(f, n)).collect::<Vec<_>>())),
                        None => self.flags.clone(),
                    };
                    // Keys are flag lists too (RFC 5232 §4), except a count's number.
                    if matches!(m.mt, MatchType::Count(_)) {
                        return self.matches(f, m, values, keys);
                    }
                    let keys = flag_words(&self.expand_all(f, keys));
                    self.matches(f, m, values, &keys)?
                }
                Test::Str { m, sources, keys } => {
                    let mut values = self.expand_all(f, sources);
                    if matches!(m.mt, MatchType::Count(_)) {
                        values.retain(|v| !v.is_empty());
                    }
                    self.matches(f, m, values, keys)?
                }
                Test::Date { m, zone, index, header, part, keys } => {
                    let header = self.expand(f, header);
                    let values: Vec<String> = pick(self.head.values(&header), *index)
                        .iter()
                        .filter_map(|v| date_value(v, zone, part))
                        .collect();
                    self.matches(f, m, values, keys)?
                }
                Test::CurrentDate { m, zone, part, keys } => {
                    let offset = match zone {
                        Zone::Offset(o) => *o,
                        _ => 0,
                    };
                    let values = vec![date_part(self.now, offset, part)];
                    self.matches(f, m, values, keys)?
                }
                Test::Suite(t) => self.suite_test(t, f).await?,
                Test::MailboxExists(names) => {
                    let names = self.expand_all(f, names);
                    let mut all = true;
                    for n in names {
                        let known = match &self.ts {
                            Some(ts) => ts.folders.contains_key(&n),
                            None => self.env.mailbox_exists(&n).await,
                        };
                        if !known {
                            all = false;
                            break;
                        }
                    }
                    all
                }
                Test::Duplicate { handle, id, seconds, last } => {
                    let value = match id {
                        DupId::MessageId => self.head.values("message-id").into_iter().next(),
                        DupId::Header(h) => self.head.values(&self.expand(f, h)).into_iter().next(),
                        DupId::Unique(u) => Some(self.expand(f, u)),
                    };
                    let Some(value) = value.filter(|v| !v.is_empty()) else { return Ok(false) };
                    let handle = self.expand(f, handle);
                    let seconds =
                        seconds.unwrap_or(self.limits.duplicate_seconds).min(self.limits.duplicate_seconds * 4);
                    let key = format!("{handle}\u{0}{value}");
                    // Seen before in this run counts too; the id is noted only once the
                    // message is delivered.
                    let seen = self.noted.iter().any(|n| n.0 == key) || self.env.duplicate(&key, seconds).await;
                    if !self.noted.iter().any(|n| n.0 == key) {
                        self.noted.push((key, seconds, *last));
                    }
                    seen
                }
            })
        })
    }

    /// Values against keys by the match; a match sets the match variables.
    fn matches(&mut self, f: &mut Frame, m: &Match, values: Vec<String>, keys: &[String]) -> Result<bool, Flow> {
        let keys = self.expand_all(f, keys);
        if matches!(m.mt, MatchType::Count(_)) {
            return Ok(keys.iter().any(|k| m.count(values.len(), k)));
        }
        let capture = f.variables && matches!(m.mt, MatchType::Matches | MatchType::Regex);
        let mut caps = Vec::new();
        for v in &values {
            for k in &keys {
                if m.one(v, k, capture.then_some(&mut caps), &mut self.work) {
                    if capture {
                        f.captures = std::mem::take(&mut caps);
                    }
                    return Ok(true);
                }
                if self.work.exhausted() {
                    return err("the script needs more work than a message may take");
                }
            }
        }
        Ok(false)
    }

    /// What the body test compares (RFC 5173): the raw body, every text part's decoded
    /// text, or the parts of the named content types.
    fn body(&mut self, transform: Transform, types: &[String]) -> Vec<String> {
        let m: &[u8] = &self.message;
        if !self.head.has_body {
            return Vec::new();
        }
        if transform == Transform::Raw {
            let raw = m.get(self.head.body..).unwrap_or(&[]);
            return vec![String::from_utf8_lossy(&raw[..raw.len().min(self.limits.max_body_test)]).into_owned()];
        }
        let summary = self.summary.get_or_insert_with(|| agora_store::MessageSummary::parse(m));
        let mut out = Vec::new();
        let mut leaves = Vec::new();
        collect_leaves(&summary.root, &mut leaves);
        for p in leaves {
            let wanted = match transform {
                Transform::Text => p.media_type == "text",
                _ => types.iter().any(|t| {
                    let t = t.to_ascii_lowercase();
                    t.is_empty()
                        || match t.split_once('/') {
                            Some((a, b)) => a == p.media_type && b == p.media_subtype,
                            None => t == p.media_type,
                        }
                }),
            };
            if !wanted {
                continue;
            }
            let mut text = if p.media_type == "text" {
                if transform == Transform::Text {
                    agora_store::text::part_text(m, p)
                } else {
                    agora_store::text::part_decoded(m, p)
                }
            } else {
                // Other types: the transfer encoding undone, the octets as they are.
                let raw = m.get(p.body_start as usize..(p.end as usize).min(m.len())).unwrap_or(&[]);
                let data = agora_store::text::transfer_decode(p.encoding.as_deref(), raw);
                String::from_utf8_lossy(data.as_deref().unwrap_or(raw)).into_owned()
            };
            truncate(&mut text, self.limits.max_body_test);
            out.push(text);
        }
        out
    }
}

fn collect_leaves<'p>(p: &'p agora_store::Part, out: &mut Vec<&'p agora_store::Part>) {
    if p.children.is_empty() {
        out.push(p);
    } else {
        for c in &p.children {
            collect_leaves(c, out);
        }
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
}

/// "inbox", "Inbox/x" and "INBOX.x" are INBOX and its children (IMAP's INBOX is
/// case-insensitive).
fn inbox_case(name: &str) -> String {
    match name.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("inbox") && matches!(name.as_bytes().get(5), None | Some(b'.' | b'/')) => {
            format!("INBOX{}", &name[5..])
        }
        _ => name.to_string(),
    }
}

fn is_var_name(n: &str) -> bool {
    !n.is_empty()
        && n.split('.').all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn folder_of(a: &Action) -> Option<String> {
    match a {
        Action::Keep { .. } => Some("INBOX".into()),
        Action::FileInto { mailbox, .. } if mailbox.eq_ignore_ascii_case("INBOX") => Some("INBOX".into()),
        Action::FileInto { mailbox, .. } => Some(mailbox.clone()),
        _ => None,
    }
}

/// A value folded for a header field: long values break at spaces.
fn fold(v: &str) -> String {
    // Line breaks in the value are unfolded away (a break not followed by white space
    // becomes one space).
    let mut flat = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars.peek().is_some_and(|&n| n == '\r' || n == '\n') {
                chars.next();
            }
            if !chars.peek().is_some_and(|&n| n == ' ' || n == '\t') {
                flat.push(' ');
            }
        } else {
            flat.push(c);
        }
    }
    let v = flat;
    let v = if v.is_ascii() { v } else { agora_store::text::encode_words(&v) };
    let mut out = String::with_capacity(v.len());
    let mut line = 0;
    for (i, w) in v.split(' ').enumerate() {
        if i > 0 {
            if line + w.len() > 76 && line > 0 {
                out.push_str("\r\n ");
                line = 1;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        out.push_str(w);
        line += w.len();
    }
    out
}

fn flag_words(l: &[String]) -> Vec<String> {
    l.iter().flat_map(|s| s.split_whitespace()).map(str::to_string).collect()
}

fn dedup_flags(l: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in l {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out
}

fn modify(m: Modifier, v: &str) -> String {
    match m {
        Modifier::Lower => v.to_lowercase(),
        Modifier::Upper => v.to_uppercase(),
        Modifier::LowerFirst | Modifier::UpperFirst => {
            let mut c = v.chars();
            match c.next() {
                Some(first) => {
                    let first: String = if m == Modifier::LowerFirst {
                        first.to_lowercase().collect()
                    } else {
                        first.to_uppercase().collect()
                    };
                    first + c.as_str()
                }
                None => String::new(),
            }
        }
        Modifier::QuoteWildcard => v.chars().fold(String::new(), |mut s, c| {
            if matches!(c, '*' | '?' | '\\') {
                s.push('\\');
            }
            s.push(c);
            s
        }),
        Modifier::QuoteRegex => v.chars().fold(String::new(), |mut s, c| {
            if "\\^$.[]|()?*+{}".contains(c) {
                s.push('\\');
            }
            s.push(c);
            s
        }),
        Modifier::Length => v.chars().count().to_string(),
    }
}

/// The part of an address a test compares; None when it has no such part (:detail
/// without a separator).
fn address_part(a: &str, part: Part, sep: char) -> Option<String> {
    let (local, domain) = match a.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (a, ""),
    };
    Some(match part {
        Part::All => a.to_string(),
        Part::Local => local.to_string(),
        Part::Domain => domain.to_string(),
        Part::User => local.split_once(sep).map_or(local, |(u, _)| u).to_string(),
        Part::Detail => local.split_once(sep)?.1.to_string(),
    })
}

/// A Date field's value as one date part (RFC 5260 §4), in the zone asked for.
fn date_value(v: &str, zone: &Zone, part: &str) -> Option<String> {
    // A Received field's date follows its last ';'.
    let v = v.rsplit_once(';').map_or(v, |(_, d)| d).trim();
    let utc = agora_store::sort::parse_date(v)?;
    let original = v
        .split_whitespace()
        .rev()
        .find_map(|t| crate::parse::zone_offset(t.trim_end_matches(|c: char| !c.is_ascii_digit())))
        .unwrap_or(0);
    let offset = match zone {
        Zone::Local => 0,
        Zone::Original => original,
        Zone::Offset(o) => *o,
    };
    Some(date_part(utc, offset, part))
}

fn date_part(utc: i64, offset: i64, part: &str) -> String {
    let t = utc + offset;
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, mo, d) = agora_store::time::civil_from_days(days);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let sign = if offset < 0 { '-' } else { '+' };
    let zone = format!("{sign}{:02}{:02}", offset.abs() / 3600, offset.abs() / 60 % 60);
    match part {
        "year" => format!("{y:04}"),
        "month" => format!("{mo:02}"),
        "day" => format!("{d:02}"),
        "date" => format!("{y:04}-{mo:02}-{d:02}"),
        // Days since 1858-11-17 (the Modified Julian Day).
        "julian" => (days + 40_587).to_string(),
        "hour" => format!("{h:02}"),
        "minute" => format!("{mi:02}"),
        "second" => format!("{s:02}"),
        "time" => format!("{h:02}:{mi:02}:{s:02}"),
        "iso8601" => {
            let z = if offset == 0 { "Z".to_string() } else { format!("{}:{}", &zone[..3], &zone[3..]) };
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{z}")
        }
        "std11" => {
            let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
            let mn = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                [(mo as usize).saturating_sub(1).min(11)];
            format!("{wd}, {d} {mn} {y:04} {h:02}:{mi:02}:{s:02} {zone}")
        }
        "zone" => zone,
        // 0 is Sunday; 1970-01-01 was a Thursday.
        "weekday" => ((days + 4).rem_euclid(7)).to_string(),
        _ => String::new(),
    }
}

/// The test suite's commands and tests.
impl<'a> Run<'a> {
    fn reset_result(&mut self) {
        self.actions.clear();
        self.versions.clear();
        self.keep_cancelled = false;
        self.rejected = false;
        self.redirects = 0;
        self.flags.clear();
    }

    fn set_message(&mut self, m: Vec<u8>) {
        self.head = Head::parse(&m);
        self.message = std::borrow::Cow::Owned(m);
        self.summary = None;
    }

    /// Makes a stored or sent message the current one; false if there is none.
    fn load(&mut self, src: &crate::testsuite::Source) -> bool {
        let Some(ts) = self.ts.as_ref() else { return false };
        match src {
            crate::testsuite::Source::Smtp(n) => {
                let Some((from, to, m)) = ts.outbox.get(*n as usize).cloned() else { return false };
                self.from = from;
                self.to = to;
                self.set_message(m);
            }
            crate::testsuite::Source::Folder(name, n) => {
                let Some((m, flags)) = ts.folders.get(name).and_then(|l| l.get(*n as usize)).cloned() else {
                    return false;
                };
                self.set_message(m);
                self.flags = flags;
            }
        }
        true
    }

    fn suite_command<'s>(&'s mut self, c: &'s crate::testsuite::Command, f: &'s mut Frame, depth: usize) -> Step<'s> {
        use crate::testsuite::{Command, FAILED};
        Box::pin(async move {
            match c {
                Command::Test { name, body } => {
                    self.reset_result();
                    // Each test starts with nothing sent.
                    if let Some(ts) = self.ts.as_mut() {
                        ts.outbox.clear();
                    }
                    let result = self.block(body, f, depth).await;
                    let Some(ts) = self.ts.as_mut() else { return Ok(()) };
                    match result {
                        Err(Flow::Error(e)) => match e.strip_prefix(FAILED) {
                            Some(why) => ts.failed.push((name.clone(), why.to_string())),
                            None => ts.failed.push((name.clone(), format!("runtime error: {e}"))),
                        },
                        _ => ts.passed.push(name.clone()),
                    }
                    self.reset_result();
                }
                Command::Set { what, value } => {
                    let value = self.expand(f, value);
                    match what.as_str() {
                        "message" => self.set_message(crate::testsuite::crlf(&value)),
                        "envelope.from" => self.from = value.trim_start_matches('<').trim_end_matches('>').to_string(),
                        "envelope.to" => self.to = value.trim_start_matches('<').trim_end_matches('>').to_string(),
                        "envelope.auth" => self.auth = Some(value),
                        _ => {}
                    }
                }
                Command::Fail(why) => return Err(Flow::Error(format!("{FAILED}{}", self.expand(f, why)))),
                Command::ResultReset => self.reset_result(),
                Command::MailboxCreate(name) => {
                    let name = self.expand(f, name);
                    if let Some(ts) = self.ts.as_mut() {
                        ts.folders.entry(name).or_default();
                    }
                }
                // A message that is not there leaves the current one.
                Command::Message(src) => {
                    self.load(src);
                }
                Command::Ignored => {}
            }
            Ok(())
        })
    }

    fn suite_test<'s>(&'s mut self, t: &'s crate::testsuite::Test, f: &'s mut Frame) -> Check<'s> {
        use crate::testsuite::Test as T;
        Box::pin(async move {
            Ok(match t {
                T::ResultExecute => self.execute(),
                T::ResultAction { index, kinds } => {
                    let mut names: Vec<&str> = self
                        .actions
                        .iter()
                        .map(|a| match a {
                            Action::Keep { .. } => "keep",
                            Action::FileInto { .. } => "fileinto",
                            Action::Redirect { .. } => "redirect",
                            Action::Reject { .. } => "reject",
                            Action::Vacation(_) => "vacation",
                        })
                        .collect();
                    if !self.keep_cancelled {
                        names.push("keep");
                    }
                    let kinds = self.expand_all(f, kinds);
                    match names.get((*index as usize).wrapping_sub(1)) {
                        Some(n) => kinds
                            .iter()
                            .any(|k| k.eq_ignore_ascii_case(n) || (k == "store" && (*n == "keep" || *n == "fileinto"))),
                        None => false,
                    }
                }
                T::ResultCount { m, keys } => {
                    let n = self.actions.len() + usize::from(!self.keep_cancelled);
                    let keys = self.expand_all(f, keys);
                    keys.iter().any(|k| m.count(n, k))
                }
                T::Message(src) => self.load(src),
                T::ScriptCompile(path) => {
                    let path = self.expand(f, path);
                    let Some(ts) = self.ts.as_mut() else { return Ok(false) };
                    let text = std::fs::read_to_string(ts.dir.join(&path)).unwrap_or_default();
                    ts.errors.clear();
                    match crate::compile(&text) {
                        Ok(s) => {
                            ts.compiled = Some(s);
                            true
                        }
                        Err(e) => {
                            ts.compiled = None;
                            ts.errors.push(e.to_string());
                            false
                        }
                    }
                }
                T::ScriptRun { append } => {
                    let Some(script) = self.ts.as_ref().and_then(|ts| ts.compiled.clone()) else { return Ok(false) };
                    if !append {
                        self.reset_result();
                    }
                    let mut inner = Frame::new(&script.program);
                    match self.block(&script.program.cmds, &mut inner, 1).await {
                        Ok(()) | Err(Flow::Stop) | Err(Flow::Return) => true,
                        Err(Flow::Error(e)) => {
                            if let Some(ts) = self.ts.as_mut() {
                                ts.errors.push(e);
                            }
                            false
                        }
                    }
                }
                T::Error { m, index, keys } => {
                    let errors = self.ts.as_ref().map(|ts| ts.errors.clone()).unwrap_or_default();
                    let values = match index {
                        Some(i) => errors.get((*i as usize).wrapping_sub(1)).cloned().into_iter().collect(),
                        None => errors,
                    };
                    self.matches(f, m, values, keys)?
                }
            })
        })
    }

    /// Carries out the result: stored into the in-memory folders, sent into the outbox.
    /// False when a folder is missing (and not to be made).
    fn execute(&mut self) -> bool {
        let current = if self.head.edited { self.head.write(&self.message) } else { self.message.to_vec() };
        let mut actions = std::mem::take(&mut self.actions);
        let mut versions = std::mem::take(&mut self.versions);
        if !self.keep_cancelled {
            actions.push(Action::Keep { flags: self.flags.clone() });
            versions.push(None);
        }
        let (from, to) = (self.from.clone(), self.to.clone());
        let Some(ts) = self.ts.as_mut() else { return false };
        let mut ok = true;
        for (a, v) in actions.into_iter().zip(versions) {
            let message = v.map(|v| v.to_vec()).unwrap_or_else(|| current.clone());
            match a {
                Action::Keep { flags } => ts.folders.entry("INBOX".into()).or_default().push((message.clone(), flags)),
                Action::FileInto { mailbox, flags, create } => {
                    if !create && !ts.folders.contains_key(&mailbox) {
                        ts.errors.push(format!("failed to store into mailbox '{mailbox}': mailbox does not exist"));
                        ok = false;
                        continue;
                    }
                    ts.folders.entry(mailbox).or_default().push((message.clone(), flags));
                }
                Action::Redirect { address } => ts.outbox.push((from.clone(), address, message.clone())),
                Action::Reject { reason, .. } => {
                    let m = format!(
                        "To: {from}\r\nSubject: Rejected: your message to {to}\r\nAuto-Submitted: auto-replied\r\n\r\n{reason}\r\n"
                    );
                    ts.outbox.push((String::new(), from.clone(), m.into_bytes()));
                }
                Action::Vacation(v) => {
                    let original = Head::parse(&message).values("subject").into_iter().next().unwrap_or_default();
                    let subject = v.subject.clone().unwrap_or_else(|| format!("Auto: {original}"));
                    let sender = v.from.clone().unwrap_or_else(|| to.clone());
                    let m = format!(
                        "From: {sender}\r\nTo: {from}\r\nSubject: {subject}\r\nAuto-Submitted: auto-replied\r\n\r\n{}",
                        v.reason
                    );
                    ts.outbox.push((String::new(), from.clone(), crate::testsuite::crlf(&m)));
                }
            }
        }
        self.keep_cancelled = false;
        self.rejected = false;
        self.redirects = 0;
        ok
    }
}
