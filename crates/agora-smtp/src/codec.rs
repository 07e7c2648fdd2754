//! SMTP wire format, pure: command parsing with ESMTP parameters (RFC 5321, 1870, 3030,
//! 3461, 6152, 6531), reply formatting, and the DATA decoder (dot-unstuffing, end of
//! data, bare LF/CR and line-length checks).

use agora_net::dot::Unstuffed;
use std::fmt::Write as _;

/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 says 512; SMTPUTF8
/// and DSN parameters make longer lines legitimate, so allow some slack).
pub const MAX_COMMAND_LINE: usize = 2048;
/// Longest message text line, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;
const MAX_PATH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    /// DSN RET=FULL|HDRS.
    pub ret: Option<String>,
    /// DSN ENVID, still xtext-encoded.
    pub envid: Option<String>,
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// DSN NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY.
    pub notify: Option<String>,
    /// DSN ORCPT=addr-type;xtext.
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// Reverse path; empty for the null sender `<>`.
    Mail(String, MailParams),
    Rcpt(String, RcptParams),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    /// BURL (RFC 4468): the next chunk is what an IMAP URL names.
    Burl {
        url: String,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// AUTH mechanism [initial-response] (RFC 4954).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// X-LINK2STATE and its words: routing tables between servers of one organisation.
    Link2State(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// 500 5.5.1: unknown verb.
    Unrecognized,
    /// 501 5.5.4 (or 5.5.2 for bad addresses): with a short explanation.
    Syntax(String),
    /// 555 5.5.4: a MAIL/RCPT parameter we do not implement.
    UnknownParam(String),
    /// 553 5.1.x: the path is not a valid address.
    BadAddress(String),
}

impl CommandError {
    pub fn reply(&self) -> String {
        match self {
            CommandError::Unrecognized => reply(500, "5.5.1", "Error: command not recognized"),
            CommandError::Syntax(m) => reply(501, "5.5.4", &format!("Syntax: {m}")),
            CommandError::UnknownParam(p) => reply(555, "5.5.4", &format!("Unsupported option: {}", sanitize(p))),
            CommandError::BadAddress(m) => reply(553, "5.1.3", &format!("Bad address syntax: {m}")),
        }
    }
}

/// Formats a one-line reply with an enhanced status code.
pub fn reply(code: u16, enhanced: &str, text: &str) -> String {
    format!("{code} {enhanced} {text}\r\n")
}

/// Formats a multi-line reply (EHLO, HELP).
pub fn reply_lines(code: u16, lines: &[String]) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        let _ = write!(out, "{code}{sep}{l}\r\n");
    }
    out
}

/// Makes client-supplied text safe to echo in a reply: printable, bounded.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// Parses one command line (with or without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = strip_eol(line);
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("command is not valid UTF-8".into()))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::Syntax("control characters in command".into()));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |c: Command| {
        if rest.trim().is_empty() { Ok(c) } else { Err(CommandError::Syntax(format!("{verb} takes no arguments"))) }
    };
    match verb.as_str() {
        "HELO" | "EHLO" => {
            let host = rest.trim();
            if host.is_empty() || host.contains(' ') || host.len() > 255 {
                return Err(CommandError::Syntax(format!("{verb} hostname")));
            }
            Ok(if verb == "HELO" { Command::Helo(host.into()) } else { Command::Ehlo(host.into()) })
        }
        "MAIL" => {
            let arg =
                strip_prefix_ci(rest, "FROM:").ok_or_else(|| CommandError::Syntax("MAIL FROM:<address>".into()))?;
            let (path, params) = split_path(arg)?;
            let path = parse_path(path, true)?;
            Ok(Command::Mail(path, parse_mail_params(params)?))
        }
        "RCPT" => {
            let arg = strip_prefix_ci(rest, "TO:").ok_or_else(|| CommandError::Syntax("RCPT TO:<address>".into()))?;
            let (path, params) = split_path(arg)?;
            let mut path = parse_path(path, false)?;
            // RFC 5321 §4.1.1.3: <Postmaster> without a domain must be accepted.
            if path.eq_ignore_ascii_case("postmaster") {
                path = "postmaster".into();
            }
            Ok(Command::Rcpt(path, parse_rcpt_params(params)?))
        }
        "DATA" => no_args(Command::Data),
        "BDAT" => {
            let mut it = rest.split_ascii_whitespace();
            let size = it
                .next()
                .and_then(
                    |s| if s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 18 { s.parse().ok() } else { None },
                )
                .ok_or_else(|| CommandError::Syntax("BDAT chunk-size [LAST]".into()))?;
            let last = match it.next() {
                None => false,
                Some(l) if l.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(CommandError::Syntax("BDAT chunk-size [LAST]".into())),
            };
            if it.next().is_some() {
                return Err(CommandError::Syntax("BDAT chunk-size [LAST]".into()));
            }
            Ok(Command::Bdat { size, last })
        }
        "BURL" => {
            let mut it = rest.split_ascii_whitespace();
            let url = it
                .next()
                .filter(|u| u.len() <= 8192)
                .ok_or_else(|| CommandError::Syntax("BURL imap-url [LAST]".into()))?;
            let last = match it.next() {
                None => false,
                Some(l) if l.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(CommandError::Syntax("BURL imap-url [LAST]".into())),
            };
            if it.next().is_some() {
                return Err(CommandError::Syntax("BURL imap-url [LAST]".into()));
            }
            Ok(Command::Burl { url: url.to_string(), last })
        }
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "X-LINK2STATE" => {
            let words: Vec<String> = rest.split_ascii_whitespace().take(4).map(str::to_string).collect();
            if words.is_empty() {
                return Err(CommandError::Syntax("X-LINK2STATE HELLO|PROVE|DIGEST|TABLE|GET".into()));
            }
            Ok(Command::Link2State(words))
        }
        "AUTH" => {
            let mut words = rest.split_whitespace();
            let mechanism =
                words.next().ok_or_else(|| CommandError::Syntax("AUTH mechanism [initial-response]".into()))?;
            let initial = words.next().map(str::to_string);
            if words.next().is_some() || mechanism.len() > 20 || initial.as_ref().is_some_and(|i| i.len() > 12288) {
                return Err(CommandError::Syntax("AUTH mechanism [initial-response]".into()));
            }
            Ok(Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial })
        }
        _ => Err(CommandError::Unrecognized),
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(s[prefix.len()..].trim_start())
    } else {
        None
    }
}

/// Splits `<path> params...`, honouring quoted local parts that may contain spaces or '>'.
fn split_path(arg: &str) -> Result<(&str, &str), CommandError> {
    if !arg.starts_with('<') {
        // Tolerate a bare address without brackets, as many servers do.
        let end = arg.find(' ').unwrap_or(arg.len());
        return Ok((&arg[..end], arg[end..].trim()));
    }
    let mut quoted = false;
    let mut esc = false;
    for (i, c) in arg.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Ok((&arg[..=i], arg[i + 1..].trim())),
            _ => {}
        }
    }
    Err(CommandError::Syntax("missing '>' after address".into()))
}

/// Returns the mailbox of a path: `<>` (if allowed) is "", source routes are dropped.
fn parse_path(path: &str, allow_null: bool) -> Result<String, CommandError> {
    let inner = path.strip_prefix('<').and_then(|p| p.strip_suffix('>')).unwrap_or(path);
    if inner.is_empty() {
        return if allow_null { Ok(String::new()) } else { Err(CommandError::BadAddress("empty recipient".into())) };
    }
    if inner.len() > MAX_PATH {
        return Err(CommandError::BadAddress("address too long".into()));
    }
    // Source route "@a,@b:user@host" (RFC 5321 §4.1.2): accepted and ignored.
    let mailbox = if inner.starts_with('@') {
        inner.split_once(':').map(|(_, m)| m).ok_or_else(|| CommandError::BadAddress(sanitize(inner)))?
    } else {
        inner
    };
    if mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(mailbox.to_string());
    }
    let (local, domain) = mailbox.rsplit_once('@').ok_or_else(|| CommandError::BadAddress(sanitize(mailbox)))?;
    let local_ok = if local.starts_with('"') {
        local.len() >= 2 && local.ends_with('"')
    } else {
        !local.is_empty()
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
    };
    let domain_ok = if domain.starts_with('[') {
        domain.ends_with(']') && domain.len() > 2
    } else {
        !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if !local_ok || !domain_ok {
        return Err(CommandError::BadAddress(sanitize(mailbox)));
    }
    Ok(mailbox.to_string())
}

fn params_iter(params: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    params.split_ascii_whitespace().map(|p| match p.split_once('=') {
        Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
        None => (p.to_ascii_uppercase(), None),
    })
}

fn is_xtext(v: &str) -> bool {
    !v.is_empty() && v.len() <= 100 && v.bytes().all(|b| (33..=126).contains(&b) && b != b'=')
}

fn parse_mail_params(params: &str) -> Result<MailParams, CommandError> {
    let mut out = MailParams::default();
    for (k, v) in params_iter(params) {
        let bad = || CommandError::Syntax(format!("bad {k} parameter"));
        match (k.as_str(), v) {
            ("SIZE", Some(v)) => {
                out.size = Some(if v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()) {
                    v.parse().map_err(|_| bad())?
                } else {
                    return Err(bad());
                })
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => out.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => out.body = Some(Body::EightBitMime),
            ("BODY", _) => return Err(CommandError::UnknownParam(format!("BODY={}", v.unwrap_or("")))),
            ("SMTPUTF8", None) => out.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") => {
                out.ret = Some(v.to_ascii_uppercase())
            }
            ("ENVID", Some(v)) if is_xtext(v) => out.envid = Some(v.to_string()),
            ("AUTH", Some(v)) if v.len() <= MAX_PATH => out.auth = Some(v.to_string()),
            ("SIZE" | "RET" | "ENVID" | "AUTH" | "SMTPUTF8", _) => return Err(bad()),
            _ => return Err(CommandError::UnknownParam(k)),
        }
    }
    Ok(out)
}

fn parse_rcpt_params(params: &str) -> Result<RcptParams, CommandError> {
    let mut out = RcptParams::default();
    for (k, v) in params_iter(params) {
        let bad = || CommandError::Syntax(format!("bad {k} parameter"));
        match (k.as_str(), v) {
            ("NOTIFY", Some(v)) => {
                let items: Vec<String> = v.split(',').map(|s| s.to_ascii_uppercase()).collect();
                let never = items.iter().any(|i| i == "NEVER");
                if (never && items.len() > 1)
                    || !items.iter().all(|i| matches!(i.as_str(), "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"))
                {
                    return Err(bad());
                }
                out.notify = Some(items.join(","));
            }
            ("ORCPT", Some(v)) if v.contains(';') && v.len() <= 500 => out.orcpt = Some(v.to_string()),
            ("NOTIFY" | "ORCPT", _) => return Err(bad()),
            _ => return Err(CommandError::UnknownParam(k)),
        }
    }
    Ok(out)
}

/// Accumulates message text from DATA lines: unstuffs leading dots, stops at `.` alone,
/// and records (without stopping) the faults that make the message unacceptable.
#[derive(Debug)]
pub struct DataDecoder {
    pub body: Vec<u8>,
    max_size: usize,
    pub too_big: bool,
    pub bare_newline: bool,
    pub long_line: bool,
    /// The server could not set memory aside for the message: refused with a 452.
    pub no_memory: bool,
    /// Where the message goes instead of memory once the shared budget is taken: a
    /// temporary file in the spool directory, read back when the message is complete.
    spill: Option<(std::io::BufWriter<tempfile::NamedTempFile>, usize)>,
}

impl DataDecoder {
    pub fn new(max_size: usize) -> DataDecoder {
        DataDecoder {
            body: Vec::with_capacity(8192),
            max_size,
            too_big: false,
            bare_newline: false,
            long_line: false,
            no_memory: false,
            spill: None,
        }
    }

    /// Moves what was received to a file in `dir` and writes the rest there too, so a
    /// message waiting on a slow client holds no memory; false (and the message is
    /// refused) if the file cannot be made.
    pub fn spill_to(&mut self, dir: &std::path::Path) -> bool {
        use std::io::Write;
        if self.spill.is_some() {
            return true;
        }
        let made =
            std::fs::create_dir_all(dir).and_then(|()| tempfile::NamedTempFile::new_in(dir)).and_then(|mut f| {
                f.write_all(&self.body)?;
                Ok(f)
            });
        match made {
            Ok(f) => {
                self.spill = Some((std::io::BufWriter::with_capacity(64 * 1024, f), self.body.len()));
                self.body = Vec::new();
                true
            }
            Err(e) => {
                tracing::warn!("smtp: cannot spill a message to {}: {e}", dir.display());
                self.refuse_for_memory();
                false
            }
        }
    }

    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The bytes received so far, in memory or spilled.
    pub fn len(&self) -> usize {
        self.spill.as_ref().map_or(self.body.len(), |s| s.1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, data: &[u8]) {
        use std::io::Write;
        match self.spill.as_mut() {
            Some((f, n)) => {
                if f.write_all(data).is_err() {
                    self.refuse_for_memory();
                } else {
                    *n += data.len();
                }
            }
            None => self.body.extend_from_slice(data),
        }
    }

    /// Brings a spilled message back into `body` (the file is removed).
    pub fn load_spilled(&mut self) {
        if let Some((f, _)) = self.spill.take() {
            let file = f.into_inner().map_err(|e| e.into_error());
            match file.and_then(|f| std::fs::read(f.path())) {
                Ok(b) => self.body = b,
                Err(e) => {
                    tracing::warn!("smtp: reading back a spilled message: {e}");
                    self.refuse_for_memory();
                }
            }
        }
    }

    /// Drops what was received and keeps nothing more: the message will be refused.
    pub fn refuse_for_memory(&mut self) {
        self.no_memory = true;
        self.body = Vec::new();
        self.spill = None;
    }

    /// Feeds one line as read (ending in LF). Returns true at the end-of-data line.
    pub fn push_line(&mut self, line: &[u8]) -> bool {
        let Unstuffed::Line { content, bare_newline } = agora_net::dot::unstuff(line) else { return true };
        // A bare LF, or a CR not followed by LF, could smuggle a second message past a
        // server that reads line ends differently: refused at the end.
        self.bare_newline |= bare_newline;
        if self.len() + content.len() + 2 > self.max_size {
            self.too_big = true;
        }
        if !self.too_big && !self.no_memory {
            if self.spill.is_some() {
                let mut line = Vec::with_capacity(content.len() + 2);
                line.extend_from_slice(content);
                line.extend_from_slice(b"\r\n");
                self.append(&line);
            } else {
                self.body.extend_from_slice(content);
                self.body.extend_from_slice(b"\r\n");
            }
        }
        false
    }

    /// Records a line that was longer than `MAX_TEXT_LINE` and was discarded.
    pub fn push_long_line(&mut self) {
        self.long_line = true;
    }

    /// Appends a BDAT chunk (no dot-stuffing in BDAT).
    pub fn push_chunk(&mut self, chunk: &[u8]) {
        if self.no_memory {
            return;
        }
        if self.len() + chunk.len() > self.max_size {
            self.too_big = true;
            return;
        }
        self.append(chunk);
    }

    /// Checks line endings and lengths of a BDAT-assembled body.
    pub fn check_chunked(&mut self) {
        let mut line_len = 0usize;
        let mut prev = 0u8;
        for &b in &self.body {
            if b == b'\n' {
                if prev != b'\r' {
                    self.bare_newline = true;
                }
                line_len = 0;
            } else {
                if prev == b'\r' {
                    self.bare_newline = true;
                }
                line_len += 1;
                if line_len > MAX_TEXT_LINE - 2 {
                    self.long_line = true;
                }
            }
            prev = b;
        }
        if prev == b'\r' {
            self.bare_newline = true;
        }
    }

    /// The reply refusing the message, if it has a fault.
    pub fn fault(&self) -> Option<String> {
        if self.no_memory {
            Some(reply(452, "4.3.1", "Error: insufficient system resources, try again later"))
        } else if self.too_big {
            Some(reply(552, "5.3.4", &format!("Error: message exceeds fixed maximum size of {} bytes", self.max_size)))
        } else if self.bare_newline {
            Some(reply(550, "5.6.0", "Error: bare CR or LF in message; lines must end with CRLF"))
        } else if self.long_line {
            Some(reply(550, "5.6.0", &format!("Error: message line longer than {} characters", MAX_TEXT_LINE - 2)))
        } else {
            None
        }
    }
}

/// RFC 5322 date-time in UTC for `secs` since the epoch.
/// One line of a server's reply (`250-text` or `250 text`): its code, whether more lines
/// follow, and the text. Works on bytes: a peer's 8-bit text is taken lossily, never
/// sliced inside a character.
pub fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), String> {
    let bad = || format!("bad reply: {}", String::from_utf8_lossy(line).trim_end());
    let code = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit)).ok_or_else(bad)?;
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return Err(bad());
    }
    let (more, text) = match line.get(3) {
        Some(b'-') => (true, &line[4..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'\r' | b'\n') | None => (false, &line[3..3]),
        Some(_) => return Err(bad()),
    };
    let text = String::from_utf8_lossy(text);
    Ok((code, more, text.trim_end_matches(['\r', '\n']).trim_end().to_string()))
}

pub use agora_store::time::rfc5322_date;

#[cfg(test)]
mod tests {

    #[test]
    fn a_spilled_message_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DataDecoder::new(1 << 20);
        d.push_line(b"Subject: x\r\n");
        assert!(d.spill_to(dir.path()) && d.body.is_empty() && d.spilled());
        d.push_line(b"\r\n");
        d.push_line(b"..dotted\r\n");
        d.push_chunk(b"chunk");
        assert_eq!(d.len(), 12 + 2 + 9 + 5);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        d.load_spilled();
        assert_eq!(d.body, b"Subject: x\r\n\r\n.dotted\r\nchunk");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file goes once read");
    }

    use super::*;

    #[test]
    fn reply_lines_with_8bit_text_never_panic() {
        assert_eq!(parse_reply_line(b"250-mx.example\r\n").unwrap(), (250, true, "mx.example".into()));
        assert_eq!(parse_reply_line(b"250 ok\r\n").unwrap(), (250, false, "ok".into()));
        assert_eq!(parse_reply_line(b"354\r\n").unwrap(), (354, false, String::new()));
        // A character across byte 3 or 4 of the line: once a panic in the delivery lane.
        assert!(parse_reply_line("25\u{e9} ok\r\n".as_bytes()).is_err());
        assert!(parse_reply_line("250\u{a0}OK\r\n".as_bytes()).is_err());
        assert_eq!(parse_reply_line("250 \u{20ac} fine\r\n".as_bytes()).unwrap().2, "\u{20ac} fine");
        assert_eq!(parse_reply_line(b"250 caf\xe9\r\n").unwrap().2, "caf\u{fffd}");
        for bad in [&b""[..], b"2", b"25", b"abc ok", b"999 x", b"250x"] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_mail_with_params() {
        let c = parse_command(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159\r\n").unwrap();
        let Command::Mail(from, p) = c else { panic!() };
        assert_eq!(from, "a@b.example");
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert_eq!(p.ret.as_deref(), Some("HDRS"));
        assert_eq!(p.envid.as_deref(), Some("QQ314159"));
        assert_eq!(parse_command(b"mail from:<>\r\n").unwrap(), Command::Mail(String::new(), MailParams::default()));
        assert!(matches!(parse_command(b"MAIL FROM:<a@b.c> FOO=1"), Err(CommandError::UnknownParam(_))));
        assert!(matches!(parse_command(b"MAIL FROM:<a@b.c> SIZE=x"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"MAIL TO:<a@b.c>"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn parses_rcpt_forms() {
        let c = parse_command(
            b"RCPT TO:<@relay.example:\"john doe\"@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;j@x.example",
        )
        .unwrap();
        let Command::Rcpt(to, p) = c else { panic!() };
        assert_eq!(to, "\"john doe\"@x.example");
        assert_eq!(p.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(
            parse_command(b"RCPT TO:<Postmaster>").unwrap(),
            Command::Rcpt("postmaster".into(), RcptParams::default())
        );
        assert!(matches!(parse_command(b"RCPT TO:<>"), Err(CommandError::BadAddress(_))));
        assert!(matches!(parse_command(b"RCPT TO:<a@b.c> NOTIFY=NEVER,DELAY"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"RCPT TO:<no-at-sign>"), Err(CommandError::BadAddress(_))));
        let Command::Rcpt(to, _) = parse_command("RCPT TO:<пользователь@пример.рф>".as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(to, "пользователь@пример.рф");
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse_command(b"BDAT 100 LAST\r\n").unwrap(), Command::Bdat { size: 100, last: true });
        assert!(parse_command(b"BDAT -1").is_err());
        let burl = parse_command(b"BURL imap://a@b/INBOX/;uid=1;urlauth=submit+a@b:internal:00 LAST\r\n").unwrap();
        assert!(matches!(burl, Command::Burl { last: true, .. }));
        assert!(parse_command(b"BURL\r\n").is_err() && parse_command(b"BURL u LAST x\r\n").is_err());
        assert!(parse_command(b"BDAT 99999999999999999999999").is_err());
        assert_eq!(parse_command(b"ehlo client.example\r\n").unwrap(), Command::Ehlo("client.example".into()));
        assert!(parse_command(b"EHLO").is_err());
        assert_eq!(parse_command(b"XYZZY"), Err(CommandError::Unrecognized));
        assert!(parse_command(b"\xff\xfe").is_err());
        assert!(parse_command(b"DATA x").is_err());
        assert!(parse_command(b"NOOP\0").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let mut line = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let alphabet = b"MAILRCPTFROM:TO<>@.\" =\\,;BDAT0123456789\xc3\xa9\r\n";
                line.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = parse_command(&line);
        }
    }

    #[test]
    fn data_decoder_unstuffs_and_detects_faults() {
        let mut d = DataDecoder::new(1000);
        for l in [&b"Subject: x\r\n"[..], b"\r\n", b"..leading dot\r\n"] {
            assert!(!d.push_line(l));
        }
        assert!(d.push_line(b".\r\n"));
        assert_eq!(d.body, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert!(d.fault().is_none());

        let mut d = DataDecoder::new(1000);
        assert!(!d.push_line(b"bare\n"));
        assert!(!d.push_line(b".\n"), "dot with bare LF is not the end of data");
        assert!(d.fault().unwrap().starts_with("550 5.6.0"));

        let mut d = DataDecoder::new(10);
        d.push_line(b"0123456789abc\r\n");
        assert!(d.fault().unwrap().starts_with("552 5.3.4"));

        let mut d = DataDecoder::new(1000);
        d.push_chunk(b"a\r\nb\rc\r\n");
        d.check_chunked();
        assert!(d.bare_newline);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
