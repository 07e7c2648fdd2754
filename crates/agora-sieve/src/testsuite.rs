//! The public Sieve test suites' own extension (vnd.dovecot.testsuite), so that their
//! `.svtest` files run here as they are: `test` blocks, `test_set` of the message and
//! envelope, `test_fail`, executing a result into in-memory folders and an outbox,
//! looking at what was stored or sent, and compiling and running other scripts. Only
//! the test runner compiles with it; ManageSieve and delivery never know it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::matching::{Cmp, Match, MatchType};
use crate::parse::{Args, Cmd, Common};

#[derive(Debug, Clone)]
pub(crate) enum Command {
    Test {
        name: String,
        body: Vec<Cmd>,
    },
    Set {
        what: String,
        value: String,
    },
    Fail(String),
    ResultReset,
    MailboxCreate(String),
    Message(Source),
    /// Settings of the other implementation, and what has no meaning here.
    Ignored,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Smtp(u64),
    Folder(String, u64),
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    ResultExecute,
    ResultAction { index: u64, kinds: Vec<String> },
    ResultCount { m: Match, keys: Vec<String> },
    Message(Source),
    ScriptCompile(String),
    ScriptRun { append: bool },
    Error { m: Match, index: Option<u64>, keys: Vec<String> },
}

fn source(a: &mut Args) -> Result<Source, Error> {
    match a.tag().as_deref() {
        Some("smtp") => Ok(Source::Smtp(a.number("the message number")?)),
        Some("folder") => {
            let f = a.string("the folder")?;
            Ok(Source::Folder(f, a.number("the message number")?))
        }
        _ => a.err("needs :smtp or :folder"),
    }
}

pub(crate) fn command(a: &mut Args, name: &str) -> Result<Command, Error> {
    let c = match name {
        "test_set" => {
            let what = a.string("what to set")?.to_ascii_lowercase();
            let value = a.string("the value")?;
            Command::Set { what, value }
        }
        "test_fail" => Command::Fail(a.string("the reason")?),
        "test_result_reset" => Command::ResultReset,
        "test_mailbox_create" => Command::MailboxCreate(a.string("the mailbox")?),
        "test_message" => Command::Message(source(a)?),
        "test_config_set" | "test_config_unset" | "test_config_reload" | "test_result_print" => {
            while a.tag().is_some() || a.string("").is_ok() {}
            Command::Ignored
        }
        other => return a.err(format!("{other} is not supported by this runner")),
    };
    a.done()?;
    Ok(c)
}

pub(crate) fn test(
    a: &mut Args,
    name: &str,
    common: impl Fn(&mut Args, &str, &mut Common) -> Result<bool, Error>,
) -> Result<Test, Error> {
    let t = match name {
        "test_result_execute" => Test::ResultExecute,
        "test_result_action" => {
            let mut index = 1;
            let mut c = Common::default();
            while let Some(t) = a.tag() {
                match t.as_str() {
                    "index" => index = a.number("the index")?,
                    _ if common(a, &t, &mut c)? => {}
                    _ => return a.err(format!("unknown tag :{t}")),
                }
            }
            let keys = a.strings("the action names")?;
            match c.mt {
                Some(mt @ MatchType::Count(_)) => {
                    Test::ResultCount { m: Match::new(c.cmp.unwrap_or(Cmp::CaseMap), mt), keys }
                }
                _ => Test::ResultAction { index, kinds: keys },
            }
        }
        "test_message" => Test::Message(source(a)?),
        "test_script_compile" => Test::ScriptCompile(a.string("the script")?),
        "test_script_run" => {
            let mut append = false;
            while let Some(t) = a.tag() {
                match t.as_str() {
                    "append_result" => append = true,
                    _ => return a.err(format!("unknown tag :{t}")),
                }
            }
            Test::ScriptRun { append }
        }
        "test_error" => {
            let mut c = Common::default();
            let mut index = None;
            while let Some(t) = a.tag() {
                if t == "index" {
                    index = Some(a.number("the index")?);
                } else if !common(a, &t, &mut c)? {
                    return a.err(format!("unknown tag :{t}"));
                }
            }
            let keys = a.strings("the keys")?;
            let m = Match::new(c.cmp.unwrap_or(Cmp::CaseMap), c.mt.unwrap_or(MatchType::Is));
            Test::Error { m, index, keys }
        }
        other => return a.err(format!("{other} is not supported by this runner")),
    };
    a.done()?;
    Ok(t)
}

/// A stored message and its flags.
pub(crate) type Stored = (Vec<u8>, Vec<String>);

/// What the suite's commands work on while a file runs.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub dir: PathBuf,
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Folder → stored messages with their flags.
    pub folders: HashMap<String, Vec<Stored>>,
    /// Sent: envelope from, to, message.
    pub outbox: Vec<(String, String, Vec<u8>)>,
    pub compiled: Option<crate::Script>,
    pub errors: Vec<String>,
}

/// A message a test failure unwinds with.
pub(crate) const FAILED: &str = "\u{0}test failed: ";

/// The results of one `.svtest` file.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Compiles and runs one suite file; Err when it does not compile here.
pub async fn run_file(path: &Path) -> Result<Report, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error { line: 0, message: e.to_string() })?;
    let program = crate::parse::program_in(&text, true)?;
    let script = crate::Script { program };
    let state = State { dir: path.parent().map(Path::to_path_buf).unwrap_or_default(), ..State::default() };
    let state = crate::run::run_suite(&script, state).await;
    Ok(Report { passed: state.passed, failed: state.failed })
}

/// A plain message for tests that set none.
pub(crate) const DEFAULT_MESSAGE: &[u8] =
    b"From: sender@example.com\r\nTo: recipient@example.net\r\nSubject: Frop!\r\n\r\nFrop!\r\n";

/// Line breaks made CRLF, as a message that arrived would have them.
pub(crate) fn crlf(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 64);
    let mut prev = 0u8;
    for &b in s.as_bytes() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
