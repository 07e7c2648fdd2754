//! NNTP wire format, pure: commands (RFC 3977; STARTTLS RFC 4642; AUTHINFO RFC 4643;
//! streaming RFC 4644; COMPRESS RFC 8054; the XOVER/XHDR spellings older readers
//! send), article ranges, message-ids, wildmats and NEWGROUPS/NEWNEWS dates. Written
//! by hand: no maintained Rust crate parses the NNTP command language.

/// Longest command line accepted, CRLF included: RFC 3977 §3.1 allows 512 octets;
/// AUTHINFO SASL lines may carry an initial response of up to 12,288 (RFC 4643 §2.3).
pub const MAX_LINE: usize = 12_288;
/// Longest ordinary command line (RFC 3977 §3.1), CRLF included.
pub const MAX_COMMAND: usize = 512;
/// Longest argument (RFC 3977 §3.1).
const MAX_ARG: usize = 497;
/// Longest message-id (RFC 3977 §3.6).
pub const MAX_MESSAGE_ID: usize = 250;

/// A range of article numbers: `n`, `n-` (to the end) or `n-m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: u32,
    /// None: to the last article.
    pub last: Option<u32>,
}

impl Range {
    pub fn contains(&self, n: u32) -> bool {
        n >= self.first && self.last.is_none_or(|l| n <= l)
    }
}

/// Which article a command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The current article of the selected group.
    Current,
    Number(u32),
    MessageId(String),
}

/// What OVER and HDR ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Current,
    Range(Range),
    MessageId(String),
}

/// The LIST variants (RFC 3977 §7.6, RFC 6048).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum List {
    Active(Option<String>),
    ActiveTimes(Option<String>),
    DistribPats,
    Headers(Option<String>),
    Newsgroups(Option<String>),
    OverviewFmt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capabilities,
    ModeReader,
    /// MODE STREAM (RFC 4644).
    ModeStream,
    Group(String),
    ListGroup(Option<(String, Option<Range>)>),
    Last,
    Next,
    Article(Target),
    Head(Target),
    Body(Target),
    Stat(Target),
    Over(Selection),
    /// HDR field [range|message-id].
    Hdr(String, Selection),
    List(List),
    /// NEWGROUPS since (Unix seconds).
    NewGroups(i64),
    /// NEWNEWS wildmat since.
    NewNews(String, i64),
    Date,
    Help,
    Post,
    Ihave(String),
    Check(String),
    TakeThis(String),
    AuthUser(String),
    AuthPass(String),
    /// AUTHINFO SASL mechanism [initial-response].
    AuthSasl(String, Option<String>),
    StartTls,
    CompressDeflate,
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// 500: not a command we know.
    Unknown,
    /// 501: the command is known; its arguments are wrong.
    Syntax(&'static str),
}

impl CommandError {
    pub fn reply(&self) -> String {
        match self {
            CommandError::Unknown => "500 Unknown command\r\n".into(),
            CommandError::Syntax(m) => format!("501 Syntax error: {m}\r\n"),
        }
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A message-id as RFC 3977 §3.6 has it: `<`, printable US-ASCII without `>`, `>`,
/// at most 250 octets.
pub fn is_message_id(s: &str) -> bool {
    s.len() >= 3
        && s.len() <= MAX_MESSAGE_ID
        && s.starts_with('<')
        && s.ends_with('>')
        && s[1..s.len() - 1].bytes().all(|b| (33..=126).contains(&b) && b != b'>')
}

fn number(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `n`, `n-` or `n-m` (RFC 3977 §6.1.2.2).
pub fn parse_range(s: &str) -> Option<Range> {
    match s.split_once('-') {
        None => number(s).map(|n| Range { first: n, last: Some(n) }),
        Some((a, "")) => number(a).map(|first| Range { first, last: None }),
        Some((a, b)) => Some(Range { first: number(a)?, last: Some(number(b)?) }),
    }
}

fn message_id(a: &str) -> Result<String, CommandError> {
    if is_message_id(a) { Ok(a.to_string()) } else { Err(CommandError::Syntax("malformed message-id")) }
}

fn target(arg: Option<&str>) -> Result<Target, CommandError> {
    match arg {
        None => Ok(Target::Current),
        Some(a) if a.starts_with('<') => message_id(a).map(Target::MessageId),
        Some(a) => {
            number(a).map(Target::Number).ok_or(CommandError::Syntax("expected an article number or message-id"))
        }
    }
}

fn selection(arg: Option<&str>) -> Result<Selection, CommandError> {
    match arg {
        None => Ok(Selection::Current),
        Some(a) if a.starts_with('<') => message_id(a).map(Selection::MessageId),
        Some(a) => parse_range(a).map(Selection::Range).ok_or(CommandError::Syntax("expected a range or message-id")),
    }
}

/// A newsgroup name as a command carries it: printable UTF-8 without spaces or the
/// wildmat specials, at most 497 octets.
fn group_name(s: &str) -> Result<String, CommandError> {
    if s.is_empty() || s.len() > MAX_ARG || s.chars().any(|c| c.is_control() || "*?,![]\\".contains(c)) {
        return Err(CommandError::Syntax("malformed newsgroup name"));
    }
    Ok(s.to_string())
}

/// `yymmdd` or `yyyymmdd` and `hhmmss` as NEWGROUPS and NEWNEWS carry them, in UTC
/// (this server's time zone, with or without `GMT`). A two-digit year is the one
/// within fifty years of `now` (RFC 3977 §7.3.2).
pub fn parse_date(date: &str, time: &str, now: i64) -> Option<i64> {
    if !date.bytes().all(|b| b.is_ascii_digit()) || time.len() != 6 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match date.len() {
        8 => (date[..4].parse::<i64>().ok()?, &date[4..]),
        6 => {
            let yy: i64 = date[..2].parse().ok()?;
            let this_year = agora_store::time::split(now).0;
            let mut y = this_year - this_year % 100 + yy;
            if y > this_year + 50 {
                y -= 100;
            } else if y < this_year - 50 {
                y += 100;
            }
            (y, &date[2..])
        }
        _ => return None,
    };
    let month: u32 = rest[..2].parse().ok()?;
    let day: u32 = rest[2..].parse().ok()?;
    let (h, m, s): (i64, i64, i64) = (time[..2].parse().ok()?, time[2..4].parse().ok()?, time[4..].parse().ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(agora_store::time::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Parses one command line. Keywords are case-insensitive; arguments are separated by
/// spaces or tabs.
pub fn parse(line: &[u8], now: i64) -> Result<Command, CommandError> {
    let text = std::str::from_utf8(strip_eol(line)).map_err(|_| CommandError::Syntax("command is not valid UTF-8"))?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::Syntax("control characters in the command"));
    }
    let words: Vec<&str> = text.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let Some(first) = words.first() else { return Err(CommandError::Unknown) };
    let keyword = first.to_ascii_uppercase();
    let sasl = keyword == "AUTHINFO" && words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("SASL"));
    if !sasl && (line.len() > MAX_COMMAND || words.iter().any(|w| w.len() > MAX_ARG)) {
        return Err(CommandError::Syntax("line too long"));
    }
    let args = &words[1..];
    let arity = |min: usize, max: usize| -> Result<(), CommandError> {
        if args.len() < min || args.len() > max {
            Err(CommandError::Syntax("wrong number of arguments"))
        } else {
            Ok(())
        }
    };
    let arg = |i: usize| args.get(i).copied();
    Ok(match keyword.as_str() {
        "CAPABILITIES" => {
            arity(0, 1)?;
            Command::Capabilities
        }
        "MODE" => {
            arity(1, 1)?;
            match args[0].to_ascii_uppercase().as_str() {
                "READER" => Command::ModeReader,
                "STREAM" => Command::ModeStream,
                _ => return Err(CommandError::Syntax("MODE READER or MODE STREAM")),
            }
        }
        "GROUP" => {
            arity(1, 1)?;
            Command::Group(group_name(args[0])?)
        }
        "LISTGROUP" => {
            arity(0, 2)?;
            match arg(0) {
                None => Command::ListGroup(None),
                Some(g) => {
                    let range = match arg(1) {
                        None => None,
                        Some(r) => Some(parse_range(r).ok_or(CommandError::Syntax("malformed range"))?),
                    };
                    Command::ListGroup(Some((group_name(g)?, range)))
                }
            }
        }
        "LAST" | "NEXT" => {
            arity(0, 0)?;
            if keyword == "LAST" { Command::Last } else { Command::Next }
        }
        "ARTICLE" | "HEAD" | "BODY" | "STAT" => {
            arity(0, 1)?;
            let t = target(arg(0))?;
            match keyword.as_str() {
                "ARTICLE" => Command::Article(t),
                "HEAD" => Command::Head(t),
                "BODY" => Command::Body(t),
                _ => Command::Stat(t),
            }
        }
        "OVER" | "XOVER" => {
            arity(0, 1)?;
            let s = selection(arg(0))?;
            if keyword == "XOVER" && matches!(s, Selection::MessageId(_)) {
                return Err(CommandError::Syntax("XOVER takes a range"));
            }
            Command::Over(s)
        }
        "HDR" | "XHDR" => {
            arity(1, 2)?;
            let field = args[0];
            if !(field == ":bytes" || field == ":lines" || field.bytes().all(|b| b.is_ascii_graphic() && b != b':')) {
                return Err(CommandError::Syntax("malformed header name"));
            }
            Command::Hdr(field.to_string(), selection(arg(1))?)
        }
        "LIST" => {
            arity(0, 2)?;
            let wild = |i: usize| -> Result<Option<String>, CommandError> {
                match arg(i) {
                    None => Ok(None),
                    Some(w) if is_wildmat(w) => Ok(Some(w.to_string())),
                    Some(_) => Err(CommandError::Syntax("malformed wildmat")),
                }
            };
            match arg(0).map(str::to_ascii_uppercase).as_deref() {
                None | Some("ACTIVE") => Command::List(List::Active(wild(1)?)),
                Some("ACTIVE.TIMES") => Command::List(List::ActiveTimes(wild(1)?)),
                Some("NEWSGROUPS") => Command::List(List::Newsgroups(wild(1)?)),
                Some("DISTRIB.PATS") if args.len() == 1 => Command::List(List::DistribPats),
                Some("OVERVIEW.FMT") if args.len() == 1 => Command::List(List::OverviewFmt),
                Some("HEADERS") => match arg(1).map(str::to_ascii_uppercase).as_deref() {
                    None => Command::List(List::Headers(None)),
                    Some(v @ ("MSGID" | "RANGE")) => Command::List(List::Headers(Some(v.to_string()))),
                    Some(_) => return Err(CommandError::Syntax("LIST HEADERS [MSGID|RANGE]")),
                },
                Some(_) => return Err(CommandError::Syntax("unknown LIST keyword")),
            }
        }
        "NEWGROUPS" => {
            arity(2, 3)?;
            if args.len() == 3 && !args[2].eq_ignore_ascii_case("GMT") {
                return Err(CommandError::Syntax("NEWGROUPS date time [GMT]"));
            }
            Command::NewGroups(parse_date(args[0], args[1], now).ok_or(CommandError::Syntax("malformed date or time"))?)
        }
        "NEWNEWS" => {
            arity(3, 4)?;
            if args.len() == 4 && !args[3].eq_ignore_ascii_case("GMT") {
                return Err(CommandError::Syntax("NEWNEWS wildmat date time [GMT]"));
            }
            if !is_wildmat(args[0]) {
                return Err(CommandError::Syntax("malformed wildmat"));
            }
            let since = parse_date(args[1], args[2], now).ok_or(CommandError::Syntax("malformed date or time"))?;
            Command::NewNews(args[0].to_string(), since)
        }
        "DATE" | "HELP" | "POST" | "QUIT" | "STARTTLS" => {
            arity(0, 0)?;
            match keyword.as_str() {
                "DATE" => Command::Date,
                "HELP" => Command::Help,
                "POST" => Command::Post,
                "QUIT" => Command::Quit,
                _ => Command::StartTls,
            }
        }
        "IHAVE" | "CHECK" | "TAKETHIS" => {
            arity(1, 1)?;
            if !is_message_id(args[0]) {
                return Err(CommandError::Syntax("malformed message-id"));
            }
            let id = args[0].to_string();
            match keyword.as_str() {
                "IHAVE" => Command::Ihave(id),
                "CHECK" => Command::Check(id),
                _ => Command::TakeThis(id),
            }
        }
        "AUTHINFO" => {
            let sub = arg(0).map(str::to_ascii_uppercase).ok_or(CommandError::Syntax("AUTHINFO USER|PASS|SASL"))?;
            match sub.as_str() {
                // A password may contain spaces: everything after the keyword is the argument.
                "USER" | "PASS" => {
                    let value = text
                        .trim_start()
                        .split_once([' ', '\t'])
                        .map(|(_, r)| r.trim_start())
                        .and_then(|r| r.split_once([' ', '\t']).map(|(_, v)| v))
                        .unwrap_or_default();
                    if value.is_empty() {
                        return Err(CommandError::Syntax("AUTHINFO USER|PASS takes one argument"));
                    }
                    if sub == "USER" {
                        Command::AuthUser(value.to_string())
                    } else {
                        Command::AuthPass(value.to_string())
                    }
                }
                "SASL" => {
                    if !(2..=3).contains(&args.len()) {
                        return Err(CommandError::Syntax("AUTHINFO SASL mechanism [initial-response]"));
                    }
                    Command::AuthSasl(args[1].to_ascii_uppercase(), arg(2).map(str::to_string))
                }
                _ => return Err(CommandError::Syntax("AUTHINFO USER|PASS|SASL")),
            }
        }
        "COMPRESS" => {
            arity(1, 1)?;
            if !args[0].eq_ignore_ascii_case("DEFLATE") {
                return Err(CommandError::Syntax("only COMPRESS DEFLATE"));
            }
            Command::CompressDeflate
        }
        _ => return Err(CommandError::Unknown),
    })
}

/// Whether `s` is a wildmat (RFC 3977 §4.1): patterns separated by commas, each
/// perhaps negated with `!`, none empty, no brackets or backslashes.
pub fn is_wildmat(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|p| {
            let p = p.strip_prefix('!').unwrap_or(p);
            !p.is_empty() && !p.contains(['!', '[', ']', '\\']) && !p.chars().any(char::is_control)
        })
}

/// Whether `name` matches `wildmat`: the last pattern that matches decides, and a
/// negated one means no (RFC 3977 §4.2).
pub fn wildmat(wildmat: &str, name: &str) -> bool {
    for pattern in wildmat.split(',').rev() {
        let (negated, p) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob(p.as_bytes(), name.as_bytes()) {
            return !negated;
        }
    }
    false
}

/// `*` and `?` matching by characters, linear in time (no backtracking blow-up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let p: Vec<char> = String::from_utf8_lossy(pattern).chars().collect();
    let t: Vec<char> = String::from_utf8_lossy(text).chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_169_600; // 2026-12-02T00:00:00Z

    fn ok(line: &str) -> Command {
        parse(format!("{line}\r\n").as_bytes(), NOW).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn bad(line: &str) -> CommandError {
        parse(format!("{line}\r\n").as_bytes(), NOW).expect_err(line)
    }

    #[test]
    fn reader_commands() {
        assert_eq!(ok("capabilities"), Command::Capabilities);
        assert_eq!(ok("MODE reader"), Command::ModeReader);
        assert_eq!(ok("GROUP agora.test"), Command::Group("agora.test".into()));
        assert_eq!(ok("LISTGROUP"), Command::ListGroup(None));
        assert_eq!(
            ok("LISTGROUP agora.test 10-"),
            Command::ListGroup(Some(("agora.test".into(), Some(Range { first: 10, last: None }))))
        );
        assert_eq!(ok("ARTICLE"), Command::Article(Target::Current));
        assert_eq!(ok("HEAD 42"), Command::Head(Target::Number(42)));
        assert_eq!(ok("BODY <a.b@c>"), Command::Body(Target::MessageId("<a.b@c>".into())));
        assert_eq!(ok("stat\t7"), Command::Stat(Target::Number(7)));
        assert_eq!(ok("OVER 1-100"), Command::Over(Selection::Range(Range { first: 1, last: Some(100) })));
        assert_eq!(ok("XOVER 5"), Command::Over(Selection::Range(Range { first: 5, last: Some(5) })));
        assert_eq!(ok("HDR Subject <x@y>"), Command::Hdr("Subject".into(), Selection::MessageId("<x@y>".into())));
        assert_eq!(
            ok("XHDR :bytes 3-"),
            Command::Hdr(":bytes".into(), Selection::Range(Range { first: 3, last: None }))
        );
        assert_eq!(ok("LIST"), Command::List(List::Active(None)));
        assert_eq!(
            ok("LIST ACTIVE agora.*,!agora.private"),
            Command::List(List::Active(Some("agora.*,!agora.private".into())))
        );
        assert_eq!(ok("list overview.fmt"), Command::List(List::OverviewFmt));
        assert_eq!(ok("LIST HEADERS RANGE"), Command::List(List::Headers(Some("RANGE".into()))));
        assert_eq!(ok("NEWGROUPS 20261201 000000 GMT"), Command::NewGroups(NOW - 86_400));
        assert_eq!(ok("NEWNEWS * 261201 000000"), Command::NewNews("*".into(), NOW - 86_400));
        assert_eq!(ok("IHAVE <i@h>"), Command::Ihave("<i@h>".into()));
        assert_eq!(ok("TAKETHIS <t@h>"), Command::TakeThis("<t@h>".into()));
        assert_eq!(ok("AUTHINFO USER alice@example.org"), Command::AuthUser("alice@example.org".into()));
        assert_eq!(ok("AUTHINFO PASS two words"), Command::AuthPass("two words".into()));
        assert_eq!(ok("AUTHINFO SASL plain AGFAYg=="), Command::AuthSasl("PLAIN".into(), Some("AGFAYg==".into())));
        assert_eq!(ok("COMPRESS deflate"), Command::CompressDeflate);
        assert_eq!(ok("STARTTLS"), Command::StartTls);
    }

    #[test]
    fn refusals_say_which() {
        assert_eq!(bad("FROB"), CommandError::Unknown);
        assert_eq!(bad(""), CommandError::Unknown);
        for line in [
            "GROUP",
            "GROUP a b",
            "ARTICLE <no-close",
            "ARTICLE 12x",
            "OVER 5-x",
            "XOVER <a@b>",
            "LIST FROB",
            "NEWGROUPS 20261301 000000",
            "NEWGROUPS 20261201 250000",
            "NEWNEWS [a] 20261201 000000",
            "IHAVE nobrackets",
            "MODE WRITER",
            "COMPRESS GZIP",
            "AUTHINFO USER",
            "HDR Sub:ject 1",
        ] {
            assert!(matches!(bad(line), CommandError::Syntax(_)), "{line}");
        }
        let long = format!("GROUP {}", "a".repeat(600));
        assert!(matches!(bad(&long), CommandError::Syntax(_)));
        // SASL may be longer than an ordinary command.
        let sasl = format!("AUTHINFO SASL PLAIN {}", "A".repeat(4000));
        assert!(matches!(ok(&sasl), Command::AuthSasl(..)));
        assert!(parse(b"GROUP \xff\r\n", NOW).is_err());
    }

    #[test]
    fn message_ids() {
        assert!(is_message_id("<a@b>"));
        assert!(!is_message_id("<>") && !is_message_id("<a>b>") && !is_message_id("<a b>"));
        assert!(!is_message_id(&format!("<{}>", "x".repeat(249))));
    }

    #[test]
    fn wildmats() {
        assert!(wildmat("*", "comp.lang.rust"));
        assert!(wildmat("comp.*", "comp.lang.rust"));
        assert!(!wildmat("comp.*,!comp.lang.*", "comp.lang.rust"));
        assert!(wildmat("comp.*,!comp.lang.*,comp.lang.rust", "comp.lang.rust"));
        assert!(wildmat("?omp.l*t", "comp.lang.rust"));
        assert!(!wildmat("comp", "comp.lang"));
        assert!(is_wildmat("a*,!b") && !is_wildmat("a,,b") && !is_wildmat("[ab]") && !is_wildmat("!"));
        // Many stars against a long name: still quick.
        let name = "a".repeat(400);
        assert!(!wildmat(&format!("{}b", "*a".repeat(100)), &name));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("7"), Some(Range { first: 7, last: Some(7) }));
        assert_eq!(parse_range("7-"), Some(Range { first: 7, last: None }));
        assert!(parse_range("7-3").is_some_and(|r| !r.contains(5)));
        assert_eq!(parse_range("-3"), None);
        assert_eq!(parse_range("99999999999"), None);
    }
}
