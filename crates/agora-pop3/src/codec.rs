//! POP3 wire format, pure: commands (RFC 1939, 2449, 2595, 5034, 6856) and the
//! dot-stuffed multi-line body of RETR and TOP.

/// Longest command line accepted, CRLF included. RFC 2449 allows 255 octets for a
/// command; SASL responses (RFC 5034) may be longer.
pub const MAX_LINE: usize = 8192;
const MAX_ARG: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(String),
    Apop,
    /// AUTH [mechanism [initial-response]]
    Auth(Option<String>, Option<String>),
    Stls,
    Capa,
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
    Top(u32, u32),
    Uidl(Option<u32>),
    Utf8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Unknown,
    Syntax(&'static str),
}

impl CommandError {
    pub fn reply(&self) -> String {
        match self {
            CommandError::Unknown => "-ERR Unknown command\r\n".into(),
            CommandError::Syntax(m) => format!("-ERR Syntax: {m}\r\n"),
        }
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn number(s: Option<&str>, what: &'static str) -> Result<u32, CommandError> {
    let s = s.ok_or(CommandError::Syntax(what))?;
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax(what));
    }
    s.parse().map_err(|_| CommandError::Syntax(what))
}

pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(strip_eol(line)).map_err(|_| CommandError::Syntax("command is not valid UTF-8"))?;
    if line.chars().any(|c| c.is_control()) {
        return Err(CommandError::Syntax("control characters in command"));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r),
        None => (line, ""),
    };
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    if args.iter().any(|a| a.len() > MAX_ARG) && !verb.eq_ignore_ascii_case("AUTH") {
        return Err(CommandError::Syntax("argument too long"));
    }
    let none = |c: Command| if args.is_empty() { Ok(c) } else { Err(CommandError::Syntax("no arguments expected")) };
    let opt_num = |what| {
        if args.is_empty() {
            Ok(None)
        } else if args.len() == 1 {
            number(args.first().copied(), what).map(Some)
        } else {
            Err(CommandError::Syntax(what))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "USER" if args.len() == 1 => Ok(Command::User(args[0].to_string())),
        "USER" => Err(CommandError::Syntax("USER name")),
        // The password is the rest of the line: it may contain spaces.
        "PASS" if !rest.is_empty() && rest.len() <= MAX_ARG => Ok(Command::Pass(rest.to_string())),
        "PASS" => Err(CommandError::Syntax("PASS password")),
        "APOP" => Ok(Command::Apop),
        "AUTH" if args.len() <= 2 => {
            Ok(Command::Auth(args.first().map(|s| s.to_string()), args.get(1).map(|s| s.to_string())))
        }
        "AUTH" => Err(CommandError::Syntax("AUTH mechanism [initial-response]")),
        "STLS" => none(Command::Stls),
        "CAPA" => none(Command::Capa),
        "STAT" => none(Command::Stat),
        "LIST" => opt_num("LIST [msg]").map(Command::List),
        "UIDL" => opt_num("UIDL [msg]").map(Command::Uidl),
        "RETR" if args.len() == 1 => number(args.first().copied(), "RETR msg").map(Command::Retr),
        "RETR" => Err(CommandError::Syntax("RETR msg")),
        "DELE" if args.len() == 1 => number(args.first().copied(), "DELE msg").map(Command::Dele),
        "DELE" => Err(CommandError::Syntax("DELE msg")),
        "TOP" if args.len() == 2 => {
            Ok(Command::Top(number(args.first().copied(), "TOP msg n")?, number(args.get(1).copied(), "TOP msg n")?))
        }
        "TOP" => Err(CommandError::Syntax("TOP msg n")),
        "NOOP" => none(Command::Noop),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        "UTF8" => none(Command::Utf8),
        _ => Err(CommandError::Unknown),
    }
}

/// Appends `msg` as a POP3 multi-line body (RFC 1939 §3): dot-stuffed, line ends
/// repaired; with `body_lines`, only the header and that many body lines (TOP).
/// Returns the number of dots added (see `agora_net::dot::stuff`).
pub fn write_multiline(msg: &[u8], body_lines: Option<u32>, out: &mut Vec<u8>) -> usize {
    agora_net::dot::stuff(msg, body_lines, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"user Bob@Example.org\r\n").unwrap(), Command::User("Bob@Example.org".into()));
        assert_eq!(parse(b"PASS my secret pw\r\n").unwrap(), Command::Pass("my secret pw".into()));
        assert_eq!(parse(b"LIST\r\n").unwrap(), Command::List(None));
        assert_eq!(parse(b"list 3\r\n").unwrap(), Command::List(Some(3)));
        assert_eq!(parse(b"TOP 1 10").unwrap(), Command::Top(1, 10));
        assert_eq!(
            parse(b"AUTH PLAIN AGEAYg==").unwrap(),
            Command::Auth(Some("PLAIN".into()), Some("AGEAYg==".into()))
        );
        assert_eq!(parse(b"AUTH").unwrap(), Command::Auth(None, None));
        assert!(matches!(parse(b"RETR x"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"RETR -1"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"RETR 99999999999"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"STAT 1"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"XTND"), Err(CommandError::Unknown));
        assert!(parse(b"\xff").is_err());
    }

    #[test]
    fn multiline_stuffing_and_line_ends() {
        let mut out = Vec::new();
        write_multiline(b"Subject: x\r\n\r\n.hidden\nbare lf\r\n..two\r\nno final newline", None, &mut out);
        assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\nbare lf\r\n...two\r\nno final newline\r\n.\r\n");
        let mut top = Vec::new();
        write_multiline(b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n", Some(2), &mut top);
        assert_eq!(top, b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n.\r\n");
        let mut zero = Vec::new();
        write_multiline(b"A: 1\r\n\r\nbody\r\n", Some(0), &mut zero);
        assert_eq!(zero, b"A: 1\r\n\r\n.\r\n");
        let mut empty = Vec::new();
        write_multiline(b"", None, &mut empty);
        assert_eq!(empty, b".\r\n");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 11u64;
        for _ in 0..20_000 {
            let len = (seed % 30) as usize;
            let mut line = Vec::new();
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let alphabet = b"USERPASTOLIDX 0123456789\r\n.\xc3";
                line.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = parse(&line);
            let mut out = Vec::new();
            write_multiline(&line, Some((seed % 3) as u32), &mut out);
            assert!(out.ends_with(b".\r\n"));
        }
    }
}
