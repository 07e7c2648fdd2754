//! The IMAP session (RFC 3501 / RFC 9051 core): command framing with literals, the
//! not-authenticated, authenticated and selected states, and the selected mailbox's
//! view kept in step with the store through the change bus.

use std::collections::HashSet;
use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::sasl::{Exchange, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Flow, LineProtocol, Read, drive};
use agora_store::{
    Account, Change, Delivery, DeliveryTarget, FlagOp, Flags, Mailbox, MessageMeta, SpecialUse, Store, StoreError,
};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::broadcast;

use crate::command::{self, Command, CommandKind, FetchAtt, SeqItem, SeqSet, StatusItem, StoreMode, literal_suffix};
use crate::fetch;
use crate::search;

/// Longest line (literals excluded).
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub allow_plaintext: bool,
    /// Largest literal (and so message) accepted.
    pub max_literal: usize,
    pub max_errors: u32,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig { allow_plaintext: false, max_literal: 50 * 1024 * 1024, max_errors: 20 }
    }
}

#[derive(Debug, Clone)]
struct View {
    uid: u32,
    flags: Flags,
    keywords: Vec<String>,
}

struct Selected {
    mailbox: Mailbox,
    read_only: bool,
    view: Vec<View>,
    /// UIDs that are \Recent in this session: claimed by its SELECT or while selected,
    /// or above the mailbox's watermark when examined (RFC 3501 §2.3.2).
    recent: HashSet<u32>,
}

fn view_flags(recent: &HashSet<u32>, v: &View) -> String {
    let f = flags_text(v.flags, &v.keywords);
    match (recent.contains(&v.uid), f.is_empty()) {
        (false, _) => f,
        (true, true) => "\\Recent".into(),
        (true, false) => format!("{f} \\Recent"),
    }
}

pub struct Session {
    cfg: Arc<ImapConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    account: Option<Account>,
    selected: Option<Selected>,
    bus: broadcast::Receiver<Change>,
    errors: u32,
}

const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

fn flags_text(flags: Flags, keywords: &[String]) -> String {
    let mut v = Vec::new();
    for (f, n) in [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ] {
        if flags.contains(f) {
            v.push(n.to_string());
        }
    }
    v.extend(keywords.iter().cloned());
    v.join(" ")
}

/// Splits IMAP flag names into system flags and keywords; \Recent and unknown
/// backslash flags are ignored.
fn parse_flags(names: &[String]) -> (Flags, Vec<String>) {
    let mut flags = Flags::default();
    let mut keywords: Vec<String> = Vec::new();
    for n in names {
        match n.to_ascii_lowercase().as_str() {
            "\\seen" => flags = flags.union(Flags::SEEN),
            "\\answered" => flags = flags.union(Flags::ANSWERED),
            "\\flagged" => flags = flags.union(Flags::FLAGGED),
            "\\deleted" => flags = flags.union(Flags::DELETED),
            "\\draft" => flags = flags.union(Flags::DRAFT),
            s if s.starts_with('\\') => {}
            _ => {
                if !keywords.iter().any(|k| k.eq_ignore_ascii_case(n)) {
                    keywords.push(n.clone());
                }
            }
        }
    }
    (flags, keywords)
}

/// Matches an IMAP LIST pattern: `*` any characters, `%` any but the delimiter.
/// Checks LIST-EXTENDED options (RFC 5258 §3) and turns them into a listing request.
fn list_request(
    reference: String,
    patterns: Vec<String>,
    options: &command::ListOptions,
) -> Result<crate::list::Request, &'static str> {
    let mut req = crate::list::Request { reference, patterns, ..Default::default() };
    for o in &options.select {
        match o.as_str() {
            "SUBSCRIBED" => req.subscribed = true,
            "RECURSIVEMATCH" => req.recursive = true,
            "SPECIAL-USE" => req.special_use = true,
            "REMOTE" => {}
            _ => return Err("Unknown LIST selection option"),
        }
    }
    if req.recursive && !req.subscribed && !req.special_use {
        return Err("RECURSIVEMATCH needs another selection option");
    }
    for o in &options.ret {
        match o.as_str() {
            "SUBSCRIBED" => req.return_subscribed = true,
            "CHILDREN" | "SPECIAL-USE" | "STATUS" => {}
            _ => return Err("Unknown LIST return option"),
        }
    }
    Ok(req)
}

impl Session {
    pub fn new(cfg: Arc<ImapConfig>, dir: Directory, store: Arc<dyn Store>, throttle: Arc<Throttle>) -> Session {
        let bus = store.subscribe();
        Session { cfg, dir, store, throttle, account: None, selected: None, bus, errors: 0 }
    }

    pub async fn run(self, conn: Conn) {
        drive(self, conn).await;
    }

    fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.cfg.allow_plaintext
    }

    fn capabilities(&self, conn: &Conn) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "ID",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
        ];
        if self.account.is_none() {
            if conn.can_starttls() {
                caps.push("STARTTLS");
            }
            if !self.plaintext_ok(conn) {
                caps.push("LOGINDISABLED");
            }
            caps.push("AUTH=SCRAM-SHA-256");
            if self.plaintext_ok(conn) {
                caps.push("AUTH=PLAIN");
                caps.push("AUTH=LOGIN");
            }
        }
        caps.join(" ")
    }

    fn bad(&mut self, conn: &mut Conn, tag: &str, msg: &str) -> Flow {
        self.errors += 1;
        conn.queue(format!("{tag} BAD {msg}\r\n").as_bytes());
        if self.errors >= self.cfg.max_errors {
            conn.queue(b"* BYE Too many invalid commands\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Reads the rest of a command whose first line announced a literal.
    async fn gather(&mut self, conn: &mut Conn, first: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = first.to_vec();
        let mut line = first.to_vec();
        while let Some(lit) = literal_suffix(&line) {
            if lit.len > self.cfg.max_literal as u64 || buf.len() as u64 + lit.len > 2 * self.cfg.max_literal as u64 {
                if !lit.non_sync {
                    return Err("[TOOBIG] Literal too large".into());
                }
                // The client sends it anyway: consume it to stay in step, then refuse.
                let _ = conn.skip(lit.len as usize).await;
                return Err("[TOOBIG] Literal too large".into());
            }
            if !lit.non_sync && conn.send(b"+ OK\r\n").await.is_err() {
                return Err("connection lost".into());
            }
            match conn.read_exact(lit.len as usize).await {
                Read::Bytes(b) => buf.extend_from_slice(&b),
                _ => return Err("connection lost".into()),
            }
            match conn.read_line(MAX_LINE).await {
                Read::Line(l) => {
                    buf.extend_from_slice(&l);
                    line = l;
                }
                Read::TooLong => return Err("Line too long".into()),
                _ => return Err("connection lost".into()),
            }
        }
        Ok(buf)
    }

    async fn handle(&mut self, conn: &mut Conn, cmd: Command) -> Flow {
        let tag = cmd.tag.clone();
        let authed = self.account.is_some();
        let selected = self.selected.is_some();
        use CommandKind as K;
        let is_noop = matches!(cmd.kind, K::Noop);
        let is_close = matches!(cmd.kind, K::Close);
        match cmd.kind {
            K::Capability => {
                let caps = self.capabilities(conn);
                conn.queue(format!("* CAPABILITY {caps}\r\n{tag} OK Capability completed\r\n").as_bytes());
            }
            K::Noop | K::Check => {
                if selected {
                    self.sync(conn, true).await;
                }
                conn.queue(format!("{tag} OK {} completed\r\n", if is_noop { "NOOP" } else { "CHECK" }).as_bytes());
            }
            K::Logout => {
                conn.queue(format!("* BYE Logging out\r\n{tag} OK Logout completed\r\n").as_bytes());
                return Flow::Close;
            }
            K::Id(_) => {
                conn.queue(
                    format!(
                        "* ID (\"name\" \"Agora\" \"version\" \"{}\")\r\n{tag} OK ID completed\r\n",
                        env!("CARGO_PKG_VERSION")
                    )
                    .as_bytes(),
                );
            }
            K::StartTls if !authed => {
                if !conn.can_starttls() {
                    return self.bad(conn, &tag, "TLS not available or already active");
                }
                if conn.send(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes()).await.is_err() {
                    return Flow::Close;
                }
                if conn.start_tls().await.is_err() {
                    return Flow::Close;
                }
            }
            K::Login { user, password } if !authed => {
                if !self.plaintext_ok(conn) {
                    conn.queue(
                        format!("{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS\r\n")
                            .as_bytes(),
                    );
                    return Flow::Continue;
                }
                let step = match self.dir.authenticate(&user, &password).await {
                    Ok(Some(a)) => Step::Success(Box::new(a)),
                    _ => Step::Failed { login: Some(user) },
                };
                return self.finish_auth(conn, &tag, step).await;
            }
            K::Authenticate { mechanism, initial } if !authed => {
                return self.authenticate(conn, &tag, &mechanism, initial).await;
            }
            K::Namespace if authed => {
                conn.queue(
                    format!("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n{tag} OK Namespace completed\r\n").as_bytes(),
                );
            }
            K::Select { mailbox, .. } if authed => return self.select(conn, &tag, &mailbox, false).await,
            K::Examine { mailbox, .. } if authed => return self.select(conn, &tag, &mailbox, true).await,
            K::Create { mailbox, special_use } if authed => {
                let name = mailbox.trim_end_matches('/').to_string();
                // CREATE-SPECIAL-USE (RFC 6154 §5.2): one use per mailbox, from the known ones.
                let su = special_use.first().and_then(|s| SpecialUse::parse(s));
                if special_use.len() > 1 || (!special_use.is_empty() && su.is_none()) {
                    conn.queue(format!("{tag} NO [USEATTR] Unsupported special-use attribute\r\n").as_bytes());
                    return Flow::Continue;
                }
                let r = self.store.create_mailbox(self.account_id(), &name, su).await;
                self.reply_store(conn, &tag, r.map(|_| ()), "CREATE");
            }
            K::Delete(name) if authed => {
                let r = self.store.delete_mailbox(self.account_id(), &name).await;
                if self.selected.as_ref().is_some_and(|s| s.mailbox.name == name) && r.is_ok() {
                    self.selected = None;
                }
                self.reply_store(conn, &tag, r, "DELETE");
            }
            K::Rename { from, to } if authed => {
                let r = self.store.rename_mailbox(self.account_id(), &from, &to).await;
                self.reply_store(conn, &tag, r, "RENAME");
            }
            K::Subscribe(name) if authed => {
                let r = self.store.set_subscribed(self.account_id(), &name, true).await;
                self.reply_store(conn, &tag, r, "SUBSCRIBE");
            }
            K::Unsubscribe(name) if authed => {
                let r = self.store.set_subscribed(self.account_id(), &name, false).await;
                self.reply_store(conn, &tag, r, "UNSUBSCRIBE");
            }
            K::List { reference, patterns, options } if authed => {
                let req = match list_request(reference, patterns, &options) {
                    Ok(r) => r,
                    Err(why) => return self.bad(conn, &tag, why),
                };
                return self.list(conn, &tag, req, &options.status).await;
            }
            K::Lsub { reference, pattern } if authed => {
                let req = crate::list::Request { reference, patterns: vec![pattern], lsub: true, ..Default::default() };
                return self.list(conn, &tag, req, &[]).await;
            }
            K::Status { mailbox, items } if authed => return self.status(conn, &tag, &mailbox, &items).await,
            K::Append { mailbox, messages } if authed => return self.append(conn, &tag, &mailbox, messages).await,
            K::Idle if authed => return self.idle(conn, &tag).await,
            K::Close | K::Unselect if selected => {
                let expunge = is_close;
                if let Some(sel) = self.selected.take()
                    && expunge
                    && !sel.read_only
                {
                    let deleted: Vec<u32> =
                        sel.view.iter().filter(|v| v.flags.contains(Flags::DELETED)).map(|v| v.uid).collect();
                    if let Err(e) = self.store.expunge(sel.mailbox.id, &deleted).await {
                        tracing::error!("imap: expunge on close: {e}");
                    }
                }
                conn.queue(format!("{tag} OK {} completed\r\n", if expunge { "CLOSE" } else { "UNSELECT" }).as_bytes());
            }
            K::Expunge { uids } if selected => return self.expunge(conn, &tag, uids).await,
            K::Search { uid, key, charset, .. } if selected => {
                if charset.as_deref().is_some_and(|c| c != "UTF-8" && c != "US-ASCII") {
                    conn.queue(format!("{tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n").as_bytes());
                    return Flow::Continue;
                }
                return self.search(conn, &tag, uid, key).await;
            }
            K::Fetch { atts, .. }
                if atts.iter().any(|a| {
                    matches!(a, FetchAtt::Preview | FetchAtt::EmailId | FetchAtt::ThreadId | FetchAtt::SaveDate)
                }) =>
            {
                return self.bad(conn, &tag, "FETCH item not supported");
            }
            K::Fetch { uid, set, atts, .. } if selected => return self.fetch(conn, &tag, uid, &set, atts).await,
            K::Store { uid, set, mode, silent, flags, .. } if selected => {
                return self.store_cmd(conn, &tag, uid, &set, mode, silent, &flags).await;
            }
            K::Copy { uid, set, mailbox } if selected => {
                return self.copy(conn, &tag, uid, &set, &mailbox, false).await;
            }
            K::Move { uid, set, mailbox } if selected => return self.copy(conn, &tag, uid, &set, &mailbox, true).await,
            K::Enable(_) | K::GetQuota(_) | K::GetQuotaRoot(_) => return self.bad(conn, &tag, "Command not supported"),
            _ => {
                let why = if !authed {
                    "Not authenticated"
                } else if !selected {
                    "No mailbox selected"
                } else {
                    "Command not valid now"
                };
                return self.bad(conn, &tag, why);
            }
        }
        Flow::Continue
    }

    fn account_id(&self) -> i64 {
        self.account.as_ref().map_or(0, |a| a.id)
    }

    fn reply_store(&mut self, conn: &mut Conn, tag: &str, r: Result<(), StoreError>, what: &str) {
        let line = match r {
            Ok(()) => format!("{tag} OK {what} completed\r\n"),
            Err(StoreError::Exists(m)) => format!("{tag} NO [ALREADYEXISTS] {m} already exists\r\n"),
            Err(StoreError::NotFound(m)) => format!("{tag} NO [NONEXISTENT] {m} not found\r\n"),
            Err(StoreError::Invalid(m)) => format!("{tag} NO [CANNOT] {m}\r\n"),
            Err(e) => {
                tracing::error!("imap: {what}: {e}");
                format!("{tag} NO [SERVERBUG] {what} failed\r\n")
            }
        };
        conn.queue(line.as_bytes());
    }

    async fn authenticate(&mut self, conn: &mut Conn, tag: &str, mech: &str, initial: Option<String>) -> Flow {
        let Some(mech) = Mechanism::parse(mech) else {
            conn.queue(format!("{tag} NO Unsupported authentication mechanism\r\n").as_bytes());
            return Flow::Continue;
        };
        if mech.sends_password() && !self.plaintext_ok(conn) {
            conn.queue(
                format!("{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS\r\n").as_bytes(),
            );
            return Flow::Continue;
        }
        let mut ex = Exchange::new(mech);
        let mut input = match initial.as_deref() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(s) => match B64.decode(s) {
                Ok(v) => Some(v),
                Err(_) => return self.bad(conn, tag, "Invalid base64"),
            },
        };
        loop {
            let challenge = match ex.step(&self.dir, input.as_deref()).await {
                Step::Challenge(c) => c,
                other => return self.finish_auth(conn, tag, other).await,
            };
            if conn.send(format!("+ {}\r\n", B64.encode(challenge)).as_bytes()).await.is_err() {
                return Flow::Close;
            }
            let line = match conn.read_line(MAX_LINE).await {
                Read::Line(l) => l,
                _ => return Flow::Close,
            };
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            if text == "*" {
                return self.bad(conn, tag, "Authentication cancelled");
            }
            input = match B64.decode(text.trim()) {
                Ok(v) => Some(v),
                Err(_) => return self.bad(conn, tag, "Invalid base64"),
            };
        }
    }

    async fn finish_auth(&mut self, conn: &mut Conn, tag: &str, step: Step) -> Flow {
        match step {
            Step::Success(account) => {
                self.throttle.success(&account.login);
                tracing::info!("imap: {} logged in from {}", account.login, conn.peer.ip());
                self.account = Some(*account);
                conn.set_authenticated();
                let caps = self.capabilities(conn);
                conn.queue(format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n").as_bytes());
            }
            Step::Failed { login } => {
                let delay = self.throttle.failure(conn.peer.ip(), login.as_deref());
                tokio::time::sleep(delay).await;
                conn.queue(format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n").as_bytes());
            }
            Step::Malformed(why) => return self.bad(conn, tag, why),
            Step::Challenge(_) => return Flow::Close,
        }
        Flow::Continue
    }

    async fn load_view(&self, mailbox: &Mailbox) -> Result<Vec<View>, StoreError> {
        Ok(self
            .store
            .messages(mailbox.id, 1..=u32::MAX)
            .await?
            .into_iter()
            .map(|m| View { uid: m.uid, flags: m.flags, keywords: m.keywords })
            .collect())
    }

    async fn select(&mut self, conn: &mut Conn, tag: &str, name: &str, read_only: bool) -> Flow {
        self.selected = None;
        let mb = match self.store.mailbox(self.account_id(), name).await {
            Ok(Some(mb)) => mb,
            Ok(None) => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: select {name}: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        // Drop stale notifications: the view below is taken after them.
        while self.bus.try_recv().is_ok() {}
        let view = match self.load_view(&mb).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("imap: select {name}: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        // A read-write SELECT claims the messages nobody has seen as \Recent yet.
        let watermark = if read_only { Ok(mb.recent_uid) } else { self.store.claim_recent(mb.id).await };
        let Ok(watermark) = watermark else {
            conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
            return Flow::Continue;
        };
        let recent: HashSet<u32> = view.iter().map(|v| v.uid).filter(|&u| u > watermark).collect();
        let mut out = format!(
            "* FLAGS ({SYSTEM_FLAGS})\r\n* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] Flags permitted\r\n* {} EXISTS\r\n* {} RECENT\r\n",
            view.len(),
            recent.len()
        );
        if let Some(i) = view.iter().position(|v| !v.flags.contains(Flags::SEEN)) {
            out.push_str(&format!("* OK [UNSEEN {}] First unseen\r\n", i + 1));
        }
        out.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n{tag} OK [{}] {} completed\r\n",
            mb.uidvalidity,
            mb.uidnext,
            if read_only { "READ-ONLY" } else { "READ-WRITE" },
            if read_only { "EXAMINE" } else { "SELECT" }
        ));
        conn.queue(out.as_bytes());
        self.selected = Some(Selected { mailbox: mb, read_only, view, recent });
        Flow::Continue
    }

    /// Brings the view up to date: EXPUNGE (only if allowed now), EXISTS, FLAGS.
    async fn sync(&mut self, conn: &mut Conn, allow_expunge: bool) {
        let mut changed = false;
        loop {
            match self.bus.try_recv() {
                Ok(c) => {
                    if c.account() == self.account.as_ref().map(|a| a.id) {
                        changed = true;
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => changed = true,
                Err(_) => break,
            }
        }
        let Some(sel) = self.selected.as_mut() else { return };
        if !changed && !allow_expunge {
            return;
        }
        let Ok(fresh) = self.store.messages(sel.mailbox.id, 1..=u32::MAX).await else { return };
        let mut out = String::new();
        if allow_expunge {
            // Report removed messages from the highest sequence number down.
            let mut i = sel.view.len();
            while i > 0 {
                i -= 1;
                let uid = sel.view[i].uid;
                if fresh.binary_search_by_key(&uid, |m| m.uid).is_err() {
                    sel.view.remove(i);
                    out.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
                }
            }
        }
        for (seq, v) in sel.view.iter_mut().enumerate() {
            if let Ok(j) = fresh.binary_search_by_key(&v.uid, |m| m.uid)
                && (fresh[j].flags != v.flags || fresh[j].keywords != v.keywords)
            {
                v.flags = fresh[j].flags;
                v.keywords = fresh[j].keywords.clone();
                out.push_str(&format!("* {} FETCH (FLAGS ({}))\r\n", seq + 1, view_flags(&sel.recent, v)));
            }
        }
        let last = sel.view.last().map_or(0, |v| v.uid);
        let new: Vec<View> = fresh
            .iter()
            .filter(|m| m.uid > last)
            .map(|m| View { uid: m.uid, flags: m.flags, keywords: m.keywords.clone() })
            .collect();
        if !new.is_empty() {
            let fresh_uids: Vec<u32> = new.iter().map(|v| v.uid).collect();
            sel.view.extend(new);
            out.push_str(&format!("* {} EXISTS\r\n", sel.view.len()));
            if !sel.read_only {
                let mailbox = sel.mailbox.id;
                if let Ok(prev) = self.store.claim_recent(mailbox).await
                    && let Some(sel) = self.selected.as_mut()
                {
                    sel.recent.extend(fresh_uids.into_iter().filter(|&u| u > prev));
                    out.push_str(&format!("* {} RECENT\r\n", sel.recent.len()));
                }
            }
        }
        conn.queue(out.as_bytes());
    }

    /// Resolves a sequence or UID set to view indexes, ascending.
    fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<usize> {
        let Some(sel) = &self.selected else { return Vec::new() };
        let SeqSet::Items(items) = set else { return Vec::new() };
        let n = sel.view.len();
        let max_uid = sel.view.last().map_or(0, |v| v.uid);
        let mut idx: Vec<usize> = Vec::new();
        for item in items {
            let (a, b) = match *item {
                SeqItem::One(x) => (x, x),
                SeqItem::Range(a, b) => (a, b),
            };
            if uid {
                let star = |x: u32| if x == command::STAR { max_uid } else { x };
                let (lo, hi) = (star(a).min(star(b)), star(a).max(star(b)));
                for (i, v) in sel.view.iter().enumerate() {
                    if v.uid >= lo && v.uid <= hi {
                        idx.push(i);
                    }
                }
            } else {
                let star = |x: u32| if x == command::STAR { n as u32 } else { x };
                let (lo, hi) = (star(a).min(star(b)), star(a).max(star(b)));
                for s in lo.max(1)..=hi.min(n as u32) {
                    idx.push(s as usize - 1);
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    fn seq_valid(&self, set: &SeqSet) -> bool {
        let n = self.selected.as_ref().map_or(0, |s| s.view.len()) as u32;
        match set {
            SeqSet::Items(items) => items.iter().all(|i| match *i {
                SeqItem::One(x) => x == command::STAR || x <= n,
                SeqItem::Range(a, b) => (a == command::STAR || a <= n) && (b == command::STAR || b <= n),
            }),
            SeqSet::Saved => true,
        }
    }

    async fn fetch(&mut self, conn: &mut Conn, tag: &str, uid: bool, set: &SeqSet, mut atts: Vec<FetchAtt>) -> Flow {
        self.sync(conn, uid).await;
        if !uid && !self.seq_valid(set) {
            return self.bad(conn, tag, "Invalid sequence number");
        }
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        let idx = self.resolve(set, uid);
        let Some(sel) = &self.selected else { return Flow::Continue };
        let (mailbox, read_only) = (sel.mailbox.id, sel.read_only);
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view[i].uid).collect();
        let needs_body = atts.iter().any(fetch::needs_body);
        let sets_seen = !read_only && atts.iter().any(fetch::sets_seen);
        let metas = match fetch_metas(&*self.store, mailbox, &uids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("imap: fetch: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Fetch failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if sets_seen {
            let unseen: Vec<u32> = metas.iter().filter(|m| !m.flags.contains(Flags::SEEN)).map(|m| m.uid).collect();
            if !unseen.is_empty() {
                let _ = self.store.store_flags(mailbox, &unseen, FlagOp::Add, Flags::SEEN, &[]).await;
            }
        }
        for (&i, meta) in idx.iter().zip(&metas) {
            let body = if needs_body { self.store.read_blob(&meta.blob).await.ok() } else { None };
            let Some(sel) = self.selected.as_mut() else { break };
            let v = &mut sel.view[i];
            let mut include_flags = atts.contains(&FetchAtt::Flags);
            if sets_seen && !v.flags.contains(Flags::SEEN) {
                v.flags = v.flags.union(Flags::SEEN);
                include_flags = true;
            } else {
                v.flags = meta.flags;
                v.keywords = meta.keywords.clone();
            }
            let flags = view_flags(&sel.recent, v);
            let mut out = format!("* {} FETCH (", i + 1).into_bytes();
            let mut first = true;
            for att in &atts {
                if !first {
                    out.push(b' ');
                }
                first = false;
                fetch::item(&mut out, att, meta, body.as_deref(), &flags);
            }
            if include_flags && !atts.contains(&FetchAtt::Flags) {
                out.extend_from_slice(format!(" FLAGS ({flags})").as_bytes());
            }
            out.extend_from_slice(b")\r\n");
            conn.queue(&out);
        }
        conn.queue(format!("{tag} OK Fetch completed\r\n").as_bytes());
        Flow::Continue
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_cmd(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        mode: StoreMode,
        silent: bool,
        names: &[String],
    ) -> Flow {
        self.sync(conn, uid).await;
        if !uid && !self.seq_valid(set) {
            return self.bad(conn, tag, "Invalid sequence number");
        }
        let idx = self.resolve(set, uid);
        let Some(sel) = &self.selected else { return Flow::Continue };
        if sel.read_only {
            conn.queue(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n").as_bytes());
            return Flow::Continue;
        }
        let (flags, keywords) = parse_flags(names);
        let op = match mode {
            StoreMode::Replace => FlagOp::Set,
            StoreMode::Add => FlagOp::Add,
            StoreMode::Remove => FlagOp::Remove,
        };
        let mailbox = sel.mailbox.id;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view[i].uid).collect();
        if let Err(e) = self.store.store_flags(mailbox, &uids, op, flags, &keywords).await {
            tracing::error!("imap: store: {e}");
            conn.queue(format!("{tag} NO [SERVERBUG] Store failed\r\n").as_bytes());
            return Flow::Continue;
        }
        let metas = fetch_metas(&*self.store, mailbox, &uids).await.unwrap_or_default();
        let Some(sel) = self.selected.as_mut() else { return Flow::Continue };
        let mut out = String::new();
        for (&i, m) in idx.iter().zip(&metas) {
            let v = &mut sel.view[i];
            v.flags = m.flags;
            v.keywords = m.keywords.clone();
            if !silent {
                let uid_part = if uid { format!("UID {} ", v.uid) } else { String::new() };
                out.push_str(&format!("* {} FETCH ({uid_part}FLAGS ({}))\r\n", i + 1, view_flags(&sel.recent, v)));
            }
        }
        out.push_str(&format!("{tag} OK Store completed\r\n"));
        conn.queue(out.as_bytes());
        Flow::Continue
    }

    async fn expunge(&mut self, conn: &mut Conn, tag: &str, uids: Option<SeqSet>) -> Flow {
        let Some(sel) = &self.selected else { return Flow::Continue };
        if sel.read_only {
            conn.queue(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n").as_bytes());
            return Flow::Continue;
        }
        let within: Option<Vec<usize>> = uids.as_ref().map(|s| self.resolve(s, true));
        let Some(sel) = &self.selected else { return Flow::Continue };
        let doomed: Vec<u32> = sel
            .view
            .iter()
            .enumerate()
            .filter(|(i, v)| v.flags.contains(Flags::DELETED) && within.as_ref().is_none_or(|w| w.contains(i)))
            .map(|(_, v)| v.uid)
            .collect();
        // Flags may have changed in another session: the store checks \Deleted again
        // through the fresh view taken by sync below.
        if let Err(e) = self.store.expunge(sel.mailbox.id, &doomed).await {
            tracing::error!("imap: expunge: {e}");
            conn.queue(format!("{tag} NO [SERVERBUG] Expunge failed\r\n").as_bytes());
            return Flow::Continue;
        }
        self.sync(conn, true).await;
        conn.queue(format!("{tag} OK Expunge completed\r\n").as_bytes());
        Flow::Continue
    }

    async fn search(&mut self, conn: &mut Conn, tag: &str, uid: bool, key: command::SearchKey) -> Flow {
        self.sync(conn, uid).await;
        let Some(sel) = &self.selected else { return Flow::Continue };
        let uids: Vec<u32> = sel.view.iter().map(|v| v.uid).collect();
        let max_uid = uids.last().copied().unwrap_or(0);
        let metas = match fetch_metas(&*self.store, sel.mailbox.id, &uids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("imap: search: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Search failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let needs_body = search::needs_body(&key);
        let mut hits = Vec::new();
        for (i, m) in metas.iter().enumerate() {
            let body = if needs_body { self.store.read_blob(&m.blob).await.ok() } else { None };
            let recent = sel.recent.contains(&m.uid);
            let ctx = search::Ctx {
                seq: i as u32 + 1,
                count: metas.len() as u32,
                max_uid,
                meta: m,
                body: body.as_deref(),
                recent,
            };
            if search::matches(&key, &ctx) {
                hits.push(if uid { m.uid } else { i as u32 + 1 });
            }
        }
        let mut out = String::from("* SEARCH");
        for h in hits {
            out.push_str(&format!(" {h}"));
        }
        out.push_str(&format!("\r\n{tag} OK Search completed\r\n"));
        conn.queue(out.as_bytes());
        Flow::Continue
    }

    async fn copy(&mut self, conn: &mut Conn, tag: &str, uid: bool, set: &SeqSet, target: &str, is_move: bool) -> Flow {
        self.sync(conn, uid).await;
        if !uid && !self.seq_valid(set) {
            return self.bad(conn, tag, "Invalid sequence number");
        }
        let idx = self.resolve(set, uid);
        let dest = match self.store.mailbox(self.account_id(), target).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                conn.queue(format!("{tag} NO [TRYCREATE] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: copy: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Copy failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let Some(sel) = &self.selected else { return Flow::Continue };
        if is_move && sel.read_only {
            conn.queue(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n").as_bytes());
            return Flow::Continue;
        }
        let src = sel.mailbox.id;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view[i].uid).collect();
        let (uv, pairs) = match self.store.copy_messages(src, &uids, dest.id).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("imap: copy: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Copy failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let from: Vec<String> = pairs.iter().map(|p| p.0.to_string()).collect();
            let to: Vec<String> = pairs.iter().map(|p| p.1.to_string()).collect();
            format!("[COPYUID {uv} {} {}] ", from.join(","), to.join(","))
        };
        if is_move {
            if !code.is_empty() {
                conn.queue(format!("* OK {code}Moved\r\n").as_bytes());
            }
            let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            if let Err(e) = self.store.expunge(src, &moved).await {
                tracing::error!("imap: move: {e}");
            }
            self.sync(conn, true).await;
            conn.queue(format!("{tag} OK Move completed\r\n").as_bytes());
        } else {
            conn.queue(format!("{tag} OK {code}Copy completed\r\n").as_bytes());
        }
        Flow::Continue
    }

    async fn list(&mut self, conn: &mut Conn, tag: &str, req: crate::list::Request, status: &[StatusItem]) -> Flow {
        let verb = if req.lsub { "LSUB" } else { "LIST" };
        let mut out = Vec::new();
        if req.patterns.len() == 1 && req.patterns[0].is_empty() && !req.subscribed {
            // The hierarchy delimiter and root (RFC 9051 §6.3.9).
            out.extend_from_slice(format!("* {verb} (\\Noselect) \"/\" \"\"\r\n").as_bytes());
        } else {
            let account = self.account_id();
            let boxes = self.store.mailboxes(account).await.unwrap_or_default();
            let subs = self.store.subscriptions(account).await.unwrap_or_default();
            let named: Vec<(String, Option<agora_store::SpecialUse>)> =
                boxes.iter().map(|m| (m.name.clone(), m.special_use)).collect();
            for e in crate::list::list(&req, &named, &subs) {
                out.extend_from_slice(format!("* {verb} ({}) \"/\" ", e.attrs.join(" ")).as_bytes());
                crate::response::string(&mut out, e.name.as_bytes());
                if e.childinfo {
                    out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
                }
                out.extend_from_slice(b"\r\n");
                if !status.is_empty()
                    && e.selectable
                    && let Some(mb) = boxes.iter().find(|m| m.name == e.name)
                {
                    match self.status_line(mb, status).await {
                        Ok(line) => out.extend_from_slice(&line),
                        Err(why) => return self.bad(conn, tag, why),
                    }
                }
            }
        }
        out.extend_from_slice(format!("{tag} OK {verb} completed\r\n").as_bytes());
        conn.queue(&out);
        Flow::Continue
    }

    async fn status(&mut self, conn: &mut Conn, tag: &str, name: &str, items: &[StatusItem]) -> Flow {
        let mb = match self.store.mailbox(self.account_id(), name).await {
            Ok(Some(m)) => m,
            _ => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        match self.status_line(&mb, items).await {
            Ok(mut line) => {
                line.extend_from_slice(format!("{tag} OK Status completed\r\n").as_bytes());
                conn.queue(&line);
                Flow::Continue
            }
            Err(why) => self.bad(conn, tag, why),
        }
    }

    /// The untagged STATUS response for a mailbox (STATUS and LIST-STATUS).
    async fn status_line(&self, mb: &Mailbox, items: &[StatusItem]) -> Result<Vec<u8>, &'static str> {
        let list = self.store.message_list(mb.id).await.unwrap_or_default();
        let mut parts = Vec::new();
        for it in items {
            parts.push(match it {
                StatusItem::Messages => format!("MESSAGES {}", list.len()),
                StatusItem::Recent => format!("RECENT {}", list.iter().filter(|m| m.uid > mb.recent_uid).count()),
                StatusItem::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusItem::Unseen => {
                    format!("UNSEEN {}", list.iter().filter(|m| !m.flags.contains(Flags::SEEN)).count())
                }
                StatusItem::Deleted => {
                    format!("DELETED {}", list.iter().filter(|m| m.flags.contains(Flags::DELETED)).count())
                }
                StatusItem::Size => format!("SIZE {}", list.iter().map(|m| m.size).sum::<u64>()),
                _ => return Err("Status item not supported"),
            });
        }
        let mut out = b"* STATUS ".to_vec();
        crate::response::string(&mut out, mb.name.as_bytes());
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(out)
    }

    async fn append(&mut self, conn: &mut Conn, tag: &str, name: &str, messages: Vec<command::AppendMessage>) -> Flow {
        let account = self.account_id();
        let mb = match self.store.mailbox(account, name).await {
            Ok(Some(m)) => m,
            _ => {
                conn.queue(format!("{tag} NO [TRYCREATE] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let mut uids = Vec::new();
        for m in messages {
            if m.data.is_empty() {
                conn.queue(format!("{tag} NO Empty message\r\n").as_bytes());
                return Flow::Continue;
            }
            let (flags, keywords) = parse_flags(&m.flags);
            let date = m.date.map(date_time_secs).unwrap_or_else(agora_store::now);
            let staged = match self.store.stage(m.data).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("imap: append: {e}");
                    conn.queue(format!("{tag} NO [SERVERBUG] Append failed\r\n").as_bytes());
                    return Flow::Continue;
                }
            };
            let delivered = self
                .store
                .deliver(Delivery {
                    body: staged,
                    internal_date: date,
                    envelope: None,
                    flags,
                    keywords,
                    targets: vec![DeliveryTarget { account, mailbox: mb.name.clone() }],
                    relay: Vec::new(),
                })
                .await;
            match delivered {
                Ok(d) if !d.is_empty() => uids.push(d[0].uid),
                other => {
                    tracing::error!("imap: append: {:?}", other.err());
                    conn.queue(format!("{tag} NO [SERVERBUG] Append failed\r\n").as_bytes());
                    return Flow::Continue;
                }
            }
        }
        if self.selected.as_ref().is_some_and(|s| s.mailbox.id == mb.id) {
            self.sync(conn, false).await;
        }
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        conn.queue(
            format!("{tag} OK [APPENDUID {} {}] Append completed\r\n", mb.uidvalidity, list.join(",")).as_bytes(),
        );
        Flow::Continue
    }

    async fn idle(&mut self, conn: &mut Conn, tag: &str) -> Flow {
        if conn.send(b"+ idling\r\n").await.is_err() {
            return Flow::Close;
        }
        loop {
            if self.selected.is_some() {
                self.sync(conn, true).await;
                if conn.flush().await.is_err() {
                    return Flow::Close;
                }
            }
            // read_line keeps partial input in the connection's buffer, so dropping it
            // when a change arrives loses nothing (cancellation-safe).
            let event = tokio::select! {
                r = conn.read_line(MAX_LINE) => Some(r),
                _ = wait_change(&mut self.bus) => None,
            };
            match event {
                None => continue,
                Some(Read::Line(l)) => {
                    if l.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                        conn.queue(format!("{tag} OK Idle completed\r\n").as_bytes());
                        return Flow::Continue;
                    }
                    return self.bad(conn, tag, "Expected DONE");
                }
                Some(Read::Shutdown) => {
                    conn.queue(b"* BYE Server shutting down\r\n");
                    return Flow::Close;
                }
                Some(Read::Timeout) => {
                    conn.queue(b"* BYE Idle timeout\r\n");
                    return Flow::Close;
                }
                Some(_) => return Flow::Close,
            }
        }
    }
}

/// Resolves when something was published on the bus (the change itself is read by sync).
async fn wait_change(bus: &mut broadcast::Receiver<Change>) {
    loop {
        match bus.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Put nothing back: sync re-reads the store; just wake up.
                return;
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

async fn fetch_metas(store: &dyn Store, mailbox: i64, uids: &[u32]) -> Result<Vec<MessageMeta>, StoreError> {
    let (Some(&lo), Some(&hi)) = (uids.first(), uids.last()) else { return Ok(Vec::new()) };
    let all = store.messages(mailbox, lo..=hi).await?;
    Ok(uids.iter().filter_map(|u| all.binary_search_by_key(u, |m| m.uid).ok().map(|i| all[i].clone())).collect())
}

fn date_time_secs(d: command::DateTime) -> i64 {
    let days =
        agora_store::time::days_from_civil(i64::from(d.date.year), u32::from(d.date.month), u32::from(d.date.day));
    days * 86_400 + i64::from(d.hour) * 3600 + i64::from(d.minute) * 60 + i64::from(d.second)
        - i64::from(d.zone_minutes) * 60
}

#[async_trait]
impl LineProtocol for Session {
    fn max_line(&self) -> usize {
        MAX_LINE
    }

    fn greeting(&self, conn: &Conn) -> Vec<u8> {
        format!("* OK [CAPABILITY {}] Agora IMAP ready\r\n", self.capabilities(conn)).into_bytes()
    }

    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        let full = match self.gather(conn, line).await {
            Ok(b) => b,
            Err(e) => {
                let tag = String::from_utf8_lossy(line.split(|&b| b == b' ').next().unwrap_or(b"*")).into_owned();
                if e == "connection lost" {
                    return Flow::Close;
                }
                return self.bad(conn, &tag, &e);
            }
        };
        match command::parse(&full) {
            Ok(cmd) => self.handle(conn, cmd).await,
            Err(e) => {
                let tag = e.tag.unwrap_or_else(|| "*".into());
                self.bad(conn, &tag, &format!("Error in IMAP command: {}", e.message))
            }
        }
    }

    fn too_long(&mut self, conn: &mut Conn) -> Flow {
        conn.queue(b"* BAD Line too long\r\n");
        Flow::Continue
    }

    fn timeout_reply(&self) -> Vec<u8> {
        b"* BYE Disconnected for inactivity\r\n".to_vec()
    }

    fn shutdown_reply(&self) -> Vec<u8> {
        b"* BYE Server shutting down\r\n".to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_dates() {
        let d = command::DateTime {
            date: command::Date { year: 2024, month: 3, day: 5 },
            hour: 10,
            minute: 11,
            second: 12,
            zone_minutes: 90,
        };
        assert_eq!(crate::response::internal_date(date_time_secs(d)), "\"05-Mar-2024 08:41:12 +0000\"");
    }
}
