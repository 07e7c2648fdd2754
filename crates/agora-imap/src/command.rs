//! IMAP command parser (RFC 9051, RFC 3501 and the extensions' grammar), pure: it
//! takes one complete command — the lines and the literal bytes a session gathered —
//! and returns a typed command or an error naming the tag, for a `BAD` reply.

pub use agora_store::search::{Date, STAR, SearchKey, SeqItem, SeqSet};

/// Deepest nesting of parenthesised lists or search keys accepted.
pub const MAX_DEPTH: usize = 32;

/// A literal announced at the end of a line: `{n}`, `{n+}` (LITERAL+) or `~{n}` (BINARY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    pub len: u64,
    /// `{n+}`: the client sends the data without waiting for a continuation.
    pub non_sync: bool,
    pub binary: bool,
}

/// If `line` (with or without CRLF) ends with a literal announcement, returns it.
pub fn literal_suffix(line: &[u8]) -> Option<Literal> {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let mut digits = &l[open + 1..];
    let non_sync = digits.last() == Some(&b'+');
    if non_sync {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let binary = open > 0 && l[open - 1] == b'~';
    Some(Literal { len, non_sync, binary })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tag, when it could be read: the reply is `tag BAD …`, else `* BAD …`.
    pub tag: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// `BODY[1.2.HEADER]`: part path plus what of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    /// BODY without section: the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    BodySection {
        section: Section,
        partial: Option<(u32, u32)>,
        peek: bool,
    },
    Binary {
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
        peek: bool,
    },
    BinarySize(Vec<u32>),
    ModSeq,
    Preview,
    EmailId,
    ThreadId,
    SaveDate,
}

/// `date-time` of APPEND: the date, time and zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Offset from UTC in minutes.
    pub zone_minutes: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<DateTime>,
    pub data: Vec<u8>,
    pub binary: bool,
    /// CATENATE (RFC 4469): the message is built from these parts; `data` is empty.
    pub catenate: Option<Vec<CatPart>>,
}

/// Most parts one CATENATE may join.
pub const MAX_CATENATE_PARTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    Url(String),
}

/// Parses a section spec as it appears in an IMAP URL (`HEADER`, `1.MIME`, `2.TEXT`).
pub fn parse_section(spec: &str) -> Option<Section> {
    let text = format!("[{spec}]");
    let mut p = P { b: text.as_bytes(), pos: 0, depth: 0, charset: None };
    let s = p.section().ok()?;
    p.at_end().then_some(s)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    AppendLimit,
    MailboxId,
}

/// SELECT's QRESYNC parameter (RFC 7162 §3.2.5). The sequence match data is read and
/// not needed: the store keeps every expunge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SeqSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// Selection options: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE.
    pub select: Vec<String>,
    /// Return options: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS (…).
    pub ret: Vec<String>,
    pub status: Vec<StatusItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    Capability,
    Noop,
    Logout,
    StartTls,
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: String,
        password: String,
    },
    Enable(Vec<String>),
    Select {
        mailbox: String,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Examine {
        mailbox: String,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create {
        mailbox: String,
        special_use: Vec<String>,
    },
    Delete(String),
    Rename {
        from: String,
        to: String,
    },
    Subscribe(String),
    Unsubscribe(String),
    List {
        reference: String,
        patterns: Vec<String>,
        options: ListOptions,
    },
    Lsub {
        reference: String,
        pattern: String,
    },
    Namespace,
    Status {
        mailbox: String,
        items: Vec<StatusItem>,
    },
    Append {
        mailbox: String,
        messages: Vec<AppendMessage>,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge {
        uids: Option<SeqSet>,
    },
    Search {
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
        charset: Option<String>,
        key: SearchKey,
    },
    /// CANCELUPDATE (RFC 5267): stop the updates of these searches.
    CancelUpdate(Vec<String>),
    /// SETMETADATA (RFC 5464): entries to set (Some) or remove (None).
    SetMetadata {
        mailbox: String,
        entries: Vec<(String, Option<Vec<u8>>)>,
    },
    /// GETMETADATA: MAXSIZE, DEPTH (0, 1, or u32::MAX for infinity), the entries.
    GetMetadata {
        mailbox: String,
        max_size: Option<u64>,
        depth: u32,
        entries: Vec<String>,
    },
    /// NOTIFY (RFC 5465): SET with its event groups, or NONE.
    Notify(Option<NotifySpec>),
    /// GENURLAUTH (RFC 4467): URLs with their mechanisms.
    GenUrlAuth(Vec<(String, String)>),
    /// RESETKEY: one mailbox's keys, or all of them.
    ResetKey(Option<String>),
    /// URLFETCH, each URL with RFC 5524's (BODY BINARY BODYPARTSTRUCTURE) wishes.
    UrlFetch(Vec<(String, UrlWants)>),
    Fetch {
        uid: bool,
        set: SeqSet,
        atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    Move {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    Id(Option<Vec<(String, Option<String>)>>),
    GetQuotaRoot(String),
    GetQuota(String),
    SetQuota {
        root: String,
        limits: Vec<(String, u64)>,
    },
    Compress(String),
    SetAcl {
        mailbox: String,
        identifier: String,
        rights: String,
    },
    DeleteAcl {
        mailbox: String,
        identifier: String,
    },
    GetAcl(String),
    ListRights {
        mailbox: String,
        identifier: String,
    },
    MyRights(String),
    Sort {
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
        criteria: Vec<crate::sort::Criterion>,
        charset: String,
        key: SearchKey,
    },
    Thread {
        uid: bool,
        algorithm: crate::thread::Algorithm,
        charset: String,
        key: SearchKey,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub kind: CommandKind,
}

type R<T> = Result<T, String>;

struct P<'a> {
    b: &'a [u8],
    pos: usize,
    depth: usize,
    /// The charset SEARCH, SORT or THREAD named for its strings (None: UTF-8).
    charset: Option<fn(&[u8]) -> String>,
}

fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"(){ %*\"\\]".contains(&c)
}

fn is_astring_char(c: u8) -> bool {
    is_atom_char(c) || c == b']'
}

fn is_tag_char(c: u8) -> bool {
    is_astring_char(c) && c != b'+'
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected '{}'", c as char)) }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ')
    }

    /// Case-insensitive keyword followed by a non-atom character.
    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        if end <= self.b.len()
            && self.b[self.pos..end].eq_ignore_ascii_case(kw.as_bytes())
            && self.b.get(end).is_none_or(|&c| !is_atom_char(c) || c == b'[' || c == b'.')
        {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.b[start..self.pos]
    }

    fn atom(&mut self) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("expected an atom".into());
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    fn number(&mut self) -> R<u64> {
        let d = self.take_while(|c| c.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("expected a number".into());
        }
        std::str::from_utf8(d).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "number too large".into())
    }

    fn number32(&mut self) -> R<u32> {
        u32::try_from(self.number()?).map_err(|_| "number too large".into())
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number32()? {
            0 => Err("zero is not allowed here".into()),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("bad escape in quoted string".into()),
                    }
                }
                Some(b'\r' | b'\n') => return Err("line break in quoted string".into()),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `{n}CRLF<n bytes>` (also `{n+}` and, if allowed, `~{n}`).
    fn literal(&mut self, allow_binary: bool) -> R<(Vec<u8>, bool)> {
        let binary = self.eat(b'~');
        if binary && !allow_binary {
            return Err("binary literal not allowed here".into());
        }
        self.expect(b'{')?;
        let n = self.number()?;
        self.eat(b'+');
        self.expect(b'}')?;
        self.eat(b'\r');
        self.expect(b'\n')?;
        let n = usize::try_from(n).map_err(|_| "literal too large")?;
        if self.b.len() - self.pos < n {
            return Err("literal data missing".into());
        }
        let data = self.b[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok((data, binary))
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => Ok(self.literal(false)?.0),
            _ => Err("expected a string".into()),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return Err("expected a string or atom".into());
                }
                Ok(a.to_vec())
            }
        }
    }

    fn astring_utf8(&mut self) -> R<String> {
        String::from_utf8(self.astring()?).map_err(|_| "string is not valid UTF-8".into())
    }

    fn string_utf8(&mut self) -> R<String> {
        String::from_utf8(self.string()?).map_err(|_| "string is not valid UTF-8".into())
    }

    fn nil(&mut self) -> bool {
        self.keyword("NIL")
    }

    fn mailbox(&mut self) -> R<String> {
        let m = self.astring_utf8()?;
        Ok(if m.eq_ignore_ascii_case("INBOX") { "INBOX".into() } else { m })
    }

    /// list-mailbox: like astring, plus the wildcards % and *.
    fn list_mailbox(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"' | b'{') => self.string_utf8(),
            _ => {
                let a = self.take_while(|c| is_astring_char(c) || c == b'%' || c == b'*');
                if a.is_empty() {
                    return Err("expected a mailbox pattern".into());
                }
                String::from_utf8(a.to_vec()).map_err(|_| "pattern is not valid UTF-8".into())
            }
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err("nesting too deep".into()) } else { Ok(()) }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn seq_number(&mut self) -> R<u32> {
        if self.eat(b'*') { Ok(STAR) } else { self.nz_number() }
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        if self.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let mut items = Vec::new();
        loop {
            let a = self.seq_number()?;
            if self.eat(b':') {
                let b = self.seq_number()?;
                items.push(SeqItem::Range(a, b));
            } else {
                items.push(SeqItem::One(a));
            }
            if !self.eat(b',') {
                break;
            }
            if items.len() > 100_000 {
                return Err("sequence set too long".into());
            }
        }
        Ok(SeqSet::Items(items))
    }

    fn flag(&mut self) -> R<String> {
        if self.eat(b'\\') {
            if self.eat(b'*') {
                return Ok("\\*".into());
            }
            return Ok(format!("\\{}", self.atom()?));
        }
        self.atom()
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut flags = Vec::new();
        if self.eat(b')') {
            return Ok(flags);
        }
        loop {
            flags.push(self.flag()?);
            if self.eat(b')') {
                return Ok(flags);
            }
            self.sp()?;
        }
    }

    /// Flags as STORE takes them: a list or flags separated by spaces.
    fn store_flags(&mut self) -> R<Vec<String>> {
        if self.peek() == Some(b'(') {
            return self.flag_list();
        }
        let mut flags = vec![self.flag()?];
        while self.eat(b' ') {
            flags.push(self.flag()?);
        }
        Ok(flags)
    }

    fn date(&mut self) -> R<Date> {
        let quoted = self.eat(b'"');
        let day = self.number()?;
        self.expect(b'-')?;
        let mon = self.take_while(|c| c.is_ascii_alphabetic());
        let month = month_number(mon).ok_or("bad month")?;
        self.expect(b'-')?;
        let year = self.number()?;
        if quoted {
            self.expect(b'"')?;
        }
        if !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
            return Err("bad date".into());
        }
        Ok(Date { year: year as u16, month, day: day as u8 })
    }

    fn date_time(&mut self) -> R<DateTime> {
        self.expect(b'"')?;
        self.eat(b' ');
        let date = self.date()?;
        self.sp()?;
        let two = |p: &mut Self, max: u64| -> R<u8> {
            let n = p.number()?;
            if n > max { Err("bad time".into()) } else { Ok(n as u8) }
        };
        let hour = two(self, 23)?;
        self.expect(b':')?;
        let minute = two(self, 59)?;
        self.expect(b':')?;
        let second = two(self, 60)?;
        self.sp()?;
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("bad zone".into()),
        };
        self.pos += 1;
        let z = self.take_while(|c| c.is_ascii_digit());
        if z.len() != 4 {
            return Err("bad zone".into());
        }
        let z: i16 = std::str::from_utf8(z).ok().and_then(|s| s.parse().ok()).ok_or("bad zone")?;
        self.expect(b'"')?;
        Ok(DateTime { date, hour, minute, second, zone_minutes: sign * ((z / 100) * 60 + z % 100) })
    }

    fn part_path(&mut self) -> R<Vec<u32>> {
        let mut part = Vec::new();
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            part.push(self.nz_number()?);
            if !self.eat(b'.') {
                break;
            }
            if part.len() > MAX_DEPTH {
                return Err("part path too deep".into());
            }
        }
        Ok(part)
    }

    fn header_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            out.push(String::from_utf8_lossy(&self.astring()?).to_ascii_lowercase());
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn section(&mut self) -> R<Section> {
        self.expect(b'[')?;
        let part = self.part_path()?;
        let text = if self.peek() == Some(b']') {
            None
        } else if self.keyword("HEADER.FIELDS.NOT") {
            self.sp()?;
            Some(SectionText::HeaderFieldsNot(self.header_list()?))
        } else if self.keyword("HEADER.FIELDS") {
            self.sp()?;
            Some(SectionText::HeaderFields(self.header_list()?))
        } else if self.keyword("HEADER") {
            Some(SectionText::Header)
        } else if self.keyword("TEXT") {
            Some(SectionText::Text)
        } else if self.keyword("MIME") {
            if part.is_empty() {
                return Err("MIME needs a part number".into());
            }
            Some(SectionText::Mime)
        } else {
            return Err("bad section".into());
        };
        self.expect(b']')?;
        Ok(Section { part, text })
    }

    fn partial(&mut self) -> R<Option<(u32, u32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let start = self.number32()?;
        self.expect(b'.')?;
        let len = self.nz_number()?;
        self.expect(b'>')?;
        Ok(Some((start, len)))
    }

    fn fetch_att(&mut self) -> R<Vec<FetchAtt>> {
        use FetchAtt::*;
        Ok(vec![if self.keyword("ENVELOPE") {
            Envelope
        } else if self.keyword("FLAGS") {
            Flags
        } else if self.keyword("INTERNALDATE") {
            InternalDate
        } else if self.keyword("RFC822.HEADER") {
            Rfc822Header
        } else if self.keyword("RFC822.SIZE") {
            Rfc822Size
        } else if self.keyword("RFC822.TEXT") {
            Rfc822Text
        } else if self.keyword("RFC822") {
            Rfc822
        } else if self.keyword("BODYSTRUCTURE") {
            BodyStructure
        } else if self.keyword("BODY.PEEK") {
            let section = self.section()?;
            BodySection { section, partial: self.partial()?, peek: true }
        } else if self.keyword("BODY") {
            if self.peek() == Some(b'[') {
                let section = self.section()?;
                BodySection { section, partial: self.partial()?, peek: false }
            } else {
                Body
            }
        } else if self.keyword("BINARY.SIZE") {
            self.expect(b'[')?;
            let part = self.part_path()?;
            self.expect(b']')?;
            BinarySize(part)
        } else if self.keyword("BINARY.PEEK") || self.keyword("BINARY") {
            let peek = self.b[..self.pos].ends_with(b".PEEK") || self.b[..self.pos].ends_with(b".peek");
            self.expect(b'[')?;
            let part = self.part_path()?;
            self.expect(b']')?;
            Binary { part, partial: self.partial()?, peek }
        } else if self.keyword("UID") {
            Uid
        } else if self.keyword("MODSEQ") {
            ModSeq
        } else if self.keyword("PREVIEW") {
            // PREVIEW (LAZY) (RFC 8970): a preview is always computed here, so LAZY is moot.
            let at = self.pos;
            if !(self.eat(b' ') && self.eat(b'(') && self.keyword("LAZY") && self.eat(b')')) {
                self.pos = at;
            }
            Preview
        } else if self.keyword("EMAILID") {
            EmailId
        } else if self.keyword("THREADID") {
            ThreadId
        } else if self.keyword("SAVEDATE") {
            SaveDate
        } else if self.keyword("ALL") {
            return Ok(vec![Flags, InternalDate, Rfc822Size, Envelope]);
        } else if self.keyword("FAST") {
            return Ok(vec![Flags, InternalDate, Rfc822Size]);
        } else if self.keyword("FULL") {
            return Ok(vec![Flags, InternalDate, Rfc822Size, Envelope, Body]);
        } else {
            return Err("unknown FETCH attribute".into());
        }])
    }

    fn fetch_atts(&mut self) -> R<Vec<FetchAtt>> {
        if self.eat(b'(') {
            let mut atts = Vec::new();
            loop {
                atts.extend(self.fetch_att()?);
                if self.eat(b')') {
                    return Ok(atts);
                }
                self.sp()?;
            }
        }
        self.fetch_att()
    }

    fn search_key(&mut self) -> R<SearchKey> {
        use SearchKey::*;
        self.enter()?;
        let k = if self.eat(b'(') {
            let mut keys = vec![self.search_key()?];
            while self.eat(b' ') {
                keys.push(self.search_key()?);
            }
            self.expect(b')')?;
            And(keys)
        } else if self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'*' || c == b'$') {
            Seq(self.seq_set()?)
        } else {
            let word = self.atom()?.to_ascii_uppercase();
            let arg_s = |p: &mut Self| -> R<String> {
                p.sp()?;
                let bytes = p.astring()?;
                Ok(match p.charset {
                    Some(decode) => decode(&bytes),
                    None => String::from_utf8_lossy(&bytes).into_owned(),
                })
            };
            match word.as_str() {
                "ALL" => All,
                "ANSWERED" => Answered,
                "BCC" => Bcc(arg_s(self)?),
                "BEFORE" => Before(self.sp().and_then(|_| self.date())?),
                "BODY" => Body(arg_s(self)?),
                "CC" => Cc(arg_s(self)?),
                "DELETED" => Deleted,
                "DRAFT" => Draft,
                "FLAGGED" => Flagged,
                "FROM" => From(arg_s(self)?),
                "HEADER" => {
                    let f = arg_s(self)?;
                    Header(f, arg_s(self)?)
                }
                "KEYWORD" => Keyword(self.sp().and_then(|_| self.flag())?),
                "LARGER" => Larger(self.sp().and_then(|_| self.number())?),
                "NEW" => New,
                "NOT" => {
                    self.sp()?;
                    Not(Box::new(self.search_key()?))
                }
                "OLD" => Old,
                "ON" => On(self.sp().and_then(|_| self.date())?),
                "OR" => {
                    self.sp()?;
                    let a = self.search_key()?;
                    self.sp()?;
                    Or(Box::new(a), Box::new(self.search_key()?))
                }
                "RECENT" => Recent,
                "SEEN" => Seen,
                "SENTBEFORE" => SentBefore(self.sp().and_then(|_| self.date())?),
                "SENTON" => SentOn(self.sp().and_then(|_| self.date())?),
                "SENTSINCE" => SentSince(self.sp().and_then(|_| self.date())?),
                "SINCE" => Since(self.sp().and_then(|_| self.date())?),
                "SMALLER" => Smaller(self.sp().and_then(|_| self.number())?),
                "SUBJECT" => Subject(arg_s(self)?),
                "TEXT" => Text(arg_s(self)?),
                "TO" => To(arg_s(self)?),
                "UID" => Uid(self.sp().and_then(|_| self.seq_set())?),
                "UNANSWERED" => Unanswered,
                "UNDELETED" => Undeleted,
                "UNDRAFT" => Undraft,
                "UNFLAGGED" => Unflagged,
                "UNKEYWORD" => Unkeyword(self.sp().and_then(|_| self.flag())?),
                "UNSEEN" => Unseen,
                "MODSEQ" => {
                    self.sp()?;
                    // Optional entry name and type (RFC 7162): accepted and ignored.
                    if self.peek() == Some(b'"') {
                        self.quoted()?;
                        self.sp()?;
                        self.atom()?;
                        self.sp()?;
                    }
                    ModSeq(self.number()?)
                }
                "YOUNGER" => Younger(self.sp().and_then(|_| self.number())?),
                "OLDER" => Older(self.sp().and_then(|_| self.number())?),
                "SAVEDBEFORE" => SavedBefore(self.sp().and_then(|_| self.date())?),
                "SAVEDON" => SavedOn(self.sp().and_then(|_| self.date())?),
                "SAVEDSINCE" => SavedSince(self.sp().and_then(|_| self.date())?),
                "SAVEDATESUPPORTED" => SaveDateSupported,
                "EMAILID" => EmailId(arg_s(self)?),
                "THREADID" => ThreadId(arg_s(self)?),
                _ => return Err(format!("unknown search key {word}")),
            }
        };
        self.leave();
        Ok(k)
    }

    /// One or more search keys after a space, ANDed.
    fn search_program(&mut self) -> R<SearchKey> {
        let mut keys = Vec::new();
        while self.eat(b' ') {
            keys.push(self.search_key()?);
        }
        match keys.len() {
            0 => Err("expected a search key".into()),
            1 => Ok(keys.remove(0)),
            _ => Ok(SearchKey::And(keys)),
        }
    }

    fn status_items(&mut self) -> R<Vec<StatusItem>> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            let w = self.atom()?.to_ascii_uppercase();
            items.push(match w.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "DELETED" => StatusItem::Deleted,
                "SIZE" => StatusItem::Size,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                "APPENDLIMIT" => StatusItem::AppendLimit,
                "MAILBOXID" => StatusItem::MailboxId,
                _ => return Err(format!("unknown status item {w}")),
            });
            if self.eat(b')') {
                return Ok(items);
            }
            self.sp()?;
        }
    }

    fn select_params(&mut self) -> R<(bool, Option<Qresync>)> {
        let mut condstore = false;
        let mut qresync = None;
        if !self.eat(b' ') {
            return Ok((condstore, qresync));
        }
        self.expect(b'(')?;
        loop {
            if self.keyword("CONDSTORE") {
                condstore = true;
            } else if self.keyword("QRESYNC") {
                self.sp()?;
                self.expect(b'(')?;
                let uidvalidity = self.nz_number()?;
                self.sp()?;
                let modseq = self.number()?;
                let mut known_uids = None;
                if self.eat(b' ') && self.peek() != Some(b'(') {
                    known_uids = Some(self.seq_set()?);
                    self.eat(b' ');
                }
                if self.eat(b'(') {
                    self.seq_set()?;
                    self.sp()?;
                    self.seq_set()?;
                    self.expect(b')')?;
                }
                self.expect(b')')?;
                qresync = Some(Qresync { uidvalidity, modseq, known_uids });
            } else {
                return Err("unknown SELECT parameter".into());
            }
            if self.eat(b')') {
                return Ok((condstore, qresync));
            }
            self.sp()?;
        }
    }

    /// SEARCH and SORT RETURN options (RFC 4731, 5182, 5267, 9394).
    fn search_return(&mut self) -> R<Vec<ReturnOpt>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            let word = self.atom()?.to_ascii_uppercase();
            out.push(match word.as_str() {
                "MIN" => ReturnOpt::Min,
                "MAX" => ReturnOpt::Max,
                "ALL" => ReturnOpt::All,
                "COUNT" => ReturnOpt::Count,
                "SAVE" => ReturnOpt::Save,
                "UPDATE" => ReturnOpt::Update,
                "CONTEXT" => ReturnOpt::Context,
                "PARTIAL" => {
                    self.sp()?;
                    let range = self.take_while(|c| c.is_ascii_digit() || c == b'-' || c == b':');
                    let range = std::str::from_utf8(range).unwrap_or("");
                    let (a, b) = partial_range(range).ok_or_else(|| format!("bad PARTIAL range {range}"))?;
                    ReturnOpt::Partial(a, b)
                }
                other => return Err(format!("Unknown SEARCH return option {other}")),
            });
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn word_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.atom()?.to_ascii_uppercase());
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }
}

/// NOTIFY SET (RFC 5465 §3): whether STATUS is sent at once, and which events of
/// which mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySpec {
    pub status: bool,
    pub groups: Vec<(NotifyFilter, Vec<NotifyEvent>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyFilter {
    Selected,
    SelectedDelayed,
    Inboxes,
    Personal,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    MessageNew,
    MessageExpunge,
    FlagChange,
    AnnotationChange,
    MailboxName,
    SubscriptionChange,
    MailboxMetadataChange,
    ServerMetadataChange,
}

/// What URLFETCH returns for one URL (RFC 5524); all false: the plain form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlWants {
    pub body: bool,
    pub binary: bool,
    pub structure: bool,
    /// Asked in the parenthesised form (answered in it too).
    pub extended: bool,
}

/// A RETURN option of SEARCH and SORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOpt {
    Min,
    Max,
    All,
    Count,
    Save,
    /// Keep the result up to date with ADDTO/REMOVEFROM (RFC 5267 §4.4).
    Update,
    Context,
    /// Positions in the result, from 1; negative from the end (RFC 9394), low first.
    Partial(i64, i64),
}

#[cfg(test)]
#[test]
fn partial_ranges() {
    assert_eq!(partial_range("4:2"), Some((2, 4)));
    assert_eq!(partial_range("-1:-100"), Some((-100, -1)));
    for bad in ["1", "1:*", "*:1", "0:3", "-1:3", "1:99999999999", ":", "1:"] {
        assert_eq!(partial_range(bad), None, "{bad}");
    }
}

/// "2:4", "4:2" or "-1:-100": both ends non-zero and of one sign, low end first.
fn partial_range(s: &str) -> Option<(i64, i64)> {
    let (a, b) = s.split_once(':')?;
    let parse = |x: &str| -> Option<i64> {
        let digits = x.strip_prefix('-').unwrap_or(x);
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        x.parse::<i64>().ok().filter(|&v| v != 0 && v.unsigned_abs() <= u64::from(u32::MAX))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if (a < 0) != (b < 0) {
        return None;
    }
    Some((a.min(b), a.max(b)))
}

fn month_number(m: &[u8]) -> Option<u8> {
    const MONTHS: [&[u8]; 12] =
        [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];
    MONTHS.iter().position(|x| x.eq_ignore_ascii_case(m)).map(|i| i as u8 + 1)
}

/// Parses one complete command: its lines joined with their CRLFs, literal data inline.
pub fn parse(input: &[u8]) -> Result<Command, ParseError> {
    let mut p = P { b: input, pos: 0, depth: 0, charset: None };
    let tag = p.take_while(is_tag_char);
    if tag.is_empty() {
        return Err(ParseError { tag: None, message: "missing tag".into() });
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let result = (|| -> R<CommandKind> {
        p.sp()?;
        let kind = command_kind(&mut p)?;
        p.eat(b'\r');
        p.eat(b'\n');
        if !p.at_end() {
            return Err("unexpected characters after the command".into());
        }
        Ok(kind)
    })();
    result.map(|kind| Command { tag: tag.clone(), kind }).map_err(|message| ParseError { tag: Some(tag), message })
}

fn command_kind(p: &mut P<'_>) -> R<CommandKind> {
    use CommandKind::*;
    let uid = p.keyword("UID");
    if uid {
        p.sp()?;
    }
    let verb = p.atom()?.to_ascii_uppercase();
    if uid && !matches!(verb.as_str(), "FETCH" | "STORE" | "COPY" | "MOVE" | "SEARCH" | "EXPUNGE" | "SORT" | "THREAD") {
        return Err(format!("UID {verb} is not a command"));
    }
    let mailbox_arg = |p: &mut P<'_>| -> R<String> {
        p.sp()?;
        p.mailbox()
    };
    Ok(match verb.as_str() {
        "CAPABILITY" => Capability,
        "NOOP" => Noop,
        "LOGOUT" => Logout,
        "STARTTLS" => StartTls,
        "CHECK" => Check,
        "CLOSE" => Close,
        "UNSELECT" => Unselect,
        "SETMETADATA" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            p.sp()?;
            p.expect(b'(')?;
            let mut entries = Vec::new();
            loop {
                let entry = p.astring_utf8()?;
                p.sp()?;
                let value = if p.nil() {
                    None
                } else if p.peek() == Some(b'~') {
                    Some(p.literal(true)?.0)
                } else {
                    Some(p.string()?)
                };
                entries.push((entry, value));
                if p.eat(b')') {
                    break;
                }
                p.sp()?;
            }
            SetMetadata { mailbox, entries }
        }
        "GETMETADATA" => {
            p.sp()?;
            let (mut max_size, mut depth) = (None, 0);
            if p.eat(b'(') {
                loop {
                    if p.keyword("MAXSIZE") {
                        p.sp()?;
                        max_size = Some(p.number()?);
                    } else if p.keyword("DEPTH") {
                        p.sp()?;
                        depth = if p.keyword("infinity") {
                            u32::MAX
                        } else {
                            match p.number()? {
                                0 => 0,
                                1 => 1,
                                _ => return Err("DEPTH is 0, 1 or infinity".into()),
                            }
                        };
                    } else {
                        return Err("unknown GETMETADATA option".into());
                    }
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
                p.sp()?;
            }
            let mailbox = p.mailbox()?;
            p.sp()?;
            let mut entries = Vec::new();
            if p.eat(b'(') {
                loop {
                    entries.push(p.astring_utf8()?);
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
            } else {
                entries.push(p.astring_utf8()?);
            }
            GetMetadata { mailbox, max_size, depth, entries }
        }
        "NOTIFY" => {
            p.sp()?;
            if p.keyword("NONE") {
                return Ok(Notify(None));
            }
            if !p.keyword("SET") {
                return Err("NOTIFY SET or NOTIFY NONE".into());
            }
            p.sp()?;
            let status = p.keyword("STATUS");
            if status {
                p.sp()?;
            }
            let mut groups = Vec::new();
            loop {
                p.expect(b'(')?;
                let word = p.atom()?.to_ascii_uppercase();
                let filter = match word.as_str() {
                    "SELECTED" => NotifyFilter::Selected,
                    "SELECTED-DELAYED" => NotifyFilter::SelectedDelayed,
                    "INBOXES" => NotifyFilter::Inboxes,
                    "PERSONAL" => NotifyFilter::Personal,
                    "SUBSCRIBED" => NotifyFilter::Subscribed,
                    "SUBTREE" | "MAILBOXES" => {
                        p.sp()?;
                        let mut names = Vec::new();
                        if p.eat(b'(') {
                            loop {
                                names.push(p.astring_utf8()?);
                                if p.eat(b')') {
                                    break;
                                }
                                p.sp()?;
                            }
                        } else {
                            names.push(p.astring_utf8()?);
                        }
                        if word == "SUBTREE" { NotifyFilter::Subtree(names) } else { NotifyFilter::Mailboxes(names) }
                    }
                    other => return Err(format!("unknown NOTIFY filter {other}")),
                };
                p.sp()?;
                let mut events = Vec::new();
                if !p.keyword("NONE") {
                    p.expect(b'(')?;
                    loop {
                        let e = p.atom()?.to_ascii_uppercase();
                        events.push(match e.as_str() {
                            "MESSAGENEW" => {
                                // Its FETCH attributes for new messages: read, EXISTS is sent.
                                if p.b.get(p.pos) == Some(&b' ') && p.b.get(p.pos + 1) == Some(&b'(') {
                                    p.sp()?;
                                    p.fetch_atts()?;
                                }
                                NotifyEvent::MessageNew
                            }
                            "MESSAGEEXPUNGE" => NotifyEvent::MessageExpunge,
                            "FLAGCHANGE" => NotifyEvent::FlagChange,
                            "ANNOTATIONCHANGE" => NotifyEvent::AnnotationChange,
                            "MAILBOXNAME" => NotifyEvent::MailboxName,
                            "SUBSCRIPTIONCHANGE" => NotifyEvent::SubscriptionChange,
                            "MAILBOXMETADATACHANGE" => NotifyEvent::MailboxMetadataChange,
                            "SERVERMETADATACHANGE" => NotifyEvent::ServerMetadataChange,
                            other => return Err(format!("unknown NOTIFY event {other}")),
                        });
                        if p.eat(b')') {
                            break;
                        }
                        p.sp()?;
                    }
                }
                p.expect(b')')?;
                groups.push((filter, events));
                if !p.eat(b' ') {
                    break;
                }
            }
            Notify(Some(NotifySpec { status, groups }))
        }
        "GENURLAUTH" => {
            let mut urls = Vec::new();
            while p.eat(b' ') {
                let url = p.astring_utf8()?;
                p.sp()?;
                urls.push((url, p.atom()?.to_ascii_uppercase()));
            }
            if urls.is_empty() {
                return Err("GENURLAUTH needs a URL and a mechanism".into());
            }
            GenUrlAuth(urls)
        }
        "RESETKEY" => {
            let mut mailbox = None;
            if p.eat(b' ') {
                mailbox = Some(p.astring_utf8()?);
                // Mechanisms: INTERNAL is the only one, and its keys are reset anyway.
                while p.eat(b' ') {
                    p.atom()?;
                }
            }
            ResetKey(mailbox)
        }
        "URLFETCH" => {
            let mut urls = Vec::new();
            while p.eat(b' ') {
                if p.eat(b'(') {
                    let url = p.astring_utf8()?;
                    let mut w = UrlWants { extended: true, ..UrlWants::default() };
                    while p.eat(b' ') {
                        match p.atom()?.to_ascii_uppercase().as_str() {
                            "BODY" => w.body = true,
                            "BINARY" => w.binary = true,
                            "BODYPARTSTRUCTURE" => w.structure = true,
                            other => return Err(format!("unknown URLFETCH parameter {other}")),
                        }
                    }
                    p.expect(b')')?;
                    urls.push((url, w));
                } else {
                    urls.push((p.astring_utf8()?, UrlWants::default()));
                }
            }
            if urls.is_empty() {
                return Err("URLFETCH needs a URL".into());
            }
            UrlFetch(urls)
        }
        "CANCELUPDATE" => {
            let mut tags = Vec::new();
            while p.eat(b' ') {
                tags.push(p.astring_utf8()?);
            }
            if tags.is_empty() {
                return Err("CANCELUPDATE needs the tags of the searches".into());
            }
            CancelUpdate(tags)
        }
        "IDLE" => Idle,
        "SETACL" => {
            let mailbox = mailbox_arg(p)?;
            p.sp()?;
            let identifier = p.astring_utf8()?;
            p.sp()?;
            SetAcl { mailbox, identifier, rights: p.astring_utf8()? }
        }
        "DELETEACL" => {
            let mailbox = mailbox_arg(p)?;
            p.sp()?;
            DeleteAcl { mailbox, identifier: p.astring_utf8()? }
        }
        "GETACL" => GetAcl(mailbox_arg(p)?),
        "LISTRIGHTS" => {
            let mailbox = mailbox_arg(p)?;
            p.sp()?;
            ListRights { mailbox, identifier: p.astring_utf8()? }
        }
        "MYRIGHTS" => MyRights(mailbox_arg(p)?),
        "COMPRESS" => {
            p.sp()?;
            Compress(p.atom()?.to_ascii_uppercase())
        }
        "NAMESPACE" => Namespace,
        "AUTHENTICATE" => {
            p.sp()?;
            let mechanism = p.atom()?.to_ascii_uppercase();
            let initial = if p.eat(b' ') {
                let v = p.take_while(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=');
                Some(String::from_utf8_lossy(v).into_owned())
            } else {
                None
            };
            Authenticate { mechanism, initial }
        }
        "LOGIN" => {
            p.sp()?;
            let user = p.astring_utf8()?;
            p.sp()?;
            let password = p.astring_utf8()?;
            Login { user, password }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                caps.push(p.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return Err("ENABLE needs a capability".into());
            }
            Enable(caps)
        }
        "SELECT" | "EXAMINE" => {
            let mailbox = mailbox_arg(p)?;
            let (condstore, qresync) = p.select_params()?;
            if verb == "SELECT" {
                Select { mailbox, condstore, qresync }
            } else {
                Examine { mailbox, condstore, qresync }
            }
        }
        "CREATE" => {
            let mailbox = mailbox_arg(p)?;
            let mut special_use = Vec::new();
            if p.eat(b' ') {
                p.expect(b'(')?;
                if !p.keyword("USE") {
                    return Err("unknown CREATE parameter".into());
                }
                p.sp()?;
                special_use = p.flag_list()?;
                p.expect(b')')?;
            }
            Create { mailbox, special_use }
        }
        "DELETE" => Delete(mailbox_arg(p)?),
        "RENAME" => {
            let from = mailbox_arg(p)?;
            let to = mailbox_arg(p)?;
            Rename { from, to }
        }
        "SUBSCRIBE" => Subscribe(mailbox_arg(p)?),
        "UNSUBSCRIBE" => Unsubscribe(mailbox_arg(p)?),
        "LIST" => {
            p.sp()?;
            let mut options = ListOptions::default();
            if p.peek() == Some(b'(') {
                options.select = p.word_list()?;
                p.sp()?;
            }
            let reference = p.mailbox()?;
            p.sp()?;
            let mut patterns = Vec::new();
            if p.eat(b'(') {
                loop {
                    patterns.push(p.list_mailbox()?);
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
            } else {
                patterns.push(p.list_mailbox()?);
            }
            if p.eat(b' ') {
                if !p.keyword("RETURN") {
                    return Err("expected RETURN".into());
                }
                p.sp()?;
                p.expect(b'(')?;
                if !p.eat(b')') {
                    loop {
                        let w = p.atom()?.to_ascii_uppercase();
                        if w == "STATUS" {
                            p.sp()?;
                            options.status = p.status_items()?;
                        }
                        options.ret.push(w);
                        if p.eat(b')') {
                            break;
                        }
                        p.sp()?;
                    }
                }
            }
            List { reference, patterns, options }
        }
        "LSUB" => {
            let reference = mailbox_arg(p)?;
            p.sp()?;
            Lsub { reference, pattern: p.list_mailbox()? }
        }
        "STATUS" => {
            let mailbox = mailbox_arg(p)?;
            p.sp()?;
            Status { mailbox, items: p.status_items()? }
        }
        "APPEND" => {
            let mailbox = mailbox_arg(p)?;
            let mut messages = Vec::new();
            // MULTIAPPEND: one or more messages, each with optional flags and date.
            while p.eat(b' ') {
                let flags = if p.peek() == Some(b'(') {
                    let f = p.flag_list()?;
                    p.sp()?;
                    f
                } else {
                    Vec::new()
                };
                let date = if p.peek() == Some(b'"') {
                    let d = p.date_time()?;
                    p.sp()?;
                    Some(d)
                } else {
                    None
                };
                if p.keyword("CATENATE") {
                    p.sp()?;
                    p.expect(b'(')?;
                    let mut parts = Vec::new();
                    loop {
                        if p.keyword("TEXT") {
                            p.sp()?;
                            parts.push(CatPart::Text(p.literal(true)?.0));
                        } else if p.keyword("URL") {
                            p.sp()?;
                            parts.push(CatPart::Url(String::from_utf8_lossy(&p.astring()?).into_owned()));
                        } else {
                            return Err("expected TEXT or URL".into());
                        }
                        if parts.len() > MAX_CATENATE_PARTS {
                            return Err("too many CATENATE parts".into());
                        }
                        if p.eat(b')') {
                            break;
                        }
                        p.sp()?;
                    }
                    messages.push(AppendMessage {
                        flags,
                        date,
                        data: Vec::new(),
                        binary: false,
                        catenate: Some(parts),
                    });
                    continue;
                }
                // UTF8=ACCEPT (RFC 6855 §4): a message with UTF-8 headers, as literal8.
                if p.keyword("UTF8") {
                    p.sp()?;
                    p.expect(b'(')?;
                    let (data, _) = p.literal(true)?;
                    p.expect(b')')?;
                    messages.push(AppendMessage { flags, date, data, binary: true, catenate: None });
                    continue;
                }
                let (data, binary) = p.literal(true)?;
                messages.push(AppendMessage { flags, date, data, binary, catenate: None });
            }
            if messages.is_empty() {
                return Err("APPEND needs a message".into());
            }
            Append { mailbox, messages }
        }
        "EXPUNGE" => {
            if uid {
                p.sp()?;
                Expunge { uids: Some(p.seq_set()?) }
            } else {
                Expunge { uids: None }
            }
        }
        "SORT" => {
            p.sp()?;
            let mut ret = None;
            if p.keyword("RETURN") {
                p.sp()?;
                ret = Some(p.search_return()?);
                p.sp()?;
            }
            p.expect(b'(')?;
            let mut criteria = Vec::new();
            loop {
                let mut word = p.atom()?.to_ascii_uppercase();
                let reverse = word == "REVERSE";
                if reverse {
                    p.sp()?;
                    word = p.atom()?.to_ascii_uppercase();
                }
                let key = crate::sort::SortKey::from_atom(&word).ok_or(format!("unknown sort key {word}"))?;
                criteria.push(crate::sort::Criterion { key, reverse });
                if p.eat(b')') {
                    break;
                }
                p.sp()?;
            }
            p.sp()?;
            let charset = p.astring_utf8()?.to_ascii_uppercase();
            p.charset = agora_store::text::decoder(&charset);
            let key = p.search_program()?;
            Sort { uid, ret, criteria, charset, key }
        }
        "THREAD" => {
            p.sp()?;
            let word = p.atom()?;
            let algorithm = crate::thread::Algorithm::from_atom(&word).ok_or(format!("unknown algorithm {word}"))?;
            p.sp()?;
            let charset = p.astring_utf8()?.to_ascii_uppercase();
            p.charset = agora_store::text::decoder(&charset);
            let key = p.search_program()?;
            Thread { uid, algorithm, charset, key }
        }
        "SEARCH" => {
            p.sp()?;
            let mut ret = None;
            if p.keyword("RETURN") {
                p.sp()?;
                ret = Some(p.search_return()?);
                p.sp()?;
            }
            let mut charset = None;
            if p.keyword("CHARSET") {
                p.sp()?;
                let named = p.astring_utf8()?.to_ascii_uppercase();
                p.charset = agora_store::text::decoder(&named);
                charset = Some(named);
                p.sp()?;
            }
            let mut keys = vec![p.search_key()?];
            while p.eat(b' ') {
                keys.push(p.search_key()?);
            }
            let key = if keys.len() == 1 { keys.remove(0) } else { SearchKey::And(keys) };
            Search { uid, ret, charset, key }
        }
        "FETCH" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            let atts = p.fetch_atts()?;
            let mut changed_since = None;
            let mut vanished = false;
            if p.eat(b' ') {
                p.expect(b'(')?;
                loop {
                    if p.keyword("CHANGEDSINCE") {
                        p.sp()?;
                        changed_since = Some(p.number()?);
                    } else if p.keyword("VANISHED") {
                        vanished = true;
                    } else {
                        return Err("unknown FETCH modifier".into());
                    }
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
            }
            Fetch { uid, set, atts, changed_since, vanished }
        }
        "STORE" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            let mut unchanged_since = None;
            if p.eat(b'(') {
                if !p.keyword("UNCHANGEDSINCE") {
                    return Err("unknown STORE modifier".into());
                }
                p.sp()?;
                unchanged_since = Some(p.number()?);
                p.expect(b')')?;
                p.sp()?;
            }
            let mode = if p.eat(b'+') {
                StoreMode::Add
            } else if p.eat(b'-') {
                StoreMode::Remove
            } else {
                StoreMode::Replace
            };
            if !p.keyword("FLAGS") {
                return Err("expected FLAGS".into());
            }
            let silent = p.keyword(".SILENT");
            p.sp()?;
            let flags = p.store_flags()?;
            Store { uid, set, unchanged_since, mode, silent, flags }
        }
        "COPY" | "MOVE" => {
            p.sp()?;
            let set = p.seq_set()?;
            let mailbox = mailbox_arg(p)?;
            if verb == "COPY" { Copy { uid, set, mailbox } } else { Move { uid, set, mailbox } }
        }
        "ID" => {
            p.sp()?;
            if p.nil() {
                Id(None)
            } else {
                p.expect(b'(')?;
                let mut fields = Vec::new();
                if !p.eat(b')') {
                    loop {
                        let k = p.string_utf8()?;
                        p.sp()?;
                        let v = if p.nil() { None } else { Some(String::from_utf8_lossy(&p.string()?).into_owned()) };
                        fields.push((k, v));
                        if fields.len() > 30 {
                            return Err("too many ID fields".into());
                        }
                        if p.eat(b')') {
                            break;
                        }
                        p.sp()?;
                    }
                }
                Id(Some(fields))
            }
        }
        "GETQUOTAROOT" => GetQuotaRoot(mailbox_arg(p)?),
        "GETQUOTA" => {
            p.sp()?;
            GetQuota(p.astring_utf8()?)
        }
        "SETQUOTA" => {
            p.sp()?;
            let root = p.astring_utf8()?;
            p.sp()?;
            p.expect(b'(')?;
            let mut limits = Vec::new();
            while !p.eat(b')') {
                if !limits.is_empty() {
                    p.sp()?;
                }
                let res = p.atom()?.to_ascii_uppercase();
                p.sp()?;
                limits.push((res, p.number()?));
                if limits.len() > 16 {
                    return Err("too many quota resources".into());
                }
            }
            SetQuota { root, limits }
        }
        _ => return Err(format!("unknown command {verb}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> CommandKind {
        match parse(s.as_bytes()) {
            Ok(c) => c.kind,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }

    #[test]
    fn literal_framing() {
        assert_eq!(
            literal_suffix(b"a APPEND INBOX {12}\r\n"),
            Some(Literal { len: 12, non_sync: false, binary: false })
        );
        assert_eq!(literal_suffix(b"a APPEND INBOX ~{7+}\r\n"), Some(Literal { len: 7, non_sync: true, binary: true }));
        assert_eq!(literal_suffix(b"a LOGIN {x}\r\n"), None);
        assert_eq!(literal_suffix(b"a NOOP\r\n"), None);
        assert_eq!(literal_suffix(b"{99999999999999999999}\r\n"), None);
    }

    #[test]
    fn basic_commands() {
        assert_eq!(ok("a1 CAPABILITY\r\n"), CommandKind::Capability);
        assert_eq!(
            ok("a LOGIN \"us\\\"er\" {4}\r\npass\r\n"),
            CommandKind::Login { user: "us\"er".into(), password: "pass".into() }
        );
        assert_eq!(
            ok("a select inbox (CONDSTORE)"),
            CommandKind::Select { mailbox: "INBOX".into(), condstore: true, qresync: None }
        );
        let CommandKind::Select { qresync: Some(q), .. } =
            ok("a SELECT x (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
        else {
            panic!()
        };
        assert_eq!((q.uidvalidity, q.modseq), (67890007, 20050715194045000));
        assert_eq!(
            q.known_uids,
            Some(SeqSet::Items(vec![SeqItem::One(41), SeqItem::Range(43, 211), SeqItem::Range(214, 541)]))
        );
        let CommandKind::Select { qresync: Some(q), .. } = ok("a SELECT x (QRESYNC (1 2 1:9 (1:3 5:7)))") else {
            panic!()
        };
        assert!(q.known_uids.is_some());
        let CommandKind::Select { qresync: Some(q), .. } = ok("a SELECT x (QRESYNC (1 2))") else { panic!() };
        assert!(q.known_uids.is_none());
        let CommandKind::Append { messages, .. } =
            ok("a APPEND Drafts (\\Seen $Foo) \" 5-Mar-2024 10:11:12 +0130\" {5+}\r\nhello")
        else {
            panic!()
        };
        assert_eq!(messages[0].flags, vec!["\\Seen", "$Foo"]);
        assert_eq!(messages[0].date.unwrap().zone_minutes, 90);
        assert_eq!(messages[0].data, b"hello");
        assert!(matches!(ok("a LIST \"\" *"), CommandKind::List { patterns, .. } if patterns == ["*"]));
        let CommandKind::List { options, .. } =
            ok("a LIST (SUBSCRIBED) \"\" (INBOX %) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))")
        else {
            panic!()
        };
        assert_eq!(options.select, ["SUBSCRIBED"]);
        assert_eq!(options.status, [StatusItem::Messages, StatusItem::Unseen]);
    }

    #[test]
    fn fetch_and_store() {
        let CommandKind::Fetch { uid, set, atts, changed_since, .. } = ok(
            "a UID FETCH 1:*,5 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> BODY[] RFC822.SIZE) (CHANGEDSINCE 12)",
        ) else {
            panic!()
        };
        assert!(uid);
        assert_eq!(set, SeqSet::Items(vec![SeqItem::Range(1, STAR), SeqItem::One(5)]));
        let CommandKind::Fetch { set, .. } = ok("a UID FETCH 7:4294967295 UID") else { panic!() };
        assert_eq!(set, SeqSet::Items(vec![SeqItem::Range(7, 4294967295)]), "the largest UID is not *");
        assert_eq!(changed_since, Some(12));
        assert_eq!(
            atts[1],
            FetchAtt::BodySection {
                section: Section {
                    part: vec![1, 2],
                    text: Some(SectionText::HeaderFields(vec!["from".into(), "to".into()]))
                },
                partial: Some((0, 100)),
                peek: true
            }
        );
        assert_eq!(
            ok("a FETCH 1 ALL"),
            CommandKind::Fetch {
                uid: false,
                set: SeqSet::Items(vec![SeqItem::One(1)]),
                atts: vec![FetchAtt::Flags, FetchAtt::InternalDate, FetchAtt::Rfc822Size, FetchAtt::Envelope],
                changed_since: None,
                vanished: false
            }
        );
        assert!(
            matches!(ok("a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])"), CommandKind::Fetch { atts, .. } if matches!(atts[0], FetchAtt::Binary { peek: true, .. }))
        );
        let CommandKind::Store { mode, silent, flags, unchanged_since, .. } =
            ok("a STORE 2:4 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Deleted)")
        else {
            panic!()
        };
        assert_eq!(
            (mode, silent, flags, unchanged_since),
            (StoreMode::Add, true, vec!["\\Deleted".to_string()], Some(9))
        );
        assert!(matches!(ok("a STORE 1 FLAGS \\Seen \\Flagged"), CommandKind::Store { flags, .. } if flags.len() == 2));
    }

    #[test]
    fn search() {
        let CommandKind::Search { key, charset, .. } =
            ok("a SEARCH CHARSET UTF-8 OR (FROM \"x\" SINCE 1-Feb-2024) NOT SEEN 1:3 UNKEYWORD $Junk")
        else {
            panic!()
        };
        assert_eq!(charset.as_deref(), Some("UTF-8"));
        let SearchKey::And(keys) = key else { panic!() };
        assert_eq!(keys.len(), 3);
        assert!(matches!(&keys[0], SearchKey::Or(a, _) if matches!(**a, SearchKey::And(_))));
        assert!(matches!(
            ok("a UID SEARCH RETURN (MIN MAX) $"),
            CommandKind::Search { uid: true, key: SearchKey::Seq(SeqSet::Saved), .. }
        ));
        let deep = format!("a SEARCH {}ALL{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(deep.as_bytes()).unwrap_err().message.contains("deep"));
    }

    #[test]
    fn errors_carry_the_tag() {
        let e = parse(b"t1 FROB\r\n").unwrap_err();
        assert_eq!(e.tag.as_deref(), Some("t1"));
        assert_eq!(parse(b"\r\n").unwrap_err().tag, None);
        assert!(parse(b"a FETCH 0 FLAGS").is_err(), "sequence numbers start at 1");
        assert!(parse(b"a UID NOOP").is_err());
        assert!(parse(b"a LOGIN {10}\r\nshort").is_err(), "literal data missing");
        assert!(parse(b"a NOOP extra").is_err());
        assert!(parse(b"a SELECT \"unterminated").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 3u64;
        for _ in 0..30_000 {
            let len = (seed % 50) as usize;
            let mut line = b"a ".to_vec();
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let alphabet = b"FETCH UID SEARCH ()[]<>{}1:*,.\"\\+~$ORNOTBODYPEEKHEADER\r\n0123456789";
                line.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = parse(&line);
            let _ = literal_suffix(&line);
        }
    }
}
