//! One NNTP connection (RFC 3977): the reader commands over the public folders that are
//! newsgroups, POST, AUTHINFO USER/PASS and SASL (RFC 4643), STARTTLS (RFC 4642),
//! COMPRESS DEFLATE (RFC 8054), and the transit commands for configured peers.
//! Article numbers are the folders' IMAP UIDs; what a user may see and post is the
//! folder's ACL for their identifiers (`anyone` before login).

use std::sync::Arc;

use agora_directory::sasl::{self, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_directory::{Directory, granted};
use agora_net::dot::{Unstuffed, unstuff};
use agora_net::{Conn, Flow, LineProtocol, Read, drive};
use agora_service::login;
use agora_service::sasl::LineChallenger;
use agora_store::{Account, DeliveryTarget, MailboxId, NewsGroup, Overview, PublicFolder, Store, now};
use async_trait::async_trait;

use crate::article::{self, Poster};
use crate::codec::{self, Command, List, MAX_LINE, Range, Selection, Target};
use crate::transit::{self, Transit};

/// Most overview lines or numbers one command returns (a reader asks again for more).
const MAX_RANGE: usize = 100_000;
/// Most articles HDR reads for a field the overview does not hold.
const MAX_HDR_READS: usize = 1_000;

#[derive(Debug, Clone)]
pub struct NntpConfig {
    /// This server's name: greeting, Path, Injection-Info.
    pub hostname: String,
    /// AUTHINFO USER/PASS and PLAIN/LOGIN without TLS.
    pub allow_plaintext: bool,
    /// Largest article taken (POST, IHAVE, TAKETHIS).
    pub max_article: usize,
    /// Readers may post (with the author role or above on the group).
    pub posting: bool,
    pub max_errors: u32,
}

impl Default for NntpConfig {
    fn default() -> Self {
        NntpConfig {
            hostname: "localhost".into(),
            allow_plaintext: false,
            max_article: 1_000_000,
            posting: true,
            max_errors: 20,
        }
    }
}

/// The selected newsgroup and the current article in it.
struct Selected {
    group: NewsGroup,
    current: Option<u32>,
}

pub struct Session {
    cfg: Arc<NntpConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    transit: Arc<Transit>,
    account: Option<Account>,
    /// ACL identifiers: the login's, or `anyone` alone before login.
    ids: Vec<String>,
    pending_user: Option<String>,
    selected: Option<Selected>,
    /// The client is a configured peer: IHAVE and streaming are open to it, for the
    /// newsgroups of this wildmat.
    peer: Option<String>,
    errors: u32,
}

impl Session {
    pub fn new(
        cfg: Arc<NntpConfig>,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        transit: Arc<Transit>,
        peer: Option<String>,
    ) -> Session {
        Session {
            cfg,
            dir,
            store,
            throttle,
            transit,
            account: None,
            ids: vec!["anyone".into()],
            pending_user: None,
            selected: None,
            peer,
            errors: 0,
        }
    }

    /// The session's future holds the session once (an `async fn` wrapper holds it twice).
    pub fn run(self, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
        drive(self, conn)
    }

    /// Queues a refusal. Only bad commands and failed logins count towards closing the
    /// connection: a reader asking for expired articles or unknown groups is normal.
    fn error(&mut self, conn: &mut Conn, reply: &str) -> Flow {
        if reply.starts_with('5') || reply.starts_with("48") {
            self.errors += 1;
        }
        conn.queue(reply.as_bytes());
        if self.errors >= self.cfg.max_errors {
            conn.queue(b"400 Too many errors, closing connection\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.cfg.allow_plaintext
    }

    fn rights(&self, g: &NewsGroup) -> String {
        granted(&g.acl, &self.ids)
    }

    fn readable(&self, g: &NewsGroup) -> bool {
        self.rights(g).contains('r')
    }

    fn listable(&self, g: &NewsGroup) -> bool {
        self.rights(g).contains(['l', 'r'])
    }

    fn may_post(&self, g: &NewsGroup) -> bool {
        self.cfg.posting && self.account.is_some() && self.rights(g).contains(['p', 'i'])
    }

    /// `y`, `n` or `m` as LIST ACTIVE shows a group to this user.
    fn status(&self, g: &NewsGroup) -> char {
        if g.folder.moderated {
            'm'
        } else if self.may_post(g)
            || (self.account.is_none() && self.cfg.posting && logged_in_rights(g).contains(['p', 'i']))
        {
            // Before login: whether logging in would let every user post.
            'y'
        } else {
            'n'
        }
    }

    async fn groups(&self) -> Vec<NewsGroup> {
        match self.store.news_groups().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("nntp: listing newsgroups: {e}");
                Vec::new()
            }
        }
    }

    /// The group by name as this user may read it; Err: the reply.
    async fn find_group(&self, name: &str) -> Result<NewsGroup, &'static str> {
        let name = name.to_ascii_lowercase();
        match self.groups().await.into_iter().find(|g| g.name == name) {
            Some(g) if self.readable(&g) => Ok(g),
            // Readers log in when told to (480): a group open to every logged-in user says so.
            Some(g) if self.account.is_none() && (self.listable(&g) || logged_in_rights(&g).contains('r')) => {
                Err("480 Authentication required\r\n")
            }
            _ => Err("411 No such newsgroup\r\n"),
        }
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        let cmd = match codec::parse(line, now()) {
            Ok(c) => c,
            Err(e) => return self.error(conn, &e.reply()),
        };
        match cmd {
            Command::Capabilities => self.capabilities(conn),
            Command::ModeReader => {
                conn.queue(if self.cfg.posting {
                    b"200 Reader mode, posting permitted\r\n"
                } else {
                    b"201 Reader mode, posting prohibited\r\n"
                });
            }
            Command::ModeStream => {
                if self.peer.is_none() {
                    return self.error(conn, "502 Streaming is for configured peers\r\n");
                }
                conn.queue(b"203 Streaming permitted\r\n");
            }
            Command::Quit => {
                conn.queue(b"205 Bye\r\n");
                return Flow::Close;
            }
            Command::Date => {
                let (y, mo, d, h, mi, s) = agora_store::time::split(now());
                conn.queue(format!("111 {y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}\r\n").as_bytes());
            }
            Command::Help => conn.queue(HELP.as_bytes()),
            Command::StartTls => return self.starttls(conn).await,
            Command::CompressDeflate => {
                if conn.is_compressed() {
                    return self.error(conn, "502 Compression is already active\r\n");
                }
                if conn.send(b"206 Compression active\r\n").await.is_err() || conn.start_deflate().await.is_err() {
                    return Flow::Close;
                }
            }
            Command::AuthUser(user) => {
                if self.account.is_some() {
                    return self.error(conn, "502 Already authenticated\r\n");
                }
                if !self.plaintext_ok(conn) {
                    return self.error(conn, "483 Encryption required: use STARTTLS or port 563\r\n");
                }
                self.pending_user = Some(user);
                conn.queue(b"381 Password required\r\n");
            }
            Command::AuthPass(pass) => {
                if self.account.is_some() {
                    return self.error(conn, "502 Already authenticated\r\n");
                }
                let Some(user) = self.pending_user.take() else {
                    return self.error(conn, "482 Send AUTHINFO USER first\r\n");
                };
                if !self.plaintext_ok(conn) {
                    return self.error(conn, "483 Encryption required: use STARTTLS or port 563\r\n");
                }
                let step = match self.dir.authenticate(&user, &pass).await {
                    Ok(Some(account)) => Step::Success(Box::new(account)),
                    _ => Step::Failed { login: Some(user) },
                };
                return self.finish_auth(conn, step).await;
            }
            Command::AuthSasl(mech, initial) => return self.sasl(conn, &mech, initial).await,
            Command::Group(name) => match self.find_group(&name).await {
                Ok(g) => {
                    conn.queue(format!("211 {} {} {} {}\r\n", g.count, g.low, g.high, g.name).as_bytes());
                    let current = (g.count > 0).then_some(g.low);
                    self.selected = Some(Selected { group: g, current });
                }
                Err(reply) => return self.error(conn, reply),
            },
            Command::ListGroup(arg) => return self.listgroup(conn, arg).await,
            Command::Last | Command::Next => return self.step(conn, matches!(cmd, Command::Next)).await,
            Command::Article(t) => return self.article(conn, t, Part::Whole).await,
            Command::Head(t) => return self.article(conn, t, Part::Head).await,
            Command::Body(t) => return self.article(conn, t, Part::Body).await,
            Command::Stat(t) => return self.article(conn, t, Part::Stat).await,
            Command::Over(sel) => return self.over(conn, sel).await,
            Command::Hdr(field, sel) => {
                let xhdr = line.get(..4).is_some_and(|k| k.eq_ignore_ascii_case(b"XHDR"));
                return self.hdr(conn, &field, sel, xhdr).await;
            }
            Command::List(l) => return self.list(conn, l).await,
            Command::NewGroups(since) => {
                let mut out = String::from("231 List of new newsgroups follows\r\n");
                for g in self.groups().await.iter().filter(|g| g.created >= since && self.listable(g)) {
                    out.push_str(&format!("{} {} {} {}\r\n", g.name, g.high, g.low, self.status(g)));
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            Command::NewNews(wildmat, since) => {
                let groups = self.groups().await;
                let visible: std::collections::HashSet<MailboxId> = groups
                    .iter()
                    .filter(|g| self.readable(g) && codec::wildmat(&wildmat, &g.name))
                    .map(|g| g.folder.mailbox)
                    .collect();
                let mut out = String::from("230 List of new articles follows\r\n");
                match self.store.news_since(since).await {
                    Ok(ids) => {
                        let mut sent = std::collections::HashSet::new();
                        for (mailbox, id) in ids {
                            if sent.len() >= MAX_RANGE {
                                break;
                            }
                            if visible.contains(&mailbox) && sent.insert(id.clone()) {
                                out.push_str(&id);
                                out.push_str("\r\n");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("nntp: NEWNEWS: {e}");
                        return self.error(conn, "403 Internal fault, try again later\r\n");
                    }
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            Command::Post => return self.post(conn).await,
            Command::Ihave(id) => {
                if self.peer.is_none() {
                    return self.error(conn, "502 Transit is for configured peers\r\n");
                }
                return self.ihave(conn, &id).await;
            }
            Command::Check(id) => {
                if self.peer.is_none() {
                    return self.error(conn, "502 Transit is for configured peers\r\n");
                }
                let reply = match self.transit.wanted(&id).await {
                    transit::Offer::Wanted => format!("238 {id}\r\n"),
                    transit::Offer::Busy | transit::Offer::Fault => format!("431 {id}\r\n"),
                    transit::Offer::Unwanted => format!("438 {id}\r\n"),
                };
                conn.queue(reply.as_bytes());
            }
            Command::TakeThis(id) => return self.takethis(conn, &id).await,
        }
        Flow::Continue
    }

    fn capabilities(&self, conn: &mut Conn) {
        let mut caps = vec!["VERSION 2".to_string(), "IMPLEMENTATION Agora".into(), "READER".into()];
        if self.cfg.posting {
            caps.push("POST".into());
        }
        if self.peer.is_some() {
            caps.push("IHAVE".into());
            caps.push("STREAMING".into());
        }
        caps.push("LIST ACTIVE ACTIVE.TIMES DISTRIB.PATS HEADERS NEWSGROUPS OVERVIEW.FMT".into());
        caps.push("NEWNEWS".into());
        caps.push("OVER MSGID".into());
        caps.push("HDR".into());
        if self.account.is_none() {
            let tls_ok = self.plaintext_ok(conn);
            caps.push(if tls_ok { "AUTHINFO USER SASL".into() } else { "AUTHINFO SASL".into() });
            let mechs: Vec<&str> = Mechanism::offered(tls_ok).iter().map(|m| m.name()).collect();
            caps.push(format!("SASL {}", mechs.join(" ")));
            if conn.can_starttls() {
                caps.push("STARTTLS".into());
            }
        }
        if !conn.is_compressed() {
            caps.push("COMPRESS DEFLATE".into());
        }
        let mut out = String::from("101 Capability list:\r\n");
        for c in caps {
            out.push_str(&c);
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        conn.queue(out.as_bytes());
    }

    async fn starttls(&mut self, conn: &mut Conn) -> Flow {
        if self.account.is_some() {
            return self.error(conn, "502 Already authenticated\r\n");
        }
        if !conn.can_starttls() || conn.is_compressed() {
            // RFC 8054 §2.2.2: no TLS under compression.
            return self.error(conn, "502 TLS is not available or already active\r\n");
        }
        if conn.send(b"382 Continue with TLS negotiation\r\n").await.is_err() {
            return Flow::Close;
        }
        if let Err(e) = conn.start_tls().await {
            tracing::debug!("nntp: {}: STARTTLS handshake failed: {e}", conn.peer);
            return Flow::Close;
        }
        // RFC 4642 §2.2.2: what was learnt before TLS is forgotten.
        self.pending_user = None;
        self.selected = None;
        Flow::Continue
    }

    async fn sasl(&mut self, conn: &mut Conn, mech: &str, initial: Option<String>) -> Flow {
        if self.account.is_some() {
            return self.error(conn, "502 Already authenticated\r\n");
        }
        let Some(mech) = Mechanism::parse(mech) else {
            return self.error(conn, "503 Mechanism not recognised\r\n");
        };
        if mech.sends_password() && !self.plaintext_ok(conn) {
            return self.error(conn, "483 Encryption required: use STARTTLS or port 563\r\n");
        }
        let initial = match initial.as_deref() {
            None => None,
            Some(s) => match sasl::decode_line(s) {
                Some(v) => Some(v),
                None => return self.error(conn, "504 Invalid base64 in the initial response\r\n"),
            },
        };
        let step = sasl::run(&self.dir.clone(), mech, initial, &mut LineChallenger::new(conn, "383 ", MAX_LINE)).await;
        match step {
            Step::Malformed("connection lost") => Flow::Close,
            Step::Malformed(why) => self.error(conn, &format!("482 {why}\r\n")),
            other => self.finish_auth(conn, other).await,
        }
    }

    async fn finish_auth(&mut self, conn: &mut Conn, step: Step) -> Flow {
        match step {
            Step::Success(account) => {
                let ids = match self.dir.identifiers(&account.login).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::error!("nntp: groups of {}: {e}", account.login);
                        return self.error(conn, "403 Internal fault, try again later\r\n");
                    }
                };
                login::succeeded(&self.throttle, conn, "nntp", &account.login);
                self.ids = ids;
                self.account = Some(*account);
                conn.queue(b"281 Authentication accepted\r\n");
                Flow::Continue
            }
            Step::Failed { login } => {
                login::failed(&self.throttle, conn.peer.ip(), "nntp", login.as_deref()).await;
                self.error(conn, "481 Authentication failed\r\n")
            }
            Step::Malformed(why) => self.error(conn, &format!("482 {why}\r\n")),
            Step::Challenge(_) => Flow::Close,
        }
    }

    async fn listgroup(&mut self, conn: &mut Conn, arg: Option<(String, Option<Range>)>) -> Flow {
        let (group, range) = match arg {
            Some((name, range)) => match self.find_group(&name).await {
                Ok(g) => (g, range),
                Err(reply) => return self.error(conn, reply),
            },
            None => match &self.selected {
                // The selected group, with today's counts.
                Some(s) => match self.find_group(&s.group.name).await {
                    Ok(g) => (g, None),
                    Err(reply) => return self.error(conn, reply),
                },
                None => return self.error(conn, "412 No newsgroup selected\r\n"),
            },
        };
        let range = range.unwrap_or(Range { first: 1, last: None });
        let uids = match self.store.message_list(group.folder.mailbox).await {
            Ok(list) => {
                list.into_iter().map(|m| m.uid).filter(|u| range.contains(*u)).take(MAX_RANGE).collect::<Vec<_>>()
            }
            Err(e) => {
                tracing::error!("nntp: LISTGROUP {}: {e}", group.name);
                return self.error(conn, "403 Internal fault, try again later\r\n");
            }
        };
        let mut out = format!("211 {} {} {} {} list follows\r\n", group.count, group.low, group.high, group.name);
        for u in &uids {
            out.push_str(&u.to_string());
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        conn.queue(out.as_bytes());
        let current = (group.count > 0).then_some(group.low);
        self.selected = Some(Selected { group, current });
        Flow::Continue
    }

    async fn step(&mut self, conn: &mut Conn, forward: bool) -> Flow {
        let Some(sel) = &self.selected else { return self.error(conn, "412 No newsgroup selected\r\n") };
        let Some(current) = sel.current else { return self.error(conn, "420 No current article selected\r\n") };
        let mailbox = sel.group.folder.mailbox;
        let found = if forward {
            self.store.overview(mailbox, current.saturating_add(1)..=u32::MAX, 1).await.map(|mut v| v.pop())
        } else {
            match self.store.message_list(mailbox).await {
                Ok(list) => match list.iter().rev().find(|m| m.uid < current) {
                    Some(m) => self.store.overview(mailbox, m.uid..=m.uid, 1).await.map(|mut v| v.pop()),
                    None => Ok(None),
                },
                Err(e) => Err(e),
            }
        };
        match found {
            Ok(Some(o)) => {
                conn.queue(format!("223 {} {}\r\n", o.uid, o.message_id).as_bytes());
                if let Some(s) = &mut self.selected {
                    s.current = Some(o.uid);
                }
                Flow::Continue
            }
            Ok(None) if forward => self.error(conn, "421 No next article in this group\r\n"),
            Ok(None) => self.error(conn, "422 No previous article in this group\r\n"),
            Err(e) => {
                tracing::error!("nntp: LAST/NEXT: {e}");
                self.error(conn, "403 Internal fault, try again later\r\n")
            }
        }
    }

    /// The article a target names, as (number shown, overview); Err: the reply.
    async fn locate(&self, target: &Target) -> Result<(u32, Overview), &'static str> {
        let (mailbox, uid, shown) = self.place(target).await?;
        let o = self.store.overview(mailbox, uid..=uid, 1).await.map_err(|_| "403 Internal fault\r\n")?;
        o.into_iter().next().map(|o| (shown, o)).ok_or_else(|| missing(target))
    }

    /// The folder and number a target names, and the number to show.
    async fn place(&self, target: &Target) -> Result<(MailboxId, u32, u32), &'static str> {
        let by_number = |sel: &Selected, n: u32| (sel.group.folder.mailbox, n);
        let (mailbox, uid, shown) = match target {
            Target::Current => {
                let sel = self.selected.as_ref().ok_or("412 No newsgroup selected\r\n")?;
                let n = sel.current.ok_or("420 No current article selected\r\n")?;
                let (m, u) = by_number(sel, n);
                (m, u, n)
            }
            Target::Number(n) => {
                let sel = self.selected.as_ref().ok_or("412 No newsgroup selected\r\n")?;
                let (m, u) = by_number(sel, *n);
                (m, u, *n)
            }
            Target::MessageId(id) => {
                let places = self.store.news_article(id).await.map_err(|_| "403 Internal fault\r\n")?;
                let groups = self.groups().await;
                let readable = places
                    .into_iter()
                    .find(|(mailbox, _)| groups.iter().any(|g| g.folder.mailbox == *mailbox && self.readable(g)));
                let (m, u) = readable.ok_or("430 No article with that message-id\r\n")?;
                (m, u, 0)
            }
        };
        Ok((mailbox, uid, shown))
    }

    async fn article(&mut self, conn: &mut Conn, target: Target, part: Part) -> Flow {
        let found = match self.place(&target).await {
            Ok((mailbox, uid, shown)) => match self.store.news_ref(mailbox, uid).await {
                Ok(Some((id, blob))) if !id.is_empty() => Ok((shown, id, blob)),
                // Not indexed (a message without a Message-ID): the overview says.
                Ok(Some(_)) => self.locate(&target).await.map(|(shown, o)| (shown, o.message_id, o.blob)),
                Ok(None) => Err(missing(&target)),
                Err(_) => Err("403 Internal fault\r\n"),
            },
            Err(reply) => Err(reply),
        };
        let (shown, message_id, blob) = match found {
            Ok((shown, id, blob)) => (shown, if id.is_empty() { "<>".to_string() } else { id }, blob),
            Err(reply) => return self.error(conn, reply),
        };
        if let (Target::Number(n), Some(sel)) = (&target, &mut self.selected) {
            sel.current = Some(*n);
        }
        let (code, what) = match part {
            Part::Whole => (220, "article"),
            Part::Head => (221, "head"),
            Part::Body => (222, "body"),
            Part::Stat => (223, "status"),
        };
        let mut out = format!("{code} {shown} {message_id} {what}\r\n").into_bytes();
        if part != Part::Stat {
            let raw = match self.store.read_blob(&blob).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("nntp: reading article {message_id}: {e}");
                    return self.error(conn, "403 Internal fault, try again later\r\n");
                }
            };
            let split = header_end(&raw);
            let text = match part {
                Part::Head => &raw[..split.0],
                Part::Body => &raw[split.1..],
                _ => &raw[..],
            };
            agora_net::dot::stuff(text, None, &mut out);
        }
        conn.queue(&out);
        Flow::Continue
    }

    /// The articles a selection names in the selected group (or by message-id).
    async fn selection(&self, sel: &Selection) -> Result<Vec<(u32, Overview)>, &'static str> {
        match sel {
            Selection::MessageId(id) => {
                let (_, o) = self.locate(&Target::MessageId(id.clone())).await?;
                Ok(vec![(0, o)])
            }
            Selection::Current => {
                let (n, o) = self.locate(&Target::Current).await?;
                Ok(vec![(n, o)])
            }
            Selection::Range(r) => {
                let sel = self.selected.as_ref().ok_or("412 No newsgroup selected\r\n")?;
                let last = r.last.unwrap_or(u32::MAX);
                if last < r.first {
                    return Err("423 No articles in that range\r\n");
                }
                let list = self
                    .store
                    .overview(sel.group.folder.mailbox, r.first..=last, MAX_RANGE)
                    .await
                    .map_err(|_| "403 Internal fault\r\n")?;
                if list.is_empty() {
                    return Err("423 No articles in that range\r\n");
                }
                Ok(list.into_iter().map(|o| (o.uid, o)).collect())
            }
        }
    }

    async fn over(&mut self, conn: &mut Conn, sel: Selection) -> Flow {
        let list = match self.selection(&sel).await {
            Ok(l) => l,
            Err(reply) => return self.error(conn, reply),
        };
        let mut out = Vec::with_capacity(list.len() * 200 + 64);
        out.extend_from_slice(b"224 Overview information follows\r\n");
        for (n, o) in &list {
            let line = format!(
                "{n}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\r\n",
                field(&o.subject),
                field(&o.from),
                field(&o.date),
                field(&o.message_id),
                field(&o.references),
                o.bytes,
                o.lines
            );
            push_line(&mut out, line.as_bytes());
        }
        out.extend_from_slice(b".\r\n");
        conn.queue(&out);
        Flow::Continue
    }

    async fn hdr(&mut self, conn: &mut Conn, name: &str, sel: Selection, xhdr: bool) -> Flow {
        let list = match self.selection(&sel).await {
            Ok(l) => l,
            Err(reply) => return self.error(conn, reply),
        };
        let lower = name.to_ascii_lowercase();
        let mut out = Vec::with_capacity(list.len() * 80 + 64);
        out.extend_from_slice(if xhdr { b"221 Header follows\r\n" } else { b"225 Headers follow\r\n" });
        for (i, (n, o)) in list.iter().enumerate() {
            let value = match lower.as_str() {
                "subject" => o.subject.clone(),
                "from" => o.from.clone(),
                "date" => o.date.clone(),
                "message-id" => o.message_id.clone(),
                "references" => o.references.clone(),
                ":bytes" | "bytes" => o.bytes.to_string(),
                ":lines" | "lines" => o.lines.to_string(),
                _ if i < MAX_HDR_READS => match self.store.read_blob(&o.blob).await {
                    Ok(raw) => header_value(&raw[..header_end(&raw).0], &lower).unwrap_or_default(),
                    Err(_) => String::new(),
                },
                _ => String::new(),
            };
            let line = format!("{n} {}\r\n", field(&value));
            push_line(&mut out, line.as_bytes());
        }
        out.extend_from_slice(b".\r\n");
        conn.queue(&out);
        Flow::Continue
    }

    async fn list(&mut self, conn: &mut Conn, l: List) -> Flow {
        let groups = self.groups().await;
        let shown = |w: &Option<String>, g: &NewsGroup| w.as_deref().is_none_or(|w| codec::wildmat(w, &g.name));
        let mut out = String::new();
        match l {
            List::Active(w) => {
                out.push_str("215 List of newsgroups follows\r\n");
                for g in groups.iter().filter(|g| self.listable(g) && shown(&w, g)) {
                    out.push_str(&format!("{} {} {} {}\r\n", g.name, g.high, g.low, self.status(g)));
                }
            }
            List::ActiveTimes(w) => {
                out.push_str("215 Group creation times follow\r\n");
                for g in groups.iter().filter(|g| self.listable(g) && shown(&w, g)) {
                    out.push_str(&format!("{} {} news@{}\r\n", g.name, g.created, self.cfg.hostname));
                }
            }
            List::Newsgroups(w) => {
                out.push_str("215 Descriptions follow\r\n");
                for g in groups.iter().filter(|g| self.listable(g) && shown(&w, g)) {
                    out.push_str(&format!("{}\t{}\r\n", g.name, field(&g.folder.path)));
                }
            }
            List::OverviewFmt => {
                out.push_str(
                    "215 Order of fields in overview database\r\nSubject:\r\nFrom:\r\nDate:\r\nMessage-ID:\r\nReferences:\r\n:bytes\r\n:lines\r\n",
                );
            }
            List::Headers(_) => out.push_str("215 Headers supported\r\n:\r\n:bytes\r\n:lines\r\n"),
            // No Distribution defaults are kept here: an empty list (RFC 3977 §7.6.5).
            List::DistribPats => out.push_str("215 Distribution patterns follow\r\n"),
        }
        out.push_str(".\r\n");
        conn.queue(out.as_bytes());
        Flow::Continue
    }

    /// Reads a dot-stuffed article up to its ".": Ok(article with CRLF line ends), or
    /// Err(None) when the connection ended, Err(Some(reason)) when it was unacceptable
    /// (read to its end, so the session stays in step).
    async fn read_article(&mut self, conn: &mut Conn) -> Result<Vec<u8>, Option<String>> {
        let mut article = Vec::new();
        let mut fault: Option<String> = None;
        loop {
            match conn.read_line(codec::MAX_LINE).await {
                Read::Line(line) => match unstuff(&line) {
                    Unstuffed::End => break,
                    Unstuffed::Line { content, .. } => {
                        if fault.is_none() {
                            if article.len() + content.len() + 2 > self.cfg.max_article {
                                fault = Some(format!("article larger than {} octets", self.cfg.max_article));
                                article = Vec::new();
                            } else {
                                article.extend_from_slice(content);
                                article.extend_from_slice(b"\r\n");
                            }
                        }
                    }
                },
                Read::TooLong => fault = fault.or(Some("a line is too long".into())),
                _ => return Err(None),
            }
        }
        match fault {
            Some(f) => Err(Some(f)),
            None => Ok(article),
        }
    }

    async fn post(&mut self, conn: &mut Conn) -> Flow {
        let Some(account) = self.account.clone() else {
            return self.error(conn, "480 Authentication required to post\r\n");
        };
        if !self.cfg.posting {
            return self.error(conn, "440 Posting not permitted\r\n");
        }
        if conn.send(b"340 Send article to be posted; end with <CR-LF>.<CR-LF>\r\n").await.is_err() {
            return Flow::Close;
        }
        conn.ack_promptly();
        let raw = match self.read_article(conn).await {
            Ok(r) => r,
            Err(None) => return Flow::Close,
            Err(Some(why)) => return self.error(conn, &format!("441 {why}\r\n")),
        };
        let poster = Poster { login: &account.login, addresses: &account.addresses, ip: conn.peer.ip() };
        let injected = match article::inject(&raw, &poster, &self.cfg.hostname, now(), self.cfg.max_article) {
            Ok(i) => i,
            Err(why) => return self.error(conn, &format!("441 {why}\r\n")),
        };
        match self.store.news_seen(&injected.message_id).await {
            Ok(true) => return self.error(conn, "441 Duplicate: that message-id is already here\r\n"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("nntp: history: {e}");
                return self.error(conn, "441 Internal fault, try again later\r\n");
            }
        }
        let groups = self.groups().await;
        let named: Vec<&NewsGroup> = injected
            .newsgroups
            .iter()
            .filter_map(|n| groups.iter().find(|g| &g.name == n && self.listable(g)))
            .collect();
        if named.is_empty() {
            return self.error(conn, "441 None of those newsgroups is here\r\n");
        }
        // All or nothing: a post that names a group the poster may not post to is refused
        // (peers would carry it there by its Newsgroups field).
        if let Some(g) = named.iter().find(|g| !self.may_post(g)) {
            return self.error(conn, &format!("441 Posting to {} not permitted\r\n", g.name));
        }
        // RFC 5537 §3.5: an article for a moderated group the poster does not moderate
        // goes, whole, to that group's moderators (never to the other groups first).
        let moderated: Vec<&&NewsGroup> = named.iter().filter(|g| g.folder.moderated).collect();
        let pending = moderated.iter().find(|g| !PublicFolder::moderates(&self.rights(g)));
        let (targets, queued): (Vec<DeliveryTarget>, bool) = match pending {
            Some(g) => (vec![DeliveryTarget { account: 0, mailbox: g.folder.queue_path() }], true),
            None => {
                (named.iter().map(|g| DeliveryTarget { account: 0, mailbox: g.folder.path.clone() }).collect(), false)
            }
        };
        // Approved is a moderator's word: kept only from one who moderates every
        // moderated group named (the outgoing feed adds it to approved articles).
        let approves = !moderated.is_empty() && pending.is_none();
        let article = if approves { injected.article } else { article::without_field(&injected.article, "approved") };
        match self.transit.store_article(article, targets).await {
            Ok(()) => {
                tracing::info!(
                    "nntp: {} posted {} to {}",
                    account.login,
                    injected.message_id,
                    injected.newsgroups.join(",")
                );
                conn.queue(if queued {
                    b"240 Article received OK: it waits for a moderator\r\n" as &[u8]
                } else {
                    b"240 Article received OK\r\n"
                });
                Flow::Continue
            }
            Err(e) => {
                tracing::error!("nntp: storing {}: {e}", injected.message_id);
                self.error(conn, "441 Internal fault, try again later\r\n")
            }
        }
    }

    async fn ihave(&mut self, conn: &mut Conn, id: &str) -> Flow {
        match self.transit.wanted(id).await {
            transit::Offer::Wanted => {}
            transit::Offer::Busy | transit::Offer::Fault => {
                conn.queue(b"436 Try that article later\r\n");
                return Flow::Continue;
            }
            transit::Offer::Unwanted => {
                conn.queue(b"435 Article not wanted\r\n");
                return Flow::Continue;
            }
        }
        if conn.send(b"335 Send it; end with <CR-LF>.<CR-LF>\r\n").await.is_err() {
            return Flow::Close;
        }
        conn.ack_promptly();
        let raw = match self.read_article(conn).await {
            Ok(r) => r,
            Err(None) => return Flow::Close,
            Err(Some(why)) => {
                self.transit.remember(id).await;
                conn.queue(format!("437 {why}\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let groups = self.peer.clone().unwrap_or_default();
        let reply = match self.transit.take(id, raw, &groups).await {
            transit::Taken::Stored => "235 Article transferred OK\r\n".to_string(),
            transit::Taken::Rejected(why) => format!("437 {why}\r\n"),
            transit::Taken::Busy | transit::Taken::Fault => "436 Transfer failed, try again later\r\n".to_string(),
        };
        conn.queue(reply.as_bytes());
        Flow::Continue
    }

    async fn takethis(&mut self, conn: &mut Conn, id: &str) -> Flow {
        // The article always follows TAKETHIS: read it even when it is refused.
        let raw = self.read_article(conn).await;
        let Some(groups) = self.peer.clone() else {
            return match raw {
                Err(None) => Flow::Close,
                _ => self.error(conn, "502 Transit is for configured peers\r\n"),
            };
        };
        // RFC 4644 §2.5: TAKETHIS is answered 239 or 439 only; a fault here closes the
        // connection (400), so the peer offers again what it has not heard back about.
        let fault = || -> Flow {
            tracing::warn!("nntp: closing a peer's streaming connection after a fault");
            Flow::Close
        };
        let reply = match raw {
            Err(None) => return Flow::Close,
            Err(Some(_)) => {
                self.transit.remember(id).await;
                format!("439 {id}\r\n")
            }
            Ok(raw) => match self.transit.wanted(id).await {
                transit::Offer::Wanted => match self.transit.take(id, raw, &groups).await {
                    transit::Taken::Stored => format!("239 {id}\r\n"),
                    transit::Taken::Rejected(_) | transit::Taken::Busy => format!("439 {id}\r\n"),
                    transit::Taken::Fault => {
                        conn.queue(b"400 Internal fault, offer the rest again later\r\n");
                        return fault();
                    }
                },
                transit::Offer::Busy | transit::Offer::Unwanted => format!("439 {id}\r\n"),
                transit::Offer::Fault => {
                    conn.queue(b"400 Internal fault, offer the rest again later\r\n");
                    return fault();
                }
            },
        };
        conn.queue(reply.as_bytes());
        Flow::Continue
    }
}

/// What any logged-in user holds on a group.
fn logged_in_rights(g: &NewsGroup) -> String {
    granted(&g.acl, &["authenticated".to_string(), "anyone".to_string()])
}

/// The reply when a target names no article.
fn missing(target: &Target) -> &'static str {
    if matches!(target, Target::MessageId(_)) {
        "430 No article with that message-id\r\n"
    } else {
        "423 No article with that number\r\n"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Head,
    Body,
    Stat,
}

/// Where the header ends: (end of the header lines, start of the body).
fn header_end(raw: &[u8]) -> (usize, usize) {
    let mut i = 0;
    while i < raw.len() {
        let end = raw[i..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| i + p + 1);
        let line = &raw[i..end];
        if line == b"\r\n" || line == b"\n" {
            return (i, end);
        }
        i = end;
    }
    (raw.len(), raw.len())
}

/// A header field's unfolded value from a header block.
fn header_value(head: &[u8], lower_name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<String> = None;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        if content.starts_with([' ', '\t']) {
            if let Some(v) = &mut found {
                v.push_str(content);
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((n, v)) = content.split_once(':')
            && n.trim().eq_ignore_ascii_case(lower_name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// A value as one overview or header line field: tabs, CR and LF become spaces.
fn field(v: &str) -> String {
    v.chars().map(|c| if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c }).collect::<String>().trim().to_string()
}

/// Appends a line of a multi-line block, stuffing a leading dot.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    if line.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(line);
}

const HELP: &str = "100 Help text follows\r\n\
CAPABILITIES, MODE READER, GROUP, LISTGROUP, LAST, NEXT, ARTICLE, HEAD, BODY, STAT,\r\n\
OVER, HDR, LIST, NEWGROUPS, NEWNEWS, DATE, POST, AUTHINFO, STARTTLS, COMPRESS, QUIT\r\n\
.\r\n";

#[async_trait]
impl LineProtocol for Session {
    fn name(&self) -> &'static str {
        "nntp"
    }

    fn failed(&self, last_line: &[u8]) -> bool {
        // 4xx and 5xx are failures, except the transit answers that only decline.
        matches!(last_line.first(), Some(b'4' | b'5'))
            && !last_line.starts_with(b"435")
            && !last_line.starts_with(b"438")
            && !last_line.starts_with(b"431")
            && !last_line.starts_with(b"436")
    }

    fn max_line(&self) -> usize {
        MAX_LINE
    }

    fn greeting(&self, _conn: &Conn) -> Vec<u8> {
        let code = if self.cfg.posting { 200 } else { 201 };
        format!("{code} {} Agora NNTP service ready\r\n", self.cfg.hostname).into_bytes()
    }

    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        self.command(conn, line).await
    }

    fn too_long(&mut self, conn: &mut Conn) -> Flow {
        self.error(conn, "501 Line too long\r\n")
    }

    fn timeout_reply(&self) -> Vec<u8> {
        b"400 Idle timeout, closing connection\r\n".to_vec()
    }

    fn shutdown_reply(&self) -> Vec<u8> {
        b"400 Server shutting down\r\n".to_vec()
    }
    fn busy_goodbye(&self) -> Vec<u8> {
        b"400 Too busy; try again later\r\n".to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parts() {
        let raw = b"A: 1\r\nB: two\r\n  more\r\n\r\nbody\r\n";
        assert_eq!(header_end(raw), (22, 24));
        assert_eq!(header_value(&raw[..22], "b").as_deref(), Some("two  more"));
        assert_eq!(header_value(&raw[..22], "c"), None);
        assert_eq!(header_end(b"no body"), (7, 7));
        assert_eq!(field("a\tb\r\nc "), "a b  c");
    }
}
