//! ManageSieve wire format, pure (RFC 5804 §4): commands with their quoted strings and
//! literals, decoded from the bytes received so far (a whole command, more input
//! needed, or an error, with every size bounded here), and the responses the server
//! writes (`OK`/`NO`/`BYE` with response codes, strings quoted or as literals).

/// Longest line of a command (literal octets not counted), line end included.
pub const MAX_LINE: usize = 8192;
/// Longest quoted string (RFC 5804 §4: `*1024QUOTED-CHAR`); longer text goes as a literal.
pub const MAX_QUOTED: usize = 1024;
/// Longest string other than a script (names, SASL responses, NOOP's tag).
pub const MAX_STRING: u64 = 16 * 1024;
/// Longest command verb.
const MAX_VERB: usize = 16;

/// The sizes a decoder holds a client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, line end included (literal octets are not part of a line).
    pub max_line: usize,
    /// Largest script (PUTSCRIPT, CHECKSCRIPT), in octets.
    pub max_script: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: MAX_LINE, max_script: 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// AUTHENTICATE mechanism [initial-response]: the response as sent (base64 text).
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    StartTls,
    Logout,
    Capability,
    /// NOOP [tag]: the tag comes back in the TAG response code.
    Noop(Option<String>),
    Unauthenticate,
    HaveSpace {
        name: String,
        size: u64,
    },
    PutScript {
        name: String,
        script: String,
    },
    ListScripts,
    /// SETACTIVE name; the empty name deactivates.
    SetActive(String),
    GetScript(String),
    DeleteScript(String),
    RenameScript {
        from: String,
        to: String,
    },
    CheckScript(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Unknown,
    Syntax(&'static str),
    LineTooLong,
    /// A string longer than allowed (for a script: the MAXSIZE quota). `literal`: the
    /// octets of the literal announced, which the client sends anyway and the session
    /// must read past to stay in step.
    TooBig {
        script: bool,
        literal: Option<u64>,
    },
}

impl CommandError {
    /// The `NO` response to the command.
    pub fn reply(&self) -> Vec<u8> {
        match self {
            CommandError::Unknown => no(None, "Unknown command"),
            CommandError::Syntax(m) => no(None, &format!("Syntax error: {m}")),
            CommandError::LineTooLong => no(None, "Line too long"),
            CommandError::TooBig { script: true, .. } => no(Some("QUOTA/MAXSIZE"), "Script too large"),
            CommandError::TooBig { script: false, .. } => no(None, "String too long"),
        }
    }
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole item and the octets it took, its final line end included.
    Done(T, usize),
    /// More input is needed. `literal`: the input stops inside a literal, this many of
    /// its octets still to come (then the rest of the line); None: the rest of a line.
    Incomplete {
        literal: Option<u64>,
    },
    Error(CommandError),
}

/// Decodes the command at the start of `input`.
pub fn decode(input: &[u8], limits: &Limits) -> Decoded<Command> {
    finish(Parser::new(input, limits).command())
}

/// Decodes a client's answer to a SASL challenge (RFC 5804 §2.1): one string (quoted or
/// a literal) on its own line; a bare `*` is taken as the quoted one (cancel).
pub fn decode_response(input: &[u8], limits: &Limits) -> Decoded<String> {
    finish(Parser::new(input, limits).response())
}

fn finish<T>(r: Result<(T, usize), Stop>) -> Decoded<T> {
    match r {
        Ok((v, used)) => Decoded::Done(v, used),
        Err(Stop::More(literal)) => Decoded::Incomplete { literal },
        Err(Stop::Error(e)) => Decoded::Error(e),
    }
}

/// The octet count of a literal announced at the end of `line` (`{N+}` or `{N}` before
/// its line end): what a session must read past when it refuses the command.
pub fn literal_suffix(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = l.iter().rposition(|&b| b == b'{')?;
    number(&l[open + 1..])
}

/// A 32-bit unsigned number (RFC 5804 §4 `number`).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= u64::from(u32::MAX)).then_some(n)
}

/// Whether `name` may name a script here: 1 to 128 characters, none of them a control
/// character (RFC 5804 §1.6: nor U+2028, U+2029), no "/".
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=128).contains(&n) && !name.chars().any(|c| c.is_control() || c == '/' || c == '\u{2028}' || c == '\u{2029}')
}

enum Stop {
    /// Out of input; Some: inside a literal, this many octets short.
    More(Option<u64>),
    Error(CommandError),
}

type P<T> = Result<T, Stop>;

fn syntax<T>(m: &'static str) -> P<T> {
    Err(Stop::Error(CommandError::Syntax(m)))
}

/// Which string is being read: its size limit and how a refusal is worded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    Script,
    Other,
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where the current line began (after the last literal's octets).
    line_start: usize,
    limits: &'a Limits,
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Parser<'a> {
        Parser { buf, pos: 0, line_start: 0, limits }
    }

    /// The next octet, without taking it; out of input or past the line limit stops.
    fn peek(&self) -> P<u8> {
        if self.pos - self.line_start >= self.limits.max_line {
            return Err(Stop::Error(CommandError::LineTooLong));
        }
        self.buf.get(self.pos).copied().ok_or(Stop::More(None))
    }

    fn next(&mut self) -> P<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn command(mut self) -> P<(Command, usize)> {
        let verb = self.verb()?;
        let cmd = match verb.as_str() {
            "AUTHENTICATE" => {
                self.sp()?;
                let mechanism = self.text(Arg::Other)?;
                let initial = self.optional(Arg::Other)?;
                Command::Authenticate { mechanism, initial }
            }
            "STARTTLS" => Command::StartTls,
            "LOGOUT" => Command::Logout,
            "CAPABILITY" => Command::Capability,
            "NOOP" => Command::Noop(self.optional(Arg::Other)?),
            "UNAUTHENTICATE" => Command::Unauthenticate,
            "HAVESPACE" => {
                let name = self.arg(Arg::Other)?;
                self.sp()?;
                Command::HaveSpace { name, size: self.number()? }
            }
            "PUTSCRIPT" => {
                let name = self.arg(Arg::Other)?;
                Command::PutScript { name, script: self.arg(Arg::Script)? }
            }
            "LISTSCRIPTS" => Command::ListScripts,
            "SETACTIVE" => Command::SetActive(self.arg(Arg::Other)?),
            "GETSCRIPT" => Command::GetScript(self.arg(Arg::Other)?),
            "DELETESCRIPT" => Command::DeleteScript(self.arg(Arg::Other)?),
            "RENAMESCRIPT" => {
                let from = self.arg(Arg::Other)?;
                Command::RenameScript { from, to: self.arg(Arg::Other)? }
            }
            "CHECKSCRIPT" => Command::CheckScript(self.arg(Arg::Script)?),
            _ => return Err(Stop::Error(CommandError::Unknown)),
        };
        self.eol()?;
        Ok((cmd, self.pos))
    }

    fn response(mut self) -> P<(String, usize)> {
        if self.peek()? == b'*' {
            self.pos += 1;
            self.eol()?;
            return Ok(("*".into(), self.pos));
        }
        let s = self.text(Arg::Other)?;
        self.eol()?;
        Ok((s, self.pos))
    }

    /// The command's name: letters up to a space or the line end, in upper case.
    fn verb(&mut self) -> P<String> {
        let start = self.pos;
        loop {
            match self.peek()? {
                b' ' | b'\r' | b'\n' => break,
                b if b.is_ascii_alphabetic() && self.pos - start < MAX_VERB => self.pos += 1,
                _ => return Err(Stop::Error(CommandError::Unknown)),
            }
        }
        if self.pos == start {
            return syntax("empty command");
        }
        Ok(String::from_utf8_lossy(&self.buf[start..self.pos]).to_ascii_uppercase())
    }

    /// One or more spaces.
    fn sp(&mut self) -> P<()> {
        if self.next()? != b' ' {
            return syntax("expected a space");
        }
        while self.peek()? == b' ' {
            self.pos += 1;
        }
        Ok(())
    }

    /// The line end, after any trailing spaces (CRLF, or a bare LF).
    fn eol(&mut self) -> P<()> {
        while self.peek()? == b' ' {
            self.pos += 1;
        }
        match self.next()? {
            b'\n' => Ok(()),
            b'\r' if self.next()? == b'\n' => Ok(()),
            b'\r' => syntax("CR without LF"),
            _ => syntax("unexpected text after the arguments"),
        }
    }

    /// A space and a string argument.
    fn arg(&mut self, what: Arg) -> P<String> {
        self.sp()?;
        self.text(what)
    }

    /// A space and a string, or the line end (left for `eol`).
    fn optional(&mut self, what: Arg) -> P<Option<String>> {
        while self.peek()? == b' ' {
            self.pos += 1;
            if !matches!(self.peek()?, b' ' | b'\r' | b'\n') {
                return self.text(what).map(Some);
            }
        }
        Ok(None)
    }

    fn number(&mut self) -> P<u64> {
        let start = self.pos;
        while self.peek()?.is_ascii_digit() {
            self.pos += 1;
        }
        match number(&self.buf[start..self.pos]) {
            Some(n) => Ok(n),
            None => syntax("expected a number (0 to 4294967295)"),
        }
    }

    /// A string as UTF-8 text.
    fn text(&mut self, what: Arg) -> P<String> {
        let bytes = self.string(what)?;
        String::from_utf8(bytes).or_else(|_| syntax("string is not UTF-8"))
    }

    /// A quoted string or a literal.
    fn string(&mut self, what: Arg) -> P<Vec<u8>> {
        let max = match what {
            Arg::Script => self.limits.max_script,
            Arg::Other => MAX_STRING,
        };
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.next()? {
                        b'"' => break,
                        b'\\' => match self.next()? {
                            c @ (b'"' | b'\\') => out.push(c),
                            _ => return syntax("only \\\\ and \\\" may be escaped in a quoted string"),
                        },
                        0 | b'\r' | b'\n' => return syntax("NUL, CR or LF in a quoted string"),
                        c => out.push(c),
                    }
                    if out.len() > MAX_QUOTED {
                        return syntax("quoted string longer than 1024 octets (send a literal)");
                    }
                }
                if out.len() as u64 > max {
                    return Err(Stop::Error(CommandError::TooBig { script: what == Arg::Script, literal: None }));
                }
                Ok(out)
            }
            b'{' => {
                self.pos += 1;
                let start = self.pos;
                while self.peek()?.is_ascii_digit() {
                    self.pos += 1;
                }
                let Some(n) = number(&self.buf[start..self.pos]) else {
                    return syntax("bad literal length");
                };
                if self.peek()? == b'+' {
                    self.pos += 1;
                }
                if self.next()? != b'}' {
                    return syntax("bad literal");
                }
                match self.next()? {
                    b'\n' => {}
                    b'\r' if self.next()? == b'\n' => {}
                    _ => return syntax("a literal's length ends its line"),
                }
                if n > max {
                    return Err(Stop::Error(CommandError::TooBig { script: what == Arg::Script, literal: Some(n) }));
                }
                let have = (self.buf.len() - self.pos) as u64;
                if have < n {
                    return Err(Stop::More(Some(n - have)));
                }
                let out = self.buf[self.pos..self.pos + n as usize].to_vec();
                self.pos += n as usize;
                self.line_start = self.pos;
                Ok(out)
            }
            _ => syntax("expected a string"),
        }
    }
}

/// A string as a response carries it: quoted when it can be, else a literal.
pub fn string(s: &str) -> String {
    if s.len() <= MAX_QUOTED && !s.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        format!("{{{}}}\r\n{s}", s.len())
    }
}

fn response(kind: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    let mut out = String::from(kind);
    if let Some(c) = code {
        out.push_str(" (");
        out.push_str(c);
        out.push(')');
    }
    if !text.is_empty() {
        out.push(' ');
        out.push_str(&string(text));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `OK [(code)] "text"`.
pub fn ok(code: Option<&str>, text: &str) -> Vec<u8> {
    response("OK", code, text)
}

/// `NO [(code)] "text"`.
pub fn no(code: Option<&str>, text: &str) -> Vec<u8> {
    response("NO", code, text)
}

/// `BYE [(code)] "text"`: the server closes the connection after it.
pub fn bye(code: Option<&str>, text: &str) -> Vec<u8> {
    response("BYE", code, text)
}

/// One capability line: `"NAME"` or `"NAME" "value"`.
pub fn capability(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{} {}\r\n", string(name), string(v)),
        None => format!("{}\r\n", string(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(input: &str) -> Command {
        match decode(input.as_bytes(), &Limits::default()) {
            Decoded::Done(c, used) => {
                assert_eq!(used, input.len(), "{input:?}");
                c
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn err(input: &str) -> CommandError {
        match decode(input.as_bytes(), &Limits::default()) {
            Decoded::Error(e) => e,
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(cmd("capability\r\n"), Command::Capability);
        assert_eq!(cmd("LOGOUT\n"), Command::Logout);
        assert_eq!(cmd("StartTLS\r\n"), Command::StartTls);
        assert_eq!(cmd("NOOP\r\n"), Command::Noop(None));
        assert_eq!(cmd("NOOP \"STARTTLS-SYNC-42\"\r\n"), Command::Noop(Some("STARTTLS-SYNC-42".into())));
        assert_eq!(cmd("UNAUTHENTICATE\r\n"), Command::Unauthenticate);
        assert_eq!(cmd("LISTSCRIPTS\r\n"), Command::ListScripts);
        assert_eq!(
            cmd("AUTHENTICATE \"PLAIN\" \"AGFAYgBj\"\r\n"),
            Command::Authenticate { mechanism: "PLAIN".into(), initial: Some("AGFAYgBj".into()) }
        );
        assert_eq!(
            cmd("AUTHENTICATE \"PLAIN\" {8+}\r\nAGFAYgBj\r\n"),
            Command::Authenticate { mechanism: "PLAIN".into(), initial: Some("AGFAYgBj".into()) }
        );
        assert_eq!(
            cmd("Authenticate \"SCRAM-SHA-256\"\r\n"),
            Command::Authenticate { mechanism: "SCRAM-SHA-256".into(), initial: None }
        );
        assert_eq!(
            cmd("HAVESPACE \"myscript\" 999999\r\n"),
            Command::HaveSpace { name: "myscript".into(), size: 999999 }
        );
        assert_eq!(
            cmd("PUTSCRIPT \"foo\" {31+}\r\n#comment\r\nInvalidSieveCommand\r\n\r\n"),
            Command::PutScript { name: "foo".into(), script: "#comment\r\nInvalidSieveCommand\r\n".into() }
        );
        // A synchronising literal is taken as it is: ManageSieve has no continuation.
        assert_eq!(
            cmd("PUTSCRIPT {3}\r\nfoo {5}\r\nkeep;\r\n"),
            Command::PutScript { name: "foo".into(), script: "keep;".into() }
        );
        assert_eq!(cmd("SETACTIVE \"\"\r\n"), Command::SetActive(String::new()));
        assert_eq!(cmd("GETSCRIPT \"sä\\\"ve\\\\\"\r\n"), Command::GetScript("sä\"ve\\".into()));
        assert_eq!(cmd("DELETESCRIPT  \"x\"  \r\n"), Command::DeleteScript("x".into()));
        assert_eq!(cmd("RENAMESCRIPT \"a\" {1+}\r\nb\r\n"), Command::RenameScript { from: "a".into(), to: "b".into() });
        assert_eq!(cmd("CHECKSCRIPT {0+}\r\n\r\n"), Command::CheckScript(String::new()));
    }

    #[test]
    fn errors() {
        assert_eq!(err("FROB\r\n"), CommandError::Unknown);
        assert_eq!(err("GETSCRIPT1 \"x\"\r\n"), CommandError::Unknown);
        assert!(matches!(err("\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("GETSCRIPT x\r\n"), CommandError::Syntax(_)), "names are strings, not atoms");
        assert!(matches!(err("GETSCRIPT \"x\" \"y\"\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("GETSCRIPT\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("GETSCRIPT \"a\\b\"\r\n"), CommandError::Syntax(_)), "only two escapes");
        assert!(matches!(err("GETSCRIPT \"a\rb\"\r\n"), CommandError::Syntax(_)));
        assert!(
            matches!(decode(b"GETSCRIPT \"\xff\"\r\n", &Limits::default()), Decoded::Error(CommandError::Syntax(_))),
            "not UTF-8"
        );
        assert!(matches!(err("HAVESPACE \"x\" 4294967296\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("HAVESPACE \"x\" -1\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("PUTSCRIPT \"x\" {99999999999+}\r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("PUTSCRIPT \"x\" {5+} \r\n"), CommandError::Syntax(_)));
        assert!(matches!(err("NOOP\rx\n"), CommandError::Syntax(_)));
        let long = format!("GETSCRIPT \"{}\"\r\n", "a".repeat(MAX_QUOTED + 1));
        assert!(matches!(err(&long), CommandError::Syntax(_)));
        let line = format!("NOOP {}\r\n", " ".repeat(MAX_LINE));
        assert_eq!(err(&line), CommandError::LineTooLong);
    }

    #[test]
    fn sizes_are_refused_before_the_octets_arrive() {
        let limits = Limits { max_line: MAX_LINE, max_script: 100 };
        assert_eq!(
            decode(b"PUTSCRIPT \"x\" {101+}\r\n", &limits),
            Decoded::Error(CommandError::TooBig { script: true, literal: Some(101) })
        );
        assert_eq!(
            decode(b"CHECKSCRIPT {101+}\r\n", &limits),
            Decoded::Error(CommandError::TooBig { script: true, literal: Some(101) })
        );
        assert_eq!(
            decode(b"PUTSCRIPT {16385+}\r\n", &limits),
            Decoded::Error(CommandError::TooBig { script: false, literal: Some(16385) })
        );
        assert_eq!(decode(b"PUTSCRIPT \"x\" {100+}\r\n", &limits), Decoded::Incomplete { literal: Some(100) });
        assert_eq!(decode(b"PUTSCRIPT \"x\" {100+}\r\nabc", &limits), Decoded::Incomplete { literal: Some(97) });
        let quoted = format!("PUTSCRIPT \"x\" \"{}\"\r\n", "k".repeat(101));
        assert_eq!(
            decode(quoted.as_bytes(), &limits),
            Decoded::Error(CommandError::TooBig { script: true, literal: None })
        );
        assert!(
            String::from_utf8(CommandError::TooBig { script: true, literal: None }.reply())
                .unwrap()
                .starts_with("NO (QUOTA/MAXSIZE) ")
        );
        // A line is counted from the end of the last literal.
        let limits = Limits { max_line: 32, max_script: 1000 };
        let ok = format!("PUTSCRIPT \"name\" {{40+}}\r\n{}\r\n", "x".repeat(40));
        assert!(matches!(decode(ok.as_bytes(), &limits), Decoded::Done(..)));
        assert_eq!(
            decode(format!("NOOP{}", " ".repeat(40)).as_bytes(), &limits),
            Decoded::Error(CommandError::LineTooLong)
        );
    }

    /// Every command, however its octets are split, decodes the same once all of them
    /// are there, and asks for more (never misreads) before.
    #[test]
    fn split_at_every_byte() {
        let inputs: &[&[u8]] = &[
            b"CAPABILITY\r\n",
            b"AUTHENTICATE \"PLAIN\" {20+}\r\nAGFAZXhhbXBsZS5vcmcA\r\n",
            b"PUTSCRIPT \"vacation\" {39+}\r\nrequire \"vacation\";\r\nvacation \"Away\";\r\n\r\n",
            b"PUTSCRIPT {3+}\r\nx\ry {6}\r\n\"}{\r\n\n\r\n",
            b"RENAMESCRIPT \"a \\\"b\\\"\" \"c\\\\d\"\r\n",
            b"HAVESPACE \"s\" 4294967295\n",
            b"NOOP {6+}\r\n{5+}\r\n\r\n",
            b"CHECKSCRIPT \"keep;\"   \r\n",
        ];
        let limits = Limits::default();
        for input in inputs {
            let Decoded::Done(whole, used) = decode(input, &limits) else { panic!("{input:?}") };
            assert_eq!(used, input.len());
            for cut in 0..input.len() {
                match decode(&input[..cut], &limits) {
                    Decoded::Incomplete { literal: Some(n) } => {
                        // Exactly the literal's missing octets: reading them never
                        // reads into the next command.
                        let mut more = input[..cut].to_vec();
                        more.extend_from_slice(&input[cut..cut + n as usize]);
                        assert!(!matches!(decode(&more, &limits), Decoded::Error(_)), "{input:?} at {cut}");
                    }
                    Decoded::Incomplete { literal: None } => {}
                    other => panic!("{input:?} cut at {cut}: {other:?}"),
                }
            }
            // Pipelined: the first command is taken, its octets counted.
            let mut two = input.to_vec();
            two.extend_from_slice(b"LOGOUT\r\n");
            assert_eq!(decode(&two, &limits), Decoded::Done(whole, input.len()));
        }
        // An error shows as soon as its octets are there, and stays.
        let bad = b"GETSCRIPT \"a\\x\" {5+}\r\nhello\r\n";
        let full = decode(bad, &limits);
        assert!(matches!(full, Decoded::Error(CommandError::Syntax(_))));
        for cut in 0..bad.len() {
            let d = decode(&bad[..cut], &limits);
            assert!(d == full || d == Decoded::Incomplete { literal: None }, "cut at {cut}: {d:?}");
        }
    }

    #[test]
    fn sasl_responses() {
        let limits = Limits::default();
        assert_eq!(decode_response(b"\"dGVzdA==\"\r\n", &limits), Decoded::Done("dGVzdA==".into(), 12));
        assert_eq!(decode_response(b"{4+}\r\nabcd\r\n", &limits), Decoded::Done("abcd".into(), 12));
        assert_eq!(decode_response(b"\"\"\r\n", &limits), Decoded::Done(String::new(), 4));
        assert_eq!(decode_response(b"\"*\"\r\n", &limits), Decoded::Done("*".into(), 5));
        assert_eq!(decode_response(b"*\r\n", &limits), Decoded::Done("*".into(), 3));
        assert_eq!(decode_response(b"{4+}\r\nab", &limits), Decoded::Incomplete { literal: Some(2) });
        assert!(matches!(decode_response(b"dGVzdA==\r\n", &limits), Decoded::Error(_)));
        assert!(matches!(decode_response(b"\"a\" \"b\"\r\n", &limits), Decoded::Error(_)));
    }

    #[test]
    fn literal_suffixes() {
        assert_eq!(literal_suffix(b"PUTSCRIPT \"x\" {12+}\r\n"), Some(12));
        assert_eq!(literal_suffix(b"X {0}\n"), Some(0));
        assert_eq!(literal_suffix(b"X {12+}"), None, "no line end");
        assert_eq!(literal_suffix(b"X {1a+}\r\n"), None);
        assert_eq!(literal_suffix(b"X {99999999999+}\r\n"), None);
        assert_eq!(literal_suffix(b"X \"{3}\"\r\n"), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("vacation") && valid_name("Ärger mit Spam") && valid_name(&"n".repeat(128)));
        assert!(!valid_name("") && !valid_name(&"n".repeat(129)));
        assert!(!valid_name("a/b") && !valid_name("a\tb") && !valid_name("a\u{85}b") && !valid_name("a\u{2028}"));
    }

    #[test]
    fn responses() {
        assert_eq!(ok(None, "Done"), b"OK \"Done\"\r\n");
        assert_eq!(ok(None, ""), b"OK\r\n");
        assert_eq!(no(Some("NONEXISTENT"), "No \"x\" here"), b"NO (NONEXISTENT) \"No \\\"x\\\" here\"\r\n");
        assert_eq!(bye(Some("TRYLATER"), "Busy"), b"BYE (TRYLATER) \"Busy\"\r\n");
        assert_eq!(no(None, "line 1:\r\nmore"), b"NO {13}\r\nline 1:\r\nmore\r\n");
        assert_eq!(string("a\\b"), "\"a\\\\b\"");
        assert_eq!(string(&"x".repeat(1025)), format!("{{1025}}\r\n{}", "x".repeat(1025)));
        assert_eq!(capability("SIEVE", Some("fileinto")), "\"SIEVE\" \"fileinto\"\r\n");
        assert_eq!(capability("STARTTLS", None), "\"STARTTLS\"\r\n");
        // What a response quotes, the decoder reads back.
        for s in ["plain", "q\"uo\\te", "ünï", "multi\r\nline", ""] {
            let line = format!("GETSCRIPT {}\r\n", string(s));
            assert_eq!(cmd(&line), Command::GetScript(s.into()));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let limits = Limits { max_line: 64, max_script: 50 };
        let mut seed = 7u64;
        for _ in 0..30_000 {
            let len = (seed % 40) as usize;
            let mut input = Vec::new();
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let alphabet = b"PUTSCRIPT NOOP{}+0123456789\"\\\r\n \xc3\xa4*";
                input.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            if let Decoded::Done(_, used) = decode(&input, &limits) {
                assert!(used <= input.len());
            }
            let _ = decode_response(&input, &limits);
            let _ = literal_suffix(&input);
        }
    }
}
